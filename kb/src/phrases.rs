//! Amounts, deadlines and phone numbers as people write them in chat:
//! "20万左右", "三五万", "5到10万", "三个月内", "明年3月前", "2027年上半年",
//! "138-0012-3456".
//!
//! Chinese numerals are read by the `chinese-number` crate; what it does
//! not know (ranges written as adjacent digits, 两三万; qualifiers such as
//! 以内, 左右, 以上; relative dates) is handled here.

use std::sync::LazyLock;

use chinese_number::{ChineseCountMethod, ChineseToNumber};
use regex::Regex;
use time::{Date, Duration, Month};

use crate::listing::{Budget, Deadline};

/// What a text says about a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetReading {
    /// The budget.
    pub budget: Budget,
    /// Where in the text it was said (byte range), so the rest of the text
    /// can be read for other things.
    pub span: (usize, usize),
}

/// What a text says about a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadlineReading {
    /// A deadline, possibly only in words ("越快越好").
    By(Deadline),
    /// The user says there is none ("不急，没有具体期限").
    None,
}

/// A phone number found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneReading {
    /// A well-formed mobile (11 digits) or landline with area code.
    Valid(String),
    /// Digits that look like a phone number but are not one (a digit too
    /// many or too few).
    Malformed(String),
}

static AMOUNT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        (?P<num>\d+(?:\.\d+)?|[零〇一二两三四五六七八九十百千]+)
        \s*(?P<unit>百万|千万|万|千|百)?
        \s*(?P<yuan>元|块钱|块|人民币)?",
    )
    .expect("valid regex")
});

static CONNECTOR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*(?:到|至|-|~|～|—|－)\s*$").expect("valid regex"));

/// Units that make a number something other than money.
const NOT_MONEY: &[&str] = &[
    "亩", "株", "头", "只", "吨", "斤", "公斤", "平方", "件", "个", "台", "人", "次", "尾", "羽",
    "天", "年", "月", "周", "号", "日", "%", "℃", "度", "米", "毫", "克", "条", "家", "多", "倍",
];

fn digit_value(c: char) -> Option<u64> {
    match c {
        '零' | '〇' => Some(0),
        '一' => Some(1),
        '二' | '两' => Some(2),
        '三' => Some(3),
        '四' => Some(4),
        '五' => Some(5),
        '六' => Some(6),
        '七' => Some(7),
        '八' => Some(8),
        '九' => Some(9),
        _ => None,
    }
}

/// A number in Arabic or Chinese numerals; two adjacent Chinese digits in
/// rising order (两三, 三五) are the idiom for a range and give both ends.
fn read_number(text: &str) -> Option<(f64, Option<f64>)> {
    if let Ok(value) = text.parse::<f64>() {
        return Some((value, None));
    }
    let chars: Vec<char> = text.chars().collect();
    if let [first, second] = chars.as_slice()
        && let (Some(low), Some(high)) = (digit_value(*first), digit_value(*second))
        && low > 0
        && low < high
    {
        return Some((low as f64, Some(high as f64)));
    }
    let value: u64 = text.to_number(ChineseCountMethod::TenThousand).ok()?;
    Some((value as f64, None))
}

