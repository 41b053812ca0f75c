//! The background job queue in the console (admins): how many jobs are
//! ready, waiting to retry, running and dead, the dead letters with their
//! last error, and sending them back to the queue. In embedded mode this is
//! the only way to do that while the server runs (`wenke jobs` needs the
//! data directory, which the server holds).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::accounts::Role;
use super::{Console, ConsoleError, Posted, Signed};
use crate::jobs::JobError;

/// Dead letters shown on the page.
const SHOWN: usize = 100;

impl From<JobError> for ConsoleError {
    fn from(error: JobError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

/// `GET /console/jobs`.
pub(super) async fn page(
    State(console): State<Arc<Console>>,
    user: Signed,
) -> Result<Response, ConsoleError> {
    user.require(Role::Admin)?;
    let queue = console.engine.jobs();
    let depth = queue.depth().await?;
    let dead = queue.dead().await?;
    console.page(
        &user,
        "jobs.html",
        serde_json::json!({
            "queue": queue.kind(),
            "depth": depth,
            "dead_total": dead.len(),
            "dead": dead.iter().take(SHOWN).map(|job| serde_json::json!({
                "id": job.id.to_string(),
                "kind": job.task.kind(),
                "attempts": job.attempts,
                "enqueued_at": super::unix_time(job.enqueued_at),
                "buried_at": job.buried_at.map(super::unix_time),
                "error": job.last_error,
            })).collect::<Vec<_>>(),
        }),
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct RetryForm {
    /// One dead letter's id, or `all`.
    #[serde(default)]
    id: String,
}

/// `POST /console/jobs/retry`: sends one dead letter (or all) back.
pub(super) async fn retry(
    State(console): State<Arc<Console>>,
    posted: Posted<RetryForm>,
) -> Result<Response, ConsoleError> {
    posted.user.require(Role::Admin)?;
    let queue = console.engine.jobs();
    let ids = match posted.form.id.trim() {
        "all" => queue.dead().await?.into_iter().map(|job| job.id).collect(),
        id => vec![
            uuid::Uuid::parse_str(id)
                .map_err(|_| ConsoleError::BadRequest("不是任务编号".into()))?,
        ],
    };
    let mut revived = 0;
    for id in ids {
        if queue.revive(id).await? {
            revived += 1;
        }
    }
    tracing::info!(
        actor = posted.user.account.username,
        revived,
        "console: dead jobs queued again"
    );
    Ok(Redirect::to("/console/jobs").into_response())
}
