//! `wenke serve`: the HTTP API over the engine.
//!
//! Today: `POST /api/chat` and `GET /healthz`. Request bodies are limited
//! and every request has a deadline, so a slow or hostile client cannot tie
//! the server up; malformed JSON gets a 4xx with a message, never a panic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bot::{Engine, IncomingText};
use serde::Deserialize;
use tower_http::timeout::TimeoutLayer;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Longest question accepted, in characters.
const MAX_QUESTION_CHARS: usize = 500;
/// Deadline of one request: well inside WeChat's 5 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Deserialize)]
struct ChatRequest {
    user_id: String,
    text: String,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn chat(
    State(engine): State<Arc<Engine>>,
    body: Result<Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    if request.user_id.trim().is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "user_id must not be empty",
        );
    }
    if request.text.trim().is_empty() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "text must not be empty");
    }
    if request.text.chars().count() > MAX_QUESTION_CHARS {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("text is longer than {MAX_QUESTION_CHARS} characters"),
        );
    }
    let message = IncomingText {
        user_id: request.user_id,
        text: request.text,
    };
    match engine.handle(&message).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "chat failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

async fn healthz(State(engine): State<Arc<Engine>>) -> Response {
    Json(serde_json::json!({ "status": "ok", "store": engine.kb().store_kind() })).into_response()
}

/// The router, separate from the listener so tests can drive it.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/api/chat", post(chat))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .with_state(engine)
}

/// Serves until Ctrl-C.
pub async fn serve(engine: Arc<Engine>, addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("wenke listening on http://{addr}");
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use axum::body::Body;
    use axum::http::Request;
    use kb::import::parse_jsonl;
    use kb::store::edge::EdgeStore;
    use tower::ServiceExt;

    use super::*;

    async fn engine(dir: &std::path::Path) -> Arc<Engine> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let model_dir = std::env::var_os("WENKE_MODEL_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("models"));
        let embedder = embeddings::Embedder::load(&embeddings::EmbedderConfig {
            model_path: model_dir.join("multilingual-e5-small-q4"),
            ..Default::default()
        })
        .expect("model");
        let kb = kb::KnowledgeBase::open(
            Arc::new(EdgeStore::open(dir).expect("store")),
            embedder,
            kb::dict::builtin_analyzer(),
            kb::Calibration::default(),
        )
        .await
        .expect("kb");
        let fixture =
            std::fs::read_to_string(root.join("kb/tests/data/fixture.jsonl")).expect("fixture");
        kb.import(
            parse_jsonl(&fixture),
            &kb::ImportOptions {
                actor: "编辑甲".into(),
                approve_as: Some("审核乙".into()),
            },
            &|_, _| {},
        )
        .await
        .expect("import");
        Arc::new(Engine::new(Arc::new(kb), prompts::Prompts::builtin()))
    }

    async fn post(app: &Router, body: &str) -> (StatusCode, serde_json::Value) {
        let response = app
            .clone()
            .oneshot(
                Request::post("/api/chat")
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_owned()))
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chat_answers_with_source_and_rejects_bad_requests_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = router(engine(dir.path()).await);

        let (status, reply) =
            post(&app, r#"{"user_id": "u1", "text": "洋芋叶子发黑咋个办"}"#).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(reply["kind"], "answer");
        let text = reply["reply"].as_str().expect("reply text");
        assert!(text.contains("晚疫病"), "{text}");
        assert!(
            text.contains("来源：示例内容，未经专家审核 ｜ 审核：审核乙"),
            "{text}"
        );
        assert_eq!(
            reply["citations"][0]["question"],
            "马铃薯晚疫病怎么识别和防治？"
        );

        let (status, reply) = post(
            &app,
            r#"{"user_id": "u1", "text": "量子计算机什么时候能买到"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(reply["kind"], "answer", "{reply}");

        let (status, reply) = post(&app, "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(reply["error"].as_str().is_some());
        let (status, _) = post(&app, r#"{"user_id": "u1"}"#).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _) = post(&app, r#"{"user_id": "u1", "text": "   "}"#).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let long = format!(r#"{{"user_id": "u1", "text": "{}"}}"#, "问".repeat(600));
        let (status, _) = post(&app, &long).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let huge = format!(
            r#"{{"user_id": "u1", "text": "{}"}}"#,
            "a".repeat(MAX_BODY_BYTES * 2)
        );
        let (status, _) = post(&app, &huge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

        let health = app
            .clone()
            .oneshot(
                Request::get("/healthz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(health.status(), StatusCode::OK);
    }
}
