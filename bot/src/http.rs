//! The HTTP surface over the engine, as used by `wenke serve`.
//!
//! Routes: the web chat (`/`, `/static/*`, `/api/chat`, `/api/feedback`,
//! from `webhooks::web`), `GET /healthz` (the process answers), `GET
//! /readyz` (its stores answer too), the listings API
//! ([`crate::listings_http`]), the editor console ([`crate::console`]) and
//! the configured channels (`/wechat`,
//! `/wecom`, `/telegram`). Every request gets an
//! `x-request-id` (kept when the client sends one) that appears in the
//! request's log lines. Editable texts are watched: a change under the
//! prompts directory is picked up within seconds, without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::Engine;
use axum::extract::State;
use axum::http::{HeaderName, Request};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use webhooks::message::Handler;

/// How often the prompts directory is checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);
/// The vocabulary of follow-up resolution is refreshed this often even
/// without edits, to pick up newly published entries' crops and tags.
const VOCABULARY_REFRESH: Duration = Duration::from_secs(300);

async fn healthz(State(engine): State<Arc<Engine>>) -> Response {
    Json(serde_json::json!({
        "status": "ok",
        "store": engine.kb().store_kind(),
        "sessions": engine.sessions().kind(),
    }))
    .into_response()
}

/// How long `/readyz` waits for each store.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest any request may take before it is answered 503: a backstop
/// behind the channels' own, shorter budgets. Generous because the slowest
/// page, the first report of a long period, tallies its days from the
/// turns (tens of seconds for a year of 1M turns) and stores the tallies
/// only when it completes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether a store answered within [`READY_TIMEOUT`], as "ok" or the error.
async fn probe<E: std::fmt::Display>(
    check: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} ms", READY_TIMEOUT.as_millis())),
    }
}

/// `GET /readyz`: 200 when the point store and the session store both
/// answer a read and the point store has read what it loaded into memory,
/// else 503 naming what failed, so a load balancer sends no user to an
/// instance that would fail them or keep them waiting.
async fn readyz(State(engine): State<Arc<Engine>>) -> Response {
    let store = engine.kb().store();
    let points = probe(async {
        if store.warming_up() {
            // Searches would work, but wait on disk for a second or two.
            return Err("reading the knowledge base into memory".to_owned());
        }
        store
            .count("entries", kb::store::Filter::default())
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    });
    let sessions = probe(async { engine.sessions().get("readyz").await.map(|_| ()) });
    let (points, sessions) = tokio::join!(points, sessions);
    let status = |result: &Result<(), String>| match result {
        Ok(()) => "ok".to_owned(),
        Err(error) => error.clone(),
    };
    let ready = points.is_ok() && sessions.is_ok();
    if !ready {
        tracing::warn!(
            points = status(&points),
            sessions = status(&sessions),
            "not ready"
        );
    }
    let code = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Json(serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "points": status(&points),
        "sessions": status(&sessions),
    }));
    (code, body).into_response()
}

/// What to serve besides the web chat and the public listings; an
/// unconfigured channel's path, and the staff API without a token, answer 404.
#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    /// The WeChat Official Account, at `/wechat`.
    pub wechat: Option<webhooks::wechat::account::AccountConfig>,
    /// The WeCom app, at `/wecom` (`app_id` is the corp id).
    pub wecom: Option<webhooks::wechat::account::AccountConfig>,
    /// The Telegram bot; its route `/telegram` is served in webhook mode.
    pub telegram: Option<Arc<webhooks::telegram::Telegram>>,
    /// The bearer token of the staff API (`/api/staff/*`).
    pub staff_token: Option<String>,
    /// The editor console, at `/console`.
    pub console: Option<Arc<crate::console::Console>>,
    /// The per-address limit of the web chat, the APIs and the console.
    pub ip_limit: Option<crate::ip_limit::IpLimit>,
}

/// The WeChat customer-service (or WeCom app message) client over the
/// engine's session store (so instances share one access token), registered
/// with the engine so that notices reach the channel's users at once.
pub fn message_service(
    engine: &Arc<Engine>,
    config: webhooks::wechat::service::ServiceConfig,
) -> Result<Arc<webhooks::wechat::service::CustomerService>, webhooks::message::PushError> {
    let cache = Arc::new(crate::session::SessionCache(Arc::clone(engine.sessions())));
    let service = Arc::new(webhooks::wechat::service::CustomerService::new(
        config, cache,
    )?);
    engine.register_push(service.channel(), service.clone());
    Ok(service)
}

