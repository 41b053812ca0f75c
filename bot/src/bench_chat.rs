//! `wenke bench chat`: load on `POST /api/chat` (or, with `--target
//! wechat`, on `POST /wechat` as WeChat sends it) of a running server.
//!
//! A fixed number of clients, each sending its next question as soon as
//! the previous reply arrives, for a fixed time. Questions come from the
//! retrieval dev sets: `distinct` cycles through all of them (each client
//! starting at its own offset, so the caches rarely help until the pool runs
//! out), `fresh` never sends the same text twice (after the first lap each
//! question comes with one of the openers and closers people write, 请问… or
//! …谢谢, so every message needs its own query embedding), `repeated` asks
//! the same few questions again and again (what the caches are for). Each
//! client is its own user, so rate limits apply per client as in real use;
//! start the server with a high `--rate-limit` for the bench.
//!
//! `realistic` mixes what real traffic holds: 70% science questions drawn
//! with Zipf-distributed popularity from the answerable dev-set questions
//! (a few are asked very often, most rarely), 10% follow-ups to the
//! client's last question ("那打啥子药", from `bot/eval/followups.jsonl`),
//! 10% turns of demand-filing conversations (`bot/eval/intake.jsonl`, each
//! conversation by its own user, to the end: filing included), and 10%
//! questions the knowledge base cannot answer. It reports each share's
//! latency on its own.
//!
//! Against `/api/chat` it also reads each reply's `Server-Timing` header
//! and prints how much of each reply's latency was its query vector and
//! how much everything else, in the engine and around it.
//!
//! The WeChat target signs every message with the account's token and, when
//! an EncodingAESKey is given, sends it in safe mode and decrypts the
//! passive reply; a reply of `success` (the answer missed the budget) counts
//! as `late`, not as a reply.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;

/// Which questions the clients ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mix {
    /// Every dev-set question in turn.
    Distinct,
    /// Every message a text the server has not seen in this run: the
    /// dev-set questions, then the same with openers and closers.
    Fresh,
    /// Five questions, over and over.
    Repeated,
    /// 70% questions with Zipf-distributed repeats, 10% follow-ups, 10%
    /// demand-filing turns, 10% unanswerable questions.
    Realistic,
}

/// Which endpoint the clients load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The web chat API, `POST /api/chat`.
    Web,
    /// The WeChat Official Account endpoint, `POST /wechat`.
    Wechat,
}

/// How to talk to `/wechat` like WeChat does.
#[derive(Clone)]
pub struct WechatClient {
    /// The account's server token.
    pub token: String,
    /// Its AppID.
    pub app_id: String,
    /// Safe mode's crypto, when an EncodingAESKey is configured.
    pub crypto: Option<Arc<webhooks::wechat::crypto::MessageCrypto>>,
}

/// What to run.
pub struct ChatBenchConfig {
    /// The servers, e.g. `http://127.0.0.1:8080`: one, or several
    /// instances of one service, which get the requests in turn.
    pub urls: Vec<String>,
    /// Which endpoint.
    pub target: Target,
    /// The WeChat account, for [`Target::Wechat`].
    pub wechat: Option<WechatClient>,
    /// Concurrent clients.
    pub clients: usize,
    /// How long to send.
    pub duration: Duration,
    /// Which questions.
    pub mix: Mix,
    /// Dev-set files (`{"question": …, "expected": key or null}` per line).
    pub question_files: Vec<PathBuf>,
    /// Follow-up conversations (`{"turns": […]}` per line), for the
    /// realistic mix.
    pub followup_file: PathBuf,
    /// Scripted filing conversations (`{"turns": […]}` per line), for the
    /// realistic mix.
    pub intake_file: PathBuf,
}

/// One dev-set question.
struct DevQuestion {
    text: String,
    /// The set names an entry that answers it (`expected` is not null).
    answerable: bool,
}

fn jsonl(file: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| format!("{}:{}", file.display(), i + 1))
        })
        .collect()
}

