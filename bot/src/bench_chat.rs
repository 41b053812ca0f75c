//! `wenke bench chat`: load on `POST /api/chat` of a running server.
//!
//! A fixed number of clients, each sending its next question as soon as
//! the previous reply arrives, for a fixed time. Questions come from the
//! retrieval dev sets: `distinct` cycles through all of them (each client
//! starting at its own offset, so the caches rarely help), `repeated` asks
//! the same few questions again and again (what the caches are for). Each
//! client is its own user, so rate limits apply per client as in real use;
//! start the server with a high `--rate-limit` for the bench.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;

/// Which questions the clients ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mix {
    /// Every dev-set question in turn.
    Distinct,
    /// Five questions, over and over.
    Repeated,
}

/// What to run.
pub struct ChatBenchConfig {
    /// The server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Concurrent clients.
    pub clients: usize,
    /// How long to send.
    pub duration: Duration,
    /// Which questions.
    pub mix: Mix,
    /// Dev-set files (`{"question": …}` per line).
    pub question_files: Vec<PathBuf>,
}

fn questions(files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut questions = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let case: serde_json::Value = serde_json::from_str(line)?;
            if let Some(question) = case["question"].as_str() {
                questions.push(question.to_owned());
            }
        }
    }
    anyhow::ensure!(!questions.is_empty(), "no questions in {files:?}");
    Ok(questions)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Runs the load and prints throughput and latency percentiles.
pub async fn run(config: &ChatBenchConfig) -> anyhow::Result<()> {
    let mut pool = questions(&config.question_files)?;
    if config.mix == Mix::Repeated {
        pool.truncate(5);
    }
    let pool = Arc::new(pool);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.clients)
        .build()?;
    let endpoint = format!("{}/api/chat", config.url.trim_end_matches('/'));
    let deadline = Instant::now() + config.duration;
    let run_id = uuid::Uuid::new_v4();
    let clients = config.clients.max(1);
    let mix = config.mix;
    let mut tasks = Vec::new();
    for index in 0..config.clients {
        let client = client.clone();
        let endpoint = endpoint.clone();
        let pool = Arc::clone(&pool);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
            let mut next = index * pool.len() / clients;
            let client_user = format!("bench-{run_id}-{index}");
            while Instant::now() < deadline {
                let question = &pool[next % pool.len()];
                next += 1;
                // Dev-set questions are unrelated to each other: in the
                // distinct mix each comes from a new user, so one question
                // routed to a demand does not turn the next ones into
                // answers of a filing form.
                let user = match mix {
                    Mix::Distinct => format!("{client_user}-{next}"),
                    Mix::Repeated => client_user.clone(),
                };
                let started = Instant::now();
                let response = client
                    .post(&endpoint)
                    .json(&serde_json::json!({ "user_id": user, "text": question }))
                    .send()
                    .await;
                let reply: Option<serde_json::Value> = match response {
                    Ok(r) if r.status().is_success() => r.json().await.ok(),
                    _ => None,
                };
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                match reply {
                    Some(reply) => {
                        latencies.push(elapsed);
                        let kind = reply["kind"].as_str().unwrap_or("?").to_owned();
                        *kinds.entry(kind).or_default() += 1;
                    }
                    None => errors += 1,
                }
            }
            (latencies, errors, kinds)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for task in tasks {
        let (mut l, e, k) = task.await?;
        latencies.append(&mut l);
        errors += e;
        for (kind, n) in k {
            *kinds.entry(kind).or_default() += n;
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let seconds = config.duration.as_secs_f64();
    println!(
        "chat bench: {} clients, {:?} mix, {:.0} s, {} questions in the pool",
        config.clients,
        config.mix,
        seconds,
        pool.len()
    );
    println!(
        "replies {} ({:.1}/s), errors {errors}; latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        latencies.len() as f64 / seconds,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
    println!("reply kinds: {kinds:?}");
    Ok(())
}
