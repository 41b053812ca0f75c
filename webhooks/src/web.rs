//! The web chat: the page at `/` and its JSON API.
//!
//! - `GET /`, `GET /static/chat.js`, `GET /static/chat.css`: the chat page,
//!   compiled into the binary (no CDN, no external fonts), served with a
//!   strict content security policy.
//! - `POST /api/chat` `{"user_id", "text", "message_id"?}`: one turn; the
//!   reply as JSON (see `docs/openapi.yaml`).
//! - `POST /api/feedback` `{"user_id", "turn_id", "rating": "up"|"down"}`.
//!
//! Request bodies are limited and every request has a deadline, so a slow
//! or hostile client cannot tie the server up; malformed JSON gets a 4xx
//! with a message, never a panic.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::timeout::TimeoutLayer;

use crate::message::{
    Block, Channel, Citation, Handler, HandlerError, Incoming, QuickReply, Rating, Reply,
    ReplyKind, ReplyTiming, UserKey,
};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest message accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 500;
/// Longest user id accepted, in bytes.
const MAX_USER_ID_BYTES: usize = 128;
/// Deadline of the engine's work for one request: well inside WeChat's
/// 5 s, the tightest channel.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// Deadline of a whole request, body included, so a client that sends its
/// body slowly cannot hold a connection; past the engine's own deadline,
/// which answers in words, so it ends only requests stuck before that.
const WHOLE_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

const INDEX_HTML: &str = include_str!("../web/index.html");
const CHAT_JS: &str = include_str!("../web/chat.js");
const CHAT_CSS: &str = include_str!("../web/chat.css");

/// Everything is served from this origin; nothing inline, nothing external.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

#[derive(Deserialize)]
struct ChatRequest {
    user_id: String,
    text: String,
    /// A client-chosen id that makes a resent request idempotent.
    #[serde(default)]
    message_id: Option<String>,
}

#[derive(Deserialize)]
struct FeedbackRequest {
    user_id: String,
    turn_id: String,
    rating: Rating,
}

/// The reply as the web API returns it: the structured reply plus its
/// plain-text rendering.
#[derive(Serialize)]
struct WireReply<'a> {
    turn_id: &'a str,
    kind: ReplyKind,
    reply: String,
    blocks: &'a [Block],
    citations: &'a [Citation],
    suggestions: &'a [String],
    quick_replies: &'a [QuickReply],
    confidence: f32,
    feedback: bool,
}

impl<'a> From<&'a Reply> for WireReply<'a> {
    fn from(reply: &'a Reply) -> Self {
        Self {
            turn_id: &reply.turn_id,
            kind: reply.kind,
            reply: reply.text(),
            blocks: &reply.blocks,
            citations: &reply.citations,
            suggestions: &reply.suggestions,
            quick_replies: &reply.quick_replies,
            confidence: reply.confidence,
            feedback: reply.feedback,
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn handler_error(failure: HandlerError) -> Response {
    match failure {
        HandlerError::Invalid(message) => error(StatusCode::UNPROCESSABLE_ENTITY, &message),
        HandlerError::Unavailable(message) => {
            tracing::warn!(%message, "web chat: engine unavailable");
            error(StatusCode::SERVICE_UNAVAILABLE, "服务暂时繁忙，请稍后再试")
        }
    }
}

/// What is wrong with a web user id, if anything (for every API that takes one).
pub fn user_id_problem(user_id: &str) -> Option<&'static str> {
    if user_id.trim().is_empty() {
        return Some("user_id must not be empty");
    }
    if user_id.len() > MAX_USER_ID_BYTES {
        return Some("user_id is longer than 128 bytes");
    }
    None
}

/// A request body that names a web user.
trait FromWebUser {
    fn user_id(&self) -> &str;
}

impl FromWebUser for ChatRequest {
    fn user_id(&self) -> &str {
        &self.user_id
    }
}

impl FromWebUser for FeedbackRequest {
    fn user_id(&self) -> &str {
        &self.user_id
    }
}

/// The request, or the 4xx status and reason that say why it is not one:
/// malformed JSON, or a missing or oversized user id.
fn accept<T: FromWebUser>(body: Result<Json<T>, JsonRejection>) -> Result<T, (StatusCode, String)> {
    let Json(request) = body.map_err(|rejection| (rejection.status(), rejection.body_text()))?;
    if let Some(problem) = user_id_problem(request.user_id()) {
        return Err((StatusCode::UNPROCESSABLE_ENTITY, problem.to_owned()));
    }
    Ok(request)
}

async fn chat(
    State(handler): State<Arc<dyn Handler>>,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Response {
    let request = match accept(body) {
        Ok(request) => request,
        Err((status, reason)) => return error(status, &reason),
    };
    if request.text.trim().is_empty() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "text must not be empty");
    }
    if request.text.chars().count() > MAX_TEXT_CHARS {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("text is longer than {MAX_TEXT_CHARS} characters"),
        );
    }
    let mut message = Incoming::text(UserKey::new(Channel::Web, request.user_id), request.text);
    message.message_id = request
        .message_id
        .filter(|id| !id.trim().is_empty())
        .map(|id| id.chars().take(64).collect());
    match within_deadline(handler.handle(message)).await {
        Ok(reply) => {
            let mut response = Json(WireReply::from(&reply)).into_response();
            if let Some(value) = reply.timing.and_then(server_timing) {
                response.headers_mut().insert(SERVER_TIMING, value);
            }
            response
        }
        Err(e) => handler_error(e),
    }
}

