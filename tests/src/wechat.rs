//! The WeChat Official Account as the end-to-end tests configure it and as
//! WeChat talks to it.

use std::time::Duration;

use bot::Engine;
use webhooks::wechat::account::AccountConfig;

/// The account's server token (listed in `tests/log-secrets.txt`).
pub const TOKEN: &str = "wechat-token-for-tests";
/// The account's AppID.
pub const APP_ID: &str = "wx0123456789abcdef";

/// A text message as WeChat posts it, in plaintext.
pub fn message(openid: &str, msg_id: u64, text: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_wenke]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )
}

/// The Official Account in plaintext mode, with the default budget, no
/// customer-service API, and the engine's own interim and unavailable
/// texts.
pub fn plaintext_account(engine: &Engine) -> anyhow::Result<AccountConfig> {
    Ok(AccountConfig {
        token: TOKEN.into(),
        encoding_aes_key: None,
        app_id: APP_ID.into(),
        reply_budget: Duration::from_secs(4),
        service: None,
        interim_text: engine.render("in_progress.j2", ())?,
        unavailable_text: engine.render("unavailable.j2", ())?,
    })
}
