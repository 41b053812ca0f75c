//! The Telegram bot, on teloxide: webhook mode at `/telegram` on the same
//! axum server, or long polling.
//!
//! - Webhook mode: at start the bot registers its public URL with Telegram
//!   (`setWebhook`, with a secret token); every `POST /telegram` must carry
//!   that token in `X-Telegram-Bot-Api-Secret-Token` (401 otherwise), a
//!   body that is not an update is 400, and the update is answered before
//!   the request returns, so that a crash mid-answer makes Telegram deliver
//!   it again (the engine handles the update's id once; a delivered reply
//!   is never sent twice).
//! - Polling mode: teloxide's long polling, for a bot without a public URL
//!   (a tester's laptop).
//! - Commands: `/start` (the welcome), `/help`, `/need` (files a technical
//!   demand), `/human`; anything else is the user's question.
//! - Replies are HTML with everything escaped; suggestions and quick
//!   replies are inline keyboard buttons, and an answer gets 👍/👎 buttons
//!   that record feedback.
//!
//! The webhook route is ours rather than teloxide's `axum_to_router`: that
//! one compares the secret in variable time, answers 200 to a body it
//! cannot parse, and queues updates on an unbounded channel after answering,
//! so an update in the queue is lost when the process dies.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;
use teloxide::payloads::{AnswerCallbackQuerySetters, SendMessageSetters, SetWebhookSetters};
use teloxide::requests::Requester;
use teloxide::types::{
    AllowedUpdate, CallbackQuery, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, Message,
    ParseMode, Update, UpdateKind,
};
use teloxide::update_listeners::{AsUpdateStream, Polling};
use teloxide::{ApiError, Bot, RequestError};
use time::OffsetDateTime;
use tracing::Instrument;

use crate::message::{
    BlockRole, Channel, Content, Handler, Incoming, Push, PushError, Rating, Reply, SharedCache,
    UserKey,
};

/// The path of the webhook.
pub const WEBHOOK_PATH: &str = "/telegram";
/// Updates are small; this bounds what a hostile client can make us buffer.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Telegram's limit for callback data.
const MAX_CALLBACK_BYTES: usize = 64;
/// How long a button's text stays available behind its key.
const BUTTON_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How long a delivered update is remembered, against re-deliveries.
const DELIVERED_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Telegram counts a message's length after entity parsing, in UTF-16
/// units; this many bytes of plain text are always within its 4096.
const MESSAGE_LIMIT_BYTES: usize = 4096;

/// How updates reach the bot.
#[derive(Clone)]
pub enum TelegramMode {
    /// Telegram posts updates to `public_url` (which must end in
    /// [`WEBHOOK_PATH`] and reach this server), with `secret` in a header.
    Webhook {
        /// The URL Telegram posts to, e.g. `https://wenke.example.org/telegram`.
        public_url: String,
        /// The secret token (1–256 of `A-Z a-z 0-9 _ -`).
        secret: String,
    },
    /// The bot asks Telegram for updates (long polling).
    Polling,
}

impl TelegramMode {
    /// Webhook mode with a secret derived from the bot token, so that every
    /// instance of a deployment agrees on it without another setting.
    pub fn webhook_with_derived_secret(public_url: impl Into<String>, token: &str) -> Self {
        let digest = Sha1::digest(format!("wenke-telegram-webhook\0{token}").as_bytes());
        Self::Webhook {
            public_url: public_url.into(),
            secret: hex::encode(digest),
        }
    }
}

/// The texts the adapter shows by itself, rendered from the engine's
/// templates by whoever builds the configuration.
#[derive(Debug, Clone)]
pub struct TelegramTexts {
    /// The toast after 👍.
    pub feedback_up: String,
    /// The toast after 👎.
    pub feedback_down: String,
    /// The toast when a button's text is no longer known.
    pub button_expired: String,
    /// The message when the engine cannot answer now.
    pub unavailable: String,
}

