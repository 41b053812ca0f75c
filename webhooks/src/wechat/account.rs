//! The WeChat Official Account endpoint, `/wechat`: URL verification and
//! passive replies, in plaintext, compatible and safe mode.
//!
//! - `GET /wechat?signature&timestamp&nonce&echostr`: echoes `echostr` when
//!   the signature over (token, timestamp, nonce) is right, else 403.
//! - `POST /wechat?signature&timestamp&nonce[&encrypt_type=aes&msg_signature]`:
//!   verifies the signature, decrypts in safe and compatible mode, parses
//!   the message, hands it to the engine with its `MsgId` (or sender and
//!   time for events) as the message id, and replies passively in the mode
//!   of the request.
//!
//! The 5-second rule: WeChat waits 5 s for a reply, then sends the same
//! message again (up to three times). With the customer-service API
//! configured ([`AccountConfig::service`]), a reply not ready within
//! [`AccountConfig::reply_budget`] is answered at once with a short interim
//! text, and the answer follows as customer-service messages when it is
//! ready; a reply longer than 2048 bytes goes out as the passive reply plus
//! follow-ups. Without it, a late reply is answered with `success` (no
//! reply) and WeChat's retry, reaching the engine with the same message
//! id, collects the first attempt's reply without the work being done
//! twice. Follow-ups of one message are pushed once, however many times
//! WeChat delivers it (a claim in the shared cache); texts WeChat refuses
//! (the 48-hour window closed) go back to the engine for the user's next
//! contact.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use time::OffsetDateTime;

use super::crypto::{CryptoError, MessageCrypto, verify_url_signature};
use super::service::CustomerService;
use super::xml::{Event, InboundKind, InboundMessage, parse_envelope, parse_message, text_reply};
use crate::message::{Channel, Content, FollowUp, Handler, HandlerError, Incoming, UserKey};

/// WeChat's documented limit for one request body is far below this; the
/// limit keeps a hostile client from making the server buffer more.
pub(super) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How the Official Account is configured.
#[derive(Clone)]
pub struct AccountConfig {
    /// The token set in the Official Account's server configuration.
    pub token: String,
    /// The 43-character EncodingAESKey, for compatible and safe mode.
    pub encoding_aes_key: Option<String>,
    /// The account's AppID (the receive id of encrypted messages).
    pub app_id: String,
    /// How long a passive reply may take before the request is answered
    /// with the interim text (or `success`, without the service API).
    pub reply_budget: Duration,
    /// The customer-service message API, for late and long answers.
    pub service: Option<Arc<CustomerService>>,
    /// What a user reads while a late answer is on its way
    /// ("正在查询权威答案，请稍候…"), from the engine's templates.
    pub interim_text: String,
    /// What a user reads when the engine cannot answer now (a store down
    /// or stuck: "系统有点忙，请稍后再试。"), from the engine's templates.
    pub unavailable_text: String,
}

impl std::fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountConfig")
            .field("app_id", &self.app_id)
            .field("reply_budget", &self.reply_budget)
            .field("service", &self.service.is_some())
            .finish_non_exhaustive()
    }
}

pub(super) struct Account {
    pub(super) handler: Arc<dyn Handler>,
    pub(super) config: AccountConfig,
    pub(super) crypto: Option<MessageCrypto>,
}

pub(super) fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

