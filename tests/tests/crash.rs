//! The crash harness. A child process imports entries, takes entries through
//! the editorial workflow, files demands by chat and sends broadcasts
//! (background jobs), all at once, on a real
//! qdrant-edge data directory, while this test kills it with SIGKILL at
//! random moments (most while it writes, some while it is still starting
//! and finishing what the previous crash left). Each restart checks, from
//! what the parent saw acknowledged, that no acknowledged write was lost and
//! that nothing interrupted was done twice; then it retries the demand
//! conversations the kill cut short, as their users would.
//!
//! `cargo test -p tests --test crash` runs 10 kills. The documented run
//! (docs/BENCHMARKS.md, "Crash harness") sets `WENKE_CRASH_KILLS=200`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::Context;
use bot::Engine;
use bot::jobs::{WorkerConfig, spawn_workers};
use bot::outreach::{Audience, start_broadcast};
use kb::entry::{Entry, EntryContent, Status};
use kb::import::parse_jsonl;
use kb::store::{Filter, scroll_all};
use kb::workflow::Action;
use kb::{ImportOptions, ListFilter, SearchFilter};
use serde::{Deserialize, Serialize};
use webhooks::message::{Channel, Handler, Incoming, UserKey};

/// Set in a child: the ledger file it checks against.
const CHILD_LEDGER: &str = "WENKE_CRASH_LEDGER";
/// Set in a child: the data directory.
const CHILD_DIR: &str = "WENKE_CRASH_DIR";
/// Set in the last child: check, then exit instead of working.
const CHILD_CHECK_ONLY: &str = "WENKE_CRASH_CHECK_ONLY";

const AUTHOR: &str = "崩溃测试编辑";
const REVIEWER: &str = "崩溃测试审核";
/// Import rounds rotate over this many external keys, so most imports
/// rewrite entries that exist.
const IMPORT_KEYS: u64 = 12;

/// What the parent saw acknowledged, handed to each child to check and to
/// retry.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    /// Which child this is (the first is 0).
    cycle: u32,
    /// Unix time (seconds) at which the previous child started: entries
    /// updated since then get the expensive checks (history, search).
    since: i64,
    /// Imported external key → the highest acknowledged import round.
    imported: BTreeMap<String, u64>,
    /// Entry id → the last acknowledged (version, status).
    workflow: BTreeMap<String, (u32, String)>,
    /// A filer's user storage key → the demand number they were told.
    filed: BTreeMap<String, String>,
    /// Filers whose conversation started and was not acknowledged.
    filing: BTreeSet<String>,
    /// Broadcast id → (its audience's crop, the cycle that started it).
    broadcasts: BTreeMap<String, (String, u32)>,
}

impl Ledger {
    /// Takes in one line a child printed. Returns the violation it reports,
    /// if it reports one.
    fn record(&mut self, line: &str) -> Option<String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["violation", ..] => Some(line["violation ".len()..].to_owned()),
            ["ack", "import", round, keys @ ..] => {
                let round: u64 = round.parse().ok()?;
                for key in keys {
                    let stored = self.imported.entry((*key).to_owned()).or_default();
                    *stored = (*stored).max(round);
                }
                None
            }
            ["ack", "workflow", id, version, status] => {
                let version: u32 = version.parse().ok()?;
                let known = self.workflow.get(*id).map_or(0, |(v, _)| *v);
                if version >= known {
                    self.workflow
                        .insert((*id).to_owned(), (version, (*status).to_owned()));
                }
                None
            }
            ["begin", "demand", user] => {
                self.filing.insert((*user).to_owned());
                None
            }
            ["ack", "demand", user, number] => {
                self.filing.remove(*user);
                self.filed.insert((*user).to_owned(), (*number).to_owned());
                None
            }
            ["ack", "broadcast", id, crop] => {
                self.broadcasts
                    .insert((*id).to_owned(), ((*crop).to_owned(), self.cycle));
                None
            }
            _ => None,
        }
    }
}

/// What the parent learns from the children's lines.
#[derive(Default)]
struct Observer {
    ledger: Ledger,
    violations: Vec<String>,
    /// Restarts that finished their check.
    checks: usize,
    /// The current child's `checked …` line, if it printed one.
    last_check: String,
}