fn questions(files: &[PathBuf]) -> anyhow::Result<Vec<DevQuestion>> {
    let mut questions = Vec::new();
    for file in files {
        for case in jsonl(file)? {
            if let Some(question) = case["question"].as_str() {
                questions.push(DevQuestion {
                    text: question.to_owned(),
                    answerable: !case["expected"].is_null(),
                });
            }
        }
    }
    anyhow::ensure!(!questions.is_empty(), "no questions in {files:?}");
    Ok(questions)
}

/// The `turns` of each conversation in a file.
fn conversations(file: &Path) -> anyhow::Result<Vec<Vec<String>>> {
    let mut all = Vec::new();
    for case in jsonl(file)? {
        let turns: Vec<String> = case["turns"]
            .as_array()
            .map(|turns| {
                turns
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if !turns.is_empty() {
            all.push(turns);
        }
    }
    anyhow::ensure!(!all.is_empty(), "no conversations in {}", file.display());
    Ok(all)
}

/// What the realistic mix draws from.
struct RealisticPools {
    /// Answerable questions, most popular first.
    popular: Vec<String>,
    /// `zipf_cumulative[r]`: the chance of drawing one of ranks `0..=r`.
    zipf_cumulative: Vec<f64>,
    unanswerable: Vec<String>,
    followups: Vec<String>,
    intake: Vec<Vec<String>>,
}

impl RealisticPools {
    fn load(config: &ChatBenchConfig, questions: Vec<DevQuestion>) -> anyhow::Result<Self> {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let (answerable, unanswerable): (Vec<_>, Vec<_>) =
            questions.into_iter().partition(|q| q.answerable);
        let mut popular: Vec<String> = answerable.into_iter().map(|q| q.text).collect();
        let unanswerable: Vec<String> = unanswerable.into_iter().map(|q| q.text).collect();
        anyhow::ensure!(
            !popular.is_empty() && !unanswerable.is_empty(),
            "the realistic mix needs answerable and unanswerable questions"
        );
        // Popularity must not follow the files' topic order; a fixed seed
        // keeps runs comparable.
        popular.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
        let followups: Vec<String> = conversations(&config.followup_file)?
            .into_iter()
            .flat_map(|turns| turns.into_iter().skip(1))
            .collect();
        let intake = conversations(&config.intake_file)?;
        Ok(Self {
            zipf_cumulative: zipf_cumulative(popular.len(), 1.0),
            popular,
            unanswerable,
            followups,
            intake,
        })
    }

    /// A popular question: rank `r` with probability ∝ 1 / (r + 1).
    fn popular_question(&self) -> &str {
        // Inverse-CDF lookup over precomputed sums: rand_distr's Zipf would
        // be a new dependency for this one line.
        let u: f64 = rand::random();
        let rank = self
            .zipf_cumulative
            .partition_point(|c| *c < u)
            .min(self.popular.len() - 1);
        &self.popular[rank]
    }
}

/// Cumulative probabilities of a Zipf law with exponent `s` over `n` ranks.
fn zipf_cumulative(n: usize, s: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|rank| 1.0 / (rank as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut sum = 0.0;
    weights
        .iter()
        .map(|w| {
            sum += w / total;
            sum
        })
        .collect()
}

/// The share of the realistic mix a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Share {
    Question,
    Followup,
    Demand,
    Unanswerable,
}

/// One client's place in its conversations, for the realistic mix.
#[derive(Default)]
struct ClientState {
    /// The user who asked the client's last science question: follow-ups
    /// come from them, whatever other users sent in between (a client
    /// stands for many people).
    asker: Option<String>,
    /// The filing conversation under way: its user, script and next turn.
    filing: Option<(String, usize, usize)>,
    users: usize,
}

impl ClientState {
    fn new_user(&mut self, client_user: &str) -> String {
        self.users += 1;
        format!("{client_user}-{}", self.users)
    }

    /// The next message of the realistic mix: its share, user and text.
    fn next(&mut self, pools: &RealisticPools, client_user: &str) -> (Share, String, String) {
        let draw: f64 = rand::random();
        if draw >= 0.9 {
            let text = &pools.unanswerable[rand::random_range(0..pools.unanswerable.len())];
            return (
                Share::Unanswerable,
                self.new_user(client_user),
                text.clone(),
            );
        }
        if draw >= 0.8 {
            let (user, script, turn) = match self.filing.take() {
                Some(filing) => filing,
                None => (
                    self.new_user(client_user),
                    rand::random_range(0..pools.intake.len()),
                    0,
                ),
            };
            let turns = &pools.intake[script];
            if turn + 1 < turns.len() {
                self.filing = Some((user.clone(), script, turn + 1));
            }
            return (Share::Demand, user, turns[turn].clone());
        }
        if draw >= 0.7
            && let Some(user) = self.asker.clone()
        {
            let text = &pools.followups[rand::random_range(0..pools.followups.len())];
            return (Share::Followup, user, text.clone());
        }
        let user = self.new_user(client_user);
        self.asker = Some(user.clone());
        (Share::Question, user, pools.popular_question().to_owned())
    }
}

/// Openers and closers people put around a question; each pair makes the
/// pool's questions new texts for the server's caches.
const OPENERS: [&str; 8] = [
    "",
    "请问",
    "你好，",
    "老师，",
    "问一下，",
    "专家，",
    "我想问",
    "请教一下，",
];
// No bare "？": the server's normaliser drops trailing punctuation, so it
// would make no new text.
const CLOSERS: [&str; 5] = ["", "，急", "，在线等", "，麻烦了", "，谢谢"];

/// The `index`-th message of the fresh mix: lap `index / pool` wraps the
/// question in that lap's opener and closer. Distinct for 40 laps.
fn fresh_question(pool: &[String], index: usize) -> String {
    let lap = index / pool.len();
    let opener = OPENERS[lap % OPENERS.len()];
    let closer = CLOSERS[(lap / OPENERS.len()) % CLOSERS.len()];
    let question = pool[index % pool.len()].trim_end_matches(['？', '?']);
    format!("{opener}{question}{closer}")
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
    let dev_questions = questions(&config.question_files)?;
    let (realistic, mut pool) = if config.mix == Mix::Realistic {
        let pools = RealisticPools::load(config, dev_questions)?;
        let popular = pools.popular.clone();
        (Some(Arc::new(pools)), popular)
    } else {
        let texts: Vec<String> = dev_questions.into_iter().map(|q| q.text).collect();
        (None, texts)
    };
    if config.mix == Mix::Repeated {
        pool.truncate(5);
    }
    let pool = Arc::new(pool);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.clients)
        .build()?;
    anyhow::ensure!(!config.urls.is_empty(), "the chat bench needs a server URL");
    let bases: Arc<Vec<String>> = Arc::new(
        config
            .urls
            .iter()
            .map(|url| url.trim_end_matches('/').to_owned())
            .collect(),
    );
    let wechat = match config.target {
        Target::Web => None,
        Target::Wechat => Some(
            config
                .wechat
                .clone()
                .context("the WeChat target needs the account's token (WENKE_WECHAT_TOKEN)")?,
        ),
    };
    let deadline = Instant::now() + config.duration;
    let run_id = uuid::Uuid::new_v4();
    // WeChat's MsgIds are numbers; this run's differ from earlier runs'.
    let run_stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 100_000)
        .unwrap_or_default();
    let clients = config.clients.max(1);
    let mix = config.mix;
    let mut tasks = Vec::new();
    for index in 0..config.clients {
        let client = client.clone();
        let bases = Arc::clone(&bases);
        let wechat = wechat.clone();
        let pool = Arc::clone(&pool);
        let realistic = realistic.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut splits = Vec::new();
            let mut errors = 0usize;
            let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
            let mut shares: std::collections::BTreeMap<Share, (Vec<f64>, usize)> =
                Default::default();
            let mut state = ClientState::default();
            let mut next = match mix {
                Mix::Fresh | Mix::Realistic => 0,
                Mix::Distinct | Mix::Repeated => index * pool.len() / clients,
            };
            let client_user = format!("bench-{run_id}-{index}");
            let mut sent = 0usize;
            while Instant::now() < deadline {
                // Dev-set questions are unrelated to each other: in the
                // distinct mix each comes from a new user, so one question
                // routed to a demand does not turn the next ones into
                // answers of a filing form.
                let (share, user, question) = match (mix, &realistic) {
                    (Mix::Realistic, Some(pools)) => state.next(pools, &client_user),
                    // Clients take interleaved indexes, so no two send one text.
                    (Mix::Fresh, _) => (
                        Share::Question,
                        format!("{client_user}-{next}"),
                        fresh_question(&pool, next * clients + index),
                    ),
                    (Mix::Repeated, _) => (
                        Share::Question,
                        client_user.clone(),
                        pool[next % pool.len()].clone(),
                    ),
                    _ => (
                        Share::Question,
                        format!("{client_user}-{next}"),
                        pool[next % pool.len()].clone(),
                    ),
                };
                let question = &question;
                // Round robin without stickiness: a conversation's turns
                // reach different instances, which must behave as one.
                let base = &bases[(index + sent) % bases.len()];
                sent += 1;
                next += 1;
                let started = Instant::now();
                let outcome = match &wechat {
                    None => web_request(&client, base, &user, question).await,
                    Some(account) => {
                        let message_id = format!("{run_stamp}{index:03}{next:09}");
                        wechat_request(&client, base, account, &user, &message_id, question)
                            .await
                            .map(|kind| Answered { kind, timing: None })
                    }
                };
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                let share = shares.entry(share).or_default();
                match outcome {
                    Some(Answered { kind, timing }) => {
                        if kind != "late" {
                            latencies.push(elapsed);
                            share.0.push(elapsed);
                        }
                        if let Some(timing) = timing {
                            splits.push(LatencySplit {
                                vector_ms: timing.vector,
                                beyond_vector_ms: elapsed - timing.vector,
                                engine_beyond_vector_ms: timing.engine - timing.vector,
                            });
                        }
                        *kinds.entry(kind).or_default() += 1;
                    }
                    None => {
                        errors += 1;
                        share.1 += 1;
                    }
                }
            }
            (latencies, splits, errors, kinds, shares)
        }));
    }
    let mut latencies = Vec::new();
    let mut splits = Vec::new();
    let mut errors = 0;
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    let mut shares: std::collections::BTreeMap<Share, (Vec<f64>, usize)> = Default::default();
    for task in tasks {
        let (mut l, mut split, e, k, s) = task.await?;
        latencies.append(&mut l);
        splits.append(&mut split);
        errors += e;
        for (kind, n) in k {
            *kinds.entry(kind).or_default() += n;
        }
        for (share, (mut l, e)) in s {
            let total = shares.entry(share).or_default();
            total.0.append(&mut l);
            total.1 += e;
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let seconds = config.duration.as_secs_f64();
    println!(
        "chat bench: {:?} target, {} clients, {} server(s), {:?} mix, {:.0} s, {} questions in the pool",
        config.target,
        config.clients,
        bases.len(),
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
    print_latency_split(&splits);
    if config.mix == Mix::Realistic {
        for (share, (mut latencies, errors)) in shares {
            latencies.sort_by(|a, b| a.total_cmp(b));
            println!(
                "  {share:?}: {} replies, {errors} errors; p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
                latencies.len(),
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.95),
                percentile(&latencies, 0.99),
            );
        }
    }
    Ok(())
}

/// A reply that came back.
struct Answered {
    /// The reply's kind (`late` for a WeChat reply that missed its budget).
    kind: String,
    /// The server's `Server-Timing` figures, when it sent them.
    timing: Option<ServerTiming>,
}

/// A reply's `Server-Timing` figures, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ServerTiming {
    /// Waiting for query vectors.
    vector: f64,
    /// The whole turn in the engine.
    engine: f64,
}

