//! The embedded job queue: one payload-only collection of the point store
//! in the data directory.
//!
//! Invariant: one process consumes it. The embedded data directory is
//! locked to one process, so leases live in this process's memory; a
//! restart forgets them, which makes every job that was running when the
//! process died due again at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kb::store::{
    CollectionSpec, Condition, Filter, NewPoint, Order, PointStore, Record, scroll_all, to_payload,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Job, JobError, JobQueue, Leased, QueueDepth, Task};

const JOBS: &str = "jobs";
const READY: &str = "ready";
const DEAD: &str = "dead";

/// A job as stored: the job, whether it is waiting or dead, and when it is
/// due.
#[derive(Serialize, Deserialize)]
struct StoredJob {
    #[serde(flatten)]
    job: Job,
    state: String,
    #[serde(with = "time::serde::rfc3339")]
    due_at: OffsetDateTime,
    /// Runs started (claims); those beyond the job's recorded attempts
    /// died with their process.
    #[serde(default)]
    starts: u32,
}

/// Jobs in the embedded point store.
pub struct StoreJobQueue {
    store: Arc<dyn PointStore>,
    /// Jobs claimed by this process's workers, until when.
    leases: Mutex<HashMap<Uuid, Instant>>,
    enqueued: Notify,
}

impl StoreJobQueue {
    /// Opens the jobs collection, creating it if missing.
    pub async fn open(store: Arc<dyn PointStore>) -> Result<Self, JobError> {
        store
            .ensure_collection(&CollectionSpec {
                keyword_fields: vec!["state"],
                datetime_fields: vec!["due_at"],
                ..CollectionSpec::payload_only(JOBS)
            })
            .await?;
        Ok(Self {
            store,
            leases: Mutex::new(HashMap::new()),
            enqueued: Notify::new(),
        })
    }

    async fn write(&self, job: &Job, state: &str, due_at: OffsetDateTime) -> Result<(), JobError> {
        // Every outcome resets the starts to the attempts it recorded.
        self.write_stored(StoredJob {
            job: job.clone(),
            state: state.to_owned(),
            due_at,
            starts: job.attempts,
        })
        .await
    }

    async fn write_stored(&self, stored: StoredJob) -> Result<(), JobError> {
        let id = stored.job.id;
        self.store
            .upsert(
                JOBS,
                vec![NewPoint {
                    id,
                    dense: None,
                    lexical: None,
                    payload: to_payload(&stored),
                }],
            )
            .await?;
        Ok(())
    }

    fn unlease(&self, id: Uuid) {
        self.leases.lock().remove(&id);
    }

    fn due_filter(now: OffsetDateTime) -> Filter {
        Filter::must(Condition::keyword("state", READY)).and(Condition::Before {
            field: "due_at",
            moment: now + Duration::from_millis(1),
        })
    }
}

fn decode(record: Record) -> Result<StoredJob, JobError> {
    serde_json::from_value(serde_json::Value::Object(record.payload))
        .map_err(|e| JobError::Corrupt(e.to_string()))
}

#[async_trait::async_trait]
impl JobQueue for StoreJobQueue {
    fn kind(&self) -> &'static str {
        "store"
    }

    async fn enqueue(&self, task: Task) -> Result<Uuid, JobError> {
        let job = Job::new(task);
        self.write(&job, READY, OffsetDateTime::now_utc()).await?;
        self.enqueued.notify_one();
        Ok(job.id)
    }

    async fn claim(&self, lease: Duration) -> Result<Option<Leased>, JobError> {
        let leased_now = self.leases.lock().len();
        let oldest_first = Order {
            field: "due_at",
            descending: false,
        };
        let candidates = self
            .store
            .first_by(
                JOBS,
                Self::due_filter(OffsetDateTime::now_utc()),
                oldest_first,
                leased_now + 16,
            )
            .await?;
        let mut chosen = None;
        {
            let now = Instant::now();
            let mut leases = self.leases.lock();
            for record in candidates {
                let free = leases.get(&record.id).is_none_or(|until| *until <= now);
                if !free {
                    continue;
                }
                match decode(record) {
                    Ok(stored) => {
                        leases.insert(stored.job.id, now + lease);
                        chosen = Some(stored);
                        break;
                    }
                    Err(error) => tracing::error!(%error, "jobs: unreadable job skipped"),
                }
            }
        }
        let Some(mut stored) = chosen else {
            return Ok(None);
        };
        // Recorded before the run, so a run its process does not survive
        // still counts.
        let lost_runs = stored.starts.saturating_sub(stored.job.attempts);
        stored.starts += 1;
        let job = stored.job.clone();
        if let Err(error) = self.write_stored(stored).await {
            self.unlease(job.id);
            return Err(error);
        }
        Ok(Some(Leased {
            receipt: job.id.to_string(),
            job,
            lost_runs,
        }))
    }

    async fn complete(&self, leased: &Leased) -> Result<(), JobError> {
        self.store.delete(JOBS, vec![leased.job.id]).await?;
        self.unlease(leased.job.id);
        Ok(())
    }

    async fn retry(&self, leased: &Leased, error: &str, delay: Duration) -> Result<(), JobError> {
        let job = leased.job.after_failure(error);
        self.write(&job, READY, OffsetDateTime::now_utc() + delay)
            .await?;
        self.unlease(job.id);
        Ok(())
    }

    async fn bury(&self, leased: &Leased, error: &str) -> Result<(), JobError> {
        let mut job = leased.job.after_failure(error);
        job.buried_at = Some(super::now());
        self.write(&job, DEAD, OffsetDateTime::now_utc()).await?;
        self.unlease(job.id);
        Ok(())
    }

    async fn dead(&self) -> Result<Vec<Job>, JobError> {
        let records = scroll_all(
            &*self.store,
            JOBS,
            Filter::must(Condition::keyword("state", DEAD)),
        )
        .await?;
        let mut jobs = records
            .into_iter()
            .map(|record| decode(record).map(|stored| stored.job))
            .collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by(|a, b| b.buried_at.cmp(&a.buried_at).then(b.id.cmp(&a.id)));
        Ok(jobs)
    }

    async fn revive(&self, id: Uuid) -> Result<bool, JobError> {
        let Some(record) = self.store.get(JOBS, vec![id]).await?.pop() else {
            return Ok(false);
        };
        let stored = decode(record)?;
        if stored.state != DEAD {
            return Ok(false);
        }
        let mut job = stored.job;
        job.attempts = 0;
        job.buried_at = None;
        self.write(&job, READY, OffsetDateTime::now_utc()).await?;
        self.enqueued.notify_one();
        Ok(true)
    }

    async fn depth(&self) -> Result<QueueDepth, JobError> {
        let waiting = self
            .store
            .count(JOBS, Filter::must(Condition::keyword("state", READY)))
            .await?;
        let due = self
            .store
            .count(JOBS, Self::due_filter(OffsetDateTime::now_utc()))
            .await?;
        let dead = self
            .store
            .count(JOBS, Filter::must(Condition::keyword("state", DEAD)))
            .await?;
        let now = Instant::now();
        let running = self
            .leases
            .lock()
            .values()
            .filter(|until| **until > now)
            .count();
        Ok(QueueDepth {
            ready: due.saturating_sub(running),
            delayed: waiting.saturating_sub(due),
            running,
            dead,
        })
    }

    async fn wait_for_work(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.enqueued.notified()).await;
    }
}