impl Observer {
    fn take(&mut self, cycle: u32, line: &str) {
        if let Some(violation) = self.ledger.record(line) {
            self.violations.push(format!("cycle {cycle}: {violation}"));
        }
        if line.starts_with("checked ") {
            self.checks += 1;
            self.last_check = line.to_owned();
        }
    }
}

#[test]
fn random_kills_lose_no_acknowledged_write() -> anyhow::Result<()> {
    if std::env::var_os(CHILD_LEDGER).is_some() {
        return Ok(()); // Inside a child, only `crash_child` runs.
    }
    let kills: u32 = match std::env::var("WENKE_CRASH_KILLS") {
        Ok(value) => value.parse().context("WENKE_CRASH_KILLS")?,
        Err(_) => 10,
    };
    let work = tests::scratch_dir()?;
    let data = work.join("data");
    let ledger_path = work.join("ledger.json");
    let child_log = work.join("children.log");
    let exe = std::env::current_exe()?;
    let mut seen = Observer::default();
    let mut kills_during_start = 0;
    let started = Instant::now();

    for cycle in 0..=kills {
        let check_only = cycle == kills;
        seen.last_check.clear();
        seen.ledger.cycle = cycle;
        std::fs::write(&ledger_path, serde_json::to_vec(&seen.ledger)?)?;
        let next_since = time::OffsetDateTime::now_utc().unix_timestamp() - 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&child_log)?;
        let mut command = Command::new(&exe);
        command
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_LEDGER, &ledger_path)
            .env(CHILD_DIR, &data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log);
        if check_only {
            command.env(CHILD_CHECK_ONLY, "1");
        }
        let spawned_at = Instant::now();
        let mut child = command.spawn().context("spawning the child")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });

        // Most kills land while the child works; some while it is still
        // opening the store, finishing the last crash's journal, checking
        // or retrying.
        let kill_at = if check_only {
            None
        } else if rand::random_ratio(1, 6) {
            kills_during_start += 1;
            Some(spawned_at + Duration::from_millis(rand::random_range(0..4_000)))
        } else {
            None
        };
        let mut ready = check_only;
        let mut deadline = kill_at.unwrap_or(spawned_at + Duration::from_secs(300));
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(wait) {
                Ok(line) => {
                    seen.take(cycle, &line);
                    if line == "ready" && kill_at.is_none() && !ready {
                        ready = true;
                        let work_for = Duration::from_millis(rand::random_range(20..2_500));
                        deadline = Instant::now() + work_for;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    anyhow::ensure!(
                        ready || kill_at.is_some(),
                        "cycle {cycle}: the child was not ready within 300 s (see {})",
                        child_log.display()
                    );
                    break;
                }
                // The child exited: only the checking child may.
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if !check_only {
            child.kill().context("kill -9")?;
        }
        let status = child.wait()?;
        // Lines printed before the kill were acknowledged before it.
        for line in lines.iter() {
            seen.take(cycle, &line);
        }
        let _ = reader.join();
        if check_only {
            anyhow::ensure!(
                status.success() && !seen.last_check.is_empty(),
                "the checking child failed: {status} (see {})",
                child_log.display()
            );
        }
        seen.ledger.since = next_since;
    }
    let Observer {
        ledger,
        violations,
        checks,
        last_check,
    } = seen;

    println!(
        "crash harness: {kills} kills ({kills_during_start} during start-up) in {:.0} s; \
         {checks} restarts checked, the last {last_check}; acknowledged: {} imported keys, \
         {} workflow entries, {} demands; {} violations",
        started.elapsed().as_secs_f64(),
        ledger.imported.len(),
        ledger.workflow.len(),
        ledger.filed.len(),
        violations.len()
    );
    anyhow::ensure!(
        ledger.filed.len() + ledger.workflow.len() + ledger.imported.len() > 0,
        "no write was ever acknowledged: the harness tested nothing (see {})",
        child_log.display()
    );
    anyhow::ensure!(
        violations.is_empty(),
        "invariants violated:\n{}",
        violations.join("\n")
    );
    Ok(())
}

