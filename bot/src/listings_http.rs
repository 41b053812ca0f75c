//! The listings over HTTP.
//!
//! Public (no contact details, ever):
//! - `GET /api/listings/demands`: published demands (已发布, 对接中), newest first;
//! - `GET /api/listings/demands/{number}`: one of them;
//! - `GET /api/notices?user_id=…`: a web-chat user's waiting notices (a
//!   claim of their demand, a status change), delivered by this call.
//!
//! Staff, with `Authorization: Bearer <token>` (mounted only when a token
//! is configured):
//! - `GET /api/staff/demands?status=…`, `GET /api/staff/demands/{number}`: in full;
//! - `PATCH /api/staff/demands/{number}` `{"status", "staff", "plan_note", "message"}`;
//! - `GET /api/staff/demands/{number}/matches?limit=…`: ranked capabilities with reasons;
//! - `POST /api/staff/demands/{number}/claims` `{"capability", "note"}`: 揭榜;
//! - `GET /api/staff/capabilities`.
//!
//! Errors are JSON `{"error": "…"}` with 400 (bad input), 401 (token),
//! 404 (no such listing), 409 (a status change or claim the life cycle
//! forbids) or 503 (storage down).

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kb::listing::{DemandStatus, ListingError, NewClaim, PublicDemand, StaffUpdate};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use webhooks::message::{Channel, UserKey};

use crate::{Engine, EngineError};

/// Most matches one request may ask for.
const MAX_MATCHES: usize = 20;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn listing_error(failure: &ListingError) -> Response {
    match failure {
        ListingError::NotFound(what) => error(StatusCode::NOT_FOUND, format!("no listing {what}")),
        ListingError::BadTransition { .. } | ListingError::NotClaimable { .. } => {
            error(StatusCode::CONFLICT, failure.to_string())
        }
        ListingError::Invalid(_) => error(StatusCode::BAD_REQUEST, failure.to_string()),
        ListingError::Kb(_) | ListingError::Serials(_) => {
            tracing::warn!(error = %failure, "listings unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "listings are unavailable; try again",
            )
        }
    }
}

fn engine_error(failure: EngineError) -> Response {
    match failure {
        EngineError::Listing(inner) => listing_error(&inner),
        other => {
            tracing::warn!(error = %other, "listings request failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable; try again",
            )
        }
    }
}

fn visible(status: DemandStatus) -> bool {
    matches!(status, DemandStatus::Published | DemandStatus::Matching)
}

async fn public_demands(State(engine): State<Arc<Engine>>) -> Response {
    match engine.listings().demands(None, None).await {
        Ok(demands) => {
            let shown: Vec<PublicDemand> = demands
                .iter()
                .filter(|d| visible(d.status))
                .map(|d| d.public_view())
                .collect();
            Json(shown).into_response()
        }
        Err(failure) => listing_error(&failure),
    }
}

async fn public_demand(State(engine): State<Arc<Engine>>, Path(number): Path<String>) -> Response {
    match engine.listings().demand(&number).await {
        Ok(Some(demand)) if visible(demand.status) => Json(demand.public_view()).into_response(),
        Ok(_) => error(
            StatusCode::NOT_FOUND,
            format!("no published demand {number}"),
        ),
        Err(failure) => listing_error(&failure),
    }
}

#[derive(Deserialize)]
struct NoticeQuery {
    user_id: String,
}

async fn notices(State(engine): State<Arc<Engine>>, Query(query): Query<NoticeQuery>) -> Response {
    if let Some(problem) = webhooks::web::user_id_problem(&query.user_id) {
        return error(StatusCode::BAD_REQUEST, problem);
    }
    let user = UserKey::new(Channel::Web, query.user_id).storage_key();
    let pending = match engine.notices().pending(&user).await {
        Ok(pending) => pending,
        Err(failure) => return engine_error(failure.into()),
    };
    let ids = pending.iter().map(|n| n.id).collect();
    if let Err(failure) = engine.notices().delivered(ids).await {
        return engine_error(failure.into());
    }
    let shown: Vec<serde_json::Value> = pending
        .iter()
        .map(|n| serde_json::json!({ "text": n.text, "at": n.at }))
        .collect();
    Json(shown).into_response()
}