fn xml(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// The channel-neutral content of a WeChat message; `None` for messages
/// the engine has nothing to say to (menu links, scans, location reports).
fn content(message: &InboundMessage) -> Option<Content> {
    Some(match &message.kind {
        InboundKind::Text { content } => Content::Text {
            text: content.clone(),
        },
        InboundKind::Voice { recognition, .. } => Content::Voice {
            recognition: recognition.clone().filter(|r| !r.trim().is_empty()),
        },
        InboundKind::Image { .. } => Content::Image,
        InboundKind::Video { .. } | InboundKind::ShortVideo { .. } => Content::Video,
        InboundKind::Location {
            latitude,
            longitude,
            label,
            ..
        } => Content::Location {
            latitude: *latitude,
            longitude: *longitude,
            label: label.clone(),
        },
        InboundKind::Link { title, url, .. } => Content::Link {
            title: title.clone(),
            url: url.clone(),
        },
        InboundKind::Event(Event::Subscribe { .. }) => Content::Subscribe,
        InboundKind::Event(Event::Unsubscribe) => Content::Unsubscribe,
        InboundKind::Event(Event::Click { event_key }) => Content::Menu {
            key: event_key.clone(),
        },
        InboundKind::Event(_) | InboundKind::Unknown { .. } => return None,
    })
}

async fn verify(
    State(account): State<Arc<Account>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    if !verify_url_signature(
        &account.config.token,
        field("timestamp"),
        field("nonce"),
        field("signature"),
    ) {
        return plain(StatusCode::FORBIDDEN, "signature mismatch");
    }
    field("echostr").to_owned().into_response()
}

async fn receive(
    State(account): State<Arc<Account>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    let (timestamp, nonce) = (field("timestamp"), field("nonce"));
    // Every request carries the plain signature, encrypted ones also
    // msg_signature over the ciphertext.
    if !verify_url_signature(&account.config.token, timestamp, nonce, field("signature")) {
        return plain(StatusCode::FORBIDDEN, "signature mismatch");
    }
    let encrypted = field("encrypt_type").eq_ignore_ascii_case("aes");
    let plaintext = if encrypted {
        let Some(crypto) = &account.crypto else {
            return plain(
                StatusCode::BAD_REQUEST,
                "encrypted message but no EncodingAESKey configured",
            );
        };
        let envelope = match parse_envelope(&body) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::warn!(%error, "wechat: malformed envelope");
                return plain(StatusCode::BAD_REQUEST, "malformed XML");
            }
        };
        match crypto.decrypt_verified(timestamp, nonce, &envelope.encrypt, field("msg_signature")) {
            Ok(text) => text.into_bytes(),
            Err(CryptoError::InvalidSignature) => {
                return plain(StatusCode::FORBIDDEN, "signature mismatch");
            }
            Err(error) => {
                tracing::warn!(%error, "wechat: message does not decrypt");
                return plain(StatusCode::BAD_REQUEST, "message does not decrypt");
            }
        }
    } else {
        body.to_vec()
    };
    let message = match parse_message(&plaintext) {
        Ok(message) => message,
        Err(error) => {
            tracing::warn!(%error, "wechat: malformed message");
            return plain(StatusCode::BAD_REQUEST, "malformed message");
        }
    };
    answer(
        &account,
        message,
        Channel::Wechat,
        encrypted,
        timestamp,
        nonce,
    )
    .await
}

