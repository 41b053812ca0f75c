//! `wenke bench console`: server time of the console's pages over a large
//! turn log. Generated turns (a year of them, spread over days, channels,
//! cities, reply kinds and ratings, with deterministic ids so a second run
//! on the same data directory adds nothing) are written straight into the
//! turn log's collection; then the console is served on a loopback port
//! and each page is fetched repeatedly by a signed-in staff admin.
//!
//! The knowledge base is whatever the data directory holds (the demo KB
//! with `scripts/run.sh`), plus, with `--entries N`, N generated drafts
//! (external keys `bench-N`, so a rerun adds nothing): drafts are stored
//! like every entry but need no embedding, so a large list is cheap to
//! make; published entries would need the model for every phrasing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bot::Engine;
use bot::console::accounts::{NewAccount, Role};
use bot::turns::TurnRecord;
use kb::store::{NewPoint, to_payload};
use uuid::Uuid;

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct ConsoleBenchConfig {
    /// Turns to have in the log.
    pub turns: usize,
    /// Generated draft entries to have in the knowledge base.
    pub entries: usize,
    /// Timed fetches per page.
    pub runs: usize,
}

const CHANNELS: [&str; 4] = ["wechat", "wechat", "web", "wecom"];
const PLACES: [Option<&str>; 5] = [
    Some("四川省广元市苍溪县"),
    Some("四川省成都市武侯区"),
    Some("四川省南充市南部县"),
    None,
    None,
];
const QUESTIONS: [&str; 6] = [
    "洋芋叶子发黑咋个办",
    "水稻稻瘟病怎么防治",
    "隔夜菜会致癌吗",
    "月亮上为什么有那么多环形山",
    "红苕怎么储藏不烂",
    "地震来了在屋里怎么躲",
];

fn generated_turn(index: usize, entry_ids: &[String], year_start: i64) -> TurnRecord {
    // A fixed scatter: every field cycles with a different period.
    let at = year_start + (index as i64 * 31_557_600 / 1_000_003) % 31_536_000;
    let reply_kind = match index % 10 {
        0..=5 => "answer",
        6 | 7 => "suggest",
        _ => "abstain",
    };
    let entry = entry_ids.get(index % entry_ids.len().max(1)).cloned();
    TurnRecord {
        turn_id: Uuid::from_u64_pair(
            0x7e11_0000_0000_0000 | (at as u64 & 0xffff_ffff),
            index as u64,
        )
        .to_string(),
        at,
        day: bot::china::day_of(at),
        channel: CHANNELS[index % CHANNELS.len()].to_owned(),
        user: format!("bench:u{}", index % 50_000),
        message_kind: "text".into(),
        text: QUESTIONS[index % QUESTIONS.len()].to_owned(),
        resolved_query: None,
        route: "science_question".into(),
        route_confidence: 0.9,
        reply_kind: reply_kind.into(),
        entry_ids: match (reply_kind, entry) {
            ("abstain", _) | (_, None) => Vec::new(),
            (_, Some(id)) => vec![id],
        },
        confidence: 0.8,
        latency_ms: 40.0,
        region: PLACES[index % PLACES.len()].map(str::to_owned),
        notify: index % 40 == 8,
        feedback: match index % 17 {
            0 => Some(webhooks::message::Rating::Up),
            1 => Some(webhooks::message::Rating::Down),
            _ => None,
        },
    }
}

/// A draft made from one of the demo questions, numbered so each differs.
fn generated_entry(index: usize) -> kb::entry::EntryContent {
    let categories = kb::entry::Category::ALL;
    let category = categories[index % categories.len()];
    let asked = QUESTIONS[index % QUESTIONS.len()];
    kb::entry::EntryContent {
        external_key: Some(format!("bench-{index}")),
        question: format!("{asked}（第{index}问）"),
        alt_questions: vec![format!("{asked}？编号{index}")],
        answer: format!("生成的基准测试条目 {index}：{asked}。"),
        short_answer: None,
        category,
        tags: vec![format!("基准{}", index % 100)],
        crops: Vec::new(),
        regions: Vec::new(),
        months: Vec::new(),
        audience: None,
        source: kb::entry::Source {
            organisation: "基准测试".into(),
            ..Default::default()
        },
        review_by: index.is_multiple_of(7).then(|| "2025-01-01".to_owned()),
    }
}

