//! Channel-neutral message types: what every adapter hands to the engine and
//! what the engine hands back.
//!
//! An adapter builds an [`Incoming`] from its channel's request, calls a
//! [`Handler`], and renders the [`Reply`] in its own format. The reply is
//! structured (blocks, citations, suggestions, quick replies) so that each
//! channel can lay it out well: a web page shows buttons, WeChat numbers the
//! suggestions in text, Telegram uses an inline keyboard.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The channel a message came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A WeChat Official Account.
    Wechat,
    /// A WeCom (企业微信) application.
    Wecom,
    /// A Telegram bot.
    Telegram,
    /// The web chat page and API.
    Web,
    /// The command line (`wenke ask`, `wenke chat`).
    Cli,
}

impl Channel {
    /// The channel's stable name, as used in storage keys and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wechat => "wechat",
            Self::Wecom => "wecom",
            Self::Telegram => "telegram",
            Self::Web => "web",
            Self::Cli => "cli",
        }
    }

    /// The channel named by [`Self::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Wechat,
            Self::Wecom,
            Self::Telegram,
            Self::Web,
            Self::Cli,
        ]
        .into_iter()
        .find(|channel| channel.as_str() == name)
    }

    /// The most bytes one text message may carry on this channel, if the
    /// channel has a limit.
    pub fn text_limit_bytes(self) -> Option<usize> {
        match self {
            // WeChat's documented limit for a text reply.
            Self::Wechat | Self::Wecom => Some(2048),
            // Telegram counts 4096 UTF-16 units; 4096 bytes is always within it.
            Self::Telegram => Some(4096),
            Self::Web | Self::Cli => None,
        }
    }
}

/// One user of one channel: sessions, rate limits and the turn log key on it.
/// The same person on two channels is two users.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserKey {
    /// The channel.
    pub channel: Channel,
    /// The channel's id of the user (an OpenID, a Telegram chat id, …).
    pub id: String,
}

impl UserKey {
    /// A user of a channel.
    pub fn new(channel: Channel, id: impl Into<String>) -> Self {
        Self {
            channel,
            id: id.into(),
        }
    }

    /// The key under which the user's state is stored: `channel:id`.
    pub fn storage_key(&self) -> String {
        format!("{}:{}", self.channel.as_str(), self.id)
    }

    /// The user a storage key names (the inverse of [`Self::storage_key`]).
    pub fn from_storage_key(key: &str) -> Option<Self> {
        let (channel, id) = key.split_once(':')?;
        Some(Self::new(Channel::parse(channel)?, id))
    }
}

/// What a user sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// A text message.
    Text {
        /// What they wrote.
        text: String,
    },
    /// A voice message, with the channel's speech recognition when it ran.
    Voice {
        /// The recognised text; `None` when the channel did not recognise it.
        recognition: Option<String>,
    },
    /// A picture (passed on to a human expert).
    Image,
    /// A video (passed on to a human expert).
    Video,
    /// A shared location.
    Location {
        /// Latitude in degrees.
        latitude: f64,
        /// Longitude in degrees.
        longitude: f64,
        /// The place name the channel gave, if any.
        label: Option<String>,
    },
    /// A shared link.
    Link {
        /// Its title.
        title: String,
        /// Its address.
        url: String,
    },
    /// The user followed the account or started the bot.
    Subscribe,
    /// The user unfollowed the account.
    Unsubscribe,
    /// The user tapped a menu item.
    Menu {
        /// The item's key.
        key: String,
    },
}

impl Content {
    /// The text the engine should read: the text itself, or what voice
    /// recognition heard. `None` for messages without text.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text { text } => Some(text),
            Self::Voice {
                recognition: Some(text),
            } => Some(text),
            _ => None,
        }
    }
}

/// One message from a user, in no channel's format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incoming {
    /// Who sent it.
    pub user: UserKey,
    /// The channel's id of this message, when the channel may deliver it
    /// more than once (WeChat retries); the engine handles each id once.
    pub message_id: Option<String>,
    /// What they sent.
    pub content: Content,
    /// When the channel received it.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

impl Incoming {
    /// A text message received now.
    pub fn text(user: UserKey, text: impl Into<String>) -> Self {
        Self {
            user,
            message_id: None,
            content: Content::Text { text: text.into() },
            received_at: OffsetDateTime::now_utc(),
        }
    }
}

