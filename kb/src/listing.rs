//! Listings: technical demands (科技需求) and capabilities (科技所能), their
//! life cycle (一单一策 tracking, 揭榜 claims) and matching between them.
//!
//! Both kinds are stored in the same point store as the knowledge base, one
//! point per listing with a dense vector, so they are searchable by meaning:
//! - `demands`: one point per [`Demand`], the payload is the whole listing;
//! - `capabilities`: one point per [`Capability`].
//!
//! Invariants:
//! - A listing's id is derived from where it came from (a conversation's
//!   form, an import row's key), so filing the same thing twice (a channel
//!   retrying, a crash between the write and the session save) finds the
//!   first listing instead of making a second one.
//! - Every status change is checked against [`DemandStatus::can_become`] and
//!   appended to the listing's log with its actor and time, in the same
//!   write as the change.
//! - Contact details leave this module only through [`Demand::contact`] and
//!   [`Capability::contact`]; the public views ([`PublicDemand`],
//!   [`PublicCapability`]) have none, and phone numbers in free text are
//!   masked by [`mask_phones`].

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::KbError;
use crate::store::{
    CollectionSpec, Condition, Exactness, Filter, NewPoint, Payload, PointStore, QueryVector,
    SearchRequest, StoreError, scroll_all, to_payload,
};
use crate::text::Analyzer;

const DEMANDS: &str = "demands";
const CAPABILITIES: &str = "capabilities";
/// Capabilities compared in full for one demand before re-ranking.
const MATCH_CANDIDATES: usize = 50;
/// Weight of a shared field in a match's score.
const FIELD_WEIGHT: f32 = 0.04;
/// Weight of being in the same city.
const REGION_WEIGHT: f32 = 0.02;
/// Weight of each past cooperation in the demand's field, up to two.
const PAST_COOPERATION_WEIGHT: f32 = 0.01;
/// Weight of each shared subject term, up to four.
const SHARED_TERM_WEIGHT: f32 = 0.01;

/// Where a demand is in its life: 待审核 → 已发布 → 对接中 → 已合作 / 已关闭.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DemandStatus {
    /// 待审核: filed, waiting for staff to check it.
    #[serde(rename = "待审核")]
    PendingReview,
    /// 已发布: visible to capability holders, open to 揭榜.
    #[serde(rename = "已发布")]
    Published,
    /// 对接中: staff are connecting it with one or more experts.
    #[serde(rename = "对接中")]
    Matching,
    /// 已合作: a cooperation was agreed.
    #[serde(rename = "已合作")]
    Cooperating,
    /// 已关闭: withdrawn, rejected or expired.
    #[serde(rename = "已关闭")]
    Closed,
}

impl DemandStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [Self; 5] = [
        Self::PendingReview,
        Self::Published,
        Self::Matching,
        Self::Cooperating,
        Self::Closed,
    ];

    /// The Chinese name, as shown and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingReview => "待审核",
            Self::Published => "已发布",
            Self::Matching => "对接中",
            Self::Cooperating => "已合作",
            Self::Closed => "已关闭",
        }
    }

    /// Parses the Chinese name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name.trim())
    }

    /// Whether a demand in this status may move to `next`. A closed or
    /// cooperating demand is finished; a cooperation that falls through is
    /// closed, not reopened, so reports count it once.
    pub fn can_become(self, next: Self) -> bool {
        use DemandStatus::*;
        matches!(
            (self, next),
            (PendingReview, Published)
                | (PendingReview, Closed)
                | (Published, Matching)
                | (Published, Closed)
                | (Matching, Published)
                | (Matching, Cooperating)
                | (Matching, Closed)
                | (Cooperating, Closed)
        )
    }
}

/// A budget range in yuan. Both ends empty and `negotiable` is "面议".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Lowest amount, when one was given.
    pub min_yuan: Option<u64>,
    /// Highest amount, when one was given.
    pub max_yuan: Option<u64>,
    /// Whether the amount is open (面议) or can grow.
    #[serde(default)]
    pub negotiable: bool,
}

impl Budget {
    /// How the budget reads ("20万", "5万–10万", "50万以内", "面议").
    pub fn describe(&self) -> String {
        fn wan(yuan: u64) -> String {
            if yuan >= 10_000 && yuan.is_multiple_of(1_000) {
                let wan = yuan as f64 / 10_000.0;
                let text = format!("{wan:.1}");
                format!("{}万", text.trim_end_matches(".0"))
            } else {
                format!("{yuan}元")
            }
        }
        match (self.min_yuan, self.max_yuan) {
            (Some(low), Some(high)) if low == high => format!("{}左右", wan(low)),
            (Some(low), Some(high)) => format!("{}–{}", wan(low), wan(high)),
            (None, Some(high)) => format!("{}以内", wan(high)),
            (Some(low), None) => format!("{}以上", wan(low)),
            (None, None) => "面议".to_owned(),
        }
    }
}

/// When the demand should be met: what the user said, and the date it
/// means when it names one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadline {
    /// The words used ("三个月内", "明年3月前").
    pub text: String,
    /// The last day, when the words name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Date>,
}

/// A person to contact. Never shown to other users.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Name or form of address ("张工").
    pub name: String,
    /// Mobile or landline number, digits only.
    pub phone: String,
}

/// Who filed or offered a listing through a chat channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filer {
    /// The channel (`web`, `wechat`, …).
    pub channel: String,
    /// The user's storage key (`channel:id`).
    pub user: String,
}

/// What a demand says, as filed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemandContent {
    /// A short title.
    pub title: String,
    /// The field or industry (农业, 新材料, …).
    pub field: String,
    /// The problem, in the enterprise's words.
    pub problem: String,
    /// The outcome wanted, when stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_outcome: Option<String>,
    /// The budget.
    #[serde(default)]
    pub budget: Budget,
    /// The deadline; `None` when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Deadline>,
    /// City or prefecture, full name.
    pub region: String,
    /// County, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub county: Option<String>,
    /// The organisation.
    pub organisation: String,
    /// Whom to contact.
    pub contact: Contact,
}

/// A line of a demand's status log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When, Unix seconds.
    pub at: i64,
    /// Who (`user`, `system`, `staff:王芳`, `capability:SN-…`).
    pub actor: String,
    /// The status after this line.
    pub status: DemandStatus,
    /// What happened, shown to the filer.
    pub text: String,
}

/// A capability holder's claim (揭榜) of a published demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The capability listing.
    pub capability_id: Uuid,
    /// Its number.
    pub capability_number: String,
    /// Its name, as shown to the demand's owner.
    pub capability_name: String,
    /// What the claimant proposes.
    pub note: String,
    /// When, Unix seconds.
    pub at: i64,
}

