//! `wenke bench kb`: the search step of the knowledge base without the
//! model, on the embedded store or a Qdrant server, at a chosen size.
//!
//! Vectors are synthetic but embedding-like: unit vectors scattered around a
//! few hundred topic centroids, so neighbourhoods are dense and uneven as
//! real sentence embeddings are (uniform random vectors would make HNSW look
//! better than it is). Every seven points make one entry (a question, five
//! phrasings and its answer, with the payload a real index point has) with
//! one record, status and category, in a collection laid out by the
//! knowledge base's own [`kb::base::index_spec`]; the points' words follow a
//! Zipf law like the demo KB's after the analyzer has dropped its
//! stopwords, an answer having as many words as a real one. Each timed
//! search does what `KnowledgeBase::search` does after embedding: the
//! exact-phrasing lookup beside a filtered dense and a filtered lexical
//! search, then the read of the top entries' records beside the scoring of
//! the leading entries' answers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kb::base::{
    ANSWER_AVERAGE_TOKENS, ANSWERS_SCORED, PHRASING_AVERAGE_TOKENS, PhrasingKind,
    answer_scoring_request, index_spec,
};
use kb::lexical::{SparseVector, document_vector, query_vector};
use kb::store::edge::EdgeStore;
use kb::store::{
    CollectionSpec, Condition, Exactness, Filter, NewPoint, Payload, PointStore, QueryVector,
    SearchRequest,
};
use serde_json::json;
use uuid::Uuid;

/// Settings of one run.
#[derive(Clone)]
pub struct KbBenchConfig {
    /// Index points (phrasings) to store.
    pub points: usize,
    /// Timed searches.
    pub queries: usize,
    /// Where to build the store; a temporary directory when absent.
    pub dir: Option<PathBuf>,
    /// Vector dimension.
    pub dim: usize,
    /// A Qdrant server's store to run on instead of an embedded one in
    /// `dir` (the reopen figure is then not measured).
    pub server: Option<Arc<dyn PointStore>>,
}

const CATEGORIES: [&str; 7] = [
    "农业种植",
    "畜牧水产",
    "健康医学",
    "科学辟谣",
    "防灾减灾",
    "生活科普",
    "前沿科技",
];
/// Index points per entry: a real entry has its question, about five
/// alternative phrasings and its answer.
const POINTS_PER_ENTRY: usize = 7;
/// Distinct words of the synthetic vocabulary.
const VOCABULARY: usize = 20_000;
/// Ranks added to every word's rank in the Zipf law the words are drawn
/// from. The analyzer drops the commonest words (了, 的, 怎么); in the demo
/// KB the commonest word left (吃, 打, 药) is in ~5% of the phrasings,
/// which a Zipf law shifted by 20 ranks reproduces with 7 words a point.
const ZIPF_SHIFT: f64 = 20.0;
const WORDS_PER_POINT: usize = 7;
/// Words of an answer point (the analyzer's tokens of a real answer).
const WORDS_PER_ANSWER: usize = ANSWER_AVERAGE_TOKENS as usize;
const WORDS_PER_QUERY: usize = 4;
/// The most frequent words of the vocabulary, real domain terms; the rest
/// are numbered.
const WORDS: [&str; 24] = [
    "马铃薯",
    "晚疫病",
    "水稻",
    "稻瘟病",
    "玉米",
    "草地贪夜蛾",
    "甘薯",
    "储藏",
    "柑橘",
    "黄龙病",
    "茶叶",
    "高温",
    "干旱",
    "滑坡",
    "中暑",
    "隔夜菜",
    "致癌",
    "生猪",
    "非洲猪瘟",
    "辣椒",
    "疫病",
    "油菜",
    "菌核病",
    "猕猴桃",
];

/// A small deterministic generator (xorshift), so runs are repeatable
/// without pulling a random-number crate into the binary for a benchmark.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        // Box–Muller.
        let u1 = self.unit().max(1e-7);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn near(rng: &mut Rng, centroid: &[f32], spread: f32) -> Vec<f32> {
    normalised(centroid.iter().map(|c| c + spread * rng.normal()).collect())
}

