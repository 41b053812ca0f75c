//! The WeCom (企业微信) app endpoint, `/wecom`, on the same crypto and XML as
//! the Official Account: WeCom always encrypts, its receive id is the corp
//! id, and its URL verification decrypts `echostr`.
//!
//! - `GET /wecom?msg_signature&timestamp&nonce&echostr`: checks the
//!   signature over (token, timestamp, nonce, echostr) and answers the
//!   decrypted `echostr`; 403 on a wrong signature, 400 when it does not
//!   decrypt to our corp id.
//! - `POST /wecom?msg_signature&timestamp&nonce`: the encrypted envelope;
//!   the message is answered like the Official Account's (same dedup by
//!   MsgId, same budget: a late reply waits for WeCom's retry), with an
//!   encrypted passive reply.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::account::{Account, AccountConfig, MAX_BODY_BYTES, answer, plain};
use super::crypto::{CryptoError, MessageCrypto};
use super::xml::{parse_envelope, parse_message};
use crate::message::{Channel, Handler};

async fn verify(
    State(account): State<Arc<Account>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    let Some(crypto) = &account.crypto else {
        return plain(StatusCode::NOT_FOUND, "WeCom is not configured");
    };
    match crypto.decrypt_verified(
        field("timestamp"),
        field("nonce"),
        field("echostr"),
        field("msg_signature"),
    ) {
        Ok(plaintext) => plaintext.into_response(),
        Err(CryptoError::InvalidSignature) => plain(StatusCode::FORBIDDEN, "signature mismatch"),
        Err(error) => {
            tracing::warn!(%error, "wecom: echostr does not decrypt");
            plain(StatusCode::BAD_REQUEST, "echostr does not decrypt")
        }
    }
}

async fn receive(
    State(account): State<Arc<Account>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    let (timestamp, nonce) = (field("timestamp"), field("nonce"));
    let Some(crypto) = &account.crypto else {
        return plain(StatusCode::NOT_FOUND, "WeCom is not configured");
    };
    let envelope = match parse_envelope(&body) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::warn!(%error, "wecom: malformed envelope");
            return plain(StatusCode::BAD_REQUEST, "malformed XML");
        }
    };
    let plaintext = match crypto.decrypt_verified(
        timestamp,
        nonce,
        &envelope.encrypt,
        field("msg_signature"),
    ) {
        Ok(text) => text,
        Err(CryptoError::InvalidSignature) => {
            return plain(StatusCode::FORBIDDEN, "signature mismatch");
        }
        Err(error) => {
            tracing::warn!(%error, "wecom: message does not decrypt");
            return plain(StatusCode::BAD_REQUEST, "message does not decrypt");
        }
    };
    let message = match parse_message(plaintext.as_bytes()) {
        Ok(message) => message,
        Err(error) => {
            tracing::warn!(%error, "wecom: malformed message");
            return plain(StatusCode::BAD_REQUEST, "malformed message");
        }
    };
    answer(&account, message, Channel::Wecom, true, timestamp, nonce).await
}

/// The `/wecom` routes over a handler. `config.app_id` is the corp id and
/// `config.encoding_aes_key` is required (WeCom always encrypts).
pub fn router(handler: Arc<dyn Handler>, config: AccountConfig) -> Result<Router, CryptoError> {
    let key = config
        .encoding_aes_key
        .as_deref()
        .ok_or(CryptoError::InvalidKeyLength { len: 0 })?;
    let crypto = MessageCrypto::new(&config.token, key, &config.app_id)?;
    let account = Arc::new(Account {
        handler,
        config,
        crypto: Some(crypto),
    });
    Ok(Router::new()
        .route("/wecom", get(verify).post(receive))
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
    use crate::wechat::xml::{InboundKind, parse_message as parse_reply};

    const TOKEN: &str = "wecom-token";
    const KEY: &str = crate::wechat::TEST_KEY;
    const CORP_ID: &str = "ww0123456789abcdef";

    fn app() -> Router {
        router(
            Arc::new(EchoHandler),
            crate::wechat::test_config(TOKEN, CORP_ID),
        )
        .expect("router")
    }

    fn crypto() -> MessageCrypto {
        MessageCrypto::new(TOKEN, KEY, CORP_ID).expect("crypto")
    }

    async fn call(request: Request<Body>) -> (StatusCode, String) {
        let response = app().oneshot(request).await.expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn url_verification_answers_the_decrypted_echostr() {
        let crypto = crypto();
        let echostr = crypto.encrypt("4827361549");
        let (timestamp, nonce) = ("1409659813", "1372623149");
        let signature = crypto.msg_signature(timestamp, nonce, &echostr);
        let query = |signature: &str| {
            format!(
                "/wecom?msg_signature={signature}&timestamp={timestamp}&nonce={nonce}&echostr={}",
                echostr
                    .replace('+', "%2B")
                    .replace('/', "%2F")
                    .replace('=', "%3D")
            )
        };
        let ok = Request::get(query(&signature))
            .body(Body::empty())
            .expect("request");
        assert_eq!(call(ok).await, (StatusCode::OK, "4827361549".into()));
        let wrong = Request::get(query("0000"))
            .body(Body::empty())
            .expect("request");
        assert_eq!(call(wrong).await.0, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn an_encrypted_message_gets_an_encrypted_reply_from_a_wecom_user() {
        let crypto = crypto();
        let message = format!(
            "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content><MsgId>42</MsgId><AgentID>1000002</AgentID></xml>"
        );
        let encrypted = crypto.encrypt(&message);
        let (timestamp, nonce) = ("1700000000", "n1");
        let body = format!(
            "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><AgentID><![CDATA[1000002]]></AgentID><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        );
        let uri = format!(
            "/wecom?msg_signature={}&timestamp={timestamp}&nonce={nonce}",
            crypto.msg_signature(timestamp, nonce, &encrypted)
        );
        let (status, reply) = call(
            Request::post(&uri)
                .body(Body::from(body.clone()))
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let envelope = parse_envelope(reply.as_bytes()).expect("envelope");
        let plaintext = crypto.decrypt(&envelope.encrypt).expect("decrypts");
        let reply = parse_reply(plaintext.as_bytes()).expect("reply");
        assert_eq!(reply.to_user_name, "zhangsan");
        let InboundKind::Text { content } = reply.kind else {
            panic!("not text: {plaintext}");
        };
        assert_eq!(content, "答：你好");

        // A message for another corp does not decrypt; a bad signature is refused.
        let other = MessageCrypto::new(TOKEN, KEY, "ww-other").expect("crypto");
        let foreign = other.encrypt(&message);
        let uri = format!(
            "/wecom?msg_signature={}&timestamp={timestamp}&nonce={nonce}",
            other.msg_signature(timestamp, nonce, &foreign)
        );
        let body_foreign = format!("<xml><Encrypt><![CDATA[{foreign}]]></Encrypt></xml>");
        let (status, _) = call(
            Request::post(&uri)
                .body(Body::from(body_foreign))
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let bad = format!("/wecom?msg_signature=00&timestamp={timestamp}&nonce={nonce}");
        let (status, _) = call(Request::post(&bad).body(Body::from(body)).expect("request")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}
