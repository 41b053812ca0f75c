//! The WeChat Official Account endpoint against the real engine: a farmer's
//! message in safe mode gets the vetted answer, encrypted; WeChat's retries
//! of one message produce one turn and the same reply; an unconfigured
//! server has no `/wechat`.

use std::time::Duration;

use webhooks::wechat::account::AccountConfig;
use webhooks::wechat::crypto::{MessageCrypto, url_signature};
use webhooks::wechat::xml::{InboundKind, parse_envelope, parse_message};

use tests::wechat::{APP_ID, TOKEN, message, plaintext_account};

const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const CORP_ID: &str = "ww0123456789abcdef";
const AGENT_ID: i64 = 1_000_002;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_mode_answers_and_retries_are_handled_once() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let channels = bot::http::HttpConfig {
        wechat: Some(AccountConfig {
            token: TOKEN.into(),
            encoding_aes_key: Some(KEY.into()),
            app_id: APP_ID.into(),
            reply_budget: Duration::from_secs(4),
            service: None,
            interim_text: "正在查询权威答案，请稍候…".into(),
            unavailable_text: "系统有点忙，请稍后再试。".into(),
        }),
        ..Default::default()
    };
    let addr = tests::serve_with(engine.clone(), &channels).await?;
    let crypto = MessageCrypto::new(TOKEN, KEY, APP_ID)?;
    let openid = format!("o-{}", uuid::Uuid::new_v4());
    let encrypt = crypto.encrypt(&message(&openid, 6_000_000_001, "洋芋叶子发黑咋个办"));
    let (timestamp, nonce) = ("1700000000", "n-1");
    let url = format!(
        "http://{addr}/wechat?signature={}&timestamp={timestamp}&nonce={nonce}&encrypt_type=aes&msg_signature={}",
        url_signature(TOKEN, timestamp, nonce),
        crypto.msg_signature(timestamp, nonce, &encrypt)
    );
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_wenke]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );

    // WeChat's first delivery and two retries, at once.
    let client = reqwest::Client::new();
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        let request = client.post(&url).body(body.clone()).send();
        deliveries.push(tokio::spawn(request));
    }
    let mut replies = Vec::new();
    for delivery in deliveries {
        let response = delivery.await??;
        assert_eq!(response.status(), 200);
        let envelope = parse_envelope(&response.bytes().await?)?;
        let plaintext = crypto.decrypt(&envelope.encrypt)?;
        let reply = parse_message(plaintext.as_bytes())?;
        assert_eq!(reply.to_user_name, openid);
        let InboundKind::Text { content } = reply.kind else {
            anyhow::bail!("not a text reply: {plaintext}");
        };
        replies.push(content);
    }
    assert!(replies[0].contains("晚疫病"), "{}", replies[0]);
    assert!(replies[0].contains("来源："), "{}", replies[0]);
    assert!(replies[0].len() <= 2048);
    assert!(replies.iter().all(|r| r == &replies[0]), "{replies:?}");
    let turns = engine
        .turns()
        .find(&[("user", &format!("wechat:{openid}"))])
        .await?;
    assert_eq!(turns.len(), 1, "one turn for three deliveries");

    // Without WeChat configured, the path does not exist.
    let plain_addr = tests::serve(engine).await?;
    let missing = client
        .get(format!("http://{plain_addr}/wechat?echostr=x"))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    Ok(())
}

/// A stand-in for WeChat's API: hands out tokens, records customer-service
/// sends, and refuses sends to `closed-*` users with 45015 as WeChat does
/// when the 48-hour window has closed.
#[derive(Default)]
struct FakeWechatApi {
    token_requests: std::sync::atomic::AtomicUsize,
    sent: std::sync::Mutex<Vec<(String, String)>>,
}