fn is_han(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

fn unit_value(unit: Option<&str>) -> f64 {
    match unit {
        Some("千万") => 10_000_000.0,
        Some("百万") => 1_000_000.0,
        Some("万") => 10_000.0,
        Some("千") => 1_000.0,
        Some("百") => 100.0,
        _ => 1.0,
    }
}

#[derive(Debug, Clone, Copy)]
struct Amount {
    low: f64,
    high: Option<f64>,
    unit: Option<f64>,
    money_mark: bool,
    start: usize,
    end: usize,
}

fn amounts(text: &str) -> Vec<Amount> {
    let mut found = Vec::new();
    for captures in AMOUNT.captures_iter(text) {
        let Some(whole) = captures.get(0) else {
            continue;
        };
        let Some(num) = captures.name("num") else {
            continue;
        };
        // "十" alone inside words (十分, 十足) is not an amount; a lone 十
        // only counts with a unit.
        let unit = captures.name("unit").map(|u| u.as_str());
        let yuan = captures.name("yuan").is_some();
        let after = &text[whole.end()..];
        if NOT_MONEY.iter().any(|u| after.trim_start().starts_with(u)) && !yuan {
            continue;
        }
        // A bare 元 inside a word is not money: 三元正极, 二元醇.
        let bare_yuan = unit.is_none() && captures.name("yuan").is_some_and(|y| y.as_str() == "元");
        if bare_yuan
            && after
                .chars()
                .next()
                .is_some_and(|c| is_han(c) && !"左右以内上下钱起整".contains(c))
        {
            continue;
        }
        let Some((low, high)) = read_number(num.as_str()) else {
            continue;
        };
        found.push(Amount {
            low,
            high,
            unit: unit.map(|u| unit_value(Some(u))),
            money_mark: unit.is_some() || yuan,
            start: whole.start(),
            end: whole.end(),
        });
    }
    found
}

const BUDGET_CUES: &[&str] = &["预算", "经费", "资金", "费用", "投入", "出资", "花", "报酬"];
const NEGOTIABLE: &[&str] = &[
    "面议",
    "面谈",
    "商议",
    "协商",
    "待定",
    "看情况",
    "不确定",
    "再说",
];
const AT_MOST: &[&str] = &["以内", "之内", "以下", "内", "封顶"];
const AT_MOST_BEFORE: &[&str] = &["不超过", "最多", "顶多", "不到"];
const AT_LEAST: &[&str] = &["以上", "起", "多"];
const AT_LEAST_BEFORE: &[&str] = &["不少于", "至少", "最少"];
const MAY_GROW: &[&str] = &["追加", "可以加", "可加", "再加", "可谈"];

fn to_yuan(value: f64) -> u64 {
    value.round().max(0.0) as u64
}

/// Reads a budget. `asked` says the user is answering "预算多少": then a
/// bare amount counts; otherwise an amount needs a money unit (万, 元) or a
/// cue word (预算) so "800亩" or "三个月" are never read as money.
pub fn read_budget(text: &str, asked: bool) -> Option<BudgetReading> {
    let found = amounts(text);
    let cued = BUDGET_CUES.iter().any(|cue| text.contains(cue));
    // An amount that says it is money (a unit, 元, a cue word, the start of
    // a range) wins; only when there is none does a bare number count, and
    // only as the answer to "预算多少" ("三五万吧" has a unit, "我们算了一下，
    // 大概20万" has one after a bare 一).
    let says_money = |i: usize, amount: &Amount| {
        let before = &text[..amount.start];
        let cue_near = BUDGET_CUES.iter().any(|cue| {
            before.ends_with(cue)
                || before
                    .trim_end_matches(['：', ':', '是', ' '])
                    .ends_with(cue)
        });
        let starts_range = found.get(i + 1).is_some_and(|next| {
            next.money_mark && CONNECTOR.is_match(&text[amount.end..next.start])
        });
        amount.money_mark || cue_near || starts_range || (cued && amount.unit.is_some())
    };
    let index = found
        .iter()
        .enumerate()
        .position(|(i, amount)| says_money(i, amount))
        .or_else(|| (asked && !found.is_empty() && found.len() <= 2).then_some(0));
    let Some(index) = index else {
        let negotiable = NEGOTIABLE.iter().any(|w| text.contains(w));
        return negotiable.then(|| {
            let position = NEGOTIABLE
                .iter()
                .filter_map(|w| text.find(w).map(|p| (p, p + w.len())))
                .min()
                .unwrap_or((0, 0));
            BudgetReading {
                budget: Budget {
                    min_yuan: None,
                    max_yuan: None,
                    negotiable: true,
                },
                span: position,
            }
        });
    };
    let first = found[index];
    let range_end = found
        .get(index + 1)
        .filter(|next| CONNECTOR.is_match(&text[first.end..next.start]));
    let (low, high, end) = match range_end {
        Some(second) => {
            // The unit of the second end carries back: 5到10万 is 5万–10万.
            let unit = second.unit.or(first.unit).unwrap_or(1.0);
            let first_unit = first.unit.unwrap_or(unit);
            (
                first.low * first_unit,
                Some(second.high.unwrap_or(second.low) * unit),
                second.end,
            )
        }
        None => {
            let unit = first.unit.unwrap_or(1.0);
            (first.low * unit, first.high.map(|h| h * unit), first.end)
        }
    };
    let before = &text[..first.start];
    let after = &text[end..];
    let after_trimmed = after.trim_start();
    let mut budget = Budget::default();
    if AT_MOST.iter().any(|w| after_trimmed.starts_with(w))
        || AT_MOST_BEFORE.iter().any(|w| before.ends_with(w))
    {
        budget.max_yuan = Some(to_yuan(high.unwrap_or(low)));
    } else if AT_LEAST.iter().any(|w| after_trimmed.starts_with(w))
        || AT_LEAST_BEFORE.iter().any(|w| before.ends_with(w))
    {
        budget.min_yuan = Some(to_yuan(low));
    } else {
        budget.min_yuan = Some(to_yuan(low));
        budget.max_yuan = Some(to_yuan(high.unwrap_or(low)));
    }
    budget.negotiable = MAY_GROW.iter().any(|w| after.contains(w));
    let qualifier_len = [AT_MOST, AT_LEAST, &["左右", "上下"]]
        .iter()
        .flat_map(|words| words.iter())
        .find(|w| after_trimmed.starts_with(**w))
        .map_or(0, |w| w.len() + (after.len() - after_trimmed.len()));
    Some(BudgetReading {
        budget,
        span: (first.start, end + qualifier_len),
    })
}

fn last_day(year: i32, month: Month) -> Option<Date> {
    let days = time::util::days_in_month(month, year);
    Date::from_calendar_date(year, month, days).ok()
}

fn month_of(number: u32) -> Option<Month> {
    u8::try_from(number)
        .ok()
        .and_then(|n| Month::try_from(n).ok())
}

/// Deadlines further out than this are not deadlines ("400000000年内").
const MAX_MONTHS_AHEAD: u32 = 100 * 12;

fn add_months(today: Date, months: u32) -> Option<Date> {
    if months > MAX_MONTHS_AHEAD {
        return None;
    }
    let total = today.year() * 12 + (today.month() as i32 - 1) + months as i32;
    let year = total.div_euclid(12);
    let month = month_of((total.rem_euclid(12) + 1) as u32)?;
    let day = today.day().min(time::util::days_in_month(month, year));
    Date::from_calendar_date(year, month, day).ok()
}

/// A small count in Arabic or Chinese numerals (一..九十九, 半 = ½ is left
/// to the callers that accept it).
fn small_number(text: &str) -> Option<u32> {
    if let Ok(value) = text.parse::<u32>() {
        return Some(value);
    }
    let chars: Vec<char> = text.chars().collect();
    // 三四个月: the idiom for "three or four": the later end counts.
    if let [first, second] = chars.as_slice()
        && let (Some(low), Some(high)) = (digit_value(*first), digit_value(*second))
        && low > 0
        && low < high
    {
        return Some(high as u32);
    }
    text.to_number(ChineseCountMethod::TenThousand).ok()
}

static WITHIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?P<n>\d+|[一二两三四五六七八九十]+|半)\s*(?P<unit>个月|个星期|个礼拜|星期|礼拜|周|天|年)(?:之内|以内|内)?")
        .expect("valid regex")
});
static CALENDAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        (?P<year>\d{4}年|今年|明年|后年)?
        (?:
            (?P<half>上半年|下半年)
          | (?P<month>\d{1,2}|[一二三四五六七八九十]{1,3})月份?(?:(?P<day>\d{1,2})[日号])?(?P<monthend>底|末|中旬|下旬|初|上旬)?
          | (?P<yearend>年底|年末|年初|年中|底|末)
          | (?P<season>春天|夏天|秋天|冬天|春季|夏季|秋季|冬季)
        )?
        (?P<before>之前|以前|前)?",
    )
    .expect("valid regex")
});
const NO_DEADLINE: &[&str] = &[
    "不急",
    "没有期限",
    "没期限",
    "无期限",
    "不限",
    "没有具体",
    "没得具体",
    "没啥期限",
    "都可以",
    "随时",
];
const URGENT: &[&str] = &[
    "越快越好",
    "尽快",
    "马上",
    "越早越好",
    "急",
    "下个月",
    "这个月",
    "月底",
];