/// The process the harness kills: checks the data directory against the
/// ledger, retries interrupted demand conversations, prints `ready`, then
/// works until killed. Only meaningful when started by the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() -> anyhow::Result<()> {
    let Some(ledger_path) = std::env::var_os(CHILD_LEDGER) else {
        return Ok(());
    };
    // libtest has printed "test crash_child ... " without a newline; the
    // protocol's lines must each start a line.
    say("");
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).context(CHILD_DIR)?);
    let ledger: Ledger = serde_json::from_slice(&std::fs::read(ledger_path)?)?;
    let engine = tests::engine_on(&dir).await?;
    for violation in check(&engine, &ledger).await? {
        say(&format!("violation {violation}"));
    }
    if std::env::var_os(CHILD_CHECK_ONLY).is_some() {
        return Ok(());
    }
    for user in &ledger.filing {
        let user = UserKey::from_storage_key(user).context("a filer's key")?;
        let number = file_again(&engine, &user).await?;
        say(&format!("ack demand {} {number}", user.storage_key()));
    }
    say("ready");
    let cycle = ledger.cycle;
    // As `wenke serve` does: jobs the previous child left run again.
    let _workers = spawn_workers(Arc::clone(&engine), WorkerConfig::default());
    let imports = tokio::spawn(import_forever(Arc::clone(&engine), cycle));
    let workflow = tokio::spawn(workflow_forever(Arc::clone(&engine), cycle));
    let broadcasts = tokio::spawn(broadcast_forever(Arc::clone(&engine), cycle));
    let demands = tokio::spawn(file_demands_forever(engine, cycle));
    // The loops end only by failing, which the parent sees as a violation.
    let (imports, workflow, broadcasts, demands) =
        tokio::join!(imports, workflow, broadcasts, demands);
    for (name, outcome) in [
        ("import", imports),
        ("workflow", workflow),
        ("broadcast", broadcasts),
        ("demand", demands),
    ] {
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => say(&format!("violation the {name} loop failed: {error:#}")),
            Err(error) => say(&format!("violation the {name} loop panicked: {error}")),
        }
    }
    Ok(())
}

