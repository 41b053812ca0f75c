//! The workers that run jobs, and what each task does.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use webhooks::message::{Handler, PushError, UserKey};

use super::{Job, JobQueue, Leased, RetryPolicy, Task};
use crate::Engine;

/// How the workers run.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once by this process.
    pub workers: usize,
    /// How long a claimed job is this process's before another worker may
    /// take it; longer than any one run (a broadcast chunk is the longest).
    pub lease: Duration,
    /// How often an idle worker looks for jobs enqueued elsewhere.
    pub idle_poll: Duration,
    /// When failed jobs run again.
    pub retry: RetryPolicy,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            lease: Duration::from_secs(60),
            idle_poll: Duration::from_millis(500),
            retry: RetryPolicy::default(),
        }
    }
}

/// The running workers of one process. Dropping it leaves them running.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Stops claiming jobs and waits up to `grace` for the running ones;
    /// those still running then are dropped and run again later (from
    /// their lease's end in Redis, at the next start when embedded).
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
                tracing::warn!("jobs: a worker stopped with its job running; it runs again later");
            }
        }
    }
}

/// Starts `config.workers` workers on the engine's job queue.
pub fn spawn_workers(engine: Arc<Engine>, config: WorkerConfig) -> Workers {
    let (stop, stopped) = watch::channel(false);
    let tasks = (0..config.workers.max(1))
        .map(|_| {
            let engine = Arc::clone(&engine);
            let config = config.clone();
            let stopped = stopped.clone();
            tokio::spawn(async move { work(engine, config, stopped).await })
        })
        .collect();
    Workers { stop, tasks }
}

async fn work(engine: Arc<Engine>, config: WorkerConfig, mut stopped: watch::Receiver<bool>) {
    let queue = Arc::clone(engine.jobs());
    loop {
        if *stopped.borrow() {
            return;
        }
        let leased = match queue.claim(config.lease).await {
            Ok(Some(leased)) => leased,
            Ok(None) => {
                tokio::select! {
                    () = queue.wait_for_work(config.idle_poll) => {}
                    () = stop_requested(&mut stopped) => {}
                }
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "jobs: claim failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop_requested(&mut stopped) => {}
                }
                continue;
            }
        };
        run_one(&engine, &*queue, &config.retry, &leased).await;
    }
}

/// Resolves when [`Workers::stop`] is called; never when the [`Workers`]
/// were dropped instead (the workers then run as long as the runtime).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    if stopped.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs one claimed job and records its outcome.
async fn run_one(engine: &Arc<Engine>, queue: &dyn JobQueue, retry: &RetryPolicy, leased: &Leased) {
    let kind = leased.job.task.kind();
    let outcome = if leased.job.attempts + leased.lost_runs >= retry.max_attempts {
        // A job whose runs keep dying with their process (a panic that
        // aborts, memory exhaustion) is not run again.
        Err(TaskFailure::permanent(format!(
            "its process died during {} runs",
            leased.lost_runs
        )))
    } else {
        // A task of its own, so a panic fails this job instead of ending
        // the worker.
        let (engine, job) = (Arc::clone(engine), leased.job.clone());
        let run = tokio::spawn(async move { run_task(&engine, &job).await });
        // A stopped worker stops its run too, as a dead process would.
        let _stop_with_worker = AbortOnDrop(run.abort_handle());
        match run.await {
            Ok(outcome) => outcome,
            Err(error) => Err(TaskFailure::retry(format!("the run panicked: {error}"))),
        }
    };
    let (recorded, label) = match outcome {
        Ok(()) => (queue.complete(leased).await, "done"),
        Err(failure) => {
            let failures = leased.job.attempts + 1;
            match retry.delay_after(failures).filter(|_| failure.retryable) {
                Some(delay) => {
                    tracing::warn!(job = %leased.job.id, kind, failures, error = %failure.message, "jobs: run failed; retrying");
                    (
                        queue.retry(leased, &failure.message, delay).await,
                        "retried",
                    )
                }
                None => {
                    tracing::error!(job = %leased.job.id, kind, failures, error = %failure.message, "jobs: given up; see the dead letters");
                    (queue.bury(leased, &failure.message).await, "buried")
                }
            }
        }
    };
    crate::metrics::global().job(kind, label);
    if let Err(error) = recorded {
        tracing::warn!(job = %leased.job.id, %error, "jobs: outcome not recorded; the job runs again after its lease");
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a run failed.
#[derive(Debug)]
pub(crate) struct TaskFailure {
    message: String,
    /// False when running again cannot help (a corrupt record).
    retryable: bool,
}

impl TaskFailure {
    fn retry(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            retryable: true,
        }
    }

    fn permanent(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            retryable: false,
        }
    }
}

