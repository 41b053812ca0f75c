//! The way to reach a user outside a passive reply (an answer slower than
//! WeChat's 5 seconds, the rest of a long answer, a notice that someone
//! claimed their demand): the Official Account's customer-service message
//! API, or the WeCom app message API, which has the same shape.
//!
//! - The access token comes from `GET /cgi-bin/token` with the AppID and
//!   secret (WeCom: `GET /cgi-bin/gettoken` with the corp id and the app's
//!   secret); it is cached in the [`SharedCache`] (Redis in server mode, so
//!   every instance uses one token instead of invalidating each other's)
//!   until shortly before it expires, and refreshed once when the API says
//!   it is invalid (40001, 42001, 40014).
//! - `POST /cgi-bin/message/custom/send` (WeCom: `/cgi-bin/message/send`
//!   with the app's agent id) sends one text.
//! - The Official Account's send window: a user's message opens 5 sends
//!   within 48 hours. Each contact resets the count
//!   ([`CustomerService::note_contact`]); no send is tried outside the
//!   window, and WeChat's own refusal (45015, 45047) is reported as
//!   [`PushError::WindowClosed`] so the caller keeps the text for the
//!   user's next contact. A WeCom app may message its members at any time.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::message::{Channel, Push, PushError, SharedCache, UserKey};

/// WeChat's API.
pub const DEFAULT_API_BASE: &str = "https://api.weixin.qq.com";
/// WeCom's API.
pub const DEFAULT_WECOM_API_BASE: &str = "https://qyapi.weixin.qq.com";
/// How long a user's message keeps the send window open.
const WINDOW: Duration = Duration::from_secs(48 * 60 * 60);
/// Sends allowed per window.
const SENDS_PER_WINDOW: u32 = 5;
/// A token is refreshed this long before WeChat says it expires.
const TOKEN_MARGIN_SECONDS: u64 = 300;
/// One API call may take this long.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Which of the two APIs a [`CustomerService`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// The Official Account's customer-service messages (48-hour window).
    OfficialAccount,
    /// A WeCom app's messages to its members.
    WeCom {
        /// The app's AgentId.
        agent_id: i64,
    },
}

/// How to reach the API.
#[derive(Clone)]
pub struct ServiceConfig {
    /// Which API.
    pub kind: ServiceKind,
    /// The account's AppID, or WeCom's corp id.
    pub app_id: String,
    /// The account's AppSecret, or the WeCom app's secret.
    pub secret: String,
    /// The API base URL (tests point it at a local server).
    pub api_base: String,
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("kind", &self.kind)
            .field("app_id", &self.app_id)
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// The customer-service message client.
pub struct CustomerService {
    config: ServiceConfig,
    http: reqwest::Client,
    cache: Arc<dyn SharedCache>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
}

#[derive(Deserialize)]
struct SendResponse {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// Error codes that mean the token is no longer valid.
const TOKEN_INVALID: &[i64] = &[40001, 40014, 42001];
/// Error codes that mean the user cannot be messaged now.
const WINDOW_CLOSED: &[i64] = &[45015, 45047];

fn unavailable(error: impl std::fmt::Display) -> PushError {
    PushError::Unavailable(error.to_string())
}

/// Sends an API request and reads its JSON answer. A failure is reported
/// without its URL: the URL carries the AppSecret or the access token, and
/// the error is logged.
async fn call<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<T, PushError> {
    let failed = |error: reqwest::Error| PushError::Unavailable(error.without_url().to_string());
    request
        .send()
        .await
        .map_err(failed)?
        .json()
        .await
        .map_err(failed)
}

impl CustomerService {
    /// A client over the shared cache.
    pub fn new(config: ServiceConfig, cache: Arc<dyn SharedCache>) -> Result<Self, PushError> {
        let http = reqwest::Client::builder()
            .timeout(API_TIMEOUT)
            .build()
            .map_err(unavailable)?;
        Ok(Self {
            config,
            http,
            cache,
        })
    }

    fn api_url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api_base.trim_end_matches('/'))
    }

    fn token_key(&self) -> String {
        match self.config.kind {
            ServiceKind::OfficialAccount => format!("wechat:token:{}", self.config.app_id),
            // One corp has one token per app (secret), not per corp.
            ServiceKind::WeCom { agent_id } => {
                format!("wecom:token:{}:{agent_id}", self.config.app_id)
            }
        }
    }

    /// The channel whose users this API reaches.
    pub fn channel(&self) -> Channel {
        match self.config.kind {
            ServiceKind::OfficialAccount => Channel::Wechat,
            ServiceKind::WeCom { .. } => Channel::Wecom,
        }
    }

    fn window_key(openid: &str) -> String {
        format!("wechat:window:{openid}")
    }

