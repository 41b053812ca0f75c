//! A Redis that stops answering: web and WeChat users get a fast, friendly
//! "稍后再试" instead of a request that hangs past WeChat's budget,
//! `/readyz` names the session store, and the service recovers when Redis
//! answers again.
//!
//! The engine reaches the real Redis on this machine through a TCP relay
//! in this test that can be switched to hold every byte, as a Redis stuck
//! in a long command or a stalled network path would: TCP loses nothing,
//! so what was sent arrives when the path moves again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bot::session::{RedisSessionStore, SessionStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use webhooks::wechat::crypto::url_signature;
use webhooks::wechat::xml::{InboundKind, parse_message};

/// A TCP relay to `upstream` that forwards while `open` is set and holds
/// every byte (in both directions) while it is not.
async fn relay(upstream: String, open: Arc<AtomicBool>) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, Arc::clone(&open)));
            tokio::spawn(pump(server_read, client_write, Arc::clone(&open)));
        }
    });
    Ok(format!("redis://{addr}"))
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    open: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        while !open.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
}

/// A text message to `/wechat` in plaintext mode; the passive reply's text.
async fn wechat(base: &str, openid: &str, text: &str) -> anyhow::Result<String> {
    let xml = tests::wechat::message(openid, 7_200_000_000_001, text);
    let (timestamp, nonce) = ("1700000000", "d-1");
    let url = format!(
        "{base}/wechat?signature={}&timestamp={timestamp}&nonce={nonce}",
        url_signature(tests::wechat::TOKEN, timestamp, nonce)
    );
    let body = reqwest::Client::new()
        .post(url)
        .body(xml)
        .send()
        .await?
        .text()
        .await?;
    match parse_message(body.as_bytes())?.kind {
        InboundKind::Text { content } => Ok(content),
        _ => anyhow::bail!("not a text reply: {body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_redis_gets_a_fast_friendly_error_and_recovery() -> anyhow::Result<()> {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let upstream = redis
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let open = Arc::new(AtomicBool::new(true));
    let through_relay = relay(upstream, Arc::clone(&open)).await?;
    let prefix = format!("wenke-test-{}:", uuid::Uuid::new_v4());
    let sessions: Arc<dyn SessionStore> =
        Arc::new(RedisSessionStore::connect(&through_relay, &prefix).await?);

    let dir = tests::scratch_dir()?;
    let seeded = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let engine = Arc::new(tests::engine_sharing_kb(&seeded, sessions).await?);
    let channels = bot::http::HttpConfig {
        wechat: Some(tests::wechat::plaintext_account(&engine)?),
        ..Default::default()
    };
    let addr = tests::serve_with(engine, &channels).await?;
    let base = format!("http://{addr}");

    let (status, reply) = tests::post_chat(&base, "farmer-1", "洋芋叶子发黑咋个办").await?;
    assert_eq!(status, 200, "{reply}");

    // Redis stops answering.
    open.store(false, Ordering::SeqCst);
    let started = Instant::now();
    let (status, reply) = tests::post_chat(&base, "farmer-2", "洋芋叶子发黑咋个办").await?;
    let took = started.elapsed();
    assert_eq!(status, 503, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap_or_default()
            .contains("稍后再试"),
        "{reply}"
    );
    assert!(
        took < Duration::from_secs(3),
        "the user waited {took:?} for the error"
    );
    // A WeChat user is told the same, inside WeChat's 5 s.
    let started = Instant::now();
    let wechat_reply = wechat(&base, "o-farmer-4", "海椒叶子卷起来咋个办").await?;
    let took = started.elapsed();
    assert!(wechat_reply.contains("稍后再试"), "{wechat_reply}");
    assert!(took < Duration::from_secs(4), "WeChat waited {took:?}");
    let ready = reqwest::get(format!("{base}/readyz")).await?;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await?;
    assert_eq!(body["points"], "ok", "{body}");
    assert_ne!(body["sessions"], "ok", "{body}");

    // Redis answers again: so does the service, within a few seconds.
    open.store(true, Ordering::SeqCst);
    let recovering = Instant::now();
    loop {
        let (status, reply) = tests::post_chat(&base, "farmer-3", "洋芋叶子发黑咋个办").await?;
        if status == 200 {
            assert!(
                reply["reply"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("晚疫病"),
                "{reply}"
            );
            break;
        }
        assert!(
            recovering.elapsed() < Duration::from_secs(10),
            "still {status} 10 s after Redis came back: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
