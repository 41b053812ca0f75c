//! The unanswered loop: questions the bot had no authoritative answer for,
//! grouped by meaning; a group becomes a draft entry pre-filled with its
//! phrasings; when that entry is published, everyone in the group who
//! asked to be told ("有答案时通知我") gets the answer on their channel
//! (pushed where the channel can, else with their next reply), and the
//! group is closed.
//!
//! Groups are computed from the turn log on each visit (abstained turns,
//! newest first, at most [`MAX_QUESTIONS`], read from the most recent
//! week, month, quarter or year that holds that many, so a large log is
//! not read whole): a question joins the first
//! group whose first question is at least [`SAME_MEANING`] similar
//! (cosine of the query embeddings), else starts one. A group's id is its
//! newest turn's id. A draft made from a group records the group's turns
//! in the `unanswered_links` collection (payload-only, in the point store);
//! linked turns leave the open groups.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use kb::entry::{Entry, EntryId};
use kb::store::{CollectionSpec, Condition, Filter, NewPoint, PointStore, scroll_all, to_payload};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::accounts::Role;
use super::entries::EntryForm;
use super::{Console, ConsoleError, Posted, Signed};
use crate::turns::TurnRecord;

const LINKS: &str = "unanswered_links";
/// Abstained questions grouped per visit, newest first.
const MAX_QUESTIONS: usize = 300;
/// Two questions this similar ask the same thing.
const SAME_MEANING: f32 = 0.88;
/// Phrasings a draft takes from its group.
const MAX_PHRASINGS: usize = 10;

/// A group of unanswered questions turned into a draft.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Link {
    group: String,
    entry_id: String,
    turn_ids: Vec<String>,
    /// Users who asked to be told, by storage key.
    notify: Vec<String>,
    /// `open` until the entry is published and the askers told, then `closed`.
    status: String,
    created_at: i64,
    #[serde(default)]
    closed_at: Option<i64>,
}

fn links_spec() -> CollectionSpec {
    CollectionSpec {
        keyword_fields: vec!["entry_id", "status", "group"],
        ..CollectionSpec::payload_only(LINKS)
    }
}

async fn links(store: &dyn PointStore, filter: Filter) -> Result<Vec<Link>, ConsoleError> {
    store
        .ensure_collection(&links_spec())
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
    let records = scroll_all(store, LINKS, filter)
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
    Ok(records
        .into_iter()
        .filter_map(|r| serde_json::from_value(serde_json::Value::Object(r.payload)).ok())
        .collect())
}

async fn save_link(store: &dyn PointStore, link: &Link) -> Result<(), ConsoleError> {
    store
        .upsert(
            LINKS,
            vec![NewPoint {
                id: kb::listing::listing_id("unanswered", &link.group),
                dense: None,
                lexical: None,
                payload: to_payload(link),
            }],
        )
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))
}

