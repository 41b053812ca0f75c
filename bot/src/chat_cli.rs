//! The engine from the command line: building it from flags, `wenke ask`,
//! `wenke chat`, and the route and follow-up evaluations.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bot::jobs::{JobQueue, RedisJobQueue, StoreJobQueue};
use bot::routing::Route;
use bot::session::{MemorySessionStore, RedisSessionStore, SessionStore};
use bot::turns::TurnLog;
use bot::{Engine, EngineConfig};
use clap::Args;
use kb::entry::EntryId;
use kb::store::PointStore;
use webhooks::message::{Channel, Handler, Incoming, UserKey};

use crate::kb_cli::StoreArgs;

/// How the engine is set up; shared by `serve`, `ask`, `chat` and `eval`.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Directory of editable texts (`templates/`, `routes/`, `safety/`),
    /// overriding the shipped ones file by file.
    #[arg(
        long,
        env = "WENKE_PROMPTS_DIR",
        default_value = "prompts",
        global = true
    )]
    pub prompts_dir: PathBuf,
    /// Redis URL for sessions, rate limits and dedup (multi-instance
    /// deployments); in memory when unset.
    #[arg(long, env = "WENKE_REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key.
    #[arg(
        long,
        env = "WENKE_REDIS_PREFIX",
        default_value = "wenke:",
        global = true
    )]
    pub redis_prefix: String,
    /// Messages one user may send per minute.
    #[arg(long, env = "WENKE_RATE_LIMIT", default_value_t = 30, global = true)]
    pub rate_limit: u32,
    /// Turns handled at once; later ones wait in arrival order (0: no
    /// limit; default: 3 per CPU core). Fair queueing keeps the slowest
    /// turns' latency close to the rest under load.
    #[arg(long, env = "WENKE_MAX_CONCURRENT_TURNS", global = true)]
    pub max_concurrent_turns: Option<usize>,
}

impl EngineArgs {
    /// The Redis URL; an empty setting means none, as an unset one does.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
    }

    /// The job queue: in Redis when configured (with the sessions), else
    /// in the point store `points` opens, which is only opened then.
    pub async fn open_job_queue(
        &self,
        points: impl FnOnce() -> anyhow::Result<Arc<dyn PointStore>>,
    ) -> anyhow::Result<Arc<dyn JobQueue>> {
        if let Some(url) = self.redis_url() {
            let queue = RedisJobQueue::connect(url, &self.redis_prefix)
                .await
                .with_context(|| format!("opening the job queue in Redis at {url}"))?;
            return Ok(Arc::new(queue));
        }
        let queue = StoreJobQueue::open(points()?)
            .await
            .context("opening the job queue")?;
        Ok(Arc::new(queue))
    }

    /// The prompts directory, if it exists (a missing one means "shipped texts").
    pub fn prompts_dir(&self) -> Option<PathBuf> {
        self.prompts_dir.is_dir().then(|| self.prompts_dir.clone())
    }
}

/// Opens the knowledge base, the session store and the turn log, and builds
/// the engine over them.
pub async fn open_engine(store: &StoreArgs, args: &EngineArgs) -> anyhow::Result<Arc<Engine>> {
    let kb = Arc::new(store.open().await?);
    // Sessions and jobs live together: in Redis for a deployment of
    // several instances, else in this process and its data directory.
    let sessions: Arc<dyn SessionStore> = match args.redis_url() {
        Some(url) => Arc::new(
            RedisSessionStore::connect(url, &args.redis_prefix)
                .await
                .with_context(|| format!("connecting to Redis at {url}"))?,
        ),
        None => Arc::new(MemorySessionStore::new()),
    };
    let jobs = args.open_job_queue(|| Ok(kb.store())).await?;
    let turns = TurnLog::open(kb.store())
        .await
        .context("opening the turn log")?;
    let config = EngineConfig {
        prompts_dir: args.prompts_dir(),
        rate_limit: args.rate_limit,
        cache_dir: store.cache_dir(),
        max_concurrent_turns: args
            .max_concurrent_turns
            .unwrap_or_else(bot::engine::default_max_concurrent_turns),
        ..EngineConfig::default()
    };
    let engine = Engine::open(kb, sessions, jobs, turns, config)
        .await
        .context("building the conversation engine")?;
    Ok(Arc::new(engine))
}

/// `wenke ask`: one question, the reply a user would get.
pub async fn ask(engine: &Engine, question: String, json: bool) -> anyhow::Result<()> {
    let reply = engine
        .handle(Incoming::text(UserKey::new(Channel::Cli, "ask"), question))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        println!("{}", reply.text());
    }
    engine.turns().flush().await?;
    Ok(())
}

/// `wenke chat`: an interactive conversation on the terminal, with the same
/// engine, sessions and follow-ups as any channel.
pub async fn chat(engine: &Engine) -> anyhow::Result<()> {
    let user = UserKey::new(Channel::Cli, format!("chat-{}", std::process::id()));
    eprintln!("问科 · 输入问题后回车；空行或 Ctrl-D 退出。");
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(1);
    // Reading the terminal blocks, so it gets a thread of its own.
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    loop {
        eprint!("> ");
        let _ = std::io::stderr().flush();
        let Some(line) = lines.recv().await else {
            break;
        };
        if line.trim().is_empty() {
            break;
        }
        let reply = engine.handle(Incoming::text(user.clone(), line)).await?;
        println!("{}\n", reply.text());
    }
    engine.turns().flush().await?;
    Ok(())
}

#[derive(serde::Deserialize)]
struct RouteCase {
    text: String,
    route: String,
}

