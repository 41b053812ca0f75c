//! Analytics and the weekly report (周报): questions per day, how they were
//! answered, the top questions and the top unanswered ones, satisfaction,
//! demands filed and matched, by channel and by region (市州, 县区), for
//! any period of China days.
//!
//! [`Report::build`] is a pure function of day tallies, rated turns and
//! demands, so the console page, its downloads and `wenke report` show the
//! same numbers, and a test checks them against counts taken straight from
//! the turn log. [`Report::gather`] is the one place that reads them from
//! the stores: a day that is over is tallied once ([`DayTally`], kept as a
//! day summary in the turn log), so a finished week costs seven small
//! reads, not every turn of the week; today is tallied live.
//!
//! What counts:
//! - a *question* is a turn answered from the knowledge base, offered as
//!   "你是想问" or abstained on (reply kinds `answer`, `suggest`,
//!   `abstain`); greetings, forms and notices are not questions, and
//!   neither are "详细" and a numbered pick from "你是想问" (routes
//!   `detail` and `choice`: they follow a question already counted);
//! - *satisfaction* is 👍 / (👍 + 👎) over the period's rated turns;
//! - a demand is *filed* in the period when its filing day is in it, and
//!   *matched* when it has a 揭榜 claim or has reached 对接中 or 已合作;
//! - a turn's region is read from the place the user shared (a WeChat
//!   location label), through the province's region table; turns with no
//!   known place count under 未知.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use kb::listing::{Demand, DemandStatus};
use kb::region::Regions;
use serde::{Deserialize, Serialize};
use time::{Date, Month, Weekday};
use webhooks::message::Rating;

use crate::china::date_text as day_text;
use crate::turns::{TurnLog, TurnRecord};

/// The longest period one report covers.
pub const MAX_DAYS: i64 = 366;
/// Rows of the top-questions tables.
const TOP: usize = 10;
/// The region name of turns and demands with no known place.
pub const UNKNOWN_REGION: &str = "未知";
/// The channel name of demands that came from an import, not a chat.
pub const IMPORTED: &str = "导入";

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The period is malformed or too long.
    #[error("{0}")]
    Period(String),
    /// The scope names no channel or no city of the province.
    #[error("{0}")]
    Scope(String),
    /// A store failed.
    #[error("reading the logs failed: {0}")]
    Store(String),
}

/// A period of whole days in China time, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Period {
    /// The first day.
    pub from: Date,
    /// The last day.
    pub to: Date,
}