/// One reply's latency split by the server's figures.
struct LatencySplit {
    vector_ms: f64,
    beyond_vector_ms: f64,
    /// The engine's time beyond the query vector: the server's part of
    /// `beyond_vector_ms`, the rest being HTTP and the client.
    engine_beyond_vector_ms: f64,
}

/// Prints how much of the latency is the query vector and how much is
/// everything else (HTTP, routing, search, rendering, the turn log, and
/// the client), per reply: the issue's "p50 ≤ query-embedding time + 2
/// ms" is the p50 of the second.
fn print_latency_split(splits: &[LatencySplit]) {
    if splits.is_empty() {
        return;
    }
    let sorted = |figure: fn(&LatencySplit) -> f64| {
        let mut values: Vec<f64> = splits.iter().map(figure).collect();
        values.sort_by(|a, b| a.total_cmp(b));
        values
    };
    let vector = sorted(|s| s.vector_ms);
    let beyond = sorted(|s| s.beyond_vector_ms);
    let engine_beyond = sorted(|s| s.engine_beyond_vector_ms);
    let embedded = vector.iter().filter(|&&ms| ms >= 1.0).count();
    println!(
        "query vector (Server-Timing): p50 {:.2} ms, p99 {:.2} ms; {embedded} of {} replies waited ≥ 1 ms for it",
        percentile(&vector, 0.50),
        percentile(&vector, 0.99),
        splits.len()
    );
    println!(
        "latency beyond the query vector, per reply: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms (in the engine: p50 {:.2} ms, p99 {:.2} ms)",
        percentile(&beyond, 0.50),
        percentile(&beyond, 0.95),
        percentile(&beyond, 0.99),
        percentile(&engine_beyond, 0.50),
        percentile(&engine_beyond, 0.99)
    );
}

