//! The WeChat Official Account endpoint against the real engine: a farmer's
//! message in safe mode gets the vetted answer, encrypted; WeChat's retries
//! of one message produce one turn and the same reply; an unconfigured
//! server has no `/wechat`.

use std::time::Duration;

use webhooks::wechat::account::AccountConfig;
use webhooks::wechat::crypto::{MessageCrypto, url_signature};
use webhooks::wechat::xml::{InboundKind, parse_envelope, parse_message};

const TOKEN: &str = "wenke-test";
const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APP_ID: &str = "wx0123456789abcdef";

fn message(openid: &str, msg_id: u64, text: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_wenke]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )
}

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