/// How the bot is configured.
#[derive(Clone)]
pub struct TelegramConfig {
    /// The bot token from @BotFather.
    pub token: String,
    /// The Bot API's base URL; `None` for Telegram's (tests point it at a
    /// local server that speaks the Bot API).
    pub api_url: Option<String>,
    /// Webhook or polling.
    pub mode: TelegramMode,
    /// The adapter's own texts.
    pub texts: TelegramTexts,
}

impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            TelegramMode::Webhook { public_url, .. } => format!("webhook {public_url}"),
            TelegramMode::Polling => "polling".into(),
        };
        f.debug_struct("TelegramConfig")
            .field("api_url", &self.api_url)
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

/// Why the bot could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    /// A configured URL does not parse.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The webhook URL does not end in [`WEBHOOK_PATH`].
    #[error("the webhook URL must end in {WEBHOOK_PATH}: {0}")]
    WrongWebhookPath(String),
    /// The Bot API refused or could not be reached.
    #[error("Telegram Bot API: {0}")]
    Api(String),
}

fn api_error(error: RequestError) -> TelegramError {
    // teloxide's errors never carry the URL (which holds the token).
    TelegramError::Api(error.to_string())
}

fn parse_url(url: &str) -> Result<reqwest::Url, TelegramError> {
    reqwest::Url::parse(url).map_err(|error| TelegramError::InvalidUrl {
        url: url.to_owned(),
        reason: error.to_string(),
    })
}

/// What a button does when tapped, as carried in its callback data.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ButtonAction {
    /// Rates the reply of a turn.
    Rate { turn_id: String, rating: Rating },
    /// Sends this text as the user's message.
    Send(String),
    /// Sends the text stored under this key (texts too long for the
    /// callback data's 64 bytes).
    SendStored(String),
}

impl ButtonAction {
    fn encode(&self) -> String {
        match self {
            Self::Rate {
                turn_id,
                rating: Rating::Up,
            } => format!("f:u:{turn_id}"),
            Self::Rate {
                turn_id,
                rating: Rating::Down,
            } => format!("f:d:{turn_id}"),
            Self::Send(text) => format!("t:{text}"),
            Self::SendStored(key) => format!("k:{key}"),
        }
    }

    fn decode(data: &str) -> Option<Self> {
        let (kind, rest) = data.split_once(':')?;
        match kind {
            "f" => {
                let (rating, turn_id) = rest.split_once(':')?;
                let rating = match rating {
                    "u" => Rating::Up,
                    "d" => Rating::Down,
                    _ => return None,
                };
                (!turn_id.is_empty()).then(|| Self::Rate {
                    turn_id: turn_id.to_owned(),
                    rating,
                })
            }
            "t" if !rest.is_empty() => Some(Self::Send(rest.to_owned())),
            "k" if !rest.is_empty() => Some(Self::SendStored(rest.to_owned())),
            _ => None,
        }
    }
}

/// The cache key of a long button text: the same text always gets the
/// same key, so storing it again is harmless.
fn button_key(text: &str) -> String {
    hex::encode(&Sha1::digest(text.as_bytes())[..8])
}

fn button_cache_key(key: &str) -> String {
    format!("telegram:button:{key}")
}

/// A bot command the engine has a meaning for.
fn command_content(text: &str) -> Option<Content> {
    let first = text.split_whitespace().next()?;
    let command = first.strip_prefix('/')?;
    // In groups a command may name the bot: /help@wenke_bot.
    let command = command.split('@').next().unwrap_or(command);
    Some(match command.to_ascii_lowercase().as_str() {
        "start" => Content::Subscribe,
        "help" => Content::Menu { key: "HELP".into() },
        "need" => Content::Menu {
            key: "DEMAND".into(),
        },
        "human" => Content::Menu {
            key: "HUMAN".into(),
        },
        _ => return None,
    })
}

