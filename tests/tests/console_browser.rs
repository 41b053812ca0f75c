//! The editor console in a real headless Chromium against the real server:
//! an editor signs in with the keyboard, writes an entry, previews it,
//! saves and submits it; a reviewer signs in on a tablet-width screen,
//! finds it in the review queue and publishes it; the bot then answers with
//! it. The editor hit-tests it, turns a group of unanswered questions into
//! an entry that the reviewer publishes (and the asker is told), and staff
//! read the weekly report and download it. Screenshots go to
//! `tests/artifacts/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bot::console::accounts::Role;
use headless_chrome::Tab;
use tests::browser::{js, launch, screenshot, set_viewport};

const PASSWORD: &str = "correct-horse-battery";
const QUESTION: &str = "冬季大棚草莓灰霉病怎么防治？";
/// A question the fixture cannot answer.
const UNANSWERED: &str = "月亮上为什么有那么多环形山";

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
    save_and_submit(&tab)?;
    wait_for_text(&tab, "需要另一位审核人审核")?;
    screenshot(&tab, "console-entry-submitted-1280.png")?;
    sign_out(&tab)?;

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
    sign_out(&tab)?;

    // The editor hit-tests the new entry.
    set_viewport(&tab, 1280, 900, false)?;
    sign_in(&tab, base, "bian")?;
    tab.wait_for_element("a[href='/console/hit-test']")?
        .click()?;
    fill(&tab, "input[name=q]", "草莓果子长灰毛咋个办")?;
    tab.press_key("Enter")?;
    wait_for_text(&tab, "路由：科学问题")?;
    wait_for_text(&tab, "直接回答")?;
    wait_for_text(&tab, QUESTION)?;
    if js(&tab, "document.querySelectorAll('.preview').length")?.as_u64() != Some(4) {
        bail!("a reply preview per channel");
    }
    screenshot(&tab, "console-hit-test-1280.png")?;

    // An unanswered question becomes a draft, pre-filled.
    tab.wait_for_element("a[href='/console/unanswered']")?
        .click()?;
    wait_for_text(&tab, UNANSWERED)?;
    wait_for_text(&tab, "1 人等通知")?;
    tab.wait_for_element("form[action='/console/unanswered/draft'] button")?
        .click()?;
    tab.wait_for_element("#answer")?;
    if js(&tab, "document.querySelector('#question').value")?.as_str() != Some(UNANSWERED) {
        bail!("the draft is pre-filled with the question");
    }
    fill(
        &tab,
        "#answer",
        "月球没有大气层，陨石撞击后不会被风化抹平，几十亿年的撞击坑就都留了下来。",
    )?;
    js(
        &tab,
        "document.querySelector('#category').value = '生活科普'",
    )?;
    fill(&tab, "#source_organisation", "省科普作家协会")?;
    save_and_submit(&tab)?;
    sign_out(&tab)?;
    sign_in(&tab, base, "shen")?;
    tab.navigate_to(&format!("{base}/console/review"))?
        .wait_until_navigated()?;
    wait_for_text(&tab, UNANSWERED)?;
    tab.wait_for_element("table a[href^='/console/entries/']")?
        .click()?;
    tab.wait_for_element("form[action$='/approve'] button")?
        .click()?;
    wait_for_text(&tab, "已发布")?;
    sign_out(&tab)?;

    // Staff read the week's numbers and download the report.
    sign_in(&tab, base, "zhuan")?;
    tab.wait_for_element("a[href='/console/reports']")?
        .click()?;
    wait_for_text(&tab, "每日提问")?;
    if js(&tab, "document.querySelectorAll('.chart svg rect').length")?.as_u64() == Some(0) {
        bail!("the daily chart has bars");
    }
    no_sideways_scroll(&tab, 1280)?;
    screenshot(&tab, "console-reports-1280.png")?;
    // Click the Markdown download; Chromium saves it where we say.
    let downloads = tests::scratch_dir()?;
    tab.call_method(
        headless_chrome::protocol::cdp::Browser::SetDownloadBehavior {
            behavior:
                headless_chrome::protocol::cdp::Browser::SetDownloadBehaviorBehaviorOption::Allow,
            browser_context_id: None,
            download_path: Some(downloads.display().to_string()),
            events_enabled: None,
        },
    )?;
    tab.wait_for_element("a[href*='format=md']")?.click()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let markdown = loop {
        let saved = std::fs::read_dir(&downloads)?
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|e| e == "md"));
        if let Some(path) = saved {
            break std::fs::read_to_string(path)?;
        }
        if Instant::now() > deadline {
            bail!("the report was not downloaded");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !markdown.starts_with("# 问科 周报") || !markdown.contains("| 提问 |") {
        bail!("the downloaded report: {markdown}");
    }
    Ok(())
}