async fn fill_entries(engine: &Engine, config: &ConsoleBenchConfig) -> anyhow::Result<()> {
    if config.entries == 0 {
        return Ok(());
    }
    let rows: Vec<kb::import::ParsedRow> = (0..config.entries)
        .map(|index| kb::import::ParsedRow {
            origin: kb::import::RowOrigin::Line(index + 1),
            result: Ok(generated_entry(index)),
        })
        .collect();
    let progress = indicatif::ProgressBar::new(config.entries as u64);
    let started = Instant::now();
    let report = engine
        .kb()
        .import(
            rows,
            &kb::ImportOptions {
                actor: "bench".into(),
                approve_as: None,
            },
            &|done, _| progress.set_position(done as u64),
        )
        .await?;
    progress.finish_and_clear();
    println!(
        "entries: {} created, {} unchanged in {:.1} s",
        report.created,
        report.unchanged,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn fill_turns(engine: &Engine, config: &ConsoleBenchConfig) -> anyhow::Result<()> {
    let store = engine.kb().store();
    let entry_ids: Vec<String> = engine
        .kb()
        .list(&kb::ListFilter {
            status: Some(kb::entry::Status::Published),
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|e| e.id.to_string())
        .collect();
    let year_start = time::OffsetDateTime::now_utc().unix_timestamp() - 31_536_000;
    let progress = indicatif::ProgressBar::new(config.turns as u64);
    let started = Instant::now();
    let mut days = std::collections::BTreeSet::new();
    for chunk in (0..config.turns).collect::<Vec<_>>().chunks(2_000) {
        let points: Vec<NewPoint> = chunk
            .iter()
            .filter_map(|&index| {
                let turn = generated_turn(index, &entry_ids, year_start);
                days.insert(turn.day.clone());
                Some(NewPoint {
                    id: Uuid::parse_str(&turn.turn_id).ok()?,
                    dense: None,
                    lexical: None,
                    payload: to_payload(&turn),
                })
            })
            .collect();
        store.upsert("turns", points).await?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    // Written behind the log's back: its day summaries must go.
    engine
        .turns()
        .forget_summaries(days.into_iter().collect())
        .await?;
    println!(
        "turns: {} written in {:.1} s",
        config.turns,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn cookie_of(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .filter_map(|h| h.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

/// Writes the turns, serves the console and times its pages.
pub async fn run(engine: Arc<Engine>, config: &ConsoleBenchConfig) -> anyhow::Result<()> {
    fill_entries(&engine, config).await?;
    fill_turns(&engine, config).await?;
    let console = bot::console::Console::open(
        Arc::clone(&engine),
        bot::console::ConsoleConfig {
            secure_cookies: false,
            ..Default::default()
        },
    )
    .await?;
    // A fresh account per run: a rerun on the same data does not need the
    // last run's password.
    let password = Uuid::new_v4().to_string();
    let username = format!("bench-{}", &password[..8]);
    console
        .accounts()
        .create(NewAccount {
            username: username.clone(),
            display_name: "bench".into(),
            password: password.clone(),
            roles: vec![Role::Admin],
        })
        .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = bot::http::router(
        Arc::clone(&engine),
        &bot::http::HttpConfig {
            console: Some(console),
            ..Default::default()
        },
    )?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let login = client.get(format!("{base}/console/login")).send().await?;
    let login_csrf = cookie_of(&login, "wenke_login_csrf").context("login cookie")?;
    let signed = client
        .post(format!("{base}/console/login"))
        .header("cookie", format!("wenke_login_csrf={login_csrf}"))
        .form(&[
            ("csrf", login_csrf.as_str()),
            ("username", username.as_str()),
            ("password", password.as_str()),
        ])
        .send()
        .await?;
    let session = cookie_of(&signed, "wenke_console").context("signing in")?;
    // Last week: a whole week of turns (the current one may have begun today).
    let last_week = bot::report::Period::week_of(
        bot::china::today()
            .checked_sub(time::Duration::days(7))
            .context("a date a week ago")?,
    );
    let week_query = format!("from={}&to={}", last_week.from_text(), last_week.to_text());
    let reports = format!("/console/reports?{week_query}");
    let export = format!("/console/reports/export?format=csv&{week_query}");
    let pages = [
        "/console/entries",
        "/console/entries?q=%E7%A8%BB%E7%98%9F%E7%97%85",
        "/console/entries?status=draft&stale=1",
        "/console/review",
        reports.as_str(),
        export.as_str(),
        "/console/feedback",
        "/console/unanswered",
        "/console/demands",
        "/console/push",
        "/console/dictionary",
        "/console/hit-test?q=%E7%BA%A2%E8%8B%95%E6%80%8E%E4%B9%88%E5%82%A8%E8%97%8F",
    ];
    println!(
        "{:<60} {:>9} {:>9} {:>9}",
        "page", "p50 ms", "max ms", "status"
    );
    for page in pages {
        let mut times: Vec<Duration> = Vec::new();
        let mut status = 0;
        for _ in 0..config.runs.max(1) {
            let started = Instant::now();
            let response = client
                .get(format!("{base}{page}"))
                .header("cookie", format!("wenke_console={session}"))
                .send()
                .await?;
            status = response.status().as_u16();
            response.bytes().await?;
            times.push(started.elapsed());
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{page:<60} {:>9.1} {:>9.1} {status:>9}",
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
    Ok(())
}
