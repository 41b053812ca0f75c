//! What a reply looks like on each channel, for the editor console's hit
//! testing: the messages each adapter would send, rendered by the same
//! functions the adapters use, and the buttons under them.

use serde::Serialize;

use crate::message::{Channel, Reply};

/// How a channel's messages are marked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Markup {
    /// Plain text.
    Text,
    /// Telegram's HTML subset (escaped text, `<i>` for sources and hints).
    Html,
}

/// One channel's rendering of a reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelView {
    /// The channel.
    pub channel: Channel,
    /// The messages sent, in order; on WeChat the first is the passive
    /// reply and the rest go out as customer-service messages.
    pub messages: Vec<String>,
    /// Their markup.
    pub markup: Markup,
    /// Button labels under the last message; on WeChat and WeCom the user
    /// types the quick replies instead, so there are none.
    pub buttons: Vec<String>,
}

/// Suggestions numbered, then quick replies, then 👍/👎 when the reply can
/// be rated: the buttons of the web chat and of Telegram.
fn buttons(reply: &Reply) -> Vec<String> {
    let mut buttons: Vec<String> = reply
        .suggestions
        .iter()
        .enumerate()
        .map(|(number, question)| format!("{}. {question}", number + 1))
        .collect();
    buttons.extend(reply.quick_replies.iter().map(|q| q.label.clone()));
    if reply.feedback {
        buttons.extend(["👍".to_owned(), "👎".to_owned()]);
    }
    buttons
}

/// The reply on every channel that answers users.
pub fn render(reply: &Reply) -> Vec<ChannelView> {
    let wechat_like = |channel: Channel| ChannelView {
        channel,
        messages: reply.split_into_messages(channel.text_limit_bytes().unwrap_or(usize::MAX)),
        markup: Markup::Text,
        buttons: Vec::new(),
    };
    vec![
        wechat_like(Channel::Wechat),
        wechat_like(Channel::Wecom),
        ChannelView {
            channel: Channel::Telegram,
            messages: crate::telegram::reply_html(reply),
            markup: Markup::Html,
            buttons: buttons(reply),
        },
        ChannelView {
            channel: Channel::Web,
            messages: vec![reply.text()],
            markup: Markup::Text,
            buttons: buttons(reply),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Block, BlockRole, QuickReply, ReplyKind};

    #[test]
    fn a_long_answer_is_several_wechat_messages_and_one_web_message() {
        let mut reply = Reply::plain("t1", ReplyKind::Answer, "甲。".repeat(800));
        reply.blocks.push(Block::new(
            BlockRole::Source,
            "来源：省农科院 ｜ 审核：李四",
        ));
        reply.quick_replies.push(QuickReply::new("详细", "详细"));
        reply.feedback = true;
        let views = render(&reply);
        let wechat = &views[0];
        assert_eq!(wechat.channel, Channel::Wechat);
        assert!(wechat.messages.len() >= 2);
        assert!(wechat.messages.iter().all(|m| m.len() <= 2048));
        assert!(wechat.buttons.is_empty());
        let web = views.iter().find(|v| v.channel == Channel::Web);
        assert_eq!(web.map(|v| v.messages.len()), Some(1));
        assert_eq!(
            web.map(|v| v.buttons.clone()),
            Some(vec!["详细".to_owned(), "👍".to_owned(), "👎".to_owned()])
        );
        let telegram = views.iter().find(|v| v.channel == Channel::Telegram);
        assert!(telegram.is_some_and(|v| v.markup == Markup::Html));
    }
}