/// The Telegram bot over the engine, its button texts and answered updates
/// in the session store, registered with the engine so that notices reach
/// Telegram users at once. It receives nothing until
/// [`webhooks::telegram::Telegram::start`].
pub fn telegram_bot(
    engine: &Arc<Engine>,
    config: webhooks::telegram::TelegramConfig,
) -> Result<Arc<webhooks::telegram::Telegram>, webhooks::telegram::TelegramError> {
    let handler: Arc<dyn Handler> = engine.clone();
    let cache = Arc::new(crate::session::SessionCache(Arc::clone(engine.sessions())));
    let telegram = webhooks::telegram::Telegram::new(handler, cache, config)?;
    engine.register_push(webhooks::message::Channel::Telegram, telegram.clone());
    Ok(telegram)
}

/// The Telegram adapter's own texts, from the engine's templates.
pub fn telegram_texts(
    engine: &Engine,
) -> Result<webhooks::telegram::TelegramTexts, crate::EngineError> {
    Ok(webhooks::telegram::TelegramTexts {
        feedback_up: engine.render("feedback.j2", serde_json::json!({ "negative": false }))?,
        feedback_down: engine.render("feedback.j2", serde_json::json!({ "negative": true }))?,
        button_expired: engine.render("button_expired.j2", ())?,
        unavailable: engine.render("unavailable.j2", ())?,
    })
}

/// The whole HTTP surface, separate from the listener so tests can drive it.
pub fn router(
    engine: Arc<Engine>,
    channels: &HttpConfig,
) -> Result<Router, webhooks::wechat::crypto::CryptoError> {
    let handler: Arc<dyn Handler> = engine.clone();
    let request_id = HeaderName::from_static("x-request-id");
    // What people and scripts call directly: limited per address.
    let mut direct = Router::new()
        .merge(crate::listings_http::router(
            Arc::clone(&engine),
            channels.staff_token.clone(),
        ))
        .merge(webhooks::web::router(Arc::clone(&handler)));
    if let Some(console) = &channels.console {
        direct = direct.merge(crate::console::router(Arc::clone(console)));
    }
    if let Some(limit) = &channels.ip_limit {
        let limiter = crate::ip_limit::IpLimiter::new(limit.clone(), Arc::clone(engine.sessions()));
        direct = direct.layer(axum::middleware::from_fn_with_state(
            limiter,
            crate::ip_limit::limit,
        ));
    }
    // Probes, metrics and the platforms' signed webhooks are not.
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::serve))
        .with_state(Arc::clone(&engine))
        .merge(direct);
    if let Some(config) = &channels.wecom {
        app = app.merge(webhooks::wechat::work::router(
            Arc::clone(&handler),
            config.clone(),
        )?);
    }
    if let Some(telegram) = channels.telegram.as_ref().filter(|t| t.uses_webhook()) {
        app = app.merge(telegram.router());
    }
    if let Some(config) = &channels.wechat {
        app = app.merge(webhooks::wechat::account::router(
            Arc::clone(&handler),
            config.clone(),
        )?);
    }
    Ok(app
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        // Outside the timeout, so a request it ends is counted as its 503.
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %request.method(), path = request.uri().path(), request_id = id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid)))
}

/// The newest modification time of any file under `dir`.
fn newest_change(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else if let Ok(modified) = metadata.modified() {
                newest = newest.max(Some(modified));
            }
        }
    }
    newest
}

/// Reloads the engine's editable texts when files under `dir` change or an
/// editor changes a word list (on any instance), and its vocabulary every
/// few minutes. Polling (rather than file-system
/// events) because it also works on network and container volumes, and a
/// two-second delay is nothing for an editor.
pub fn watch_prompts(engine: Arc<Engine>, dir: Option<PathBuf>) {
    tokio::spawn(async move {
        let newest = |dir: &Option<PathBuf>| {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || dir.as_deref().and_then(newest_change))
        };
        let dictionary_version = || async { engine.dictionary().version().await.ok().flatten() };
        let mut seen = newest(&dir).await.ok().flatten();
        let mut seen_version = dictionary_version().await;
        let mut last_reload = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RELOAD_POLL).await;
            let current = newest(&dir).await.ok().flatten();
            // Word edits made in the console of any instance.
            let version = dictionary_version().await;
            let edited = current != seen || version != seen_version;
            if !edited && last_reload.elapsed() < VOCABULARY_REFRESH {
                continue;
            }
            seen = current;
            seen_version = version;
            last_reload = tokio::time::Instant::now();
            match engine.reload().await {
                Ok(()) if edited => tracing::info!("editable texts reloaded"),
                Ok(()) => {}
                Err(error) => tracing::warn!(%error, "reload failed; the previous texts stay"),
            }
        }
    });
}