/// Saves the entry open in the editor as a draft, then submits it.
fn save_and_submit(tab: &Tab) -> anyhow::Result<()> {
    tab.wait_for_element("form.card button[type=submit]:not([name])")?
        .click()?;
    wait_for_text(tab, "草稿")?;
    tab.wait_for_element("form[action$='/submit'] button")?
        .click()?;
    wait_for_text(tab, "待审核")?;
    Ok(())
}

fn sign_out(tab: &Tab) -> anyhow::Result<()> {
    tab.wait_for_element("form[action='/console/logout'] button")?
        .click()?;
    tab.wait_for_element("#username")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_and_a_reviewer_publish_an_entry_in_a_real_browser() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let console = tests::console_with(
        &engine,
        &[
            ("bian", Role::Editor),
            ("shen", Role::Reviewer),
            ("zhuan", Role::Staff),
        ],
        PASSWORD,
    )
    .await?;
    let channels = bot::http::HttpConfig {
        console: Some(console),
        ..Default::default()
    };
    let addr = tests::serve_with(Arc::clone(&engine), &channels).await?;
    let base = format!("http://{addr}");
    // Someone asks what nobody has answered yet and wants to be told.
    let asker = webhooks::message::UserKey::new(webhooks::message::Channel::Web, "w-moon");
    for text in [UNANSWERED, "通知我"] {
        webhooks::message::Handler::handle(
            &*engine,
            webhooks::message::Incoming::text(asker.clone(), text),
        )
        .await?;
    }
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
    // The asker was told when the editor's answer was published.
    let told = engine.notices().pending("web:w-moon").await?;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].text.contains("陨石撞击"), "{}", told[0].text);
    Ok(())
}