/// One line to the parent. Rust's stdout is line-buffered and locked per
/// call, so a line is whole or absent, never torn.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Every invariant, against the store as this (fresh) process opened it.
async fn check(engine: &Engine, ledger: &Ledger) -> anyhow::Result<Vec<String>> {
    let kb = engine.kb();
    let store = kb.store();
    let mut violations = Vec::new();

    // Opening finished every interrupted change.
    let pending = store.count("journal", Filter::default()).await?;
    if pending > 0 {
        violations.push(format!("{pending} journal records left after opening"));
    }

    let entries = kb.list(&ListFilter::default()).await?;
    let mut by_key: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for entry in &entries {
        if let Some(key) = &entry.content.external_key {
            by_key.entry(key).or_default().push(entry);
        }
    }
    // An import retried by a crash never makes a second entry.
    for (key, found) in &by_key {
        if found.len() > 1 {
            violations.push(format!("external key {key} has {} entries", found.len()));
        }
    }
    for (key, round) in &ledger.imported {
        let Some(entry) = by_key.get(key.as_str()).and_then(|found| found.first()) else {
            violations.push(format!("acknowledged import of {key} lost"));
            continue;
        };
        if entry.status != Status::Published {
            violations.push(format!("imported {key} is {:?}", entry.status));
        }
        let stored = import_round(&entry.content.answer);
        if stored < Some(*round) {
            violations.push(format!(
                "{key}: round {round} was acknowledged, {stored:?} is stored"
            ));
        }
    }
    let by_id: BTreeMap<String, &Entry> = entries.iter().map(|e| (e.id.to_string(), e)).collect();
    for (id, (version, status)) in &ledger.workflow {
        let Some(entry) = by_id.get(id) else {
            violations.push(format!("acknowledged entry {id} lost"));
            continue;
        };
        if entry.version < *version {
            violations.push(format!(
                "entry {id}: version {version} was acknowledged, {} is stored",
                entry.version
            ));
        } else if entry.version == *version && format!("{:?}", entry.status) != *status {
            violations.push(format!(
                "entry {id} v{version}: {status} was acknowledged, {:?} is stored",
                entry.status
            ));
        }
    }

    // The search index holds exactly the published entries, at their
    // current version, one point per phrasing and one for the answer.
    let mut index_versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let points = scroll_all(store.as_ref(), "index", Filter::default()).await?;
    let point_count = points.len();
    for point in points {
        let entry_id = point.payload.get("entry_id").and_then(|v| v.as_str());
        let version = point.payload.get("version").and_then(|v| v.as_u64());
        match (entry_id, version) {
            (Some(entry_id), Some(version)) => index_versions
                .entry(entry_id.to_owned())
                .or_default()
                .push(version),
            _ => violations.push(format!(
                "index point {} lacks entry_id or version",
                point.id
            )),
        }
    }
    for entry in &entries {
        let versions = index_versions
            .remove(&entry.id.to_string())
            .unwrap_or_default();
        if entry.status != Status::Published {
            if !versions.is_empty() {
                violations.push(format!(
                    "{:?} entry {} has {} index points",
                    entry.status,
                    entry.id,
                    versions.len()
                ));
            }
            continue;
        }
        let slots = entry.content.alt_questions.len() + 2;
        if versions.len() != slots {
            violations.push(format!(
                "published entry {} has {} index points, not {slots}",
                entry.id,
                versions.len()
            ));
        }
        if versions.iter().any(|v| *v != u64::from(entry.version)) {
            violations.push(format!(
                "entry {} v{} has index points of versions {versions:?}",
                entry.id, entry.version
            ));
        }
    }
    for (entry_id, versions) in index_versions {
        violations.push(format!(
            "{} index points of entry {entry_id}, which does not exist",
            versions.len()
        ));
    }

    // Entries the last child touched: the record is its last revision, the
    // revisions count 1..=version with none lost or doubled, and a
    // published one is found by its question.
    for entry in entries
        .iter()
        .filter(|e| e.updated_at.unix_timestamp() >= ledger.since)
    {
        let history = kb.history(entry.id).await?;
        let versions: Vec<u32> = history.iter().map(|r| r.version).collect();
        if versions != (1..=entry.version).collect::<Vec<_>>() {
            violations.push(format!(
                "entry {} v{} has revisions {versions:?}",
                entry.id, entry.version
            ));
        }
        if history.last().map(|r| &r.snapshot) != Some(entry) {
            violations.push(format!("entry {} differs from its last revision", entry.id));
        }
        if entry.status == Status::Published {
            let outcome = kb
                .search(&entry.content.question, &SearchFilter::default())
                .await?;
            match outcome.hits.first() {
                Some(hit) if hit.entry.entry() == entry => {}
                Some(hit) => violations.push(format!(
                    "searching the question of {} finds {} v{}",
                    entry.id,
                    hit.entry.entry().id,
                    hit.entry.entry().version
                )),
                None => violations.push(format!("published entry {} is not found", entry.id)),
            }
        }
    }

    // Demands: numbers never repeat, each filer filed once, and everyone
    // told a number has that demand.
    let demands = engine.listings().demands(None, None).await?;
    let mut numbers = BTreeSet::new();
    let mut by_filer: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for demand in &demands {
        if !numbers.insert(demand.number.clone()) {
            violations.push(format!("number {} given twice", demand.number));
        }
        if let Some(filer) = &demand.filed_by {
            by_filer
                .entry(filer.user.clone())
                .or_default()
                .push(demand.number.clone());
        }
    }
    for (filer, numbers) in &by_filer {
        if numbers.len() > 1 {
            violations.push(format!("{filer} filed once and has demands {numbers:?}"));
        }
    }
    for (filer, number) in &ledger.filed {
        if by_filer.get(filer) != Some(&vec![number.clone()]) {
            violations.push(format!(
                "{filer} was told {number}; stored: {:?}",
                by_filer.get(filer)
            ));
        }
    }
    // Broadcasts: every acknowledged one is recorded, no subscriber got
    // one twice, and a finished one missed at most one subscriber per
    // kill it lived through (the send a kill cut off).
    let mut finished = 0;
    for (id, (crop, started_in)) in &ledger.broadcasts {
        let Some(broadcast) = engine.outreach().broadcast(id).await? else {
            violations.push(format!("acknowledged broadcast {id} is not recorded"));
            continue;
        };
        let audience = Audience {
            crop: Some(crop.clone()),
            ..Audience::default()
        };
        let mut missed = 0;
        for subscriber in engine.outreach().audience(&audience).await? {
            match engine.notices().pending(&subscriber.user).await?.len() {
                0 => missed += 1,
                1 => {}
                n => violations.push(format!("{} got broadcast {id} {n} times", subscriber.user)),
            }
        }
        if broadcast.status == "done" {
            finished += 1;
            let kills = ledger.cycle - started_in;
            if missed > kills as usize {
                violations.push(format!(
                    "broadcast {id} missed {missed} subscribers through {kills} kills"
                ));
            }
        }
    }
    say(&format!(
        "checked {} entries, {point_count} index points, {} demands, {finished} of {} broadcasts finished",
        entries.len(),
        demands.len(),
        ledger.broadcasts.len()
    ));
    Ok(violations)
}