/// The channel-neutral content of a Telegram message; `None` for what the
/// engine has nothing to say to (stickers, polls, service messages).
fn message_content(message: &Message) -> Option<Content> {
    if let Some(text) = message.text() {
        return Some(command_content(text).unwrap_or_else(|| Content::Text {
            text: text.to_owned(),
        }));
    }
    if message.voice().is_some() {
        // The Bot API does not transcribe voice messages.
        return Some(Content::Voice { recognition: None });
    }
    if message.photo().is_some() {
        return Some(Content::Image);
    }
    if message.video().is_some() || message.video_note().is_some() {
        return Some(Content::Video);
    }
    if let Some(venue) = message.venue() {
        return Some(Content::Location {
            latitude: venue.location.latitude,
            longitude: venue.location.longitude,
            label: Some(venue.title.clone()),
        });
    }
    if let Some(location) = message.location() {
        return Some(Content::Location {
            latitude: location.latitude,
            longitude: location.longitude,
            label: None,
        });
    }
    None
}

/// One message of a reply: HTML text and the buttons under it.
#[derive(Debug, Clone, PartialEq)]
struct OutgoingMessage {
    html: String,
    keyboard: Option<InlineKeyboardMarkup>,
}

/// A reply as HTML: every block escaped, the source and hints in italics.
/// A reply too long for one message is split, plainly, into several.
pub(crate) fn reply_html(reply: &Reply) -> Vec<String> {
    if reply.text().len() > MESSAGE_LIMIT_BYTES {
        return reply
            .split_into_messages(MESSAGE_LIMIT_BYTES)
            .iter()
            .map(|text| teloxide::utils::html::escape(text))
            .collect();
    }
    let blocks: Vec<String> = reply
        .blocks
        .iter()
        .filter(|block| !block.text.trim().is_empty())
        .map(|block| {
            let text = teloxide::utils::html::escape(&block.text);
            match block.role {
                BlockRole::Source | BlockRole::Hint => format!("<i>{text}</i>"),
                BlockRole::Body | BlockRole::Related => text,
            }
        })
        .collect();
    if blocks.is_empty() {
        return Vec::new();
    }
    vec![blocks.join("\n\n")]
}

/// The Telegram bot over a handler.
pub struct Telegram {
    bot: Bot,
    handler: Arc<dyn Handler>,
    cache: Arc<dyn SharedCache>,
    config: TelegramConfig,
}

