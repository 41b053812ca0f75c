//! `wenke kb …` and `wenke eval`: the knowledge base from the command line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kb::entry::{Category, EntryId, Status};
use kb::import::{Format, read_rows, to_csv, to_jsonl_line, to_markdown};
use kb::store::PointStore;
use kb::store::edge::EdgeStore;
use kb::store::server::{ServerConfig, ServerStore};
use kb::workflow::Action;
use kb::{Calibration, Decision, ImportOptions, KnowledgeBase, ListFilter, SearchFilter};

/// Where the knowledge base lives; shared by every command that opens it.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Data directory of the embedded store (and the editable dictionaries).
    #[arg(long, env = "WENKE_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// A Qdrant server's gRPC URL; when set, the KB lives there instead of the data directory.
    #[arg(long, env = "QDRANT_URL", global = true)]
    pub qdrant_url: Option<String>,
    /// API key for the Qdrant server.
    #[arg(long, env = "QDRANT_API_KEY", global = true, hide_env_values = true)]
    pub qdrant_api_key: Option<String>,
    /// Prefix of collection names on the Qdrant server.
    #[arg(
        long,
        env = "WENKE_COLLECTION_PREFIX",
        default_value = "wenke_",
        global = true
    )]
    pub collection_prefix: String,
    /// How long one request to the Qdrant server may take, in milliseconds,
    /// before it fails (and a user is asked to try again later).
    #[arg(
        long,
        env = "WENKE_QDRANT_TIMEOUT_MS",
        default_value_t = 3000,
        global = true
    )]
    pub qdrant_timeout_ms: u64,
    /// Shards of each collection wenke creates on the Qdrant server (when
    /// unset, the server's default: one per node of a cluster, one on a
    /// single node). Existing collections keep theirs.
    #[arg(long, env = "WENKE_QDRANT_SHARDS", global = true)]
    pub qdrant_shards: Option<u32>,
    /// Copies of each shard on the Qdrant cluster (the server's default, 1,
    /// when unset); 2 survives the loss of a node.
    #[arg(long, env = "WENKE_QDRANT_REPLICATION_FACTOR", global = true)]
    pub qdrant_replication_factor: Option<u32>,
    /// The model directory.
    #[arg(long, env = "WENKE_MODEL_DIR", default_value = "models", global = true)]
    pub model_dir: PathBuf,
}

impl StoreArgs {
    /// The Qdrant server's URL; an empty setting (`QDRANT_URL=`, as
    /// deployment templates leave it) means none, as an unset one does.
    pub fn qdrant_url(&self) -> Option<&str> {
        self.qdrant_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
    }

    /// Where caches that belong to the embedded data directory go (the
    /// routing examples' vectors); `None` in server mode, where instances
    /// stay stateless and compute them at start.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        self.qdrant_url()
            .is_none()
            .then(|| self.data_dir.join("cache"))
    }

    /// Opens the point store alone: the data directory's, or the server's.
    pub fn open_store(&self) -> anyhow::Result<Arc<dyn PointStore>> {
        Ok(match self.qdrant_url() {
            Some(url) => Arc::new(ServerStore::connect(&ServerConfig {
                api_key: self.qdrant_api_key.clone(),
                timeout: Duration::from_millis(self.qdrant_timeout_ms),
                shards: self.qdrant_shards,
                replication_factor: self.qdrant_replication_factor,
                ..ServerConfig::new(url, self.collection_prefix.clone())
            })?),
            None => {
                let root = self.data_dir.join("qdrant");
                Arc::new(
                    EdgeStore::open(&root).with_context(|| {
                        format!("opening the data directory {}", root.display())
                    })?,
                )
            }
        })
    }

    /// Opens the store, the model and the knowledge base.
    pub async fn open(&self) -> anyhow::Result<KnowledgeBase> {
        let store = self.open_store()?;
        let model_path = self.model_dir.join("multilingual-e5-small-q4");
        let embedder = tokio::task::spawn_blocking(move || {
            embeddings::Embedder::load(&embeddings::EmbedderConfig {
                model_path,
                ..Default::default()
            })
        })
        .await??;
        let analyzer = kb::dict::load_analyzer(&self.data_dir)?;
        let calibration = load_calibration(&self.data_dir)?;
        Ok(KnowledgeBase::open(store, embedder, analyzer, calibration).await?)
    }
}