/// The round an import wrote into an answer ("…轮次：123。").
fn import_round(answer: &str) -> Option<u64> {
    let (_, rest) = answer.rsplit_once("轮次：")?;
    rest.trim_end_matches('。').parse().ok()
}

/// An import row about one crop, with one alternative phrasing.
fn entry_row(
    key: Option<&str>,
    question: &str,
    alternative: &str,
    answer: &str,
    crop: &str,
) -> String {
    serde_json::json!({
        "external_key": key,
        "question": question,
        "alt_questions": [alternative],
        "answer": answer,
        "category": "农业种植",
        "tags": [crop],
        "crops": [crop],
        "source": {"organisation": "崩溃测试", "document": null, "url": null}
    })
    .to_string()
}

fn import_row(key: &str, slot: u64, round: u64) -> String {
    entry_row(
        Some(key),
        &format!("试验导入第{slot}号：玉米地里的{slot}号虫害怎么治？"),
        &format!("{slot}号玉米虫害用什么药"),
        &format!("请按当地农技站的建议用药。轮次：{round}。"),
        "玉米",
    )
}

/// Imports three rows at a time, approved, rotating over [`IMPORT_KEYS`]
/// keys with a growing round number in the answers.
async fn import_forever(engine: Arc<Engine>, cycle: u32) -> anyhow::Result<()> {
    let options = ImportOptions {
        actor: AUTHOR.into(),
        approve_as: Some(REVIEWER.into()),
    };
    for step in 0u64.. {
        let round = u64::from(cycle) * 1_000_000 + step;
        let first = (step * 3) % IMPORT_KEYS;
        let slots: Vec<u64> = (first..first + 3).map(|s| s % IMPORT_KEYS).collect();
        let keys: Vec<String> = slots.iter().map(|s| format!("crash-import-{s}")).collect();
        let text = slots
            .iter()
            .zip(&keys)
            .map(|(slot, key)| import_row(key, *slot, round))
            .collect::<Vec<_>>()
            .join("\n");
        let report = engine
            .kb()
            .import(parse_jsonl(&text), &options, &|_, _| {})
            .await?;
        anyhow::ensure!(report.errors.is_empty(), "{:?}", report.errors);
        say(&format!("ack import {round} {}", keys.join(" ")));
    }
    Ok(())
}

fn workflow_content(cycle: u32, step: u64, revision: u32) -> anyhow::Result<EntryContent> {
    let row = entry_row(
        None,
        &format!("试验流程第{cycle}批第{step}条：红苕育苗要注意啥子？"),
        &format!("第{cycle}批第{step}条甘薯育苗要点"),
        &format!("选无病种薯，控制苗床温度。第{revision}稿。"),
        "甘薯",
    );
    let parsed = parse_jsonl(&row)
        .pop()
        .context("one row")?
        .result
        .map_err(|errors| anyhow::anyhow!("{errors:?}"))?;
    Ok(parsed)
}

fn ack_workflow(entry: &Entry) {
    say(&format!(
        "ack workflow {} {} {:?}",
        entry.id, entry.version, entry.status
    ));
}

/// Applies one action and acknowledges the change.
async fn step(
    kb: &kb::KnowledgeBase,
    entry: &Entry,
    action: Action,
    actor: &str,
) -> anyhow::Result<Entry> {
    let next = kb.apply(entry.id, action, actor).await?;
    ack_workflow(&next);
    Ok(next)
}

