//! Bulk import in the console: an editor pastes JSONL or CSV rows (the
//! formats of `wenke kb import`) and gets a report per row: created,
//! updated, unchanged, or the line and the reason it was refused. Imported
//! entries are drafts by the importing editor, so each still needs a
//! second person's review before anyone sees it.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use kb::ImportOptions;
use serde::Deserialize;

use super::accounts::Role;
use super::{Console, ConsoleError, Posted, Signed};

/// The largest paste accepted (a few thousand entries).
pub(super) const MAX_IMPORT_BYTES: usize = 4 * 1024 * 1024;

/// `GET /console/import`.
pub(super) async fn form(
    State(console): State<Arc<Console>>,
    user: Signed,
) -> Result<Response, ConsoleError> {
    user.require(Role::Editor)?;
    console.page(&user, "import.html", serde_json::json!({ "report": null }))
}

#[derive(Debug, Deserialize)]
pub(super) struct ImportForm {
    /// `jsonl` or `csv`.
    #[serde(default)]
    format: String,
    #[serde(default)]
    rows: String,
}

/// `POST /console/import`: imports the rows as drafts and reports on each.
pub(super) async fn import(
    State(console): State<Arc<Console>>,
    posted: Posted<ImportForm>,
) -> Result<Response, ConsoleError> {
    posted.user.require(Role::Editor)?;
    let form = posted.form;
    if form.rows.trim().is_empty() {
        return Err(ConsoleError::BadRequest("请粘贴要导入的内容".into()));
    }
    if !matches!(form.format.as_str(), "jsonl" | "csv") {
        return Err(ConsoleError::BadRequest(format!(
            "没有这种格式：{}（可选 jsonl、csv）",
            form.format
        )));
    }
    // Parsing megabytes of rows is CPU work: off the async runtime.
    let (format, text) = (form.format.clone(), form.rows.clone());
    let rows = tokio::task::spawn_blocking(move || match format.as_str() {
        "csv" => kb::import::parse_csv(text.as_bytes()),
        _ => Ok(kb::import::parse_jsonl(&text)),
    })
    .await
    .map_err(|e| ConsoleError::Unavailable(e.to_string()))?
    .map_err(|e| ConsoleError::BadRequest(format!("CSV 无法读取：{e}")))?;
    let total = rows.len();
    let report = console
        .engine
        .kb()
        .import(
            rows,
            &ImportOptions {
                actor: posted.user.account.username.clone(),
                approve_as: None,
            },
            &|_, _| {},
        )
        .await?;
    tracing::info!(
        user = posted.user.account.username,
        total,
        created = report.created,
        updated = report.updated,
        refused = report.errors.len(),
        "console: import"
    );
    console.page(
        &posted.user,
        "import.html",
        serde_json::json!({
            "report": report,
            "total": total,
            "format": form.format,
            // The refused rows stay in the box, to fix and import again.
            "rows": if report.errors.is_empty() { String::new() } else { form.rows },
        }),
    )
}
