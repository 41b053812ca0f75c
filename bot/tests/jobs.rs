//! The job queues' shared contract, run against both: the embedded queue
//! on a real qdrant-edge directory and the Redis queue on the local Redis
//! (`REDIS_URL`, default `redis://127.0.0.1:6379`).

use std::sync::Arc;
use std::time::Duration;

use bot::jobs::{JobQueue, QueueDepth, RedisJobQueue, StoreJobQueue, Task};
use kb::store::PointStore;
use kb::store::edge::EdgeStore;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn task(n: usize) -> Task {
    Task::PushNotice {
        user: format!("web:user-{n}"),
        notice: uuid::Uuid::new_v4(),
    }
}

/// Two views of one queue: a second one opened on the same storage stands
/// for a restarted process (embedded) or another instance (Redis).
struct Pair {
    first: Arc<dyn JobQueue>,
    reopen: Box<dyn Fn() -> Reopen + Send + Sync>,
}

type Reopen = std::pin::Pin<Box<dyn Future<Output = Arc<dyn JobQueue>> + Send>>;

async fn embedded() -> Pair {
    // Left in the temporary directory: qdrant-edge flushes on drop, after
    // the test body, and must still find its files.
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let store: Arc<dyn PointStore> = Arc::new(EdgeStore::open(&dir).expect("edge store"));
    let first = Arc::new(
        StoreJobQueue::open(Arc::clone(&store))
            .await
            .expect("queue"),
    );
    Pair {
        first,
        reopen: Box::new(move || {
            let store = Arc::clone(&store);
            Box::pin(async move {
                Arc::new(StoreJobQueue::open(store).await.expect("queue")) as Arc<dyn JobQueue>
            })
        }),
    }
}

async fn redis() -> Pair {
    let prefix = format!("wenke-test-{}:", uuid::Uuid::new_v4());
    let first = Arc::new(
        RedisJobQueue::connect(&redis_url(), &prefix)
            .await
            .expect("the local Redis (REDIS_URL, default redis://127.0.0.1:6379) must be running"),
    );
    Pair {
        first,
        reopen: Box::new(move || {
            let prefix = prefix.clone();
            Box::pin(async move {
                Arc::new(
                    RedisJobQueue::connect(&redis_url(), &prefix)
                        .await
                        .expect("redis"),
                ) as Arc<dyn JobQueue>
            })
        }),
    }
}

const LEASE: Duration = Duration::from_secs(30);

async fn claims_in_order_and_completes(queue: &dyn JobQueue) {
    let first = queue.enqueue(task(1)).await.expect("enqueue");
    let second = queue.enqueue(task(2)).await.expect("enqueue");
    let one = queue.claim(LEASE).await.expect("claim").expect("a job");
    let two = queue.claim(LEASE).await.expect("claim").expect("a job");
    assert_eq!((one.job.id, two.job.id), (first, second));
    assert_eq!((one.job.attempts, one.lost_runs), (0, 0));
    assert!(
        queue.claim(LEASE).await.expect("claim").is_none(),
        "both are leased"
    );
    assert_eq!(
        queue.depth().await.expect("depth"),
        QueueDepth {
            ready: 0,
            delayed: 0,
            running: 2,
            dead: 0
        }
    );
    queue.complete(&one).await.expect("complete");
    queue.complete(&two).await.expect("complete");
    assert_eq!(queue.depth().await.expect("depth"), QueueDepth::default());
    assert!(queue.claim(LEASE).await.expect("claim").is_none());
}