async fn fake_api() -> anyhow::Result<(String, std::sync::Arc<FakeWechatApi>)> {
    use axum::extract::{Query, State};
    use axum::routing::{get, post};
    use std::collections::HashMap;
    use std::sync::Arc;
    let api = Arc::new(FakeWechatApi::default());
    let app = axum::Router::new()
        .route(
            "/cgi-bin/token",
            get(|State(api): State<Arc<FakeWechatApi>>, Query(q): Query<HashMap<String, String>>| async move {
                api.token_requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let right = q.get("appid").map(String::as_str) == Some(APP_ID)
                    && q.get("secret").map(String::as_str) == Some("app-secret");
                if right {
                    axum::Json(serde_json::json!({"access_token": "token-1", "expires_in": 7200}))
                } else {
                    axum::Json(serde_json::json!({"errcode": 40125, "errmsg": "invalid appsecret"}))
                }
            }),
        )
        .route(
            "/cgi-bin/message/custom/send",
            post(|State(api): State<Arc<FakeWechatApi>>, Query(q): Query<HashMap<String, String>>, axum::Json(body): axum::Json<serde_json::Value>| async move {
                if q.get("access_token").map(String::as_str) != Some("token-1") {
                    return axum::Json(serde_json::json!({"errcode": 40001, "errmsg": "invalid credential"}));
                }
                let to = body["touser"].as_str().unwrap_or_default().to_owned();
                if to.starts_with("closed-") {
                    return axum::Json(serde_json::json!({"errcode": 45015, "errmsg": "response out of time limit"}));
                }
                let text = body["text"]["content"].as_str().unwrap_or_default().to_owned();
                api.sent.lock().expect("lock").push((to, text));
                axum::Json(serde_json::json!({"errcode": 0, "errmsg": "ok"}))
            }),
        )
        // WeCom's API: its own token endpoint and app messages with the
        // agent id.
        .route(
            "/cgi-bin/gettoken",
            get(|State(api): State<Arc<FakeWechatApi>>, Query(q): Query<HashMap<String, String>>| async move {
                api.token_requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let right = q.get("corpid").map(String::as_str) == Some(CORP_ID)
                    && q.get("corpsecret").map(String::as_str) == Some("app-secret");
                if right {
                    axum::Json(serde_json::json!({"errcode": 0, "errmsg": "ok", "access_token": "wecom-token-1", "expires_in": 7200}))
                } else {
                    axum::Json(serde_json::json!({"errcode": 40001, "errmsg": "invalid secret"}))
                }
            }),
        )
        .route(
            "/cgi-bin/message/send",
            post(|State(api): State<Arc<FakeWechatApi>>, Query(q): Query<HashMap<String, String>>, axum::Json(body): axum::Json<serde_json::Value>| async move {
                if q.get("access_token").map(String::as_str) != Some("wecom-token-1") {
                    return axum::Json(serde_json::json!({"errcode": 40014, "errmsg": "invalid access_token"}));
                }
                if body["agentid"] != serde_json::json!(AGENT_ID) || body["msgtype"] != "text" {
                    return axum::Json(serde_json::json!({"errcode": 40056, "errmsg": "invalid agentid"}));
                }
                let to = body["touser"].as_str().unwrap_or_default().to_owned();
                let text = body["text"]["content"].as_str().unwrap_or_default().to_owned();
                api.sent.lock().expect("lock").push((to, text));
                axum::Json(serde_json::json!({"errcode": 0, "errmsg": "ok", "invaliduser": ""}))
            }),
        )
        .with_state(Arc::clone(&api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), api))
}

/// An answer slower than the reply budget: the passive reply is the
/// interim text and the answer follows as a customer-service message, once;
/// a user whose window WeChat says is closed gets the answer with their
/// next contact instead of never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_answers_follow_as_customer_service_messages() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let (api_base, api) = fake_api().await?;
    let service = bot::http::message_service(
        &engine,
        webhooks::wechat::service::ServiceConfig {
            kind: webhooks::wechat::service::ServiceKind::OfficialAccount,
            app_id: APP_ID.into(),
            secret: "app-secret".into(),
            api_base,
        },
    )?;
    let channels = bot::http::HttpConfig {
        wechat: Some(AccountConfig {
            token: TOKEN.into(),
            encoding_aes_key: None,
            app_id: APP_ID.into(),
            // No real answer is this fast: every reply takes the late path.
            reply_budget: Duration::from_millis(1),
            service: Some(service),
            interim_text: engine.render("in_progress.j2", ())?,
            unavailable_text: engine.render("unavailable.j2", ())?,
        }),
        ..Default::default()
    };
    let addr = tests::serve_with(engine.clone(), &channels).await?;
    let client = reqwest::Client::new();
    let (timestamp, nonce) = ("1700000000", "n-2");
    let url = format!(
        "http://{addr}/wechat?signature={}&timestamp={timestamp}&nonce={nonce}",
        url_signature(TOKEN, timestamp, nonce)
    );
    let post = |body: String| client.post(&url).body(body).send();

    let openid = format!("o-{}", uuid::Uuid::new_v4());
    // WeChat delivers the message twice; the answer is pushed once.
    let first = post(message(&openid, 7_000_000_001, "洋芋叶子发黑咋个办"))
        .await?
        .text()
        .await?;
    let second = post(message(&openid, 7_000_000_001, "洋芋叶子发黑咋个办"))
        .await?
        .text()
        .await?;
    for reply in [&first, &second] {
        let reply = parse_message(reply.as_bytes())?;
        let InboundKind::Text { content } = reply.kind else {
            anyhow::bail!("not a text reply");
        };
        assert!(content.contains("请稍候"), "interim reply: {content}");
    }
    let mut pushed = Vec::new();
    for _ in 0..100 {
        pushed = api.sent.lock().expect("lock").clone();
        if !pushed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pushed_now = api.sent.lock().expect("lock").clone();
    assert_eq!(
        pushed_now.len(),
        pushed.len(),
        "pushed once: {pushed_now:?}"
    );
    assert!(!pushed.is_empty(), "the answer was pushed");
    assert!(pushed.iter().all(|(to, _)| *to == openid));
    assert!(pushed[0].1.contains("晚疫病"), "{}", pushed[0].1);

    // A closed window: the answer waits for the user's next message. (A
    // question not asked before, so no cache makes it fast enough for a
    // passive reply.)
    let closed = format!("closed-{}", uuid::Uuid::new_v4());
    post(message(&closed, 7_000_000_002, "马铃薯叶片发黑是啥子病")).await?;
    let user = format!("wechat:{closed}");
    let mut kept = Vec::new();
    for _ in 0..100 {
        kept = engine.notices().pending(&user).await?;
        if !kept.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!kept.is_empty(), "kept for later");
    assert_eq!(
        api.token_requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one access token, cached"
    );
    Ok(())
}