#[derive(serde::Deserialize)]
struct FollowUpCase {
    turns: Vec<String>,
    expected_topic: Vec<String>,
    #[serde(default)]
    note: Option<String>,
}

pub fn read_lines<T: serde::de::DeserializeOwned>(files: &[PathBuf]) -> anyhow::Result<Vec<T>> {
    let mut cases = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let case = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a case line", file.display(), index + 1))?;
            cases.push(case);
        }
    }
    Ok(cases)
}

/// `wenke eval --routes`: route accuracy on `{"text", "route"}` lines.
pub async fn eval_routes(
    engine: &Engine,
    files: &[PathBuf],
    show_misses: bool,
) -> anyhow::Result<i32> {
    let cases: Vec<RouteCase> = read_lines(files)?;
    let mut right = 0usize;
    let mut per_route: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for case in &cases {
        anyhow::ensure!(
            Route::parse(&case.route).is_some(),
            "unknown route {:?} for {:?}",
            case.route,
            case.text
        );
        let decision = engine.route(&case.text).await?;
        let counts = per_route.entry(case.route.clone()).or_default();
        counts.1 += 1;
        if decision.route.as_str() == case.route {
            right += 1;
            counts.0 += 1;
        } else if show_misses {
            let scores: Vec<String> = decision
                .scores
                .iter()
                .take(3)
                .map(|(route, score)| format!("{}={score:.3}", route.as_str()))
                .collect();
            println!(
                "miss: {:?} expected {} got {} ({:.2}) [{}]",
                case.text,
                case.route,
                decision.route.as_str(),
                decision.confidence,
                scores.join(" ")
            );
        }
    }
    for (route, (ok, total)) in &per_route {
        println!(
            "{route:<18} {ok:>4}/{total:<4} {:.3}",
            *ok as f64 / (*total).max(1) as f64
        );
    }
    println!(
        "route accuracy {:.3} ({right}/{})",
        right as f64 / cases.len().max(1) as f64,
        cases.len()
    );
    Ok(0)
}

/// Whether an entry is about `topic`: its crops, tags or question name it.
async fn entry_is_about(engine: &Engine, entry_id: &str, topic: &str) -> anyhow::Result<bool> {
    let Ok(uuid) = uuid::Uuid::parse_str(entry_id) else {
        return Ok(false);
    };
    let Some(entry) = engine.kb().get(EntryId(uuid)).await? else {
        return Ok(false);
    };
    let content = &entry.content;
    Ok(content.crops.iter().any(|c| c == topic)
        || content.tags.iter().any(|t| t.contains(topic))
        || content.question.contains(topic))
}

/// `wenke eval --followups`: multi-turn conversations; a turn counts as
/// resolved when the entry answered or offered first is about the expected
/// topic.
pub async fn eval_followups(
    engine: &Engine,
    files: &[PathBuf],
    show_misses: bool,
) -> anyhow::Result<i32> {
    let cases: Vec<FollowUpCase> = read_lines(files)?;
    let mut turns_total = 0usize;
    let mut turns_right = 0usize;
    let mut follow_ups_total = 0usize;
    let mut follow_ups_right = 0usize;
    let mut conversations_right = 0usize;
    for (index, case) in cases.iter().enumerate() {
        anyhow::ensure!(
            case.turns.len() == case.expected_topic.len(),
            "conversation {}: {} turns but {} expected topics",
            index + 1,
            case.turns.len(),
            case.expected_topic.len()
        );
        let user = UserKey::new(
            Channel::Cli,
            format!("eval-followup-{index}-{}", uuid::Uuid::new_v4()),
        );
        let mut all_right = true;
        for (position, (text, topic)) in case.turns.iter().zip(&case.expected_topic).enumerate() {
            let reply = engine
                .handle(Incoming::text(user.clone(), text.clone()))
                .await?;
            let right = match reply.citations.first() {
                Some(citation) => entry_is_about(engine, &citation.entry_id, topic).await?,
                None => false,
            };
            turns_total += 1;
            turns_right += usize::from(right);
            if position > 0 {
                follow_ups_total += 1;
                follow_ups_right += usize::from(right);
            }
            if !right {
                all_right = false;
                if show_misses {
                    println!(
                        "miss: conversation {} turn {}: {:?} expected {topic}, got {} {:?}{}",
                        index + 1,
                        position + 1,
                        text,
                        reply.kind.as_str(),
                        reply.citations.first().map(|c| c.question.as_str()),
                        case.note
                            .as_deref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        conversations_right += usize::from(all_right);
    }
    println!(
        "follow-ups resolved {:.3} ({follow_ups_right}/{follow_ups_total}); all turns {:.3} ({turns_right}/{turns_total}); whole conversations {conversations_right}/{}",
        follow_ups_right as f64 / follow_ups_total.max(1) as f64,
        turns_right as f64 / turns_total.max(1) as f64,
        cases.len()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::EngineArgs;
    use crate::kb_cli::StoreArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        engine: EngineArgs,
    }

    #[test]
    fn empty_server_urls_mean_the_embedded_defaults() {
        let cli = Cli::parse_from(["wenke", "--qdrant-url", "", "--redis-url", " "]);
        assert_eq!(cli.store.qdrant_url(), None);
        assert_eq!(cli.engine.redis_url(), None);
        assert!(
            cli.store.cache_dir().is_some(),
            "embedded mode keeps its cache"
        );
        let cli = Cli::parse_from([
            "wenke",
            "--qdrant-url",
            "http://qdrant:6334",
            "--redis-url",
            "redis://redis:6379",
        ]);
        assert_eq!(cli.store.qdrant_url(), Some("http://qdrant:6334"));
        assert_eq!(cli.engine.redis_url(), Some("redis://redis:6379"));
    }
}
