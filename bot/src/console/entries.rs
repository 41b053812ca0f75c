//! The console's entry pages: the list with filters and search, an entry
//! with its rendered answer and history, the editor with validation and
//! preview, the review queue, and the workflow actions (submit, approve,
//! reject, retire, restore), each a POST that redirects back to the entry.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use kb::ListFilter;
use kb::entry::{Category, Entry, EntryContent, EntryId, FieldError, Source, Status};
use kb::workflow::Action;
use serde::{Deserialize, Serialize};

use super::accounts::Role;
use super::{Console, ConsoleError, Posted, Signed, markdown};

/// Entries shown on one list page.
const LIST_LIMIT: usize = 200;

fn status_label(status: Status) -> &'static str {
    match status {
        Status::Draft => "草稿",
        Status::InReview => "待审核",
        Status::Published => "已发布",
        Status::Retired => "已下线",
    }
}

fn today() -> String {
    crate::china::date_text(crate::china::today())
}

fn parse_id(id: &str) -> Result<EntryId, ConsoleError> {
    uuid::Uuid::parse_str(id.trim())
        .map(EntryId)
        .map_err(|_| ConsoleError::NotFound(format!("没有条目 {id}")))
}

async fn load(console: &Console, id: &str) -> Result<Entry, ConsoleError> {
    let id = parse_id(id)?;
    console
        .engine
        .kb()
        .get(id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("没有条目 {id}")))
}

/// An entry's line in lists.
fn summary(entry: &Entry, today: &str) -> serde_json::Value {
    serde_json::json!({
        "id": entry.id.to_string(),
        "question": entry.content.question,
        "category": entry.content.category.name(),
        "status": entry.status.as_str(),
        "status_label": status_label(entry.status),
        "version": entry.version,
        "author": entry.author,
        "updated": super::china_time(entry.updated_at),
        "review_by": entry.content.review_by,
        "stale": entry.content.review_by.as_deref().is_some_and(|d| d < today),
        "crops": entry.content.crops.join("、"),
    })
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    crop: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    stale: String,
    #[serde(default)]
    q: String,
}

pub(super) fn choices() -> serde_json::Value {
    let categories: Vec<&str> = Category::ALL.iter().map(|c| c.name()).collect();
    let statuses: Vec<serde_json::Value> = [
        Status::Draft,
        Status::InReview,
        Status::Published,
        Status::Retired,
    ]
    .iter()
    .map(|s| serde_json::json!({ "value": s.as_str(), "label": status_label(*s) }))
    .collect();
    serde_json::json!({ "categories": categories, "statuses": statuses })
}

pub(super) async fn list(
    State(console): State<Arc<Console>>,
    user: Signed,
    Query(query): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    let today = today();
    let filter = ListFilter {
        status: Status::parse(query.status.trim()),
        category: Category::from_name(&query.category),
        crop: Some(query.crop.trim().to_owned()).filter(|c| !c.is_empty()),
        region: Some(query.region.trim().to_owned()).filter(|r| !r.is_empty()),
        stale_before: (!query.stale.is_empty()).then(|| today.clone()),
    };
    let page = console
        .engine
        .kb()
        .list_page(&filter, &query.q, LIST_LIMIT)
        .await?;
    let total = page.total;
    let shown: Vec<serde_json::Value> = page
        .entries
        .iter()
        .map(|entry| summary(entry, &today))
        .collect();
    let counts: Vec<serde_json::Value> = console
        .engine
        .kb()
        .count_by_status()
        .await?
        .into_iter()
        .map(|(status, count)| serde_json::json!({ "label": status_label(status), "count": count }))
        .collect();
    console.page(
        &user,
        "entries.html",
        serde_json::json!({
            "entries": shown,
            "total": total,
            "limit": LIST_LIMIT,
            "query": query,
            "counts": counts,
            "choices": choices(),
        }),
    )
}

/// The editor's fields, as posted.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(super) struct EntryForm {
    #[serde(default)]
    question: String,
    #[serde(default)]
    alt_questions: String,
    #[serde(default)]
    short_answer: String,
    #[serde(default)]
    answer: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    crops: String,
    #[serde(default)]
    regions: String,
    #[serde(default)]
    months: String,
    #[serde(default)]
    audience: String,
    #[serde(default)]
    source_organisation: String,
    #[serde(default)]
    source_document: String,
    #[serde(default)]
    source_url: String,
    #[serde(default)]
    review_by: String,
    #[serde(default)]
    external_key: String,
    /// Set by the "预览" button: show the preview instead of saving.
    #[serde(default)]
    preview: Option<String>,
    /// The unanswered group this draft answers, if it came from one.
    #[serde(default)]
    group: String,
}

