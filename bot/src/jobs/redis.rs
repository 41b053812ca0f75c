//! The server-mode job queue: a Redis stream read by one consumer group,
//! every `wenke` instance a consumer.
//!
//! - `{prefix}jobs`: the stream of due jobs (field `job`, the job as JSON).
//!   A claimed job stays in the group's pending list until it is
//!   acknowledged; one whose lease (idle time) runs out is claimed by the
//!   next worker that asks, on any instance (`XAUTOCLAIM`).
//! - `{prefix}jobs:delayed`: jobs waiting for their retry time, a sorted
//!   set by due time; moved to the stream when due.
//! - `{prefix}jobs:dead`: the dead letters, a hash by job id.
//!
//! Every move between the three (claim with promotion, retry, bury,
//! revive) is one Lua script or one `MULTI`, so a crash between its steps
//! cannot lose or duplicate a job.

use std::sync::LazyLock;
use std::time::Duration;

use redis::AsyncCommands;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{Job, JobError, JobQueue, Leased, QueueDepth, Task};

const GROUP: &str = "workers";

/// Moves due delayed jobs to the stream, then claims one job: first one
/// whose lease ran out, else a new one. Returns its entry id, the job and
/// how often the entry has been delivered (more than once: earlier
/// workers died with it).
static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, job in ipairs(due) do
  redis.call('XADD', KEYS[1], '*', 'job', job)
  redis.call('ZREM', KEYS[2], job)
end
local stale = redis.call('XAUTOCLAIM', KEYS[1], ARGV[2], ARGV[3], ARGV[4], '0-0', 'COUNT', 1)
local entry = stale[2][1]
if not entry then
  local fresh = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  if not fresh then return false end
  entry = fresh[1][2][1]
end
if not entry then return false end
local deliveries = 1
local pending = redis.call('XPENDING', KEYS[1], ARGV[2], entry[1], entry[1], 1)
if pending[1] then deliveries = pending[1][4] end
local fields = entry[2]
for i = 1, #fields, 2 do
  if fields[i] == 'job' then return {entry[1], fields[i + 1], deliveries} end
end
return {entry[1], '', deliveries}
",
    )
});

/// Moves a dead letter back to the stream, once.
static REVIVE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'job', ARGV[2])
return 1
",
    )
});

/// Jobs in Redis, shared by every instance.
pub struct RedisJobQueue {
    connection: redis::aio::ConnectionManager,
    stream: String,
    delayed: String,
    dead: String,
    /// This process's name in the consumer group.
    consumer: String,
    enqueued: Notify,
}

impl RedisJobQueue {
    /// Connects to `url`; every key starts with `prefix` (the session
    /// store's, so one setting names a deployment's keys).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, JobError> {
        // The session store's settings: a slow Redis fails a claim fast,
        // and the worker tries again.
        let mut connection = crate::session::connect_redis(url).await?;
        let stream = format!("{prefix}jobs");
        ensure_group(&mut connection, &stream).await?;
        Ok(Self {
            connection,
            delayed: format!("{stream}:delayed"),
            dead: format!("{stream}:dead"),
            stream,
            consumer: format!("{}-{}", std::process::id(), Uuid::new_v4().simple()),
            enqueued: Notify::new(),
        })
    }

    /// Acknowledges and deletes the stream entry, plus `also` in the same
    /// transaction.
    async fn settle(
        &self,
        leased: &Leased,
        also: impl FnOnce(&mut redis::Pipeline),
    ) -> Result<(), JobError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        also(&mut pipe);
        pipe.cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(&leased.receipt)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(&leased.receipt)
            .ignore();
        let () = pipe.query_async(&mut self.connection.clone()).await?;
        Ok(())
    }
}

/// Creates the consumer group (and the stream) unless it exists. From the
/// stream's start, so jobs enqueued before the group existed are read too.
async fn ensure_group(
    connection: &mut redis::aio::ConnectionManager,
    stream: &str,
) -> Result<(), redis::RedisError> {
    let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(connection)
        .await;
    match created {
        Err(error) if error.code() != Some("BUSYGROUP") => Err(error),
        _ => Ok(()),
    }
}