/// What kind of reply the engine gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    /// An answer from a vetted, published entry.
    Answer,
    /// "你是想问": candidate questions to choose from.
    Suggest,
    /// No authoritative answer yet; the question went to the editors.
    Abstain,
    /// A reply to small talk.
    Greeting,
    /// What the bot can do.
    Help,
    /// The hand-over to a person.
    Human,
    /// An acknowledgement of the user's judgement of an answer.
    Feedback,
    /// The acknowledgement of a technical demand.
    Demand,
    /// The status of a demand listing.
    Status,
    /// A question of a form in progress (demand intake).
    Form,
    /// A polite refusal (sensitive content).
    Refused,
    /// The user sent too many messages too fast.
    RateLimited,
    /// Any other notice (a picture was queued, a location remembered, …).
    Notice,
}

impl ReplyKind {
    /// The kind's stable name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answer => "answer",
            Self::Suggest => "suggest",
            Self::Abstain => "abstain",
            Self::Greeting => "greeting",
            Self::Help => "help",
            Self::Human => "human",
            Self::Feedback => "feedback",
            Self::Demand => "demand",
            Self::Status => "status",
            Self::Form => "form",
            Self::Refused => "refused",
            Self::RateLimited => "rate_limited",
            Self::Notice => "notice",
        }
    }
}

/// What a block of a reply is, so channels can style it and splitting can
/// keep it whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockRole {
    /// The main text.
    Body,
    /// The citation line ("来源：… ｜ 审核：…"); never cut.
    Source,
    /// Related questions.
    Related,
    /// How to go on ("回复 详细 …").
    Hint,
}

/// One paragraph-like part of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// What it is.
    pub role: BlockRole,
    /// Its text (plain text, may hold newlines).
    pub text: String,
}

impl Block {
    /// A block.
    pub fn new(role: BlockRole, text: impl Into<String>) -> Self {
        Self {
            role,
            text: text.into(),
        }
    }
}

/// Where an answer comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    /// The entry.
    pub entry_id: String,
    /// Its question.
    pub question: String,
    /// The organisation that vouches for it.
    pub source: String,
    /// Who approved it.
    pub reviewer: Option<String>,
    /// The retrieval confidence.
    pub confidence: f32,
}

/// A button that sends a fixed text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuickReply {
    /// What the button shows.
    pub label: String,
    /// What tapping it sends.
    pub text: String,
}

impl QuickReply {
    /// A button.
    pub fn new(label: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            text: text.into(),
        }
    }
}

/// The engine's reply, rendered by each channel in its own way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The turn this reply closes, for feedback.
    pub turn_id: String,
    /// The kind of reply.
    pub kind: ReplyKind,
    /// The text, in blocks.
    pub blocks: Vec<Block>,
    /// Entries the reply is built from.
    pub citations: Vec<Citation>,
    /// Questions the user can tap next (sending the question's text).
    pub suggestions: Vec<String>,
    /// Buttons that send a fixed text ("详细", "转人工", …).
    pub quick_replies: Vec<QuickReply>,
    /// The top retrieval confidence, 0 when the reply used no retrieval.
    pub confidence: f32,
    /// Whether the user can rate this reply (👍/👎).
    pub feedback: bool,
    /// Where the engine's time went, for the web API's `Server-Timing`
    /// header; never stored with a reply (a replayed reply took no time).
    #[serde(skip)]
    pub timing: Option<ReplyTiming>,
}

/// Where the engine's time on one reply went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTiming {
    /// Waiting for query vectors: the embedding model, or its cache.
    pub vector: std::time::Duration,
    /// The whole turn in the engine, from admission to the turn logged.
    pub engine: std::time::Duration,
}

/// Separates blocks in plain text.
const BLOCK_SEPARATOR: &str = "\n\n";

impl Reply {
    /// A reply of one body block and nothing else (notices, test replies).
    pub fn plain(turn_id: impl Into<String>, kind: ReplyKind, text: impl Into<String>) -> Self {
        Self {
            turn_id: turn_id.into(),
            kind,
            blocks: vec![Block::new(BlockRole::Body, text)],
            citations: Vec::new(),
            suggestions: Vec::new(),
            quick_replies: Vec::new(),
            confidence: 0.0,
            feedback: false,
            timing: None,
        }
    }

    /// The whole reply as plain text: the blocks, separated by blank lines.
    pub fn text(&self) -> String {
        self.blocks
            .iter()
            .map(|block| block.text.as_str())
            .collect::<Vec<_>>()
            .join(BLOCK_SEPARATOR)
    }