async fn retries_after_the_delay_then_buries_and_revives(queue: &dyn JobQueue) {
    let id = queue.enqueue(task(3)).await.expect("enqueue");
    let leased = queue.claim(LEASE).await.expect("claim").expect("a job");
    queue
        .retry(&leased, "push failed: 503", Duration::from_millis(600))
        .await
        .expect("retry");
    assert!(
        queue.claim(LEASE).await.expect("claim").is_none(),
        "not due before its delay"
    );
    assert_eq!(queue.depth().await.expect("depth").delayed, 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let again = queue.claim(LEASE).await.expect("claim").expect("due again");
    assert_eq!(again.job.id, id);
    assert_eq!(again.job.attempts, 1);
    assert_eq!(again.job.last_error.as_deref(), Some("push failed: 503"));

    queue.bury(&again, "push failed: 503").await.expect("bury");
    assert!(queue.claim(LEASE).await.expect("claim").is_none());
    let dead = queue.dead().await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].attempts), (id, 2));
    assert!(dead[0].buried_at.is_some());
    assert_eq!(queue.depth().await.expect("depth").dead, 1);

    assert!(queue.revive(id).await.expect("revive"));
    assert!(!queue.revive(id).await.expect("revive"), "revived once");
    assert!(queue.dead().await.expect("dead").is_empty());
    let revived = queue.claim(LEASE).await.expect("claim").expect("revived");
    assert_eq!((revived.job.id, revived.job.attempts), (id, 0));
    queue.complete(&revived).await.expect("complete");
}

/// A job whose worker died (lease run out, or the process restarted) is
/// run again, by the same queue or by a reopened one. Every claim uses the
/// same lease, as every worker of a deployment does.
async fn a_lost_lease_makes_the_job_due_again(pair: &Pair) {
    let queue = &*pair.first;
    let id = queue.enqueue(task(4)).await.expect("enqueue");
    let short = Duration::from_millis(300);
    let _abandoned = queue.claim(short).await.expect("claim").expect("a job");
    assert!(queue.claim(short).await.expect("claim").is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let retaken = queue.claim(short).await.expect("claim").expect("due again");
    assert_eq!(retaken.job.id, id);
    assert_eq!(retaken.lost_runs, 1, "the abandoned run counts");

    // The holder of that lease now dies; the reopened queue runs it.
    let id = queue.enqueue(task(5)).await.expect("enqueue");
    queue.complete(&retaken).await.expect("complete");
    let _dying = queue.claim(short).await.expect("claim").expect("a job");
    let reopened = (pair.reopen)().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recovered = reopened
        .claim(short)
        .await
        .expect("claim")
        .expect("recovered");
    assert_eq!(recovered.job.id, id);
    assert_eq!(recovered.lost_runs, 1, "the dead process's run counts");
    reopened.complete(&recovered).await.expect("complete");
    assert_eq!(
        reopened.depth().await.expect("depth"),
        QueueDepth::default()
    );
}

async fn contract(pair: Pair) {
    claims_in_order_and_completes(&*pair.first).await;
    retries_after_the_delay_then_buries_and_revives(&*pair.first).await;
    a_lost_lease_makes_the_job_due_again(&pair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_queue_keeps_the_contract() {
    contract(embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_queue_keeps_the_contract() {
    contract(redis().await).await;
}

/// Many workers on two Redis consumers take every job exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redis_consumers_share_jobs_without_overlap() {
    let pair = redis().await;
    let second = (pair.reopen)().await;
    let total = 60;
    for n in 0..total {
        pair.first.enqueue(task(n)).await.expect("enqueue");
    }
    let mut workers = Vec::new();
    for queue in [Arc::clone(&pair.first), second, Arc::clone(&pair.first)] {
        workers.push(tokio::spawn(async move {
            let mut taken = Vec::new();
            while let Some(leased) = queue.claim(LEASE).await.expect("claim") {
                taken.push(leased.job.id);
                queue.complete(&leased).await.expect("complete");
            }
            taken
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("worker"));
    }
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (total, total));
}

/// A Redis that lost its data (restarted without persistence, flushed)
/// takes the consumer group with it; a running queue makes a new one and
/// goes on with the jobs enqueued since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_queue_recovers_from_a_lost_consumer_group() {
    let prefix = format!("wenke-test-{}:", uuid::Uuid::new_v4());
    let queue = RedisJobQueue::connect(&redis_url(), &prefix)
        .await
        .expect("the local Redis must be running");
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let () = redis::cmd("DEL")
        .arg(format!("{prefix}jobs"))
        .query_async(&mut connection)
        .await
        .expect("delete the stream");

    let id = queue.enqueue(task(1)).await.expect("enqueue");
    let leased = queue
        .claim(LEASE)
        .await
        .expect("a claim after the group was lost")
        .expect("the job enqueued since");
    assert_eq!(leased.job.id, id);
    queue.complete(&leased).await.expect("complete");
    assert!(queue.claim(LEASE).await.expect("claim").is_none());
}
