//! The weekly report against counts taken straight from the turn log: a
//! week of questions on two channels and from two places (and some just
//! outside the week), ratings, and demands; the report (as the console
//! shows it, as its CSV and Markdown downloads, per channel and per city)
//! must count exactly what the log holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use bot::console::accounts::Role;
use bot::report::{Period, Report, Scope};
use bot::turns::TurnRecord;
use kb::listing::{DemandStatus, ListingKind};
use time::macros::datetime;
use webhooks::message::{Channel, Content, Handler, Incoming, Rating, UserKey};

const PASSWORD: &str = "correct-horse-battery";

/// Questions the fixture answers, one it offers choices for at best, and
/// one it has nothing on; and small talk, which is not a question.
/// (The unanswerable one comes first, before any topic it could be read
/// as a follow-up of.)
const ASKED: &[&str] = &[
    "月亮上为什么有那么多环形山",
    "马铃薯晚疫病用什么药",
    "洋芋叶子发黑咋个办",
    "你好",
    "水稻稻瘟病怎么防治",
];

fn is_question(turn: &TurnRecord) -> bool {
    matches!(turn.reply_kind.as_str(), "answer" | "suggest" | "abstain")
        && !matches!(turn.route.as_str(), "detail" | "choice")
}

async fn say(
    engine: &bot::Engine,
    user: &UserKey,
    content: Content,
    at: time::OffsetDateTime,
) -> anyhow::Result<webhooks::message::Reply> {
    Ok(engine
        .handle(Incoming {
            user: user.clone(),
            message_id: None,
            content,
            received_at: at,
        })
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weekly_report_counts_what_the_turn_log_holds() -> anyhow::Result<()> {
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;

    // 2026-W47 is 16 to 22 November; the 23rd is the next week, and
    // 2026-11-15 23:30 in China is still the week before.
    let days = [
        datetime!(2026-11-16 09:00 +8),
        datetime!(2026-11-18 20:15 +8),
        datetime!(2026-11-22 23:50 +8),
        datetime!(2026-11-23 00:10 +8),
        datetime!(2026-11-15 23:30 +8),
    ];
    let mut rated = 0;
    for (n, at) in days.iter().enumerate() {
        // A WeChat user in 苍溪 (广元市) and a web user with no known place.
        let farmer = UserKey::new(Channel::Wechat, format!("o-farmer-{n}"));
        let location = Content::Location {
            latitude: 31.73,
            longitude: 105.93,
            label: Some("四川省广元市苍溪县陵江镇".into()),
        };
        say(&engine, &farmer, location, *at).await?;
        let citizen = UserKey::new(Channel::Web, format!("citizen-{n}"));
        for (i, text) in ASKED.iter().enumerate() {
            let user = if i % 2 == 0 { &farmer } else { &citizen };
            let content = Content::Text {
                text: (*text).to_owned(),
            };
            let reply = say(&engine, user, content, *at).await?;
            if reply.feedback {
                let rating = if rated % 3 == 0 {
                    Rating::Down
                } else {
                    Rating::Up
                };
                engine.feedback(user, &reply.turn_id, rating).await?;
                rated += 1;
            }
        }
    }
    // Demands are filed now, so they count in the current week.
    tests::import_demo_listings(&engine, ListingKind::Demands).await?;
    // Staff take one on: it counts as matched.
    let first = engine
        .listings()
        .demands(Some(DemandStatus::Published), None)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the demo demands are published"))?;
    engine
        .update_demand(
            &first.number,
            kb::listing::StaffUpdate {
                status: Some(DemandStatus::Matching),
                ..Default::default()
            },
            "staff:测试",
        )
        .await?;

    // Straight from the log.
    let week = Period::iso_week("2026-W47")?;
    let week_days = week.days();
    let logged: Vec<TurnRecord> = engine
        .turns()
        .find(&[])
        .await?
        .into_iter()
        .filter(|t| week_days.contains(&t.day) && is_question(t))
        .collect();
    let count =
        |turns: &[&TurnRecord], kind: &str| turns.iter().filter(|t| t.reply_kind == kind).count();
    let all: Vec<&TurnRecord> = logged.iter().collect();
    assert!(all.len() >= 9, "three days of questions: {}", all.len());
    let kinds: Vec<(&str, &str)> = all
        .iter()
        .map(|t| (t.text.as_str(), t.reply_kind.as_str()))
        .collect();
    assert!(
        count(&all, "answer") > 0 && count(&all, "abstain") > 0,
        "{kinds:?}"
    );

    let report = Report::gather(&engine, week, Scope::default()).await?;
    assert_eq!(report.totals.questions, all.len());
    assert_eq!(report.totals.answered, count(&all, "answer"));
    assert_eq!(report.totals.suggested, count(&all, "suggest"));
    assert_eq!(report.totals.abstained, count(&all, "abstain"));
    let ups = all
        .iter()
        .filter(|t| t.feedback == Some(Rating::Up))
        .count();
    let downs = all
        .iter()
        .filter(|t| t.feedback == Some(Rating::Down))
        .count();
    assert_eq!(
        (report.totals.rated_up, report.totals.rated_down),
        (ups, downs)
    );
    assert!(ups + downs > 0, "some answers were rated");
    let users: std::collections::HashSet<&str> = all.iter().map(|t| t.user.as_str()).collect();
    assert_eq!(report.users, users.len());
    let mut per_day: BTreeMap<&str, usize> = BTreeMap::new();
    for turn in &all {
        *per_day.entry(turn.day.as_str()).or_default() += 1;
    }
    for row in &report.per_day {
        assert_eq!(
            row.counts.questions,
            per_day.get(row.name.as_str()).copied().unwrap_or(0),
            "{}",
            row.name
        );
    }
    let wechat: Vec<&TurnRecord> = all
        .iter()
        .copied()
        .filter(|t| t.channel == "wechat")
        .collect();
    let by_channel = |name: &str| {
        report
            .by_channel
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.counts.questions)
    };
    assert_eq!(by_channel("wechat"), Some(wechat.len()));
    assert_eq!(by_channel("web"), Some(all.len() - wechat.len()));
    // Every WeChat question came from 苍溪, every web one from nowhere known.
    let city = |name: &str| {
        report
            .by_city
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.counts.questions)
    };
    assert_eq!(city("广元市"), Some(wechat.len()));
    assert_eq!(city("未知"), Some(all.len() - wechat.len()));
    assert!(report.by_county.iter().any(|r| r.name == "广元市 苍溪县"));
    let unanswered = report
        .top_unanswered
        .iter()
        .find(|q| q.text == "月亮上为什么有那么多环形山")
        .map(|q| q.count);
    let abstained_moon = all
        .iter()
        .filter(|t| t.reply_kind == "abstain" && t.text == "月亮上为什么有那么多环形山")
        .count();
    assert_eq!(unanswered, Some(abstained_moon));
    let guangyuan = Report::gather(
        &engine,
        week,
        Scope {
            channel: None,
            city: Some("广元市".into()),
        },
    )
    .await?;
    assert_eq!(guangyuan.totals.questions, wechat.len());

    // Demands this week, from the listings.
    let this_week = Period::week_of(bot::china::today());
    let now = Report::gather(&engine, this_week, Scope::default()).await?;
    let listed = engine.listings().demands(None, None).await?;
    let matched = listed
        .iter()
        .filter(|d| {
            !d.claims.is_empty()
                || matches!(d.status, DemandStatus::Matching | DemandStatus::Cooperating)
        })
        .count();
    assert_eq!(now.demands_filed, listed.len());
    assert_eq!(now.demands_matched, matched);
    assert_eq!(matched, 1, "the one staff took on");

    // The console's page and downloads show the same numbers.
    let console = tests::console_with(&engine, &[("zhuan", Role::Staff)], PASSWORD).await?;
    let channels = bot::http::HttpConfig {
        console: Some(Arc::clone(&console)),
        ..Default::default()
    };
    let addr = tests::serve_with(Arc::clone(&engine), &channels).await?;
    let staff = tests::ConsoleClient::new(&format!("http://{addr}"))?;
    assert_eq!(staff.sign_in("zhuan", PASSWORD).await?, 303);
    let (status, page) = staff.get("/console/reports?week=2026-W47").await?;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(&format!(
            "<strong id=\"total-questions\">{}</strong>",
            all.len()
        )),
        "{page}"
    );
    assert!(page.contains("<svg"), "the chart is inline SVG");
    let (status, csv) = staff
        .get("/console/reports/export?format=csv&week=2026-W47")
        .await?;
    assert_eq!(status, 200);
    assert_eq!(csv, report.csv());
    let total_line = csv.lines().nth(1).unwrap_or_default();
    let fields: Vec<&str> = total_line.split(',').collect();
    assert_eq!(fields.first(), Some(&"total"));
    assert_eq!(fields.get(2), Some(&all.len().to_string().as_str()));
    let (status, markdown) = staff
        .get("/console/reports/export?format=md&from=2026-11-16&to=2026-11-22")
        .await?;
    assert_eq!(status, 200);
    assert!(markdown.starts_with("# 问科 周报：2026-W47"), "{markdown}");
    assert!(
        markdown.contains(&format!("| 提问 | {} |", all.len())),
        "{markdown}"
    );
    let (status, _) = staff
        .get("/console/reports?from=2026-11-22&to=2026-11-16")
        .await?;
    assert_eq!(status, 400, "a reversed period is refused");
    Ok(())
}