impl std::fmt::Debug for Telegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telegram")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Telegram {
    /// A bot over the handler; the cache (the session store) holds long
    /// button texts and the ids of delivered updates.
    pub fn new(
        handler: Arc<dyn Handler>,
        cache: Arc<dyn SharedCache>,
        config: TelegramConfig,
    ) -> Result<Arc<Self>, TelegramError> {
        let mut bot = Bot::new(config.token.clone());
        if let Some(url) = &config.api_url {
            bot = bot.set_api_url(parse_url(url)?);
        }
        if let TelegramMode::Webhook { public_url, .. } = &config.mode {
            let url = parse_url(public_url)?;
            if url.path() != WEBHOOK_PATH {
                return Err(TelegramError::WrongWebhookPath(public_url.clone()));
            }
        }
        Ok(Arc::new(Self {
            bot,
            handler,
            cache,
            config,
        }))
    }

    /// Whether updates come to [`Self::router`] (else by polling).
    pub fn uses_webhook(&self) -> bool {
        matches!(self.config.mode, TelegramMode::Webhook { .. })
    }

    /// Starts receiving updates: in webhook mode registers the webhook
    /// with Telegram (serve [`Self::router`]); in polling mode removes any
    /// webhook and polls on a task of its own.
    pub async fn start(self: &Arc<Self>) -> Result<(), TelegramError> {
        match &self.config.mode {
            TelegramMode::Webhook { public_url, secret } => {
                self.bot
                    .set_webhook(parse_url(public_url)?)
                    .secret_token(secret.clone())
                    .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
                    .await
                    .map_err(api_error)?;
                Ok(())
            }
            TelegramMode::Polling => {
                let polling = Polling::builder(self.bot.clone())
                    .allowed_updates(vec![AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
                    .delete_webhook()
                    .await
                    .build();
                tokio::spawn(Arc::clone(self).poll(polling));
                Ok(())
            }
        }
    }

    /// The webhook route, without registering it with Telegram.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(WEBHOOK_PATH, post(receive))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(Arc::clone(self))
    }

    async fn poll(self: Arc<Self>, mut polling: Polling<Bot>) {
        let updates = polling.as_stream();
        let mut updates = std::pin::pin!(updates);
        while let Some(update) = updates.next().await {
            match update {
                Ok(update) => {
                    if let Err(error) = self.process(update).await {
                        tracing::warn!(%error, "telegram: update not answered");
                    }
                }
                // teloxide backs off by itself; this is only news.
                Err(error) => tracing::warn!(%error, "telegram: polling failed"),
            }
        }
    }

    fn secret_matches(&self, headers: &HeaderMap) -> bool {
        let TelegramMode::Webhook { secret, .. } = &self.config.mode else {
            return false;
        };
        let Some(given) = headers.get("x-telegram-bot-api-secret-token") else {
            return false;
        };
        bool::from(given.as_bytes().ct_eq(secret.as_bytes()))
    }

    /// Answers one update: a message or a button tap.
    pub async fn process(&self, update: Update) -> Result<(), TelegramError> {
        let delivered = format!("telegram:delivered:{}", update.id.0);
        if self.cache.get(&delivered).await.is_some() {
            tracing::debug!(update = update.id.0, "telegram: update already answered");
            return Ok(());
        }
        match update.kind {
            UpdateKind::Message(message) => self.on_message(update.id.0, message).await?,
            UpdateKind::CallbackQuery(query) => self.on_button(query).await?,
            _ => return Ok(()),
        }
        self.cache.put(&delivered, "1", DELIVERED_TTL).await;
        Ok(())
    }

    async fn on_message(&self, update_id: u32, message: Message) -> Result<(), TelegramError> {
        // One conversation per person: group chats are not served.
        if !message.chat.is_private() {
            return Ok(());
        }
        let Some(content) = message_content(&message) else {
            return Ok(());
        };
        let incoming = Incoming {
            user: UserKey::new(Channel::Telegram, message.chat.id.0.to_string()),
            message_id: Some(format!("tg:{update_id}")),
            content,
            received_at: OffsetDateTime::now_utc(),
        };
        self.answer(message.chat.id, incoming).await
    }

    async fn on_button(&self, query: CallbackQuery) -> Result<(), TelegramError> {
        let chat = ChatId(i64::try_from(query.from.id.0).unwrap_or(i64::MAX));
        let user = UserKey::new(Channel::Telegram, chat.0.to_string());
        let action = query.data.as_deref().and_then(ButtonAction::decode);
        let text = match action {
            Some(ButtonAction::Rate { turn_id, rating }) => {
                let toast = match self.handler.feedback(&user, &turn_id, rating).await {
                    Ok(()) if rating == Rating::Up => &self.config.texts.feedback_up,
                    Ok(()) => &self.config.texts.feedback_down,
                    Err(error) => {
                        tracing::warn!(%error, "telegram: feedback not recorded");
                        &self.config.texts.button_expired
                    }
                };
                self.bot
                    .answer_callback_query(query.id)
                    .text(toast.clone())
                    .await
                    .map_err(api_error)?;
                return Ok(());
            }
            Some(ButtonAction::Send(text)) => Some(text),
            Some(ButtonAction::SendStored(key)) => self.cache.get(&button_cache_key(&key)).await,
            None => None,
        };
        let Some(text) = text else {
            self.bot
                .answer_callback_query(query.id)
                .text(self.config.texts.button_expired.clone())
                .await
                .map_err(api_error)?;
            return Ok(());
        };
        // Stops the button's spinner; the answer follows as a message.
        self.bot
            .answer_callback_query(query.id.clone())
            .await
            .map_err(api_error)?;
        let incoming = Incoming {
            user,
            message_id: Some(format!("tg:cb:{}", query.id.0)),
            content: Content::Text { text },
            received_at: OffsetDateTime::now_utc(),
        };
        self.answer(chat, incoming).await
    }

    async fn answer(&self, chat: ChatId, incoming: Incoming) -> Result<(), TelegramError> {
        let messages = match self.handler.handle(incoming).await {
            Ok(reply) => self.outgoing(&reply).await,
            Err(error) => {
                tracing::warn!(%error, "telegram: engine failed");
                vec![OutgoingMessage {
                    html: teloxide::utils::html::escape(&self.config.texts.unavailable),
                    keyboard: None,
                }]
            }
        };
        for message in messages {
            let mut request = self
                .bot
                .send_message(chat, message.html)
                .parse_mode(ParseMode::Html);
            if let Some(keyboard) = message.keyboard {
                request = request.reply_markup(keyboard);
            }
            request.await.map_err(api_error)?;
        }
        Ok(())
    }

    /// The reply as messages, the buttons under the last one.
    async fn outgoing(&self, reply: &Reply) -> Vec<OutgoingMessage> {
        let mut messages: Vec<OutgoingMessage> = reply_html(reply)
            .into_iter()
            .map(|html| OutgoingMessage {
                html,
                keyboard: None,
            })
            .collect();
        if let Some(last) = messages.last_mut() {
            last.keyboard = self.keyboard(reply).await;
        }
        messages
    }

    /// Suggestions one per row, quick replies in one row, then 👍/👎.
    async fn keyboard(&self, reply: &Reply) -> Option<InlineKeyboardMarkup> {
        let mut rows: Vec<Vec<InlineKeyboardButton>> = Vec::new();
        for (number, question) in reply.suggestions.iter().enumerate() {
            let label = format!("{}. {question}", number + 1);
            rows.push(vec![self.send_button(label, question).await]);
        }
        let mut quick = Vec::new();
        for quick_reply in &reply.quick_replies {
            quick.push(
                self.send_button(quick_reply.label.clone(), &quick_reply.text)
                    .await,
            );
        }
        if !quick.is_empty() {
            rows.push(quick);
        }
        if reply.feedback && !reply.turn_id.is_empty() {
            let rate = |rating| {
                ButtonAction::Rate {
                    turn_id: reply.turn_id.clone(),
                    rating,
                }
                .encode()
            };
            let (up, down) = (rate(Rating::Up), rate(Rating::Down));
            if down.len() <= MAX_CALLBACK_BYTES {
                rows.push(vec![
                    InlineKeyboardButton::callback("👍", up),
                    InlineKeyboardButton::callback("👎", down),
                ]);
            }
        }
        (!rows.is_empty()).then(|| InlineKeyboardMarkup::new(rows))
    }

    /// A button that sends `text`: in its callback data when it fits, else
    /// by a key into the cache.
    async fn send_button(&self, label: String, text: &str) -> InlineKeyboardButton {
        let direct = ButtonAction::Send(text.to_owned()).encode();
        if direct.len() <= MAX_CALLBACK_BYTES {
            return InlineKeyboardButton::callback(label, direct);
        }
        let key = button_key(text);
        self.cache
            .put(&button_cache_key(&key), text, BUTTON_TTL)
            .await;
        InlineKeyboardButton::callback(label, ButtonAction::SendStored(key).encode())
    }
}