/// A technical demand (科技需求).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demand {
    /// Identity.
    pub id: Uuid,
    /// The human-friendly number, `XQ-YYYY-NNNNNN`.
    pub number: String,
    /// What it says.
    #[serde(flatten)]
    pub content: DemandContent,
    /// Who filed it by chat, if it came from a chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filed_by: Option<Filer>,
    /// Where it is in its life.
    pub status: DemandStatus,
    /// The staff member following it (一单一策).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staff: Option<String>,
    /// The service plan notes, oldest first.
    #[serde(default)]
    pub plan_notes: Vec<String>,
    /// Claims by capability holders.
    #[serde(default)]
    pub claims: Vec<Claim>,
    /// Every change, oldest first.
    pub log: Vec<LogLine>,
    /// When it was filed, Unix seconds.
    pub filed_at: i64,
    /// The import key, for demands that came from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_key: Option<String>,
}

impl Demand {
    /// The contact, for staff and for the filer only.
    pub fn contact(&self) -> &Contact {
        &self.content.contact
    }

    /// The last line of the status log.
    pub fn last_log(&self) -> Option<&LogLine> {
        self.log.last()
    }

    /// What anyone may see: no contact, no filer, phones masked.
    pub fn public_view(&self) -> PublicDemand {
        PublicDemand {
            number: self.number.clone(),
            title: mask_phones(&self.content.title),
            field: self.content.field.clone(),
            problem: mask_phones(&self.content.problem),
            desired_outcome: self.content.desired_outcome.as_deref().map(mask_phones),
            budget: self.content.budget.describe(),
            deadline: self.content.deadline.as_ref().map(|d| d.text.clone()),
            region: self.content.region.clone(),
            organisation: self.content.organisation.clone(),
            status: self.status,
            claims: self.claims.len(),
            filed_at: self.filed_at,
        }
    }
}

impl DemandContent {
    /// What a demand is embedded from: its title, problem and the outcome
    /// wanted.
    fn embedding_text(&self) -> String {
        let mut text = format!("{}。{}", self.title, self.problem);
        if let Some(outcome) = &self.desired_outcome {
            text.push('。');
            text.push_str(outcome);
        }
        text
    }
}

/// A demand as shown to anyone: no contact details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicDemand {
    /// Number.
    pub number: String,
    /// Title.
    pub title: String,
    /// Field.
    pub field: String,
    /// Problem.
    pub problem: String,
    /// Outcome wanted.
    pub desired_outcome: Option<String>,
    /// Budget, as words.
    pub budget: String,
    /// Deadline, as words.
    pub deadline: Option<String>,
    /// City.
    pub region: String,
    /// Organisation.
    pub organisation: String,
    /// Status.
    pub status: DemandStatus,
    /// How many claims it has.
    pub claims: usize,
    /// Filed, Unix seconds.
    pub filed_at: i64,
}

/// What a capability listing says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityContent {
    /// The expert's or team's name.
    pub name: String,
    /// 专家, 团队 or 机构.
    pub kind: String,
    /// The organisation.
    pub organisation: String,
    /// Fields, broadest first (农业, 水稻, 植物保护).
    pub fields: Vec<String>,
    /// What they can do.
    pub skills: String,
    /// What they have done.
    #[serde(default)]
    pub achievements: String,
    /// City or prefecture, full name.
    pub region: String,
    /// Whom to contact.
    pub contact: Contact,
    /// How they can help (咨询, 驻厂, 合作研发…).
    #[serde(default)]
    pub availability: String,
}

/// A capability listing (科技所能).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// Identity.
    pub id: Uuid,
    /// The human-friendly number, `SN-YYYY-NNNNNN`.
    pub number: String,
    /// What it says.
    #[serde(flatten)]
    pub content: CapabilityContent,
    /// Who offered it by chat, if it came from a chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_by: Option<Filer>,
    /// Numbers of demands it cooperated on (已合作).
    #[serde(default)]
    pub cooperations: Vec<String>,
    /// When it was listed, Unix seconds.
    pub listed_at: i64,
    /// The import key, for listings that came from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_key: Option<String>,
}

impl Capability {
    /// The contact, for staff and the demand owner's matched staff only.
    pub fn contact(&self) -> &Contact {
        &self.content.contact
    }

    /// What anyone may see: no contact details.
    pub fn public_view(&self) -> PublicCapability {
        PublicCapability {
            number: self.number.clone(),
            name: self.content.name.clone(),
            kind: self.content.kind.clone(),
            organisation: self.content.organisation.clone(),
            fields: self.content.fields.clone(),
            skills: mask_phones(&self.content.skills),
            achievements: mask_phones(&self.content.achievements),
            region: self.content.region.clone(),
            availability: self.content.availability.clone(),
        }
    }

    fn embedding_text(&self) -> String {
        let content = &self.content;
        format!(
            "{}：{}。{}。{}",
            content.name,
            content.fields.join("、"),
            content.skills,
            content.achievements
        )
    }
}

/// A capability as shown to anyone: no contact details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicCapability {
    /// Number.
    pub number: String,
    /// Name.
    pub name: String,
    /// 专家, 团队 or 机构.
    pub kind: String,
    /// Organisation.
    pub organisation: String,
    /// Fields.
    pub fields: Vec<String>,
    /// Skills.
    pub skills: String,
    /// Achievements.
    pub achievements: String,
    /// City.
    pub region: String,
    /// Availability.
    pub availability: String,
}

/// Why a capability was matched to a demand.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MatchReasons {
    /// Subject words both listings use, most telling first.
    pub shared_terms: Vec<String>,
    /// Whether the capability lists the demand's field.
    pub same_field: bool,
    /// Whether both are in the same city.
    pub same_region: bool,
    /// Demands in the same field the capability cooperated on.
    pub past_cooperations: Vec<String>,
}

/// One capability matched to a demand.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    /// The capability.
    pub capability: Capability,
    /// Similarity of meaning, cosine.
    pub similarity: f32,
    /// The ranking score: similarity plus the bonuses of the reasons.
    pub score: f32,
    /// Why.
    pub reasons: MatchReasons,
}