/// A request's text, trimmed; `None` when absent or blank.
fn given_text(text: Option<&str>) -> Option<&str> {
    text.map(str::trim).filter(|t| !t.is_empty())
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Result<Date, ReportError> {
    let bad = || ReportError::Period(format!("日期应写成 2026-11-16 这样：{text}"));
    let mut parts = text.trim().splitn(3, '-');
    let mut next = || parts.next().and_then(|p| p.parse::<i32>().ok());
    let (Some(year), Some(month), Some(day)) = (next(), next(), next()) else {
        return Err(bad());
    };
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or_else(bad)?;
    let day = u8::try_from(day).map_err(|_| bad())?;
    Date::from_calendar_date(year, month, day).map_err(|_| bad())
}

impl Period {
    /// The days from `from` to `to`; refuses a reversed or over-long period.
    pub fn new(from: Date, to: Date) -> Result<Self, ReportError> {
        if to < from {
            return Err(ReportError::Period("结束日期早于开始日期".into()));
        }
        if (to - from).whole_days() >= MAX_DAYS {
            return Err(ReportError::Period(format!("一次最多统计 {MAX_DAYS} 天")));
        }
        Ok(Self { from, to })
    }

    /// The ISO week `2026-W47`: Monday to Sunday.
    pub fn iso_week(text: &str) -> Result<Self, ReportError> {
        let bad = || ReportError::Period(format!("周应写成 2026-W47 这样：{text}"));
        let (year, week) = text.trim().split_once(['W', 'w']).ok_or_else(bad)?;
        let year: i32 = year.trim_end_matches('-').parse().map_err(|_| bad())?;
        let week: u8 = week.parse().map_err(|_| bad())?;
        let monday = Date::from_iso_week_date(year, week, Weekday::Monday).map_err(|_| bad())?;
        let sunday = Date::from_iso_week_date(year, week, Weekday::Sunday).map_err(|_| bad())?;
        Self::new(monday, sunday)
    }

    /// The period a request names: an ISO week (`2026-W47`), else `from`
    /// and `to` (`YYYY-MM-DD`), else the current week in China. Blank
    /// texts count as absent.
    pub fn select(
        week: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Self, ReportError> {
        if let Some(week) = given_text(week) {
            return Self::iso_week(week);
        }
        let (from, to) = (given_text(from), given_text(to));
        if from.is_none() && to.is_none() {
            return Ok(Self::week_of(crate::china::today()));
        }
        Self::new(
            parse_day(from.unwrap_or_default())?,
            parse_day(to.unwrap_or_default())?,
        )
    }

    /// The ISO week a day is in.
    pub fn week_of(day: Date) -> Self {
        let (year, week, _) = day.to_iso_week_date();
        let monday = Date::from_iso_week_date(year, week, Weekday::Monday).unwrap_or(day);
        let sunday = Date::from_iso_week_date(year, week, Weekday::Sunday).unwrap_or(day);
        Self {
            from: monday,
            to: sunday,
        }
    }

    /// Every day of the period as the turn log writes it (`YYYY-MM-DD`).
    pub fn days(&self) -> Vec<String> {
        let mut days = Vec::new();
        let mut day = self.from;
        while day <= self.to {
            days.push(day_text(day));
            let Some(next) = day.next_day() else { break };
            day = next;
        }
        days
    }

    /// `2026-11-16 至 2026-11-22`, or the ISO week's name when it is one.
    pub fn label(&self) -> String {
        let week = Self::week_of(self.from);
        if week == *self {
            let (year, number, _) = self.from.to_iso_week_date();
            return format!(
                "{year}-W{number:02}（{} 至 {}）",
                day_text(self.from),
                day_text(self.to)
            );
        }
        format!("{} 至 {}", day_text(self.from), day_text(self.to))
    }

    /// The period's start in the form `from=` fields take.
    pub fn from_text(&self) -> String {
        day_text(self.from)
    }

    /// The period's end in the form `to=` fields take.
    pub fn to_text(&self) -> String {
        day_text(self.to)
    }
}

/// Which turns and demands a report covers, besides the period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Scope {
    /// Only this channel (`wechat`, `web`, …).
    pub channel: Option<String>,
    /// Only this city or prefecture (full name, "广元市").
    pub city: Option<String>,
}

impl Scope {
    /// The scope a request names: a channel by its stable name (`wechat`),
    /// a city by its full or short name (`广元`); blank texts are absent.
    pub fn named(channel: Option<&str>, city: Option<&str>) -> Result<Self, ReportError> {
        let channel = match given_text(channel) {
            None => None,
            Some(name) => Some(
                webhooks::message::Channel::parse(name)
                    .ok_or_else(|| ReportError::Scope(format!("没有渠道 {name}")))?
                    .as_str()
                    .to_owned(),
            ),
        };
        let city = match given_text(city) {
            None => None,
            Some(name) => Some(
                Regions::builtin()
                    .city(name)
                    .ok_or_else(|| ReportError::Scope(format!("没有市州 {name}")))?,
            ),
        };
        Ok(Self { channel, city })
    }
}

/// Counts of one slice of the period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Questions asked.
    pub questions: usize,
    /// Answered from an entry.
    pub answered: usize,
    /// Offered "你是想问".
    pub suggested: usize,
    /// No authoritative answer.
    pub abstained: usize,
    /// Rated 👍.
    pub rated_up: usize,
    /// Rated 👎.
    pub rated_down: usize,
}

impl Counts {
    /// Adds a cell's questions (ratings come separately).
    fn add_cell(&mut self, cell: &Cell) {
        self.answered += cell.answered;
        self.suggested += cell.suggested;
        self.abstained += cell.abstained;
        self.questions += cell.answered + cell.suggested + cell.abstained;
    }

    /// Adds one rating of a question.
    fn add_rating(&mut self, rating: Rating) {
        match rating {
            Rating::Up => self.rated_up += 1,
            Rating::Down => self.rated_down += 1,
        }
    }

    fn share(part: usize, whole: usize) -> Option<f64> {
        (whole > 0).then(|| part as f64 / whole as f64)
    }

    /// Answered / questions.
    pub fn answered_rate(&self) -> Option<f64> {
        Self::share(self.answered, self.questions)
    }

    /// Suggested / questions.
    pub fn suggested_rate(&self) -> Option<f64> {
        Self::share(self.suggested, self.questions)
    }

    /// Abstained / questions.
    pub fn abstained_rate(&self) -> Option<f64> {
        Self::share(self.abstained, self.questions)
    }

    /// 👍 / rated.
    pub fn satisfaction(&self) -> Option<f64> {
        Self::share(self.rated_up, self.rated_up + self.rated_down)
    }
}

/// Whether a turn is a question (see the module's definition).
pub fn is_question(turn: &TurnRecord) -> bool {
    matches!(turn.reply_kind.as_str(), "answer" | "suggest" | "abstain")
        && !matches!(turn.route.as_str(), "detail" | "choice")
}

/// A row of a breakdown: a channel, a city, a county or a day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// What the row is about.
    pub name: String,
    /// Its questions.
    pub counts: Counts,
    /// Demands filed in it.
    pub demands_filed: usize,
    /// Of those, matched.
    pub demands_matched: usize,
}

/// A question and how often it came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ranked {
    /// The question: an entry's question, or an unanswered question as asked.
    pub text: String,
    /// How often.
    pub count: usize,
    /// The entry, for answered questions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<String>,
}

