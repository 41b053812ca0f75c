//! Background jobs survive the death of the process running them: a
//! broadcast cut off mid-send resumes after a restart on the same data
//! directory, and no subscriber gets it twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bot::jobs::{StoreJobQueue, WorkerConfig, spawn_workers};
use bot::outreach::{Audience, start_broadcast};
use bot::session::MemorySessionStore;
use bot::turns::TurnLog;
use bot::{Engine, EngineConfig};
use webhooks::message::{Channel, UserKey};

const SUBSCRIBERS: usize = 40;

fn workers() -> WorkerConfig {
    WorkerConfig {
        idle_poll: Duration::from_millis(50),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_cut_off_by_a_dead_process_resumes_once_per_user() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let users: Vec<UserKey> = (0..SUBSCRIBERS)
        .map(|n| UserKey::new(Channel::Web, format!("w-sub-{n:03}")))
        .collect();
    for user in &users {
        engine.outreach().subscribe(user, None, &[]).await?;
    }
    let entry_id = tests::first_hit_id(&engine, "马铃薯晚疫病怎么防治").await?;
    let entry = engine
        .published(&entry_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("published"))?;
    start_broadcast(&engine, "send-1", &entry, Audience::default(), "bian").await?;

    // The first process sends to some subscribers (one every 50 ms) and
    // dies: its workers end mid-job, its sessions and leases are gone.
    let first_workers = spawn_workers(Arc::clone(&engine), workers());
    let started = Instant::now();
    while engine
        .outreach()
        .broadcast("send-1")
        .await?
        .map_or(0, |b| b.sent)
        < 10
    {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(20), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first_workers.stop(Duration::ZERO).await;
    let cut = engine.outreach().broadcast("send-1").await?;
    let cut = cut.ok_or_else(|| anyhow::anyhow!("recorded"))?;
    anyhow::ensure!(cut.status == "sending", "cut off before the end");

    // The restart: the same data directory, fresh memory.
    let kb = Arc::clone(engine.kb());
    let restarted = Arc::new(
        Engine::open(
            Arc::clone(&kb),
            Arc::new(MemorySessionStore::new()),
            Arc::new(StoreJobQueue::open(kb.store()).await?),
            TurnLog::open(kb.store()).await?,
            EngineConfig::default(),
        )
        .await?,
    );
    let _workers = spawn_workers(Arc::clone(&restarted), workers());
    let started = Instant::now();
    let done = loop {
        let broadcast = restarted.outreach().broadcast("send-1").await?;
        if let Some(broadcast) = broadcast.filter(|b| b.status == "done") {
            break broadcast;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "not resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let mut received: HashMap<String, usize> = HashMap::new();
    for user in &users {
        let key = user.storage_key();
        let notices = restarted.notices().pending(&key).await?;
        received.insert(key, notices.len());
    }
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    let missed = received.values().filter(|n| **n == 0).count();
    // At most the one subscriber whose send the death interrupted.
    assert!(missed <= 1, "{missed} subscribers missed the broadcast");
    // Each send is counted in a write of its own right after it; a death
    // between the two leaves one send uncounted.
    let accounted = done.sent + missed;
    assert!(
        (SUBSCRIBERS - 1..=SUBSCRIBERS).contains(&accounted),
        "{accounted} of {SUBSCRIBERS} accounted for: {done:?}"
    );
    // The last chunk's job completes just after it marks the send done.
    let started = Instant::now();
    loop {
        let depth = restarted.jobs().depth().await?;
        if depth == bot::jobs::QueueDepth::default() {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(5),
            "jobs left: {depth:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