/// Errors of the listing book.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// Storage or the model failed.
    #[error(transparent)]
    Kb(#[from] KbError),
    /// No listing with this number or id.
    #[error("no listing {0}")]
    NotFound(String),
    /// The status change is not allowed.
    #[error("a demand {from} cannot become {to}")]
    BadTransition {
        /// Current status.
        from: &'static str,
        /// Wanted status.
        to: &'static str,
    },
    /// Only published demands can be claimed.
    #[error("demand {number} is {status}; only published demands can be claimed")]
    NotClaimable {
        /// The demand.
        number: String,
        /// Its status.
        status: &'static str,
    },
    /// A field is missing or malformed.
    #[error("invalid listing: {0}")]
    Invalid(String),
    /// The serial-number counter could not be reached.
    #[error("serial counter unavailable: {0}")]
    Serials(String),
}

impl From<StoreError> for ListingError {
    fn from(error: StoreError) -> Self {
        Self::Kb(KbError::Store(error))
    }
}

impl From<embeddings::EmbedError> for ListingError {
    fn from(error: embeddings::EmbedError) -> Self {
        Self::Kb(KbError::Embed(error))
    }
}

/// Hands out listing serial numbers, one sequence per prefix and year.
///
/// The embedded default counts in process ([`LocalSerials`]); a
/// multi-instance deployment needs a shared counter (the bot crate counts
/// in Redis), because Qdrant has no atomic increment.
#[async_trait::async_trait]
pub trait SerialSource: Send + Sync + 'static {
    /// The next serial of `sequence` (`XQ-2026`), above `floor` (the
    /// highest serial already stored).
    async fn next(&self, sequence: &str, floor: u64) -> Result<u64, ListingError>;
}

/// In-process serials for a single instance.
#[derive(Debug, Default)]
pub struct LocalSerials {
    last: Mutex<std::collections::HashMap<String, u64>>,
}

#[async_trait::async_trait]
impl SerialSource for LocalSerials {
    async fn next(&self, sequence: &str, floor: u64) -> Result<u64, ListingError> {
        let mut last = self.last.lock();
        let current = last.entry(sequence.to_owned()).or_insert(0);
        *current = (*current).max(floor) + 1;
        Ok(*current)
    }
}

/// A capability holder's claim, as submitted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewClaim {
    /// The claiming capability's number or id.
    pub capability: String,
    /// What they propose.
    #[serde(default)]
    pub note: String,
}

/// A staff member's change to a demand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct StaffUpdate {
    /// The new status, if it changes.
    #[serde(default)]
    pub status: Option<DemandStatus>,
    /// The staff member taking the demand on, if it changes.
    #[serde(default)]
    pub staff: Option<String>,
    /// A service-plan note to add.
    #[serde(default)]
    pub plan_note: Option<String>,
    /// What to tell the filer (the log line); a default is written when empty.
    #[serde(default)]
    pub message: Option<String>,
}