/// The `Server-Timing` header (W3C Server Timing), which browsers' tools
/// show and `wenke bench chat` reads to tell the model's share of a
/// reply's latency from the rest.
const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// `vector;dur=6.250, engine;dur=8.000`: milliseconds with microseconds.
fn server_timing(timing: ReplyTiming) -> Option<HeaderValue> {
    let millis = |d: Duration| d.as_secs_f64() * 1000.0;
    let value = format!(
        "vector;dur={:.3}, engine;dur={:.3}",
        millis(timing.vector),
        millis(timing.engine)
    );
    HeaderValue::from_str(&value).ok()
}

/// Runs a handler call within [`REQUEST_TIMEOUT`]; past it the user gets
/// the same friendly "try again later" as for a store that refuses, not an
/// empty error. (A timeout layer could only answer with a bare status.)
async fn within_deadline<T>(
    call: impl Future<Output = Result<T, HandlerError>>,
) -> Result<T, HandlerError> {
    tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(HandlerError::Unavailable(format!(
                "no reply within {} ms",
                REQUEST_TIMEOUT.as_millis()
            )))
        })
}

async fn feedback(
    State(handler): State<Arc<dyn Handler>>,
    body: Result<Json<FeedbackRequest>, JsonRejection>,
) -> Response {
    let request = match accept(body) {
        Ok(request) => request,
        Err((status, reason)) => return error(status, &reason),
    };
    let user = UserKey::new(Channel::Web, request.user_id);
    match within_deadline(handler.feedback(&user, &request.turn_id, request.rating)).await {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => handler_error(e),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // The assets are compiled in: a new binary is a new page, so
            // caches must revalidate rather than serve yesterday's script.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The web chat's routes (page and API) over a handler, with body limits
/// and request deadlines.
pub fn router(handler: Arc<dyn Handler>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/static/chat.js",
            get(|| async { asset("text/javascript; charset=utf-8", CHAT_JS) }),
        )
        .route(
            "/static/chat.css",
            get(|| async { asset("text/css; charset=utf-8", CHAT_CSS) }),
        )
        .route("/api/chat", post(chat))
        .route("/api/feedback", post(feedback))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            WHOLE_REQUEST_TIMEOUT,
        ))
        .with_state(handler)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use parking_lot::Mutex;
    use tower::ServiceExt;

    use super::*;
    use crate::message::BlockRole;

    /// A handler that echoes, and remembers what it was given.
    #[derive(Default)]
    struct Echo {
        seen: Mutex<Vec<Incoming>>,
        ratings: Mutex<Vec<(UserKey, String, Rating)>>,
    }

    #[async_trait::async_trait]
    impl Handler for Echo {
        async fn handle(&self, message: Incoming) -> Result<Reply, HandlerError> {
            let text = message.content.text().unwrap_or_default().to_owned();
            self.seen.lock().push(message);
            Ok(Reply {
                turn_id: "turn-1".into(),
                kind: ReplyKind::Answer,
                blocks: vec![
                    Block::new(BlockRole::Body, text),
                    Block::new(BlockRole::Source, "来源：某院"),
                ],
                citations: Vec::new(),
                suggestions: vec!["下一问".into()],
                quick_replies: vec![QuickReply::new("详细", "详细")],
                confidence: 0.9,
                feedback: true,
                timing: Some(ReplyTiming {
                    vector: Duration::from_micros(6_250),
                    engine: Duration::from_micros(8_000),
                }),
            })
        }

        async fn feedback(
            &self,
            user: &UserKey,
            turn_id: &str,
            rating: Rating,
        ) -> Result<(), HandlerError> {
            if turn_id != "turn-1" {
                return Err(HandlerError::Invalid("no such turn".into()));
            }
            self.ratings
                .lock()
                .push((user.clone(), turn_id.to_owned(), rating));
            Ok(())
        }
    }

    async fn call(
        app: &Router,
        request: Request<Body>,
    ) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
        let response = app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, bytes.to_vec(), headers)
    }

    fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
        Request::post(path)
            .header("content-type", "application/json")
            .body(body.into())
            .expect("request")
    }

    /// A handler whose stores hang: it never answers.
    struct Stuck;

    #[async_trait::async_trait]
    impl Handler for Stuck {
        async fn handle(&self, _message: Incoming) -> Result<Reply, HandlerError> {
            std::future::pending().await
        }

        async fn feedback(
            &self,
            _user: &UserKey,
            _turn_id: &str,
            _rating: Rating,
        ) -> Result<(), HandlerError> {
            std::future::pending().await
        }
    }

    /// A request the engine cannot answer in time gets the friendly
    /// "try again later" as JSON at the deadline, not an empty 503.
    #[tokio::test]
    async fn a_hung_handler_gets_a_friendly_error_at_the_deadline() {
        let app = router(Arc::new(Stuck));
        let started = std::time::Instant::now();
        let (status, body, _) = call(
            &app,
            post("/api/chat", r#"{"user_id":"u1","text":"稻瘟病怎么防"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let waited = started.elapsed();
        assert!(
            waited >= REQUEST_TIMEOUT && waited < REQUEST_TIMEOUT + Duration::from_secs(1),
            "answered after {waited:?}"
        );
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert!(
            json["error"]
                .as_str()
                .unwrap_or_default()
                .contains("稍后再试"),
            "{json}"
        );
        let (status, body, _) = call(
            &app,
            post(
                "/api/feedback",
                r#"{"user_id":"u1","turn_id":"turn-1","rating":"up"}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(String::from_utf8_lossy(&body).contains("稍后再试"));
    }

    #[tokio::test]
    async fn chat_turns_a_request_into_a_web_message_and_returns_the_reply() {
        let echo = Arc::new(Echo::default());
        let app = router(echo.clone());
        let (status, body, headers) = call(
            &app,
            post(
                "/api/chat",
                r#"{"user_id": "u1", "text": "你好", "message_id": "m-1"}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let reply: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(reply["kind"], "answer");
        assert_eq!(reply["reply"], "你好\n\n来源：某院");
        assert_eq!(reply["blocks"][1]["role"], "source");
        assert_eq!(reply["quick_replies"][0]["text"], "详细");
        assert_eq!(reply["turn_id"], "turn-1");
        assert_eq!(
            headers.get("server-timing").and_then(|v| v.to_str().ok()),
            Some("vector;dur=6.250, engine;dur=8.000")
        );
        let seen = echo.seen.lock();
        assert_eq!(seen[0].user, UserKey::new(Channel::Web, "u1"));
        assert_eq!(seen[0].message_id.as_deref(), Some("m-1"));
    }

    #[tokio::test]
    async fn bad_requests_get_clear_errors() {
        let app = router(Arc::new(Echo::default()));
        let cases: Vec<(String, StatusCode)> = vec![
            ("{not json".into(), StatusCode::BAD_REQUEST),
            (
                r#"{"user_id": "u1"}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                r#"{"user_id": "", "text": "问"}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                r#"{"user_id": "u1", "text": "   "}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                format!(r#"{{"user_id": "u1", "text": "{}"}}"#, "问".repeat(600)),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                format!(
                    r#"{{"user_id": "u1", "text": "{}"}}"#,
                    "a".repeat(MAX_BODY_BYTES * 2)
                ),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                format!(r#"{{"user_id": "{}", "text": "问"}}"#, "u".repeat(200)),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ];
        for (body, expected) in cases {
            let (status, bytes, _) = call(&app, post("/api/chat", body.clone())).await;
            assert_eq!(status, expected, "{}", &body[..body.len().min(80)]);
            let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            assert!(error["error"].as_str().is_some(), "{body:.80}");
        }
    }

    #[tokio::test]
    async fn feedback_reaches_the_handler_and_unknown_turns_are_rejected() {
        let echo = Arc::new(Echo::default());
        let app = router(echo.clone());
        let (status, _, _) = call(
            &app,
            post(
                "/api/feedback",
                r#"{"user_id": "u1", "turn_id": "turn-1", "rating": "down"}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(echo.ratings.lock()[0].2, Rating::Down);
        let (status, _, _) = call(
            &app,
            post(
                "/api/feedback",
                r#"{"user_id": "u1", "turn_id": "other", "rating": "up"}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _, _) = call(
            &app,
            post(
                "/api/feedback",
                r#"{"user_id": "u1", "turn_id": "turn-1", "rating": "meh"}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_locally_with_a_strict_policy() {
        let app = router(Arc::new(Echo::default()));
        for path in ["/", "/static/chat.js", "/static/chat.css"] {
            let (status, body, headers) = call(
                &app,
                Request::get(path).body(Body::empty()).expect("request"),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{path}");
            let csp = headers
                .get(header::CONTENT_SECURITY_POLICY)
                .and_then(|v| v.to_str().ok());
            assert!(csp.is_some_and(|p| p.contains("default-src 'none'")));
            let text = String::from_utf8(body).expect("utf-8");
            for external in [
                "src=\"http",
                "href=\"http",
                "url(http",
                "@import",
                "fetch(\"http",
            ] {
                assert!(!text.contains(external), "{path} loads something external");
            }
        }
    }
}