/// Everything of a report but the names of answered entries, which only
/// [`Report::gather`] looks up.
fn numbers(report: &Report) -> impl PartialEq + std::fmt::Debug + '_ {
    let top: Vec<(usize, Option<&str>)> = report
        .top_questions
        .iter()
        .map(|q| (q.count, q.entry_id.as_deref()))
        .collect();
    (
        report.totals,
        report.users,
        &report.per_day,
        &report.by_channel,
        &report.by_city,
        &report.by_county,
        &report.top_unanswered,
        top,
    )
}

/// The week's report counted from every turn in the log, without tallies.
async fn from_log(engine: &bot::Engine, week: Period) -> anyhow::Result<Report> {
    let turns = engine.turns().find(&[]).await?;
    Ok(Report::from_turns(
        week,
        Scope::default(),
        &turns,
        &[],
        &Default::default(),
        kb::region::Regions::builtin(),
    ))
}

/// Finished days are read from their stored tallies; a turn or a rating
/// that reaches the log later must still count, and the stored path must
/// give what the turns themselves give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn day_tallies_give_the_turns_numbers_and_follow_late_turns_and_ratings() -> anyhow::Result<()>
{
    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let week = Period::iso_week("2026-W47")?;
    let monday = datetime!(2026-11-16 10:00 +8);
    let farmer = UserKey::new(Channel::Wechat, "o-late-farmer");
    let text = |text: &str| Content::Text { text: text.into() };
    for asked in ["水稻稻瘟病怎么防治", "月亮上为什么有那么多环形山"] {
        say(&engine, &farmer, text(asked), monday).await?;
    }

    // The first report tallies the week's days and stores them; the second
    // reads them back.
    let first = Report::gather(&engine, week, Scope::default()).await?;
    let again = Report::gather(&engine, week, Scope::default()).await?;
    let direct = from_log(&engine, week).await?;
    assert_eq!(numbers(&first), numbers(&direct));
    assert_eq!(numbers(&again), numbers(&direct));
    assert_eq!(first.totals.questions, 2);

    // A question logged late for Tuesday, after Tuesday's tally was stored.
    let tuesday = datetime!(2026-11-17 08:00 +8);
    let reply = say(&engine, &farmer, text("水稻稻瘟病怎么防治"), tuesday).await?;
    assert!(reply.feedback, "the fixture answers it");
    let later = Report::gather(&engine, week, Scope::default()).await?;
    assert_eq!(later.totals.questions, 3);
    assert_eq!(later.per_day[1].counts.questions, 1);

    // A rating of a finished day's answer: ratings are read live.
    engine
        .feedback(&farmer, &reply.turn_id, Rating::Down)
        .await?;
    let rated = Report::gather(&engine, week, Scope::default()).await?;
    assert_eq!(rated.totals.rated_down, 1);
    assert_eq!(rated.per_day[1].counts.rated_down, 1);
    let direct = from_log(&engine, week).await?;
    assert_eq!(numbers(&rated), numbers(&direct));
    Ok(())
}

