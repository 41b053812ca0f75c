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

/// A browser-like client that keeps its cookies (by hand: reqwest's cookie
/// store is a feature the rest of the workspace does not build with).
struct Browser {
    client: reqwest::Client,
    base: String,
    cookies: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

fn hidden_csrf(html: &str) -> Option<String> {
    let start = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

impl Browser {
    fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base: base.to_owned(),
            cookies: Default::default(),
        })
    }

    fn cookie_header(&self) -> String {
        let cookies = self.cookies.lock().expect("lock");
        cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&self, response: &reqwest::Response) {
        let mut cookies = self.cookies.lock().expect("lock");
        for header in response.headers().get_all("set-cookie") {
            let Some(pair) = header.to_str().ok().and_then(|h| h.split(';').next()) else {
                continue;
            };
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if value.is_empty() {
                cookies.remove(name.trim());
            } else {
                cookies.insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await?;
        self.keep_cookies(&response);
        Ok((response.status().as_u16(), response.text().await?))
    }

    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> anyhow::Result<(u16, String, String)> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await?;
        self.keep_cookies(&response);
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((status, location, response.text().await?))
    }

    async fn sign_in(&self, username: &str, password: &str) -> anyhow::Result<u16> {
        let (_, page) = self.get("/console/login").await?;
        let csrf = hidden_csrf(&page).unwrap_or_default();
        let (status, _, _) = self
            .post(
                "/console/login",
                &[
                    ("csrf", &csrf),
                    ("username", username),
                    ("password", password),
                ],
            )
            .await?;
        Ok(status)
    }

    /// The CSRF token of the signed-in session, from any page.
    async fn csrf(&self) -> anyhow::Result<String> {
        let (_, page) = self.get("/console/entries").await?;
        hidden_csrf(&page).ok_or_else(|| anyhow::anyhow!("no CSRF token on the page"))
    }
}

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
    let staff = Browser::new(&base)?;
    assert_eq!(staff.sign_in("zhuan", PASSWORD).await?, 303);
    let staff_csrf = staff.csrf().await?;
    for (method, route, role) in ROUTES {
        let path = route.replace("{id}", &id);
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

        // Signed in as staff: 403 where a role is needed, never 401.
        let status = match *method {
            "GET" => staff.get(&path).await?.0,
            _ => staff.post(&path, &[("csrf", &staff_csrf)]).await?.0,
        };
        match role {
            Some(_) => assert_eq!(status, 403, "{method} {path} as staff"),
            None => assert!(status < 400, "{method} {path} as staff: {status}"),
        }
        if *method == "POST" && *route != "/console/logout" {
            let (status, _, _) = staff.post(&path, &[("csrf", "forged")]).await?;
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