    /// The reply as messages of at most `max_bytes` bytes each.
    ///
    /// Blocks are packed in order; a block that does not fit into the
    /// current message starts the next one. Only body and related blocks
    /// are ever cut (at a line or sentence end when one is near); a source
    /// line is kept whole, so every message that quotes an answer can still
    /// be traced to its source. `max_bytes` below 64 is raised to 64.
    pub fn split_into_messages(&self, max_bytes: usize) -> Vec<String> {
        let max_bytes = max_bytes.max(64);
        let mut messages: Vec<String> = Vec::new();
        let mut current = String::new();
        for block in &self.blocks {
            let pieces = if block.text.len() <= max_bytes || block.role == BlockRole::Source {
                vec![block.text.clone()]
            } else {
                cut_text(&block.text, max_bytes)
            };
            for piece in pieces {
                let needed = if current.is_empty() {
                    piece.len()
                } else {
                    current.len() + BLOCK_SEPARATOR.len() + piece.len()
                };
                if needed > max_bytes && !current.is_empty() {
                    messages.push(std::mem::take(&mut current));
                }
                if !current.is_empty() {
                    current.push_str(BLOCK_SEPARATOR);
                }
                current.push_str(&piece);
            }
        }
        if !current.is_empty() {
            messages.push(current);
        }
        messages
    }
}

/// Cuts a text into pieces of at most `max_bytes` bytes, preferring to cut
/// after a newline or a sentence end in the last quarter of a piece, never
/// inside a character.
fn cut_text(text: &str, max_bytes: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max_bytes {
        let mut limit = max_bytes;
        while !rest.is_char_boundary(limit) {
            limit -= 1;
        }
        let window = &rest[..limit];
        let preferred = window
            .char_indices()
            .filter(|(_, c)| matches!(c, '\n' | '。' | '！' | '？' | '；' | '.' | '!' | '?'))
            .map(|(i, c)| i + c.len_utf8())
            .rfind(|&end| end >= limit * 3 / 4);
        let cut = preferred.unwrap_or(limit);
        pieces.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces.retain(|piece| !piece.is_empty());
    pieces
}

/// How a user rated a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    /// 👍
    Up,
    /// 👎
    Down,
}

/// Why a handler could not produce a reply.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The request itself is wrong (unknown turn, empty text, …).
    #[error("{0}")]
    Invalid(String),
    /// A store or the model is down or slow; the user should try later.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

/// The conversation engine as the channels see it.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one message and returns the reply to show.
    async fn handle(&self, message: Incoming) -> Result<Reply, HandlerError>;

    /// Records the user's rating of one of their replies.
    async fn feedback(
        &self,
        user: &UserKey,
        turn_id: &str,
        rating: Rating,
    ) -> Result<(), HandlerError>;

    /// Texts a channel could not deliver (the user's send window closed):
    /// the engine keeps them and hands them over at the user's next
    /// contact. The default drops them with a warning.
    async fn undelivered(&self, user: &UserKey, texts: Vec<String>) -> Result<(), HandlerError> {
        tracing::warn!(
            user = user.storage_key(),
            count = texts.len(),
            "undelivered texts dropped"
        );
        Ok(())
    }

    /// Takes over work a channel would otherwise finish in a task of its
    /// own after replying: true when the handler stored it durably and will
    /// push the result itself, so the channel must not. The default takes
    /// nothing, and the channel does the work in-process (lost if the
    /// process dies).
    async fn follow_up(&self, follow_up: FollowUp) -> Result<bool, HandlerError> {
        let _ = follow_up;
        Ok(false)
    }
}

/// Work a channel hands back to the handler after its reply.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowUp {
    /// Answer a message whose reply missed the channel's budget and push
    /// the answer, split at `limit_bytes`.
    Answer {
        /// The message.
        message: Incoming,
        /// The channel's limit on one pushed text, in bytes.
        limit_bytes: usize,
    },
    /// Push the later parts of a long reply, in order.
    Texts {
        /// To whom.
        user: UserKey,
        /// The parts.
        texts: Vec<String>,
        /// What the parts are claimed under, so a retry does not repeat
        /// them (the channel's message id).
        key: String,
    },
}

