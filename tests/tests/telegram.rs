//! The Telegram bot against the real engine and a local stand-in for the
//! Bot API: the webhook is registered with its secret, updates with a
//! wrong secret or a broken body are refused, a farmer's question gets the
//! vetted answer as escaped HTML with an inline keyboard, 👎 records
//! feedback, a button sends its question, `/need` starts the demand form, a
//! re-delivered update is answered once, and long polling works too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::post;
use serde_json::{Value, json};
use webhooks::telegram::{TelegramConfig, TelegramMode};

const TOKEN: &str = "123456:test-token";

/// Records every Bot API call as (method, body) and answers as Telegram
/// would; `getUpdates` hands out the queued updates once.
#[derive(Default)]
struct FakeBotApi {
    calls: Mutex<Vec<(String, String)>>,
    queued_updates: Mutex<Vec<Value>>,
}

impl FakeBotApi {
    fn calls(&self, method: &str) -> Vec<String> {
        let calls = self.calls.lock().expect("lock");
        calls
            .iter()
            .filter(|(m, _)| m.eq_ignore_ascii_case(method))
            .map(|(_, body)| body.clone())
            .collect()
    }

    fn sent_to(&self, chat: i64) -> Vec<Value> {
        self.calls("sendMessage")
            .iter()
            .filter_map(|body| serde_json::from_str::<Value>(body).ok())
            .filter(|body| body["chat_id"] == json!(chat))
            .collect()
    }
}

async fn fake_bot_api() -> anyhow::Result<(String, Arc<FakeBotApi>)> {
    let api = Arc::new(FakeBotApi::default());
    let app = axum::Router::new()
        .route(
            "/{bot}/{method}",
            post(
                |State(api): State<Arc<FakeBotApi>>,
                 Path((bot, method)): Path<(String, String)>,
                 body: String| async move {
                    if bot != format!("bot{TOKEN}") {
                        return axum::Json(
                            json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
                        );
                    }
                    // Method names are case-insensitive (teloxide sends
                    // "SendMessage").
                    let method = method.to_ascii_lowercase();
                    api.calls
                        .lock()
                        .expect("lock")
                        .push((method.clone(), body.clone()));
                    let result = match method.as_str() {
                        "sendmessage" => {
                            let request: Value = serde_json::from_str(&body).unwrap_or_default();
                            json!({
                                "message_id": 1,
                                "date": 1_700_000_000,
                                "chat": {"id": request["chat_id"], "type": "private", "first_name": "农户"},
                                "text": request["text"],
                            })
                        }
                        "getwebhookinfo" => {
                            json!({"url": "", "has_custom_certificate": false, "pending_update_count": 0})
                        }
                        "getupdates" => {
                            let updates: Vec<Value> =
                                std::mem::take(&mut *api.queued_updates.lock().expect("lock"));
                            if updates.is_empty() {
                                // A long poll that times out with nothing new.
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            json!(updates)
                        }
                        _ => json!(true),
                    };
                    axum::Json(json!({"ok": true, "result": result}))
                },
            ),
        )
        .with_state(Arc::clone(&api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), api))
}

fn text_update(update_id: u32, chat: i64, text: &str) -> Value {
    json!({
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1_700_000_000,
            "chat": {"id": chat, "type": "private", "first_name": "农户"},
            "from": {"id": chat, "is_bot": false, "first_name": "农户"},
            "text": text,
        }
    })
}

fn button_update(update_id: u32, chat: i64, data: &str) -> Value {
    json!({
        "update_id": update_id,
        "callback_query": {
            "id": format!("cb-{update_id}"),
            "from": {"id": chat, "is_bot": false, "first_name": "农户"},
            "chat_instance": "ci-1",
            "data": data,
        }
    })
}