/// The listings: demands and capabilities on a point store.
pub struct ListingBook {
    store: Arc<dyn PointStore>,
    embedder: embeddings::Embedder,
    analyzer: Arc<Analyzer>,
    serials: Arc<dyn SerialSource>,
    /// The highest serial stored per sequence, read once per process: the
    /// serial source counts from there.
    floors: tokio::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Held across every read-check-write of a listing (filing, claims,
    /// staff changes), so two concurrent changes in this process cannot
    /// both pass a check or overwrite each other. Instances of a server
    /// deployment do not share it: there two "确认" of one form at the same
    /// moment could still both file (the engine's per-message dedup and
    /// the id derived from the form make the second overwrite the first).
    writes: tokio::sync::Mutex<()>,
    /// Vectors of demands whose summary a user is reading, by embedding
    /// text: started by [`Self::prepare_demand`], taken by the filing.
    prepared: Mutex<lru::LruCache<String, Arc<tokio::sync::OnceCell<Vec<f32>>>>>,
}

/// Demand vectors kept ready per process (a few minutes of summaries on a
/// busy instance; each is 1.5 KB).
const PREPARED_DEMANDS: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(1024) {
    Some(capacity) => capacity,
    None => panic!("capacity is not zero"),
};

impl std::fmt::Debug for ListingBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListingBook")
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

fn demands_spec(dimension: usize) -> CollectionSpec {
    CollectionSpec {
        name: DEMANDS.into(),
        dense_dim: Some(dimension),
        lexical: false,
        keyword_fields: vec![
            "number",
            "status",
            "field",
            "region",
            "filer_user",
            "external_key",
        ],
        lookup_fields: Vec::new(),
        integer_fields: vec!["year"],
        datetime_fields: Vec::new(),
    }
}

fn capabilities_spec(dimension: usize) -> CollectionSpec {
    CollectionSpec {
        name: CAPABILITIES.into(),
        dense_dim: Some(dimension),
        lexical: false,
        keyword_fields: vec!["number", "fields", "region", "external_key"],
        lookup_fields: Vec::new(),
        integer_fields: vec!["year"],
        datetime_fields: Vec::new(),
    }
}

/// A stable id from a listing's origin: the same origin always gives the
/// same id, so filing twice overwrites instead of duplicating.
pub fn listing_id(kind: &str, origin: &str) -> Uuid {
    let digest = Sha256::digest(format!("{kind}\u{0}{origin}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The year and serial of a listing number (`XQ-2026-000123` → (2026, 123)).
pub fn parse_number(number: &str) -> Option<(i32, u64)> {
    let mut parts = number.split('-');
    let _prefix = parts.next()?;
    let year = parts.next()?.parse().ok()?;
    let serial = parts.next()?.parse().ok()?;
    Some((year, serial))
}

static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    // Runs of digits with the separators people type inside phone numbers
    // (138-0012-3456, 13800-0123-48, 028 8765 4321, full-width dashes): the
    // same runs the form reads phone numbers from, so whatever it could
    // take for a number is masked.
    Regex::new(r"[0-9０-９][0-9０-９\s\-－]{5,}[0-9０-９]").expect("valid regex")
});

/// Masks every phone number in a text, keeping the first three and last
/// four digits of a mobile (138****5678), for logs and public lists.
pub fn mask_phones(text: &str) -> String {
    PHONE
        .replace_all(text, |found: &regex::Captures<'_>| {
            let digits: String = found[0]
                .chars()
                .filter_map(|c| c.to_digit(10).or_else(|| full_width_digit(c)))
                .filter_map(|d| char::from_digit(d, 10))
                .collect();
            // Shorter runs are amounts and dates (20260331, 500000), not phones.
            if digits.len() < 9 {
                return found[0].to_owned();
            }
            mask_phone(&digits)
        })
        .into_owned()
}

fn full_width_digit(c: char) -> Option<u32> {
    ('０'..='９').contains(&c).then(|| c as u32 - '０' as u32)
}

/// Masks one phone number given as digits.
pub fn mask_phone(digits: &str) -> String {
    let count = digits.chars().count();
    if count < 7 {
        return "*".repeat(count);
    }
    let head: String = digits.chars().take(3).collect();
    let tail: String = digits.chars().skip(count - 4).collect();
    format!("{head}{}{tail}", "*".repeat(count - 7))
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The year in China, which numbers are counted by (at 01:00 on 1 January
/// in China it is still the old year in UTC).
fn current_year() -> i32 {
    OffsetDateTime::now_utc()
        .to_offset(time::macros::offset!(+8))
        .year()
}

/// Reads a stored listing back; a payload that does not parse is reported
/// as corrupt with its collection and id.
fn decode<T: serde::de::DeserializeOwned>(
    collection: &'static str,
    id: Uuid,
    payload: Payload,
) -> Result<T, ListingError> {
    serde_json::from_value(serde_json::Value::Object(payload)).map_err(|error| {
        ListingError::Kb(KbError::Corrupt {
            collection,
            id,
            message: error.to_string(),
        })
    })
}

impl ListingBook {
    /// Opens the listings on a store, creating the collections if missing.
    pub async fn open(
        store: Arc<dyn PointStore>,
        embedder: embeddings::Embedder,
        analyzer: Arc<Analyzer>,
        serials: Arc<dyn SerialSource>,
    ) -> Result<Self, ListingError> {
        let dimension = embedder.dimension();
        store.ensure_collection(&demands_spec(dimension)).await?;
        store
            .ensure_collection(&capabilities_spec(dimension))
            .await?;
        Ok(Self {
            store,
            embedder,
            analyzer,
            serials,
            floors: tokio::sync::Mutex::default(),
            writes: tokio::sync::Mutex::default(),
            prepared: Mutex::new(lru::LruCache::new(PREPARED_DEMANDS)),
        })
    }

    /// Starts embedding a demand that is about to be filed (the user is
    /// shown its summary to confirm), so that filing finds its vector
    /// ready instead of waiting for the model. Only this process keeps it:
    /// a confirmation that reaches another instance, or comes after many
    /// other summaries, embeds the demand again. Outside a Tokio runtime it
    /// does nothing.
    pub fn prepare_demand(&self, content: &DemandContent) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let text = content.embedding_text();
        let cell = {
            let mut prepared = self.prepared.lock();
            if prepared.contains(&text) {
                return;
            }
            let cell = Arc::new(tokio::sync::OnceCell::new());
            prepared.put(text.clone(), Arc::clone(&cell));
            cell
        };
        let embedder = self.embedder.clone();
        runtime.spawn(async move {
            let computed = cell
                .get_or_try_init(|| async { embedder.embed_passage(&text).await })
                .await;
            if let Err(error) = computed {
                // The filing embeds the demand itself then.
                tracing::debug!(%error, "could not prepare a demand's vector");
            }
        });
    }

    async fn allocate(&self, collection: &str, prefix: &str) -> Result<String, ListingError> {
        let year = current_year();
        let sequence = format!("{prefix}-{year}");
        let mut floors = self.floors.lock().await;
        let floor = match floors.get(&sequence) {
            Some(floor) => *floor,
            None => {
                let stored = scroll_all(
                    &*self.store,
                    collection,
                    Filter::must(Condition::IntegerIn {
                        field: "year",
                        values: vec![i64::from(year)],
                    }),
                )
                .await?;
                let floor = stored
                    .iter()
                    .filter_map(|r| r.payload.get("number")?.as_str().and_then(parse_number))
                    .map(|(_, serial)| serial)
                    .max()
                    .unwrap_or(0);
                floors.insert(sequence.clone(), floor);
                floor
            }
        };
        drop(floors);
        let serial = self.serials.next(&sequence, floor).await?;
        Ok(format!("{sequence}-{serial:06}"))
    }

    fn demand_point(&self, demand: &Demand, vector: Vec<f32>) -> NewPoint {
        NewPoint {
            id: demand.id,
            dense: Some(vector),
            lexical: None,
            payload: demand_payload(demand),
        }
    }

    /// Rewrites a stored demand whose content (the embedded text) is
    /// unchanged: a status, a claim, a log line. Its vector stays as it was,
    /// so no model pass is needed.
    async fn rewrite_demand(&self, demand: &Demand) -> Result<(), ListingError> {
        self.store
            .replace_payload(DEMANDS, demand.id, demand_payload(demand))
            .await?;
        Ok(())
    }

    /// Writes a demand whose vector is already computed.
    async fn store_demand(&self, demand: &Demand, vector: Vec<f32>) -> Result<(), ListingError> {
        let point = self.demand_point(demand, vector);
        self.store.upsert(DEMANDS, vec![point]).await?;
        Ok(())
    }

    /// Checks a demand about to be filed and returns its vector: the one
    /// [`Self::prepare_demand`] computed (or is computing) for this text,
    /// else a new one. A prepared vector is taken: a demand is filed once.
    /// Checking first means an invalid demand costs no embedding.
    async fn vector_for_filing(&self, content: &DemandContent) -> Result<Vec<f32>, ListingError> {
        validate_demand(content)?;
        let text = content.embedding_text();
        let prepared = self.prepared.lock().pop(&text);
        let Some(cell) = prepared else {
            return Ok(self.embedder.embed_passage(&text).await?);
        };
        let vector = cell
            .get_or_try_init(|| self.embedder.embed_passage(&text))
            .await?;
        Ok(vector.clone())
    }

    /// A demand's vector, embedded now (matching a demand not filed
    /// through this book); prepared vectors are left for their filing.
    async fn embed_demand(&self, content: &DemandContent) -> Result<Vec<f32>, ListingError> {
        Ok(self
            .embedder
            .embed_passage(&content.embedding_text())
            .await?)
    }

    /// Files a demand. `origin` identifies where it came from (a chat
    /// form's id, an import key): filing the same origin again returns the
    /// demand filed the first time.
    pub async fn file_demand(
        &self,
        origin: &str,
        content: DemandContent,
        filed_by: Option<Filer>,
    ) -> Result<Demand, ListingError> {
        let vector = self.vector_for_filing(&content).await?;
        self.file(
            origin,
            content,
            filed_by,
            DemandStatus::PendingReview,
            None,
            vector,
        )
        .await
    }

    /// Files a demand, as [`Self::file_demand`], and finds the capabilities
    /// that fit it, as [`Self::matches`]: the demand's text is embedded
    /// once for both, and matching runs while the demand is written.
    pub async fn file_demand_and_match(
        &self,
        origin: &str,
        content: DemandContent,
        filed_by: Option<Filer>,
        limit: usize,
    ) -> Result<(Demand, Vec<Match>), ListingError> {
        let vector = self.vector_for_filing(&content).await?;
        tokio::try_join!(
            self.file(
                origin,
                content.clone(),
                filed_by,
                DemandStatus::PendingReview,
                None,
                vector.clone(),
            ),
            self.matches_by_vector(&content, vector, limit),
        )
    }

    async fn file(
        &self,
        origin: &str,
        content: DemandContent,
        filed_by: Option<Filer>,
        status: DemandStatus,
        external_key: Option<String>,
        // From [`Self::vector_for_filing`], which also checked the content,
        // computed before the write lock is taken: the vector depends on the
        // content alone, and the model's tens of milliseconds would
        // otherwise queue every other filing behind this one. A retry of an
        // origin already filed pays for one embedding it does not use.
        vector: Vec<f32>,
    ) -> Result<Demand, ListingError> {
        let _writing = self.writes.lock().await;
        let id = listing_id("demand", origin);
        if let Some(existing) = self.demand_by_id(id).await? {
            return Ok(existing);
        }
        let number = self.allocate(DEMANDS, "XQ").await?;
        let at = now();
        let mut log = vec![LogLine {
            at,
            actor: if filed_by.is_some() { "user" } else { "system" }.to_owned(),
            status: DemandStatus::PendingReview,
            text: "需求已登记，等待工作人员审核".to_owned(),
        }];
        if status != DemandStatus::PendingReview {
            log.push(LogLine {
                at,
                actor: "system".to_owned(),
                status,
                text: format!("导入时状态为{}", status.as_str()),
            });
        }
        let demand = Demand {
            id,
            number,
            content,
            filed_by,
            status,
            staff: None,
            plan_notes: Vec::new(),
            claims: Vec::new(),
            log,
            filed_at: at,
            external_key,
        };
        self.store_demand(&demand, vector).await?;
        Ok(demand)
    }

    /// Imports a demand from a file row keyed by `key`; an existing demand
    /// with that key is kept as it is (its life since import is not undone).
    pub async fn import_demand(
        &self,
        key: &str,
        content: DemandContent,
        status: DemandStatus,
    ) -> Result<(Demand, bool), ListingError> {
        let origin = format!("import:{key}");
        if let Some(existing) = self.demand_by_id(listing_id("demand", &origin)).await? {
            return Ok((existing, false));
        }
        let vector = self.vector_for_filing(&content).await?;
        let demand = self
            .file(&origin, content, None, status, Some(key.to_owned()), vector)
            .await?;
        Ok((demand, true))
    }

    async fn demand_by_id(&self, id: Uuid) -> Result<Option<Demand>, ListingError> {
        let Some(record) = self.store.get(DEMANDS, vec![id]).await?.pop() else {
            return Ok(None);
        };
        decode(DEMANDS, id, record.payload).map(Some)
    }

    /// The demand with this number (`XQ-2026-000123`) or id.
    pub async fn demand(&self, number_or_id: &str) -> Result<Option<Demand>, ListingError> {
        if let Ok(id) = Uuid::parse_str(number_or_id) {
            return self.demand_by_id(id).await;
        }
        let records = self
            .store
            .scroll(
                DEMANDS,
                Filter::must(Condition::keyword("number", number_or_id.trim())),
                None,
                1,
            )
            .await?
            .0;
        let Some(record) = records.into_iter().next() else {
            return Ok(None);
        };
        let id = record.id;
        decode(DEMANDS, id, record.payload).map(Some)
    }

    /// Demands, newest first, optionally of one status or one filer.
    pub async fn demands(
        &self,
        status: Option<DemandStatus>,
        filer_user: Option<&str>,
    ) -> Result<Vec<Demand>, ListingError> {
        let mut filter = Filter::default();
        if let Some(status) = status {
            filter = filter.and(Condition::keyword("status", status.as_str()));
        }
        if let Some(user) = filer_user {
            filter = filter.and(Condition::keyword("filer_user", user));
        }
        let mut demands = Vec::new();
        for record in scroll_all(&*self.store, DEMANDS, filter).await? {
            demands.push(decode::<Demand>(DEMANDS, record.id, record.payload)?);
        }
        demands.sort_by(|a, b| b.filed_at.cmp(&a.filed_at).then(b.number.cmp(&a.number)));
        Ok(demands)
    }

    /// Applies a staff member's change: status (checked), staff, a plan
    /// note; logs it with `actor`.
    pub async fn update_demand(
        &self,
        number: &str,
        update: StaffUpdate,
        actor: &str,
    ) -> Result<Demand, ListingError> {
        let _writing = self.writes.lock().await;
        let mut demand = self
            .demand(number)
            .await?
            .ok_or_else(|| ListingError::NotFound(number.to_owned()))?;
        let mut said = Vec::new();
        if let Some(next) = update.status.filter(|next| *next != demand.status) {
            if !demand.status.can_become(next) {
                return Err(ListingError::BadTransition {
                    from: demand.status.as_str(),
                    to: next.as_str(),
                });
            }
            demand.status = next;
            said.push(format!("状态变为{}", next.as_str()));
        }
        if let Some(staff) = update.staff.filter(|s| !s.trim().is_empty()) {
            said.push(format!("由{}跟进", staff.trim()));
            demand.staff = Some(staff.trim().to_owned());
        }
        if let Some(note) = update.plan_note.filter(|n| !n.trim().is_empty()) {
            demand.plan_notes.push(note.trim().to_owned());
            said.push("服务方案已更新".to_owned());
        }
        if said.is_empty() && update.message.is_none() {
            return Ok(demand);
        }
        let text = update
            .message
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| said.join("，"));
        demand.log.push(LogLine {
            at: now(),
            actor: actor.to_owned(),
            status: demand.status,
            text,
        });
        if demand.status == DemandStatus::Cooperating {
            self.record_cooperations(&demand).await?;
        }
        self.rewrite_demand(&demand).await?;
        Ok(demand)
    }

    async fn record_cooperations(&self, demand: &Demand) -> Result<(), ListingError> {
        for claim in &demand.claims {
            let Some(mut capability) = self.capability_by_id(claim.capability_id).await? else {
                continue;
            };
            if !capability.cooperations.contains(&demand.number) {
                capability.cooperations.push(demand.number.clone());
                self.rewrite_capability(&capability).await?;
            }
        }
        Ok(())
    }

    /// Records a capability holder's claim (揭榜) of a published demand;
    /// claiming twice with the same capability keeps the first claim.
    pub async fn claim(&self, number: &str, claim: NewClaim) -> Result<Demand, ListingError> {
        let _writing = self.writes.lock().await;
        let mut demand = self
            .demand(number)
            .await?
            .ok_or_else(|| ListingError::NotFound(number.to_owned()))?;
        if !matches!(
            demand.status,
            DemandStatus::Published | DemandStatus::Matching
        ) {
            return Err(ListingError::NotClaimable {
                number: demand.number,
                status: demand.status.as_str(),
            });
        }
        let capability = self
            .capability(&claim.capability)
            .await?
            .ok_or_else(|| ListingError::NotFound(claim.capability.clone()))?;
        if demand
            .claims
            .iter()
            .any(|c| c.capability_id == capability.id)
        {
            return Ok(demand);
        }
        let at = now();
        demand.claims.push(Claim {
            capability_id: capability.id,
            capability_number: capability.number.clone(),
            capability_name: capability.content.name.clone(),
            note: mask_phones(claim.note.trim()),
            at,
        });
        if demand.status == DemandStatus::Published {
            demand.status = DemandStatus::Matching;
        }
        demand.log.push(LogLine {
            at,
            actor: format!("capability:{}", capability.number),
            status: demand.status,
            text: format!(
                "{}（{}）揭榜",
                capability.content.name, capability.content.organisation
            ),
        });
        self.rewrite_demand(&demand).await?;
        Ok(demand)
    }

    async fn write_capability(&self, capability: &Capability) -> Result<(), ListingError> {
        let vector = self
            .embedder
            .embed_passage(&capability.embedding_text())
            .await?;
        self.store
            .upsert(
                CAPABILITIES,
                vec![NewPoint {
                    id: capability.id,
                    dense: Some(vector),
                    lexical: None,
                    payload: capability_payload(capability),
                }],
            )
            .await?;
        Ok(())
    }

    /// Rewrites a stored capability whose content is unchanged (its
    /// cooperations), keeping its vector.
    async fn rewrite_capability(&self, capability: &Capability) -> Result<(), ListingError> {
        self.store
            .replace_payload(CAPABILITIES, capability.id, capability_payload(capability))
            .await?;
        Ok(())
    }

    /// Lists a capability; the same `origin` again returns the first listing.
    pub async fn offer_capability(
        &self,
        origin: &str,
        content: CapabilityContent,
        offered_by: Option<Filer>,
        external_key: Option<String>,
    ) -> Result<(Capability, bool), ListingError> {
        validate_capability(&content)?;
        let _writing = self.writes.lock().await;
        let id = listing_id("capability", origin);
        if let Some(existing) = self.capability_by_id(id).await? {
            return Ok((existing, false));
        }
        let number = self.allocate(CAPABILITIES, "SN").await?;
        let capability = Capability {
            id,
            number,
            content,
            offered_by,
            cooperations: Vec::new(),
            listed_at: now(),
            external_key,
        };
        self.write_capability(&capability).await?;
        Ok((capability, true))
    }

    async fn capability_by_id(&self, id: Uuid) -> Result<Option<Capability>, ListingError> {
        let Some(record) = self.store.get(CAPABILITIES, vec![id]).await?.pop() else {
            return Ok(None);
        };
        decode(CAPABILITIES, id, record.payload).map(Some)
    }

    /// The capability with this number (`SN-2026-000012`), import key or id.
    pub async fn capability(&self, key: &str) -> Result<Option<Capability>, ListingError> {
        let key = key.trim();
        if let Ok(id) = Uuid::parse_str(key) {
            return self.capability_by_id(id).await;
        }
        for field in ["number", "external_key"] {
            let records = self
                .store
                .scroll(
                    CAPABILITIES,
                    Filter::must(Condition::keyword(field, key)),
                    None,
                    1,
                )
                .await?
                .0;
            if let Some(record) = records.into_iter().next() {
                return decode(CAPABILITIES, record.id, record.payload).map(Some);
            }
        }
        Ok(None)
    }

    /// Every capability listing.
    pub async fn capabilities(&self) -> Result<Vec<Capability>, ListingError> {
        let mut all = Vec::new();
        for record in scroll_all(&*self.store, CAPABILITIES, Filter::default()).await? {
            all.push(decode::<Capability>(
                CAPABILITIES,
                record.id,
                record.payload,
            )?);
        }
        all.sort_by(|a, b| a.number.cmp(&b.number));
        Ok(all)
    }

    /// The capabilities that fit a demand best, with the reasons: closeness
    /// of meaning, re-ranked by shared field, shared subject words, region
    /// and past cooperations in the field.
    ///
    /// Closeness is between the demand's stored (passage) vector and the
    /// capabilities': a filed demand's one embedding serves both. Against a
    /// query-style embedding of the demand this measured the same on
    /// `kb/eval/matching.jsonl` (by similarity alone, top-1 77/85 for both,
    /// MRR 0.951 against 0.953; with the bonuses 1.000 for both).
    pub async fn matches(
        &self,
        content: &DemandContent,
        limit: usize,
    ) -> Result<Vec<Match>, ListingError> {
        let vector = self.embed_demand(content).await?;
        self.matches_by_vector(content, vector, limit).await
    }

    /// [`Self::matches`] for a demand whose vector is already computed.
    async fn matches_by_vector(
        &self,
        content: &DemandContent,
        vector: Vec<f32>,
        limit: usize,
    ) -> Result<Vec<Match>, ListingError> {
        let text = content.embedding_text();
        let hits = self
            .store
            .search(SearchRequest {
                collection: CAPABILITIES.into(),
                query: QueryVector::Dense(vector),
                filter: Filter::default(),
                limit: MATCH_CANDIDATES,
                exactness: Exactness::Indexed,
            })
            .await?;
        let demand_terms = self.subject_terms(&text);
        let past = self.cooperations_by_field().await?;
        let mut matches = Vec::with_capacity(hits.len());
        for hit in hits {
            let capability: Capability = decode(CAPABILITIES, hit.id, hit.payload)?;
            let capability_terms = self.subject_terms(&capability.embedding_text());
            let mut shared_terms: Vec<String> = demand_terms
                .iter()
                .filter(|t| capability_terms.contains(*t))
                .cloned()
                .collect();
            shared_terms.sort_by(|a, b| {
                self.analyzer
                    .word_weight(b)
                    .total_cmp(&self.analyzer.word_weight(a))
                    .then(b.chars().count().cmp(&a.chars().count()))
            });
            // 溃疡 says nothing 溃疡病 does not.
            let longer = shared_terms.clone();
            shared_terms.retain(|term| {
                !longer
                    .iter()
                    .any(|other| other != term && other.contains(term.as_str()))
            });
            shared_terms.truncate(5);
            let same_field =
                !content.field.is_empty() && capability.content.fields.contains(&content.field);
            let same_region =
                !content.region.is_empty() && capability.content.region == content.region;
            let past_cooperations: Vec<String> = capability
                .cooperations
                .iter()
                .filter(|number| {
                    past.iter()
                        .any(|(n, field)| n == *number && *field == content.field)
                })
                .cloned()
                .collect();
            let score = hit.score
                + if same_field { FIELD_WEIGHT } else { 0.0 }
                + if same_region { REGION_WEIGHT } else { 0.0 }
                + PAST_COOPERATION_WEIGHT * past_cooperations.len().min(2) as f32
                + SHARED_TERM_WEIGHT * shared_terms.len().min(4) as f32;
            matches.push(Match {
                similarity: hit.score,
                score,
                reasons: MatchReasons {
                    shared_terms,
                    same_field,
                    same_region,
                    past_cooperations,
                },
                capability,
            });
        }
        matches.sort_by(|a, b| b.score.total_cmp(&a.score));
        matches.truncate(limit);
        Ok(matches)
    }

    /// The words of a text worth naming as a reason: dictionary terms and
    /// longer words, not function words.
    fn subject_terms(&self, text: &str) -> BTreeSet<String> {
        self.analyzer
            .index_tokens(text)
            .into_iter()
            .filter(|token| {
                let chars = token.chars().count();
                (self.analyzer.is_term(token) || chars >= 2)
                    && token.chars().all(|c| !c.is_ascii_punctuation())
                    && !STOP_WORDS.contains(&token.as_str())
            })
            .collect()
    }

    async fn cooperations_by_field(&self) -> Result<Vec<(String, String)>, ListingError> {
        Ok(self
            .demands(Some(DemandStatus::Cooperating), None)
            .await?
            .into_iter()
            .map(|d| (d.number, d.content.field))
            .collect())
    }

    /// Demands closest in meaning to a text (for staff searching listings).
    pub async fn search_demands(
        &self,
        text: &str,
        limit: usize,
    ) -> Result<Vec<(Demand, f32)>, ListingError> {
        let vector = self
            .embedder
            .embed_query(&self.analyzer.embedding_text(text))
            .await?;
        let hits = self
            .store
            .search(SearchRequest {
                collection: DEMANDS.into(),
                query: QueryVector::Dense(vector),
                filter: Filter::default(),
                limit,
                exactness: Exactness::Indexed,
            })
            .await?;
        hits.into_iter()
            .map(|hit| decode::<Demand>(DEMANDS, hit.id, hit.payload).map(|d| (d, hit.score)))
            .collect()
    }
}

/// Which kind of listing a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingKind {
    /// Demand listings.
    Demands,
    /// Capability listings.
    Capabilities,
}

