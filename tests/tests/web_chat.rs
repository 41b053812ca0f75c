//! The web chat in a real headless Chromium (Debian's `chromium`) against
//! the real server: ask by tapping an example, tap a related question and a
//! quick reply, follow up by typing, rate an answer, reload and find the
//! conversation again, on a 360-px-wide phone screen. Screenshots go to
//! `tests/artifacts/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use headless_chrome::Tab;
use tests::browser::{js, launch, screenshot, set_viewport};
use webhooks::message::Rating;

/// Longest wait for the page to show a reply (the first query also warms
/// the model up).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

fn count(tab: &Tab, selector: &str) -> anyhow::Result<u64> {
    let expression = format!("document.querySelectorAll({selector:?}).length");
    Ok(js(tab, &expression)?.as_u64().unwrap_or(0))
}

/// Waits until `selector` matches more than `before` elements.
fn wait_for_more(tab: &Tab, selector: &str, before: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while Instant::now() < deadline {
        if count(tab, selector)? > before {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out waiting for more {selector} than {before}")
}

/// The text of the last element matching `selector`.
fn last_text(tab: &Tab, selector: &str) -> anyhow::Result<String> {
    let expression = format!(
        "(function() {{ var all = document.querySelectorAll({selector:?}); return all.length ? all[all.length - 1].textContent : ''; }})()"
    );
    Ok(js(tab, &expression)?
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

fn drive(base: &str) -> anyhow::Result<String> {
    let browser = launch(360, 740)?;
    let tab = browser.new_tab()?;
    set_viewport(&tab, 360, 740, true)?;
    tab.navigate_to(base)?.wait_until_navigated()?;
    tab.wait_for_element("#chat-input")?;

    // Ask by tapping an example question on the welcome screen.
    let answers = "#messages .msg.bot[data-kind=answer]";
    tab.wait_for_element("button.example")?.click()?;
    wait_for_more(&tab, answers, 0)?;
    let source = last_text(&tab, "#messages .msg.bot .source")?;
    if !source.contains("来源") || !source.contains("审核") {
        bail!("the answer shows no source line: {source:?}");
    }
    let first_turn = js(
        &tab,
        "document.querySelector('#messages .msg.bot[data-kind=answer]').dataset.turnId",
    )?
    .as_str()
    .unwrap_or_default()
    .to_owned();
    screenshot(&tab, "web-chat-answer-360.png")?;

    // Tap a related question.
    let before = count(&tab, answers)?;
    let suggestion = last_text(&tab, "#messages .msg.bot .suggestion")?;
    if suggestion.is_empty() {
        bail!("the answer offers no related question to tap");
    }
    tab.find_elements("#messages .msg.bot .suggestion")?
        .last()
        .context("a suggestion button")?
        .click()?;
    wait_for_more(&tab, answers, before)?;

    // Tap the "详细" quick reply: the full answer.
    let before = count(&tab, answers)?;
    tab.find_elements("#messages .msg.bot .quick-reply")?
        .last()
        .context("a quick reply")?
        .click()?;
    wait_for_more(&tab, answers, before)?;

    // Follow up by typing, with the keyboard only.
    let before = count(&tab, answers)?;
    tab.wait_for_element("#chat-input")?.click()?;
    tab.type_str("那打啥子药")?;
    tab.press_key("Enter")?;
    wait_for_more(&tab, answers, before)?;
    let follow_up = last_text(&tab, answers)?;
    if !follow_up.contains("药") {
        bail!("the follow-up answer is not about treatment: {follow_up:?}");
    }

    // Rate the first answer.
    tab.wait_for_element("#messages .msg.bot[data-kind=answer] .feedback-up")?
        .click()?;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let pressed = js(
            &tab,
            "document.querySelector('#messages .msg.bot[data-kind=answer] .feedback-up').getAttribute('aria-pressed')",
        )?;
        if pressed.as_str() == Some("true") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the 👍 button was not marked as pressed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Reload: the conversation is still there.
    let messages = count(&tab, "#messages .msg")?;
    tab.reload(false, None)?;
    tab.wait_for_element("#messages .msg.bot")?;
    let restored = count(&tab, "#messages .msg")?;
    if restored != messages {
        bail!("{messages} messages before reload, {restored} after");
    }
    let viewport = js(&tab, "window.innerWidth")?.as_u64().unwrap_or(0);
    if viewport != 360 {
        bail!("the viewport is {viewport} px wide, not a 360-px phone");
    }
    let width = js(&tab, "document.documentElement.scrollWidth")?
        .as_u64()
        .unwrap_or(0);
    if width > 360 {
        bail!("the page scrolls sideways on a 360-px screen ({width} px wide)");
    }
    screenshot(&tab, "web-chat-conversation-360.png")?;
    Ok(first_turn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_user_asks_taps_follows_up_and_rates_in_a_real_browser() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine: Arc<bot::Engine> =
        tests::engine_with(&dir, "bot/tests/data/conversation.jsonl").await?;
    let addr = tests::serve(engine.clone()).await?;
    let base = format!("http://{addr}/");
    let first_turn = tokio::task::spawn_blocking(move || drive(&base)).await??;

    // The 👍 reached the turn log.
    let rated = engine
        .turns()
        .find(&[("reply_kind", "answer")])
        .await?
        .into_iter()
        .find(|t| t.turn_id == first_turn)
        .context("the first answer's turn is logged")?;
    assert_eq!(rated.feedback, Some(Rating::Up));
    assert_eq!(rated.channel, "web");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_answers_and_reports_health() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let addr = tests::serve(engine).await?;
    let client = reqwest::Client::new();
    let health: serde_json::Value = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store"], "embedded");
    let ready = client.get(format!("http://{addr}/readyz")).send().await?;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready
            .headers()
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    let ready: serde_json::Value = ready.json().await?;
    assert_eq!(
        (&ready["status"], &ready["points"], &ready["sessions"]),
        (&"ready".into(), &"ok".into(), &"ok".into())
    );

    let response = client
        .post(format!("http://{addr}/api/chat"))
        .header("x-request-id", "req-42")
        .json(&serde_json::json!({"user_id": "u1", "text": "洋芋叶子发黑咋个办"}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("req-42")
    );
    let reply: serde_json::Value = response.json().await?;
    assert_eq!(reply["kind"], "answer");
    assert!(
        reply["reply"]
            .as_str()
            .unwrap_or_default()
            .contains("晚疫病")
    );
    assert_eq!(
        reply["citations"][0]["question"],
        "马铃薯晚疫病怎么识别和防治？"
    );
    assert!(reply["turn_id"].as_str().is_some_and(|id| !id.is_empty()));

    let feedback = client
        .post(format!("http://{addr}/api/feedback"))
        .json(&serde_json::json!({"user_id": "u1", "turn_id": reply["turn_id"], "rating": "down"}))
        .send()
        .await?;
    assert_eq!(feedback.status(), 200);
    let unknown = client
        .post(format!("http://{addr}/api/feedback"))
        .json(&serde_json::json!({"user_id": "u2", "turn_id": reply["turn_id"], "rating": "down"}))
        .send()
        .await?;
    assert_eq!(unknown.status(), 422, "another user's turn");

    // The metrics count what just happened, by route pattern and reply kind.
    let metrics = client.get(format!("http://{addr}/metrics")).send().await?;
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/openmetrics-text"))
    );
    let text = metrics.text().await?;
    let count = |prefix: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        count(r#"wenke_http_requests_total{route="/api/chat",status="200"}"#) >= 1.0,
        "{text}"
    );
    assert!(
        count(r#"wenke_http_requests_total{route="/api/feedback",status="422"}"#) >= 1.0,
        "{text}"
    );
    assert!(
        count(r#"wenke_replies_total{channel="web",kind="answer"}"#) >= 1.0,
        "{text}"
    );
    assert!(
        count(r#"wenke_engine_step_duration_seconds_count{step="vector"}"#) >= 1.0,
        "{text}"
    );
    assert!(
        count(r#"wenke_engine_step_duration_seconds_count{step="search"}"#) >= 1.0,
        "{text}"
    );
    // Every query was answered, so none waits for the embedding thread
    // nor for a place in the engine; the turn log's queue is a gauge like
    // them.
    assert!(
        text.lines().any(|l| l == "wenke_embedding_queue_depth 0"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "wenke_turns_waiting 0"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("wenke_turn_log_pending ")),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_limited_but_probes_and_other_addresses_are_not() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    // Behind a proxy that names the client in X-Real-IP.
    let channels = bot::http::HttpConfig {
        ip_limit: Some(bot::ip_limit::IpLimit {
            per_minute: 3,
            client_ip_header: Some(axum::http::HeaderName::from_static("x-real-ip")),
        }),
        ..Default::default()
    };
    let addr = tests::serve_with(engine, &channels).await?;
    let client = reqwest::Client::new();
    let ask = |ip: &'static str, user: &'static str| {
        client
            .post(format!("http://{addr}/api/chat"))
            .header("x-real-ip", ip)
            .json(&serde_json::json!({"user_id": user, "text": "洋芋叶子发黑咋个办"}))
            .send()
    };
    // Different users behind one address share its budget.
    for user in ["ip-a", "ip-b", "ip-c"] {
        assert_eq!(ask("203.0.113.7", user).await?.status(), 200);
    }
    let refused = ask("203.0.113.7", "ip-d").await?;
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("60")
    );
    assert!(refused.text().await?.contains("请求太频繁"));
    assert_eq!(ask("198.51.100.2", "ip-e").await?.status(), 200);
    for _ in 0..5 {
        let health = client
            .get(format!("http://{addr}/healthz"))
            .header("x-real-ip", "203.0.113.7")
            .send()
            .await?;
        assert_eq!(health.status(), 200);
    }
    Ok(())
}
