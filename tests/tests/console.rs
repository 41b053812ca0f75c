//! The editor console over HTTP against the real engine: every route
//! refuses strangers (401) and the wrong role (403); sign-in is CSRF-checked
//! and rate-limited; an editor writes an entry (validation messages first),
//! submits it, cannot approve it, a reviewer publishes it and the bot
//! answers with it at once; a question nobody could answer becomes a group,
//! the group a draft, and its publication tells the user who asked to be
//! told.

use std::sync::Arc;
use std::time::Duration;

use bot::console::accounts::Role;
use bot::console::{Console, ROUTES};
use serde_json::Value;

const PASSWORD: &str = "correct-horse-battery";

use tests::ConsoleClient as Browser;

async fn console_server() -> anyhow::Result<(Arc<bot::Engine>, Arc<Console>, String)> {
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
        console: Some(Arc::clone(&console)),
        ..Default::default()
    };
    let addr = tests::serve_with(Arc::clone(&engine), &channels).await?;
    Ok((engine, console, format!("http://{addr}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_strangers_and_the_wrong_role() -> anyhow::Result<()> {
    let (engine, _console, base) = console_server().await?;
    let entry = engine
        .kb()
        .list(&kb::ListFilter::default())
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("fixture has entries"))?;
    let id = entry.id.to_string();
    let stranger = Browser::new(&base)?;
    // Each role-bound route is tried by someone without that role.
    let staff = Browser::new(&base)?;
    assert_eq!(staff.sign_in("zhuan", PASSWORD).await?, 303);
    let staff_csrf = staff.csrf().await?;
    let editor = Browser::new(&base)?;
    assert_eq!(editor.sign_in("bian", PASSWORD).await?, 303);
    let editor_csrf = editor.csrf().await?;
    for (method, route, role) in ROUTES {
        let path = route
            .replace("{id}", &id)
            .replace("{number}", "XQ-2026-000001");
        // Not signed in: 401 with the sign-in form.
        let (status, body) = match *method {
            "GET" => stranger.get(&path).await?,
            _ => {
                let (status, _, body) = stranger.post(&path, &[("csrf", "x")]).await?;
                (status, body)
            }
        };
        assert_eq!(status, 401, "{method} {path} without a session");
        assert!(
            body.contains("name=\"password\""),
            "{method} {path}: the sign-in form"
        );

        // Signed in without the role: 403, never 401.
        let (user, csrf, who) = match role {
            Some(Role::Staff) | Some(Role::Admin) => (&editor, &editor_csrf, "an editor"),
            _ => (&staff, &staff_csrf, "staff"),
        };
        let status = match *method {
            "GET" => user.get(&path).await?.0,
            _ => user.post(&path, &[("csrf", csrf)]).await?.0,
        };
        match role {
            Some(_) => assert_eq!(status, 403, "{method} {path} as {who}"),
            None => assert!(status < 400, "{method} {path} as {who}: {status}"),
        }
        if *method == "POST" && *route != "/console/logout" {
            let (status, _, _) = user.post(&path, &[("csrf", "forged")]).await?;
            assert_eq!(status, 403, "{method} {path} with a forged CSRF token");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_is_csrf_checked_and_rate_limited() -> anyhow::Result<()> {
    let (_engine, _console, base) = console_server().await?;
    let browser = Browser::new(&base)?;
    // Without the login page's token.
    let (status, _, _) = browser
        .post(
            "/console/login",
            &[("csrf", "x"), ("username", "bian"), ("password", PASSWORD)],
        )
        .await?;
    assert_eq!(status, 403);
    assert_eq!(browser.sign_in("bian", "wrong password").await?, 401);
    assert_eq!(browser.sign_in("nobody", PASSWORD).await?, 401);
    for _ in 0..4 {
        browser.sign_in("bian", "wrong password").await?;
    }
    // The sixth attempt within 15 minutes is refused, even with the right
    // password.
    assert_eq!(browser.sign_in("bian", PASSWORD).await?, 429);
    let (_, page) = browser.get("/console/login").await?;
    assert!(page.contains("name=\"username\""));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_goes_from_draft_to_answer_with_four_eyes() -> anyhow::Result<()> {
    let (engine, _console, base) = console_server().await?;
    let editor = Browser::new(&base)?;
    assert_eq!(editor.sign_in("bian", PASSWORD).await?, 303);
    let csrf = editor.csrf().await?;
    let question = "冬季大棚草莓灰霉病怎么防治？";
    let mut form = vec![
        ("csrf", csrf.as_str()),
        ("question", question),
        ("alt_questions", "草莓果子长灰毛咋个办\n大棚草莓烂果发霉"),
        ("answer", ""),
        ("category", "农业种植"),
        ("crops", "草莓"),
        ("source_organisation", "省农业科学院植物保护研究所"),
    ];
    // An empty answer: the editor says so, keeps what was typed, saves nothing.
    let (status, _, page) = editor.post("/console/entries", &form).await?;
    assert_eq!(status, 422);
    assert!(page.contains("草莓果子长灰毛咋个办"), "typed text kept");
    assert!(page.contains("role=\"alert\""), "{page}");
    let answer = "- 加强通风降湿，及时摘除病果。\n- 发病初期喷腐霉利或嘧霉胺，按标签用量。";
    form[3] = ("answer", answer);
    // The preview renders the Markdown without saving.
    let mut preview = form.clone();
    preview.push(("preview", "1"));
    let (status, _, page) = editor.post("/console/entries", &preview).await?;
    assert_eq!(status, 200);
    assert!(page.contains("<li>加强通风降湿"), "{page}");
    let (status, location, _) = editor.post("/console/entries", &form).await?;
    assert_eq!(status, 303, "created");
    let entry_path = location;
    let id = entry_path
        .trim_start_matches("/console/entries/")
        .to_owned();
    let (status, page) = editor.get(&entry_path).await?;
    assert_eq!(status, 200);
    assert!(page.contains("草稿"));

    let (status, _, _) = editor
        .post(&format!("{entry_path}/submit"), &[("csrf", &csrf)])
        .await?;
    assert_eq!(status, 303);
    // The editor is no reviewer.
    let (status, _, _) = editor
        .post(&format!("{entry_path}/approve"), &[("csrf", &csrf)])
        .await?;
    assert_eq!(status, 403);

    let reviewer = Browser::new(&base)?;
    assert_eq!(reviewer.sign_in("shen", PASSWORD).await?, 303);
    let reviewer_csrf = reviewer.csrf().await?;
    let (_, queue) = reviewer.get("/console/review").await?;
    assert!(queue.contains(question), "in the review queue");
    // Rejecting needs a reason.
    let (status, _, _) = reviewer
        .post(
            &format!("{entry_path}/reject"),
            &[("csrf", &reviewer_csrf), ("note", " ")],
        )
        .await?;
    assert_eq!(status, 400);
    let (status, _, _) = reviewer
        .post(
            &format!("{entry_path}/approve"),
            &[("csrf", &reviewer_csrf), ("note", "内容准确")],
        )
        .await?;
    assert_eq!(status, 303);
    let (_, page) = reviewer.get(&entry_path).await?;
    assert!(page.contains("已发布"), "published");
    assert!(
        page.contains("内容准确"),
        "the review note is in the history"
    );

    // Answerable at once, without a restart.
    let reply = reqwest::Client::new()
        .post(format!("{base}/api/chat"))
        .json(&serde_json::json!({ "user_id": "w-console-1", "text": "草莓果子长灰毛咋个办" }))
        .send()
        .await?
        .json::<Value>()
        .await?;
    assert_eq!(reply["kind"], "answer", "{reply}");
    assert_eq!(reply["citations"][0]["entry_id"], id.as_str(), "{reply}");
    // Signing out ends the session on the server, not only in the browser.
    let signed_in_cookies = editor.cookie_header();
    let (status, _, _) = editor.post("/console/logout", &[("csrf", &csrf)]).await?;
    assert_eq!(status, 303);
    let cookies = editor.cookie_header();
    assert!(
        !cookies.contains("wenke_console="),
        "cookie cleared: {cookies}"
    );
    let replay = reqwest::Client::new()
        .get(format!("{base}/console/entries"))
        .header("cookie", signed_in_cookies)
        .send()
        .await?;
    assert_eq!(
        replay.status(),
        401,
        "the old session token no longer works"
    );
    let stored = engine
        .kb()
        .find(&id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("stored"))?;
    assert_eq!(stored.author, "bian");
    assert_eq!(stored.reviewer.as_deref(), Some("shen"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_group_becomes_an_entry_and_its_askers_are_told() -> anyhow::Result<()> {
    let (engine, _console, base) = console_server().await?;
    let chat = |user: &'static str, text: &'static str| {
        let base = base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/api/chat"))
                .json(&serde_json::json!({ "user_id": user, "text": text }))
                .send()
                .await?
                .json::<Value>()
                .await
                .map_err(anyhow::Error::from)
        }
    };
    let first = chat("w-asker-1", "月亮上为什么有那么多环形山").await?;
    assert_eq!(first["kind"], "abstain", "{first}");
    chat("w-asker-1", "通知我").await?;
    let second = chat("w-asker-2", "月球表面的环形山是怎么形成的").await?;
    assert_eq!(second["kind"], "abstain", "{second}");

    let editor = Browser::new(&base)?;
    assert_eq!(editor.sign_in("bian", PASSWORD).await?, 303);
    let csrf = editor.csrf().await?;
    let (status, page) = editor.get("/console/unanswered").await?;
    assert_eq!(status, 200);
    assert!(page.contains("环形山"), "{page}");
    assert!(
        page.contains("2 次提问"),
        "both phrasings in one group: {page}"
    );
    let group_field = "name=\"group\" value=\"";
    let start = page
        .find(group_field)
        .map(|i| i + group_field.len())
        .unwrap_or(0);
    let group = page[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned();
    let (status, _, draft) = editor
        .post(
            "/console/unanswered/draft",
            &[("csrf", &csrf), ("group", &group)],
        )
        .await?;
    assert_eq!(status, 200);
    assert!(draft.contains("1 人等着通知"), "{draft}");
    let (status, location, _) = editor
        .post(
            "/console/entries",
            &[
                ("csrf", &csrf),
                ("group", &group),
                ("question", "月球上的环形山是怎么形成的？"),
                ("alt_questions", "月亮上为什么有那么多环形山\n月球表面的环形山是怎么形成的"),
                ("answer", "月球上的环形山大多是小天体撞击形成的撞击坑；月球几乎没有大气和风雨，坑能保存几十亿年。"),
                ("category", "生活科普"),
                ("source_organisation", "省天文学会"),
            ],
        )
        .await?;
    assert_eq!(status, 303);
    let (_, page) = editor.get("/console/unanswered").await?;
    assert!(!page.contains(&group), "the group left the open list");
    assert!(page.contains("等待发布"), "and waits for its entry: {page}");
    editor
        .post(&format!("{location}/submit"), &[("csrf", &csrf)])
        .await?;

    let reviewer = Browser::new(&base)?;
    assert_eq!(reviewer.sign_in("shen", PASSWORD).await?, 303);
    let reviewer_csrf = reviewer.csrf().await?;
    let (status, _, _) = reviewer
        .post(&format!("{location}/approve"), &[("csrf", &reviewer_csrf)])
        .await?;
    assert_eq!(status, 303);

    // The asker who wanted to be told has the answer waiting (the web chat
    // cannot push); the other asker did not ask and gets nothing.
    let mut told = Vec::new();
    for _ in 0..50 {
        told = engine.notices().pending("web:w-asker-1").await?;
        if !told.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].text.contains("撞击"), "{}", told[0].text);
    assert!(engine.notices().pending("web:w-asker-2").await?.is_empty());
    Ok(())
}

/// The page with `&`, `<`, `>` and `"` as the templates escape them, so a
/// test can look for text a user typed.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_testing_explains_a_question_and_word_edits_apply_at_once() -> anyhow::Result<()> {
    let (engine, _console, base) = console_server().await?;
    let editor = Browser::new(&base)?;
    assert_eq!(editor.sign_in("bian", PASSWORD).await?, 303);
    let csrf = editor.csrf().await?;
    let logged_before = engine.turns().find(&[]).await?.len();

    let (status, page) = editor
        .get("/console/hit-test?q=%E6%B4%8B%E8%8A%8B%E5%8F%B6%E5%AD%90%E5%8F%91%E9%BB%91%E5%92%8B%E4%B8%AA%E5%8A%9E")
        .await?;
    assert_eq!(status, 200, "{page}");
    // 洋芋叶子发黑咋个办: read as 马铃薯, routed as a question, answered
    // from the late-blight entry, shown as each channel would send it.
    assert!(page.contains("洋芋 → 马铃薯"), "the dialect word: {page}");
    assert!(
        page.contains("<span id=\"route\">科学问题</span>"),
        "{page}"
    );
    assert!(
        page.contains("<span id=\"decision\">直接回答</span>"),
        "{page}"
    );
    assert!(page.contains("晚疫病"), "the entry ranks: {page}");
    assert!(page.contains("语义分") && page.contains("关键词分"));
    assert!(
        page.contains("<dd id=\"subjects\">马铃薯</dd>"),
        "what the subject check looks for: {page}"
    );
    for channel in ["微信公众号", "企业微信", "Telegram", "网页"] {
        assert!(
            page.contains(&format!("<h3>{channel}")),
            "{channel}: {page}"
        );
    }
    assert!(page.contains("来源："), "the source line is in the replies");
    assert_eq!(
        engine.turns().find(&[]).await?.len(),
        logged_before,
        "hit testing logs nothing"
    );
    // 番茄晚疫病怎么防治: the closest entry is the potato one, which never
    // mentions tomatoes; the editor sees why it is only offered.
    let (_, page) = editor
        .get("/console/hit-test?q=%E7%95%AA%E8%8C%84%E6%99%9A%E7%96%AB%E7%97%85%E6%80%8E%E4%B9%88%E9%98%B2%E6%B2%BB")
        .await?;
    assert!(page.contains("马铃薯晚疫病"), "{page}");
    assert!(page.contains("class=\"muted subject-unmet\""), "{page}");
    assert!(
        !page.contains("<span id=\"decision\">直接回答</span>"),
        "{page}"
    );
    // 订阅科普 is a command, not something to route.
    let (_, page) = editor
        .get("/console/hit-test?q=%E8%AE%A2%E9%98%85%E7%A7%91%E6%99%AE")
        .await?;
    assert!(page.contains("id=\"command\""), "{page}");

    // A new dialect word: hit testing and the bot read it at once.
    let (status, _, _) = editor
        .post(
            "/console/dictionary",
            &[
                ("csrf", &csrf),
                ("list", "synonym"),
                ("action", "add"),
                ("word", "洋洋芋"),
                ("standard", "马铃薯"),
            ],
        )
        .await?;
    assert_eq!(status, 303);
    let (_, page) = editor.get("/console/dictionary").await?;
    assert!(page.contains("洋洋芋"), "listed as edited: {page}");
    let (_, page) = editor
        .get("/console/hit-test?q=%E6%B4%8B%E6%B4%8B%E8%8A%8B%E6%99%9A%E7%96%AB%E7%97%85")
        .await?;
    assert!(page.contains("洋洋芋 → 马铃薯"), "{page}");
    // A bad edit says why and changes nothing.
    let (status, _, page) = editor
        .post(
            "/console/dictionary",
            &[
                ("csrf", &csrf),
                ("list", "synonym"),
                ("action", "add"),
                ("word", "苞谷"),
                ("standard", ""),
            ],
        )
        .await?;
    assert_eq!(status, 400);
    assert!(page.contains("标准词不能为空"), "{page}");

    // A new sensitive word refuses messages at once; removing it lifts that.
    let word = [
        ("csrf", csrf.as_str()),
        ("list", "sensitive"),
        ("word", "代开发票"),
    ];
    let mut add = word.to_vec();
    add.push(("action", "add"));
    assert_eq!(editor.post("/console/dictionary", &add).await?.0, 303);
    let user = webhooks::message::UserKey::new(webhooks::message::Channel::Web, "w-dict-1");
    let reply = webhooks::message::Handler::handle(
        &*engine,
        webhooks::message::Incoming::text(user.clone(), "能帮忙代开发票吗"),
    )
    .await?;
    assert_eq!(reply.kind, webhooks::message::ReplyKind::Refused);
    let (_, page) = editor
        .get("/console/hit-test?q=%E4%BB%A3%E5%BC%80%E5%8F%91%E7%A5%A8")
        .await?;
    assert!(page.contains("id=\"refused\""), "{page}");
    // Another instance on the same stores reads the edits when it starts,
    // and again when the version it watches changes.
    let second = bot::Engine::open(
        Arc::clone(engine.kb()),
        Arc::clone(engine.sessions()),
        Arc::clone(engine.jobs()),
        bot::turns::TurnLog::open(engine.kb().store()).await?,
        bot::EngineConfig::default(),
    )
    .await?;
    assert!(second.sensitive_words().contains(&"代开发票".to_owned()));
    let version = second.dictionary().version().await?;
    let mut remove = word.to_vec();
    remove.push(("action", "remove"));
    assert_eq!(editor.post("/console/dictionary", &remove).await?.0, 303);
    let reply = webhooks::message::Handler::handle(
        &*engine,
        webhooks::message::Incoming::text(user, "能帮忙代开发票吗"),
    )
    .await?;
    assert_ne!(reply.kind, webhooks::message::ReplyKind::Refused);
    assert_ne!(
        second.dictionary().version().await?,
        version,
        "the edit bumps the version"
    );
    second.reload().await?;
    assert!(!second.sensitive_words().contains(&"代开发票".to_owned()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_rated_down_show_with_their_conversation() -> anyhow::Result<()> {
    let (engine, _console, base) = console_server().await?;
    let user = webhooks::message::UserKey::new(webhooks::message::Channel::Web, "w-unhappy");
    let handle = |text: &str| {
        webhooks::message::Handler::handle(
            &*engine,
            webhooks::message::Incoming::text(user.clone(), text),
        )
    };
    handle("你好").await?;
    let answer = handle("洋芋叶子发黑咋个办").await?;
    assert!(answer.feedback, "an answer can be rated");
    webhooks::message::Handler::feedback(
        &*engine,
        &user,
        &answer.turn_id,
        webhooks::message::Rating::Down,
    )
    .await?;
    handle("说的不对，我问的是叶子上的黑斑").await?;

    let editor = Browser::new(&base)?;
    assert_eq!(editor.sign_in("bian", PASSWORD).await?, 303);
    let (status, page) = editor.get("/console/feedback").await?;
    assert_eq!(status, 200);
    assert!(page.contains("<h2>“洋芋叶子发黑咋个办”</h2>"), "{page}");
    assert!(page.contains("你好"), "the turn before: {page}");
    assert!(
        page.contains(&escaped("叶子上的黑斑")),
        "the turn after: {page}"
    );
    let entry_id = answer
        .citations
        .first()
        .map(|c| c.entry_id.clone())
        .unwrap_or_default();
    assert!(
        page.contains(&format!("/console/entries/{entry_id}/edit")),
        "{page}"
    );
    // The entry's page counts it.
    let (_, page) = editor.get(&format!("/console/entries/{entry_id}")).await?;
    assert!(page.contains("不满意 1"), "{page}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_follow_a_demand_from_the_board_to_a_claim() -> anyhow::Result<()> {
    let (engine, _console, base) = console_server().await?;
    for kind in [
        kb::listing::ListingKind::Capabilities,
        kb::listing::ListingKind::Demands,
    ] {
        tests::import_demo_listings(&engine, kind).await?;
    }
    let published = engine
        .listings()
        .demands(Some(kb::listing::DemandStatus::Published), None)
        .await?;
    let demand = published
        .first()
        .ok_or_else(|| anyhow::anyhow!("the demo demands are published"))?;
    let number = demand.number.clone();

    let staff = Browser::new(&base)?;
    assert_eq!(staff.sign_in("zhuan", PASSWORD).await?, 303);
    let csrf = staff.csrf_from("/console/demands").await?;
    let (status, page) = staff
        .get("/console/demands?status=%E5%B7%B2%E5%8F%91%E5%B8%83")
        .await?;
    assert_eq!(status, 200);
    assert!(page.contains(&number), "{page}");
    let path = format!("/console/demands/{number}");
    let (status, page) = staff.get(&path).await?;
    assert_eq!(status, 200);
    assert!(
        page.contains(&demand.content.contact.phone),
        "staff see the contact"
    );
    assert!(page.contains("id=\"matches\""));

    // 揭榜 on behalf of the best-matched expert: the demand is 对接中.
    let matches = engine.listings().matches(&demand.content, 1).await?;
    let expert = matches
        .first()
        .ok_or_else(|| anyhow::anyhow!("the demo capabilities match"))?;
    let (status, _, _) = staff
        .post(
            &format!("{path}/claim"),
            &[
                ("csrf", &csrf),
                ("capability", &expert.capability.number),
                ("note", "可驻厂一周"),
            ],
        )
        .await?;
    assert_eq!(status, 303);
    let (_, page) = staff.get(&path).await?;
    assert!(page.contains("可驻厂一周"), "{page}");
    assert!(
        page.contains("<span class=\"status\" id=\"demand-status\">对接中</span>"),
        "{page}"
    );

    // A status the life cycle forbids: 409, nothing changes.
    let (status, _, _) = staff
        .post(
            &format!("{path}/update"),
            &[("csrf", &csrf), ("status", "待审核")],
        )
        .await?;
    assert_eq!(status, 409);
    let (status, location, _) = staff
        .post(
            &format!("{path}/update"),
            &[
                ("csrf", &csrf),
                ("status", "已合作"),
                ("staff", "王芳"),
                ("plan_note", "已电话联系企业，约下周现场对接"),
            ],
        )
        .await?;
    assert_eq!(status, 303);
    assert_eq!(location, path);
    let (_, page) = staff.get(&path).await?;
    assert!(
        page.contains("<span class=\"status\" id=\"demand-status\">已合作</span>"),
        "{page}"
    );
    assert!(page.contains("王芳"));
    assert!(page.contains("约下周现场对接"));
    let stored = engine
        .listings()
        .demand(&number)
        .await?
        .ok_or_else(|| anyhow::anyhow!("still there"))?;
    assert_eq!(stored.claims.len(), 1);
    assert_eq!(stored.staff.as_deref(), Some("王芳"));
    let (status, page) = staff.get("/console/capabilities").await?;
    assert_eq!(status, 200);
    assert!(page.contains(&expert.capability.number));
    let (status, _) = staff.get("/console/demands/XQ-1999-000001").await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personalised_push_reaches_only_its_opted_in_audience_once() -> anyhow::Result<()> {
    use webhooks::message::{Channel, Content, Handler, Incoming, UserKey};
    let (engine, _console, base) = console_server().await?;
    let say = |user: &UserKey, content: Content| {
        let engine = Arc::clone(&engine);
        let message = Incoming {
            user: user.clone(),
            message_id: None,
            content,
            received_at: time::OffsetDateTime::now_utc(),
        };
        async move { engine.handle(message).await }
    };
    let text = |t: &str| Content::Text { text: t.to_owned() };
    let place = |label: &str| Content::Location {
        latitude: 31.7,
        longitude: 105.9,
        label: Some(label.to_owned()),
    };
    // In 苍溪, asks about potatoes, opts in.
    let farmer = UserKey::new(Channel::Web, "w-push-farmer");
    say(&farmer, place("四川省广元市苍溪县陵江镇")).await?;
    say(&farmer, text("洋芋叶子发黑咋个办")).await?;
    let reply = say(&farmer, text("订阅科普")).await?;
    assert!(reply.text().contains("订阅好了"), "{}", reply.text());
    assert!(reply.text().contains("马铃薯"), "{}", reply.text());
    // In 成都, opts in; in 广元 but never opts in; opts in, then out.
    let citizen = UserKey::new(Channel::Web, "w-push-citizen");
    say(&citizen, place("四川省成都市武侯区")).await?;
    say(&citizen, text("订阅")).await?;
    let stranger = UserKey::new(Channel::Web, "w-push-stranger");
    say(&stranger, place("四川省广元市利州区")).await?;
    let leaver = UserKey::new(Channel::Web, "w-push-leaver");
    say(&leaver, place("四川省广元市昭化区")).await?;
    say(&leaver, text("订阅科普")).await?;
    let reply = say(&leaver, text("退订")).await?;
    assert!(reply.text().contains("已退订"), "{}", reply.text());

    let editor = Browser::new(&base)?;
    assert_eq!(editor.sign_in("bian", PASSWORD).await?, 303);
    let count = |page: &str| {
        let start = page.find("<strong id=\"audience-size\">").map(|i| i + 27)?;
        let end = page[start..].find('<')? + start;
        page[start..end].parse::<usize>().ok()
    };
    let (_, page) = editor.get("/console/push").await?;
    assert_eq!(count(&page), Some(2), "everyone opted in");
    let (_, page) = editor
        .get("/console/push?crop=%E9%A9%AC%E9%93%83%E8%96%AF")
        .await?;
    assert_eq!(count(&page), Some(1), "asked about 马铃薯");
    let entry = tests::first_hit_id(&engine, "马铃薯晚疫病怎么防治").await?;
    let (status, page) = editor
        .get(&format!(
            "/console/push?city=%E5%B9%BF%E5%85%83%E5%B8%82&entry={entry}"
        ))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(count(&page), Some(1), "in 广元 and opted in: {page}");
    let token = tests::hidden_field(&page, "token").unwrap_or_default();
    let csrf = tests::hidden_csrf(&page).unwrap_or_default();
    let form = [
        ("csrf", csrf.as_str()),
        ("token", token.as_str()),
        ("entry", entry.as_str()),
        ("city", "广元市"),
    ];
    // Posted twice (a double click): one send.
    assert_eq!(editor.post("/console/push", &form).await?.0, 303);
    assert_eq!(editor.post("/console/push", &form).await?.0, 303);
    let done = |engine: Arc<bot::Engine>| async move {
        for _ in 0..100 {
            let broadcasts = engine.outreach().broadcasts().await?;
            if broadcasts.iter().all(|b| b.status == "done") {
                return anyhow::Ok(broadcasts);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the broadcast did not finish")
    };
    let broadcasts = done(Arc::clone(&engine)).await?;
    assert_eq!(broadcasts.len(), 1);
    assert_eq!(broadcasts[0].sent, 1);
    let pending = |user: &str| {
        let engine = Arc::clone(&engine);
        let user = user.to_owned();
        async move { engine.notices().pending(&user).await }
    };
    let told = pending("web:w-push-farmer").await?;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].text.starts_with("【精准科普】"), "{}", told[0].text);
    assert!(told[0].text.contains("退订"), "says how to opt out");
    for other in [
        "web:w-push-citizen",
        "web:w-push-stranger",
        "web:w-push-leaver",
    ] {
        assert!(
            pending(other).await?.is_empty(),
            "{other} is not in the audience"
        );
    }

    // A second send the same day does not reach the farmer again.
    let (_, page) = editor
        .get(&format!(
            "/console/push?city=%E5%B9%BF%E5%85%83%E5%B8%82&entry={entry}"
        ))
        .await?;
    let token = tests::hidden_field(&page, "token").unwrap_or_default();
    let form = [
        ("csrf", csrf.as_str()),
        ("token", token.as_str()),
        ("entry", entry.as_str()),
        ("city", "广元市"),
    ];
    assert_eq!(editor.post("/console/push", &form).await?.0, 303);
    let broadcasts = done(Arc::clone(&engine)).await?;
    assert_eq!(broadcasts.len(), 2);
    assert_eq!((broadcasts[0].sent, broadcasts[0].rate_limited), (0, 1));
    assert_eq!(pending("web:w-push-farmer").await?.len(), 1);

    // After "退订" the farmer is out of every audience.
    say(&farmer, text("退订")).await?;
    let (_, page) = editor.get("/console/push").await?;
    assert_eq!(count(&page), Some(1), "only the citizen is left");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_import_reports_every_refused_row_and_keeps_the_rest_as_drafts() -> anyhow::Result<()>
{
    let (engine, _console, base) = console_server().await?;
    let editor = Browser::new(&base)?;
    assert_eq!(editor.sign_in("bian", PASSWORD).await?, 303);
    let csrf = editor.csrf_from("/console/import").await?;
    let rows = [
        r#"{"external_key": "imp-1", "question": "柑橘黄龙病怎么识别？", "answer": "叶片斑驳黄化、果实红鼻子，确诊需检测。", "category": "农业种植", "crops": ["柑橘"], "source": {"organisation": "省农科院"}}"#,
        r#"{"external_key": "imp-2", "question": "这行坏了"#,
        r#"{"external_key": "imp-3", "question": "答案是空的？", "answer": "", "category": "农业种植", "source": {"organisation": "省农科院"}}"#,
        r#"{"external_key": "imp-4", "question": "猕猴桃溃疡病什么时候防？", "answer": "秋冬和早春是防治关键期，剪除病枝并喷铜制剂。", "category": "农业种植", "crops": ["猕猴桃"], "source": {"organisation": "省农科院"}}"#,
    ]
    .join("\n");
    let (status, _, page) = editor
        .post(
            "/console/import",
            &[("csrf", &csrf), ("format", "jsonl"), ("rows", &rows)],
        )
        .await?;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("新建 <strong>2</strong>"), "{page}");
    assert!(page.contains("失败 <strong>2</strong>"), "{page}");
    assert!(
        page.contains("<td>line 2</td>"),
        "the broken line is named: {page}"
    );
    assert!(
        page.contains("<td>line 3</td>"),
        "the empty answer is named: {page}"
    );
    let imported: Vec<kb::entry::Entry> = engine
        .kb()
        .list(&kb::ListFilter::default())
        .await?
        .into_iter()
        .filter(|e| {
            e.content
                .external_key
                .as_deref()
                .is_some_and(|key| key.starts_with("imp-"))
        })
        .collect();
    assert_eq!(imported.len(), 2);
    assert!(
        imported
            .iter()
            .all(|e| e.status == kb::entry::Status::Draft && e.author == "bian")
    );
    // A draft is never an answer (the fixture's own entry may be).
    let reply = webhooks::message::Handler::handle(
        &*engine,
        webhooks::message::Incoming::text(
            webhooks::message::UserKey::new(webhooks::message::Channel::Web, "w-import"),
            "柑橘黄龙病怎么识别？",
        ),
    )
    .await?;
    let drafts: Vec<String> = imported.iter().map(|e| e.id.to_string()).collect();
    assert!(
        reply
            .citations
            .iter()
            .all(|c| !drafts.contains(&c.entry_id)),
        "{:?}",
        reply.citations
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_dead_jobs_and_queue_them_again() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let console = tests::console_with(&engine, &[("guan", Role::Admin)], PASSWORD).await?;
    let channels = bot::http::HttpConfig {
        console: Some(Arc::clone(&console)),
        ..Default::default()
    };
    let base = format!(
        "http://{}",
        tests::serve_with(Arc::clone(&engine), &channels).await?
    );
    // A push whose user key names no channel can never run: it is buried
    // at its first run, without retries.
    let notice = engine.notices().push("no-channel", "通知".into()).await?;
    let id = engine
        .jobs()
        .enqueue(bot::jobs::Task::PushNotice {
            user: "no-channel".into(),
            notice: notice.id,
        })
        .await?;
    let buried = |engine: Arc<bot::Engine>| async move {
        for _ in 0..100 {
            let dead = engine.jobs().dead().await?;
            if let Some(job) = dead.into_iter().find(|job| job.id == id) {
                return anyhow::Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the job was not buried")
    };
    let job = buried(Arc::clone(&engine)).await?;
    assert_eq!(job.attempts, 1);

    let admin = Browser::new(&base)?;
    assert_eq!(admin.sign_in("guan", PASSWORD).await?, 303);
    let (status, page) = admin.get("/console/jobs").await?;
    assert_eq!(status, 200);
    assert!(page.contains(&id.to_string()), "{page}");
    assert!(page.contains("push_notice"), "{page}");
    assert!(page.contains("has no channel"), "the last error: {page}");
    assert!(
        page.contains("href=\"/console/jobs\""),
        "in the menu: {page}"
    );

    let csrf = tests::hidden_csrf(&page).unwrap_or_default();
    let id_text = id.to_string();
    let (status, _, _) = admin
        .post(
            "/console/jobs/retry",
            &[("csrf", csrf.as_str()), ("id", id_text.as_str())],
        )
        .await?;
    assert_eq!(status, 303);
    // Queued again with its attempts reset, run, and buried again.
    let metrics = || async {
        let text = reqwest::get(format!("{base}/metrics"))
            .await?
            .text()
            .await?;
        anyhow::Ok(text)
    };
    let mut reran = false;
    for _ in 0..100 {
        if metrics()
            .await?
            .contains("wenke_jobs_total{kind=\"push_notice\",outcome=\"buried\"} 2")
        {
            reran = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reran, "{}", metrics().await?);
    let job = buried(Arc::clone(&engine)).await?;
    assert_eq!(job.attempts, 1, "attempts counted afresh");
    let (status, _, _) = admin
        .post(
            "/console/jobs/retry",
            &[("csrf", csrf.as_str()), ("id", "not-an-id")],
        )
        .await?;
    assert_eq!(status, 400);
    Ok(())
}