/// What an import of listings did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListingImportReport {
    /// Listings added.
    pub added: usize,
    /// Rows whose key was already imported (kept as they are).
    pub kept: usize,
    /// Rows rejected: line number and why. Other rows are still imported.
    pub errors: Vec<(usize, String)>,
}

#[derive(Debug, Deserialize)]
struct DemandRow {
    external_key: String,
    title: String,
    field: String,
    problem: String,
    #[serde(default)]
    desired_outcome: Option<String>,
    #[serde(default)]
    budget: Option<String>,
    #[serde(default)]
    deadline: Option<String>,
    region: String,
    organisation: String,
    contact_name: String,
    phone: String,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CapabilityRow {
    external_key: String,
    name: String,
    #[serde(default)]
    kind: Option<String>,
    organisation: String,
    fields: Vec<String>,
    skills: String,
    #[serde(default)]
    achievements: String,
    region: String,
    contact_name: String,
    phone: String,
    #[serde(default)]
    availability: String,
}

fn demand_from_row(row: DemandRow) -> Result<(String, DemandContent, DemandStatus), String> {
    let budget = match row.budget.as_deref().map(str::trim) {
        None | Some("") => Budget::default(),
        Some(text) => crate::phrases::read_budget(text, true)
            .map(|reading| reading.budget)
            .ok_or_else(|| format!("budget {text:?} is not an amount"))?,
    };
    let deadline = match row.deadline.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            let by = Date::parse(text, &format)
                .map_err(|_| format!("deadline {text:?} is not YYYY-MM-DD"))?;
            Some(Deadline {
                text: text.to_owned(),
                by: Some(by),
            })
        }
    };
    let regions = crate::region::Regions::builtin();
    let place = regions.find(&row.region).ok_or_else(|| {
        format!(
            "region {:?} is not a city or county of the province",
            row.region
        )
    })?;
    let status = match row.status.as_deref() {
        None => DemandStatus::Published,
        Some(name) => {
            DemandStatus::parse(name).ok_or_else(|| format!("unknown status {name:?}"))?
        }
    };
    Ok((
        row.external_key,
        DemandContent {
            title: row.title,
            field: row.field,
            problem: row.problem,
            desired_outcome: row.desired_outcome,
            budget,
            deadline,
            region: place.city,
            county: place.county,
            organisation: row.organisation,
            contact: Contact {
                name: row.contact_name,
                phone: row.phone,
            },
        },
        status,
    ))
}