/// Words separated by commas, 、, semicolons or line breaks.
fn words(text: &str) -> Vec<String> {
    text.split([',', '，', '、', ';', '；', '\n'])
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn optional(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

impl EntryForm {
    /// The content, or what is wrong with the form beyond what the entry's
    /// own validation checks.
    pub(super) fn to_content(&self) -> Result<EntryContent, Vec<FieldError>> {
        let mut errors = Vec::new();
        let category = Category::from_name(&self.category);
        if category.is_none() {
            errors.push(FieldError {
                field: "category",
                message: "请选择分类".into(),
            });
        }
        let mut months = Vec::new();
        for word in words(&self.months) {
            match word.parse::<u8>() {
                Ok(month) => months.push(month),
                Err(_) => errors.push(FieldError {
                    field: "months",
                    message: format!("月份“{word}”不是 1–12 的数字"),
                }),
            }
        }
        let content = EntryContent {
            external_key: optional(&self.external_key),
            question: self.question.trim().to_owned(),
            alt_questions: self
                .alt_questions
                .lines()
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .map(str::to_owned)
                .collect(),
            answer: self.answer.trim().to_owned(),
            short_answer: optional(&self.short_answer),
            category: category.unwrap_or(Category::Everyday),
            tags: words(&self.tags),
            crops: words(&self.crops),
            regions: words(&self.regions),
            months,
            audience: optional(&self.audience),
            source: Source {
                organisation: self.source_organisation.trim().to_owned(),
                document: optional(&self.source_document),
                url: optional(&self.source_url),
            },
            review_by: optional(&self.review_by),
        };
        if let Err(mut invalid) = content.validate() {
            errors.append(&mut invalid);
        }
        if errors.is_empty() {
            Ok(content)
        } else {
            Err(errors)
        }
    }

    pub(super) fn from_content(content: &EntryContent) -> Self {
        Self {
            question: content.question.clone(),
            alt_questions: content.alt_questions.join("\n"),
            short_answer: content.short_answer.clone().unwrap_or_default(),
            answer: content.answer.clone(),
            category: content.category.name().to_owned(),
            tags: content.tags.join("、"),
            crops: content.crops.join("、"),
            regions: content.regions.join("、"),
            months: content
                .months
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(","),
            audience: content.audience.clone().unwrap_or_default(),
            source_organisation: content.source.organisation.clone(),
            source_document: content.source.document.clone().unwrap_or_default(),
            source_url: content.source.url.clone().unwrap_or_default(),
            review_by: content.review_by.clone().unwrap_or_default(),
            external_key: content.external_key.clone().unwrap_or_default(),
            preview: None,
            group: String::new(),
        }
    }

    /// A new draft's form, pre-filled with questions people asked.
    pub(super) fn from_questions(questions: &[String], group: &str) -> Self {
        let mut questions = questions.iter();
        Self {
            question: questions.next().cloned().unwrap_or_default(),
            alt_questions: questions.cloned().collect::<Vec<_>>().join("\n"),
            group: group.to_owned(),
            ..Self::default()
        }
    }
}

/// The editor page.
fn editor(
    console: &Console,
    user: &Signed,
    entry: Option<&Entry>,
    form: &EntryForm,
    errors: &[FieldError],
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let preview = form
        .preview
        .as_ref()
        .map(|_| markdown::to_html(&form.answer));
    let errors: Vec<serde_json::Value> = errors
        .iter()
        .map(|e| serde_json::json!({ "field": e.field, "message": e.message }))
        .collect();
    let mut response = console.page(
        user,
        "edit.html",
        serde_json::json!({
            "entry": entry.map(|e| serde_json::json!({
                "id": e.id.to_string(),
                "status_label": status_label(e.status),
                "version": e.version,
            })),
            "form": form,
            "errors": errors,
            "preview": preview,
            "choices": choices(),
        }),
    )?;
    *response.status_mut() = status;
    Ok(response)
}

pub(super) async fn new_form(
    State(console): State<Arc<Console>>,
    user: Signed,
) -> Result<Response, ConsoleError> {
    user.require(Role::Editor)?;
    editor(
        &console,
        &user,
        None,
        &EntryForm::default(),
        &[],
        StatusCode::OK,
    )
}

/// The posted content, or the page to show instead: the editor again with
/// the preview (nothing saved) or with what is wrong (422).
fn posted_content(
    console: &Console,
    user: &Signed,
    entry: Option<&Entry>,
    form: &EntryForm,
) -> Result<Result<EntryContent, Response>, ConsoleError> {
    let previewing = form.preview.is_some();
    match form.to_content() {
        Ok(content) if !previewing => Ok(Ok(content)),
        Ok(_) => Ok(Err(editor(
            console,
            user,
            entry,
            form,
            &[],
            StatusCode::OK,
        )?)),
        Err(errors) => {
            let status = if previewing {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            Ok(Err(editor(console, user, entry, form, &errors, status)?))
        }
    }
}

pub(super) async fn create(
    State(console): State<Arc<Console>>,
    posted: Posted<EntryForm>,
) -> Result<Response, ConsoleError> {
    let Posted { user, form } = posted;
    user.require(Role::Editor)?;
    let content = match posted_content(&console, &user, None, &form)? {
        Ok(content) => content,
        Err(page) => return Ok(page),
    };
    let entry = console
        .engine
        .kb()
        .create(content, &user.account.username)
        .await?;
    if !form.group.is_empty() {
        super::unanswered::link_draft(&console, &form.group, entry.id).await?;
    }
    tracing::info!(entry = %entry.id, actor = user.account.username, "console: entry created");
    Ok(Redirect::to(&format!("/console/entries/{}", entry.id)).into_response())
}

pub(super) async fn edit_form(
    State(console): State<Arc<Console>>,
    user: Signed,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    user.require(Role::Editor)?;
    let entry = load(&console, &id).await?;
    let form = EntryForm::from_content(&entry.content);
    editor(&console, &user, Some(&entry), &form, &[], StatusCode::OK)
}

pub(super) async fn save(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    posted: Posted<EntryForm>,
) -> Result<Response, ConsoleError> {
    let Posted { user, form } = posted;
    user.require(Role::Editor)?;
    let entry = load(&console, &id).await?;
    let content = match posted_content(&console, &user, Some(&entry), &form)? {
        Ok(content) => content,
        Err(page) => return Ok(page),
    };
    console
        .engine
        .kb()
        .apply(entry.id, Action::Edit { content }, &user.account.username)
        .await?;
    Ok(Redirect::to(&format!("/console/entries/{}", entry.id)).into_response())
}

/// Field labels for the history's changes, in display order.
const FIELD_LABELS: &[(&str, &str)] = &[
    ("question", "问题"),
    ("alt_questions", "相似问法"),
    ("short_answer", "简短回答"),
    ("answer", "完整回答"),
    ("category", "分类"),
    ("tags", "标签"),
    ("crops", "作物"),
    ("regions", "地区"),
    ("months", "月份"),
    ("audience", "对象"),
    ("source", "来源"),
    ("review_by", "复审日期"),
];

fn field_text(value: Option<&serde_json::Value>) -> String {
    match value {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("、"),
        Some(serde_json::Value::Object(map)) => map
            .values()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(" ｜ "),
        Some(other) => other.to_string(),
    }
}

/// What changed between two versions' content, field by field.
fn changes(before: &EntryContent, after: &EntryContent) -> Vec<serde_json::Value> {
    let (Ok(before), Ok(after)) = (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return Vec::new();
    };
    FIELD_LABELS
        .iter()
        .filter(|(field, _)| before.get(*field) != after.get(*field))
        .map(|(field, label)| {
            serde_json::json!({
                "label": label,
                "before": field_text(before.get(*field)),
                "after": field_text(after.get(*field)),
            })
        })
        .collect()
}

pub(super) async fn show(
    State(console): State<Arc<Console>>,
    user: Signed,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let entry = load(&console, &id).await?;
    let mut history = console.engine.kb().history(entry.id).await?;
    history.sort_by_key(|revision| revision.version);
    let mut revisions = Vec::new();
    for (index, revision) in history.iter().enumerate() {
        let changed = match index.checked_sub(1).and_then(|i| history.get(i)) {
            Some(previous) => changes(&previous.snapshot.content, &revision.snapshot.content),
            None => Vec::new(),
        };
        revisions.push(serde_json::json!({
            "version": revision.version,
            "action": revision.action,
            "actor": revision.actor,
            "at": super::china_time(revision.at),
            "note": revision.note,
            "status_label": status_label(revision.snapshot.status),
            "changes": changed,
        }));
    }
    revisions.reverse();
    let username = &user.account.username;
    let reviewable = entry.status == Status::InReview && &entry.author != username;
    let feedback = super::feedback::satisfaction(&console, entry.id).await?;
    console.page(
        &user,
        "entry.html",
        serde_json::json!({
            "entry": {
                "id": entry.id.to_string(),
                "question": entry.content.question,
                "alt_questions": entry.content.alt_questions,
                "short_answer": entry.chat_answer(),
                "answer_html": markdown::to_html(&entry.content.answer),
                "category": entry.content.category.name(),
                "tags": entry.content.tags.join("、"),
                "crops": entry.content.crops.join("、"),
                "regions": entry.content.regions.join("、"),
                "months": entry.content.months,
                "audience": entry.content.audience,
                "source": entry.content.source,
                "review_by": entry.content.review_by,
                "status": entry.status.as_str(),
                "status_label": status_label(entry.status),
                "author": entry.author,
                "reviewer": entry.reviewer,
                "version": entry.version,
                "updated": super::china_time(entry.updated_at),
            },
            "history": revisions,
            "feedback": feedback,
            "can_edit": user.account.has(Role::Editor),
            "can_submit": user.account.has(Role::Editor) && entry.status == Status::Draft,
            "can_review": user.account.has(Role::Reviewer) && reviewable,
            "own_entry_in_review": entry.status == Status::InReview && &entry.author == username,
            "can_retire": user.account.has(Role::Reviewer) && entry.status == Status::Published,
        }),
    )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    note: String,
    #[serde(default)]
    version: Option<u32>,
}

async fn act(
    console: &Console,
    id: &str,
    user: &Signed,
    action: Action,
) -> Result<Response, ConsoleError> {
    let entry = load(console, id).await?;
    let name = action.name();
    let updated = console
        .engine
        .kb()
        .apply(entry.id, action, &user.account.username)
        .await?;
    tracing::info!(entry = %entry.id, action = name, actor = user.account.username, "console: entry changed");
    if updated.status == Status::Published {
        super::unanswered::answer_askers(console, &updated).await;
    }
    Ok(Redirect::to(&format!("/console/entries/{}", entry.id)).into_response())
}

pub(super) async fn submit(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    posted: Posted<ActionForm>,
) -> Result<Response, ConsoleError> {
    posted.user.require(Role::Editor)?;
    act(&console, &id, &posted.user, Action::Submit).await
}

pub(super) async fn restore(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    posted: Posted<ActionForm>,
) -> Result<Response, ConsoleError> {
    posted.user.require(Role::Editor)?;
    let Some(version) = posted.form.version else {
        return Err(ConsoleError::BadRequest("请选择要恢复的版本".into()));
    };
    act(&console, &id, &posted.user, Action::Restore { version }).await
}

pub(super) async fn approve(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    posted: Posted<ActionForm>,
) -> Result<Response, ConsoleError> {
    posted.user.require(Role::Reviewer)?;
    let note = optional(&posted.form.note);
    act(&console, &id, &posted.user, Action::Approve { note }).await
}

pub(super) async fn reject(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    posted: Posted<ActionForm>,
) -> Result<Response, ConsoleError> {
    posted.user.require(Role::Reviewer)?;
    let Some(note) = optional(&posted.form.note) else {
        return Err(ConsoleError::BadRequest(
            "退回时请写明原因，作者才知道怎么改".into(),
        ));
    };
    act(&console, &id, &posted.user, Action::Reject { note }).await
}

pub(super) async fn retire(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    posted: Posted<ActionForm>,
) -> Result<Response, ConsoleError> {
    posted.user.require(Role::Reviewer)?;
    let note = optional(&posted.form.note);
    act(&console, &id, &posted.user, Action::Retire { note }).await
}

pub(super) async fn review_queue(
    State(console): State<Arc<Console>>,
    user: Signed,
) -> Result<Response, ConsoleError> {
    user.require(Role::Reviewer)?;
    let today = today();
    let mut entries = console
        .engine
        .kb()
        .list(&ListFilter {
            status: Some(Status::InReview),
            ..Default::default()
        })
        .await?;
    entries.sort_by_key(|entry| entry.updated_at);
    let username = &user.account.username;
    let queue: Vec<serde_json::Value> = entries
        .iter()
        .map(|entry| {
            let mut line = summary(entry, &today);
            line["own"] = (&entry.author == username).into();
            line
        })
        .collect();
    console.page(
        &user,
        "review.html",
        serde_json::json!({ "entries": queue }),
    )
}