/// One group of questions asking the same thing.
#[derive(Debug, Clone, Serialize)]
struct Group {
    id: String,
    questions: Vec<String>,
    count: usize,
    users: usize,
    notify: Vec<String>,
    newest: String,
    channels: Vec<String>,
    regions: Vec<String>,
    #[serde(skip)]
    turn_ids: Vec<String>,
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    // Query embeddings are L2-normalised: the dot product is the cosine.
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The open groups, newest first.
async fn open_groups(console: &Console) -> Result<Vec<Group>, ConsoleError> {
    let linked: HashSet<String> = links(&*console.engine.kb().store(), Filter::default())
        .await?
        .into_iter()
        .flat_map(|link| link.turn_ids)
        .collect();
    let mut turns: Vec<TurnRecord> = console
        .engine
        .turns()
        .recent(&[("reply_kind", "abstain")], MAX_QUESTIONS, |turn| {
            !linked.contains(&turn.turn_id) && !turn.text.trim().is_empty()
        })
        .await
        .map_err(|e| ConsoleError::Unavailable(e.to_string()))?;
    turns.sort_by_key(|turn| std::cmp::Reverse(turn.at));
    turns.truncate(MAX_QUESTIONS);
    let mut groups: Vec<(Vec<f32>, Vec<TurnRecord>)> = Vec::new();
    for turn in turns {
        let question = turn
            .resolved_query
            .clone()
            .unwrap_or_else(|| turn.text.clone());
        let vector = console.engine.kb().embed_query(&question).await?;
        match groups
            .iter_mut()
            .find(|(anchor, _)| cosine(anchor, &vector) >= SAME_MEANING)
        {
            Some((_, members)) => members.push(turn),
            None => groups.push((vector, vec![turn])),
        }
    }
    Ok(groups
        .into_iter()
        .map(|(_, members)| {
            let mut questions: Vec<String> = Vec::new();
            for turn in &members {
                let text = turn.text.trim().to_owned();
                if !questions.contains(&text) {
                    questions.push(text);
                }
            }
            let users: BTreeSet<&str> = members.iter().map(|t| t.user.as_str()).collect();
            let notify: BTreeSet<String> = members
                .iter()
                .filter(|t| t.notify)
                .map(|t| t.user.clone())
                .collect();
            let channels: BTreeSet<String> = members.iter().map(|t| t.channel.clone()).collect();
            let regions: BTreeSet<String> =
                members.iter().filter_map(|t| t.region.clone()).collect();
            Group {
                id: members[0].turn_id.clone(),
                count: members.len(),
                users: users.len(),
                notify: notify.into_iter().collect(),
                newest: super::unix_time(members[0].at),
                channels: channels.into_iter().collect(),
                regions: regions.into_iter().collect(),
                turn_ids: members.iter().map(|t| t.turn_id.clone()).collect(),
                questions,
            }
        })
        .collect())
}

pub(super) async fn groups(
    State(console): State<Arc<Console>>,
    user: Signed,
) -> Result<Response, ConsoleError> {
    user.require(Role::Editor)?;
    let groups = open_groups(&console).await?;
    let drafted: Vec<serde_json::Value> = links(
        &*console.engine.kb().store(),
        Filter::default().and(Condition::keyword("status", "open")),
    )
    .await?
    .into_iter()
    .map(|link| {
        serde_json::json!({
            "entry_id": link.entry_id,
            "count": link.turn_ids.len(),
            "notify": link.notify.len(),
        })
    })
    .collect();
    console.page(
        &user,
        "unanswered.html",
        serde_json::json!({ "groups": groups, "drafted": drafted }),
    )
}

#[derive(Deserialize)]
pub(super) struct DraftForm {
    #[serde(default)]
    group: String,
}

/// The editor, pre-filled with the group's phrasings; saving it creates
/// the draft and links the group ([`link_draft`]).
pub(super) async fn draft(
    State(console): State<Arc<Console>>,
    posted: Posted<DraftForm>,
) -> Result<Response, ConsoleError> {
    posted.user.require(Role::Editor)?;
    let groups = open_groups(&console).await?;
    let Some(group) = groups.iter().find(|g| g.id == posted.form.group) else {
        return Err(ConsoleError::NotFound(
            "这组问题已经处理过了，或者已不在列表里".into(),
        ));
    };
    let questions: Vec<String> = group
        .questions
        .iter()
        .take(MAX_PHRASINGS)
        .cloned()
        .collect();
    let form = EntryForm::from_questions(&questions, &group.id);
    let mut response = console.page(
        &posted.user,
        "edit.html",
        serde_json::json!({
            "entry": null,
            "form": form,
            "errors": [],
            "preview": null,
            "from_group": { "count": group.count, "notify": group.notify.len() },
            "choices": super::entries::choices(),
        }),
    )?;
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// Records that the draft `entry_id` answers the group `group_id`.
pub(super) async fn link_draft(
    console: &Console,
    group_id: &str,
    entry_id: EntryId,
) -> Result<(), ConsoleError> {
    let groups = open_groups(console).await?;
    let Some(group) = groups.into_iter().find(|g| g.id == group_id) else {
        // Linked meanwhile by someone else: the draft stands on its own.
        tracing::info!(group = group_id, "console: group already linked");
        return Ok(());
    };
    let link = Link {
        group: group.id,
        entry_id: entry_id.to_string(),
        turn_ids: group.turn_ids,
        notify: group.notify,
        status: "open".into(),
        created_at: OffsetDateTime::now_utc().unix_timestamp(),
        closed_at: None,
    };
    save_link(&*console.engine.kb().store(), &link).await
}

/// Tells the askers of the groups this entry answers, and closes the
/// groups. Failures are logged: the entry is already published, and a
/// user not told now is told with the next publication of a group.
pub(super) async fn answer_askers(console: &Console, entry: &Entry) {
    let store = console.engine.kb().store();
    let filter = Filter::default()
        .and(Condition::keyword("entry_id", entry.id.to_string()))
        .and(Condition::keyword("status", "open"));
    let open = match links(&*store, filter).await {
        Ok(open) => open,
        Err(error) => {
            tracing::error!(%error, entry = %entry.id, "console: askers not told");
            return;
        }
    };
    for mut link in open {
        let text = match console.engine.render(
            "answer_published.j2",
            serde_json::json!({
                "question": entry.content.question,
                "answer": entry.chat_answer(),
                "source": entry.content.source.organisation,
                "reviewer": entry.reviewer,
            }),
        ) {
            Ok(text) => text,
            Err(error) => {
                tracing::error!(%error, "console: answer_published.j2 failed");
                return;
            }
        };
        for user in &link.notify {
            console.engine.notify(user, text.clone()).await;
        }
        link.status = "closed".into();
        link.closed_at = Some(OffsetDateTime::now_utc().unix_timestamp());
        if let Err(error) = save_link(&*store, &link).await {
            tracing::error!(%error, "console: group not closed; its askers may be told twice");
        }
        tracing::info!(entry = %entry.id, told = link.notify.len(), "console: unanswered group answered");
    }
}