impl ListingBook {
    /// Imports listings from JSONL (the format of `kb/demo/demands.jsonl`
    /// and `kb/demo/capabilities.jsonl`). Rows are keyed by `external_key`:
    /// importing a file again adds only new rows. A bad row is reported
    /// with its line number and does not stop the others.
    pub async fn import_jsonl(
        &self,
        kind: ListingKind,
        text: &str,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<ListingImportReport, ListingError> {
        let rows: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty())
            .collect();
        let mut report = ListingImportReport::default();
        for (done, (line_number, line)) in rows.iter().enumerate() {
            progress(done, rows.len());
            let outcome = match kind {
                ListingKind::Demands => self.import_demand_line(line).await,
                ListingKind::Capabilities => self.import_capability_line(line).await,
            };
            match outcome {
                Ok(true) => report.added += 1,
                Ok(false) => report.kept += 1,
                Err(ListingError::Invalid(message)) => report.errors.push((*line_number, message)),
                Err(other) => return Err(other),
            }
        }
        progress(rows.len(), rows.len());
        Ok(report)
    }

    async fn import_demand_line(&self, line: &str) -> Result<bool, ListingError> {
        let row: DemandRow =
            serde_json::from_str(line).map_err(|e| ListingError::Invalid(e.to_string()))?;
        let (key, content, status) = demand_from_row(row).map_err(ListingError::Invalid)?;
        let (_, added) = self.import_demand(&key, content, status).await?;
        Ok(added)
    }