/// `<data dir>/calibration.json` overrides the built-in retrieval weights.
fn load_calibration(data_dir: &Path) -> anyhow::Result<Calibration> {
    let path = data_dir.join("calibration.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Calibration::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Export formats.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a BOM, for spreadsheets.
    Csv,
    /// A directory of Markdown files with front matter.
    Markdown,
}

/// Filters shared by `list` and `export`.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// draft, in_review, published or retired.
    #[arg(long)]
    status: Option<String>,
    /// A category name, e.g. 农业种植.
    #[arg(long)]
    category: Option<String>,
    /// A crop, e.g. 马铃薯.
    #[arg(long)]
    crop: Option<String>,
    /// A region, e.g. 凉山州.
    #[arg(long)]
    region: Option<String>,
    /// Only entries whose review-by date has passed.
    #[arg(long)]
    stale: bool,
}

impl FilterArgs {
    fn to_filter(&self) -> anyhow::Result<ListFilter> {
        let status = match &self.status {
            Some(name) => Some(Status::parse(name).with_context(|| {
                format!("unknown status {name}: use draft, in_review, published or retired")
            })?),
            None => None,
        };
        Ok(ListFilter {
            status,
            category: parse_category(self.category.as_deref())?,
            crop: self.crop.clone(),
            region: self.region.clone(),
            stale_before: self.stale.then(today),
        })
    }
}

