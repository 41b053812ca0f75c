//! The filing conversation: a technical demand (科技需求) or a capability
//! offer (科技所能) described in chat becomes a listing, like a Rasa form.
//!
//! The first message is read for everything it already says (field,
//! budget, deadline, region, organisation, contact); then the form asks
//! for what is missing, one question at a time, reading every answer for
//! any slot (people answer "预算30万，半年内要，我们在绵阳" to a question
//! about the budget), accepting corrections ("预算改成50万") and "取消" at
//! any point, and shows a summary to confirm before filing.
//!
//! This module is pure: [`Form`] is plain data kept in the session (so a
//! form survives a restart or a switch between instances), and each step
//! returns a [`Step`] the engine renders through templates. Nothing here
//! does IO.

use kb::listing::{Budget, CapabilityContent, Contact, Deadline, DemandContent};
use kb::phrases::{self, DeadlineReading, PhoneReading};
use kb::region::{Place, Regions};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;
use time::Date;

/// What is being filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormKind {
    /// A technical demand.
    Demand,
    /// A capability offer.
    Capability,
}

/// One thing the form asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// The problem (demands) or the skills (capabilities).
    Problem,
    /// The field or industry.
    Field,
    /// The budget (demands only).
    Budget,
    /// The deadline (demands only).
    Deadline,
    /// The city or county.
    Region,
    /// The organisation.
    Organisation,
    /// Name and phone, asked together.
    Contact,
    /// The phone alone (the name is known).
    Phone,
    /// The name alone (the phone is known).
    Name,
}

impl Slot {
    /// The name used in templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Problem => "problem",
            Self::Field => "field",
            Self::Budget => "budget",
            Self::Deadline => "deadline",
            Self::Region => "region",
            Self::Organisation => "organisation",
            Self::Contact => "contact",
            Self::Phone => "phone",
            Self::Name => "name",
        }
    }
}

/// Why a question is asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// The answer did not say what was asked.
    NotUnderstood,
    /// A province-level answer ("四川") to a question about the city.
    TooBroad,
    /// Digits that are not a phone number.
    BadPhone,
    /// An amount that cannot be a budget (zero, min above max).
    BadAmount,
}

impl Retry {
    /// The name used in templates.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotUnderstood => "not_understood",
            Self::TooBroad => "too_broad",
            Self::BadPhone => "bad_phone",
            Self::BadAmount => "bad_amount",
        }
    }
}

/// What has been gathered so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    /// The problem or skills, in the user's words.
    pub problem: Option<String>,
    /// The outcome wanted, when said.
    pub desired_outcome: Option<String>,
    /// The field.
    pub field: Option<String>,
    /// The budget.
    pub budget: Option<Budget>,
    /// The deadline: `Some(None)` when the user said there is none.
    pub deadline: Option<Option<Deadline>>,
    /// City, full name.
    pub city: Option<String>,
    /// County, when named.
    pub county: Option<String>,
    /// The organisation.
    pub organisation: Option<String>,
    /// Contact name.
    pub contact_name: Option<String>,
    /// Phone, digits.
    pub phone: Option<String>,
}

/// A filing conversation in progress, kept in the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Form {
    /// Identity; the listing filed from this form gets an id derived from
    /// it, so a retried "确认" cannot file twice.
    pub id: String,
    /// What is filed.
    pub kind: FormKind,
    /// What is known.
    pub draft: Draft,
    /// The question last asked, if any.
    pub asking: Option<Slot>,
    /// Whether the summary is shown and waits for "确认".
    pub confirming: bool,
    /// Turns the form has taken, the first message included.
    pub turns: u32,
}

/// What the engine should do after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask for a slot; `retry` says why it is asked again.
    Ask {
        /// The slot.
        slot: Slot,
        /// Why again, if again.
        retry: Option<Retry>,
        /// Whether a correction of another slot was just applied.
        corrected: bool,
    },
    /// Show the summary and wait for "确认"; `changed` after a correction.
    Confirm {
        /// Whether a correction was just applied.
        changed: bool,
    },
    /// The user confirmed: file the listing.
    File,
    /// The user gave up.
    Cancelled,
}

/// The editable vocabulary of the form (`prompts/intake/`).
#[derive(Debug, Clone, Default)]
pub struct IntakeWords {
    fields: Vec<(String, u32, Vec<String>)>,
    cancel: Vec<String>,
    confirm: Vec<String>,
    filler: Vec<String>,
    correction: Vec<String>,
}