/// A WeCom member's text message as WeCom posts it: the URL with its
/// `msg_signature` and the encrypted envelope.
fn wecom_delivery(
    addr: std::net::SocketAddr,
    crypto: &MessageCrypto,
    member: &str,
    msg_id: u64,
    nonce: &str,
) -> (String, String) {
    let inner = format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><FromUserName><![CDATA[{member}]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[洋芋叶子发黑咋个办]]></Content><MsgId>{msg_id}</MsgId><AgentID>{AGENT_ID}</AgentID></xml>"
    );
    let encrypt = crypto.encrypt(&inner);
    let timestamp = "1700000000";
    let url = format!(
        "http://{addr}/wecom?msg_signature={}&timestamp={timestamp}&nonce={nonce}",
        crypto.msg_signature(timestamp, nonce, &encrypt)
    );
    let body = format!(
        "<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );
    (url, body)
}

/// WeCom on the same engine: always encrypted, the corp id as receive id,
/// the user keyed as a WeCom user; absent when not configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_answers_encrypted_messages() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let channels = bot::http::HttpConfig {
        wecom: Some(AccountConfig {
            token: TOKEN.into(),
            encoding_aes_key: Some(KEY.into()),
            app_id: CORP_ID.into(),
            reply_budget: Duration::from_secs(4),
            service: None,
            interim_text: engine.render("in_progress.j2", ())?,
            unavailable_text: engine.render("unavailable.j2", ())?,
        }),
        ..Default::default()
    };
    let addr = tests::serve_with(engine.clone(), &channels).await?;
    let crypto = MessageCrypto::new(TOKEN, KEY, CORP_ID)?;
    let user = format!("u{}", uuid::Uuid::new_v4().simple());
    let (url, body) = wecom_delivery(addr, &crypto, &user, 8_000_000_001, "w-1");
    let response = reqwest::Client::new().post(&url).body(body).send().await?;
    assert_eq!(response.status(), 200);
    let envelope = parse_envelope(&response.bytes().await?)?;
    let reply = parse_message(crypto.decrypt(&envelope.encrypt)?.as_bytes())?;
    let InboundKind::Text { content } = reply.kind else {
        anyhow::bail!("not a text reply");
    };
    assert!(content.contains("晚疫病"), "{content}");
    let turns = engine
        .turns()
        .find(&[("user", &format!("wecom:{user}"))])
        .await?;
    assert_eq!(turns.len(), 1);

    let plain = tests::serve(engine).await?;
    let missing = reqwest::get(format!("http://{plain}/wecom?echostr=x")).await?;
    assert_eq!(missing.status(), 404);
    Ok(())
}

