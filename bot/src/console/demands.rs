//! The demand board (一单一策) for service staff: demand listings by
//! status; one demand with its contact, status log, service plan, claims
//! and matched experts, and the forms that change it (status, the staff
//! member following it, a plan note, a 揭榜 claim on behalf of an expert);
//! and the capability listings. Changes go through the same engine calls
//! as the staff API, so the filer is told the same way.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use kb::listing::{Demand, DemandStatus, ListingError, NewClaim, StaffUpdate};
use serde::Deserialize;

use super::accounts::Role;
use super::{Console, ConsoleError, Posted, Signed, non_blank};
use crate::EngineError;

/// Experts matched on a demand's page.
const MATCHES: usize = 5;

impl From<ListingError> for ConsoleError {
    fn from(error: ListingError) -> Self {
        match error {
            ListingError::NotFound(number) => Self::NotFound(format!("没有需求 {number}")),
            ListingError::BadTransition { from, to } => {
                Self::Conflict(format!("需求不能从“{from}”改为“{to}”"))
            }
            ListingError::NotClaimable { number, status } => Self::Conflict(format!(
                "需求 {number} 现在是“{status}”，只有已发布的需求可以揭榜"
            )),
            ListingError::Invalid(message) => Self::BadRequest(message),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<EngineError> for ConsoleError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Listing(error) => error.into(),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

fn summary(demand: &Demand) -> serde_json::Value {
    serde_json::json!({
        "number": demand.number,
        "title": demand.content.title,
        "field": demand.content.field,
        "region": demand.content.region,
        "county": demand.content.county,
        "organisation": demand.content.organisation,
        "status": demand.status.as_str(),
        "staff": demand.staff,
        "claims": demand.claims.len(),
        "filed": super::unix_time(demand.filed_at),
        "channel": demand.filed_by.as_ref().map(|f| f.channel.clone()),
    })
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct BoardQuery {
    #[serde(default)]
    status: String,
}

/// `GET /console/demands?status=…`.
pub(super) async fn board(
    State(console): State<Arc<Console>>,
    user: Signed,
    Query(query): Query<BoardQuery>,
) -> Result<Response, ConsoleError> {
    user.require(Role::Staff)?;
    let status = status_field(&query.status)?;
    let all = console.engine.listings().demands(None, None).await?;
    let counts = crate::report::demands_by_status(&all);
    let shown: Vec<serde_json::Value> = all
        .iter()
        .filter(|d| status.is_none_or(|s| d.status == s))
        .map(summary)
        .collect();
    console.page(
        &user,
        "demands.html",
        serde_json::json!({
            "demands": shown,
            "status": status.map(DemandStatus::as_str),
            "statuses": DemandStatus::ALL.iter().map(|s| serde_json::json!({
                "name": s.as_str(),
                "count": counts.get(s.as_str()).copied().unwrap_or(0),
            })).collect::<Vec<_>>(),
            "total": all.len(),
        }),
    )
}

async fn load(console: &Console, number: &str) -> Result<Demand, ConsoleError> {
    console
        .engine
        .listings()
        .demand(number.trim())
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("没有需求 {number}")))
}

/// `GET /console/demands/{number}`.
pub(super) async fn show(
    State(console): State<Arc<Console>>,
    user: Signed,
    Path(number): Path<String>,
) -> Result<Response, ConsoleError> {
    user.require(Role::Staff)?;
    let demand = load(&console, &number).await?;
    let matches = console
        .engine
        .listings()
        .matches(&demand.content, MATCHES)
        .await?;
    let next_statuses: Vec<&str> = DemandStatus::ALL
        .into_iter()
        .filter(|next| demand.status.can_become(*next))
        .map(DemandStatus::as_str)
        .collect();
    let content = &demand.content;
    console.page(
        &user,
        "demand.html",
        serde_json::json!({
            "demand": summary(&demand),
            "problem": content.problem,
            "desired_outcome": content.desired_outcome,
            "budget": content.budget.describe(),
            "deadline": content.deadline.as_ref().map(|d| d.text.clone()),
            "contact_name": content.contact.name,
            "contact_phone": content.contact.phone,
            "plan_notes": demand.plan_notes,
            "log": demand.log.iter().map(|line| serde_json::json!({
                "at": super::unix_time(line.at),
                "actor": line.actor,
                "status": line.status.as_str(),
                "text": line.text,
            })).collect::<Vec<_>>(),
            "claims": demand.claims.iter().map(|claim| serde_json::json!({
                "number": claim.capability_number,
                "name": claim.capability_name,
                "note": claim.note,
                "at": super::unix_time(claim.at),
            })).collect::<Vec<_>>(),
            "matches": matches.iter().map(|m| serde_json::json!({
                "number": m.capability.number,
                "name": m.capability.content.name,
                "organisation": m.capability.content.organisation,
                "region": m.capability.content.region,
                "score": format!("{:.2}", m.score),
                "shared_terms": m.reasons.shared_terms,
                "same_field": m.reasons.same_field,
                "same_region": m.reasons.same_region,
                "past": m.reasons.past_cooperations,
            })).collect::<Vec<_>>(),
            "next_statuses": next_statuses,
            "claimable": demand.status == DemandStatus::Published,
        }),
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct UpdateForm {
    #[serde(default)]
    status: String,
    #[serde(default)]
    staff: String,
    #[serde(default)]
    plan_note: String,
    #[serde(default)]
    message: String,
}

/// A status field: `None` when blank, else a status of the life cycle by
/// its Chinese name; any other name is a bad request.
fn status_field(text: &str) -> Result<Option<DemandStatus>, ConsoleError> {
    let Some(name) = non_blank(text) else {
        return Ok(None);
    };
    DemandStatus::parse(&name)
        .map(Some)
        .ok_or_else(|| ConsoleError::BadRequest(format!("没有状态 {name}")))
}

fn back_to(number: &str) -> Response {
    let path = format!("/console/demands/{}", urlencoding_path(number));
    Redirect::to(&path).into_response()
}

/// A demand number in a path: numbers are `XQ-2026-000035`, but a stored
/// one is not trusted to be.
fn urlencoding_path(number: &str) -> String {
    number
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// `POST /console/demands/{number}/update`: status, staff, plan note.
pub(super) async fn update(
    State(console): State<Arc<Console>>,
    Path(number): Path<String>,
    posted: Posted<UpdateForm>,
) -> Result<Response, ConsoleError> {
    posted.user.require(Role::Staff)?;
    let form = posted.form;
    let update = StaffUpdate {
        status: status_field(&form.status)?,
        staff: non_blank(&form.staff),
        plan_note: non_blank(&form.plan_note),
        message: non_blank(&form.message),
    };
    if update == StaffUpdate::default() {
        return Err(ConsoleError::BadRequest("没有要改的内容".into()));
    }
    let actor = format!("staff:{}", posted.user.account.display_name);
    let demand = console
        .engine
        .update_demand(number.trim(), update, &actor)
        .await?;
    tracing::info!(
        number = demand.number,
        user = posted.user.account.username,
        "console: demand updated"
    );
    Ok(back_to(&demand.number))
}

#[derive(Debug, Deserialize)]
pub(super) struct ClaimForm {
    #[serde(default)]
    capability: String,
    #[serde(default)]
    note: String,
}

/// `POST /console/demands/{number}/claim`: 揭榜 on an expert's behalf.
pub(super) async fn claim(
    State(console): State<Arc<Console>>,
    Path(number): Path<String>,
    posted: Posted<ClaimForm>,
) -> Result<Response, ConsoleError> {
    posted.user.require(Role::Staff)?;
    let Some(capability) = non_blank(&posted.form.capability) else {
        return Err(ConsoleError::BadRequest("请填写揭榜专家的所能编号".into()));
    };
    let demand = console
        .engine
        .claim_demand(
            number.trim(),
            NewClaim {
                capability,
                note: posted.form.note.trim().to_owned(),
            },
        )
        .await?;
    tracing::info!(
        number = demand.number,
        user = posted.user.account.username,
        "console: demand claimed"
    );
    Ok(back_to(&demand.number))
}

/// `GET /console/capabilities`: every capability listing, with contacts
/// (staff only) and the demands each cooperated on.
pub(super) async fn capabilities(
    State(console): State<Arc<Console>>,
    user: Signed,
) -> Result<Response, ConsoleError> {
    user.require(Role::Staff)?;
    let listed = console.engine.listings().capabilities().await?;
    let rows: Vec<serde_json::Value> = listed
        .iter()
        .map(|c| {
            serde_json::json!({
                "number": c.number,
                "name": c.content.name,
                "kind": c.content.kind,
                "organisation": c.content.organisation,
                "fields": c.content.fields.join("、"),
                "skills": c.content.skills,
                "region": c.content.region,
                "contact_name": c.content.contact.name,
                "contact_phone": c.content.contact.phone,
                "availability": c.content.availability,
                "cooperations": c.cooperations,
                "listed": super::unix_time(c.listed_at),
            })
        })
        .collect();
    console.page(
        &user,
        "capabilities.html",
        serde_json::json!({ "capabilities": rows }),
    )
}