/// The report of one period and scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The period.
    pub period: Period,
    /// The scope.
    pub scope: Scope,
    /// Everything in the scope.
    pub totals: Counts,
    /// Distinct users who asked a question.
    pub users: usize,
    /// Demands filed.
    pub demands_filed: usize,
    /// Of those, matched.
    pub demands_matched: usize,
    /// One row per day of the period, in order (days without turns too).
    pub per_day: Vec<Row>,
    /// One row per channel, most questions first.
    pub by_channel: Vec<Row>,
    /// One row per city (市州), most questions first.
    pub by_city: Vec<Row>,
    /// One row per county (县区, named "城市 县区"), most questions first.
    pub by_county: Vec<Row>,
    /// Entries answered most often.
    pub top_questions: Vec<Ranked>,
    /// Unanswered questions asked most often (the same words after
    /// trimming count as one).
    pub top_unanswered: Vec<Ranked>,
}

/// The questions of one day from one channel and one place: everything a
/// report needs of them except ratings, which come any time later.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// The channel's stable name.
    pub channel: String,
    /// The city (市州), or [`UNKNOWN_REGION`].
    pub city: String,
    /// The county (县区), when the place named one.
    pub county: Option<String>,
    /// Answered from an entry.
    pub answered: usize,
    /// Offered "你是想问".
    pub suggested: usize,
    /// No authoritative answer.
    pub abstained: usize,
    /// Answers per entry id.
    pub entries: BTreeMap<String, usize>,
    /// Abstentions per question as asked (trimmed, non-empty).
    pub unanswered: BTreeMap<String, usize>,
    /// Who asked. Exact, so a week's distinct users are a union; its size
    /// follows a day's distinct askers, not its turns.
    pub users: BTreeSet<String>,
}

/// One day's questions, cut into [`Cell`]s: the day summary a report keeps
/// in the turn log for days that are over, so a report of a finished week
/// reads seven summaries instead of every turn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayTally {
    /// The China day, `YYYY-MM-DD`.
    pub day: String,
    /// One cell per (channel, city, county) that asked anything.
    pub cells: Vec<Cell>,
}

/// The turn log's name for [`DayTally`] summaries. A change to what a
/// tally holds changes this name, so old summaries are never read. Days
/// whose turns retention has deleted ([`crate::retention`]) live on only in
/// their summaries: a new name must come with a conversion of the old
/// summaries, or those days' figures are lost.
const TALLY_KIND: &str = "report-day-v1";

/// The first China day whose tally is not stored yet: days before it ended
/// more than [`SETTLE`] ago.
pub fn settled_before() -> String {
    crate::china::day(time::OffsetDateTime::now_utc() - SETTLE)
}

/// The tallies of `days`: a day that ended more than [`SETTLE`] ago is read
/// from its stored [`DayTally`], tallied from its turns (and stored) the
/// first time; the rest are tallied from their turns on every call.
pub async fn day_tallies(log: &TurnLog, days: &[String]) -> Result<Vec<DayTally>, ReportError> {
    let store = |e: &dyn std::fmt::Display| ReportError::Store(e.to_string());
    let settled_before = settled_before();
    let settled: Vec<String> = days
        .iter()
        .filter(|day| **day < settled_before)
        .cloned()
        .collect();
    let mut tallies: Vec<DayTally> = log
        .summaries(TALLY_KIND, &settled)
        .await
        .map_err(|e| store(&e))?
        .into_values()
        .filter_map(|summary| {
            serde_json::from_value::<DayTally>(serde_json::Value::Object(summary)).ok()
        })
        .collect();
    let stored: HashSet<String> = tallies.iter().map(|t| t.day.clone()).collect();
    let unstored: Vec<String> = days
        .iter()
        .filter(|day| !stored.contains(*day))
        .cloned()
        .collect();
    tracing::debug!(
        stored = tallies.len(),
        tallied = unstored.len(),
        "report days: from summaries and from turns"
    );
    let turns = log.on_days(unstored.clone()).await.map_err(|e| store(&e))?;
    // A year of turns is seconds of counting: off the async runtime.
    let fresh = tokio::task::spawn_blocking(move || {
        DayTally::of_days(&unstored, &turns, Regions::builtin())
    })
    .await
    .map_err(|e| store(&e))?;
    for tally in &fresh {
        if tally.day < settled_before {
            let summary = kb::store::to_payload(tally);
            log.save_summary(TALLY_KIND, &tally.day, summary)
                .await
                .map_err(|e| store(&e))?;
        }
    }
    tallies.extend(fresh);
    Ok(tallies)
}

/// A China day is summarised only once this long after it ended, so a turn
/// still on its way to the log (the writer's batch window, a retry) is not
/// left out. A later write of that day deletes the summary anyway.
const SETTLE: time::Duration = time::Duration::hours(1);

