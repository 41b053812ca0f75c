//! The turn log: every question, how it was routed, what was answered, how
//! fast, and how the user rated it. Editors' analytics and the unanswered
//! queue are built from it.
//!
//! Turns live in the same point store as the knowledge base (a payload-only
//! collection `turns`, one point per turn, time-ordered ids), so the
//! embedded default keeps them in its data directory and server mode keeps
//! them on the Qdrant cluster: no other store is needed.
//!
//! Writes are batched: the engine hands a turn to a background writer and
//! replies at once; the writer stores whatever arrived within
//! [`BATCH_WINDOW`] in one durable upsert. A crash can therefore lose the
//! last [`BATCH_WINDOW`] of turns, never a knowledge-base change. Anything
//! that reads a turn back (feedback, "通知我") first flushes the writer.
//!
//! Readers that count whole days (reports) may keep a *day summary* here:
//! an opaque payload per (kind, China day) in the collection
//! `turn_day_summaries`. The log keeps them honest: a write of a turn whose
//! day is already over (a batch that crossed midnight, a backfill) deletes
//! that day's summaries, so a reader never trusts a summary older than the
//! day's last turn. Rewriting a turn in place ([`TurnLog::update`], for a
//! rating or "通知我") does not: summaries must not hold those fields.
//!
//! The log does not grow forever: retention ([`crate::retention`]) deletes
//! the unrated turns of days past the retention period once their report
//! tallies are stored.

use std::sync::Arc;
use std::time::Duration;

use kb::store::{CollectionSpec, Condition, Filter, NewPoint, Order, PointStore, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use webhooks::message::Rating;

const TURNS: &str = "turns";
const SUMMARIES: &str = "turn_day_summaries";
/// How long the writer waits to gather a batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// The most turns in one write.
const MAX_BATCH: usize = 512;
/// The look-back windows of [`TurnLog::recent`], in days.
const RECENT_WINDOWS: [i64; 4] = [7, 31, 92, 366];
/// Turns waiting for the writer before the engine waits for it.
const QUEUE: usize = 8192;

/// One logged turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// The turn's id (a time-ordered UUID).
    pub turn_id: String,
    /// When the message arrived, Unix seconds.
    pub at: i64,
    /// The day it arrived, `YYYY-MM-DD` in China time, for reports.
    pub day: String,
    /// The channel.
    pub channel: String,
    /// The user (`channel:id`).
    pub user: String,
    /// What kind of message it was (`text`, `voice`, `image`, …).
    pub message_kind: String,
    /// What the user wrote, or what voice recognition heard.
    pub text: String,
    /// The question searched for, when follow-up resolution changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_query: Option<String>,
    /// The route taken.
    pub route: String,
    /// The router's confidence.
    pub route_confidence: f32,
    /// The kind of reply given.
    pub reply_kind: String,
    /// Entries answered with or offered.
    pub entry_ids: Vec<String>,
    /// The top retrieval confidence.
    pub confidence: f32,
    /// Time from arrival to reply, in milliseconds.
    pub latency_ms: f32,
    /// The user's region, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Whether the user asked to be told when an answer is published.
    #[serde(default)]
    pub notify: bool,
    /// The user's rating of the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Rating>,
}

/// Errors of the turn log.
#[derive(Debug, thiserror::Error)]
pub enum TurnLogError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer task has stopped.
    #[error("the turn log writer has stopped")]
    WriterStopped,
    /// No such turn of this user.
    #[error("no turn {0} of this user")]
    NotFound(String),
    /// A stored turn could not be read back.
    #[error("corrupt turn {0}: {1}")]
    Corrupt(String, String),
}

enum Command {
    Write(Box<TurnRecord>),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// The turn log.
#[derive(Clone)]
pub struct TurnLog {
    store: Arc<dyn PointStore>,
    sender: mpsc::Sender<Command>,
}

fn spec() -> CollectionSpec {
    CollectionSpec {
        keyword_fields: vec![
            "channel",
            "user",
            "route",
            "reply_kind",
            "day",
            "region",
            "entry_ids",
            "feedback",
        ],
        integer_fields: vec!["at"],
        ..CollectionSpec::payload_only(TURNS)
    }
}

fn summaries_spec() -> CollectionSpec {
    CollectionSpec {
        keyword_fields: vec!["kind", "day"],
        ..CollectionSpec::payload_only(SUMMARIES)
    }
}

/// The one point a (kind, day) summary lives at, so saving twice replaces.
fn summary_id(kind: &str, day: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("wenke:{kind}:{day}").as_bytes(),
    )
}

