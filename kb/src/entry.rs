//! Knowledge entries: the data model, its validation, and the editorial states.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Longest short answer, in characters: what a chat reply can carry.
pub const SHORT_ANSWER_MAX_CHARS: usize = 300;
/// Longest full answer, in characters.
pub const ANSWER_MAX_CHARS: usize = 20_000;
/// Longest question or phrasing, in characters.
pub const QUESTION_MAX_CHARS: usize = 200;
/// Most alternative phrasings per entry.
pub const MAX_ALT_QUESTIONS: usize = 30;

/// A knowledge entry's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryId(pub Uuid);

impl EntryId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for EntryId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The fixed set of categories editors file entries under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Category {
    /// Crop farming.
    #[serde(rename = "农业种植")]
    Farming,
    /// Livestock and aquaculture.
    #[serde(rename = "畜牧水产")]
    Livestock,
    /// Health and medicine.
    #[serde(rename = "健康医学")]
    Health,
    /// Rumour checks.
    #[serde(rename = "科学辟谣")]
    Rumour,
    /// Disaster prevention and safety.
    #[serde(rename = "防灾减灾")]
    Disaster,
    /// Everyday science.
    #[serde(rename = "生活科普")]
    Everyday,
    /// Frontier technology.
    #[serde(rename = "前沿科技")]
    Frontier,
}

impl Category {
    /// Every category, in display order.
    pub const ALL: [Category; 7] = [
        Self::Farming,
        Self::Livestock,
        Self::Health,
        Self::Rumour,
        Self::Disaster,
        Self::Everyday,
        Self::Frontier,
    ];

    /// The Chinese name, as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Self::Farming => "农业种植",
            Self::Livestock => "畜牧水产",
            Self::Health => "健康医学",
            Self::Rumour => "科学辟谣",
            Self::Disaster => "防灾减灾",
            Self::Everyday => "生活科普",
            Self::Frontier => "前沿科技",
        }
    }

    /// Parses a Chinese category name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name.trim())
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an entry's content comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The organisation that vouches for the content.
    pub organisation: String,
    /// A document title, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// A link, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The editorial state of an entry.
///
/// ```text
/// draft ──submit──▶ in_review ──approve──▶ published ──retire──▶ retired
///   ▲                  │                      │                    │
///   └────reject────────┘◀──────revise─────────┴────────revise──────┘
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Being written; never shown to users.
    Draft,
    /// Waiting for a reviewer.
    InReview,
    /// Approved by a reviewer who is not the author; the only state users see.
    Published,
    /// Withdrawn.
    Retired,
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::InReview => "in_review",
            Self::Published => "published",
            Self::Retired => "retired",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Draft, Self::InReview, Self::Published, Self::Retired]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The editable content of an entry: what an editor writes or an import row holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryContent {
    /// Key of the entry in the system it was imported from; re-imports update by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_key: Option<String>,
    /// The canonical question.
    pub question: String,
    /// Other ways people ask the same thing (相似问法).
    #[serde(default)]
    pub alt_questions: Vec<String>,
    /// The full answer, in Markdown.
    pub answer: String,
    /// The chat-sized answer; when absent the first paragraph of the answer is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_answer: Option<String>,
    /// The category.
    pub category: Category,
    /// Free tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Crops or animals concerned.
    #[serde(default)]
    pub crops: Vec<String>,
    /// Regions (市州 or 县区) the entry is specific to; empty for everywhere.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Months (1–12) the entry is seasonal to; empty for all year.
    #[serde(default)]
    pub months: Vec<u8>,
    /// Who it is written for (农户, 公众, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Where it comes from.
    pub source: Source,
    /// When it must be reviewed again, as `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_by: Option<String>,
}