/// Hands a parsed message to the engine and replies passively (in the
/// request's mode) or, when late, through the service API; shared by the
/// Official Account and WeCom.
pub(super) async fn answer(
    account: &Arc<Account>,
    message: InboundMessage,
    channel: Channel,
    encrypted: bool,
    timestamp: &str,
    nonce: &str,
) -> Response {
    let Some(content) = content(&message) else {
        return plain(StatusCode::OK, "success");
    };
    let incoming = Incoming {
        user: UserKey::new(channel, message.from_user_name.clone()),
        message_id: Some(message.dedup_key()),
        content,
        received_at: OffsetDateTime::now_utc(),
    };
    let unsubscribed = matches!(incoming.content, Content::Unsubscribe);
    let user = incoming.user.clone();
    let dedup_key = message.dedup_key();
    let service = account.config.service.clone();
    if let Some(service) = &service
        && !unsubscribed
    {
        service.note_contact(&message.from_user_name).await;
    }
    // The work runs as its own task, so a reply that misses the budget is
    // still finished (and stored by the engine for WeChat's retry) rather
    // than cancelled with this request.
    let for_later = incoming.clone();
    let handler = Arc::clone(&account.handler);
    let mut work = tokio::spawn(async move { handler.handle(incoming).await });
    let limit = channel.text_limit_bytes().unwrap_or(2048);
    let reply = match tokio::time::timeout(account.config.reply_budget, &mut work).await {
        Ok(Ok(Ok(reply))) => reply,
        Ok(Ok(Err(HandlerError::Invalid(error)))) => {
            tracing::warn!(%error, "wechat: message refused by the engine");
            return plain(StatusCode::OK, "success");
        }
        // The user is told to try again rather than left with no reply;
        // WeChat would not retry after this answer anyway.
        Ok(Ok(Err(error))) => {
            tracing::warn!(%error, "wechat: engine failed");
            let text = account.config.unavailable_text.clone();
            return passive(account, &message, encrypted, timestamp, nonce, &text);
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "wechat: engine task failed");
            let text = account.config.unavailable_text.clone();
            return passive(account, &message, encrypted, timestamp, nonce, &text);
        }
        Err(_) => {
            // Not ready in time. Without the service API, WeChat's retry
            // collects it; with it, an interim reply now and the answer
            // as soon as it is ready.
            let Some(service) = service else {
                return plain(StatusCode::OK, "success");
            };
            if service.claim_follow_up(&dedup_key).await {
                service.mark_late(&dedup_key).await;
                let taken = account
                    .handler
                    .follow_up(FollowUp::Answer {
                        message: for_later,
                        limit_bytes: limit,
                    })
                    .await;
                if let Err(error) = &taken {
                    tracing::warn!(%error, "wechat: late answer not queued; finishing it in-process");
                }
                if matches!(taken, Ok(true)) {
                    let interim = account.config.interim_text.clone();
                    return passive(account, &message, encrypted, timestamp, nonce, &interim);
                }
                let handler = Arc::clone(&account.handler);
                tokio::spawn(async move {
                    match work.await {
                        Ok(Ok(reply)) => {
                            let texts = reply.split_into_messages(limit);
                            deliver(&service, &*handler, &user, texts).await;
                        }
                        Ok(Err(error)) => tracing::warn!(%error, "wechat: late answer failed"),
                        Err(error) => tracing::error!(%error, "wechat: late answer task failed"),
                    }
                });
            }
            let interim = account.config.interim_text.clone();
            return passive(account, &message, encrypted, timestamp, nonce, &interim);
        }
    };
    if unsubscribed {
        return plain(StatusCode::OK, "success");
    }
    // Another delivery of this message missed the budget: its answer is
    // being pushed, so this one must not carry it too.
    if let Some(service) = &service
        && service.is_late(&dedup_key).await
    {
        let interim = account.config.interim_text.clone();
        return passive(account, &message, encrypted, timestamp, nonce, &interim);
    }
    let mut texts = reply.split_into_messages(limit).into_iter();
    let Some(first) = texts.next() else {
        return plain(StatusCode::OK, "success");
    };
    let rest: Vec<String> = texts.collect();
    if !rest.is_empty() {
        match service {
            Some(service) if service.claim_follow_up(&dedup_key).await => {
                let taken = account
                    .handler
                    .follow_up(FollowUp::Texts {
                        user: user.clone(),
                        texts: rest.clone(),
                        key: dedup_key,
                    })
                    .await;
                if let Err(error) = &taken {
                    tracing::warn!(%error, "wechat: later parts not queued; sending them in-process");
                }
                if !matches!(taken, Ok(true)) {
                    let handler = Arc::clone(&account.handler);
                    tokio::spawn(async move { deliver(&service, &*handler, &user, rest).await });
                }
            }
            Some(_) => {}
            None => tracing::info!(
                parts = rest.len() + 1,
                "wechat: long reply cut to its first part (no customer-service API configured)"
            ),
        }
    }
    passive(account, &message, encrypted, timestamp, nonce, &first)
}

/// A passive text reply, encrypted when the request was.
fn passive(
    account: &Account,
    message: &InboundMessage,
    encrypted: bool,
    timestamp: &str,
    nonce: &str,
    text: &str,
) -> Response {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let reply_xml = text_reply(&message.from_user_name, &message.to_user_name, now, text);
    match (&account.crypto, encrypted) {
        (Some(crypto), true) => xml(crypto.encrypted_reply(&reply_xml, timestamp, nonce)),
        _ => xml(reply_xml),
    }
}

/// Pushes texts in order; what cannot be sent goes back to the engine for
/// the user's next contact.
async fn deliver(
    service: &CustomerService,
    handler: &dyn Handler,
    user: &UserKey,
    texts: Vec<String>,
) {
    for (index, text) in texts.iter().enumerate() {
        if let Err(error) = service.send_text(&user.id, text).await {
            tracing::warn!(%error, user = user.storage_key(), "wechat: follow-up not delivered");
            let kept = texts[index..].to_vec();
            if let Err(error) = handler.undelivered(user, kept).await {
                tracing::error!(%error, "wechat: undelivered texts lost");
            }
            return;
        }
    }
}