fn season_months(season: &str) -> (u32, u32) {
    match season.chars().next() {
        Some('春') => (3, 5),
        Some('夏') => (6, 8),
        Some('秋') => (9, 11),
        _ => (12, 2),
    }
}

/// Reads a deadline relative to `today`. "前" after a month or a day means
/// by the end of it (12月31日前); after a bare year or a season it means
/// before it starts (2028年前, 夏天之前).
///
/// `asked` says the user is answering "什么时候要": then "半年", "越快越好"
/// or "不急" count. Otherwise only unmistakable deadlines do ("三个月内",
/// "明年3月前"), so "放三四个月就坏" or "去年12月投产" are not read as one.
pub fn read_deadline(text: &str, today: Date, asked: bool) -> Option<DeadlineReading> {
    for found in CALENDAR.captures_iter(text) {
        let whole = found.get(0)?;
        if whole.as_str().is_empty() {
            continue;
        }
        let has_date_part = found.name("half").is_some()
            || found.name("month").is_some()
            || found.name("yearend").is_some()
            || found.name("season").is_some();
        let year_text = found.name("year").map(|y| y.as_str());
        if !has_date_part && !year_text.is_some_and(|y| y.ends_with('年') && y.len() > 6) {
            continue;
        }
        // A year is four digits of their own (not the tail of 400000000年)
        // and near enough to be a deadline.
        if let Some(year) = found.name("year")
            && text[..year.start()].ends_with(|c: char| c.is_ascii_digit())
        {
            continue;
        }
        let year = match year_text {
            Some("今年") | None => today.year(),
            Some("明年") => today.year() + 1,
            Some("后年") => today.year() + 2,
            Some(digits) => match digits.trim_end_matches('年').parse::<i32>() {
                Ok(year) if (today.year() - 1..=today.year() + 100).contains(&year) => year,
                _ => continue,
            },
        };
        let before = found.name("before").is_some();
        let numeric_year = year_text.is_some_and(|y| y.len() > 6);
        // 底 or 末 right after a year: 2027年底. Alone it is part of a word (火锅底料).
        if found
            .name("yearend")
            .is_some_and(|y| !y.as_str().starts_with('年'))
            && !numeric_year
        {
            continue;
        }
        let unmistakable = before
            || found.name("monthend").is_some()
            || found.name("yearend").is_some()
            || found.name("half").is_some()
            || (numeric_year && found.name("month").is_some());
        if !asked && !unmistakable {
            continue;
        }
        let by = if let Some(half) = found.name("half") {
            if half.as_str() == "上半年" {
                last_day(year, Month::June)
            } else {
                last_day(year, Month::December)
            }
        } else if let Some(month) = found.name("month") {
            let month_number = small_number(month.as_str())?;
            let month = month_of(month_number)?;
            // "3月" without a year: the next March to come.
            let year = if year_text.is_none() && month_number < u32::from(u8::from(today.month())) {
                year + 1
            } else {
                year
            };
            match found.name("day") {
                Some(day) => Date::from_calendar_date(year, month, day.as_str().parse().ok()?).ok(),
                None => last_day(year, month),
            }
        } else if let Some(point) = found.name("yearend") {
            match point.as_str() {
                "年初" => last_day(year, Month::February),
                "年中" => last_day(year, Month::June),
                _ => last_day(year, Month::December),
            }
        } else if let Some(season) = found.name("season") {
            let (first, last) = season_months(season.as_str());
            let season_year = if year_text.is_none()
                && last < u32::from(u8::from(today.month()))
                && first <= last
            {
                year + 1
            } else {
                year
            };
            if before {
                let start = Date::from_calendar_date(season_year, month_of(first)?, 1).ok()?;
                start.previous_day()
            } else {
                last_day(season_year + i32::from(first > last), month_of(last)?)
            }
        } else if before {
            last_day(year - 1, Month::December)
        } else {
            last_day(year, Month::December)
        };
        return Some(DeadlineReading::By(Deadline {
            text: whole.as_str().to_owned(),
            by,
        }));
    }
    for found in WITHIN.captures_iter(text) {
        let whole = found.get(0)?;
        let bounded = ["内", "之内", "以内"]
            .iter()
            .any(|w| whole.as_str().ends_with(w));
        if !asked && !bounded {
            continue;
        }
        let count = found.name("n")?.as_str();
        let unit = found.name("unit")?.as_str();
        let by = if count == "半" {
            match unit {
                "年" => add_months(today, 6),
                "个月" => today.checked_add(Duration::days(15)),
                _ => None,
            }
        } else {
            let n = small_number(count)?;
            match unit {
                "个月" => add_months(today, n),
                "年" => add_months(today, n.checked_mul(12)?),
                "天" => today.checked_add(Duration::days(i64::from(n))),
                _ => today.checked_add(Duration::weeks(i64::from(n))),
            }
        };
        return Some(DeadlineReading::By(Deadline {
            text: whole.as_str().to_owned(),
            by,
        }));
    }
    if !asked {
        return None;
    }
    if NO_DEADLINE.iter().any(|w| text.contains(w)) {
        return Some(DeadlineReading::None);
    }
    let urgent = URGENT.iter().find(|w| text.contains(**w))?;
    let by = match *urgent {
        "下个月" => add_months(today, 1).and_then(|d| last_day(d.year(), d.month())),
        "这个月" | "月底" => last_day(today.year(), today.month()),
        _ => None,
    };
    Some(DeadlineReading::By(Deadline {
        text: (*urgent).to_owned(),
        by,
    }))
}