impl DayTally {
    /// One tally per day of `days`, in that order, of the questions among
    /// `turns` asked on it.
    pub fn of_days(days: &[String], turns: &[TurnRecord], regions: &Regions) -> Vec<Self> {
        let mut by_day: HashMap<&str, Vec<&TurnRecord>> = HashMap::new();
        for turn in turns {
            by_day.entry(turn.day.as_str()).or_default().push(turn);
        }
        days.iter()
            .map(|day| {
                let turns = by_day.remove(day.as_str()).unwrap_or_default();
                Self::count(day, turns, regions)
            })
            .collect()
    }

    /// Tallies the questions among `turns` that were asked on `day`.
    pub fn count<'t>(
        day: &str,
        turns: impl IntoIterator<Item = &'t TurnRecord>,
        regions: &Regions,
    ) -> Self {
        let mut cells: BTreeMap<(String, String, Option<String>), Cell> = BTreeMap::new();
        for turn in turns {
            if turn.day != day || !is_question(turn) {
                continue;
            }
            let (city, county) = turn_place(turn, regions);
            let cell = cells
                .entry((turn.channel.clone(), city.clone(), county.clone()))
                .or_insert_with(|| Cell {
                    channel: turn.channel.clone(),
                    city,
                    county,
                    ..Cell::default()
                });
            cell.users.insert(turn.user.clone());
            match turn.reply_kind.as_str() {
                "answer" => {
                    cell.answered += 1;
                    if let Some(entry_id) = turn.entry_ids.first() {
                        *cell.entries.entry(entry_id.clone()).or_default() += 1;
                    }
                }
                "suggest" => cell.suggested += 1,
                _ => {
                    cell.abstained += 1;
                    let asked = turn.text.trim();
                    if !asked.is_empty() {
                        *cell.unanswered.entry(asked.to_owned()).or_default() += 1;
                    }
                }
            }
        }
        Self {
            day: day.to_owned(),
            cells: cells.into_values().collect(),
        }
    }
}

/// Where a turn's user was, as (city, county).
fn turn_place(turn: &TurnRecord, regions: &Regions) -> (String, Option<String>) {
    match turn.region.as_deref().and_then(|label| regions.find(label)) {
        Some(place) => (place.city, place.county),
        None => (UNKNOWN_REGION.to_owned(), None),
    }
}

fn demand_place(demand: &Demand) -> (String, Option<String>) {
    let city = demand.content.region.trim();
    if city.is_empty() {
        return (UNKNOWN_REGION.to_owned(), None);
    }
    (city.to_owned(), demand.content.county.clone())
}

fn demand_channel(demand: &Demand) -> String {
    demand
        .filed_by
        .as_ref()
        .map_or_else(|| IMPORTED.to_owned(), |filer| filer.channel.clone())
}

/// Whether a demand found an expert (see the module's definition).
pub fn is_matched(demand: &Demand) -> bool {
    !demand.claims.is_empty()
        || matches!(
            demand.status,
            DemandStatus::Matching | DemandStatus::Cooperating
        )
}

fn county_name(city: &str, county: Option<&str>) -> String {
    match county {
        Some(county) => format!("{city} {county}"),
        None => format!("{city}（未细到县区）"),
    }
}

#[derive(Default)]
struct Tally {
    counts: Counts,
    filed: usize,
    matched: usize,
}

fn rows(tallies: HashMap<String, Tally>) -> Vec<Row> {
    let mut rows: Vec<Row> = tallies
        .into_iter()
        .map(|(name, tally)| Row {
            name,
            counts: tally.counts,
            demands_filed: tally.filed,
            demands_matched: tally.matched,
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.counts.questions, b.demands_filed)
            .cmp(&(a.counts.questions, a.demands_filed))
            .then_with(|| a.name.cmp(&b.name))
    });
    rows
}

fn top(counts: HashMap<String, (usize, Option<String>)>) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = counts
        .into_iter()
        .map(|(text, (count, entry_id))| Ranked {
            text,
            count,
            entry_id,
        })
        .collect();
    ranked.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.text.cmp(&b.text)));
    ranked.truncate(TOP);
    ranked
}

impl Report {
    /// Builds the report from the turns themselves: every day tallied from
    /// `turns`, ratings read from the same turns. The same numbers as
    /// [`Report::gather`], which reads finished days from their summaries.
    pub fn from_turns(
        period: Period,
        scope: Scope,
        turns: &[TurnRecord],
        demands: &[Demand],
        entry_questions: &HashMap<String, String>,
        regions: &Regions,
    ) -> Self {
        let tallies = DayTally::of_days(&period.days(), turns, regions);
        Self::build(
            period,
            scope,
            &tallies,
            turns,
            demands,
            entry_questions,
            regions,
        )
    }

