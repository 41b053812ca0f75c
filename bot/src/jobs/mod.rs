//! Background work that must outlive the process that started it: pushes
//! of stored notices, broadcasts, answers that missed a channel's reply
//! budget and the later parts of long replies.
//!
//! - A [`Task`] is enqueued durably (a [`JobQueue`] returns only once the
//!   job is stored), then claimed by one worker for a lease, run, and
//!   completed, retried later with a growing delay, or buried in the
//!   dead-letter list after [`RetryPolicy::max_attempts`].
//! - Two queues, chosen with the session store: [`StoreJobQueue`] keeps
//!   jobs in the data directory's point store (the embedded default, one
//!   process), [`RedisJobQueue`] in a Redis stream with a consumer group
//!   (server mode, every instance a consumer; a dead instance's jobs are
//!   claimed by another once their lease runs out).
//! - Delivery is at least once: a process killed while a job runs leaves
//!   it to be run again. Every task is written so that running it twice
//!   has the effect of running it once (see [`Task`]).
//!
//! Publishing (and its embedding) and HNSW optimisation are not jobs:
//! publishing embeds inside the knowledge base's write journal, so an
//! acknowledged publish is already complete; optimisation is derived from
//! the stored points, and the index upkeep ([`crate::upkeep`]) runs it
//! when `serve` starts and after writes.

mod redis;
mod store;
mod worker;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webhooks::message::{Incoming, UserKey};

pub use self::redis::RedisJobQueue;
pub use self::store::StoreJobQueue;
pub use self::worker::{WorkerConfig, Workers, spawn_workers};

/// One piece of background work. Each variant says why running it twice
/// does no harm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Pushes a stored notice through its user's channel. A notice already
    /// delivered (with a reply, or by an earlier run) is gone from the
    /// notices store, so a second run finds nothing to send.
    PushNotice {
        /// The user's storage key.
        user: String,
        /// The notice.
        notice: Uuid,
    },
    /// Sends the next chunk of a broadcast, after the subscriber `after`
    /// (by storage key), then enqueues the chunk after it. Each subscriber
    /// is claimed once per broadcast before their message is stored.
    Broadcast {
        /// The broadcast's id.
        id: String,
        /// The last subscriber of the previous chunk.
        after: Option<String>,
    },
    /// Answers a message whose reply missed its channel's budget and
    /// pushes the answer. The engine's dedup by message id makes a second
    /// run replay the stored reply rather than answer again.
    LateReply {
        /// The message as the channel received it.
        message: Incoming,
        /// The channel's limit on one pushed text, in bytes.
        limit_bytes: usize,
    },
    /// Pushes texts in order (the later parts of a long reply). Each part
    /// is claimed under `key` before it is sent.
    PushTexts {
        /// To whom.
        user: UserKey,
        /// The texts, in order.
        texts: Vec<String>,
        /// What the parts are claimed under (the channel's message id).
        key: String,
    },
}

impl Task {
    /// The variant's name, for logs and metrics (never the contents, which
    /// may hold what a user wrote).
    pub fn kind(&self) -> &'static str {
        match self {
            Task::PushNotice { .. } => "push_notice",
            Task::Broadcast { .. } => "broadcast",
            Task::LateReply { .. } => "late_reply",
            Task::PushTexts { .. } => "push_texts",
        }
    }
}

/// A task with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Identity, kept across retries.
    pub id: Uuid,
    /// The work.
    pub task: Task,
    /// Runs that failed so far.
    pub attempts: u32,
    /// When it was first enqueued, Unix seconds.
    pub enqueued_at: i64,
    /// Why the last run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was buried, Unix seconds (dead letters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buried_at: Option<i64>,
}

impl Job {
    /// A new job for `task`.
    pub fn new(task: Task) -> Self {
        Self {
            id: Uuid::now_v7(),
            task,
            attempts: 0,
            enqueued_at: now(),
            last_error: None,
            buried_at: None,
        }
    }

    /// The job after a failed run: one attempt more, and why.
    fn after_failure(&self, error: &str) -> Self {
        let mut job = self.clone();
        job.attempts += 1;
        job.last_error = Some(error.to_owned());
        job
    }