/// Retention deletes the unrated turns of days past the period and keeps
/// what reads them: the report of those days is the same after pruning
/// (from the stored day tallies), the rated turns stay, and days inside
/// the period are untouched. A second pruning finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_turns_and_keeps_their_report() -> anyhow::Result<()> {
    use bot::retention::{TurnRetention, prune_turns};

    let dir = tests::scratch_dir()?;
    let engine = tests::engine_with(&dir, "kb/tests/data/fixture.jsonl").await?;
    let now = time::OffsetDateTime::now_utc();
    // Two days past a 365-day period and one inside it.
    let old = [
        now - time::Duration::days(420),
        now - time::Duration::days(400),
    ];
    let recent = now - time::Duration::days(30);
    for (n, at) in old.iter().chain([&recent]).enumerate() {
        let user = UserKey::new(Channel::Web, format!("asker-{n}"));
        for text in ASKED {
            let content = Content::Text {
                text: (*text).to_owned(),
            };
            let reply = say(&engine, &user, content, *at).await?;
            if reply.feedback {
                engine.feedback(&user, &reply.turn_id, Rating::Up).await?;
            }
        }
    }
    let day = bot::china::day;
    let old_period = Period::new(
        old[0].to_offset(bot::china::CHINA).date(),
        old[1].to_offset(bot::china::CHINA).date(),
    )?;
    let before = Report::gather(&engine, old_period, Scope::default()).await?;
    assert!(before.totals.questions >= 6, "{:?}", before.totals);
    assert!(before.totals.rated_up > 0, "some old answers were rated");
    let logged = engine.turns().find(&[]).await?;
    let on = |at: time::OffsetDateTime| -> Vec<TurnRecord> {
        logged
            .iter()
            .filter(|t| t.day == day(at))
            .cloned()
            .collect()
    };
    let (old_turns, recent_turns) = ([on(old[0]), on(old[1])].concat(), on(recent));

    let retention = TurnRetention {
        days: std::num::NonZeroU32::new(365).expect("not zero"),
    };
    let pruned = prune_turns(engine.turns(), retention).await?;
    assert_eq!(pruned.days, vec![day(old[0]), day(old[1])]);
    let rated_old: Vec<TurnRecord> = old_turns
        .iter()
        .filter(|t| t.feedback.is_some())
        .cloned()
        .collect();
    assert_eq!(pruned.turns, old_turns.len() - rated_old.len());

    let left = engine.turns().find(&[]).await?;
    let left_old: Vec<TurnRecord> = left
        .iter()
        .filter(|t| t.day == day(old[0]) || t.day == day(old[1]))
        .cloned()
        .collect();
    assert_eq!(left_old, rated_old, "of old days only the rated turns stay");
    let left_recent: Vec<TurnRecord> = left
        .iter()
        .filter(|t| t.day == day(recent))
        .cloned()
        .collect();
    assert_eq!(
        left_recent, recent_turns,
        "days inside the period are kept whole"
    );

    let after = Report::gather(&engine, old_period, Scope::default()).await?;
    assert_eq!(after, before, "the old days' report survives pruning");
    assert_eq!(
        prune_turns(engine.turns(), retention).await?,
        bot::retention::Pruned::default()
    );
    Ok(())
}