/// Submits a draft and has the reviewer approve it.
async fn review_and_publish(kb: &kb::KnowledgeBase, draft: &Entry) -> anyhow::Result<Entry> {
    let submitted = step(kb, draft, Action::Submit, AUTHOR).await?;
    step(kb, &submitted, Action::Approve { note: None }, REVIEWER).await
}

/// Creates entries and takes each through review to published; then edits
/// and re-publishes a third of them and retires another third.
async fn workflow_forever(engine: Arc<Engine>, cycle: u32) -> anyhow::Result<()> {
    let kb = engine.kb();
    for n in 0u64.. {
        let draft = kb.create(workflow_content(cycle, n, 1)?, AUTHOR).await?;
        ack_workflow(&draft);
        let published = review_and_publish(kb, &draft).await?;
        match n % 3 {
            0 => {
                let content = workflow_content(cycle, n, 2)?;
                let edited = step(kb, &published, Action::Edit { content }, AUTHOR).await?;
                review_and_publish(kb, &edited).await?;
            }
            1 => {
                step(kb, &published, Action::Retire { note: None }, REVIEWER).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Subscribers of each broadcast (sent at 20 a second: about 1.5 s).
const BROADCAST_AUDIENCE: usize = 30;

/// Broadcasts of a published entry to a fresh audience each (its own crop
/// interest), one every two seconds.
async fn broadcast_forever(engine: Arc<Engine>, cycle: u32) -> anyhow::Result<()> {
    let published = ListFilter {
        status: Some(Status::Published),
        ..ListFilter::default()
    };
    let entry = loop {
        let first = engine.kb().list(&published).await?.into_iter().next();
        if let Some(entry) = first
            && let Some(published) = engine.published(&entry.id.to_string()).await?
        {
            break published;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for n in 0u64.. {
        let crop = format!("崩溃作物{cycle}x{n}");
        for i in 0..BROADCAST_AUDIENCE {
            let user = UserKey::new(Channel::Web, format!("bc-{cycle}-{n}-{i:02}"));
            engine
                .outreach()
                .subscribe(&user, None, std::slice::from_ref(&crop))
                .await?;
        }
        let id = format!("crash-{cycle}-{n}");
        let audience = Audience {
            crop: Some(crop.clone()),
            ..Audience::default()
        };
        start_broadcast(&engine, &id, &entry, audience, AUTHOR).await?;
        say(&format!("ack broadcast {id} {crop}"));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}

/// The demand conversation of the web chat test, one new enterprise user
/// after another.
async fn file_demands_forever(engine: Arc<Engine>, cycle: u32) -> anyhow::Result<()> {
    for step in 0u64.. {
        let user = UserKey::new(Channel::Web, format!("crash-{cycle}-{step}"));
        say(&format!("begin demand {}", user.storage_key()));
        let number = converse(&engine, &user).await?;
        say(&format!("ack demand {} {number}", user.storage_key()));
    }
    Ok(())
}

async fn converse(engine: &Engine, user: &UserKey) -> anyhow::Result<String> {
    for text in [
        "我们厂锂电池隔膜良品率低，想找专家攻关，预算20万左右，三个月内解决",
        "宜宾",
        "宜宾示例隔膜材料有限公司",
        "张工 13800012345",
    ] {
        engine.handle(Incoming::text(user.clone(), text)).await?;
    }
    let filed = engine.handle(Incoming::text(user.clone(), "确认")).await?;
    demand_number(&filed.text()).with_context(|| format!("no number in {:?}", filed.text()))
}

/// What a user whose conversation a crash cut short does: says "确认"
/// again; if that files nothing and they have no demand, starts over.
async fn file_again(engine: &Engine, user: &UserKey) -> anyhow::Result<String> {
    let again = engine.handle(Incoming::text(user.clone(), "确认")).await?;
    if let Some(number) = demand_number(&again.text()) {
        return Ok(number);
    }
    let mine = engine
        .listings()
        .demands(None, Some(&user.storage_key()))
        .await?;
    if let Some(demand) = mine.first() {
        return Ok(demand.number.clone());
    }
    engine.handle(Incoming::text(user.clone(), "取消")).await?;
    converse(engine, user).await
}

fn demand_number(text: &str) -> Option<String> {
    let start = text.find("XQ-")?;
    let number: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    Some(number)
}