async fn receive(
    State(telegram): State<Arc<Telegram>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !telegram.secret_matches(&headers) {
        return (StatusCode::UNAUTHORIZED, "secret token mismatch").into_response();
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(error) => {
            tracing::warn!(%error, "telegram: malformed update");
            return (StatusCode::BAD_REQUEST, "malformed update").into_response();
        }
    };
    let update_id = update.id.0;
    // The answer is part of the request: a failure makes Telegram deliver
    // the update again, and the engine's dedup keeps that harmless.
    match telegram
        .process(update)
        .instrument(tracing::info_span!("telegram", update = update_id))
        .await
    {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => {
            tracing::warn!(%error, "telegram: update not answered; Telegram will retry");
            (StatusCode::BAD_GATEWAY, "reply not delivered").into_response()
        }
    }
}

#[async_trait::async_trait]
impl Push for Telegram {
    async fn push(&self, user: &UserKey, text: &str) -> Result<(), PushError> {
        let chat = match (user.channel, user.id.parse::<i64>()) {
            (Channel::Telegram, Ok(chat)) => ChatId(chat),
            _ => {
                return Err(PushError::Unavailable(format!(
                    "not a Telegram user: {}",
                    user.storage_key()
                )));
            }
        };
        match self.bot.send_message(chat, text).await {
            Ok(_) => Ok(()),
            // A user who blocked the bot may unblock it and write again.
            Err(RequestError::Api(ApiError::BotBlocked)) => Err(PushError::WindowClosed),
            Err(error) => Err(PushError::Unavailable(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::message::{Block, QuickReply, ReplyKind};

    #[test]
    fn button_actions_round_trip() {
        for action in [
            ButtonAction::Rate {
                turn_id: "0193e0a4-7c1b-7d2e-9f00-123456789abc".into(),
                rating: Rating::Down,
            },
            ButtonAction::Rate {
                turn_id: "t".into(),
                rating: Rating::Up,
            },
            ButtonAction::Send("详细".into()),
            ButtonAction::SendStored(button_key("洋芋晚疫病怎么防治")),
        ] {
            assert_eq!(ButtonAction::decode(&action.encode()), Some(action));
        }
        for junk in ["", "f", "f:x:1", "f:u:", "t:", "k:", "z:1", "详细"] {
            assert_eq!(ButtonAction::decode(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn commands_map_to_engine_actions() {
        let cases = [
            ("/start", Some(Content::Subscribe)),
            ("/start ref-123", Some(Content::Subscribe)),
            (
                "/help@wenke_bot",
                Some(Content::Menu { key: "HELP".into() }),
            ),
            (
                "/need",
                Some(Content::Menu {
                    key: "DEMAND".into(),
                }),
            ),
            (
                "/HUMAN",
                Some(Content::Menu {
                    key: "HUMAN".into(),
                }),
            ),
            ("/unknown", None),
            ("洋芋怎么种", None),
            ("1/2 亩", None),
        ];
        for (text, expected) in cases {
            assert_eq!(command_content(text), expected, "{text:?}");
        }
    }

    #[test]
    fn replies_are_escaped_html_with_the_source_in_italics() {
        let mut reply = Reply::plain("turn", ReplyKind::Answer, "土壤 pH<5.5 时 & 施石灰 <b>");
        reply.blocks.push(Block::new(
            BlockRole::Source,
            "来源：<省农科院> ｜ 审核：张三",
        ));
        let html = reply_html(&reply);
        assert_eq!(
            html,
            vec![
                "土壤 pH&lt;5.5 时 &amp; 施石灰 &lt;b&gt;\n\n<i>来源：&lt;省农科院&gt; ｜ 审核：张三</i>"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn a_reply_beyond_one_message_is_split_and_still_escaped() {
        let body = "施肥要<适量>。".repeat(400);
        let reply = Reply::plain("turn", ReplyKind::Answer, body.clone());
        let html = reply_html(&reply);
        assert!(html.len() > 1);
        for message in &html {
            assert!(!message.contains('<'), "unescaped: {message}");
        }
        let rejoined: String = html.concat().replace("&lt;", "<").replace("&gt;", ">");
        assert_eq!(rejoined.replace('\n', ""), body);
    }

    #[test]
    fn webhook_secrets_are_derived_per_token_in_telegrams_alphabet() {
        let secret =
            |token| match TelegramMode::webhook_with_derived_secret("https://x/telegram", token) {
                TelegramMode::Webhook { secret, .. } => secret,
                TelegramMode::Polling => unreachable!(),
            };
        assert_eq!(secret("1:a"), secret("1:a"));
        assert_ne!(secret("1:a"), secret("1:b"));
        assert!(secret("1:a").bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    /// The cache of the adapter's tests: a map, without expiry.
    #[derive(Default)]
    struct MapCache(parking_lot::Mutex<std::collections::HashMap<String, String>>);

    #[async_trait::async_trait]
    impl SharedCache for MapCache {
        async fn get(&self, key: &str) -> Option<String> {
            self.0.lock().get(key).cloned()
        }
        async fn put(&self, key: &str, value: &str, _: Duration) {
            self.0.lock().insert(key.into(), value.into());
        }
        async fn claim(&self, key: &str, _: Duration) -> bool {
            self.0.lock().insert(key.into(), "1".into()).is_none()
        }
    }

    fn texts() -> TelegramTexts {
        TelegramTexts {
            feedback_up: "谢谢".into(),
            feedback_down: "记下了".into(),
            button_expired: "按钮已过期".into(),
            unavailable: "稍后再试".into(),
        }
    }

    #[tokio::test]
    async fn every_button_fits_telegrams_callback_limit_and_long_texts_are_kept() {
        let cache = Arc::new(MapCache::default());
        let telegram = Telegram::new(
            Arc::new(crate::message::EchoHandler),
            cache.clone(),
            TelegramConfig {
                token: "1:test".into(),
                api_url: None,
                mode: TelegramMode::Polling,
                texts: texts(),
            },
        )
        .expect("valid configuration");
        let long_question = "马铃薯晚疫病在多雨季节应该怎样提前预防和及时用药";
        let reply = Reply {
            suggestions: vec![long_question.into(), "洋芋".into()],
            quick_replies: vec![
                QuickReply::new("详细", "详细"),
                QuickReply::new("转人工", "转人工"),
            ],
            feedback: true,
            ..Reply::plain(
                "0193e0a4-7c1b-7d2e-9f00-123456789abc",
                ReplyKind::Answer,
                "答",
            )
        };
        let keyboard = telegram.keyboard(&reply).await.expect("buttons");
        let data: Vec<String> = keyboard
            .inline_keyboard
            .iter()
            .flatten()
            .map(|button| match &button.kind {
                teloxide::types::InlineKeyboardButtonKind::CallbackData(data) => data.clone(),
                other => panic!("not a callback button: {other:?}"),
            })
            .collect();
        assert_eq!(
            data.len(),
            6,
            "2 suggestions, 2 quick replies, 👍 and 👎: {data:?}"
        );
        assert!(
            data.iter().all(|d| d.len() <= MAX_CALLBACK_BYTES),
            "{data:?}"
        );
        let Some(ButtonAction::SendStored(key)) = ButtonAction::decode(&data[0]) else {
            panic!("the long question goes by key: {}", data[0]);
        };
        assert_eq!(
            cache.get(&button_cache_key(&key)).await.as_deref(),
            Some(long_question)
        );
        assert_eq!(
            ButtonAction::decode(&data[1]),
            Some(ButtonAction::Send("洋芋".into()))
        );
        assert_eq!(
            ButtonAction::decode(&data[5]),
            Some(ButtonAction::Rate {
                turn_id: reply.turn_id.clone(),
                rating: Rating::Down
            })
        );
    }

    #[test]
    fn a_webhook_url_must_end_in_the_webhook_path() {
        let config = |url: &str| TelegramConfig {
            token: "1:test".into(),
            api_url: None,
            mode: TelegramMode::webhook_with_derived_secret(url, "1:test"),
            texts: texts(),
        };
        let cache = Arc::new(MapCache::default());
        let handler = Arc::new(crate::message::EchoHandler);
        assert!(
            Telegram::new(
                handler.clone(),
                cache.clone(),
                config("https://bot.example.org/telegram")
            )
            .is_ok()
        );
        assert!(matches!(
            Telegram::new(handler, cache, config("https://bot.example.org/hook")),
            Err(TelegramError::WrongWebhookPath(_))
        ));
    }

    proptest! {
        #[test]
        fn decoding_any_callback_data_never_panics(data in ".{0,80}") {
            let _ = ButtonAction::decode(&data);
        }

        #[test]
        fn short_texts_round_trip_through_callback_data(text in "[^\\x00]{1,20}") {
            let action = ButtonAction::Send(text);
            prop_assert_eq!(ButtonAction::decode(&action.encode()), Some(action));
        }
    }
}