/// The callback data of every inline button of a sent message.
fn buttons(message: &Value) -> Vec<(String, String)> {
    message["reply_markup"]["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .map(|button| {
            (
                button["text"].as_str().unwrap_or_default().to_owned(),
                button["callback_data"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

async fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    for _ in 0..200 {
        if ready() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answers_with_buttons_and_feedback() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let (api_url, api) = fake_bot_api().await?;
    let mode = TelegramMode::webhook_with_derived_secret("https://bot.example.org/telegram", TOKEN);
    let TelegramMode::Webhook { secret, .. } = &mode else {
        anyhow::bail!("webhook mode expected");
    };
    let secret = secret.clone();
    let telegram = bot::http::telegram_bot(
        &engine,
        TelegramConfig {
            token: TOKEN.into(),
            api_url: Some(api_url),
            mode,
            texts: bot::http::telegram_texts(&engine)?,
        },
    )?;
    telegram.start().await?;
    let registration = api.calls("setWebhook");
    assert_eq!(registration.len(), 1);
    assert!(registration[0].contains("https://bot.example.org/telegram"));
    assert!(
        registration[0].contains(&secret),
        "the secret goes to Telegram"
    );

    let channels = bot::http::HttpConfig {
        telegram: Some(telegram),
        ..Default::default()
    };
    let addr = tests::serve_with(engine.clone(), &channels).await?;
    let url = format!("http://{addr}/telegram");
    let client = reqwest::Client::new();
    let post = |update: &Value, secret: &str| {
        client
            .post(&url)
            .header("x-telegram-bot-api-secret-token", secret)
            .json(update)
            .send()
    };

    // Wrong or missing secret, broken body.
    let chat = 7_000_001;
    let question = text_update(1, chat, "洋芋叶子发黑咋个办");
    assert_eq!(post(&question, "wrong").await?.status(), 401);
    let unsigned = client.post(&url).json(&question).send().await?;
    assert_eq!(unsigned.status(), 401);
    let broken = client
        .post(&url)
        .header("x-telegram-bot-api-secret-token", &secret)
        .body("{\"update_id\": ")
        .send()
        .await?;
    assert_eq!(broken.status(), 400);
    assert!(api.sent_to(chat).is_empty(), "nothing answered so far");

    // The question, delivered twice (Telegram re-delivers when unsure).
    assert_eq!(post(&question, &secret).await?.status(), 200);
    assert_eq!(post(&question, &secret).await?.status(), 200);
    let sent = api.sent_to(chat);
    assert_eq!(sent.len(), 1, "one answer for two deliveries: {sent:?}");
    let answer = &sent[0];
    assert_eq!(answer["parse_mode"], "HTML");
    let html = answer["text"].as_str().unwrap_or_default();
    assert!(html.contains("晚疫病"), "{html}");
    assert!(
        html.contains("<i>来源："),
        "the source line in italics: {html}"
    );
    let turns = engine
        .turns()
        .find(&[("user", &format!("telegram:{chat}"))])
        .await?;
    assert_eq!(turns.len(), 1, "one turn for two deliveries");
    let keyboard = buttons(answer);
    assert!(
        keyboard.iter().any(|(label, _)| label == "👎"),
        "{keyboard:?}"
    );
    assert!(
        keyboard.iter().all(|(_, data)| data.len() <= 64),
        "{keyboard:?}"
    );

    // 👎 records feedback on that turn and shows a toast.
    let down = keyboard
        .iter()
        .find(|(label, _)| label == "👎")
        .map(|(_, data)| data.clone())
        .unwrap_or_default();
    assert_eq!(
        post(&button_update(2, chat, &down), &secret)
            .await?
            .status(),
        200
    );
    let toasts = api.calls("answerCallbackQuery");
    assert_eq!(toasts.len(), 1);
    assert!(toasts[0].contains("cb-2"), "{toasts:?}");
    let rated = engine
        .turns()
        .find(&[("user", &format!("telegram:{chat}"))])
        .await?;
    assert_eq!(
        rated[0].feedback,
        Some(webhooks::message::Rating::Down),
        "{rated:?}"
    );

    // "详细" is a button that sends its text: the full answer follows.
    let detail = keyboard
        .iter()
        .find(|(label, _)| label == "详细")
        .map(|(_, data)| data.clone())
        .unwrap_or_default();
    assert_eq!(
        post(&button_update(3, chat, &detail), &secret)
            .await?
            .status(),
        200
    );
    let sent = api.sent_to(chat);
    assert_eq!(sent.len(), 2, "the tapped text is answered");
    let full = sent[1]["text"].as_str().unwrap_or_default();
    assert!(full.contains("潮湿时背面"), "the full answer: {full}");

    // A button whose text is no longer known says so instead of guessing.
    assert_eq!(
        post(&button_update(5, chat, "k:0123456789abcdef"), &secret)
            .await?
            .status(),
        200
    );
    let toasts = api.calls("answerCallbackQuery");
    assert!(
        toasts.last().is_some_and(|t| t.contains("过期")),
        "{toasts:?}"
    );
    assert_eq!(api.sent_to(chat).len(), 2);

    // A welcome's example questions are buttons that ask them.
    let newcomer = 7_000_003;
    assert_eq!(
        post(&text_update(6, newcomer, "/start"), &secret)
            .await?
            .status(),
        200
    );
    let welcome = api.sent_to(newcomer);
    let example = buttons(&welcome[0])
        .into_iter()
        .find(|(label, _)| label.starts_with("1. "))
        .map(|(_, data)| data)
        .unwrap_or_default();
    assert_eq!(
        post(&button_update(7, newcomer, &example), &secret)
            .await?
            .status(),
        200
    );
    let asked = api.sent_to(newcomer);
    assert_eq!(asked.len(), 2, "the example is answered: {asked:?}");
    assert!(
        asked[1]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("晚疫病")
    );

    // Commands: /need starts the demand form.
    let other = 7_000_002;
    assert_eq!(
        post(&text_update(4, other, "/need"), &secret)
            .await?
            .status(),
        200
    );
    let form = api.sent_to(other);
    assert_eq!(form.len(), 1);
    let text = form[0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("需求") || text.contains("问题"), "{text}");
    assert!(
        buttons(&form[0]).iter().any(|(label, _)| label == "取消"),
        "the form can be cancelled by a button: {:?}",
        buttons(&form[0])
    );

    // Without Telegram configured, the path does not exist.
    let plain = tests::serve(engine).await?;
    let missing = client
        .post(format!("http://{plain}/telegram"))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_answers_queued_updates() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let (api_url, api) = fake_bot_api().await?;
    let chat = 7_000_101;
    api.queued_updates.lock().expect("lock").extend([
        text_update(10, chat, "/start"),
        text_update(11, chat, "中暑了怎么急救"),
    ]);
    let telegram = bot::http::telegram_bot(
        &engine,
        TelegramConfig {
            token: TOKEN.into(),
            api_url: Some(api_url),
            mode: TelegramMode::Polling,
            texts: bot::http::telegram_texts(&engine)?,
        },
    )?;
    telegram.start().await?;
    wait_for("two replies", || api.sent_to(chat).len() >= 2).await?;
    let sent = api.sent_to(chat);
    let welcome = sent[0]["text"].as_str().unwrap_or_default();
    assert!(
        !buttons(&sent[0]).is_empty(),
        "the welcome offers example questions: {welcome}"
    );
    let answer = sent[1]["text"].as_str().unwrap_or_default();
    assert!(answer.contains("阴凉"), "{answer}");
    assert!(api.calls("setWebhook").is_empty());
    Ok(())
}

/// Notices (a claimed demand, a published answer) reach Telegram users
/// through the same bot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_are_pushed_to_telegram_users() -> anyhow::Result<()> {
    use webhooks::message::{Channel, Push, UserKey};
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let (api_url, api) = fake_bot_api().await?;
    let telegram = bot::http::telegram_bot(
        &engine,
        TelegramConfig {
            token: TOKEN.into(),
            api_url: Some(api_url),
            mode: TelegramMode::Polling,
            texts: bot::http::telegram_texts(&engine)?,
        },
    )?;
    let chat = 7_000_201;
    telegram
        .push(
            &UserKey::new(Channel::Telegram, chat.to_string()),
            "你的需求已有专家揭榜",
        )
        .await?;
    let sent = api.sent_to(chat);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["text"], "你的需求已有专家揭榜");
    let wrong = telegram
        .push(&UserKey::new(Channel::Wechat, "o-1"), "x")
        .await;
    assert!(wrong.is_err());
    Ok(())
}