/// Draws words by a shifted Zipf law over [`VOCABULARY`] ranks.
struct Vocabulary {
    /// Cumulative probability of each rank.
    cumulative: Vec<f64>,
}

impl Vocabulary {
    fn new() -> Self {
        let weights: Vec<f64> = (1..=VOCABULARY)
            .map(|rank| 1.0 / (rank as f64 + ZIPF_SHIFT))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut sum = 0.0;
        let cumulative = weights
            .iter()
            .map(|weight| {
                sum += weight / total;
                sum
            })
            .collect();
        Self { cumulative }
    }

    fn word(&self, rng: &mut Rng) -> String {
        let draw = f64::from(rng.unit());
        let rank = self.cumulative.partition_point(|&c| c < draw);
        match WORDS.get(rank) {
            Some(word) => (*word).to_owned(),
            None => format!("词{rank}"),
        }
    }

    fn words(&self, rng: &mut Rng, count: usize) -> Vec<String> {
        (0..count).map(|_| self.word(rng)).collect()
    }
}

/// Waits until the store has read what it loaded into memory (see
/// [`PointStore::warming_up`]) and returns how long that took.
async fn wait_until_warm(store: &dyn PointStore) -> f64 {
    let started = Instant::now();
    while store.warming_up() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed().as_secs_f64()
}

