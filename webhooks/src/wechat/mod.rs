//! The WeChat Official Account and WeCom protocols: message crypto and XML
//! (shared by both), the Official Account endpoint, and the
//! customer-service message API, and the WeCom endpoint (`work`).

pub mod account;
pub mod crypto;
pub mod service;
pub mod work;
pub mod xml;

/// The EncodingAESKey of the adapters' unit tests.
#[cfg(test)]
pub(crate) const TEST_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// The configuration the adapters' unit tests share: safe mode with a
/// fixed key, the default budget, no service API.
#[cfg(test)]
pub(crate) fn test_config(token: &str, receive_id: &str) -> account::AccountConfig {
    account::AccountConfig {
        token: token.into(),
        encoding_aes_key: Some(TEST_KEY.into()),
        app_id: receive_id.into(),
        reply_budget: std::time::Duration::from_secs(4),
        service: None,
        interim_text: "正在查询权威答案，请稍候…".into(),
        unavailable_text: "系统有点忙，请稍后再试。".into(),
    }
}