impl IntakeWords {
    /// Builds the vocabulary from the tables of `prompts::intake_table`:
    /// `fields.tsv` rows are `field, weight, words`; `words.tsv` rows are
    /// `kind, words`. Rows of the wrong shape are reported.
    pub fn from_tables(fields: &[Vec<String>], words: &[Vec<String>]) -> Result<Self, String> {
        let split = |list: &str| -> Vec<String> {
            list.split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut table = Self::default();
        for row in fields {
            let [field, weight, list] = row.as_slice() else {
                return Err(format!(
                    "fields.tsv: expected field<TAB>weight<TAB>words: {row:?}"
                ));
            };
            let weight = weight
                .parse()
                .map_err(|_| format!("fields.tsv: weight {weight:?} is not a whole number"))?;
            table.fields.push((field.clone(), weight, split(list)));
        }
        for row in words {
            let [kind, list] = row.as_slice() else {
                return Err(format!("words.tsv: expected kind<TAB>words: {row:?}"));
            };
            let target = match kind.as_str() {
                "cancel" => &mut table.cancel,
                "confirm" => &mut table.confirm,
                "filler" => &mut table.filler,
                "correction" => &mut table.correction,
                other => return Err(format!("words.tsv: unknown kind {other:?}")),
            };
            target.extend(split(list));
        }
        // Longest first, so removing fillers takes 我们公司 before 我们.
        table
            .filler
            .sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
        Ok(table)
    }

    /// The shipped vocabulary.
    pub fn builtin() -> Self {
        let fields = prompts::intake_table(None, "fields.tsv").unwrap_or_default();
        let words = prompts::intake_table(None, "words.tsv").unwrap_or_default();
        Self::from_tables(&fields, &words).unwrap_or_default()
    }

    /// The field a text is about, when one field clearly outweighs the others.
    pub fn field_of(&self, text: &str) -> Option<String> {
        let lowered = text.to_lowercase();
        let mut scores: Vec<(String, u32)> = Vec::new();
        for (field, weight, words) in &self.fields {
            let hits = words
                .iter()
                .filter(|w| lowered.contains(&w.to_lowercase()))
                .count() as u32;
            if hits == 0 {
                continue;
            }
            match scores.iter_mut().find(|(f, _)| f == field) {
                Some((_, score)) => *score += hits * weight,
                None => scores.push((field.clone(), hits * weight)),
            }
        }
        scores.sort_by_key(|(_, score)| std::cmp::Reverse(*score));
        match scores.as_slice() {
            [] => None,
            [(_, score), (_, second), ..] if score == second => None,
            [(best, score), ..] if *score >= 2 => Some(best.clone()),
            _ => None,
        }
    }

    /// The fields known, for the question that asks for one.
    pub fn field_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (field, _, _) in &self.fields {
            if !names.contains(field) {
                names.push(field.clone());
            }
        }
        names
    }

    /// Whether the user gives up: a message that starts with a cancel word
    /// ("算了，取消"), or says 取消 outright. A cancel word inside an answer
    /// ("我们算了一下，每亩损失三成") is not one.
    fn is_cancel(&self, text: &str) -> bool {
        let bare = strip_punctuation(text);
        bare.contains("取消") || self.cancel.iter().any(|w| bare.starts_with(w.as_str()))
    }

    fn is_confirm(&self, text: &str) -> bool {
        let bare = strip_punctuation(text);
        self.confirm.contains(&bare)
            || (bare.chars().count() <= 6
                && self
                    .confirm
                    .iter()
                    .any(|w| w.chars().count() >= 2 && bare.starts_with(w.as_str())))
    }

    fn is_correction(&self, text: &str) -> bool {
        self.correction.iter().any(|w| text.contains(w.as_str()))
    }

    /// What a correction changes a slot to: "是德阳不是绵阳" → "是德阳" (what
    /// follows 不是 was wrong), "单位改成宜宾示例有限公司" → "宜宾示例有限公司"
    /// (what follows the last correction word).
    fn corrected_value(&self, text: &str) -> String {
        let mut meant = text.to_owned();
        if let Some(at) = meant.find("不是") {
            let tail = &meant[at..];
            let wrong_end = tail
                .char_indices()
                .skip(2)
                .find(|(_, c)| is_punctuation(*c) || c.is_whitespace())
                .map_or(tail.len(), |(i, _)| i);
            meant = format!("{}{}", &meant[..at], &tail[wrong_end..]);
        }
        let last = self
            .correction
            .iter()
            .filter(|w| w.as_str() != "不是")
            .filter_map(|w| meant.rfind(w.as_str()).map(|at| at + w.len()))
            .max();
        match last {
            Some(end) if !trim_answer(&meant[end..]).is_empty() => trim_answer(&meant[end..]),
            _ => meant,
        }
    }

    /// What is left of a text once its filler words are taken out.
    fn substance(&self, text: &str) -> String {
        let mut rest = strip_punctuation(text);
        for word in &self.filler {
            rest = rest.replace(word.as_str(), "");
        }
        rest
    }
}

/// What the form needs besides the engine's state.
#[derive(Debug, Clone, Copy)]
pub struct IntakeContext<'a> {
    /// The form's vocabulary.
    pub words: &'a IntakeWords,
    /// The region table.
    pub regions: &'a Regions,
    /// Today in China, for relative deadlines.
    pub today: Date,
}

fn strip_punctuation(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && !is_punctuation(*c))
        .collect()
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || "，。！？；：、“”‘’（）《》…—～·".contains(c)
}

fn trim_answer(text: &str) -> String {
    text.trim()
        .trim_matches(|c: char| is_punctuation(c) || c.is_whitespace())
        .to_owned()
}

static ORGANISATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:我是|我们是|这里是|这边是|来自|我在)?(?P<org>[\p{Han}A-Za-z0-9（）()]{2,40}?(?:股份有限公司|有限责任公司|有限公司|专业合作社|合作社|研究院|研究所|集团))",
    )
    .expect("valid regex")
});

static TITLED_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:的|我是|我叫|联系人是|联系人|找)(?P<name>\p{Han}(?:工|总|经理|博士|教授|老师|主任|场长|厂长|社长|老板|大哥|大姐|师傅|书记|处长|科长))",
    )
    .expect("valid regex")
});

const NAME_CUES: &[&str] = &[
    "联系人写",
    "联系人是",
    "联系人",
    "联系电话",
    "电话是",
    "电话",
    "手机号",
    "手机",
    "我叫",
    "我是",
    "姓名",
    "名字",
    "写",
    "叫",
    "找",
];
const ORGANISATION_CUES: &[&str] = &[
    "我们单位是",
    "单位是",
    "单位叫",
    "我们是",
    "我们叫",
    "公司叫",
    "公司是",
    "名称是",
    "全称是",
    "我们",
    "叫",
    "是",
];
/// The filer's own words for themselves, which are not an organisation.
const SELF_WORDS: &[&str] = &["我们", "咱们", "我", "你好", "您好"];