static PHONE_LIKE: LazyLock<Regex> = LazyLock::new(|| {
    // Digit runs with the separators people type inside phone numbers.
    Regex::new(r"\d[\d\s\-－]{5,}\d").expect("valid regex")
});

/// Phone numbers in a text, well-formed or not, in order.
pub fn read_phones(text: &str) -> Vec<PhoneReading> {
    let mut phones = Vec::new();
    for found in PHONE_LIKE.find_iter(text) {
        let digits: String = found
            .as_str()
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let valid_mobile = digits.len() == 11
            && digits.starts_with('1')
            && digits
                .as_bytes()
                .get(1)
                .is_some_and(|d| (b'3'..=b'9').contains(d));
        let valid_landline = digits.starts_with('0') && (10..=12).contains(&digits.len());
        if valid_mobile || valid_landline {
            phones.push(PhoneReading::Valid(digits));
        } else if digits.starts_with('1') && (9..=13).contains(&digits.len()) {
            phones.push(PhoneReading::Malformed(digits));
        }
    }
    phones
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    /// Minimum, maximum, negotiable.
    type Read = (Option<u64>, Option<u64>, bool);

    fn budget(text: &str, asked: bool) -> Option<Read> {
        read_budget(text, asked)
            .map(|r| (r.budget.min_yuan, r.budget.max_yuan, r.budget.negotiable))
    }

    #[test]
    fn budgets_are_read_in_every_usual_form() {
        let cases: &[(&str, bool, Option<Read>)] = &[
            (
                "预算20万左右，三个月内解决",
                false,
                Some((Some(200_000), Some(200_000), false)),
            ),
            (
                "二十万左右",
                true,
                Some((Some(200_000), Some(200_000), false)),
            ),
            ("50万以内", true, Some((None, Some(500_000), false))),
            ("5到10万", true, Some((Some(50_000), Some(100_000), false))),
            (
                "一百万",
                true,
                Some((Some(1_000_000), Some(1_000_000), false)),
            ),
            (
                "预算80万到100万",
                false,
                Some((Some(800_000), Some(1_000_000), false)),
            ),
            ("三五万吧", true, Some((Some(30_000), Some(50_000), false))),
            (
                "莫得好多钱，两三万",
                true,
                Some((Some(20_000), Some(30_000), false)),
            ),
            (
                "十万以上，效果好可以追加",
                true,
                Some((Some(100_000), None, true)),
            ),
            ("8万块钱", true, Some((Some(80_000), Some(80_000), false))),
            (
                "预算两百万左右",
                true,
                Some((Some(2_000_000), Some(2_000_000), false)),
            ),
            (
                "30到50万",
                true,
                Some((Some(300_000), Some(500_000), false)),
            ),
            (
                "十五万左右",
                true,
                Some((Some(150_000), Some(150_000), false)),
            ),
            ("面议", true, Some((None, None, true))),
            (
                "我们算了一下，大概20万",
                true,
                Some((Some(200_000), Some(200_000), false)),
            ),
            ("合作社800亩红心猕猴桃", false, None),
            ("放三四个月就有哈喇味", false, None),
            ("良品率只有70%左右", false, None),
            ("我们想开发高镍三元正极材料", false, None),
        ];
        for (text, asked, expected) in cases {
            assert_eq!(budget(text, *asked), *expected, "{text}");
        }
    }

    fn deadline(text: &str) -> Option<(String, Option<Date>)> {
        match read_deadline(text, date!(2026 - 12 - 01), true)? {
            DeadlineReading::By(d) => Some((d.text, d.by)),
            DeadlineReading::None => Some(("<none>".into(), None)),
        }
    }

    #[test]
    fn deadlines_are_read_relative_to_today() {
        let cases: &[(&str, &str, Option<Date>)] = &[
            ("三个月内解决", "三个月内", Some(date!(2027 - 03 - 01))),
            ("明年3月前", "明年3月前", Some(date!(2027 - 03 - 31))),
            ("年底前", "年底前", Some(date!(2026 - 12 - 31))),
            ("2027年6月底", "2027年6月底", Some(date!(2027 - 06 - 30))),
            ("两年内", "两年内", Some(date!(2028 - 12 - 01))),
            ("半年内", "半年内", Some(date!(2027 - 06 - 01))),
            ("2027年上半年", "2027年上半年", Some(date!(2027 - 06 - 30))),
            ("明年夏天之前", "明年夏天之前", Some(date!(2027 - 05 - 31))),
            ("2028年前", "2028年前", Some(date!(2027 - 12 - 31))),
            (
                "2026年12月31日前",
                "2026年12月31日前",
                Some(date!(2026 - 12 - 31)),
            ),
            ("一年内", "一年内", Some(date!(2027 - 12 - 01))),
            ("不急，没得具体期限", "<none>", None),
            ("越快越好", "越快越好", None),
        ];
        for (text, words, by) in cases {
            assert_eq!(deadline(text), Some(((*words).to_owned(), *by)), "{text}");
        }
        assert_eq!(deadline("良品率只有70%左右"), None);
        let unasked = |text| read_deadline(text, date!(2026 - 12 - 01), false);
        assert_eq!(unasked("放三四个月就有哈喇味"), None);
        assert_eq!(unasked("去年12月投产以后"), None);
        assert_eq!(unasked("这两年溃疡病越来越重"), None);
        assert_eq!(unasked("我们茶园今年夏天遭干旱"), None);
        assert_eq!(unasked("做火锅底料的"), None);
        // Absurd counts are no deadline, and never a panic.
        for absurd in ["400000000年内", "2147480000个月内", "99999999999天内"] {
            let read = read_deadline(absurd, date!(2026 - 12 - 01), true);
            assert!(
                matches!(
                    read,
                    Some(DeadlineReading::By(Deadline { by: None, .. })) | None
                ),
                "{absurd}: {read:?}"
            );
        }
        assert!(unasked("预算20万左右，三个月内解决").is_some());
    }

    #[test]
    fn phones_are_found_and_malformed_ones_flagged() {
        assert_eq!(
            read_phones("张工 13800012345"),
            vec![PhoneReading::Valid("13800012345".into())]
        );
        assert_eq!(
            read_phones("白经理 13800-0123-48"),
            vec![PhoneReading::Valid("13800012348".into())]
        );
        assert_eq!(
            read_phones("赵工 1380001234"),
            vec![PhoneReading::Malformed("1380001234".into())]
        );
        assert_eq!(
            read_phones("李社长 138000456789"),
            vec![PhoneReading::Malformed("138000456789".into())]
        );
        assert_eq!(
            read_phones("座机 028-87654321"),
            vec![PhoneReading::Valid("02887654321".into())]
        );
        assert!(read_phones("预算20万").is_empty());
    }

    proptest::proptest! {
        /// Any range written "A到B万" reads back as A万–B万, and any single
        /// amount "A万左右" as A万 at both ends.
        #[test]
        fn written_ranges_read_back(low in 1u64..500, extra in 0u64..500) {
            let high = low + extra;
            let range = read_budget(&format!("预算{low}到{high}万"), false).map(|r| r.budget);
            proptest::prop_assert_eq!(range.and_then(|b| b.min_yuan), Some(low * 10_000));
            proptest::prop_assert_eq!(range.and_then(|b| b.max_yuan), Some(high * 10_000));
            let point = read_budget(&format!("{low}万左右"), true).map(|r| r.budget);
            proptest::prop_assert_eq!(point.and_then(|b| b.min_yuan), point.and_then(|b| b.max_yuan));
        }

        /// A mobile number anywhere in a text never survives masking.
        #[test]
        fn masking_hides_every_mobile(prefix in "[\\p{Han}a-z ]{0,12}", tail in 0u64..100_000_000, suffix in "[\\p{Han}a-z ]{0,12}") {
            let phone = format!("138{tail:08}");
            let masked = crate::listing::mask_phones(&format!("{prefix}{phone}{suffix}"));
            proptest::prop_assert!(!masked.contains(&phone), "{}", masked);
        }
    }
}