    /// Builds the report from the period's day tallies, its rated turns
    /// (unrated ones are skipped) and every demand (those outside the
    /// period or the scope are skipped here). `entry_questions` names
    /// answered entries by id; entries missing from it show their id.
    pub fn build(
        period: Period,
        scope: Scope,
        tallies: &[DayTally],
        rated: &[TurnRecord],
        demands: &[Demand],
        entry_questions: &HashMap<String, String>,
        regions: &Regions,
    ) -> Self {
        let days: Vec<String> = period.days();
        let in_period: HashSet<&str> = days.iter().map(String::as_str).collect();
        let in_scope = |channel: &str, city: &str| {
            scope.channel.as_deref().is_none_or(|c| c == channel)
                && scope.city.as_deref().is_none_or(|c| c == city)
        };
        let mut totals = Counts::default();
        let mut users: HashSet<&str> = HashSet::new();
        let mut per_day: HashMap<String, Tally> = HashMap::new();
        let mut by_channel: HashMap<String, Tally> = HashMap::new();
        let mut by_city: HashMap<String, Tally> = HashMap::new();
        let mut by_county: HashMap<String, Tally> = HashMap::new();
        let mut answered: HashMap<String, (usize, Option<String>)> = HashMap::new();
        let mut unanswered: HashMap<String, (usize, Option<String>)> = HashMap::new();

        for tally in tallies {
            if !in_period.contains(tally.day.as_str()) {
                continue;
            }
            for cell in &tally.cells {
                if !in_scope(&cell.channel, &cell.city) {
                    continue;
                }
                totals.add_cell(cell);
                users.extend(cell.users.iter().map(String::as_str));
                for slice in [
                    per_day.entry(tally.day.clone()).or_default(),
                    by_channel.entry(cell.channel.clone()).or_default(),
                    by_county
                        .entry(county_name(&cell.city, cell.county.as_deref()))
                        .or_default(),
                    by_city.entry(cell.city.clone()).or_default(),
                ] {
                    slice.counts.add_cell(cell);
                }
                for (entry_id, count) in &cell.entries {
                    let text = entry_questions
                        .get(entry_id)
                        .cloned()
                        .unwrap_or_else(|| entry_id.clone());
                    answered
                        .entry(text)
                        .or_insert((0, Some(entry_id.clone())))
                        .0 += count;
                }
                for (asked, count) in &cell.unanswered {
                    unanswered.entry(asked.clone()).or_default().0 += count;
                }
            }
        }

        for turn in rated {
            let Some(rating) = turn.feedback else {
                continue;
            };
            if !is_question(turn) || !in_period.contains(turn.day.as_str()) {
                continue;
            }
            let (city, county) = turn_place(turn, regions);
            if !in_scope(&turn.channel, &city) {
                continue;
            }
            totals.add_rating(rating);
            for slice in [
                per_day.entry(turn.day.clone()).or_default(),
                by_channel.entry(turn.channel.clone()).or_default(),
                by_county
                    .entry(county_name(&city, county.as_deref()))
                    .or_default(),
                by_city.entry(city).or_default(),
            ] {
                slice.counts.add_rating(rating);
            }
        }

        let (mut demands_filed, mut demands_matched) = (0, 0);
        for demand in demands {
            if !in_period.contains(crate::china::day_of(demand.filed_at).as_str()) {
                continue;
            }
            let channel = demand_channel(demand);
            let (city, county) = demand_place(demand);
            if !in_scope(&channel, &city) {
                continue;
            }
            let matched = usize::from(is_matched(demand));
            demands_filed += 1;
            demands_matched += matched;
            for tally in [
                per_day
                    .entry(crate::china::day_of(demand.filed_at))
                    .or_default(),
                by_channel.entry(channel).or_default(),
                by_county
                    .entry(county_name(&city, county.as_deref()))
                    .or_default(),
                by_city.entry(city).or_default(),
            ] {
                tally.filed += 1;
                tally.matched += matched;
            }
        }

        let per_day = days
            .iter()
            .map(|day| {
                let tally = per_day.remove(day).unwrap_or_default();
                Row {
                    name: day.clone(),
                    counts: tally.counts,
                    demands_filed: tally.filed,
                    demands_matched: tally.matched,
                }
            })
            .collect();
        Self {
            period,
            scope,
            totals,
            users: users.len(),
            demands_filed,
            demands_matched,
            per_day,
            by_channel: rows(by_channel),
            by_city: rows(by_city),
            by_county: rows(by_county),
            top_questions: top(answered),
            top_unanswered: top(unanswered),
        }
    }

