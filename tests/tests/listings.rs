//! Demand and capability listings end to end: filing by chat on the web
//! API, matching, status queries, staff changes, 揭榜 and notices, privacy,
//! retries, and a form that outlives the process holding it.

use std::sync::Arc;

use bot::Engine;
use bot::session::{MemorySessionStore, RedisSessionStore, SessionStore};
use kb::listing::{DemandStatus, ListingKind};
use serde_json::{Value, json};
use webhooks::message::{Channel, Handler, Incoming, UserKey};

const STAFF_TOKEN: &str = "staff-secret-for-tests";
const PHONE: &str = "13800012345";

async fn engine_with_capabilities() -> anyhow::Result<Arc<Engine>> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    tests::import_demo_listings(&engine, ListingKind::Capabilities).await?;
    Ok(engine)
}

fn reply_text(reply: &Value) -> String {
    reply["blocks"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn chat(&self, user: &str, text: &str, message_id: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}/api/chat", self.base))
            .json(&json!({ "user_id": user, "text": text, "message_id": message_id }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 200,
            "chat answered {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    async fn staff(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(STAFF_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enterprise_files_a_demand_by_chat_and_follows_it() -> anyhow::Result<()> {
    let engine = engine_with_capabilities().await?;
    let config = bot::http::HttpConfig {
        staff_token: Some(STAFF_TOKEN.into()),
        ..Default::default()
    };
    let addr = tests::serve_with(engine.clone(), &config).await?;
    let client = Client {
        http: reqwest::Client::new(),
        base: format!("http://{addr}"),
    };
    let user = format!("ent-{}", uuid::Uuid::new_v4());

    // The first message says the problem, field, budget and deadline; the
    // bot asks only for the rest, one thing at a time.
    let first = client
        .chat(
            &user,
            "我们厂锂电池隔膜良品率低，想找专家攻关，预算20万左右，三个月内解决",
            "m1",
        )
        .await?;
    assert_eq!(first["kind"], "demand", "{first}");
    let asked = reply_text(&first);
    assert!(
        asked.contains("市") && asked.contains("县"),
        "asks the region: {asked}"
    );
    let second = reply_text(&client.chat(&user, "宜宾", "m2").await?);
    assert!(second.contains("单位"), "asks the organisation: {second}");
    let third = reply_text(&client.chat(&user, "宜宾示例隔膜材料有限公司", "m3").await?);
    assert!(third.contains("联系人"), "asks the contact: {third}");
    let summary = reply_text(&client.chat(&user, &format!("张工 {PHONE}"), "m4").await?);
    for part in [
        "新材料",
        "20万左右",
        "三个月内",
        "宜宾市",
        "宜宾示例隔膜材料有限公司",
        "张工",
    ] {
        assert!(summary.contains(part), "summary lacks {part}: {summary}");
    }
    // A correction at the summary, then the confirmation, sent twice with
    // the same message id as a channel retry would.
    let corrected = reply_text(&client.chat(&user, "预算改成50万", "m5").await?);
    assert!(corrected.contains("50万左右"), "{corrected}");
    let filed = client.chat(&user, "确认", "m6").await?;
    let again = client.chat(&user, "确认", "m6").await?;
    assert_eq!(filed, again, "a retried message gets the same reply");
    let filed_text = reply_text(&filed);
    let number = filed_text
        .split_whitespace()
        .find(|w| w.starts_with("XQ-"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_digit()).to_owned())
        .ok_or_else(|| anyhow::anyhow!("no number in {filed_text}"))?;
    assert!(
        filed_text.contains("可能合适的专家"),
        "matches shown: {filed_text}"
    );
    assert!(
        !filed_text.contains("1390001"),
        "capability phones never shown: {filed_text}"
    );
    let mine = engine
        .listings()
        .demands(None, Some(&format!("web:{user}")))
        .await?;
    assert_eq!(mine.len(), 1, "one listing despite the retry");
    let demand = &mine[0];
    assert_eq!(demand.number, number);
    assert_eq!(demand.content.budget.min_yuan, Some(500_000));
    assert_eq!(demand.content.contact.phone, PHONE);
    assert_eq!(demand.status, DemandStatus::PendingReview);

    // Matching puts the separator experts first.
    let (status, matches) = client
        .staff(
            reqwest::Method::GET,
            &format!("/api/staff/demands/{number}/matches"),
            None,
        )
        .await?;
    assert_eq!(status, 200);
    let top = matches[0]["capability"]["skills"]
        .as_str()
        .unwrap_or_default();
    assert!(top.contains("隔膜"), "top match: {}", matches[0]);

    // Status in chat: to the filer only.
    let status_reply = reply_text(
        &client
            .chat(&user, &format!("查询需求 {number}"), "m7")
            .await?,
    );
    assert!(status_reply.contains("待审核"), "{status_reply}");
    let stranger = reply_text(
        &client
            .chat("someone-else", &format!("查询需求 {number}"), "s1")
            .await?,
    );
    assert!(
        stranger.contains("没有查到") && !stranger.contains("待审核"),
        "{stranger}"
    );

    // Not public until staff publish it; staff changes are checked and logged.
    let public: Value = client
        .http
        .get(format!("{}/api/listings/demands", client.base))
        .send()
        .await?
        .json()
        .await?;
    assert!(!public.to_string().contains(&number));
    let (status, _) = client
        .staff(
            reqwest::Method::PATCH,
            &format!("/api/staff/demands/{number}"),
            Some(json!({"actor": "王芳", "status": "已合作"})),
        )
        .await?;
    assert_eq!(status, 409, "pending review cannot jump to cooperation");
    let (status, updated) = client
        .staff(
            reqwest::Method::PATCH,
            &format!("/api/staff/demands/{number}"),
            Some(json!({"actor": "王芳", "status": "已发布", "staff": "王芳"})),
        )
        .await?;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["status"], "已发布");
    let public_one: Value = client
        .http
        .get(format!("{}/api/listings/demands/{number}", client.base))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(public_one["number"], number.as_str());
    assert!(
        !public_one.to_string().contains(PHONE),
        "no contact in public: {public_one}"
    );
    assert!(
        !public_one.to_string().contains("张工"),
        "no contact in public: {public_one}"
    );

    // 揭榜: a capability holder claims it; the filer hears on their channel.
    let (status, claimed) = client
        .staff(
            reqwest::Method::POST,
            &format!("/api/staff/demands/{number}/claims"),
            Some(json!({"capability": "cap-037", "note": "可以先到厂里诊断"})),
        )
        .await?;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["status"], "对接中");
    let notices: Value = client
        .http
        .get(format!("{}/api/notices?user_id={user}", client.base))
        .send()
        .await?
        .json()
        .await?;
    let notices = notices.to_string();
    assert!(
        notices.contains("已发布") && notices.contains("揭榜"),
        "{notices}"
    );
    // Delivered once: the next reply does not repeat them.
    let next = reply_text(&client.chat(&user, "你好", "m8").await?);
    assert!(!next.contains("揭榜"), "{next}");

    // Without the token the staff API refuses; without a configured token it does not exist.
    let refused = client
        .http
        .get(format!("{}/api/staff/demands", client.base))
        .send()
        .await?;
    assert_eq!(refused.status(), 401);
    let plain = tests::serve(engine.clone()).await?;
    let missing = client
        .http
        .get(format!("http://{plain}/api/staff/demands"))
        .bearer_auth(STAFF_TOKEN)
        .send()
        .await?;
    assert_eq!(missing.status(), 404);

    // The turn log never holds the phone number in clear.
    engine.turns().flush().await?;
    let turns = engine
        .turns()
        .find(&[("user", &format!("web:{user}"))])
        .await?;
    assert!(turns.len() >= 7);
    assert!(
        turns.iter().all(|t| !t.text.contains(PHONE)),
        "phones masked in the log"
    );
    assert!(turns.iter().any(|t| t.text.contains("138****2345")));
    Ok(())
}

fn message(user: &UserKey, text: &str) -> Incoming {
    Incoming::text(user.clone(), text)
}

fn text_of(reply: &webhooks::message::Reply) -> String {
    reply
        .blocks
        .iter()
        .map(|b| b.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A form half filled on one instance is finished on another with fresh
/// memory (a restart of the embedded default), and on instances sharing
/// Redis; "取消" ends a form at any point and files nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_survive_restarts_and_instance_switches() -> anyhow::Result<()> {
    let engine = engine_with_capabilities().await?;
    let user = UserKey::new(Channel::Web, format!("restart-{}", uuid::Uuid::new_v4()));
    let asked = engine
        .handle(message(
            &user,
            "我们泡菜厂的袋装泡菜放一两个月就胀袋，退货很多，想找人把这个问题解决了",
        ))
        .await?;
    assert!(text_of(&asked).contains("预算"), "{}", text_of(&asked));
    engine.handle(message(&user, "50万以内")).await?;
    // A science question in the middle is answered; the form waits.
    let aside = engine.handle(message(&user, "洋芋叶子发黑咋个办")).await?;
    assert!(text_of(&aside).contains("晚疫病"), "{}", text_of(&aside));
    assert!(
        text_of(&aside).contains("还没登记完"),
        "{}",
        text_of(&aside)
    );

    // "Restart": the same data, an empty session store.
    let restarted = tests::engine_sharing_kb(&engine, Arc::new(MemorySessionStore::new())).await?;
    let next = restarted.handle(message(&user, "年底前")).await?;
    assert!(
        text_of(&next).contains("市"),
        "the form went on where it was: {}",
        text_of(&next)
    );
    for answer in ["眉山东坡区", "眉山示例泡菜食品有限公司", "李红 13800034567"]
    {
        restarted.handle(message(&user, answer)).await?;
    }
    let filed = restarted.handle(message(&user, "确认")).await?;
    assert!(text_of(&filed).contains("XQ-"), "{}", text_of(&filed));
    let mine = restarted
        .listings()
        .demands(None, Some(&user.storage_key()))
        .await?;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].content.field, "食品加工");
    assert_eq!(mine[0].content.region, "眉山市");
    assert_eq!(mine[0].content.budget.max_yuan, Some(500_000));

    // Two instances on one Redis: a capability offer started on one, cancelled on the other.
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("wenke-test-{}:", uuid::Uuid::new_v4());
    let shared: Arc<dyn SessionStore> =
        Arc::new(RedisSessionStore::connect(&redis_url, &prefix).await?);
    let one = tests::engine_sharing_kb(&engine, Arc::clone(&shared)).await?;
    let two = tests::engine_sharing_kb(&engine, shared).await?;
    let expert = UserKey::new(Channel::Web, format!("expert-{}", uuid::Uuid::new_v4()));
    let offered = one
        .handle(message(&expert, "我是做柑橘病虫害防治的，可以提供技术服务"))
        .await?;
    assert!(
        text_of(&offered).contains("科技所能"),
        "{}",
        text_of(&offered)
    );
    two.handle(message(&expert, "眉山")).await?;
    let cancelled = two.handle(message(&expert, "算了，取消")).await?;
    assert!(
        text_of(&cancelled).contains("取消"),
        "{}",
        text_of(&cancelled)
    );
    let after = one.handle(message(&expert, "眉山示例果业有限公司")).await?;
    assert_ne!(
        after.kind,
        webhooks::message::ReplyKind::Demand,
        "the form is gone: {}",
        text_of(&after)
    );

    // A capability offered by chat gets its number.
    let mut listed = None;
    for answer in [
        "我是做柑橘病虫害防治的，可以提供技术服务",
        "眉山",
        "眉山示例农业科技有限公司",
        "陈老师 13900099999",
        "确认",
    ] {
        listed = Some(one.handle(message(&expert, answer)).await?);
    }
    let listed = listed.map(|r| text_of(&r)).unwrap_or_default();
    assert!(listed.contains("SN-"), "{listed}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demand_prepared_while_its_summary_is_read_files_and_matches_as_a_fresh_one()
-> anyhow::Result<()> {
    let engine = engine_with_capabilities().await?;
    let listings = engine.listings();
    let content = kb::listing::DemandContent {
        title: "猕猴桃溃疡病防控".into(),
        field: "农业".into(),
        problem: "合作社的红心猕猴桃溃疡病越来越重，砍了好多树，想请专家来指导防控".into(),
        region: "广元市".into(),
        organisation: "苍溪示例猕猴桃专业合作社".into(),
        contact: kb::listing::Contact {
            name: "王德明".into(),
            phone: PHONE.into(),
        },
        ..Default::default()
    };
    let fresh = listings.matches(&content, 3).await?;
    anyhow::ensure!(!fresh.is_empty(), "the demo capabilities hold a match");

    listings.prepare_demand(&content);
    let (demand, matches) = listings
        .file_demand_and_match("test-form-prepared", content.clone(), None, 3)
        .await?;

    // The prepared vector is the demand's own: the same capabilities, the
    // same closeness, and the stored demand is found by its own words.
    let keys = |found: &[kb::listing::Match]| -> Vec<Option<String>> {
        found
            .iter()
            .map(|m| m.capability.external_key.clone())
            .collect()
    };
    assert_eq!(keys(&matches), keys(&fresh));
    for (prepared, direct) in matches.iter().zip(&fresh) {
        assert!((prepared.similarity - direct.similarity).abs() < 1e-3);
    }
    let found = listings.search_demands(&content.problem, 1).await?;
    assert_eq!(found.first().map(|(d, _)| d.id), Some(demand.id));
    Ok(())
}