/// WeCom's late answers: an interim passive reply, then the answer as an
/// app message (with the agent id) to the member, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_late_answers_follow_as_app_messages() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let (api_base, api) = fake_api().await?;
    let service = bot::http::message_service(
        &engine,
        webhooks::wechat::service::ServiceConfig {
            kind: webhooks::wechat::service::ServiceKind::WeCom { agent_id: AGENT_ID },
            app_id: CORP_ID.into(),
            secret: "app-secret".into(),
            api_base,
        },
    )?;
    let channels = bot::http::HttpConfig {
        wecom: Some(AccountConfig {
            token: TOKEN.into(),
            encoding_aes_key: Some(KEY.into()),
            app_id: CORP_ID.into(),
            // No real answer is this fast: every reply takes the late path.
            reply_budget: Duration::from_millis(1),
            service: Some(service),
            interim_text: engine.render("in_progress.j2", ())?,
            unavailable_text: engine.render("unavailable.j2", ())?,
        }),
        ..Default::default()
    };
    let addr = tests::serve_with(engine.clone(), &channels).await?;
    let crypto = MessageCrypto::new(TOKEN, KEY, CORP_ID)?;
    let member = format!("u{}", uuid::Uuid::new_v4().simple());
    let (url, body) = wecom_delivery(addr, &crypto, &member, 8_000_000_002, "w-2");
    let client = reqwest::Client::new();
    // WeCom delivers the message twice; both get the interim reply.
    for _ in 0..2 {
        let response = client.post(&url).body(body.clone()).send().await?;
        assert_eq!(response.status(), 200);
        let envelope = parse_envelope(&response.bytes().await?)?;
        let reply = parse_message(crypto.decrypt(&envelope.encrypt)?.as_bytes())?;
        let InboundKind::Text { content } = reply.kind else {
            anyhow::bail!("not a text reply");
        };
        assert!(content.contains("请稍候"), "interim reply: {content}");
    }
    let mut pushed = Vec::new();
    for _ in 0..100 {
        pushed = api.sent.lock().expect("lock").clone();
        if !pushed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        api.sent.lock().expect("lock").len(),
        pushed.len(),
        "pushed once"
    );
    assert!(!pushed.is_empty(), "the answer was sent as an app message");
    assert!(pushed.iter().all(|(to, _)| *to == member));
    assert!(pushed[0].1.contains("晚疫病"), "{}", pushed[0].1);
    Ok(())
}