/// A stored entry: content plus identity, workflow state and bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Identity.
    pub id: EntryId,
    /// Content.
    #[serde(flatten)]
    pub content: EntryContent,
    /// Editorial state.
    pub status: Status,
    /// Who wrote the current content.
    pub author: String,
    /// Who approved the current content, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    /// Incremented by every recorded change.
    pub version: u32,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Last approval.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub reviewed_at: Option<OffsetDateTime>,
}

impl Entry {
    /// The chat-sized answer: the short answer, or the answer's first paragraph cut to size.
    pub fn chat_answer(&self) -> String {
        if let Some(short) = &self.content.short_answer
            && !short.trim().is_empty()
        {
            return short.trim().to_owned();
        }
        let first = self
            .content
            .answer
            .split("\n\n")
            .find(|p| !p.trim().is_empty())
            .unwrap_or("")
            .trim();
        truncate_chars(first, SHORT_ANSWER_MAX_CHARS)
    }

    /// The question followed by its alternative phrasings.
    pub fn phrasings(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.content.question.as_str())
            .chain(self.content.alt_questions.iter().map(String::as_str))
    }
}

/// Cuts a string to at most `max` characters, marking the cut with "…".
pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// One problem found by validation, named by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field.
    pub field: &'static str,
    /// What is wrong, in Chinese for editors.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl EntryContent {
    /// Checks the content and returns every problem at once, so an editor can fix them in one go.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut fail =
            |field: &'static str, message: String| errors.push(FieldError { field, message });
        let chars = |s: &str| s.chars().count();

        if self.question.trim().is_empty() {
            fail("question", "问题不能为空".into());
        } else if chars(&self.question) > QUESTION_MAX_CHARS {
            fail(
                "question",
                format!(
                    "问题过长（{} 字，最多 {QUESTION_MAX_CHARS} 字）",
                    chars(&self.question)
                ),
            );
        }
        if self.alt_questions.len() > MAX_ALT_QUESTIONS {
            fail(
                "alt_questions",
                format!("相似问法最多 {MAX_ALT_QUESTIONS} 条"),
            );
        }
        for (i, alt) in self.alt_questions.iter().enumerate() {
            if alt.trim().is_empty() {
                fail("alt_questions", format!("第 {} 条相似问法为空", i + 1));
            } else if chars(alt) > QUESTION_MAX_CHARS {
                fail("alt_questions", format!("第 {} 条相似问法过长", i + 1));
            }
        }
        if self.answer.trim().is_empty() {
            fail("answer", "答案不能为空".into());
        } else if chars(&self.answer) > ANSWER_MAX_CHARS {
            fail(
                "answer",
                format!(
                    "答案过长（{} 字，最多 {ANSWER_MAX_CHARS} 字）",
                    chars(&self.answer)
                ),
            );
        }
        if let Some(short) = &self.short_answer
            && chars(short) > SHORT_ANSWER_MAX_CHARS
        {
            fail(
                "short_answer",
                format!(
                    "简短答案过长（{} 字，最多 {SHORT_ANSWER_MAX_CHARS} 字）",
                    chars(short)
                ),
            );
        }
        if let Some(month) = self.months.iter().find(|m| !(1..=12).contains(*m)) {
            fail("months", format!("月份 {month} 不在 1–12 之间"));
        }
        if self.source.organisation.trim().is_empty() {
            fail("source", "必须注明来源机构".into());
        }
        if let Some(date) = &self.review_by
            && time::Date::parse(
                date,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .is_err()
        {
            fail("review_by", format!("复审日期 {date} 应为 YYYY-MM-DD"));
        }
        if let Some(key) = &self.external_key
            && key.trim().is_empty()
        {
            fail("external_key", "外部编号不能为空字符串".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Parses a category name, for importers, with a message listing the valid ones.
pub fn parse_category(name: &str) -> Result<Category, FieldError> {
    Category::from_name(name).ok_or_else(|| FieldError {
        field: "category",
        message: format!(
            "未知分类「{name}」，可选：{}",
            Category::ALL.map(Category::name).join("、")
        ),
    })
}