/// Why a channel could not push a message to a user.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The channel allows no message now (WeChat's 48-hour window closed,
    /// or its sends in the window are used up): keep it for the next contact.
    #[error("the user's send window is closed")]
    WindowClosed,
    /// The channel's API failed or could not be reached.
    #[error("push failed: {0}")]
    Unavailable(String),
}

/// A channel that can send a user a message outside a reply (WeChat's
/// customer-service messages, a Telegram bot message).
#[async_trait::async_trait]
pub trait Push: Send + Sync + 'static {
    /// Sends one text to the user.
    async fn push(&self, user: &UserKey, text: &str) -> Result<(), PushError>;
}

/// A small key-value store shared by every instance (the session store):
/// access tokens, send windows, follow-up claims, button texts.
#[async_trait::async_trait]
pub trait SharedCache: Send + Sync + 'static {
    /// The value under `key`, if any.
    async fn get(&self, key: &str) -> Option<String>;
    /// Stores `value` under `key` for `ttl`.
    async fn put(&self, key: &str, value: &str, ttl: Duration);
    /// Claims `key` for `ttl`: true for the first claim only.
    async fn claim(&self, key: &str, ttl: Duration) -> bool;
}

/// A handler for the adapters' own tests: answers a text with "答：" and
/// the text, anything else with its debug form.
#[cfg(test)]
pub(crate) struct EchoHandler;

#[cfg(test)]
#[async_trait::async_trait]
impl Handler for EchoHandler {
    async fn handle(&self, message: Incoming) -> Result<Reply, HandlerError> {
        let text = match &message.content {
            Content::Text { text } => format!("答：{text}"),
            other => format!("{other:?}"),
        };
        Ok(Reply::plain("t", ReplyKind::Answer, text))
    }

    async fn feedback(&self, _: &UserKey, _: &str, _: Rating) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn reply(blocks: Vec<Block>) -> Reply {
        Reply {
            turn_id: "t".into(),
            kind: ReplyKind::Answer,
            blocks,
            citations: Vec::new(),
            suggestions: Vec::new(),
            quick_replies: Vec::new(),
            confidence: 1.0,
            feedback: true,
            timing: None,
        }
    }

    #[test]
    fn a_short_reply_is_one_message_equal_to_its_text() {
        let reply = reply(vec![
            Block::new(BlockRole::Body, "答案。"),
            Block::new(BlockRole::Source, "来源：某农科院 ｜ 审核：乙"),
        ]);
        assert_eq!(reply.split_into_messages(2048), vec![reply.text()]);
    }

    #[test]
    fn a_long_answer_is_cut_at_sentence_ends_and_the_source_stays_whole() {
        let body = "马铃薯晚疫病要及时防治。".repeat(120);
        let source = "来源：示例内容，未经专家审核 ｜ 审核：审核乙";
        let reply = reply(vec![
            Block::new(BlockRole::Body, body.clone()),
            Block::new(BlockRole::Source, source),
        ]);
        let messages = reply.split_into_messages(2048);
        assert!(messages.len() >= 3, "{}", messages.len());
        for message in &messages {
            assert!(message.len() <= 2048);
        }
        assert!(messages.iter().any(|m| m.contains(source)));
        for message in &messages[..messages.len() - 1] {
            assert!(message.ends_with('。'), "{message}");
        }
        let rejoined: String = messages.concat().split_whitespace().collect();
        let expected: String = format!("{body}{source}").split_whitespace().collect();
        assert_eq!(rejoined, expected);
    }

    proptest! {
        #[test]
        fn splitting_keeps_every_character_and_each_message_within_the_limit(
            bodies in proptest::collection::vec("[a-z甲乙丙。\n ]{0,400}", 1..5),
            limit in 64usize..600,
        ) {
            let mut blocks: Vec<Block> = bodies.iter().map(|b| Block::new(BlockRole::Body, b.clone())).collect();
            blocks.push(Block::new(BlockRole::Source, "来源：某院"));
            let reply = reply(blocks);
            let messages = reply.split_into_messages(limit);
            for message in &messages {
                prop_assert!(message.len() <= limit, "{} > {limit}", message.len());
            }
            let kept: String = messages.concat().chars().filter(|c| !c.is_whitespace()).collect();
            let all: String = reply.text().chars().filter(|c| !c.is_whitespace()).collect();
            prop_assert_eq!(kept, all);
            prop_assert!(messages.iter().any(|m| m.contains("来源：某院")));
        }
    }
}