    fn encode(&self) -> String {
        // Strings, numbers and UUIDs always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }

    fn decode(text: &str) -> Result<Self, JobError> {
        serde_json::from_str(text).map_err(|e| JobError::Corrupt(e.to_string()))
    }
}

/// A job claimed by one worker until it is completed, retried or buried,
/// or its lease runs out.
#[derive(Debug, Clone)]
pub struct Leased {
    /// The job.
    pub job: Job,
    /// Earlier runs that started and never recorded an outcome: their
    /// process died (or hung past the lease) while running this job.
    pub lost_runs: u32,
    /// The queue's handle on this delivery (a stream entry id in Redis).
    receipt: String,
}

/// How many jobs are where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// Due and waiting for a worker.
    pub ready: usize,
    /// Waiting for their retry time.
    pub delayed: usize,
    /// Claimed by a worker now.
    pub running: usize,
    /// Buried after their last attempt.
    pub dead: usize,
}

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Redis failed or timed out.
    #[error("job queue (Redis): {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The point store failed.
    #[error("job queue (store): {0}")]
    Store(#[from] kb::store::StoreError),
    /// A stored job could not be read back.
    #[error("corrupt job: {0}")]
    Corrupt(String),
}

/// A durable queue of background jobs.
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// The queue's kind, for logs.
    fn kind(&self) -> &'static str;

    /// Stores a job to run as soon as a worker is free; durable on return.
    async fn enqueue(&self, task: Task) -> Result<Uuid, JobError>;

    /// Claims the oldest due job for `lease`, or none if nothing is due.
    /// A job held longer than `lease` without an outcome is due again:
    /// every worker of a deployment must use the same lease, since Redis
    /// measures it when the job is taken over, not when it was claimed.
    async fn claim(&self, lease: Duration) -> Result<Option<Leased>, JobError>;

    /// Removes a job that ran to its end.
    async fn complete(&self, leased: &Leased) -> Result<(), JobError>;

    /// Records a failed run and makes the job due again after `delay`.
    async fn retry(&self, leased: &Leased, error: &str, delay: Duration) -> Result<(), JobError>;

    /// Moves a job to the dead-letter list, where it stays until revived.
    async fn bury(&self, leased: &Leased, error: &str) -> Result<(), JobError>;

    /// The dead letters, most recently buried first.
    async fn dead(&self) -> Result<Vec<Job>, JobError>;

    /// Moves a dead letter back to the queue with its attempts reset;
    /// false when there is no such dead letter.
    async fn revive(&self, id: Uuid) -> Result<bool, JobError>;

    /// How many jobs are where.
    async fn depth(&self) -> Result<QueueDepth, JobError>;

    /// Waits up to `at_most` for a job enqueued by this process, so an idle
    /// worker starts at once on local work and polls for the rest.
    async fn wait_for_work(&self, at_most: Duration);
}

/// When a failed job runs again, and when it is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Runs before a job is buried.
    pub max_attempts: u32,
    /// The delay after the first failure; each later one is four times
    /// the one before, up to `max_delay`.
    pub first_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Six runs over about 40 minutes: a channel's API that is down for
    /// longer than that is an incident, and its jobs wait in the dead
    /// letters for an operator rather than retry forever.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            first_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(30 * 60),
        }
    }
}

impl RetryPolicy {
    /// The delay before the run after `failures` failed runs, or `None`
    /// when the job is to be buried.
    pub fn delay_after(&self, failures: u32) -> Option<Duration> {
        if failures >= self.max_attempts {
            return None;
        }
        let exponent = failures.saturating_sub(1).min(16);
        let delay = self
            .first_delay
            .saturating_mul(4u32.saturating_pow(exponent));
        Some(delay.min(self.max_delay))
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_grow_fourfold_up_to_the_cap_then_stop() {
        let policy = RetryPolicy::default();
        let delays: Vec<Option<u64>> = (1..=7)
            .map(|failures| policy.delay_after(failures).map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            delays,
            vec![
                Some(5),
                Some(20),
                Some(80),
                Some(320),
                Some(1280),
                None,
                None
            ]
        );
        let capped = RetryPolicy {
            max_attempts: 40,
            ..policy
        };
        assert_eq!(capped.delay_after(30), Some(Duration::from_secs(30 * 60)));
    }

    #[test]
    fn a_job_reads_back_as_written() {
        let job = Job::new(Task::PushTexts {
            user: UserKey::new(webhooks::message::Channel::Wechat, "o-1"),
            texts: vec!["第一段".into(), "第二段".into()],
            key: "m-1".into(),
        });
        assert_eq!(Job::decode(&job.encode()).expect("decodes"), job);
        assert!(matches!(Job::decode("{}"), Err(JobError::Corrupt(_))));
    }
}
