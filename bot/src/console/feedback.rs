//! Feedback: answers users rated 👎, newest first, each with the
//! conversation around it and a link to the entry that answered, so the
//! editor can improve it; and an entry's satisfaction on its own page.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use kb::entry::EntryId;
use webhooks::message::Rating;

use super::accounts::Role;
use super::{Console, ConsoleError, Signed};
use crate::turns::TurnRecord;

/// Rated-down answers shown on the page.
const SHOWN: usize = 50;
/// Turns of the same user shown before and after a rated one.
const BEFORE: usize = 3;
const AFTER: usize = 2;

fn unavailable(error: impl std::fmt::Display) -> ConsoleError {
    ConsoleError::Unavailable(error.to_string())
}

fn line(turn: &TurnRecord, rated: &str) -> serde_json::Value {
    serde_json::json!({
        "text": turn.text,
        "resolved": turn.resolved_query,
        "reply_kind": turn.reply_kind,
        "at": super::unix_time(turn.at),
        "rated": turn.turn_id == rated,
        "feedback": turn.feedback.map(|r| match r { Rating::Up => "👍", Rating::Down => "👎" }),
    })
}

/// `GET /console/feedback`.
pub(super) async fn page(
    State(console): State<Arc<Console>>,
    user: Signed,
) -> Result<Response, ConsoleError> {
    user.require(Role::Editor)?;
    let turns = console.engine.turns();
    let mut rated = turns
        .recent(&[("feedback", "down")], SHOWN, |_| true)
        .await
        .map_err(unavailable)?;
    let total = rated.len();
    rated.reverse();
    rated.truncate(SHOWN);

    let mut conversations: HashMap<String, Vec<TurnRecord>> = HashMap::new();
    let mut questions: HashMap<String, Option<String>> = HashMap::new();
    let mut items = Vec::new();
    for turn in &rated {
        if !conversations.contains_key(&turn.user) {
            let theirs = turns
                .find(&[("user", turn.user.as_str())])
                .await
                .map_err(unavailable)?;
            conversations.insert(turn.user.clone(), theirs);
        }
        let theirs = &conversations[&turn.user];
        let position = theirs
            .iter()
            .position(|t| t.turn_id == turn.turn_id)
            .unwrap_or(0);
        let around: Vec<serde_json::Value> = theirs
            [position.saturating_sub(BEFORE)..(position + AFTER + 1).min(theirs.len())]
            .iter()
            .map(|t| line(t, &turn.turn_id))
            .collect();
        let entry_id = turn.entry_ids.first().cloned();
        let question = match &entry_id {
            None => None,
            Some(id) => {
                if !questions.contains_key(id) {
                    let found = match id.parse() {
                        Ok(uuid) => console
                            .engine
                            .kb()
                            .get(EntryId(uuid))
                            .await?
                            .map(|e| e.content.question),
                        Err(_) => None,
                    };
                    questions.insert(id.clone(), found);
                }
                questions[id].clone()
            }
        };
        items.push(serde_json::json!({
            "at": super::unix_time(turn.at),
            "channel": turn.channel,
            "region": turn.region,
            "text": turn.text,
            "entry_id": entry_id,
            "entry_question": question,
            "conversation": around,
        }));
    }
    console.page(
        &user,
        "feedback.html",
        serde_json::json!({ "items": items, "total": total, "shown": items.len() }),
    )
}

/// An entry's ratings from the turn log: how often it answered, 👍, 👎,
/// the share of 👍, and the latest questions rated 👎.
pub(super) async fn satisfaction(
    console: &Console,
    entry_id: EntryId,
) -> Result<serde_json::Value, ConsoleError> {
    let turns: Vec<TurnRecord> = console
        .engine
        .turns()
        .find(&[("entry_ids", &entry_id.to_string())])
        .await
        .map_err(unavailable)?
        .into_iter()
        .filter(|t| t.reply_kind == "answer")
        .collect();
    let rated = |rating| turns.iter().filter(move |t| t.feedback == Some(rating));
    let up = rated(Rating::Up).count();
    let down = rated(Rating::Down).count();
    let negative: Vec<serde_json::Value> = rated(Rating::Down)
        .rev()
        .take(20)
        .map(|t| {
            serde_json::json!({ "text": t.text, "channel": t.channel, "at": super::unix_time(t.at) })
        })
        .collect();
    let total = up + down;
    Ok(serde_json::json!({
        "shown": turns.len(),
        "up": up,
        "down": down,
        "rate": (total > 0).then(|| format!("{:.0}%", 100.0 * up as f64 / total as f64)),
        "negative": negative,
    }))
}