/// Deletes the summaries of the days among `days` that are over (before
/// today in China): their turns just changed.
async fn forget_finished_days(
    store: &dyn PointStore,
    days: impl IntoIterator<Item = String>,
) -> Result<(), StoreError> {
    let today = crate::china::date_text(crate::china::today());
    let mut finished: Vec<String> = days.into_iter().filter(|day| *day < today).collect();
    if finished.is_empty() {
        return Ok(());
    }
    finished.sort();
    finished.dedup();
    store
        .delete_matching(
            SUMMARIES,
            Filter::must(Condition::KeywordIn {
                field: "day",
                values: finished,
            }),
        )
        .await
}

/// Turns without a 👍 or 👎.
fn unrated() -> Filter {
    Filter {
        must: Vec::new(),
        must_not: vec![Condition::KeywordIn {
            field: "feedback",
            values: vec!["up".into(), "down".into()],
        }],
    }
}

fn point(record: &TurnRecord) -> Option<NewPoint> {
    let id = Uuid::parse_str(&record.turn_id).ok()?;
    let serde_json::Value::Object(payload) = serde_json::to_value(record).ok()? else {
        return None;
    };
    Some(NewPoint {
        id,
        dense: None,
        lexical: None,
        payload,
    })
}

impl TurnLog {
    /// Opens the log on a store and starts its writer on the current
    /// Tokio runtime.
    pub async fn open(store: Arc<dyn PointStore>) -> Result<Self, TurnLogError> {
        store.ensure_collection(&spec()).await?;
        store.ensure_collection(&summaries_spec()).await?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(Arc::clone(&store), receiver));
        Ok(Self { store, sender })
    }

    /// A new turn id: time-ordered, so scrolling the log reads it in order.
    pub fn new_turn_id() -> String {
        Uuid::now_v7().to_string()
    }

    /// Queues a turn for writing.
    pub async fn record(&self, record: TurnRecord) -> Result<(), TurnLogError> {
        self.sender
            .send(Command::Write(Box::new(record)))
            .await
            .map_err(|_| TurnLogError::WriterStopped)
    }

    /// How many turns (and flush requests) wait in the writer's queue.
    pub fn pending(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// Waits until every turn queued so far is durable.
    pub async fn flush(&self) -> Result<(), TurnLogError> {
        let (done, wait) = oneshot::channel();
        self.sender
            .send(Command::Flush(done))
            .await
            .map_err(|_| TurnLogError::WriterStopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(TurnLogError::Store(StoreError::Storage {
                collection: TURNS.into(),
                message,
            })),
            Err(_) => Err(TurnLogError::WriterStopped),
        }
    }

    /// One turn of one user.
    pub async fn get(&self, user: &str, turn_id: &str) -> Result<TurnRecord, TurnLogError> {
        let not_found = || TurnLogError::NotFound(turn_id.to_owned());
        let id = Uuid::parse_str(turn_id).map_err(|_| not_found())?;
        self.flush().await?;
        let record = self
            .store
            .get(TURNS, vec![id])
            .await?
            .into_iter()
            .next()
            .ok_or_else(not_found)?;
        let turn: TurnRecord = serde_json::from_value(serde_json::Value::Object(record.payload))
            .map_err(|e| TurnLogError::Corrupt(turn_id.to_owned(), e.to_string()))?;
        // A user may only see and rate their own turns.
        if turn.user != user {
            return Err(not_found());
        }
        Ok(turn)
    }

    /// Changes one turn of one user and stores it durably.
    pub async fn update(
        &self,
        user: &str,
        turn_id: &str,
        change: impl FnOnce(&mut TurnRecord),
    ) -> Result<TurnRecord, TurnLogError> {
        let mut turn = self.get(user, turn_id).await?;
        change(&mut turn);
        let point = point(&turn).ok_or_else(|| TurnLogError::NotFound(turn_id.to_owned()))?;
        self.store.upsert(TURNS, vec![point]).await?;
        Ok(turn)
    }

    /// Turns matching every `field = value` pair given (after a flush), in
    /// time order; for tests and the unanswered queue.
    pub async fn find(
        &self,
        conditions: &[(&'static str, &str)],
    ) -> Result<Vec<TurnRecord>, TurnLogError> {
        let mut filter = Filter::default();
        for (field, value) in conditions {
            filter = filter.and(Condition::keyword(field, *value));
        }
        self.scan(filter).await
    }

    /// Turns of the given China days (`YYYY-MM-DD`, as [`TurnRecord::day`]),
    /// after a flush, in time order; for reports.
    pub async fn on_days(&self, days: Vec<String>) -> Result<Vec<TurnRecord>, TurnLogError> {
        if days.is_empty() {
            return Ok(Vec::new());
        }
        self.scan(Filter::must(Condition::KeywordIn {
            field: "day",
            values: days,
        }))
        .await
    }

    /// The newest turns matching every `field = value` pair, looking back
    /// over widening windows of China days (a week, a month, a quarter, a
    /// year) until at least `wanted` are found, so pages over a large log
    /// read only its recent part. Time order, oldest first.
    ///
    /// Only turns `keep` accepts count towards `wanted` and are returned.
    pub async fn recent(
        &self,
        conditions: &[(&'static str, &str)],
        wanted: usize,
        keep: impl Fn(&TurnRecord) -> bool,
    ) -> Result<Vec<TurnRecord>, TurnLogError> {
        let today = crate::china::today();
        let mut found = Vec::new();
        for days_back in RECENT_WINDOWS {
            let days: Vec<String> = (0..days_back)
                .filter_map(|back| today.checked_sub(time::Duration::days(back)))
                .map(crate::china::date_text)
                .collect();
            let mut filter = Filter::must(Condition::KeywordIn {
                field: "day",
                values: days,
            });
            for (field, value) in conditions {
                filter = filter.and(Condition::keyword(field, *value));
            }
            found = self.scan(filter).await?;
            found.retain(|turn| keep(turn));
            if found.len() >= wanted {
                break;
            }
        }
        Ok(found)
    }

    /// The rated turns (👍 or 👎) of the given China days, after a flush,
    /// in time order. Ratings arrive any time after a turn, so readers
    /// that summarise days read them here, live.
    pub async fn rated_on_days(&self, days: Vec<String>) -> Result<Vec<TurnRecord>, TurnLogError> {
        if days.is_empty() {
            return Ok(Vec::new());
        }
        self.scan(
            Filter::must(Condition::KeywordIn {
                field: "day",
                values: days,
            })
            .and(Condition::KeywordIn {
                field: "feedback",
                values: vec!["up".into(), "down".into()],
            }),
        )
        .await
    }

    /// The stored summaries of `kind` for the given days, by day, after a
    /// flush (so a queued late turn has already deleted what it outdates).
    /// Days without one are absent.
    pub async fn summaries(
        &self,
        kind: &str,
        days: &[String],
    ) -> Result<
        std::collections::HashMap<String, serde_json::Map<String, serde_json::Value>>,
        TurnLogError,
    > {
        if days.is_empty() {
            return Ok(Default::default());
        }
        self.flush().await?;
        let ids = days.iter().map(|day| summary_id(kind, day)).collect();
        let records = self.store.get(SUMMARIES, ids).await?;
        Ok(records
            .into_iter()
            .filter_map(|record| {
                let day = record.payload.get("day")?.as_str()?.to_owned();
                let body = record.payload.get("summary")?.as_object()?.clone();
                Some((day, body))
            })
            .collect())
    }

    /// Stores the summary of `kind` for a day that is over, replacing any
    /// earlier one. A summary of today or later is refused silently: the
    /// day's turns are still coming.
    pub async fn save_summary(
        &self,
        kind: &str,
        day: &str,
        summary: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), TurnLogError> {
        if *day >= *crate::china::date_text(crate::china::today()) {
            return Ok(());
        }
        let mut payload = serde_json::Map::new();
        payload.insert("kind".into(), kind.into());
        payload.insert("day".into(), day.into());
        payload.insert("summary".into(), summary.into());
        let point = NewPoint {
            id: summary_id(kind, day),
            dense: None,
            lexical: None,
            payload,
        };
        self.store.upsert(SUMMARIES, vec![point]).await?;
        Ok(())
    }

    /// Deletes the summaries of the finished days among `days`. For tools
    /// that write turns into the log's collection directly (the console
    /// benchmark); turns written through [`TurnLog::record`] do this
    /// themselves.
    pub async fn forget_summaries(&self, days: Vec<String>) -> Result<(), TurnLogError> {
        forget_finished_days(self.store.as_ref(), days).await?;
        Ok(())
    }

    /// The China day of the oldest turn no one rated, after a flush; `None`
    /// when every stored turn is rated (or there are none).
    pub async fn oldest_unrated_day(&self) -> Result<Option<String>, TurnLogError> {
        self.flush().await?;
        let oldest = self
            .store
            .first_by(
                TURNS,
                unrated(),
                Order {
                    field: "at",
                    descending: false,
                },
                1,
            )
            .await?;
        Ok(oldest
            .into_iter()
            .next()
            .and_then(|record| Some(record.payload.get("day")?.as_str()?.to_owned())))
    }

    /// Deletes the turns of `day` (a China day, `YYYY-MM-DD`) that no one
    /// rated, after a flush, and returns how many there were. Rated turns
    /// stay: reports read ratings live, and the console lists them.
    /// For retention ([`crate::retention`]), which stores the day's report
    /// tally first; the day's summaries are left alone.
    pub async fn forget_unrated(&self, day: &str) -> Result<usize, TurnLogError> {
        self.flush().await?;
        let mut filter = unrated();
        filter.must.push(Condition::keyword("day", day));
        let count = self.store.count(TURNS, filter.clone()).await?;
        if count > 0 {
            self.store.delete_matching(TURNS, filter).await?;
        }
        Ok(count)
    }

    /// Rebuilds the log's storage after many deletions, so the memory and
    /// disk of deleted turns are given back (embedded store; a server
    /// compacts by itself). Blocks only a store thread, never the runtime.
    pub async fn compact(&self) -> Result<(), TurnLogError> {
        self.store.optimize(TURNS).await?;
        Ok(())
    }

    async fn scan(&self, filter: Filter) -> Result<Vec<TurnRecord>, TurnLogError> {
        self.flush().await?;
        let records = kb::store::scroll_all(self.store.as_ref(), TURNS, filter).await?;
        // Decoding a report's worth of turns takes milliseconds of CPU.
        let decode = move || {
            let mut turns: Vec<TurnRecord> = records
                .into_iter()
                .filter_map(|r| serde_json::from_value(serde_json::Value::Object(r.payload)).ok())
                .collect();
            turns.sort_by(|a: &TurnRecord, b: &TurnRecord| a.turn_id.cmp(&b.turn_id));
            turns
        };
        tokio::task::spawn_blocking(decode)
            .await
            .map_err(|e| TurnLogError::Corrupt("(decoding a scan)".into(), e.to_string()))
    }
}

/// The writer: gathers what arrives within a window and writes it at once.
/// A pending flush cuts the window short: then only what is already queued
/// joins the batch.
async fn write_batches(store: Arc<dyn PointStore>, mut receiver: mpsc::Receiver<Command>) {
    while let Some(first) = receiver.recv().await {
        let mut batch: Vec<NewPoint> = Vec::new();
        let mut days: Vec<String> = Vec::new();
        let mut flushes: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Write(record) => match point(&record) {
                    Some(point) => {
                        batch.push(point);
                        if days.last() != Some(&record.day) {
                            days.push(record.day.clone());
                        }
                    }
                    None => {
                        tracing::error!(turn = record.turn_id, "turn id is not a UUID; dropped")
                    }
                },
                Command::Flush(done) => flushes.push(done),
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            next = if flushes.is_empty() {
                tokio::time::timeout_at(deadline, receiver.recv())
                    .await
                    .ok()
                    .flatten()
            } else {
                receiver.try_recv().ok()
            };
        }
        let result = if batch.is_empty() {
            Ok(())
        } else {
            match store.upsert(TURNS, batch).await {
                Ok(()) => forget_finished_days(store.as_ref(), days)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        if let Err(message) = &result {
            tracing::error!(%message, "writing turns failed");
        }
        for done in flushes {
            let _ = done.send(result.clone());
        }
    }
}