    async fn import_capability_line(&self, line: &str) -> Result<bool, ListingError> {
        let row: CapabilityRow =
            serde_json::from_str(line).map_err(|e| ListingError::Invalid(e.to_string()))?;
        let place = crate::region::Regions::builtin()
            .find(&row.region)
            .ok_or_else(|| {
                ListingError::Invalid(format!("region {:?} is not in the province", row.region))
            })?;
        let content = CapabilityContent {
            name: row.name,
            kind: row.kind.unwrap_or_else(|| "专家".to_owned()),
            organisation: row.organisation,
            fields: row.fields,
            skills: row.skills,
            achievements: row.achievements,
            region: place.city,
            contact: Contact {
                name: row.contact_name,
                phone: row.phone,
            },
            availability: row.availability,
        };
        let origin = format!("import:{}", row.external_key);
        let (_, added) = self
            .offer_capability(&origin, content, None, Some(row.external_key))
            .await?;
        Ok(added)
    }
}

/// Words too common in listings to be a reason for a match.
const STOP_WORDS: &[&str] = &[
    "我们",
    "想找",
    "专家",
    "技术",
    "问题",
    "公司",
    "企业",
    "希望",
    "提供",
    "可以",
    "需要",
    "帮忙",
    "一个",
    "进行",
    "没有",
    "这个",
    "目前",
    "示例",
    "有限公司",
    "方面",
    "现在",
    "解决",
    "合作",
    "服务",
    "指导",
    "方案",
];