    /// Reads the period from the engine's stores and builds the report:
    /// days through [`day_tallies`], ratings and demands live.
    pub async fn gather(
        engine: &crate::Engine,
        period: Period,
        scope: Scope,
    ) -> Result<Self, ReportError> {
        let store = |e: &dyn std::fmt::Display| ReportError::Store(e.to_string());
        let log = engine.turns();
        let days = period.days();
        let tallies = day_tallies(log, &days).await?;
        let rated = log.rated_on_days(days).await.map_err(|e| store(&e))?;
        let demands = engine
            .listings()
            .demands(None, None)
            .await
            .map_err(|e| store(&e))?;
        let answered: BTreeSet<&str> = tallies
            .iter()
            .flat_map(|tally| &tally.cells)
            .flat_map(|cell| cell.entries.keys().map(String::as_str))
            .collect();
        let ids = answered
            .into_iter()
            .filter_map(|id| uuid::Uuid::parse_str(id).ok())
            .map(kb::entry::EntryId)
            .collect();
        let entry_questions: HashMap<String, String> = engine
            .kb()
            .get_many(ids)
            .await
            .map_err(|e| store(&e))?
            .into_iter()
            .map(|entry| (entry.id.to_string(), entry.content.question))
            .collect();
        tokio::task::spawn_blocking(move || {
            Self::build(
                period,
                scope,
                &tallies,
                &rated,
                &demands,
                &entry_questions,
                Regions::builtin(),
            )
        })
        .await
        .map_err(|e| ReportError::Store(e.to_string()))
    }

    /// The whole period and scope as one row, named by the period.
    fn total_row(&self) -> Row {
        Row {
            name: self.period.label(),
            counts: self.totals,
            demands_filed: self.demands_filed,
            demands_matched: self.demands_matched,
        }
    }

    /// The report as CSV: one line per slice (`section`: total, day,
    /// channel, city, county), rates as fractions with three decimals.
    pub fn csv(&self) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let header = [
            "section",
            "name",
            "questions",
            "answered",
            "suggested",
            "abstained",
            "answered_rate",
            "abstained_rate",
            "rated_up",
            "rated_down",
            "satisfaction",
            "demands_filed",
            "demands_matched",
        ];
        let rate = |value: Option<f64>| value.map(|v| format!("{v:.3}")).unwrap_or_default();
        let mut lines = vec![header.map(str::to_owned).to_vec()];
        let total = self.total_row();
        let sections = [
            ("total", std::slice::from_ref(&total)),
            ("day", self.per_day.as_slice()),
            ("channel", self.by_channel.as_slice()),
            ("city", self.by_city.as_slice()),
            ("county", self.by_county.as_slice()),
        ];
        for (section, rows) in sections {
            for row in rows {
                let c = &row.counts;
                lines.push(vec![
                    section.to_owned(),
                    row.name.clone(),
                    c.questions.to_string(),
                    c.answered.to_string(),
                    c.suggested.to_string(),
                    c.abstained.to_string(),
                    rate(c.answered_rate()),
                    rate(c.abstained_rate()),
                    c.rated_up.to_string(),
                    c.rated_down.to_string(),
                    rate(c.satisfaction()),
                    row.demands_filed.to_string(),
                    row.demands_matched.to_string(),
                ]);
            }
        }
        for line in lines {
            // Writing to a Vec cannot fail.
            let _ = writer.write_record(&line);
        }
        match writer.into_inner() {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => String::new(),
        }
    }

    /// The context the report templates (`report.md`, `reports.html`) get:
    /// the report, rates as percentages, and table cells made safe for
    /// Markdown.
    pub fn template_context(&self) -> serde_json::Value {
        let percent = |value: Option<f64>| {
            value.map_or_else(|| "—".to_owned(), |v| format!("{:.1}%", v * 100.0))
        };
        let row = |row: &Row| {
            let c = &row.counts;
            serde_json::json!({
                "name": markdown_cell(&row.name),
                "plain": row.name,
                "questions": c.questions,
                "answered": c.answered,
                "suggested": c.suggested,
                "abstained": c.abstained,
                "answered_rate": percent(c.answered_rate()),
                "suggested_rate": percent(c.suggested_rate()),
                "abstained_rate": percent(c.abstained_rate()),
                "satisfaction": percent(c.satisfaction()),
                "rated": c.rated_up + c.rated_down,
                "demands_filed": row.demands_filed,
                "demands_matched": row.demands_matched,
            })
        };
        let ranked = |ranked: &Ranked| {
            serde_json::json!({
                "text": markdown_cell(&ranked.text),
                "plain": ranked.text,
                "count": ranked.count,
                "entry_id": ranked.entry_id,
            })
        };
        let total = self.total_row();
        serde_json::json!({
            "period": self.period.label(),
            "from": self.period.from_text(),
            "to": self.period.to_text(),
            "channel": self.scope.channel,
            "city": self.scope.city,
            "users": self.users,
            "total": row(&total),
            "per_day": self.per_day.iter().map(row).collect::<Vec<_>>(),
            "by_channel": self.by_channel.iter().map(row).collect::<Vec<_>>(),
            "by_city": self.by_city.iter().map(row).collect::<Vec<_>>(),
            "by_county": self.by_county.iter().map(row).collect::<Vec<_>>(),
            "top_questions": self.top_questions.iter().map(ranked).collect::<Vec<_>>(),
            "top_unanswered": self.top_unanswered.iter().map(ranked).collect::<Vec<_>>(),
        })
    }

    /// Questions per day as a stacked bar chart (answered, suggested,
    /// abstained), as an SVG document with its own labels.
    ///
    /// Hand-written rather than drawn with a plotting crate: one chart of
    /// at most [`MAX_DAYS`] rectangles is a few lines of SVG, and a
    /// plotting stack would add minutes to every fresh build.
    pub fn daily_chart_svg(&self) -> String {
        const WIDTH: f64 = 720.0;
        const HEIGHT: f64 = 220.0;
        const LEFT: f64 = 40.0;
        const BOTTOM: f64 = 24.0;
        const TOP_MARGIN: f64 = 12.0;
        let days = self.per_day.len().max(1) as f64;
        let most = self
            .per_day
            .iter()
            .map(|row| row.counts.questions)
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let plot_height = HEIGHT - BOTTOM - TOP_MARGIN;
        let slot = (WIDTH - LEFT) / days;
        let bar = (slot * 0.7).max(1.0);
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="每日提问数：已回答、你是想问、暂无答案" font-size="11" font-family="sans-serif">"#
        );
        svg.push_str(&format!(
            r##"<line x1="{LEFT}" y1="{y}" x2="{WIDTH}" y2="{y}" stroke="#9aa5b1"/><text x="{x}" y="{top}" text-anchor="end">{most}</text><text x="{x}" y="{y}" text-anchor="end">0</text>"##,
            y = HEIGHT - BOTTOM,
            x = LEFT - 4.0,
            top = TOP_MARGIN + 4.0,
        ));
        let colours = [
            ("#0b6e4f", "已回答"),
            ("#f0b429", "你是想问"),
            ("#b44d12", "暂无答案"),
        ];
        let label_every = (self.per_day.len() / 8).max(1);
        for (index, row) in self.per_day.iter().enumerate() {
            let x = LEFT + slot * index as f64 + (slot - bar) / 2.0;
            let mut y = HEIGHT - BOTTOM;
            let parts = [
                row.counts.answered,
                row.counts.suggested,
                row.counts.abstained,
            ];
            for (count, (colour, what)) in parts.into_iter().zip(colours) {
                if count == 0 {
                    continue;
                }
                let height = plot_height * count as f64 / most;
                y -= height;
                svg.push_str(&format!(
                    r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{height:.1}" fill="{colour}"><title>{} {what} {count}</title></rect>"#,
                    xml_text(&row.name)
                ));
            }
            if index % label_every == 0 {
                // Month-day is enough under a bar.
                let short = row.name.get(5..).unwrap_or(&row.name);
                svg.push_str(&format!(
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    x + bar / 2.0,
                    HEIGHT - 8.0,
                    xml_text(short)
                ));
            }
        }
        svg.push_str("</svg>");
        svg
    }
}