/// Whether Redis said the consumer group does not exist; inside a script
/// the code may come wrapped in the script's error.
fn is_no_group(error: &redis::RedisError) -> bool {
    error.code() == Some("NOGROUP") || error.to_string().contains("NOGROUP")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

#[async_trait::async_trait]
impl JobQueue for RedisJobQueue {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn enqueue(&self, task: Task) -> Result<Uuid, JobError> {
        let job = Job::new(task);
        let _: String = self
            .connection
            .clone()
            .xadd(&self.stream, "*", &[("job", job.encode())])
            .await?;
        self.enqueued.notify_one();
        Ok(job.id)
    }

    async fn claim(&self, lease: Duration) -> Result<Option<Leased>, JobError> {
        let invoke = || async {
            let mut connection = self.connection.clone();
            CLAIM
                .key(&self.stream)
                .key(&self.delayed)
                .arg(now_millis())
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(millis(lease))
                .invoke_async::<Option<(String, String, u32)>>(&mut connection)
                .await
        };
        let claimed = match invoke().await {
            // Redis lost its data (a restart without persistence, a
            // flush): the group went with the stream. Jobs enqueued since
            // are in a new stream without a group; make one and go on.
            Err(error) if is_no_group(&error) => {
                tracing::warn!("the job queue's consumer group was gone; created it again");
                ensure_group(&mut self.connection.clone(), &self.stream).await?;
                invoke().await?
            }
            claimed => claimed?,
        };
        let Some((receipt, text, deliveries)) = claimed else {
            return Ok(None);
        };
        match Job::decode(&text) {
            Ok(job) => Ok(Some(Leased {
                job,
                lost_runs: deliveries.saturating_sub(1),
                receipt,
            })),
            Err(error) => {
                // Keep the bytes for an operator rather than drop them,
                // and take the entry out of the stream so it is not
                // claimed forever.
                let dead_key = format!("corrupt-{receipt}");
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hset(&self.dead, &dead_key, &text)
                    .ignore()
                    .cmd("XACK")
                    .arg(&self.stream)
                    .arg(GROUP)
                    .arg(&receipt)
                    .ignore()
                    .cmd("XDEL")
                    .arg(&self.stream)
                    .arg(&receipt)
                    .ignore();
                let () = pipe.query_async(&mut self.connection.clone()).await?;
                Err(error)
            }
        }
    }

    async fn complete(&self, leased: &Leased) -> Result<(), JobError> {
        self.settle(leased, |_| {}).await
    }

    async fn retry(&self, leased: &Leased, error: &str, delay: Duration) -> Result<(), JobError> {
        let job = leased.job.after_failure(error);
        let due = now_millis().saturating_add(millis(delay));
        let text = job.encode();
        self.settle(leased, |pipe| {
            pipe.zadd(&self.delayed, text, due).ignore();
        })
        .await
    }

    async fn bury(&self, leased: &Leased, error: &str) -> Result<(), JobError> {
        let mut job = leased.job.after_failure(error);
        job.buried_at = Some(super::now());
        let text = job.encode();
        self.settle(leased, |pipe| {
            pipe.hset(&self.dead, job.id.to_string(), text).ignore();
        })
        .await
    }

    async fn dead(&self) -> Result<Vec<Job>, JobError> {
        let texts: Vec<String> = self.connection.clone().hvals(&self.dead).await?;
        let mut jobs = Vec::with_capacity(texts.len());
        for text in texts {
            match Job::decode(&text) {
                Ok(job) => jobs.push(job),
                Err(error) => tracing::warn!(%error, "jobs: unreadable dead letter"),
            }
        }
        jobs.sort_by(|a, b| b.buried_at.cmp(&a.buried_at).then(b.id.cmp(&a.id)));
        Ok(jobs)
    }

    async fn revive(&self, id: Uuid) -> Result<bool, JobError> {
        let field = id.to_string();
        let text: Option<String> = self.connection.clone().hget(&self.dead, &field).await?;
        let Some(text) = text else {
            return Ok(false);
        };
        let mut job = Job::decode(&text)?;
        job.attempts = 0;
        job.buried_at = None;
        let revived: i64 = REVIVE
            .key(&self.dead)
            .key(&self.stream)
            .arg(&field)
            .arg(job.encode())
            .invoke_async(&mut self.connection.clone())
            .await?;
        if revived == 1 {
            self.enqueued.notify_one();
        }
        Ok(revived == 1)
    }

    async fn depth(&self) -> Result<QueueDepth, JobError> {
        let mut pipe = redis::pipe();
        pipe.xlen(&self.stream)
            .cmd("XPENDING")
            .arg(&self.stream)
            .arg(GROUP)
            .zcard(&self.delayed)
            .hlen(&self.dead);
        let (in_stream, pending, delayed, dead): (usize, redis::Value, usize, usize) =
            pipe.query_async(&mut self.connection.clone()).await?;
        // XPENDING's summary starts with the number of pending entries.
        let running = match pending {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(count)) => usize::try_from(*count).unwrap_or(0),
                _ => 0,
            },
            _ => 0,
        };
        Ok(QueueDepth {
            ready: in_stream.saturating_sub(running),
            delayed,
            running,
            dead,
        })
    }

    async fn wait_for_work(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.enqueued.notified()).await;
    }
}