/// A demand's stored payload: the demand, plus the fields its listings
/// filter by.
fn demand_payload(demand: &Demand) -> Payload {
    let mut payload = to_payload(demand);
    let year = parse_number(&demand.number).map_or(0, |(year, _)| year);
    payload.insert("year".into(), year.into());
    if let Some(filer) = &demand.filed_by {
        payload.insert("filer_user".into(), filer.user.clone().into());
    }
    payload
}

/// A capability's stored payload: the capability and its number's year.
fn capability_payload(capability: &Capability) -> Payload {
    let mut payload = to_payload(capability);
    let year = parse_number(&capability.number).map_or(0, |(year, _)| year);
    payload.insert("year".into(), year.into());
    payload
}

fn validate_demand(content: &DemandContent) -> Result<(), ListingError> {
    let missing: Vec<&str> = [
        ("title", content.title.trim().is_empty()),
        ("problem", content.problem.trim().is_empty()),
        ("field", content.field.trim().is_empty()),
        ("region", content.region.trim().is_empty()),
        ("organisation", content.organisation.trim().is_empty()),
        ("contact.name", content.contact.name.trim().is_empty()),
        ("contact.phone", content.contact.phone.trim().is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, missing)| missing.then_some(name))
    .collect();
    if !missing.is_empty() {
        return Err(ListingError::Invalid(format!(
            "missing {}",
            missing.join(", ")
        )));
    }
    if let (Some(low), Some(high)) = (content.budget.min_yuan, content.budget.max_yuan)
        && low > high
    {
        return Err(ListingError::Invalid(format!(
            "budget minimum {low} is above its maximum {high}"
        )));
    }
    Ok(())
}

fn validate_capability(content: &CapabilityContent) -> Result<(), ListingError> {
    let missing: Vec<&str> = [
        ("name", content.name.trim().is_empty()),
        ("skills", content.skills.trim().is_empty()),
        ("fields", content.fields.is_empty()),
        ("contact.phone", content.contact.phone.trim().is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, missing)| missing.then_some(name))
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ListingError::Invalid(format!(
            "missing {}",
            missing.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_life_cycle_only_moves_forward() {
        use DemandStatus::*;
        assert!(PendingReview.can_become(Published));
        assert!(Published.can_become(Matching));
        assert!(Matching.can_become(Cooperating));
        assert!(!Closed.can_become(Published));
        assert!(!Cooperating.can_become(Matching));
        assert!(!PendingReview.can_become(Cooperating));
        for status in DemandStatus::ALL {
            assert_eq!(DemandStatus::parse(status.as_str()), Some(status));
            assert!(!status.can_become(status));
        }
    }

    #[test]
    fn phones_are_masked_wherever_they_appear() {
        assert_eq!(mask_phones("张工 13800012345"), "张工 138****2345");
        assert_eq!(mask_phones("电话138-0012-3456。"), "电话138****3456。");
        assert_eq!(mask_phones("座机028-87654321"), "座机028****4321");
        assert_eq!(mask_phones("预算20万"), "预算20万");
        assert_eq!(mask_phones("白经理 13800-0123-48"), "白经理 138****2348");
        assert_eq!(mask_phones("请打028-8765-4321"), "请打028****4321");
        assert_eq!(mask_phones("手机１３８０００１２３４５"), "手机138****2345");
        assert_eq!(mask_phones("2027-03-31前完成"), "2027-03-31前完成");
    }

    #[test]
    fn ids_are_stable_per_origin_and_numbers_parse() {
        assert_eq!(listing_id("demand", "a"), listing_id("demand", "a"));
        assert_ne!(listing_id("demand", "a"), listing_id("capability", "a"));
        assert_eq!(parse_number("XQ-2026-000123"), Some((2026, 123)));
        assert_eq!(parse_number("XQ-2026"), None);
    }

    #[test]
    fn budgets_read_as_people_write_them() {
        let budget = |min, max| Budget {
            min_yuan: min,
            max_yuan: max,
            negotiable: false,
        };
        assert_eq!(budget(Some(200_000), Some(200_000)).describe(), "20万左右");
        assert_eq!(budget(Some(50_000), Some(100_000)).describe(), "5万–10万");
        assert_eq!(budget(None, Some(500_000)).describe(), "50万以内");
        assert_eq!(budget(Some(15_000), None).describe(), "1.5万以上");
        assert_eq!(budget(None, None).describe(), "面议");
    }

    #[tokio::test]
    async fn local_serials_never_repeat_and_respect_the_floor() {
        let serials = LocalSerials::default();
        assert_eq!(serials.next("XQ-2026", 0).await.ok(), Some(1));
        assert_eq!(serials.next("XQ-2026", 0).await.ok(), Some(2));
        assert_eq!(serials.next("XQ-2026", 10).await.ok(), Some(11));
        assert_eq!(serials.next("SN-2026", 0).await.ok(), Some(1));
    }
}