    /// Records a message from the user: the send window opens (again) with
    /// its full count.
    pub async fn note_contact(&self, openid: &str) {
        // WeCom has no window to open.
        if matches!(self.config.kind, ServiceKind::WeCom { .. }) {
            return;
        }
        self.cache.put(&Self::window_key(openid), "0", WINDOW).await;
    }

    /// Claims the right to push the follow-ups of one inbound message, so
    /// that of several deliveries of it only one pushes.
    pub async fn claim_follow_up(&self, dedup_key: &str) -> bool {
        self.cache
            .claim(&format!("wechat:followup:{dedup_key}"), WINDOW)
            .await
    }

    /// Records that one inbound message's answer goes out as a push (it
    /// missed the reply budget), so later deliveries of it reply with the
    /// interim text instead of the answer, which would then arrive twice.
    pub async fn mark_late(&self, dedup_key: &str) {
        self.cache
            .put(&format!("wechat:late:{dedup_key}"), "1", WINDOW)
            .await;
    }

    /// Whether [`Self::mark_late`] was called for this message.
    pub async fn is_late(&self, dedup_key: &str) -> bool {
        self.cache
            .get(&format!("wechat:late:{dedup_key}"))
            .await
            .is_some()
    }

    async fn access_token(&self, refresh: bool) -> Result<String, PushError> {
        if !refresh && let Some(token) = self.cache.get(&self.token_key()).await {
            return Ok(token);
        }
        let (app_id, secret) = (self.config.app_id.as_str(), self.config.secret.as_str());
        let request = match self.config.kind {
            ServiceKind::OfficialAccount => self.http.get(self.api_url("/cgi-bin/token")).query(&[
                ("grant_type", "client_credential"),
                ("appid", app_id),
                ("secret", secret),
            ]),
            ServiceKind::WeCom { .. } => self
                .http
                .get(self.api_url("/cgi-bin/gettoken"))
                .query(&[("corpid", app_id), ("corpsecret", secret)]),
        };
        let response: TokenResponse = call(request).await?;
        let Some(token) = response.access_token else {
            return Err(PushError::Unavailable(format!(
                "no access token: {} {}",
                response.errcode.unwrap_or_default(),
                response.errmsg.unwrap_or_default()
            )));
        };
        let lifetime = response
            .expires_in
            .unwrap_or(7200)
            .saturating_sub(TOKEN_MARGIN_SECONDS)
            .max(60);
        self.cache
            .put(&self.token_key(), &token, Duration::from_secs(lifetime))
            .await;
        Ok(token)
    }

    /// Uses one send of the user's window; false when it is closed or used
    /// up. WeCom has no window.
    async fn take_send(&self, openid: &str) -> bool {
        if matches!(self.config.kind, ServiceKind::WeCom { .. }) {
            return true;
        }
        let key = Self::window_key(openid);
        let Some(used) = self.cache.get(&key).await else {
            return false;
        };
        let used: u32 = used.parse().unwrap_or(SENDS_PER_WINDOW);
        if used >= SENDS_PER_WINDOW {
            return false;
        }
        // Not atomic with the read: two sends racing may both pass, and
        // WeChat's own limit (45047) then refuses the extra one.
        self.cache.put(&key, &(used + 1).to_string(), WINDOW).await;
        true
    }

    /// Sends one text to a user of the account (an OpenID, or a WeCom
    /// member's UserID).
    pub async fn send_text(&self, openid: &str, text: &str) -> Result<(), PushError> {
        if !self.take_send(openid).await {
            return Err(PushError::WindowClosed);
        }
        let (path, body) = match self.config.kind {
            ServiceKind::OfficialAccount => (
                "/cgi-bin/message/custom/send",
                serde_json::json!({
                    "touser": openid,
                    "msgtype": "text",
                    "text": { "content": text },
                }),
            ),
            ServiceKind::WeCom { agent_id } => (
                "/cgi-bin/message/send",
                serde_json::json!({
                    "touser": openid,
                    "msgtype": "text",
                    "agentid": agent_id,
                    "text": { "content": text },
                }),
            ),
        };
        let mut refresh = false;
        loop {
            let token = self.access_token(refresh).await?;
            let response: SendResponse = call(
                self.http
                    .post(self.api_url(path))
                    .query(&[("access_token", token.as_str())])
                    .json(&body),
            )
            .await?;
            match response.errcode {
                0 => return Ok(()),
                code if TOKEN_INVALID.contains(&code) && !refresh => refresh = true,
                code if WINDOW_CLOSED.contains(&code) => return Err(PushError::WindowClosed),
                code => {
                    return Err(PushError::Unavailable(format!(
                        "{path} {code}: {}",
                        response.errmsg
                    )));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Push for CustomerService {
    async fn push(&self, user: &UserKey, text: &str) -> Result<(), PushError> {
        if user.channel != self.channel() {
            return Err(PushError::Unavailable(format!(
                "not a user of this account: {}",
                user.storage_key()
            )));
        }
        self.send_text(&user.id, text).await
    }
}
