//! Personalised push (精准科普) in the console: an editor picks a
//! published entry (those in season for the crop first) and an audience
//! (city, county, crop interest, channel), sees how many opted-in users
//! that is, and sends; the sends are listed with their counts.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use kb::ListFilter;
use kb::entry::Status;
use kb::region::Regions;
use serde::Deserialize;

use super::accounts::Role;
use super::{Console, ConsoleError, Posted, Signed, non_blank};
use crate::outreach::{Audience, OutreachError, start_broadcast};

/// Entries offered to pick from.
const PICKABLE: usize = 50;

impl From<OutreachError> for ConsoleError {
    fn from(error: OutreachError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct PushQuery {
    #[serde(default)]
    entry: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    county: String,
    #[serde(default)]
    crop: String,
    #[serde(default)]
    channel: String,
}

impl PushQuery {
    fn audience(&self) -> Result<Audience, ConsoleError> {
        Ok(Audience {
            city: super::city_field(&self.city)?,
            county: non_blank(&self.county),
            crop: non_blank(&self.crop),
            channel: non_blank(&self.channel),
        })
    }
}

/// `GET /console/push`: choose, count, and the sends so far.
pub(super) async fn page(
    State(console): State<Arc<Console>>,
    user: Signed,
    Query(query): Query<PushQuery>,
) -> Result<Response, ConsoleError> {
    user.require(Role::Editor)?;
    let audience = query.audience()?;
    let engine = &console.engine;
    let month = u8::from(crate::china::today().month());
    let mut entries = engine
        .kb()
        .list(&ListFilter {
            status: Some(Status::Published),
            crop: audience.crop.clone(),
            ..ListFilter::default()
        })
        .await?;
    // In season first: the entry names this month.
    entries.sort_by_key(|entry| !entry.content.months.contains(&month));
    entries.truncate(PICKABLE);
    let chosen = match non_blank(&query.entry) {
        None => None,
        Some(id) => Some(
            engine
                .published(&id)
                .await?
                .ok_or_else(|| ConsoleError::NotFound("没有这个已发布的条目".into()))?,
        ),
    };
    let size = engine.outreach().audience(&audience).await?.len();
    let broadcasts = engine.outreach().broadcasts().await?;
    console.page(
        &user,
        "push.html",
        serde_json::json!({
            "entries": entries.iter().map(|e| serde_json::json!({
                "id": e.id.to_string(),
                "question": e.content.question,
                "in_season": e.content.months.contains(&month),
                "selected": chosen.as_ref().is_some_and(|c| c.id == e.id),
            })).collect::<Vec<_>>(),
            "chosen": chosen.as_ref().map(|e| serde_json::json!({
                "id": e.id.to_string(),
                "question": e.content.question,
                "answer": e.chat_answer(),
            })),
            "audience": audience,
            "audience_size": size,
            "cities": Regions::builtin().cities(),
            "token": uuid::Uuid::now_v7().to_string(),
            "broadcasts": broadcasts.iter().take(20).map(|b| serde_json::json!({
                "question": b.question,
                "at": super::unix_time(b.at),
                "actor": b.actor,
                "audience": b.audience,
                "size": b.audience_size,
                "sent": b.sent,
                "rate_limited": b.rate_limited,
                "done": b.status == "done",
            })).collect::<Vec<_>>(),
        }),
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct SendForm {
    /// The page's one-time token: posting the same form twice sends once.
    #[serde(default)]
    token: String,
    #[serde(default)]
    entry: String,
    #[serde(flatten)]
    audience: PushQuery,
}

/// `POST /console/push`: sends the chosen entry to the audience.
pub(super) async fn send(
    State(console): State<Arc<Console>>,
    posted: Posted<SendForm>,
) -> Result<Response, ConsoleError> {
    posted.user.require(Role::Editor)?;
    let form = posted.form;
    let Ok(token) = uuid::Uuid::parse_str(form.token.trim()) else {
        return Err(ConsoleError::BadRequest("表单已失效，请刷新页面".into()));
    };
    let entry = console
        .engine
        .published(form.entry.trim())
        .await?
        .ok_or_else(|| ConsoleError::BadRequest("请选择一个已发布的条目".into()))?;
    let audience = form.audience.audience()?;
    let broadcast = start_broadcast(
        &console.engine,
        &token.to_string(),
        &entry,
        audience,
        &posted.user.account.username,
    )
    .await?;
    tracing::info!(
        broadcast = broadcast.id,
        entry = broadcast.entry_id,
        audience = broadcast.audience_size,
        user = posted.user.account.username,
        "console: push started"
    );
    Ok(Redirect::to("/console/push").into_response())
}
