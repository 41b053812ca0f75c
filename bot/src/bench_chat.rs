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
//! The WeChat target signs every message with the account's token and, when
//! an EncodingAESKey is given, sends it in safe mode and decrypts the
//! passive reply; a reply of `success` (the answer missed the budget) counts
//! as `late`, not as a reply.

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
    /// Every message a text the server has not seen in this run: the
    /// dev-set questions, then the same with openers and closers.
    Fresh,
    /// Five questions, over and over.
    Repeated,
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
    /// The server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
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
    let mut pool = questions(&config.question_files)?;
    if config.mix == Mix::Repeated {
        pool.truncate(5);
    }
    let pool = Arc::new(pool);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.clients)
        .build()?;
    let base = config.url.trim_end_matches('/').to_owned();
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
        let base = base.clone();
        let wechat = wechat.clone();
        let pool = Arc::clone(&pool);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
            let mut next = match mix {
                Mix::Fresh => 0,
                Mix::Distinct | Mix::Repeated => index * pool.len() / clients,
            };
            let client_user = format!("bench-{run_id}-{index}");
            while Instant::now() < deadline {
                let question = match mix {
                    // Clients take interleaved indexes, so no two send one text.
                    Mix::Fresh => fresh_question(&pool, next * clients + index),
                    Mix::Distinct | Mix::Repeated => pool[next % pool.len()].clone(),
                };
                let question = &question;
                next += 1;
                // Dev-set questions are unrelated to each other: in the
                // distinct mix each comes from a new user, so one question
                // routed to a demand does not turn the next ones into
                // answers of a filing form.
                let user = match mix {
                    Mix::Distinct | Mix::Fresh => format!("{client_user}-{next}"),
                    Mix::Repeated => client_user.clone(),
                };
                let started = Instant::now();
                let outcome = match &wechat {
                    None => web_request(&client, &base, &user, question).await,
                    Some(account) => {
                        let message_id = format!("{run_stamp}{index:03}{next:09}");
                        wechat_request(&client, &base, account, &user, &message_id, question).await
                    }
                };
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                match outcome {
                    Some(kind) => {
                        if kind != "late" {
                            latencies.push(elapsed);
                        }
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
        "chat bench: {:?} target, {} clients, {:?} mix, {:.0} s, {} questions in the pool",
        config.target,
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

/// One web chat question; the reply's kind, `None` on failure.
async fn web_request(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    question: &str,
) -> Option<String> {
    let response = client
        .post(format!("{base}/api/chat"))
        .json(&serde_json::json!({ "user_id": user, "text": question }))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let reply: serde_json::Value = response.json().await.ok()?;
    Some(reply["kind"].as_str().unwrap_or("?").to_owned())
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