/// A sentence ending, for cutting titles and outcomes.
fn sentences(text: &str) -> impl Iterator<Item = &str> {
    text.split(['。', '！', '？', '；', '\n', '!', '?', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

const OUTCOME_CUES: &[&str] = &["希望", "目标", "达到", "提升到", "提高到", "降到", "要求"];

fn desired_outcome(text: &str) -> Option<String> {
    sentences(text)
        .flat_map(|s| s.split(['，', ',']))
        .find(|clause| OUTCOME_CUES.iter().any(|cue| clause.contains(cue)))
        .map(trim_answer)
        .filter(|s| !s.is_empty())
}

/// The organisation a text names, written out in full (…有限公司, …合作社).
fn organisation_in(text: &str) -> Option<(String, (usize, usize))> {
    for found in ORGANISATION.captures_iter(text) {
        let Some(org) = found.name("org") else {
            continue;
        };
        let mut name = org.as_str();
        let mut start = org.start();
        for word in SELF_WORDS {
            if let Some(rest) = name.strip_prefix(word) {
                start += word.len();
                name = rest;
            }
        }
        let suffix_len = [
            "股份有限公司",
            "有限责任公司",
            "有限公司",
            "专业合作社",
            "合作社",
            "研究院",
            "研究所",
            "集团",
        ]
        .iter()
        .find(|s| name.ends_with(**s))
        .map_or(0, |s| s.chars().count());
        if name.chars().count() < suffix_len + 2 {
            continue;
        }
        return Some((name.to_owned(), (start, org.end())));
    }
    None
}

/// What one message says, slot by slot.
#[derive(Debug, Clone, Default, PartialEq)]
struct Reading {
    field: Option<String>,
    budget: Option<Budget>,
    bad_amount: bool,
    deadline: Option<Option<Deadline>>,
    place: Option<Place>,
    organisation: Option<String>,
    contact_name: Option<String>,
    phone: Option<PhoneReading>,
}

impl Reading {
    fn slots_found(&self) -> usize {
        [
            self.field.is_some(),
            self.budget.is_some(),
            self.deadline.is_some(),
            self.place.is_some(),
            self.organisation.is_some(),
            self.contact_name.is_some(),
            self.phone.is_some(),
        ]
        .iter()
        .filter(|found| **found)
        .count()
    }
}

fn plausible_budget(budget: &Budget) -> bool {
    const MAX_YUAN: u64 = 10_000_000_000;
    let in_range = |v: Option<u64>| v.is_none_or(|v| v > 0 && v <= MAX_YUAN);
    in_range(budget.min_yuan)
        && in_range(budget.max_yuan)
        && match (budget.min_yuan, budget.max_yuan) {
            (Some(low), Some(high)) => low <= high,
            _ => true,
        }
}

/// Reads a message for every slot. `asking` is the question it answers:
/// that slot is read generously (a bare amount is a budget, the whole
/// answer is the organisation), the others only when unmistakable.
fn read(text: &str, asking: Option<Slot>, context: &IntakeContext<'_>) -> Reading {
    let mut reading = Reading::default();
    let asked = |slot: Slot| asking == Some(slot);

    let phones = phrases::read_phones(text);
    reading.phone = phones
        .iter()
        .find(|p| matches!(p, PhoneReading::Valid(_)))
        .or(phones.first())
        .cloned();
    // The text without phone numbers, for the other slots.
    let mut rest = text.to_owned();
    for phone_like in phone_spans(text) {
        rest = rest.replace(&phone_like, " ");
    }

    if asked(Slot::Organisation) {
        let mut answer = trim_answer(&rest);
        for cue in ORGANISATION_CUES {
            if let Some(stripped) = answer.strip_prefix(cue) {
                answer = trim_answer(stripped);
            }
        }
        if !answer.is_empty() {
            reading.organisation = Some(answer);
        }
        return reading;
    }
    let organisation = organisation_in(&rest);
    let without_organisation = match &organisation {
        Some((_, (start, end))) => format!("{}{}", &rest[..*start], &rest[*end..]),
        None => rest.clone(),
    };
    reading.organisation = organisation.map(|(name, _)| name);

    if let Some(found) = TITLED_NAME.captures(&without_organisation) {
        reading.contact_name = found.name("name").map(|n| n.as_str().to_owned());
    }
    if asked(Slot::Contact) || asked(Slot::Name) {
        let mut answer = trim_answer(&without_organisation);
        loop {
            let before = answer.clone();
            for cue in NAME_CUES {
                if let Some(stripped) = answer.strip_prefix(cue) {
                    answer = trim_answer(stripped);
                }
                if let Some(stripped) = answer.strip_suffix(cue) {
                    answer = trim_answer(stripped);
                }
            }
            if answer == before {
                break;
            }
        }
        let name: String = answer
            .split(|c: char| is_punctuation(c) || c.is_whitespace())
            .map(str::trim)
            .find(|part| !part.is_empty())
            .unwrap_or_default()
            .to_owned();
        if (1..=12).contains(&name.chars().count()) {
            reading.contact_name = Some(name);
        }
    }

    if let Some(found) = phrases::read_budget(&without_organisation, asked(Slot::Budget)) {
        if plausible_budget(&found.budget) {
            reading.budget = Some(found.budget);
        } else {
            reading.bad_amount = true;
        }
    }
    reading.deadline =
        match phrases::read_deadline(&without_organisation, context.today, asked(Slot::Deadline)) {
            Some(DeadlineReading::By(deadline)) => Some(Some(deadline)),
            Some(DeadlineReading::None) => Some(None),
            None => None,
        };
    reading.place = context.regions.find(&without_organisation);
    if asked(Slot::Field) || asked(Slot::Problem) || asking.is_none() {
        reading.field = context.words.field_of(&without_organisation);
    }
    reading
}

/// The literal phone-like runs of a text, to take out before reading it
/// for other slots (a phone is not a budget).
fn phone_spans(text: &str) -> Vec<String> {
    static RUN: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\d[\d\s\-－]{5,}\d").expect("valid regex"));
    RUN.find_iter(text)
        .map(|m| m.as_str().to_owned())
        .filter(|run| {
            let digits = run.chars().filter(char::is_ascii_digit).count();
            digits >= 9 && (run.starts_with('1') || run.starts_with('0'))
        })
        .collect()
}

/// The problem statement of a first message: its sentences without the
/// filer's introduction (name, organisation, phone).
fn problem_statement(text: &str) -> String {
    let has_phone = |clause: &str| !phone_spans(clause).is_empty();
    let kept: Vec<&str> = text
        .split(['。', '！', '？', '；', '\n'])
        .flat_map(|sentence| sentence.split(['，', ',']))
        .map(str::trim)
        .filter(|clause| !clause.is_empty())
        .filter(|clause| {
            !has_phone(clause) && !clause.starts_with("我是") && !clause.starts_with("电话")
        })
        .collect();
    kept.join("，")
}

/// A short title from a problem statement: its first clause with the
/// filer's self-reference taken off, at most 30 characters.
pub fn title_of(problem: &str) -> String {
    const PREFIXES: &[&str] = &[
        "你好",
        "您好",
        "有个技术难题想找专家",
        "我们公司",
        "我们厂",
        "我们的",
        "我们",
        "咱们",
    ];
    let first = sentences(problem).next().unwrap_or(problem);
    let mut title = trim_answer(first);
    loop {
        let before = title.clone();
        for prefix in PREFIXES {
            if let Some(rest) = title.strip_prefix(prefix) {
                title = trim_answer(rest);
            }
        }
        if before == title {
            break;
        }
    }
    let clause = title.split(['，', ',', '：', ':']).next().unwrap_or(&title);
    let clause = if clause.chars().count() >= 6 {
        clause
    } else {
        title.as_str()
    };
    clause.chars().take(30).collect()
}

impl Form {
    /// Starts a form from the message that opened it.
    pub fn start(
        id: String,
        kind: FormKind,
        text: &str,
        context: &IntakeContext<'_>,
    ) -> (Self, Step) {
        let mut form = Self {
            id,
            kind,
            draft: Draft::default(),
            asking: None,
            confirming: false,
            turns: 1,
        };
        let reading = read(text, None, context);
        let statement = problem_statement(text);
        if context.words.substance(&statement).chars().count() >= 6 {
            form.draft.problem = Some(statement.clone());
            form.draft.desired_outcome = desired_outcome(&statement);
        }
        let _ = form.apply(reading, false);
        let step = form.next_step(None, false);
        (form, step)
    }

    /// Reads one answer and says what to do next.
    pub fn answer(&mut self, text: &str, context: &IntakeContext<'_>) -> Step {
        self.turns += 1;
        let words = context.words;
        if words.is_cancel(text) {
            return Step::Cancelled;
        }
        if self.confirming && words.is_confirm(text) {
            return Step::File;
        }
        // A correction names what it changes ("预算改成50万", "地区写错了"),
        // or comes at the summary; "产品不是很稳定" answering a question is
        // an answer.
        let target = correction_target(text);
        let correcting = self.confirming || (words.is_correction(text) && target.is_some());
        let meant = if correcting {
            words.corrected_value(text)
        } else {
            text.to_owned()
        };
        let asking = if correcting {
            target.or(self.asking)
        } else {
            self.asking
        };
        let mut reading = read(&meant, asking, context);
        if let Some(Slot::Problem) = asking
            && !correcting
        {
            let statement = trim_answer(text);
            if words.substance(&statement).chars().count() >= 4 {
                self.draft.desired_outcome = desired_outcome(&statement);
                self.draft.problem = Some(statement);
            }
        }
        if let Some(Slot::Field) = asking
            && reading.field.is_some()
            && !correcting
        {
            // "食品加工，我们是做火锅底料的": the rest describes the problem.
            let extra = trim_answer(text);
            if let Some(problem) = &mut self.draft.problem
                && words.substance(&extra).chars().count() > 4
            {
                problem.push('（');
                problem.push_str(&extra);
                problem.push('）');
            }
        }
        let only_slot = reading.slots_found() == 1;
        if asking == Some(Slot::Deadline)
            && only_slot
            && let Some(Some(deadline)) = &mut reading.deadline
        {
            // The whole answer is the deadline, in the user's own words.
            deadline.text = trim_answer(text);
        }
        let asked_before = self.asking;
        let phone_reading = reading.phone.clone();
        let bad_amount = reading.bad_amount;
        let changed = self.apply(reading, correcting);
        if self.confirming {
            return Step::Confirm { changed };
        }
        let next = self.missing();
        let asked_again = match (asked_before, next) {
            (Some(before), Some(next)) => {
                before == next
                    || (before == Slot::Contact
                        && next == Slot::Phone
                        && matches!(phone_reading, Some(PhoneReading::Malformed(_))))
            }
            _ => false,
        };
        let retry = (asked_again && !correcting).then(|| {
            let reading = Reading {
                phone: phone_reading,
                bad_amount,
                ..Reading::default()
            };
            Self::retry_reason(asked_before.unwrap_or(Slot::Problem), &reading)
        });
        self.next_step(retry, correcting && changed)
    }

    /// Why the question about `slot` is asked again after `reading`.
    fn retry_reason(slot: Slot, reading: &Reading) -> Retry {
        match slot {
            Slot::Phone | Slot::Contact
                if matches!(reading.phone, Some(PhoneReading::Malformed(_))) =>
            {
                Retry::BadPhone
            }
            Slot::Budget if reading.bad_amount => Retry::BadAmount,
            Slot::Region => Retry::TooBroad,
            _ => Retry::NotUnderstood,
        }
    }

    /// Copies what a reading found into the draft: into empty slots, and
    /// over filled ones when the user is correcting. Returns whether
    /// anything changed.
    fn apply(&mut self, reading: Reading, overwrite: bool) -> bool {
        fn put<T: PartialEq>(slot: &mut Option<T>, value: Option<T>, overwrite: bool) -> bool {
            match value {
                Some(value) if slot.is_none() || (overwrite && slot.as_ref() != Some(&value)) => {
                    *slot = Some(value);
                    true
                }
                _ => false,
            }
        }
        let draft = &mut self.draft;
        let mut changed = false;
        changed |= put(&mut draft.field, reading.field, overwrite);
        changed |= put(&mut draft.budget, reading.budget, overwrite);
        changed |= put(&mut draft.deadline, reading.deadline, overwrite);
        if let Some(place) = reading.place
            && (draft.city.is_none() || overwrite)
            && (draft.city.as_ref() != Some(&place.city)
                || (place.county.is_some() && draft.county != place.county))
        {
            draft.city = Some(place.city);
            draft.county = place.county;
            changed = true;
        }
        changed |= put(&mut draft.organisation, reading.organisation, overwrite);
        changed |= put(&mut draft.contact_name, reading.contact_name, overwrite);
        if let Some(PhoneReading::Valid(phone)) = reading.phone {
            changed |= put(&mut draft.phone, Some(phone), overwrite);
        }
        changed
    }

    fn required(&self) -> &'static [Slot] {
        match self.kind {
            FormKind::Demand => &[
                Slot::Problem,
                Slot::Field,
                Slot::Budget,
                Slot::Deadline,
                Slot::Region,
                Slot::Organisation,
                Slot::Contact,
            ],
            FormKind::Capability => &[
                Slot::Problem,
                Slot::Field,
                Slot::Region,
                Slot::Organisation,
                Slot::Contact,
            ],
        }
    }

    fn missing(&self) -> Option<Slot> {
        let draft = &self.draft;
        self.required().iter().copied().find_map(|slot| {
            let missing = match slot {
                Slot::Problem => draft.problem.is_none(),
                Slot::Field => draft.field.is_none(),
                Slot::Budget => draft.budget.is_none(),
                Slot::Deadline => draft.deadline.is_none(),
                Slot::Region => draft.city.is_none(),
                Slot::Organisation => draft.organisation.is_none(),
                Slot::Contact | Slot::Phone | Slot::Name => {
                    return match (&draft.contact_name, &draft.phone) {
                        (None, None) => Some(Slot::Contact),
                        (Some(_), None) => Some(Slot::Phone),
                        (None, Some(_)) => Some(Slot::Name),
                        (Some(_), Some(_)) => None,
                    };
                }
            };
            missing.then_some(slot)
        })
    }

    /// The slots still missing, for reports.
    pub fn missing_slots(&self) -> Vec<Slot> {
        let mut probe = self.clone();
        let mut missing = Vec::new();
        while let Some(slot) = probe.missing() {
            missing.push(slot);
            match slot {
                Slot::Problem => probe.draft.problem = Some(String::new()),
                Slot::Field => probe.draft.field = Some(String::new()),
                Slot::Budget => probe.draft.budget = Some(Budget::default()),
                Slot::Deadline => probe.draft.deadline = Some(None),
                Slot::Region => probe.draft.city = Some(String::new()),
                Slot::Organisation => probe.draft.organisation = Some(String::new()),
                Slot::Contact | Slot::Phone | Slot::Name => {
                    probe.draft.contact_name = Some(String::new());
                    probe.draft.phone = Some(String::new());
                }
            }
        }
        missing
    }

    fn next_step(&mut self, retry: Option<Retry>, corrected: bool) -> Step {
        match self.missing() {
            Some(slot) => {
                self.asking = Some(slot);
                Step::Ask {
                    slot,
                    retry,
                    corrected,
                }
            }
            None => {
                self.asking = None;
                self.confirming = true;
                Step::Confirm { changed: false }
            }
        }
    }

    /// The demand to file, once nothing is missing.
    pub fn demand(&self) -> Option<DemandContent> {
        let draft = &self.draft;
        let problem = draft.problem.clone()?;
        Some(DemandContent {
            title: title_of(&problem),
            field: draft.field.clone()?,
            desired_outcome: draft.desired_outcome.clone(),
            problem,
            budget: draft.budget?,
            deadline: draft.deadline.clone()?,
            region: draft.city.clone()?,
            county: draft.county.clone(),
            organisation: draft.organisation.clone()?,
            contact: Contact {
                name: draft.contact_name.clone()?,
                phone: draft.phone.clone()?,
            },
        })
    }

    /// The capability to list, once nothing is missing.
    pub fn capability(&self) -> Option<CapabilityContent> {
        let draft = &self.draft;
        let name = draft.contact_name.clone()?;
        Some(CapabilityContent {
            kind: if name.contains("团队") {
                "团队"
            } else {
                "专家"
            }
            .to_owned(),
            name,
            organisation: draft.organisation.clone()?,
            fields: vec![draft.field.clone()?],
            skills: draft.problem.clone()?,
            achievements: String::new(),
            region: draft.city.clone()?,
            contact: Contact {
                name: draft.contact_name.clone()?,
                phone: draft.phone.clone()?,
            },
            availability: "可提供技术服务".to_owned(),
        })
    }
}

/// Which slot a correction is about, from the words it uses.
fn correction_target(text: &str) -> Option<Slot> {
    const TARGETS: &[(&[&str], Slot)] = &[
        (&["预算", "经费", "钱"], Slot::Budget),
        (&["期限", "时间", "截止", "日期", "完成"], Slot::Deadline),
        (
            &["地区", "地址", "地方", "城市", "县", "在哪"],
            Slot::Region,
        ),
        (&["单位", "公司", "企业", "名称"], Slot::Organisation),
        (&["电话", "手机", "号码"], Slot::Phone),
        (&["联系人", "姓名", "名字"], Slot::Name),
        (&["领域", "行业"], Slot::Field),
    ];
    TARGETS
        .iter()
        .find(|(words, _)| words.iter().any(|w| text.contains(w)))
        .map(|(_, slot)| *slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn context() -> (IntakeWords, &'static Regions) {
        (IntakeWords::builtin(), Regions::builtin())
    }

    #[test]
    fn fields_are_inferred_from_the_problem_or_left_to_ask() {
        let words = IntakeWords::builtin();
        let cases = [
            ("我们厂锂电池隔膜良品率低，想找专家攻关", Some("新材料")),
            (
                "环保方面的，我们是酒厂，酿酒废水总氮老是超标",
                Some("生态环保"),
            ),
            (
                "我们想做川芎规范化种植，但连作以后根腐病重、产量掉得厉害",
                Some("医药健康"),
            ),
            ("我们多晶硅还原炉电耗偏高，想找专家一起降耗", Some("能源")),
            ("我们的产品放三四个月就有哈喇味，客户投诉多", None),
            ("你好，想发布一个需求", None),
        ];
        for (text, expected) in cases {
            assert_eq!(words.field_of(text).as_deref(), expected, "{text}");
        }
    }

    #[test]
    fn a_first_message_is_read_for_everything_it_says() {
        let (words, regions) = context();
        let context = IntakeContext {
            words: &words,
            regions,
            today: date!(2026 - 12 - 01),
        };
        let (form, step) = Form::start(
            "f1".into(),
            FormKind::Demand,
            "我是遂宁示例锂电材料有限公司的刘工，电话13800078912。我们在遂宁，磷酸铁锂正极压实密度一直上不去，想找专家合作研发，预算80万到100万，2027年底前完成",
            &context,
        );
        assert_eq!(step, Step::Confirm { changed: false });
        let demand = form.demand().expect("complete");
        assert_eq!(demand.organisation, "遂宁示例锂电材料有限公司");
        assert_eq!(demand.contact.name, "刘工");
        assert_eq!(demand.contact.phone, "13800078912");
        assert_eq!(demand.region, "遂宁市");
        assert_eq!(demand.field, "新材料");
        assert_eq!(demand.budget.min_yuan, Some(800_000));
        assert_eq!(demand.budget.max_yuan, Some(1_000_000));
        assert_eq!(
            demand.deadline.map(|d| d.text).as_deref(),
            Some("2027年底前")
        );
        assert!(!demand.problem.contains("13800078912"));
    }

    #[test]
    fn answers_with_cancel_or_correction_words_inside_are_answers() {
        let (words, regions) = context();
        let context = IntakeContext {
            words: &words,
            regions,
            today: date!(2026 - 12 - 01),
        };
        let (mut form, _) = Form::start(
            "f2".into(),
            FormKind::Demand,
            "你好，想发布一个需求",
            &context,
        );
        let step = form.answer("我们的产品不是很稳定，老开裂，是做陶瓷材料的", &context);
        assert!(form.draft.problem.is_some(), "{step:?}");
        let step = form.answer("我们算了一下，大概20万", &context);
        assert_ne!(step, Step::Cancelled);
        assert_eq!(form.draft.budget.and_then(|b| b.min_yuan), Some(200_000));
        for answer in [
            "三个月内",
            "宜宾翠屏区",
            "宜宾示例陶瓷有限公司",
            "张工 13800012345",
        ] {
            form.answer(answer, &context);
        }
        assert!(form.confirming);
        form.answer("单位改成宜宾示例新材料有限公司", &context);
        assert_eq!(
            form.draft.organisation.as_deref(),
            Some("宜宾示例新材料有限公司")
        );
        form.answer("联系人改成李工", &context);
        assert_eq!(form.draft.contact_name.as_deref(), Some("李工"));
        form.answer("地区写错了，是南溪区不是翠屏区", &context);
        assert_eq!(form.draft.county.as_deref(), Some("南溪区"));
        assert_eq!(form.answer("算了，取消", &context), Step::Cancelled);
    }

    #[test]
    fn titles_are_short_and_impersonal() {
        assert_eq!(
            title_of("我们厂锂电池隔膜良品率低，想找专家攻关"),
            "锂电池隔膜良品率低"
        );
        assert!(title_of(&"很长".repeat(40)).chars().count() <= 30);
    }

    /// Plays one scripted conversation through a form; returns the form,
    /// the turns taken and how it ended.
    fn play(turns: &[String], context: &IntakeContext<'_>) -> (Form, usize, Step) {
        let (mut form, mut step) = Form::start("f".into(), FormKind::Demand, &turns[0], context);
        let mut used = 1;
        for turn in &turns[1..] {
            if matches!(step, Step::File | Step::Cancelled) {
                break;
            }
            step = form.answer(turn, context);
            used += 1;
        }
        (form, used, step)
    }

    /// The committed scripts of `bot/eval/intake.jsonl`: every field is
    /// extracted, and the form files exactly at the script's last turn,
    /// within (missing fields + 2 + the script's deliberate mistakes) turns.
    #[test]
    fn scripted_enterprise_conversations_file_correct_listings() {
        let (words, regions) = context();
        let context = IntakeContext {
            words: &words,
            regions,
            today: date!(2026 - 12 - 01),
        };
        let scripts = include_str!("../eval/intake.jsonl");
        let mut failures = Vec::new();
        let mut count = 0;
        for line in scripts.lines().filter(|l| !l.trim().is_empty()) {
            count += 1;
            let script: serde_json::Value = serde_json::from_str(line).expect("valid script");
            let turns: Vec<String> =
                serde_json::from_value(script["turns"].clone()).expect("turns");
            let expected = &script["expected"];
            let (form, used, step) = play(&turns, &context);
            if expected["cancelled"].as_bool() == Some(true) {
                if step != Step::Cancelled || used != turns.len() {
                    failures.push(format!(
                        "{}: expected cancel at the last turn, got {step:?} after {used}",
                        turns[0]
                    ));
                }
                continue;
            }
            if step != Step::File || used != turns.len() {
                failures.push(format!("{}: expected filing at turn {}, got {step:?} after {used}; asking {:?}; draft {:?}", turns[0], turns.len(), form.asking, form.draft));
                continue;
            }
            let missing = script["missing_at_start"].as_array().map_or(0, Vec::len);
            let extra = script["extra_turns"].as_u64().unwrap_or(0) as usize;
            if used > missing + 2 + extra {
                failures.push(format!(
                    "{}: {used} turns for {missing} missing fields",
                    turns[0]
                ));
            }
            let Some(demand) = form.demand() else {
                failures.push(format!("{}: incomplete {:?}", turns[0], form.draft));
                continue;
            };
            let deadline_text = demand.deadline.as_ref().map(|d| d.text.clone());
            let checks = [
                (
                    "field",
                    expected["field"].as_str().map(str::to_owned),
                    Some(demand.field.clone()),
                ),
                (
                    "region",
                    expected["region"].as_str().map(str::to_owned),
                    Some(demand.region.clone()),
                ),
                (
                    "organisation",
                    expected["organisation"].as_str().map(str::to_owned),
                    Some(demand.organisation.clone()),
                ),
                (
                    "contact_name",
                    expected["contact_name"].as_str().map(str::to_owned),
                    Some(demand.contact.name.clone()),
                ),
                (
                    "phone",
                    expected["phone"].as_str().map(str::to_owned),
                    Some(demand.contact.phone.clone()),
                ),
                (
                    "budget_min",
                    expected["budget_min_yuan"].as_u64().map(|v| v.to_string()),
                    demand.budget.min_yuan.map(|v| v.to_string()),
                ),
                (
                    "budget_max",
                    expected["budget_max_yuan"].as_u64().map(|v| v.to_string()),
                    demand.budget.max_yuan.map(|v| v.to_string()),
                ),
            ];
            for (name, want, got) in checks {
                if want != got {
                    failures.push(format!(
                        "{}: {name} expected {want:?}, got {got:?}",
                        turns[0]
                    ));
                }
            }
            let want_deadline = expected
                .get("deadline_relative")
                .or_else(|| expected.get("deadline_text"))
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            if want_deadline != deadline_text {
                failures.push(format!(
                    "{}: deadline expected {want_deadline:?}, got {deadline_text:?}",
                    turns[0]
                ));
            }
        }
        assert!(count >= 20, "only {count} scripts");
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// How filing conversations open.
        const OPENERS: &[&str] = &[
            "我们厂锂电池隔膜良品率低，想找专家攻关，预算20万左右，三个月内解决",
            "我们泡菜厂的袋装泡菜放一两个月就胀袋，退货很多，想找人把这个问题解决了",
            "你好，想发布一个需求",
            "我们想做川芎规范化种植，但连作以后根腐病重、产量掉得厉害",
        ];

        /// What people send while a form is open: answers to every slot,
        /// corrections, malformed values, chatter, confirmations and
        /// cancellations.
        const MESSAGES: &[&str] = &[
            "宜宾",
            "眉山东坡区",
            "四川",
            "宜宾示例隔膜材料有限公司",
            "张工 13800012345",
            "李红",
            "138000123",
            "13800034567",
            "50万以内",
            "三五万",
            "很多钱",
            "年底前",
            "越快越好",
            "没有期限",
            "新材料",
            "预算改成50万",
            "是德阳不是绵阳",
            "地区写错了",
            "确认",
            "对的，提交吧",
            "取消",
            "算了，取消",
            "嗯",
            "洋芋叶子发黑咋个办",
            "",
        ];

        fn message() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => proptest::sample::select(MESSAGES).prop_map(str::to_owned),
                1 => any::<String>(),
            ]
        }

        proptest! {
            /// Whatever is sent: a form asks for a slot that is missing,
            /// shows the summary only when nothing is, files only when
            /// "确认" answers the summary and everything is valid, and ends
            /// only on a cancel word.
            #[test]
            fn a_form_files_only_a_confirmed_complete_demand(
                opener in proptest::sample::select(OPENERS),
                messages in proptest::collection::vec(message(), 0..14),
            ) {
                let (words, regions) = context();
                let context = IntakeContext { words: &words, regions, today: date!(2026 - 11 - 20) };
                let (mut form, mut step) = Form::start("f".into(), FormKind::Demand, opener, &context);
                for (answered, message) in messages.iter().enumerate() {
                    match &step {
                        Step::Ask { slot, .. } if !form.confirming => {
                            let missing = form.missing_slots();
                            prop_assert_eq!(missing.first(), Some(slot));
                        }
                        Step::Ask { .. } => {}
                        Step::Confirm { .. } => {
                            prop_assert!(form.confirming);
                            prop_assert!(form.missing_slots().is_empty());
                        }
                        Step::File | Step::Cancelled => break,
                    }
                    if let Some(phone) = &form.draft.phone {
                        prop_assert!(phone.len() == 11 && phone.starts_with('1')
                            && phone.chars().all(|c| c.is_ascii_digit()), "{}", phone);
                    }
                    if let Some(city) = &form.draft.city {
                        prop_assert!(regions.cities().contains(city), "{}", city);
                    }
                    let was_confirming = form.confirming;
                    step = form.answer(message, &context);
                    prop_assert_eq!(form.turns as usize, answered + 2);
                    match &step {
                        Step::File => {
                            prop_assert!(was_confirming, "filed without the summary");
                            prop_assert!(words.is_confirm(message), "{}", message);
                            let demand = form.demand();
                            prop_assert!(demand.is_some(), "{:?}", form.draft);
                        }
                        Step::Cancelled => prop_assert!(words.is_cancel(message), "{}", message),
                        Step::Ask { .. } | Step::Confirm { .. } => {}
                    }
                }
            }
        }
    }
}