/// Runs one job's task once.
async fn run_task(engine: &Engine, job: &Job) -> Result<(), TaskFailure> {
    match &job.task {
        Task::PushNotice { user, notice } => push_notice(engine, user, *notice).await,
        Task::Broadcast { id, after } => {
            crate::outreach::send_chunk(engine, id, after.as_deref())
                .await
                .map_err(TaskFailure::retry)?;
            Ok(())
        }
        Task::LateReply {
            message,
            limit_bytes,
        } => {
            // The first runs wait for the answer the channel's own request
            // is computing; later ones assume that request died with its
            // process and answer afresh.
            let afresh = job.attempts >= 2;
            let reply = engine
                .late_reply(message.clone(), afresh)
                .await
                .map_err(TaskFailure::retry)?;
            let Some(reply) = reply else {
                return Err(TaskFailure::retry("the answer is not ready yet"));
            };
            let key = message
                .message_id
                .clone()
                .unwrap_or_else(|| job.id.to_string());
            let texts = reply.split_into_messages(*limit_bytes);
            push_texts(engine, &message.user, &texts, &key).await
        }
        Task::PushTexts { user, texts, key } => push_texts(engine, user, texts, key).await,
    }
}

async fn push_notice(engine: &Engine, user: &str, id: uuid::Uuid) -> Result<(), TaskFailure> {
    let Some(notice) = engine.notices().get(id).await.map_err(TaskFailure::retry)? else {
        // Delivered with a reply meanwhile.
        return Ok(());
    };
    let Some(user_key) = UserKey::from_storage_key(user) else {
        return Err(TaskFailure::permanent(
            "the notice's user key has no channel",
        ));
    };
    let Some(pusher) = engine.pusher(user_key.channel) else {
        // No push on this instance's channels: the notice waits for the
        // user's next message.
        return Ok(());
    };
    match pusher.push(&user_key, &notice.text).await {
        Ok(()) => {
            engine
                .notices()
                .delivered(vec![notice.id])
                .await
                .map_err(TaskFailure::retry)?;
            Ok(())
        }
        // Kept for the user's next message, as the channel requires.
        Err(PushError::WindowClosed) => Ok(()),
        Err(error @ PushError::Unavailable(_)) => Err(TaskFailure::retry(error)),
    }
}

/// How long a part's claim is kept: past the last retry of its job.
const PART_CLAIM_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Pushes texts in order, each claimed under `key` first so a second run
/// skips what the first sent. Texts the channel no longer accepts (its
/// send window closed) wait as notices for the user's next message.
async fn push_texts(
    engine: &Engine,
    user: &UserKey,
    texts: &[String],
    key: &str,
) -> Result<(), TaskFailure> {
    let Some(pusher) = engine.pusher(user.channel) else {
        return keep_for_next_contact(engine, user, texts).await;
    };
    let sessions = engine.sessions();
    for (index, text) in texts.iter().enumerate() {
        let part = format!("pushed:{}:{key}:{index}", user.storage_key());
        if !sessions
            .claim(&part, PART_CLAIM_TTL)
            .await
            .map_err(TaskFailure::retry)?
        {
            continue;
        }
        match pusher.push(user, text).await {
            Ok(()) => {}
            Err(PushError::WindowClosed) => {
                return keep_for_next_contact(engine, user, &texts[index..]).await;
            }
            Err(error @ PushError::Unavailable(_)) => {
                if let Err(release) = sessions.release(&part).await {
                    tracing::warn!(%release, "jobs: a part's claim stays; that part is skipped");
                }
                return Err(TaskFailure::retry(error));
            }
        }
    }
    Ok(())
}

async fn keep_for_next_contact(
    engine: &Engine,
    user: &UserKey,
    texts: &[String],
) -> Result<(), TaskFailure> {
    engine
        .undelivered(user, texts.to_vec())
        .await
        .map_err(TaskFailure::retry)
}