#[derive(Deserialize)]
struct StatusQuery {
    #[serde(default)]
    status: Option<String>,
}

async fn staff_demands(
    State(engine): State<Arc<Engine>>,
    Query(query): Query<StatusQuery>,
) -> Response {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(name) => match DemandStatus::parse(name) {
            Some(status) => Some(status),
            None => return error(StatusCode::BAD_REQUEST, format!("unknown status {name:?}")),
        },
    };
    match engine.listings().demands(status, None).await {
        Ok(demands) => Json(demands).into_response(),
        Err(failure) => listing_error(&failure),
    }
}

async fn staff_demand(State(engine): State<Arc<Engine>>, Path(number): Path<String>) -> Response {
    match engine.listings().demand(&number).await {
        Ok(Some(demand)) => Json(demand).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no demand {number}")),
        Err(failure) => listing_error(&failure),
    }
}

async fn staff_update(
    State(engine): State<Arc<Engine>>,
    Path(number): Path<String>,
    body: Result<Json<StaffUpdateBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON {\"actor\", \"status\"?, \"staff\"?, \"plan_note\"?, \"message\"?}",
        );
    };
    if body.actor.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "actor (the staff member's name) is required",
        );
    }
    let actor = format!("staff:{}", body.actor.trim());
    match engine.update_demand(&number, body.update, &actor).await {
        Ok(demand) => Json(demand).into_response(),
        Err(failure) => engine_error(failure),
    }
}

#[derive(Deserialize)]
struct StaffUpdateBody {
    actor: String,
    #[serde(flatten)]
    update: StaffUpdate,
}

#[derive(Deserialize)]
struct LimitQuery {
    #[serde(default)]
    limit: Option<usize>,
}

async fn staff_matches(
    State(engine): State<Arc<Engine>>,
    Path(number): Path<String>,
    Query(query): Query<LimitQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(5).clamp(1, MAX_MATCHES);
    let demand = match engine.listings().demand(&number).await {
        Ok(Some(demand)) => demand,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no demand {number}")),
        Err(failure) => return listing_error(&failure),
    };
    match engine.listings().matches(&demand.content, limit).await {
        Ok(matches) => Json(matches).into_response(),
        Err(failure) => listing_error(&failure),
    }
}

async fn staff_claim(
    State(engine): State<Arc<Engine>>,
    Path(number): Path<String>,
    body: Result<Json<NewClaim>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(claim)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON {\"capability\", \"note\"?}",
        );
    };
    match engine.claim_demand(&number, claim).await {
        Ok(demand) => Json(demand).into_response(),
        Err(failure) => engine_error(failure),
    }
}

async fn staff_capabilities(State(engine): State<Arc<Engine>>) -> Response {
    match engine.listings().capabilities().await {
        Ok(all) => Json(all).into_response(),
        Err(failure) => listing_error(&failure),
    }
}

/// Lets a request through only with the staff bearer token, compared in
/// constant time.
async fn require_token(token: Arc<String>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        next.run(request).await
    } else {
        error(StatusCode::UNAUTHORIZED, "a valid staff token is required")
    }
}

/// The listings routes; the staff routes only with a token.
pub fn router(engine: Arc<Engine>, staff_token: Option<String>) -> Router {
    let public = Router::new()
        .route("/api/listings/demands", get(public_demands))
        .route("/api/listings/demands/{number}", get(public_demand))
        .route("/api/notices", get(notices))
        .with_state(Arc::clone(&engine));
    let Some(token) = staff_token else {
        return public;
    };
    let token = Arc::new(token);
    let staff = Router::new()
        .route("/api/staff/demands", get(staff_demands))
        .route(
            "/api/staff/demands/{number}",
            get(staff_demand).patch(staff_update),
        )
        .route("/api/staff/demands/{number}/matches", get(staff_matches))
        .route(
            "/api/staff/demands/{number}/claims",
            axum::routing::post(staff_claim),
        )
        .route("/api/staff/capabilities", get(staff_capabilities))
        .layer(middleware::from_fn(move |request, next| {
            require_token(Arc::clone(&token), request, next)
        }))
        .with_state(engine);
    public.merge(staff)
}