fn today() -> String {
    let now = time::OffsetDateTime::now_utc().date();
    format!(
        "{:04}-{:02}-{:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    )
}

fn parse_category(name: Option<&str>) -> anyhow::Result<Option<Category>> {
    name.map(|n| kb::entry::parse_category(n).map_err(|e| anyhow::anyhow!(e.message)))
        .transpose()
}

/// `wenke kb …`.
#[derive(Subcommand, Debug)]
pub enum KbCommand {
    /// Imports entries from JSONL, CSV (UTF-8 or GBK) files or Markdown directories.
    Import {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Recorded as the author of imported content.
        #[arg(long, default_value = "import")]
        actor: String,
        /// Approves every imported entry as this reviewer (for vetted material).
        #[arg(long)]
        approve_as: Option<String>,
    },
    /// Writes entries out.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Output file (directory for Markdown); standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Lists entries.
    List {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Shows one entry (by id or external key).
    Show {
        /// Id or external key.
        id: String,
    },
    /// Lists an entry's recorded changes.
    History {
        /// Id or external key.
        id: String,
    },
    /// Sends a draft for review.
    Submit(ActorArgs),
    /// Approves (publishes) an entry in review.
    #[command(alias = "publish")]
    Approve {
        #[command(flatten)]
        who: ActorArgs,
        /// A note for the record.
        #[arg(long)]
        note: Option<String>,
    },
    /// Sends an entry in review back to draft.
    Reject {
        #[command(flatten)]
        who: ActorArgs,
        /// Why, for the author.
        #[arg(long)]
        note: String,
    },
    /// Withdraws a published entry.
    Retire {
        #[command(flatten)]
        who: ActorArgs,
        /// Why.
        #[arg(long)]
        note: Option<String>,
    },
    /// Brings back an earlier version's content as a new draft.
    Restore {
        #[command(flatten)]
        who: ActorArgs,
        /// The version to restore.
        #[arg(long)]
        version: u32,
    },
    /// Rebuilds the search index in a new collection and switches to it.
    Reindex,
    /// Builds the search index's HNSW graphs now.
    Optimize,
    /// Searches as a user would and prints the ranked entries with evidence.
    Search {
        /// The question.
        question: String,
        /// Only this category.
        #[arg(long)]
        category: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Counts entries by state.
    Stats,
}

/// Which entry and who acts.
#[derive(Args, Debug)]
pub struct ActorArgs {
    /// Id or external key.
    id: String,
    /// Who does it.
    #[arg(long)]
    actor: String,
}

/// Builds the search index after a bulk write, so the server starts on
/// an indexed store (`wenke serve` keeps it built afterwards; a Qdrant
/// server builds its own).
async fn build_search_index(kb: &KnowledgeBase) -> anyhow::Result<()> {
    if !kb.index_needs_optimizing() {
        return Ok(());
    }
    let spinner = ProgressBar::new_spinner();
    spinner.set_message("building the search index (HNSW)");
    spinner.enable_steady_tick(Duration::from_millis(200));
    let started = std::time::Instant::now();
    kb.optimize().await?;
    spinner.finish_and_clear();
    println!(
        "search index built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn progress_bar(label: &'static str) -> impl Fn(usize, usize) + Sync {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(label);
    move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        if done >= total {
            bar.finish();
        }
    }
}

async fn resolve(kb: &KnowledgeBase, id: &str) -> anyhow::Result<EntryId> {
    match kb.find(id).await? {
        Some(entry) => Ok(entry.id),
        None => bail!("no entry with id or external key {id}"),
    }
}

/// Runs a `wenke kb` command; returns the process exit code.
pub async fn run(store: &StoreArgs, command: KbCommand) -> anyhow::Result<i32> {
    let kb = store.open().await?;
    match command {
        KbCommand::Import {
            paths,
            actor,
            approve_as,
        } => {
            let mut rows = Vec::new();
            for path in &paths {
                let format = Format::detect(path).with_context(|| {
                    format!(
                        "cannot tell the format of {}: use .jsonl, .csv or a directory of .md files",
                        path.display()
                    )
                })?;
                let mut file_rows = read_rows(path, format)?;
                for row in &mut file_rows {
                    row.origin = prefix_origin(path, &row.origin);
                }
                rows.extend(file_rows);
            }
            let started = std::time::Instant::now();
            let total = rows.len();
            let report = kb
                .import(
                    rows,
                    &ImportOptions { actor, approve_as },
                    &progress_bar("importing"),
                )
                .await?;
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{} created, {} updated, {} unchanged, {} rejected ({total} rows in {seconds:.1} s, {:.1} rows/s)",
                report.created,
                report.updated,
                report.unchanged,
                report.errors.len(),
                total as f64 / seconds.max(1e-9)
            );
            for error in &report.errors {
                eprintln!("{}: {}", error.origin, error.message);
            }
            if report.created + report.updated > 0 {
                build_search_index(&kb).await?;
            }
            Ok(if report.errors.is_empty() { 0 } else { 1 })
        }
        KbCommand::Export {
            format,
            out,
            filter,
        } => {
            let entries = kb.list(&filter.to_filter()?).await?;
            match format {
                ExportFormat::Jsonl => {
                    let text: String = entries.iter().map(|e| to_jsonl_line(e) + "\n").collect();
                    write_out(out.as_deref(), text.as_bytes())?;
                }
                ExportFormat::Csv => write_out(out.as_deref(), &to_csv(&entries)?)?,
                ExportFormat::Markdown => {
                    let dir = out.context("--out DIR is required for Markdown export")?;
                    std::fs::create_dir_all(&dir)?;
                    for entry in &entries {
                        let name = entry
                            .content
                            .external_key
                            .clone()
                            .unwrap_or_else(|| entry.id.to_string());
                        let safe: String = name
                            .chars()
                            .map(|c| if c == '/' || c == '\\' { '_' } else { c })
                            .collect();
                        std::fs::write(dir.join(format!("{safe}.md")), to_markdown(entry))?;
                    }
                }
            }
            eprintln!("{} entries exported", entries.len());
            Ok(0)
        }
        KbCommand::List { filter } => {
            for entry in kb.list(&filter.to_filter()?).await? {
                println!(
                    "{}  {:<9}  v{:<3} {}  {}  {}",
                    entry.id,
                    entry.status.as_str(),
                    entry.version,
                    entry.content.category,
                    entry.content.external_key.as_deref().unwrap_or("-"),
                    entry.content.question
                );
            }
            Ok(0)
        }
        KbCommand::Show { id } => {
            let entry = kb
                .find(&id)
                .await?
                .with_context(|| format!("no entry with id or external key {id}"))?;
            println!("{}", serde_json::to_string_pretty(&entry)?);
            Ok(0)
        }
        KbCommand::History { id } => {
            let id = resolve(&kb, &id).await?;
            for revision in kb.history(id).await? {
                println!(
                    "v{:<3} {}  {:<8} {:<12} {} → {}{}",
                    revision.version,
                    revision
                        .at
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                    revision.action,
                    revision.actor,
                    revision
                        .previous_status
                        .map_or("-".to_owned(), |s| s.to_string()),
                    revision.snapshot.status,
                    revision
                        .note
                        .as_deref()
                        .map(|n| format!("  ({n})"))
                        .unwrap_or_default()
                );
            }
            Ok(0)
        }
        KbCommand::Submit(who) => act(&kb, who, Action::Submit).await,
        KbCommand::Approve { who, note } => act(&kb, who, Action::Approve { note }).await,
        KbCommand::Reject { who, note } => act(&kb, who, Action::Reject { note }).await,
        KbCommand::Retire { who, note } => act(&kb, who, Action::Retire { note }).await,
        KbCommand::Restore { who, version } => act(&kb, who, Action::Restore { version }).await,
        KbCommand::Reindex => {
            let name = kb.reindex(&progress_bar("re-indexing")).await?;
            println!("search index rebuilt as {name}");
            build_search_index(&kb).await?;
            Ok(0)
        }
        KbCommand::Optimize => {
            kb.optimize().await?;
            println!("search index optimised");
            Ok(0)
        }
        KbCommand::Search {
            question,
            category,
            json,
        } => {
            let filter = SearchFilter {
                category: parse_category(category.as_deref())?,
                crops: Vec::new(),
            };
            let started = std::time::Instant::now();
            let outcome = kb.search(&question, &filter).await?;
            let elapsed = started.elapsed();
            if json {
                let hits: Vec<serde_json::Value> = outcome
                    .hits
                    .iter()
                    .map(|hit| {
                        serde_json::json!({
                            "id": hit.entry.id,
                            "external_key": hit.entry.content.external_key,
                            "question": hit.entry.content.question,
                            "score": hit.score,
                            "confidence": hit.confidence,
                            "evidence": hit.evidence,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "query": outcome.query,
                        "decision": outcome.decision,
                        "hits": hits,
                    }))?
                );
                return Ok(0);
            }
            println!(
                "读作：{}  词：{}",
                outcome.query.rewritten,
                outcome.query.tokens.join(" / ")
            );
            for rewrite in &outcome.query.rewrites {
                println!(
                    "  改写：{} → {} ({:?})",
                    rewrite.from, rewrite.to, rewrite.kind
                );
            }
            println!(
                "决定：{}（{:.0} ms）",
                match outcome.decision {
                    Decision::Answer => "直接回答",
                    Decision::Suggest => "你是想问",
                    Decision::Abstain => "暂无权威答案",
                },
                elapsed.as_secs_f64() * 1000.0
            );
            for (rank, hit) in outcome.hits.iter().enumerate() {
                let e = &hit.evidence;
                println!(
                    "{:>2}. {:.2}  {}  [{}]",
                    rank + 1,
                    hit.confidence,
                    hit.entry.content.question,
                    hit.entry.content.external_key.as_deref().unwrap_or("-"),
                );
                println!(
                    "    匹配：{}（{:?}{}）dense {} lexical {} coverage {:.2}",
                    e.matched_text,
                    e.matched_kind,
                    if e.exact { "，完全一致" } else { "" },
                    e.dense.map_or("-".into(), |d| format!("{d:.3}")),
                    e.lexical.map_or("-".into(), |l| format!("{l:.2}")),
                    e.coverage
                );
            }
            Ok(0)
        }
        KbCommand::Stats => {
            for (status, count) in kb.count_by_status().await? {
                println!("{:<10} {count}", status.as_str());
            }
            Ok(0)
        }
    }
}

async fn act(kb: &KnowledgeBase, who: ActorArgs, action: Action) -> anyhow::Result<i32> {
    let id = resolve(kb, &who.id).await?;
    let name = action.name();
    let entry = kb.apply(id, action, &who.actor).await?;
    println!(
        "{name}: {} is now {} (version {})",
        entry.id, entry.status, entry.version
    );
    Ok(0)
}

fn prefix_origin(path: &Path, origin: &kb::import::RowOrigin) -> kb::import::RowOrigin {
    match origin {
        kb::import::RowOrigin::Line(line) => {
            kb::import::RowOrigin::File(PathBuf::from(format!("{}:{line}", path.display())))
        }
        other => other.clone(),
    }
}

fn write_out(out: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(bytes)?;
            Ok(())
        }
    }
}