/// The `/wechat` routes over a handler.
pub fn router(handler: Arc<dyn Handler>, config: AccountConfig) -> Result<Router, CryptoError> {
    let crypto = match &config.encoding_aes_key {
        Some(key) => Some(MessageCrypto::new(&config.token, key, &config.app_id)?),
        None => None,
    };
    let account = Arc::new(Account {
        handler,
        config,
        crypto,
    });
    Ok(Router::new()
        .route("/wechat", get(verify).post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(account))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::message::EchoHandler;
    use crate::wechat::crypto::url_signature;

    const TOKEN: &str = "test-token";
    const KEY: &str = crate::wechat::TEST_KEY;
    const APP_ID: &str = "wx0123456789abcdef";

    fn app() -> Router {
        router(
            Arc::new(EchoHandler),
            crate::wechat::test_config(TOKEN, APP_ID),
        )
        .expect("router")
    }

    async fn call(request: Request<Body>) -> (StatusCode, String) {
        let response = app().oneshot(request).await.expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn text_message(content: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[gh_account]]></ToUserName><FromUserName><![CDATA[openid-1]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>1234567890123456</MsgId></xml>"
        )
    }

    #[tokio::test]
    async fn url_verification_echoes_only_with_the_right_signature() {
        let signature = url_signature(TOKEN, "1410685589", "nonce");
        let (status, body) = call(
            Request::get(format!(
                "/wechat?signature={signature}&timestamp=1410685589&nonce=nonce&echostr=hello"
            ))
            .body(Body::empty())
            .expect("request"),
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
        let (status, _) = call(
            Request::get("/wechat?signature=wrong&timestamp=1410685589&nonce=nonce&echostr=hello")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_plaintext_message_gets_a_passive_text_reply() {
        let signature = url_signature(TOKEN, "1700000000", "n1");
        let (status, body) = call(
            Request::post(format!(
                "/wechat?signature={signature}&timestamp=1700000000&nonce=n1"
            ))
            .body(Body::from(text_message("洋芋叶子发黑")))
            .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let reply = parse_message(body.as_bytes()).expect("reply parses");
        assert_eq!(reply.to_user_name, "openid-1");
        assert_eq!(reply.from_user_name, "gh_account");
        assert_eq!(
            reply.kind,
            InboundKind::Text {
                content: "答：洋芋叶子发黑".into()
            }
        );
    }

    #[tokio::test]
    async fn a_safe_mode_message_is_decrypted_and_answered_encrypted() {
        let crypto = MessageCrypto::new(TOKEN, KEY, APP_ID).expect("crypto");
        let encrypt = crypto.encrypt(&text_message("隔夜菜会致癌吗"));
        let (timestamp, nonce) = ("1700000001", "n2");
        let signature = url_signature(TOKEN, timestamp, nonce);
        let msg_signature = crypto.msg_signature(timestamp, nonce, &encrypt);
        let envelope = format!(
            "<xml><ToUserName><![CDATA[gh_account]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        );
        let (status, body) = call(
            Request::post(format!(
                "/wechat?signature={signature}&timestamp={timestamp}&nonce={nonce}&encrypt_type=aes&msg_signature={msg_signature}"
            ))
            .body(Body::from(envelope.clone()))
            .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let reply_envelope = parse_envelope(body.as_bytes()).expect("envelope");
        let reply = crypto.decrypt(&reply_envelope.encrypt).expect("decrypts");
        let reply = parse_message(reply.as_bytes()).expect("reply parses");
        assert_eq!(
            reply.kind,
            InboundKind::Text {
                content: "答：隔夜菜会致癌吗".into()
            }
        );

        // A tampered msg_signature is refused.
        let (status, _) = call(
            Request::post(format!(
                "/wechat?signature={signature}&timestamp={timestamp}&nonce={nonce}&encrypt_type=aes&msg_signature=0000"
            ))
            .body(Body::from(envelope))
            .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn bad_requests_get_clear_errors() {
        let signature = url_signature(TOKEN, "1", "n");
        let url = format!("/wechat?signature={signature}&timestamp=1&nonce=n");
        let cases: Vec<(Vec<u8>, StatusCode)> = vec![
            (b"<xml><ToUserName>".to_vec(), StatusCode::BAD_REQUEST),
            (vec![0xff, 0xfe, 0x00], StatusCode::BAD_REQUEST),
            (
                b"<xml><MsgType><![CDATA[text]]></MsgType></xml>".to_vec(),
                StatusCode::BAD_REQUEST,
            ),
            (
                vec![b'a'; MAX_BODY_BYTES + 1],
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
        ];
        for (body, expected) in cases {
            let (status, _) = call(
                Request::post(url.clone())
                    .body(Body::from(body))
                    .expect("request"),
            )
            .await;
            assert_eq!(status, expected);
        }
        let (status, _) = call(
            Request::post("/wechat?signature=bad&timestamp=1&nonce=n")
                .body(Body::from(text_message("你好")))
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}
