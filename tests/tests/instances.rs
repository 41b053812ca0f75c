//! Two wenke instances on one set of stores behave as one service: a demand
//! form started on one continues on the other, a WeChat retry that reaches
//! the other instance is answered once, and an entry published or a notice
//! queued on one reaches the other's replies within a second.
//!
//! Sessions, dedup claims and listing numbers are in the real Redis on this
//! machine (`REDIS_URL`, default `redis://127.0.0.1:6379`). With
//! `QDRANT_URL` set, each instance has its own connection to that Qdrant
//! server, as separate processes would; without it, both open their own
//! knowledge base (own caches) over one embedded store in this process, and
//! the test says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bot::Engine;
use bot::jobs::{JobQueue, RedisJobQueue};
use bot::session::{RedisSessionStore, SessionStore};
use kb::import::parse_jsonl;
use kb::store::PointStore;
use kb::workflow::Action;
use serde_json::{Value, json};
use webhooks::wechat::crypto::url_signature;
use webhooks::wechat::xml::{InboundKind, parse_message};

/// One point store per instance on a Qdrant server, or one embedded store
/// shared by both.
fn stores() -> anyhow::Result<(Arc<dyn PointStore>, Arc<dyn PointStore>)> {
    match std::env::var("QDRANT_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        Some(url) => {
            let prefix = format!("test_{}_", uuid::Uuid::new_v4().simple());
            let connect = || -> anyhow::Result<Arc<dyn PointStore>> {
                Ok(Arc::new(kb::store::server::ServerStore::connect(
                    &kb::store::server::ServerConfig {
                        api_key: std::env::var("QDRANT_API_KEY").ok(),
                        ..kb::store::server::ServerConfig::new(url.clone(), prefix.clone())
                    },
                )?))
            };
            Ok((connect()?, connect()?))
        }
        None => {
            println!(
                "QDRANT_URL is not set: the Qdrant-server part is skipped; both instances \
                 share one embedded store in this process"
            );
            // Two knowledge bases write to it, so neither may keep what it
            // read until its own next write.
            let store: Arc<dyn PointStore> = Arc::new(
                kb::store::edge::EdgeStore::open(&tests::scratch_dir()?)?.shared_within_process(),
            );
            Ok((Arc::clone(&store), store))
        }
    }
}

/// An instance: its own knowledge base (and caches) and turn log writer on
/// `store`, sessions in the shared Redis, its own HTTP listener.
async fn instance(
    store: Arc<dyn PointStore>,
    embedder: &embeddings::Embedder,
    (sessions, jobs): (Arc<dyn SessionStore>, Arc<dyn JobQueue>),
) -> anyhow::Result<(Arc<Engine>, String)> {
    let engine = tests::engine_over(store, embedder.clone(), sessions, Some(jobs)).await?;
    let channels = bot::http::HttpConfig {
        wechat: Some(tests::wechat::plaintext_account(&engine)?),
        ..Default::default()
    };
    let addr = tests::serve_with(Arc::clone(&engine), &channels).await?;
    Ok((engine, format!("http://{addr}")))
}