/// One line of an evaluation file.
#[derive(serde::Deserialize)]
struct EvalCase {
    question: String,
    expected: Option<String>,
}

/// `wenke eval`: retrieval quality on labelled questions.
pub async fn eval(
    store: &StoreArgs,
    files: &[PathBuf],
    features_out: Option<&Path>,
    show_misses: bool,
) -> anyhow::Result<i32> {
    let kb = store.open().await?;
    let mut cases = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let case: EvalCase = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not an eval line", file.display(), index + 1))?;
            cases.push(case);
        }
    }
    let mut answerable = 0usize;
    let mut hit1 = 0usize;
    let mut hit3 = 0usize;
    let mut reciprocal_ranks = 0f64;
    let mut answered = 0usize;
    let mut answered_right = 0usize;
    let mut unanswerable = 0usize;
    let mut abstained = 0usize;
    let mut latencies = Vec::new();
    let mut dump = String::new();
    let report = progress_bar("evaluating");
    for (done, case) in cases.iter().enumerate() {
        let started = std::time::Instant::now();
        let outcome = kb.search(&case.question, &SearchFilter::default()).await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        let keys: Vec<Option<&str>> = outcome
            .hits
            .iter()
            .map(|h| h.entry.content.external_key.as_deref())
            .collect();
        if features_out.is_some() {
            let hits: Vec<serde_json::Value> = outcome
                .hits
                .iter()
                .map(|h| {
                    serde_json::json!({
                        "key": h.entry.content.external_key,
                        "dense": h.features.dense,
                        "coverage": h.features.coverage,
                        "margin": h.features.margin,
                        "entry_coverage": h.features.entry_coverage,
                        "missing": h.features.missing,
                        "answer_dense": h.features.answer_dense,
                        "matched_question": h.features.matched_question,
                        "matched_answer": h.features.matched_answer,
                        "rival_entry_coverage": h.features.rival_entry_coverage,
                        "absent_subject": h.features.absent_subject,
                        "promoted": h.features.promoted,
                        "exact": h.evidence.exact,
                        "kind": h.evidence.matched_kind,
                    })
                })
                .collect();
            dump.push_str(&serde_json::to_string(&serde_json::json!({
                "question": case.question,
                "expected": case.expected,
                "hits": hits,
            }))?);
            dump.push('\n');
        }
        match &case.expected {
            Some(expected) => {
                answerable += 1;
                let rank = keys
                    .iter()
                    .take(10)
                    .position(|k| *k == Some(expected.as_str()));
                if rank == Some(0) {
                    hit1 += 1;
                }
                if rank.is_some_and(|r| r < 3) {
                    hit3 += 1;
                }
                if let Some(rank) = rank {
                    reciprocal_ranks += 1.0 / (rank as f64 + 1.0);
                }
                if outcome.decision == Decision::Answer {
                    answered += 1;
                    if rank == Some(0) {
                        answered_right += 1;
                    }
                }
                if show_misses && rank != Some(0) {
                    eprintln!(
                        "MISS  {}  expected {expected}, got {} ({:.2})",
                        case.question,
                        keys.first().copied().flatten().unwrap_or("-"),
                        outcome.confidence()
                    );
                }
            }
            None => {
                unanswerable += 1;
                if outcome.decision != Decision::Answer {
                    abstained += 1;
                } else if show_misses {
                    eprintln!(
                        "FALSE ANSWER  {}  → {} ({:.2})",
                        case.question,
                        keys.first().copied().flatten().unwrap_or("-"),
                        outcome.confidence()
                    );
                }
            }
        }
        report(done + 1, cases.len());
    }
    if let Some(path) = features_out {
        std::fs::write(path, dump).with_context(|| format!("writing {}", path.display()))?;
    }
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[index]
    };
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    println!("questions            {}", cases.len());
    println!("answerable           {answerable}");
    println!("hit@1                {:.3}", ratio(hit1, answerable));
    println!("hit@3                {:.3}", ratio(hit3, answerable));
    println!(
        "MRR@10               {:.3}",
        if answerable == 0 {
            0.0
        } else {
            reciprocal_ranks / answerable as f64
        }
    );
    println!("answered             {:.3}", ratio(answered, answerable));
    println!(
        "answered correctly   {:.3}  (of those answered: {:.3})",
        ratio(answered_right, answerable),
        ratio(answered_right, answered)
    );
    println!("no-answer questions  {unanswerable}");
    println!("abstained on them    {:.3}", ratio(abstained, unanswerable));
    println!(
        "latency ms           p50 {:.1}  p95 {:.1}  p99 {:.1}  (embedding included)",
        percentile(0.5),
        percentile(0.95),
        percentile(0.99)
    );
    Ok(0)
}