/// Escapes text for SVG (XML) content and attributes.
fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A user's words made safe for one Markdown table cell: no line breaks,
/// no column separators, no markup characters that would format it.
fn markdown_cell(text: &str) -> String {
    let mut cell = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' | '\t' => cell.push(' '),
            '|' => cell.push('｜'),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' => {
                cell.push('\\');
                cell.push(c);
            }
            other => cell.push(other),
        }
    }
    cell
}

/// Demands counted per status, for the demand board's header.
pub fn demands_by_status(demands: &[Demand]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for status in DemandStatus::ALL {
        counts.insert(status.as_str(), 0);
    }
    for demand in demands {
        *counts.entry(demand.status.as_str()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(day: &str, channel: &str, kind: &str, region: Option<&str>) -> TurnRecord {
        TurnRecord {
            turn_id: crate::turns::TurnLog::new_turn_id(),
            at: 0,
            day: day.into(),
            channel: channel.into(),
            user: format!("{channel}:u1"),
            message_kind: "text".into(),
            text: "洋芋叶子发黑".into(),
            resolved_query: None,
            route: "science_question".into(),
            route_confidence: 1.0,
            reply_kind: kind.into(),
            entry_ids: if kind == "answer" {
                vec!["e1".into()]
            } else {
                Vec::new()
            },
            confidence: 0.9,
            latency_ms: 10.0,
            region: region.map(str::to_owned),
            notify: false,
            feedback: None,
        }
    }

    fn period(from: &str, to: &str) -> Period {
        let (Ok(from), Ok(to)) = (parse_day(from), parse_day(to)) else {
            panic!("test days parse");
        };
        let Ok(period) = Period::new(from, to) else {
            panic!("test period is valid");
        };
        period
    }

    #[test]
    fn iso_weeks_run_monday_to_sunday() {
        let Ok(week) = Period::iso_week("2026-W47") else {
            panic!("parses");
        };
        assert_eq!(week.from_text(), "2026-11-16");
        assert_eq!(week.to_text(), "2026-11-22");
        assert_eq!(week.days().len(), 7);
        assert!(week.label().starts_with("2026-W47"));
        // Week 1 of 2026 starts in 2025.
        let Ok(first) = Period::iso_week("2026-W01") else {
            panic!("parses");
        };
        assert_eq!(first.from_text(), "2025-12-29");
        for bad in ["2026-47", "2026-W54", "W47", "2026-Wx", ""] {
            assert!(Period::iso_week(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_request_selects_a_week_a_range_or_this_week() {
        let week = Period::select(Some("2026-W47"), Some("2026-01-01"), None);
        assert_eq!(
            week.ok().map(|p| p.from_text()),
            Some("2026-11-16".to_owned())
        );
        let range = Period::select(Some(" "), Some("2026-11-01"), Some("2026-11-03"));
        assert_eq!(range.ok().map(|p| p.days().len()), Some(3));
        let now = Period::select(None, Some(""), None);
        assert_eq!(now.ok(), Some(Period::week_of(crate::china::today())));
        assert!(
            Period::select(None, Some("2026-11-01"), None).is_err(),
            "no end"
        );
        let Ok(scope) = Scope::named(Some("wechat"), Some("广元")) else {
            panic!("a channel and a short city name");
        };
        assert_eq!(scope.city.as_deref(), Some("广元市"));
        assert!(Scope::named(Some("fax"), None).is_err());
        assert!(Scope::named(None, Some("北京")).is_err());
    }

    #[test]
    fn periods_must_run_forward_and_stay_within_a_year() {
        let (Ok(a), Ok(b)) = (parse_day("2026-11-20"), parse_day("2026-11-10")) else {
            panic!("parse");
        };
        assert!(Period::new(a, b).is_err());
        let Ok(far) = parse_day("2028-01-01") else {
            panic!("parse");
        };
        assert!(Period::new(b, far).is_err());
        assert!(parse_day("2026-13-01").is_err());
        assert!(parse_day("昨天").is_err());
    }

    #[test]
    fn only_questions_inside_the_period_and_scope_count() {
        let turns = vec![
            turn(
                "2026-11-16",
                "wechat",
                "answer",
                Some("四川省广元市苍溪县陵江镇"),
            ),
            turn("2026-11-16", "wechat", "abstain", Some("广元市")),
            turn("2026-11-17", "web", "suggest", None),
            turn("2026-11-17", "web", "greeting", None),
            // "详细" after an answer: the same question, not a new one.
            TurnRecord {
                route: "detail".into(),
                ..turn("2026-11-17", "web", "answer", None)
            },
            turn("2026-11-23", "web", "answer", None),
        ];
        let names = HashMap::from([("e1".to_owned(), "马铃薯晚疫病怎么防治".to_owned())]);
        let report = Report::from_turns(
            period("2026-11-16", "2026-11-22"),
            Scope::default(),
            &turns,
            &[],
            &names,
            Regions::builtin(),
        );
        assert_eq!(report.totals.questions, 3);
        assert_eq!(
            (
                report.totals.answered,
                report.totals.suggested,
                report.totals.abstained
            ),
            (1, 1, 1)
        );
        assert_eq!(report.per_day.len(), 7);
        assert_eq!(report.per_day[0].counts.questions, 2);
        assert_eq!(report.by_city[0].name, "广元市");
        assert_eq!(report.by_city[0].counts.questions, 2);
        assert!(report.by_county.iter().any(|r| r.name == "广元市 苍溪县"));
        assert_eq!(report.top_questions[0].text, "马铃薯晚疫病怎么防治");
        assert_eq!(report.top_unanswered[0].count, 1);

        let wechat_only = Report::from_turns(
            period("2026-11-16", "2026-11-22"),
            Scope {
                channel: Some("web".into()),
                city: None,
            },
            &turns,
            &[],
            &names,
            Regions::builtin(),
        );
        assert_eq!(wechat_only.totals.questions, 1);
        assert_eq!(wechat_only.by_city[0].name, UNKNOWN_REGION);
    }

    #[test]
    fn csv_has_one_line_per_slice_and_the_chart_one_bar_stack_per_day() {
        let turns = vec![turn("2026-11-16", "web", "answer", None)];
        let report = Report::from_turns(
            period("2026-11-16", "2026-11-18"),
            Scope::default(),
            &turns,
            &[],
            &HashMap::new(),
            Regions::builtin(),
        );
        let csv = report.csv();
        let lines: Vec<&str> = csv.lines().collect();
        // Header, total, 3 days, 1 channel, 1 city, 1 county.
        assert_eq!(lines.len(), 8, "{csv}");
        assert!(lines[1].starts_with("total,"));
        let svg = report.daily_chart_svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 1);
    }

    #[test]
    fn markdown_cells_cannot_break_a_table_or_format_text() {
        assert_eq!(markdown_cell("a|b\nc"), "a｜b c");
        assert_eq!(markdown_cell("**粗**"), "\\*\\*粗\\*\\*");
        assert_eq!(markdown_cell("<script>"), "\\<script\\>");
    }
}