/// This process's major page faults so far (pages read from disk on
/// first touch), from `/proc/self/stat`; `None` off Linux. Read by hand:
/// one field of one line does not need a crate.
fn major_page_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name start at field 3 (state);
    // majflt is field 12.
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(12 - 3)?.parse().ok()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// Runs the benchmark and prints its figures.
pub async fn run(config: &KbBenchConfig) -> anyhow::Result<()> {
    let temp;
    let root = match &config.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_owned()
        }
    };
    let collection = "bench_index";
    let records = "bench_entries";
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let centroids: Vec<Vec<f32>> = (0..300)
        .map(|_| normalised((0..config.dim).map(|_| rng.normal()).collect()))
        .collect();

    let store: Arc<dyn PointStore> = match &config.server {
        Some(server) => Arc::clone(server),
        None => Arc::new(EdgeStore::open(&root).context("opening the bench store")?),
    };
    store
        .ensure_collection(&index_spec(collection.into(), config.dim))
        .await?;
    store
        .ensure_collection(&CollectionSpec {
            keyword_fields: vec!["status"],
            ..CollectionSpec::payload_only(records)
        })
        .await?;

    let vocabulary = Vocabulary::new();
    let started = Instant::now();
    const BATCH: usize = 2000;
    // What the points of one entry share.
    let mut centroid = 0;
    let mut status = "published";
    let mut category = CATEGORIES[0];
    // A store kept with --dir from an earlier run of the same size is reused.
    let mut written = store.count(collection, Filter::default()).await?;
    let reused = written >= config.points;
    while written < config.points {
        let n = BATCH.min(config.points - written);
        let mut points = Vec::with_capacity(n);
        let mut entries = Vec::with_capacity(n);
        for i in written..written + n {
            let entry = i / POINTS_PER_ENTRY;
            if i % POINTS_PER_ENTRY == 0 {
                centroid = rng.below(centroids.len());
                status = if rng.below(10) == 0 {
                    "draft"
                } else {
                    "published"
                };
                category = CATEGORIES[rng.below(CATEGORIES.len())];
                entries.push(NewPoint {
                    id: Uuid::from_u128(entry as u128),
                    dense: None,
                    lexical: None,
                    payload: json!({"status": status, "question": format!("问题{entry}"), "answer": "答".repeat(200)})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                });
            }
            let kind = match i % POINTS_PER_ENTRY {
                0 => PhrasingKind::Question,
                slot if slot == POINTS_PER_ENTRY - 1 => PhrasingKind::Answer,
                _ => PhrasingKind::Alternative,
            };
            let (words, average) = if kind == PhrasingKind::Answer {
                (
                    vocabulary.words(&mut rng, WORDS_PER_ANSWER),
                    ANSWER_AVERAGE_TOKENS,
                )
            } else {
                (
                    vocabulary.words(&mut rng, WORDS_PER_POINT),
                    PHRASING_AVERAGE_TOKENS,
                )
            };
            let mut payload: Payload = json!({
                "entry_id": Uuid::from_u128(entry as u128).to_string(),
                "version": 1,
                "kind": kind,
                "status": status,
                "category": category,
                "crops": [],
                "regions": [],
                "months": [],
                "tokens": words,
            })
            .as_object()
            .cloned()
            .unwrap_or_default();
            if kind == PhrasingKind::Answer {
                payload.insert("text".into(), json!("答".repeat(200)));
            } else {
                payload.insert("canonical".into(), json!(format!("问题{i}")));
                payload.insert("text".into(), json!(format!("问题{i}")));
            }
            points.push(NewPoint {
                id: Uuid::from_u128(i as u128),
                dense: Some(near(&mut rng, &centroids[centroid], 0.08)),
                lexical: Some(document_vector(&words, average)),
                payload,
            });
        }
        store.upsert(collection, points).await?;
        store.upsert(records, entries).await?;
        written += n;
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    if !reused {
        store.optimize(collection).await?;
    }
    let optimize_seconds = started.elapsed().as_secs_f64();

    let queries: Vec<(Vec<f32>, SparseVector, &str)> = (0..config.queries)
        .map(|_| {
            let centroid = &centroids[rng.below(centroids.len())];
            (
                near(&mut rng, centroid, 0.08),
                query_vector(&vocabulary.words(&mut rng, WORDS_PER_QUERY)),
                CATEGORIES[rng.below(CATEGORIES.len())],
            )
        })
        .collect();
    let filter_for = |category: &str| {
        Filter::must(Condition::keyword("status", "published"))
            .and(Condition::keyword("category", category))
    };

    // Warm-up, then timed searches.
    let mut latencies = Vec::with_capacity(queries.len());
    // Per step: exact lookup, dense and lexical together, records and
    // answers together.
    let mut steps: [Vec<Duration>; 3] = Default::default();
    // Dense and lexical searches timed one at a time.
    let mut alone: [Vec<Duration>; 2] = Default::default();
    // Timed as a server is used: once `/readyz` would let traffic in.
    let warm_up_seconds = wait_until_warm(store.as_ref()).await;
    let faults_before = major_page_faults();
    let mut recall_sum = 0.0;
    let mut tops: Vec<Vec<Uuid>> = Vec::with_capacity(queries.len());
    for (round, (dense, sparse, category)) in queries.iter().enumerate() {
        let filter = filter_for(category);
        let started = Instant::now();
        let mut mark = Instant::now();
        let mut lap = |steps: &mut [Vec<Duration>; 3], i: usize| {
            steps[i].push(mark.elapsed());
            mark = Instant::now();
        };
        let (_exact, _) = store
            .scroll(
                collection,
                filter
                    .clone()
                    .and(Condition::keyword("canonical", "不存在的问题")),
                None,
                1,
            )
            .await?;
        lap(&mut steps, 0);
        // Dense and lexical searches run concurrently, as in KnowledgeBase::search.
        let (hits, _lexical) = tokio::try_join!(
            store.search(SearchRequest {
                collection: collection.into(),
                query: QueryVector::Dense(dense.clone()),
                filter: filter.clone(),
                limit: 40,
                exactness: Exactness::Indexed,
            }),
            store.search(SearchRequest {
                collection: collection.into(),
                query: QueryVector::Lexical(sparse.clone()),
                filter: filter.clone(),
                limit: 40,
                exactness: Exactness::Indexed,
            })
        )?;
        lap(&mut steps, 1);
        let top: Vec<Uuid> = hits.iter().take(10).map(|h| h.id).collect();
        let mut top_entries: Vec<Uuid> = Vec::new();
        for entry in hits
            .iter()
            .filter_map(|h| h.payload.get("entry_id")?.as_str()?.parse().ok())
        {
            if !top_entries.contains(&entry) {
                top_entries.push(entry);
            }
        }
        top_entries.truncate(10);
        let leading: Vec<String> = top_entries
            .iter()
            .take(ANSWERS_SCORED)
            .map(Uuid::to_string)
            .collect();
        // As in KnowledgeBase::search: the records beside the answers' scores.
        let (_records, _answers) = tokio::try_join!(
            store.get(records, top_entries),
            store.search(answer_scoring_request(collection, dense.clone(), leading))
        )?;
        lap(&mut steps, 2);
        let elapsed = started.elapsed();
        if round >= 10.min(queries.len() / 10) {
            latencies.push(elapsed);
        }
        // Each signal's search once more on its own, outside the timed
        // step, to tell which of the two makes its time.
        for (signal, query) in [
            QueryVector::Dense(dense.clone()),
            QueryVector::Lexical(sparse.clone()),
        ]
        .into_iter()
        .enumerate()
        {
            let started = Instant::now();
            store
                .search(SearchRequest {
                    collection: collection.into(),
                    query,
                    filter: filter.clone(),
                    limit: 40,
                    exactness: Exactness::Indexed,
                })
                .await?;
            alone[signal].push(started.elapsed());
        }
        tops.push(top);
    }
    let faults_during_searches = faults_before.zip(major_page_faults()).map(|(b, a)| a - b);
    // Recall is measured after the timed loop: an exact search scans every
    // filtered vector (~140 MB at 700k points), which would leave each
    // timed step to start with CPU caches no serving process has.
    for ((dense, _, category), top) in queries.iter().zip(&tops) {
        let truth = store
            .search(SearchRequest {
                collection: collection.into(),
                query: QueryVector::Dense(dense.clone()),
                filter: filter_for(category),
                limit: 10,
                exactness: Exactness::Exact,
            })
            .await?;
        let truth: std::collections::HashSet<Uuid> = truth.iter().map(|h| h.id).collect();
        let found = top.iter().filter(|id| truth.contains(id)).count();
        recall_sum += if truth.is_empty() {
            1.0
        } else {
            found as f64 / truth.len() as f64
        };
    }
    latencies.sort();
    for step in steps.iter_mut().chain(alone.iter_mut()) {
        step.sort();
    }
    drop(store);

    let reopen_seconds = if config.server.is_none() {
        let started = Instant::now();
        let reopened = EdgeStore::open(&root)?;
        let (first, _) = reopened
            .scroll(collection, Filter::default(), None, 1)
            .await?;
        anyhow::ensure!(!first.is_empty(), "reopened store is empty");
        let reopen = started.elapsed().as_secs_f64();
        Some((reopen, wait_until_warm(&reopened).await))
    } else {
        None
    };

    println!("points               {}", config.points);
    println!(
        "load                 {load_seconds:.1} s ({:.0} points/s, flushed per batch of {BATCH})",
        config.points as f64 / load_seconds
    );
    println!("optimise (HNSW)      {optimize_seconds:.1} s (on the server: waiting for its own)");
    println!("warm-up waited       {warm_up_seconds:.2} s (page cache, before the timed searches)");
    println!(
        "search step          p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} timed, filter status+category)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        latencies.len()
    );
    match faults_during_searches {
        Some(faults) => println!("  major page faults  {faults} during the timed searches"),
        None => println!("  major page faults  not readable here"),
    }
    for (name, step) in ["exact lookup", "dense ∥ lexical", "records ∥ answers"]
        .iter()
        .zip(&steps)
    {
        println!(
            "  {name:<18} p50 {:.2} ms  p99 {:.2} ms",
            percentile(step, 0.5),
            percentile(step, 0.99)
        );
    }
    for (name, signal) in ["dense alone", "lexical alone"].iter().zip(&alone) {
        println!(
            "  ({name:<16} p50 {:.2} ms  p99 {:.2} ms, apart from the step)",
            percentile(signal, 0.5),
            percentile(signal, 0.99)
        );
    }
    println!(
        "filtered recall@10   {:.4} (HNSW vs exact, same filter)",
        recall_sum / queries.len().max(1) as f64
    );
    match reopen_seconds {
        Some((seconds, warm_up)) => {
            println!("reopen + first read  {seconds:.2} s");
            println!("  then warm-up       {warm_up:.2} s (until /readyz would say ready)");
        }
        None => println!("reopen + first read  not measured (server store)"),
    }
    Ok(())
}
