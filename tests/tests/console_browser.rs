//! The editor console in a real headless Chromium against the real server:
//! an editor signs in with the keyboard, writes an entry, previews it,
//! saves and submits it; a reviewer signs in on a tablet-width screen,
//! finds it in the review queue and publishes it; the bot then answers with
//! it. Screenshots go to `tests/artifacts/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bot::console::accounts::Role;
use headless_chrome::Tab;
use tests::browser::{js, launch, screenshot, set_viewport};

const PASSWORD: &str = "correct-horse-battery";
const QUESTION: &str = "冬季大棚草莓灰霉病怎么防治？";

fn wait_for_text(tab: &Tab, text: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let expression = format!("document.body.innerText.includes({text:?})");
    while Instant::now() < deadline {
        if js(tab, &expression)?.as_bool() == Some(true) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "the page never showed {text:?}: {}",
        js(tab, "document.body.innerText")?
    )
}

fn fill(tab: &Tab, selector: &str, text: &str) -> anyhow::Result<()> {
    tab.wait_for_element(selector)?.click()?;
    tab.type_str(text)?;
    Ok(())
}

fn sign_in(tab: &Tab, base: &str, username: &str) -> anyhow::Result<()> {
    tab.navigate_to(&format!("{base}/console"))?
        .wait_until_navigated()?;
    // Keyboard only: the name field has focus, Tab to the password, Enter.
    tab.wait_for_element("#username")?;
    tab.type_str(username)?;
    tab.press_key("Tab")?;
    tab.type_str(PASSWORD)?;
    tab.press_key("Enter")?;
    tab.wait_for_element("nav .who")?;
    Ok(())
}

fn no_sideways_scroll(tab: &Tab, width: u64) -> anyhow::Result<()> {
    let scroll = js(tab, "document.documentElement.scrollWidth")?
        .as_u64()
        .unwrap_or(0);
    if scroll > width {
        bail!("the page scrolls sideways at {width} px ({scroll} px wide)");
    }
    Ok(())
}

fn drive(base: &str) -> anyhow::Result<()> {
    let browser = launch(1280, 900)?;

    // The editor, on a laptop.
    let tab = browser.new_tab()?;
    set_viewport(&tab, 1280, 900, false)?;
    sign_in(&tab, base, "bian")?;
    wait_for_text(&tab, "知识条目")?;
    tab.wait_for_element("a[href='/console/entries/new']")?
        .click()?;
    tab.wait_for_element("#question")?;
    fill(&tab, "#question", QUESTION)?;
    fill(&tab, "#alt_questions", "草莓果子长灰毛咋个办")?;
    fill(
        &tab,
        "#answer",
        "- 加强通风降湿，及时摘除病果。\n- 发病初期喷腐霉利或嘧霉胺，按标签用量。",
    )?;
    tab.wait_for_element("#category")?.click()?;
    js(
        &tab,
        "document.querySelector('#category').value = '农业种植'",
    )?;
    fill(&tab, "#crops", "草莓")?;
    fill(&tab, "#source_organisation", "省农业科学院植物保护研究所")?;
    tab.wait_for_element("button[name=preview]")?.click()?;
    wait_for_text(&tab, "回答预览")?;
    if js(&tab, "document.querySelectorAll('.answer li').length")?.as_u64() != Some(2) {
        bail!("the preview does not render the Markdown list");
    }
    screenshot(&tab, "console-editor-preview-1280.png")?;
    tab.wait_for_element("form.card button[type=submit]:not([name])")?
        .click()?;
    wait_for_text(&tab, "草稿")?;
    tab.wait_for_element("form[action$='/submit'] button")?
        .click()?;
    wait_for_text(&tab, "待审核")?;
    wait_for_text(&tab, "需要另一位审核人审核")?;
    screenshot(&tab, "console-entry-submitted-1280.png")?;
    tab.wait_for_element("form[action='/console/logout'] button")?
        .click()?;
    tab.wait_for_element("#username")?;

    // The reviewer, on a tablet.
    let tab = browser.new_tab()?;
    set_viewport(&tab, 820, 1180, false)?;
    sign_in(&tab, base, "shen")?;
    tab.navigate_to(&format!("{base}/console/review"))?
        .wait_until_navigated()?;
    wait_for_text(&tab, QUESTION)?;
    no_sideways_scroll(&tab, 820)?;
    screenshot(&tab, "console-review-queue-820.png")?;
    tab.wait_for_element("table a[href^='/console/entries/']")?
        .click()?;
    tab.wait_for_element("form[action$='/approve'] input[name=note]")?
        .click()?;
    tab.type_str("内容准确，已核对标签用量")?;
    tab.wait_for_element("form[action$='/approve'] button")?
        .click()?;
    wait_for_text(&tab, "已发布")?;
    wait_for_text(&tab, "内容准确，已核对标签用量")?;
    no_sideways_scroll(&tab, 820)?;
    screenshot(&tab, "console-entry-published-820.png")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_and_a_reviewer_publish_an_entry_in_a_real_browser() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let console = tests::console_with(
        &engine,
        &[("bian", Role::Editor), ("shen", Role::Reviewer)],
        PASSWORD,
    )
    .await?;
    let channels = bot::http::HttpConfig {
        console: Some(console),
        ..Default::default()
    };
    let addr = tests::serve_with(Arc::clone(&engine), &channels).await?;
    let base = format!("http://{addr}");
    let driven = base.clone();
    tokio::task::spawn_blocking(move || drive(&driven)).await??;

    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/api/chat"))
        .json(&serde_json::json!({ "user_id": "w-browser-1", "text": "草莓果子长灰毛咋个办" }))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(reply["kind"], "answer", "{reply}");
    let published = engine
        .kb()
        .list(&kb::ListFilter {
            status: Some(kb::entry::Status::Published),
            ..Default::default()
        })
        .await?
        .into_iter()
        .find(|entry| entry.content.question == QUESTION)
        .ok_or_else(|| anyhow::anyhow!("the entry is published"))?;
    assert_eq!(published.author, "bian");
    assert_eq!(published.reviewer.as_deref(), Some("shen"));
    Ok(())
}