/// Every message kind WeChat sends, as WeChat documents it, through the
/// endpoint to the real engine: what the user reads back (or that nothing
/// is answered), one case per row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_kind_gets_its_reply() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let channels = bot::http::HttpConfig {
        wechat: Some(plaintext_account(&engine)?),
        ..Default::default()
    };
    let addr = tests::serve_with(engine.clone(), &channels).await?;
    let client = reqwest::Client::new();
    let (timestamp, nonce) = ("1700000000", "k-1");
    let url = format!(
        "http://{addr}/wechat?signature={}&timestamp={timestamp}&nonce={nonce}",
        url_signature(TOKEN, timestamp, nonce)
    );
    let openid = format!("o-{}", uuid::Uuid::new_v4());
    let head = |kind: &str, time: u32| {
        format!(
            "<ToUserName><![CDATA[gh_wenke]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{time}</CreateTime><MsgType><![CDATA[{kind}]]></MsgType>"
        )
    };
    // (what, the message's XML body after the header, a text the reply must
    // contain; None: the request is answered "success", no reply).
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        (
            "subscribe",
            format!("{}<Event><![CDATA[subscribe]]></Event>", head("event", 1)),
            Some("欢迎来到问科"),
        ),
        (
            "text",
            format!(
                "{}<Content><![CDATA[中暑了怎么急救]]></Content><MsgId>9100000001</MsgId>",
                head("text", 2)
            ),
            Some("阴凉"),
        ),
        (
            "voice with recognition",
            format!(
                "{}<MediaId><![CDATA[m1]]></MediaId><Format><![CDATA[amr]]></Format><Recognition><![CDATA[洋芋叶子发黑咋个办]]></Recognition><MsgId>9100000002</MsgId>",
                head("voice", 3)
            ),
            Some("晚疫病"),
        ),
        (
            "voice without recognition",
            format!(
                "{}<MediaId><![CDATA[m2]]></MediaId><Format><![CDATA[amr]]></Format><MsgId>9100000003</MsgId>",
                head("voice", 4)
            ),
            Some("没有听清楚"),
        ),
        (
            "image",
            format!(
                "{}<PicUrl><![CDATA[http://mmbiz.example/p.jpg]]></PicUrl><MediaId><![CDATA[m3]]></MediaId><MsgId>9100000004</MsgId>",
                head("image", 5)
            ),
            Some("转给专家"),
        ),
        (
            "video",
            format!(
                "{}<MediaId><![CDATA[m4]]></MediaId><ThumbMediaId><![CDATA[t4]]></ThumbMediaId><MsgId>9100000005</MsgId>",
                head("video", 6)
            ),
            Some("转给专家"),
        ),
        (
            "location",
            format!(
                "{}<Location_X>30.657</Location_X><Location_Y>104.066</Location_Y><Scale>15</Scale><Label><![CDATA[四川省成都市青羊区]]></Label><MsgId>9100000006</MsgId>",
                head("location", 7)
            ),
            Some("已记下你的位置"),
        ),
        (
            "link",
            format!(
                "{}<Title><![CDATA[吃隔夜菜会致癌]]></Title><Description><![CDATA[转发]]></Description><Url><![CDATA[http://example.org/a]]></Url><MsgId>9100000007</MsgId>",
                head("link", 8)
            ),
            Some("吃隔夜菜会致癌"),
        ),
        (
            "menu click HELP",
            format!(
                "{}<Event><![CDATA[CLICK]]></Event><EventKey><![CDATA[HELP]]></EventKey>",
                head("event", 9)
            ),
            Some("我能帮你"),
        ),
        (
            "menu click of an unknown key",
            format!(
                "{}<Event><![CDATA[CLICK]]></Event><EventKey><![CDATA[V1001_TODAY]]></EventKey>",
                head("event", 10)
            ),
            Some("还在准备中"),
        ),
        (
            "menu VIEW (a link; WeChat opens it)",
            format!(
                "{}<Event><![CDATA[VIEW]]></Event><EventKey><![CDATA[http://example.org]]></EventKey>",
                head("event", 11)
            ),
            None,
        ),
        (
            "unsubscribe",
            format!(
                "{}<Event><![CDATA[unsubscribe]]></Event>",
                head("event", 12)
            ),
            None,
        ),
    ];
    for (what, body, expected) in cases {
        let response = client
            .post(&url)
            .body(format!("<xml>{body}</xml>"))
            .send()
            .await?;
        assert_eq!(response.status(), 200, "{what}");
        let text = response.text().await?;
        let Some(expected) = expected else {
            assert_eq!(text, "success", "{what}: no reply expected");
            continue;
        };
        let reply = parse_message(text.as_bytes())?;
        assert_eq!(reply.to_user_name, openid, "{what}");
        let InboundKind::Text { content } = reply.kind else {
            anyhow::bail!("{what}: not a text reply: {text}");
        };
        assert!(content.contains(expected), "{what}: {content}");
    }
    Ok(())
}

/// Three concurrent deliveries of a question without an answer: one entry
/// in the editors' unanswered queue (an abstained turn), the same reply
/// to all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_an_unanswered_question_queue_it_once() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let channels = bot::http::HttpConfig {
        wechat: Some(plaintext_account(&engine)?),
        ..Default::default()
    };
    let addr = tests::serve_with(engine.clone(), &channels).await?;
    let (timestamp, nonce) = ("1700000000", "u-1");
    let url = format!(
        "http://{addr}/wechat?signature={}&timestamp={timestamp}&nonce={nonce}",
        url_signature(TOKEN, timestamp, nonce)
    );
    let openid = format!("o-{}", uuid::Uuid::new_v4());
    let body = message(&openid, 9_200_000_001, "月亮上为什么有那么多环形山");
    let client = reqwest::Client::new();
    let deliveries: Vec<_> = (0..3)
        .map(|_| tokio::spawn(client.post(&url).body(body.clone()).send()))
        .collect();
    // Each delivery's XML is rendered when it is answered, so its
    // CreateTime may differ by a second; the text must not.
    let mut replies = Vec::new();
    for delivery in deliveries {
        let xml = delivery.await??.text().await?;
        let InboundKind::Text { content } = parse_message(xml.as_bytes())?.kind else {
            anyhow::bail!("not a text reply: {xml}");
        };
        replies.push(content);
    }
    assert!(replies.iter().all(|r| r == &replies[0]), "{replies:?}");
    assert!(replies[0].contains("暂时没有"), "{}", replies[0]);
    let turns = engine
        .turns()
        .find(&[("user", &format!("wechat:{openid}"))])
        .await?;
    assert_eq!(turns.len(), 1, "one queue entry for three deliveries");
    assert_eq!(turns[0].reply_kind, "abstain");
    Ok(())
}