/// The `vector` and `engine` figures of a `Server-Timing` header.
fn parse_server_timing(header: &str) -> Option<ServerTiming> {
    let millis = |name: &str| {
        header.split(',').find_map(|metric| {
            let mut parts = metric.trim().split(';');
            if parts.next()?.trim() != name {
                return None;
            }
            parts.find_map(|p| p.trim().strip_prefix("dur=")?.parse().ok())
        })
    };
    Some(ServerTiming {
        vector: millis("vector")?,
        engine: millis("engine")?,
    })
}

/// One web chat question; `None` on failure.
async fn web_request(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    question: &str,
) -> Option<Answered> {
    let response = client
        .post(format!("{base}/api/chat"))
        .json(&serde_json::json!({ "user_id": user, "text": question }))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let timing = response
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_server_timing);
    let reply: serde_json::Value = response.json().await.ok()?;
    Some(Answered {
        kind: reply["kind"].as_str().unwrap_or("?").to_owned(),
        timing,
    })
}

/// One text message to `/wechat`, signed (and in safe mode encrypted) as
/// WeChat sends it; `text` for a passive text reply that parses, `late`
/// for `success`, `None` for anything else.
async fn wechat_request(
    client: &reqwest::Client,
    base: &str,
    account: &WechatClient,
    openid: &str,
    message_id: &str,
    question: &str,
) -> Option<String> {
    use webhooks::wechat::crypto::url_signature;
    use webhooks::wechat::xml::{InboundKind, parse_envelope, parse_message};
    let now = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    let nonce = message_id;
    let inner = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{question}]]></Content><MsgId>{message_id}</MsgId></xml>",
        account.app_id
    );
    let mut url = format!(
        "{base}/wechat?signature={}&timestamp={now}&nonce={nonce}&openid={openid}",
        url_signature(&account.token, &now, nonce)
    );
    let body = match &account.crypto {
        None => inner,
        Some(crypto) => {
            let encrypt = crypto.encrypt(&inner);
            url.push_str(&format!(
                "&encrypt_type=aes&msg_signature={}",
                crypto.msg_signature(&now, nonce, &encrypt)
            ));
            format!(
                "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
                account.app_id
            )
        }
    };
    let response = client.post(url).body(body).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let bytes = response.bytes().await.ok()?;
    if bytes.as_ref() == b"success" {
        return Some("late".into());
    }
    let plaintext = match &account.crypto {
        None => String::from_utf8(bytes.to_vec()).ok()?,
        Some(crypto) => crypto.decrypt(&parse_envelope(&bytes).ok()?.encrypt).ok()?,
    };
    match parse_message(plaintext.as_bytes()).ok()?.kind {
        InboundKind::Text { .. } => Some("text".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_figures_are_read_in_any_order() {
        let timing = |vector, engine| Some(ServerTiming { vector, engine });
        assert_eq!(
            parse_server_timing("vector;dur=6.250, engine;dur=8.000"),
            timing(6.25, 8.0)
        );
        assert_eq!(
            parse_server_timing("engine;dur=8, vector;desc=\"q\";dur=0.5"),
            timing(0.5, 8.0)
        );
        assert_eq!(parse_server_timing("engine;dur=8.000"), None);
        assert_eq!(parse_server_timing("vector;dur=x, engine;dur=1"), None);
    }

    #[test]
    fn zipf_ranks_are_drawn_by_popularity() {
        let cumulative = zipf_cumulative(100, 1.0);
        assert!((cumulative[99] - 1.0).abs() < 1e-9);
        // Rank 1 is twice as likely as rank 2, ten times rank 10.
        let p = |r: usize| cumulative[r] - if r == 0 { 0.0 } else { cumulative[r - 1] };
        assert!((p(0) / p(1) - 2.0).abs() < 1e-9);
        assert!((p(0) / p(9) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn the_realistic_mix_keeps_its_shares_and_conversations() {
        let pools = RealisticPools {
            popular: (0..50).map(|i| format!("q{i}")).collect(),
            zipf_cumulative: zipf_cumulative(50, 1.0),
            unanswerable: vec!["u".into()],
            followups: vec!["f".into()],
            intake: vec![vec!["d0".into(), "d1".into(), "d2".into()]],
        };
        let mut state = ClientState::default();
        let mut counts: std::collections::BTreeMap<Share, usize> = Default::default();
        let mut last_asker = None;
        let mut filing: Option<(String, usize)> = None;
        for _ in 0..20_000 {
            let (share, user, text) = state.next(&pools, "c");
            *counts.entry(share).or_default() += 1;
            match share {
                // A follow-up comes from the user who asked last.
                Share::Followup => assert_eq!(Some(&user), last_asker.as_ref()),
                // A filing conversation goes turn by turn, by one user.
                Share::Demand => {
                    let turn = match filing.take() {
                        Some((filer, turn)) => {
                            assert_eq!(filer, user);
                            turn
                        }
                        None => 0,
                    };
                    assert_eq!(text, format!("d{turn}"));
                    if turn < 2 {
                        filing = Some((user.clone(), turn + 1));
                    }
                }
                Share::Question | Share::Unanswerable => {}
            }
            if share == Share::Question {
                last_asker = Some(user);
            }
        }
        let share = |s: Share| counts.get(&s).copied().unwrap_or(0) as f64 / 20_000.0;
        assert!((0.67..0.73).contains(&share(Share::Question)), "{counts:?}");
        assert!((0.08..0.12).contains(&share(Share::Followup)), "{counts:?}");
        assert!((0.08..0.12).contains(&share(Share::Demand)), "{counts:?}");
        assert!(
            (0.08..0.12).contains(&share(Share::Unanswerable)),
            "{counts:?}"
        );
    }

    #[test]
    fn the_fresh_mix_sends_no_text_twice_for_40_laps() {
        let pool: Vec<String> = ["洋芋叶子发黑咋个办？", "隔夜菜会致癌吗", "地震时该怎么办?"]
            .iter()
            .map(|q| (*q).to_owned())
            .collect();
        let laps = OPENERS.len() * CLOSERS.len();
        let texts: std::collections::HashSet<String> = (0..pool.len() * laps)
            .map(|index| fresh_question(&pool, index))
            .collect();
        assert_eq!(texts.len(), pool.len() * laps);
        assert_eq!(fresh_question(&pool, 0), "洋芋叶子发黑咋个办");
        assert_eq!(fresh_question(&pool, 3), "请问洋芋叶子发黑咋个办");
    }
}