/// A web chat message that must be answered (200); the reply.
async fn chat(base: &str, user: &str, text: &str) -> anyhow::Result<Value> {
    let (status, reply) = tests::post_chat(base, user, text).await?;
    anyhow::ensure!(status == 200, "{status}: {reply}");
    Ok(reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_shared_stores_act_as_one() -> anyhow::Result<()> {
    tests::capture_logs();
    let embedder = tests::load_embedder()?;
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("wenke-test-{}:", uuid::Uuid::new_v4());
    let sessions = || async {
        anyhow::Ok((
            Arc::new(RedisSessionStore::connect(&redis_url, &prefix).await?)
                as Arc<dyn SessionStore>,
            Arc::new(RedisJobQueue::connect(&redis_url, &prefix).await?) as Arc<dyn JobQueue>,
        ))
    };
    let (store_a, store_b) = stores()?;
    let (a, base_a) = instance(store_a, &embedder, sessions().await?).await?;
    let fixture = std::fs::read_to_string(tests::root().join("kb/tests/data/fixture.jsonl"))?;
    let report = a
        .kb()
        .import(
            parse_jsonl(&fixture),
            &kb::ImportOptions {
                actor: "示例编辑".into(),
                approve_as: Some("示例审核".into()),
            },
            &|_, _| {},
        )
        .await?;
    anyhow::ensure!(report.errors.is_empty(), "{:?}", report.errors);
    let (b, base_b) = instance(store_b, &embedder, sessions().await?).await?;

    // A demand form started on A goes on and is filed on B, once.
    let filer = format!("firm-{}", uuid::Uuid::new_v4());
    chat(
        &base_a,
        &filer,
        "我们厂锂电池隔膜良品率低，想找专家攻关，预算20万左右，三个月内解决",
    )
    .await?;
    chat(&base_b, &filer, "宜宾").await?;
    chat(&base_a, &filer, "宜宾示例隔膜材料有限公司").await?;
    chat(&base_b, &filer, "张工 13800012345").await?;
    let filed = chat(&base_a, &filer, "确认").await?;
    let again = chat(&base_b, &filer, "确认").await?;
    let filed_text = filed["reply"].as_str().unwrap_or_default();
    assert!(filed_text.contains("XQ-"), "{filed}");
    assert!(
        !again["reply"].as_str().unwrap_or_default().contains("XQ-"),
        "the form is gone on the other instance too: {again}"
    );
    let theirs = b
        .listings()
        .demands(None, Some(&format!("web:{filer}")))
        .await?;
    assert_eq!(theirs.len(), 1, "one demand");
    assert!(filed_text.contains(&theirs[0].number), "{filed_text}");

    // WeChat delivers a message to A and its retry to B: one turn, one reply.
    let openid = format!("o-{}", uuid::Uuid::new_v4());
    let xml = tests::wechat::message(&openid, 7_100_000_000_001, "洋芋叶子发黑咋个办");
    let (timestamp, nonce) = ("1700000000", "i-1");
    let query = format!(
        "signature={}&timestamp={timestamp}&nonce={nonce}",
        url_signature(tests::wechat::TOKEN, timestamp, nonce)
    );
    let client = reqwest::Client::new();
    let first = client
        .post(format!("{base_a}/wechat?{query}"))
        .body(xml.clone());
    let retry = client.post(format!("{base_b}/wechat?{query}")).body(xml);
    let (first, retry) = tokio::join!(first.send(), retry.send());
    let mut replies = Vec::new();
    for response in [first?, retry?] {
        assert_eq!(response.status(), 200);
        let body = response.text().await?;
        let InboundKind::Text { content } = parse_message(body.as_bytes())?.kind else {
            anyhow::bail!("not a text reply: {body}");
        };
        replies.push(content);
    }
    assert_eq!(replies[0], replies[1]);
    assert!(replies[0].contains("晚疫病"), "{}", replies[0]);
    a.turns().flush().await?;
    b.turns().flush().await?;
    let turns = a
        .turns()
        .find(&[("user", &format!("wechat:{openid}"))])
        .await?;
    assert_eq!(turns.len(), 1, "one turn for two deliveries");

    // A notice queued on A reaches the user's next reply on B within a
    // second, although B has just found none waiting for them.
    let waiting = format!("waiter-{}", uuid::Uuid::new_v4());
    chat(&base_b, &waiting, "你好").await?;
    let notice = format!("示例通知 {}", uuid::Uuid::new_v4().simple());
    a.notify(&format!("web:{waiting}"), notice.clone()).await;
    let queued = Instant::now();
    loop {
        let reply = chat(&base_b, &waiting, "你好").await?;
        if reply["reply"]
            .as_str()
            .unwrap_or_default()
            .contains(&notice)
        {
            break;
        }
        assert!(
            queued.elapsed() < Duration::from_secs(1),
            "B still replies {reply} without the notice a second after A queued it"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Published on A, answered on B within a second, although B has just
    // searched the same question and may hold the result.
    let question = "魔芋软腐病在多雨季节怎么预防？";
    let asker = format!("asker-{}", uuid::Uuid::new_v4());
    let before = chat(&base_b, &asker, question).await?;
    let row = json!({
        "question": question,
        "answer": "选用无病种芋，雨季及时排水，发病初期拔除病株并撒石灰消毒。",
        "category": "农业种植",
        "tags": ["魔芋", "软腐病"],
        "crops": ["魔芋"],
        "source": {"organisation": "示例内容，未经专家审核", "document": null, "url": null}
    })
    .to_string();
    let content = parse_jsonl(&row)
        .pop()
        .and_then(|r| r.result.ok())
        .ok_or_else(|| anyhow::anyhow!("bad row"))?;
    let entry = a.kb().create(content, "示例编辑").await?;
    a.kb().apply(entry.id, Action::Submit, "示例编辑").await?;
    let published = Instant::now();
    a.kb()
        .apply(entry.id, Action::Approve { note: None }, "示例审核")
        .await?;
    assert!(
        !before["citations"]
            .to_string()
            .contains(&entry.id.to_string()),
        "{before}"
    );
    loop {
        let reply = chat(&base_b, &asker, question).await?;
        let cites = reply["citations"]
            .to_string()
            .contains(&entry.id.to_string());
        if reply["kind"] == "answer" && cites {
            break;
        }
        assert!(
            published.elapsed() < Duration::from_secs(1),
            "B still answers {reply} a second after A published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