/// The rest of the console in Chromium, as an admin (every role): the
/// answers rated 👎, a dialect word added in the dictionary and read at
/// once by hit testing, a bulk import with a refused row, a demand taken
/// on from the board, and a push to the opted-in users of a city.
fn drive_the_rest(base: &str, demand: &str, entry_id: &str) -> anyhow::Result<()> {
    let browser = launch(1280, 900)?;
    let tab = browser.new_tab()?;
    set_viewport(&tab, 1280, 900, false)?;
    sign_in(&tab, base, "admin")?;

    tab.wait_for_element("a[href='/console/feedback']")?
        .click()?;
    wait_for_text(&tab, "“洋芋叶子发黑咋个办”")?;
    screenshot(&tab, "console-feedback-1280.png")?;

    tab.wait_for_element("a[href='/console/dictionary']")?
        .click()?;
    fill(
        &tab,
        "form[aria-label='添加方言/同义词'] input[name=word]",
        "洋洋芋",
    )?;
    fill(
        &tab,
        "form[aria-label='添加方言/同义词'] input[name=standard]",
        "马铃薯",
    )?;
    tab.press_key("Enter")?;
    wait_for_text(&tab, "洋洋芋")?;
    tab.wait_for_element("a[href='/console/hit-test']")?
        .click()?;
    fill(&tab, "input[name=q]", "洋洋芋晚疫病")?;
    tab.press_key("Enter")?;
    wait_for_text(&tab, "洋洋芋 → 马铃薯")?;

    tab.navigate_to(&format!("{base}/console/import"))?
        .wait_until_navigated()?;
    fill(
        &tab,
        "#rows",
        "{\"external_key\": \"b-1\", \"question\": \"猕猴桃溃疡病什么时候防？\", \"answer\": \"秋冬和早春是关键期。\", \"category\": \"农业种植\", \"source\": {\"organisation\": \"省农科院\"}}\n{\"broken",
    )?;
    tab.wait_for_element("form[action='/console/import'] button")?
        .click()?;
    tab.wait_for_element("#import-report")?;
    wait_for_text(&tab, "新建 1")?;
    wait_for_text(&tab, "line 2")?;
    screenshot(&tab, "console-import-1280.png")?;

    tab.wait_for_element("a[href='/console/demands']")?
        .click()?;
    tab.wait_for_element(&format!("a[href='/console/demands/{demand}']"))?
        .click()?;
    tab.wait_for_element("#matches")?;
    fill(&tab, "input[name=staff]", "王芳")?;
    fill(&tab, "textarea[name=plan_note]", "已电话联系企业")?;
    tab.wait_for_element("form[action$='/update'] button")?
        .click()?;
    wait_for_text(&tab, "已电话联系企业")?;
    if js(&tab, "document.querySelector('#demand-staff').innerText")?.as_str() != Some("王芳") {
        bail!("the staff member is assigned");
    }
    screenshot(&tab, "console-demand-1280.png")?;

    tab.navigate_to(&format!(
        "{base}/console/push?city=%E5%B9%BF%E5%85%83%E5%B8%82&entry={entry_id}"
    ))?
    .wait_until_navigated()?;
    if js(&tab, "document.querySelector('#audience-size').innerText")?.as_str() != Some("1") {
        bail!("one opted-in user in 广元");
    }
    tab.wait_for_element("form[method=post][action='/console/push'] button")?
        .click()?;
    tab.wait_for_element("#broadcasts td")?;
    wait_for_text(&tab, "（1 人）")?;
    screenshot(&tab, "console-push-1280.png")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_of_the_console_works_in_a_real_browser() -> anyhow::Result<()> {
    use webhooks::message::{Channel, Content, Handler, Incoming, Rating, UserKey};
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    for kind in [
        kb::listing::ListingKind::Capabilities,
        kb::listing::ListingKind::Demands,
    ] {
        tests::import_demo_listings(&engine, kind).await?;
    }
    let demand = engine
        .listings()
        .demands(None, None)
        .await?
        .first()
        .map(|d| d.number.clone())
        .ok_or_else(|| anyhow::anyhow!("demo demands"))?;
    // A farmer in 苍溪 rates an answer 👎 and opts in to push.
    let farmer = UserKey::new(Channel::Web, "w-browser-farmer");
    let say = |content: Content| {
        engine.handle(Incoming {
            user: farmer.clone(),
            message_id: None,
            content,
            received_at: time::OffsetDateTime::now_utc(),
        })
    };
    say(Content::Location {
        latitude: 31.7,
        longitude: 105.9,
        label: Some("四川省广元市苍溪县".into()),
    })
    .await?;
    let answer = say(Content::Text {
        text: "洋芋叶子发黑咋个办".into(),
    })
    .await?;
    engine
        .feedback(&farmer, &answer.turn_id, Rating::Down)
        .await?;
    say(Content::Text {
        text: "订阅科普".into(),
    })
    .await?;
    let entry_id = answer
        .citations
        .first()
        .map(|c| c.entry_id.clone())
        .ok_or_else(|| anyhow::anyhow!("answered from an entry"))?;

    let console = tests::console_with(&engine, &[("admin", Role::Admin)], PASSWORD).await?;
    let channels = bot::http::HttpConfig {
        console: Some(console),
        ..Default::default()
    };
    let addr = tests::serve_with(Arc::clone(&engine), &channels).await?;
    let base = format!("http://{addr}");
    let (driven, number, entry) = (base.clone(), demand.clone(), entry_id.clone());
    tokio::task::spawn_blocking(move || drive_the_rest(&driven, &number, &entry)).await??;

    let stored = engine
        .listings()
        .demand(&demand)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the demand"))?;
    assert_eq!(stored.staff.as_deref(), Some("王芳"));
    let mut told = Vec::new();
    for _ in 0..50 {
        told = engine.notices().pending("web:w-browser-farmer").await?;
        if !told.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].text.starts_with("【精准科普】"), "{}", told[0].text);
    Ok(())
}
