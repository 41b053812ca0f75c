//! The knowledge base service: entries, their revisions and the published
//! search index, on any [`PointStore`].
//!
//! Three collections hold the state:
//! - `entries`: one point per entry, the payload is the whole [`Entry`];
//! - `revisions`: one point per recorded change ([`Revision`]);
//! - the search index, reached through the alias `index`: one point per
//!   phrasing (question and each alternative) and one per answer, of
//!   **published** entries only, each with a dense vector and a BM25 vector.
//!
//! A change touches several collections, so it is first written whole to a
//! fourth collection, `journal`, then applied, then the journal point is
//! removed. Opening the knowledge base re-applies whatever a crash left in
//! the journal; every step is an idempotent upsert or delete by id, so
//! re-applying is safe. A change is acknowledged only after all of it is
//! applied.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;

use embeddings::{Embedder, TextKind};
use lru::LruCache;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::entry::{Category, Entry, EntryContent, EntryId, Status};
use crate::freshness::{ChangeTopic, Freshness, MarkWatch, announce_change, watch_marks};
use crate::import::ParsedRow;
use crate::lexical;
use crate::read_cache::{ReadCache, ReadStamp};
use crate::retrieval::{Calibration, Candidate, Features, WeightedWord, rank_candidates};
use crate::store::{
    CollectionSpec, Condition, Exactness, Filter, NewPoint, Order, Payload, PointStore,
    QueryVector, Record, SearchRequest, StoreError, scroll_all, to_payload,
};
use crate::subjects::EntryMentions;
use crate::text::{AnalyzedQuery, Analyzer};
use crate::workflow::{self, Action, Revision, WorkflowError};

const ENTRIES: &str = "entries";
/// The entries' payload field of [`search_terms`], for the editors' list search.
const SEARCH_TERMS: &str = "search_terms";
/// Marks entry points whose [`SEARCH_TERMS`] follow the current rule, so
/// opening an older data directory knows which points to rewrite.
const TERMS_VERSION: &str = "search_terms_version";
const CURRENT_TERMS_VERSION: &str = "1";
/// The most needle terms one list search filters on.
const MAX_NEEDLE_TERMS: usize = 16;
const REVISIONS: &str = "revisions";
const JOURNAL: &str = "journal";
const INDEX_ALIAS: &str = "index";
/// The version of what the analyzer stores in index points (canonical
/// forms, lexical tokens, embedding texts). Bump it when normalisation,
/// segmentation or the shipped dictionaries change what a stored text
/// becomes, so every index built before is rebuilt on open. 2: digits
/// no longer fold ("1000" stayed "10").
const INDEX_TEXT_VERSION: u32 = 2;
/// Typical token count of a phrasing and of an answer, for BM25 length
/// normalisation (public for `wenke bench kb`, which builds points alike).
pub const PHRASING_AVERAGE_TOKENS: f32 = 8.0;
/// See [`PHRASING_AVERAGE_TOKENS`].
pub const ANSWER_AVERAGE_TOKENS: f32 = 60.0;
/// Candidates fetched from each of the dense and lexical searches.
const CANDIDATES_PER_SIGNAL: usize = 40;
/// Entries embedded and written per step of an import or re-index.
const BATCH: usize = 32;
/// Query vectors kept (384 floats each: ~6 MB in all). People ask the
/// same things again and again, and the model is the slowest step.
const EMBEDDING_CACHE: usize = 4096;
/// Search results kept (see [`ReadCache`] for how long).
const SEARCH_CACHE: usize = 4096;
/// Published entries kept for searches: the records the answers of
/// frequent questions come from (~2–5 KB each).
const PUBLISHED_ENTRY_CACHE: usize = 2048;

/// Errors from the knowledge base.
#[derive(Debug, thiserror::Error)]
pub enum KbError {
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The model failed.
    #[error("embedding failed: {0}")]
    Embed(#[from] embeddings::EmbedError),
    /// An editorial rule was broken.
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    /// A list filter is malformed.
    #[error("{0}")]
    BadFilter(String),
    /// No such entry.
    #[error("no entry {0}")]
    NotFound(String),
    /// Stored data could not be read back.
    #[error("corrupt record {id} in {collection}: {message}")]
    Corrupt {
        /// Collection.
        collection: &'static str,
        /// Point id.
        id: Uuid,
        /// What is wrong.
        message: String,
    },
}

/// An entry that is published: the only kind of entry a user-facing answer
/// can be built from. It cannot be constructed from an entry in any other
/// state.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedEntry(Entry);

impl PublishedEntry {
    /// Wraps a published entry; `None` for any other state.
    pub fn new(entry: Entry) -> Option<Self> {
        (entry.status == Status::Published).then_some(Self(entry))
    }

    /// The entry.
    pub fn entry(&self) -> &Entry {
        &self.0
    }
}

impl std::ops::Deref for PublishedEntry {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        &self.0
    }
}

/// Which text of an entry an index point holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhrasingKind {
    /// The canonical question.
    Question,
    /// An alternative phrasing.
    Alternative,
    /// The answer (question plus short answer, as a passage).
    Answer,
}

/// Restricts a search.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SearchFilter {
    /// Only this category.
    pub category: Option<Category>,
    /// Only entries about one of these crops.
    pub crops: Vec<String>,
}

/// Why an entry was returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// The stored text that matched best.
    pub matched_text: String,
    /// Which kind of text it is.
    pub matched_kind: PhrasingKind,
    /// Cosine similarity of the query and that text, if the dense search found it.
    pub dense: Option<f32>,
    /// BM25 score of that text, if the lexical search found it.
    pub lexical: Option<f32>,
    /// Share of the query's words (weighted by length) found in that text.
    pub coverage: f32,
    /// Whether the query equals a published phrasing after normalisation.
    pub exact: bool,
}

/// One ranked entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The entry.
    pub entry: PublishedEntry,
    /// The ranking score (comparable within one search only).
    pub score: f32,
    /// Probability-like confidence that this entry answers the question.
    pub confidence: f32,
    /// What the confidence was computed from.
    pub features: Features,
    /// Why it matched.
    pub evidence: Evidence,
}

/// What the bot should do with a search result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Answer with the top entry.
    Answer,
    /// Offer the top entries as "did you mean".
    Suggest,
    /// Say there is no authoritative answer.
    Abstain,
}

/// The result of a search.
#[derive(Debug, Clone)]
pub struct SearchOutcome {
    /// How the question was read.
    pub query: AnalyzedQuery,
    /// Ranked entries, best first.
    pub hits: Vec<SearchHit>,
    /// What to do, from the top hit's confidence.
    pub decision: Decision,
}

impl SearchOutcome {
    /// The top hit's confidence, 0 when nothing was found.
    pub fn confidence(&self) -> f32 {
        self.hits.first().map_or(0.0, |h| h.confidence)
    }
}

/// Filters for editors' listings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this state.
    pub status: Option<Status>,
    /// Only this category.
    pub category: Option<Category>,
    /// Only entries about this crop.
    pub crop: Option<String>,
    /// Only entries for this region.
    pub region: Option<String>,
    /// Only entries whose review-by date is before this `YYYY-MM-DD` date.
    pub stale_before: Option<String>,
}

/// How an import treats its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Who is recorded as the author of imported content.
    pub actor: String,
    /// A reviewer who approves every imported entry at once (for material an
    /// institution has already vetted); `None` leaves them as drafts.
    pub approve_as: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// New entries.
    pub created: usize,
    /// Entries whose content changed.
    pub updated: usize,
    /// Rows identical to the stored entry.
    pub unchanged: usize,
    /// Rows not imported, with where and why.
    pub errors: Vec<RowError>,
}

/// A row that could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// Where the row is (line number or file).
    pub origin: String,
    /// What is wrong.
    pub message: String,
}

/// A batch of changes, written to the journal before it is applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    entries: Vec<Entry>,
    revisions: Vec<Revision>,
    /// Index points of earlier versions that the new versions do not overwrite.
    stale_index_points: Vec<Uuid>,
}

/// The knowledge base.
pub struct KnowledgeBase {
    store: Arc<dyn PointStore>,
    embedder: Embedder,
    analyzer: RwLock<Arc<Analyzer>>,
    calibration: Calibration,
    embeddings: Mutex<LruCache<String, Vec<f32>>>,
    searches: ReadCache<(String, SearchFilter), SearchOutcome>,
    /// Entry records as searches read them (published or not: the search
    /// checks).
    entries_read: ReadCache<Uuid, Entry>,
    /// The write generation cached reads are checked against, moved by
    /// every local write and, on a shared store, by the change marks of
    /// other instances. Shared with the tasks that write changes.
    freshness: Arc<Freshness>,
    /// Polls the change mark on a shared store; stops with the knowledge
    /// base.
    _mark_watch: Option<MarkWatch>,
}

/// What published entries are about, for reading follow-up questions; see
/// [`KnowledgeBase::vocabulary`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicVocabulary {
    /// Crop and animal names (the entries' `crops`).
    pub crops: BTreeSet<String>,
    /// Subject words: tags and domain terms that are not crops.
    pub subjects: BTreeSet<String>,
    /// For each tag, the crops of the entries that carry it.
    pub crops_of_subject: std::collections::BTreeMap<String, BTreeSet<String>>,
}

fn cache_size(size: usize) -> NonZeroUsize {
    NonZeroUsize::new(size).unwrap_or(NonZeroUsize::MIN)
}

fn entries_spec() -> CollectionSpec {
    CollectionSpec {
        keyword_fields: vec![
            "status",
            "category",
            "crops",
            "regions",
            "author",
            SEARCH_TERMS,
            TERMS_VERSION,
        ],
        lookup_fields: vec!["external_key"],
        datetime_fields: vec!["updated_at", "review_by"],
        ..CollectionSpec::payload_only(ENTRIES)
    }
}

fn revisions_spec() -> CollectionSpec {
    CollectionSpec {
        keyword_fields: vec!["entry_id"],
        ..CollectionSpec::payload_only(REVISIONS)
    }
}

fn journal_spec() -> CollectionSpec {
    CollectionSpec::payload_only(JOURNAL)
}

/// Leading entries whose answers a search scores against the query.
pub const ANSWERS_SCORED: usize = 3;

/// The search that scores the leading entries' answers against a query
/// vector: an exact search among those entries' answer points, query to
/// passage as e5 was trained for retrieval. Public so that `wenke bench kb`
/// runs the same search.
pub fn answer_scoring_request(
    collection: &str,
    vector: Vec<f32>,
    leading_entries: Vec<String>,
) -> SearchRequest {
    SearchRequest {
        collection: collection.into(),
        query: QueryVector::Dense(vector),
        filter: Filter::must(Condition::KeywordIn {
            field: "entry_id",
            values: leading_entries,
        })
        .and(Condition::keyword("kind", "answer")),
        limit: ANSWERS_SCORED,
        exactness: Exactness::Exact,
    }
}

/// The layout of a search index collection (its vectors and payload
/// indexes). Public so that `wenke bench kb` measures the same layout.
pub fn index_spec(name: String, dim: usize) -> CollectionSpec {
    CollectionSpec {
        name,
        dense_dim: Some(dim),
        lexical: true,
        keyword_fields: vec!["status", "category", "crops", "regions", "kind"],
        lookup_fields: vec!["entry_id", "canonical"],
        integer_fields: vec!["months"],
        datetime_fields: Vec::new(),
    }
}

/// Collection names may hold only ASCII letters, digits, `-` and `_`.
fn slug(model_id: &str) -> String {
    model_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// A stable id derived from a name: the same entry slot always maps to the
/// same index point, so rewriting an entry overwrites its points.
fn derived_id(namespace: Uuid, name: &str) -> Uuid {
    let mut hasher = Sha256::new();
    hasher.update(namespace.as_bytes());
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

fn revision_id(revision: &Revision) -> Uuid {
    derived_id(
        revision.entry_id.0,
        &format!("revision:{}", revision.version),
    )
}

/// The index slots of an entry: its question, each alternative, its answer.
fn index_slots(entry: &Entry) -> Vec<(Uuid, PhrasingKind, String)> {
    let id = entry.id.0;
    let mut slots = vec![(
        derived_id(id, "question"),
        PhrasingKind::Question,
        entry.content.question.clone(),
    )];
    for (i, alt) in entry.content.alt_questions.iter().enumerate() {
        slots.push((
            derived_id(id, &format!("alt:{i}")),
            PhrasingKind::Alternative,
            alt.clone(),
        ));
    }
    slots.push((
        derived_id(id, "answer"),
        PhrasingKind::Answer,
        format!("{}\n{}", entry.content.question, entry.chat_answer()),
    ));
    slots
}

/// Every index point id any valid version of an entry can have: the slots
/// of [`index_slots`] with the most alternatives an entry may hold.
fn possible_index_point_ids(id: EntryId) -> impl Iterator<Item = Uuid> {
    let fixed = [derived_id(id.0, "question"), derived_id(id.0, "answer")];
    let alternatives =
        (0..crate::entry::MAX_ALT_QUESTIONS).map(move |i| derived_id(id.0, &format!("alt:{i}")));
    fixed.into_iter().chain(alternatives)
}

fn from_record<T: for<'de> Deserialize<'de>>(
    collection: &'static str,
    record: Record,
) -> Result<T, KbError> {
    serde_json::from_value(Value::Object(record.payload)).map_err(|e| KbError::Corrupt {
        collection,
        id: record.id,
        message: e.to_string(),
    })
}

/// The texts an editor's list search looks in, normalised.
fn searchable_texts(content: &EntryContent) -> impl Iterator<Item = String> + '_ {
    std::iter::once(&content.question)
        .chain(&content.alt_questions)
        .chain(&content.tags)
        .chain(&content.crops)
        .map(|text| crate::text::normalise(text))
}

/// What an entry says about its subject, for the search's subject check.
fn entry_mentions(content: &EntryContent) -> EntryMentions<'_> {
    let mut texts = Vec::with_capacity(3 + content.alt_questions.len());
    texts.push(content.question.as_str());
    texts.extend(content.alt_questions.iter().map(String::as_str));
    texts.push(content.answer.as_str());
    texts.extend(content.short_answer.as_deref());
    texts.extend(content.tags.iter().map(String::as_str));
    texts.extend(content.crops.iter().map(String::as_str));
    let mut topics = Vec::with_capacity(1 + content.tags.len());
    topics.push(content.question.as_str());
    topics.extend(content.tags.iter().map(String::as_str));
    EntryMentions {
        texts,
        topics,
        has_crops: !content.crops.is_empty(),
    }
}

/// Every character and every pair of neighbouring characters of the
/// entry's searchable texts: a keyword-indexed field that finds the
/// entries containing a needle without reading the others (Chinese has no
/// spaces to split words on, and an editor searches for any substring).
fn search_terms(content: &EntryContent) -> Vec<String> {
    let mut terms = BTreeSet::new();
    for text in searchable_texts(content) {
        let chars: Vec<char> = text.chars().collect();
        terms.extend(chars.iter().map(char::to_string));
        terms.extend(chars.windows(2).map(|pair| pair.iter().collect::<String>()));
    }
    terms.into_iter().collect()
}

/// The terms an entry must hold to contain `needle` (normalised): the
/// needle itself when it is one character, else its character pairs, at
/// most [`MAX_NEEDLE_TERMS`]. Every entry containing the needle holds them
/// all; for needles of one or two characters the converse holds too.
fn needle_terms(needle: &str) -> Vec<String> {
    let chars: Vec<char> = needle.chars().collect();
    if chars.len() == 1 {
        return vec![needle.to_owned()];
    }
    let mut terms: Vec<String> = chars
        .windows(2)
        .map(|pair| pair.iter().collect::<String>())
        .collect();
    terms.sort();
    terms.dedup();
    terms.truncate(MAX_NEEDLE_TERMS);
    terms
}

/// The stored point of an entry: the entry and its search terms.
fn entry_point(entry: &Entry) -> NewPoint {
    let mut payload = to_payload(entry);
    payload.insert(SEARCH_TERMS.into(), search_terms(&entry.content).into());
    payload.insert(TERMS_VERSION.into(), CURRENT_TERMS_VERSION.into());
    NewPoint {
        id: entry.id.0,
        dense: None,
        lexical: None,
        payload,
    }
}

/// The store filter of a list filter.
fn list_store_filter(filter: &ListFilter) -> Result<Filter, KbError> {
    let mut store_filter = Filter::default();
    if let Some(status) = filter.status {
        store_filter = store_filter.and(Condition::keyword("status", status.as_str()));
    }
    if let Some(category) = filter.category {
        store_filter = store_filter.and(Condition::keyword("category", category.name()));
    }
    if let Some(crop) = &filter.crop {
        store_filter = store_filter.and(Condition::keyword("crops", crop.clone()));
    }
    if let Some(region) = &filter.region {
        store_filter = store_filter.and(Condition::keyword("regions", region.clone()));
    }
    if let Some(before) = &filter.stale_before {
        let day = time::Date::parse(
            before,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .map_err(|_| KbError::BadFilter(format!("复审日期应为 YYYY-MM-DD：{before}")))?;
        store_filter = store_filter.and(Condition::Before {
            field: "review_by",
            moment: day.midnight().assume_utc(),
        });
    }
    Ok(store_filter)
}

/// One page of the editors' entry list.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryPage {
    /// The newest changed entries first, at most the page's limit.
    pub entries: Vec<Entry>,
    /// How many entries the filter accepts. With a search text of three or
    /// more characters, an upper bound: entries holding every pair of its
    /// characters, not necessarily in a row.
    pub total: usize,
}

impl KnowledgeBase {
    /// Opens the knowledge base on a store: creates missing collections,
    /// finishes any change a crash interrupted, and builds the search index
    /// if it is missing or was made by another model or text analysis.
    pub async fn open(
        store: Arc<dyn PointStore>,
        embedder: Embedder,
        analyzer: Analyzer,
        calibration: Calibration,
    ) -> Result<Self, KbError> {
        for spec in [entries_spec(), revisions_spec(), journal_spec()] {
            store.ensure_collection(&spec).await?;
        }
        let freshness = Arc::new(Freshness::new(store.writers(), ChangeTopic::KNOWLEDGE_BASE));
        let mark_watch = watch_marks(&store, &freshness).await?;
        let kb = Self {
            store,
            embedder,
            analyzer: RwLock::new(Arc::new(analyzer)),
            calibration,
            embeddings: Mutex::new(LruCache::new(cache_size(EMBEDDING_CACHE))),
            searches: ReadCache::new(SEARCH_CACHE, Arc::clone(&freshness)),
            entries_read: ReadCache::new(PUBLISHED_ENTRY_CACHE, Arc::clone(&freshness)),
            freshness,
            _mark_watch: mark_watch,
        };
        kb.recover().await?;
        kb.backfill_search_terms().await?;
        let current = kb.store.resolve_alias(INDEX_ALIAS).await?;
        let wanted_prefix = kb.index_prefix();
        match current {
            Some(name) if name.starts_with(&wanted_prefix) => {
                kb.store
                    .ensure_collection(&index_spec(name, kb.embedder.dimension()))
                    .await?;
            }
            Some(other) => {
                tracing::warn!(
                    index = other,
                    model = kb.embedder.model_id(),
                    "search index was built by another model or text analysis; re-indexing"
                );
                kb.reindex(&|_, _| {}).await?;
            }
            None => {
                kb.reindex(&|_, _| {}).await?;
            }
        }
        Ok(kb)
    }

    /// Rewrites the entry points written before their search terms were
    /// (a data directory from an older version); on a current one this is
    /// one indexed count.
    async fn backfill_search_terms(&self) -> Result<(), KbError> {
        let outdated = Filter {
            must: Vec::new(),
            must_not: vec![Condition::keyword(TERMS_VERSION, CURRENT_TERMS_VERSION)],
        };
        if self.store.count(ENTRIES, outdated.clone()).await? == 0 {
            return Ok(());
        }
        let records = scroll_all(self.store.as_ref(), ENTRIES, outdated).await?;
        tracing::info!(entries = records.len(), "adding search terms to entries");
        for chunk in records.chunks(256) {
            let points = chunk
                .iter()
                .cloned()
                .map(|record| from_record::<Entry>(ENTRIES, record).map(|e| entry_point(&e)))
                .collect::<Result<Vec<_>, _>>()?;
            self.store.upsert(ENTRIES, points).await?;
        }
        Ok(())
    }

    /// The names of search indexes this knowledge base can use: built by
    /// its model and by this version of the text analysis. An index of
    /// another model or version is rebuilt when the KB opens.
    fn index_prefix(&self) -> String {
        format!(
            "index__{}__t{INDEX_TEXT_VERSION}__",
            slug(self.embedder.model_id())
        )
    }

    /// The analyzer in use.
    pub fn analyzer(&self) -> Arc<Analyzer> {
        Arc::clone(&self.analyzer.read())
    }

    /// Replaces the analyzer (new dictionaries). The lexical vectors of
    /// stored phrasings keep their old segmentation until [`Self::reindex`].
    pub fn set_analyzer(&self, analyzer: Analyzer) {
        *self.analyzer.write() = Arc::new(analyzer);
        // Cached results were found with the old dictionaries.
        self.freshness.bump();
    }

    /// The store the knowledge base lives on (the turn log shares it).
    pub fn store(&self) -> Arc<dyn PointStore> {
        Arc::clone(&self.store)
    }

    /// Embeds a query (already prepared with [`Analyzer::embedding_text`]),
    /// from the cache when the same text was embedded recently.
    pub async fn embed_query(&self, text: &str) -> Result<Vec<f32>, KbError> {
        if let Some(vector) = self.embeddings.lock().get(text) {
            return Ok(vector.clone());
        }
        let vector = self.embedder.embed_query(text).await?;
        self.embeddings.lock().put(text.to_owned(), vector.clone());
        Ok(vector)
    }

    /// The words of published entries that name what they are about: crop
    /// and animal names, subject words (tags and the analyzer's domain
    /// terms), and for each tag the crops of the entries that carry it (a
    /// disease tagged only on rice entries implies rice). For reading
    /// follow-up questions.
    pub async fn vocabulary(&self) -> Result<TopicVocabulary, KbError> {
        let published = self
            .list(&ListFilter {
                status: Some(Status::Published),
                ..ListFilter::default()
            })
            .await?;
        let analyzer = self.analyzer();
        // The analyzer keeps synonym targets whole too, and those include
        // everyday words (咋个办 → 怎么办): only dictionary terms count.
        let synonym_targets: HashSet<&str> = analyzer
            .synonyms()
            .pairs()
            .iter()
            .map(|(_, standard)| standard.as_str())
            .collect();
        let mut vocabulary = TopicVocabulary {
            subjects: analyzer
                .terms()
                .filter(|term| !synonym_targets.contains(term))
                .map(str::to_owned)
                .collect(),
            ..TopicVocabulary::default()
        };
        for entry in published {
            for tag in &entry.content.tags {
                vocabulary
                    .crops_of_subject
                    .entry(tag.clone())
                    .or_default()
                    .extend(entry.content.crops.iter().cloned());
            }
            vocabulary.subjects.extend(entry.content.tags);
            vocabulary.crops.extend(entry.content.crops);
        }
        for crop in &vocabulary.crops {
            vocabulary.subjects.remove(crop);
            vocabulary.crops_of_subject.remove(crop);
        }
        Ok(vocabulary)
    }

    /// The store's kind, for logs.
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// The embedder.
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    // ----- reading -----

    /// One entry by id, in any state (for editors).
    pub async fn get(&self, id: EntryId) -> Result<Option<Entry>, KbError> {
        let mut records = self.store.get(ENTRIES, vec![id.0]).await?;
        records
            .pop()
            .map(|record| from_record(ENTRIES, record))
            .transpose()
    }

    /// The entries of the given ids that exist, in one store read.
    pub async fn get_many(&self, ids: Vec<EntryId>) -> Result<Vec<Entry>, KbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids.into_iter().map(|id| id.0).collect();
        self.store
            .get(ENTRIES, ids)
            .await?
            .into_iter()
            .map(|record| from_record(ENTRIES, record))
            .collect()
    }

    /// One entry by id or by external key.
    pub async fn find(&self, id_or_key: &str) -> Result<Option<Entry>, KbError> {
        if let Ok(uuid) = Uuid::parse_str(id_or_key)
            && let Some(entry) = self.get(EntryId(uuid)).await?
        {
            return Ok(Some(entry));
        }
        self.find_by_key(id_or_key).await
    }

    /// One entry by external key.
    pub async fn find_by_key(&self, key: &str) -> Result<Option<Entry>, KbError> {
        let (mut records, _) = self
            .store
            .scroll(
                ENTRIES,
                Filter::must(Condition::keyword("external_key", key)),
                None,
                1,
            )
            .await?;
        records
            .pop()
            .map(|record| from_record(ENTRIES, record))
            .transpose()
    }

    /// Entries matching the filter, sorted by last change, newest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Entry>, KbError> {
        let store_filter = list_store_filter(filter)?;
        let mut entries = scroll_all(self.store.as_ref(), ENTRIES, store_filter)
            .await?
            .into_iter()
            .map(|record| from_record::<Entry>(ENTRIES, record))
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)));
        Ok(entries)
    }

    /// The newest changed `limit` entries the filter accepts whose
    /// question, phrasings, tags or crops contain `search` (after
    /// normalisation; blank for all), and how many there are. Reads only
    /// the page, whatever the size of the knowledge base.
    pub async fn list_page(
        &self,
        filter: &ListFilter,
        search: &str,
        limit: usize,
    ) -> Result<EntryPage, KbError> {
        let mut store_filter = list_store_filter(filter)?;
        let needle = crate::text::normalise(search);
        for term in needle_terms(&needle) {
            store_filter = store_filter.and(Condition::keyword(SEARCH_TERMS, term));
        }
        let total = self.store.count(ENTRIES, store_filter.clone()).await?;
        let newest = Order {
            field: "updated_at",
            descending: true,
        };
        // Terms only narrow a long needle down; some candidates may hold
        // its pairs apart. Read a few more than a page to fill it anyway.
        let candidates = if needle.chars().count() > 2 {
            limit.saturating_mul(2)
        } else {
            limit
        };
        let records = self
            .store
            .first_by(ENTRIES, store_filter, newest, candidates)
            .await?;
        let mut entries = Vec::with_capacity(records.len());
        for record in records {
            let entry: Entry = from_record(ENTRIES, record)?;
            if needle.is_empty() || searchable_texts(&entry.content).any(|t| t.contains(&needle)) {
                entries.push(entry);
            }
            if entries.len() == limit {
                break;
            }
        }
        Ok(EntryPage { entries, total })
    }

    /// Up to `limit` other published entries about the same crops as
    /// `entry`, for "相关问题" when retrieval found nothing else. A
    /// keyword-indexed read of a few records, no vectors.
    pub async fn related(
        &self,
        entry: &Entry,
        limit: usize,
    ) -> Result<Vec<PublishedEntry>, KbError> {
        if entry.content.crops.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let filter = Filter::must(Condition::keyword("status", Status::Published.as_str())).and(
            Condition::KeywordIn {
                field: "crops",
                values: entry.content.crops.clone(),
            },
        );
        let (records, _) = self.store.scroll(ENTRIES, filter, None, limit + 1).await?;
        let mut related = Vec::new();
        for record in records {
            if record.id == entry.id.0 {
                continue;
            }
            if let Some(published) = PublishedEntry::new(from_record(ENTRIES, record)?) {
                related.push(published);
            }
        }
        related.truncate(limit);
        Ok(related)
    }

    /// Number of entries in each state.
    pub async fn count_by_status(&self) -> Result<Vec<(Status, usize)>, KbError> {
        let mut counts = Vec::new();
        for status in [
            Status::Draft,
            Status::InReview,
            Status::Published,
            Status::Retired,
        ] {
            let n = self
                .store
                .count(
                    ENTRIES,
                    Filter::must(Condition::keyword("status", status.as_str())),
                )
                .await?;
            counts.push((status, n));
        }
        Ok(counts)
    }

    /// Every recorded change of an entry, oldest first.
    pub async fn history(&self, id: EntryId) -> Result<Vec<Revision>, KbError> {
        let mut revisions = scroll_all(
            self.store.as_ref(),
            REVISIONS,
            Filter::must(Condition::keyword("entry_id", id.to_string())),
        )
        .await?
        .into_iter()
        .map(|record| from_record::<Revision>(REVISIONS, record))
        .collect::<Result<Vec<_>, _>>()?;
        revisions.sort_by_key(|r| r.version);
        Ok(revisions)
    }

    // ----- writing -----

    /// Creates a draft entry.
    pub async fn create(&self, content: EntryContent, actor: &str) -> Result<Entry, KbError> {
        let (entry, revision) =
            workflow::create(EntryId::new(), content, actor, OffsetDateTime::now_utc())?;
        self.commit(vec![(None, entry.clone(), vec![revision])])
            .await?;
        Ok(entry)
    }

    /// Applies an editorial action to an entry.
    pub async fn apply(&self, id: EntryId, action: Action, actor: &str) -> Result<Entry, KbError> {
        let current = self
            .get(id)
            .await?
            .ok_or_else(|| KbError::NotFound(id.to_string()))?;
        let history = match action {
            Action::Restore { .. } => self.history(id).await?,
            _ => Vec::new(),
        };
        let (next, revision) =
            workflow::apply(&current, action, actor, OffsetDateTime::now_utc(), &history)?;
        self.commit(vec![(Some(current), next.clone(), vec![revision])])
            .await?;
        Ok(next)
    }

    /// Imports parsed rows: new external keys become entries, known ones are
    /// updated when their content changed, rows with errors are reported and
    /// skipped. `progress` is called with (rows done, rows total).
    pub async fn import(
        &self,
        rows: Vec<ParsedRow>,
        options: &ImportOptions,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<ImportReport, KbError> {
        let total = rows.len();
        let mut report = ImportReport::default();
        let mut seen_keys = HashSet::new();
        let mut done = 0;
        for chunk in rows.chunks(BATCH) {
            let mut batch = Vec::new();
            for row in chunk {
                done += 1;
                let content = match &row.result {
                    Ok(content) => content.clone(),
                    Err(errors) => {
                        report.errors.push(RowError {
                            origin: row.origin.to_string(),
                            message: errors
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join("；"),
                        });
                        continue;
                    }
                };
                if let Some(key) = &content.external_key
                    && !seen_keys.insert(key.clone())
                {
                    report.errors.push(RowError {
                        origin: row.origin.to_string(),
                        message: format!("外部编号 {key} 在本次导入中重复"),
                    });
                    continue;
                }
                match self.import_one(content, options).await {
                    Ok(Some((previous, entry, revisions))) => {
                        if previous.is_some() {
                            report.updated += 1;
                        } else {
                            report.created += 1;
                        }
                        batch.push((previous, entry, revisions));
                    }
                    Ok(None) => report.unchanged += 1,
                    Err(KbError::Workflow(e)) => report.errors.push(RowError {
                        origin: row.origin.to_string(),
                        message: e.to_string(),
                    }),
                    Err(e) => return Err(e),
                }
            }
            self.commit(batch).await?;
            progress(done, total);
        }
        Ok(report)
    }

    /// The change one import row makes, or `None` when nothing changes.
    async fn import_one(
        &self,
        content: EntryContent,
        options: &ImportOptions,
    ) -> Result<Option<(Option<Entry>, Entry, Vec<Revision>)>, KbError> {
        let now = OffsetDateTime::now_utc();
        let existing = match &content.external_key {
            Some(key) => self.find_by_key(key).await?,
            None => None,
        };
        let wants_published = options.approve_as.is_some();
        let (mut entry, mut revisions) = match &existing {
            Some(current)
                if current.content == content
                    && (!wants_published || current.status == Status::Published) =>
            {
                return Ok(None);
            }
            Some(current) if current.content == content => (current.clone(), Vec::new()),
            Some(current) => {
                let (next, revision) =
                    workflow::apply(current, Action::Edit { content }, &options.actor, now, &[])?;
                (next, vec![revision])
            }
            None => {
                let (entry, revision) =
                    workflow::create(EntryId::new(), content, &options.actor, now)?;
                (entry, vec![revision])
            }
        };
        if let Some(reviewer) = &options.approve_as {
            if entry.status == Status::Draft {
                let (next, revision) =
                    workflow::apply(&entry, Action::Submit, &options.actor, now, &[])?;
                entry = next;
                revisions.push(revision);
            }
            if entry.status == Status::InReview {
                let (next, revision) = workflow::apply(
                    &entry,
                    Action::Approve {
                        note: Some("批量导入时审核通过".into()),
                    },
                    reviewer,
                    now,
                    &[],
                )?;
                entry = next;
                revisions.push(revision);
            }
        }
        Ok(Some((existing, entry, revisions)))
    }

    /// Writes a batch of changes: journal, then revisions, entries and index,
    /// then clears the journal. `previous` is each entry as it was before.
    async fn commit(
        &self,
        changes: Vec<(Option<Entry>, Entry, Vec<Revision>)>,
    ) -> Result<(), KbError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut journal = Journal {
            entries: Vec::new(),
            revisions: Vec::new(),
            stale_index_points: Vec::new(),
        };
        for (previous, entry, revisions) in changes {
            let keep: HashSet<Uuid> = if entry.status == Status::Published {
                index_slots(&entry)
                    .into_iter()
                    .map(|(id, _, _)| id)
                    .collect()
            } else {
                HashSet::new()
            };
            if let Some(previous) = &previous {
                journal.stale_index_points.extend(
                    index_slots(previous)
                        .into_iter()
                        .map(|(id, _, _)| id)
                        .filter(|id| !keep.contains(id)),
                );
            }
            journal.entries.push(entry);
            journal.revisions.extend(revisions);
        }
        // Embedding happens before anything is written, so a model failure
        // leaves the store untouched.
        let index_points = self.index_points(&journal.entries).await?;
        // The writing runs as a task of its own, so a caller that gives up
        // (an HTTP deadline while the index is being built, a client gone)
        // cannot stop a change half-way: left half-applied, its journal
        // record would wait for the next open to be finished, and the
        // cached results would not know of what was written.
        let store = Arc::clone(&self.store);
        let freshness = Arc::clone(&self.freshness);
        let writing = tokio::spawn(async move {
            let journal_id = Uuid::new_v4();
            store
                .upsert(
                    JOURNAL,
                    vec![NewPoint {
                        id: journal_id,
                        dense: None,
                        lexical: None,
                        payload: to_payload(&journal),
                    }],
                )
                .await?;
            let applied = apply_journal(store.as_ref(), &journal, index_points).await;
            // Even a half-applied change may be visible: forget cached results.
            freshness.bump();
            applied?;
            // Before the journal record goes: should the mark fail, the
            // next open replays the change and leaves it then.
            announce_change(store.as_ref(), &freshness).await?;
            store.delete(JOURNAL, vec![journal_id]).await?;
            Ok(())
        });
        writing.await.unwrap_or_else(|failed| {
            Err(KbError::Store(StoreError::Storage {
                collection: JOURNAL.to_owned(),
                message: format!("the task writing a change failed: {failed}"),
            }))
        })
    }

    /// Finishes changes a crash interrupted.
    async fn recover(&self) -> Result<(), KbError> {
        let pending = scroll_all(self.store.as_ref(), JOURNAL, Filter::default()).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let index_exists = self.store.resolve_alias(INDEX_ALIAS).await?.is_some();
        for record in pending {
            let id = record.id;
            let journal: Journal = from_record(JOURNAL, record)?;
            tracing::warn!(
                entries = journal.entries.len(),
                "finishing a change interrupted by a crash"
            );
            let journal = self.without_superseded(journal).await?;
            let index_points = if index_exists {
                self.index_points(&journal.entries).await?
            } else {
                Vec::new()
            };
            if index_exists {
                apply_journal(self.store.as_ref(), &journal, index_points).await?;
            } else {
                // No index yet: open() builds it from the entries afterwards.
                let entries_only = Journal {
                    stale_index_points: Vec::new(),
                    ..journal
                };
                apply_records(self.store.as_ref(), &entries_only).await?;
            }
            announce_change(self.store.as_ref(), &self.freshness).await?;
            self.store.delete(JOURNAL, vec![id]).await?;
        }
        Ok(())
    }

    /// Drops from a journal record every entry that a later change has
    /// already superseded (the stored entry has a higher version), with its
    /// revisions and its stale index points. On a shared server the record
    /// may be another live instance's change, finished and followed by the
    /// next one while this instance was starting: replaying all of it would
    /// write the older version back, and delete index points the newer
    /// version uses again.
    async fn without_superseded(&self, journal: Journal) -> Result<Journal, KbError> {
        let ids = journal.entries.iter().map(|entry| entry.id).collect();
        let stored_versions: HashMap<EntryId, u32> = self
            .get_many(ids)
            .await?
            .into_iter()
            .map(|entry| (entry.id, entry.version))
            .collect();
        let superseded: HashSet<EntryId> = journal
            .entries
            .iter()
            .filter(|entry| {
                stored_versions
                    .get(&entry.id)
                    .is_some_and(|&stored| stored > entry.version)
            })
            .map(|entry| entry.id)
            .collect();
        if superseded.is_empty() {
            return Ok(journal);
        }
        tracing::info!(
            entries = superseded.len(),
            "a later change already superseded part of an interrupted change; that part is skipped"
        );
        let their_index_points: HashSet<Uuid> = superseded
            .iter()
            .flat_map(|&id| possible_index_point_ids(id))
            .collect();
        Ok(Journal {
            entries: journal
                .entries
                .into_iter()
                .filter(|entry| !superseded.contains(&entry.id))
                .collect(),
            revisions: journal
                .revisions
                .into_iter()
                .filter(|revision| !superseded.contains(&revision.entry_id))
                .collect(),
            stale_index_points: journal
                .stale_index_points
                .into_iter()
                .filter(|point| !their_index_points.contains(point))
                .collect(),
        })
    }

    /// Index points for the published entries among `entries`.
    async fn index_points(&self, entries: &[Entry]) -> Result<Vec<NewPoint>, KbError> {
        let analyzer = self.analyzer();
        let published: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.status == Status::Published)
            .collect();
        let mut slots = Vec::new();
        for entry in &published {
            for (id, kind, text) in index_slots(entry) {
                slots.push((*entry, id, kind, text));
            }
        }
        let mut query_texts = Vec::new();
        let mut passage_texts = Vec::new();
        for (_, _, kind, text) in &slots {
            let prepared = analyzer.embedding_text(text);
            if *kind == PhrasingKind::Answer {
                passage_texts.push(prepared);
            } else {
                query_texts.push(prepared);
            }
        }
        // Phrasings are questions, so they are embedded as queries: the
        // model then compares question with question (symmetric), which
        // e5 does best with the same prefix on both sides.
        let mut query_vectors = self
            .embedder
            .embed_many(query_texts, TextKind::Query)
            .await?
            .into_iter();
        let mut passage_vectors = self
            .embedder
            .embed_many(passage_texts, TextKind::Passage)
            .await?
            .into_iter();
        let mut points = Vec::with_capacity(slots.len());
        for (entry, id, kind, text) in slots {
            let dense = if kind == PhrasingKind::Answer {
                passage_vectors.next()
            } else {
                query_vectors.next()
            };
            let tokens = analyzer.index_tokens(&text);
            let average = if kind == PhrasingKind::Answer {
                ANSWER_AVERAGE_TOKENS
            } else {
                PHRASING_AVERAGE_TOKENS
            };
            let lexical = lexical::document_vector(&tokens, average);
            let mut payload = Payload::new();
            payload.insert("entry_id".into(), Value::String(entry.id.to_string()));
            payload.insert("version".into(), Value::from(entry.version));
            payload.insert(
                "kind".into(),
                serde_json::to_value(kind).unwrap_or(Value::Null),
            );
            payload.insert(
                "status".into(),
                Value::String(Status::Published.as_str().into()),
            );
            payload.insert(
                "category".into(),
                Value::String(entry.content.category.name().into()),
            );
            payload.insert("crops".into(), Value::from(entry.content.crops.clone()));
            payload.insert("regions".into(), Value::from(entry.content.regions.clone()));
            payload.insert("months".into(), Value::from(entry.content.months.clone()));
            if kind != PhrasingKind::Answer {
                payload.insert("canonical".into(), Value::String(analyzer.canonical(&text)));
            }
            payload.insert("tokens".into(), Value::from(tokens));
            payload.insert("text".into(), Value::String(text));
            points.push(NewPoint {
                id,
                dense,
                lexical: (!lexical.is_empty()).then_some(lexical),
                payload,
            });
        }
        Ok(points)
    }

    /// Builds a new search index from the published entries and switches
    /// the alias to it; readers use the old index until the switch.
    /// `progress` is called with (entries done, entries total).
    pub async fn reindex(
        &self,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<String, KbError> {
        let previous = self.store.resolve_alias(INDEX_ALIAS).await?;
        let started = OffsetDateTime::now_utc();
        let stamp = started.unix_timestamp_nanos();
        let name = format!("{}{stamp}", self.index_prefix());
        self.store
            .ensure_collection(&index_spec(name.clone(), self.embedder.dimension()))
            .await?;
        let published = self
            .list(&ListFilter {
                status: Some(Status::Published),
                ..ListFilter::default()
            })
            .await?;
        let total = published.len();
        for (done, chunk) in published.chunks(BATCH).enumerate() {
            let points = self.index_points(chunk).await?;
            self.store.upsert(&name, points).await?;
            progress((done * BATCH + chunk.len()).min(total), total);
        }
        self.store.set_alias(INDEX_ALIAS, &name).await?;
        announce_change(self.store.as_ref(), &self.freshness).await?;
        // Changes committed while the new index was being built went to the
        // old one: bring them over now that writes reach the new one.
        let changed: Vec<Entry> = self
            .list(&ListFilter::default())
            .await?
            .into_iter()
            .filter(|e| e.updated_at >= started)
            .collect();
        if !changed.is_empty() {
            let points = self.index_points(&changed).await?;
            self.store.upsert(&name, points).await?;
            let unpublished: Vec<Uuid> = changed
                .iter()
                .filter(|e| e.status != Status::Published)
                .flat_map(|e| index_slots(e).into_iter().map(|(id, _, _)| id))
                .collect();
            self.store.delete(&name, unpublished).await?;
        }
        if let Some(old) = previous
            && old != name
        {
            self.store.drop_collection(&old).await?;
        }
        Ok(name)
    }

    /// How many writes the knowledge base has seen since it opened: its own,
    /// dictionary changes (which make cached results stale the same way)
    /// and, on a shared store, the other instances' changes it noticed. A
    /// caller that remembers the figure can tell whether anything changed
    /// since, as the serving process's index upkeep does.
    pub fn write_generation(&self) -> u64 {
        self.freshness.current()
    }

    /// Whether the search index must be built by calling
    /// [`Self::optimize`] after writes (the embedded store) rather than
    /// by the store itself (a Qdrant server).
    pub fn index_needs_optimizing(&self) -> bool {
        !self.store.indexes_itself()
    }

    /// Builds the search index's HNSW graphs and int8 copies where a
    /// segment has grown past Qdrant's indexing threshold (blocking work,
    /// on a worker thread); quick when nothing needs building. Writes to
    /// the index wait while a build runs; searches go on, on the old
    /// segments.
    pub async fn optimize(&self) -> Result<(), KbError> {
        self.store.optimize(INDEX_ALIAS).await?;
        Ok(())
    }

    // ----- searching -----

    /// Finds published entries for a user's question. This is the only way
    /// user-facing code reaches entries: it reads the published index, and
    /// re-checks each entry's state before returning it.
    ///
    /// Results are cached by question and filter until a write (on a
    /// shared server, until this instance notices another's change, within
    /// a second, through the change mark of the `kb_changes` collection):
    /// repeated questions (the common case in a public chat) cost a map
    /// lookup.
    pub async fn search(
        &self,
        question: &str,
        filter: &SearchFilter,
    ) -> Result<SearchOutcome, KbError> {
        let key = (question.to_owned(), filter.clone());
        let stamp = self.read_stamp();
        if let Some(outcome) = self.searches.get(&key, stamp.generation()) {
            return Ok(outcome);
        }
        let outcome = self.search_uncached(question, filter).await?;
        self.searches.put(key, stamp, outcome.clone());
        Ok(outcome)
    }

    /// Stamps a read that is about to begin, for caching its result.
    fn read_stamp(&self) -> ReadStamp {
        ReadStamp::new(self.freshness.current())
    }

    /// The entry records a search names, from the cache where it still
    /// holds them. Missing records are left out.
    async fn entries_for_search(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Entry>, KbError> {
        let stamp = self.read_stamp();
        let mut found = HashMap::with_capacity(ids.len());
        let mut to_read = Vec::new();
        for id in ids {
            match self.entries_read.get(id, stamp.generation()) {
                Some(entry) => {
                    found.insert(*id, entry);
                }
                None => to_read.push(*id),
            }
        }
        if to_read.is_empty() {
            return Ok(found);
        }
        for record in self.store.get(ENTRIES, to_read).await? {
            let id = record.id;
            if let Ok(entry) = from_record::<Entry>(ENTRIES, record) {
                self.entries_read.put(id, stamp, entry.clone());
                found.insert(id, entry);
            }
        }
        Ok(found)
    }

    async fn search_uncached(
        &self,
        question: &str,
        filter: &SearchFilter,
    ) -> Result<SearchOutcome, KbError> {
        let analyzer = self.analyzer();
        let query = analyzer.analyze_query(question);
        let base_filter = self.published_filter(filter);

        // The exact-phrasing lookup runs beside the searches rather than
        // before them: on the chat path the query vector is already cached
        // (routing embedded the message), so a hit wastes two cheap reads,
        // while a miss, the common case, no longer waits for the lookup.
        // An exact hit is answered even if the searches failed (a model
        // error), as it was when the lookup ran first.
        let canonical = analyzer.canonical(question);
        let (exact, found) = tokio::join!(
            self.exact_phrasing(&canonical, &base_filter),
            self.dense_and_lexical(&analyzer, &query, &base_filter),
        );
        if let Some(record) = exact?
            && let Some(hit) = self.exact_hit(record).await?
        {
            return Ok(SearchOutcome {
                query,
                hits: vec![hit],
                decision: Decision::Answer,
            });
        }
        let Some(SignalHits {
            vector,
            dense: dense_hits,
            lexical: lexical_hits,
        }) = found?
        else {
            return Ok(SearchOutcome {
                query,
                hits: Vec::new(),
                decision: Decision::Abstain,
            });
        };
        let weighted: Vec<WeightedWord> = query
            .tokens
            .iter()
            .map(|word| WeightedWord {
                word: word.clone(),
                weight: analyzer.word_weight(word),
            })
            .collect();
        let ranked = rank_candidates(
            &weighted,
            candidates(dense_hits, true),
            candidates(lexical_hits, false),
            &self.calibration,
        );
        let ids: Vec<Uuid> = ranked.iter().map(|r| r.entry_id).collect();
        // Both read what the ranking named, independently of each other.
        let (answer_scores, mut entries) = tokio::try_join!(
            self.answer_relevance(&ranked, vector),
            self.entries_for_search(&ids),
        )?;
        // The features that need the entry itself complete the confidence.
        let subjects = analyzer.subjects().in_question(&query.rewritten);
        let mut hits: Vec<SearchHit> = ranked
            .into_iter()
            .filter_map(|mut ranked| {
                let entry = PublishedEntry::new(entries.remove(&ranked.entry_id)?)?;
                if let Some(score) = answer_scores.get(&ranked.entry_id) {
                    ranked.features.answer_dense = *score;
                }
                ranked.features.absent_subject =
                    f32::from(subjects.unmet_by(&entry_mentions(&entry.content)));
                Some(SearchHit {
                    confidence: self.calibration.confidence(&ranked.features),
                    entry,
                    score: ranked.score,
                    features: ranked.features,
                    evidence: ranked.evidence,
                })
            })
            .collect();
        self.put_subject_first(&mut hits);
        let decision = self
            .calibration
            .decide(hits.first().map_or(0.0, |h| h.confidence));
        Ok(SearchOutcome {
            query,
            hits,
            decision,
        })
    }

    /// Moves the entries that meet the question's subject above those that
    /// leave it unmet, keeping the order within each group, and marks the
    /// ones that passed an unmet entry as promoted (offered, never
    /// answered: see [`Features::promoted`]).
    fn put_subject_first(&self, hits: &mut [SearchHit]) {
        let unmet = |hit: &SearchHit| hit.features.absent_subject > 0.0;
        let Some(first_unmet) = hits.iter().position(unmet) else {
            return;
        };
        for hit in hits[first_unmet..].iter_mut().filter(|hit| !unmet(hit)) {
            hit.features.promoted = 1.0;
            hit.confidence = self.calibration.confidence(&hit.features);
        }
        hits.sort_by_key(unmet);
    }

    /// The index point whose phrasing equals the question after
    /// normalisation, if any.
    async fn exact_phrasing(
        &self,
        canonical: &str,
        base_filter: &Filter,
    ) -> Result<Option<Record>, KbError> {
        if canonical.is_empty() {
            return Ok(None);
        }
        let (records, _) = self
            .store
            .scroll(
                INDEX_ALIAS,
                base_filter
                    .clone()
                    .and(Condition::keyword("canonical", canonical)),
                None,
                1,
            )
            .await?;
        Ok(records.into_iter().next())
    }

    /// The dense and lexical candidates for a query, searched side by side;
    /// `None` when nothing of the question is left to search with.
    async fn dense_and_lexical(
        &self,
        analyzer: &Analyzer,
        query: &AnalyzedQuery,
        base_filter: &Filter,
    ) -> Result<Option<SignalHits>, KbError> {
        if query.rewritten.trim().is_empty() {
            return Ok(None);
        }
        let vector = self
            .embed_query(&analyzer.embedding_text(&query.rewritten))
            .await?;
        let sparse = lexical::query_vector(&query.tokens);
        let dense_search = self.store.search(SearchRequest {
            collection: INDEX_ALIAS.into(),
            query: QueryVector::Dense(vector.clone()),
            filter: base_filter.clone(),
            limit: CANDIDATES_PER_SIGNAL,
            exactness: Exactness::Indexed,
        });
        let lexical_search = async {
            if sparse.is_empty() {
                return Ok(Vec::new());
            }
            self.store
                .search(SearchRequest {
                    collection: INDEX_ALIAS.into(),
                    query: QueryVector::Lexical(sparse.clone()),
                    filter: base_filter.clone(),
                    limit: CANDIDATES_PER_SIGNAL,
                    exactness: Exactness::Indexed,
                })
                .await
        };
        let (dense, lexical) = tokio::try_join!(dense_search, lexical_search)?;
        Ok(Some(SignalHits {
            vector,
            dense,
            lexical,
        }))
    }

    /// Scores the leading entries' answers against the query (query to
    /// passage, the way e5 was trained for retrieval), by entry.
    async fn answer_relevance(
        &self,
        ranked: &[crate::retrieval::Ranked],
        vector: Vec<f32>,
    ) -> Result<HashMap<Uuid, f32>, KbError> {
        let leading: Vec<String> = ranked
            .iter()
            .take(ANSWERS_SCORED)
            .map(|r| r.entry_id.to_string())
            .collect();
        if leading.is_empty() {
            return Ok(HashMap::new());
        }
        let answers = self
            .store
            .search(answer_scoring_request(INDEX_ALIAS, vector, leading))
            .await?;
        Ok(answers
            .into_iter()
            .filter_map(|hit| {
                let entry_id = Uuid::parse_str(hit.payload.get("entry_id")?.as_str()?).ok()?;
                Some((entry_id, hit.score))
            })
            .collect())
    }

    fn published_filter(&self, filter: &SearchFilter) -> Filter {
        let mut store_filter =
            Filter::must(Condition::keyword("status", Status::Published.as_str()));
        if let Some(category) = filter.category {
            store_filter = store_filter.and(Condition::keyword("category", category.name()));
        }
        if !filter.crops.is_empty() {
            store_filter = store_filter.and(Condition::KeywordIn {
                field: "crops",
                values: filter.crops.clone(),
            });
        }
        store_filter
    }

    async fn exact_hit(&self, record: Record) -> Result<Option<SearchHit>, KbError> {
        let Some(candidate) = Candidate::from_payload(record.payload, None, None) else {
            return Ok(None);
        };
        let mut entries = self.entries_for_search(&[candidate.entry_id]).await?;
        let Some(entry) = entries.remove(&candidate.entry_id) else {
            return Ok(None);
        };
        let Some(entry) = PublishedEntry::new(entry) else {
            return Ok(None);
        };
        Ok(Some(SearchHit {
            entry,
            score: 1.0,
            confidence: 1.0,
            features: Features {
                dense: 1.0,
                margin: 1.0,
                coverage: 1.0,
                entry_coverage: 1.0,
                missing: 0.0,
                answer_dense: 1.0,
                matched_question: f32::from(candidate.kind == PhrasingKind::Question),
                matched_answer: 0.0,
                rival_entry_coverage: 0.0,
                absent_subject: 0.0,
                promoted: 0.0,
            },
            evidence: Evidence {
                matched_text: candidate.text,
                matched_kind: candidate.kind,
                dense: None,
                lexical: None,
                coverage: 1.0,
                exact: true,
            },
        }))
    }
}

/// What the dense and lexical searches found for a query.
struct SignalHits {
    /// The query's vector, for scoring answers after ranking.
    vector: Vec<f32>,
    dense: Vec<crate::store::Hit>,
    lexical: Vec<crate::store::Hit>,
}

/// Writes a journal record's revisions, entries and index points; each
/// step an idempotent upsert or delete by id, so running it again after a
/// crash finishes the change.
async fn apply_journal(
    store: &dyn PointStore,
    journal: &Journal,
    index_points: Vec<NewPoint>,
) -> Result<(), KbError> {
    apply_records(store, journal).await?;
    // New points first, stale ones after: a published entry being edited
    // stays findable throughout.
    store.upsert(INDEX_ALIAS, index_points).await?;
    store
        .delete(INDEX_ALIAS, journal.stale_index_points.clone())
        .await?;
    Ok(())
}

/// Writes a journal record's revisions and entry records.
async fn apply_records(store: &dyn PointStore, journal: &Journal) -> Result<(), KbError> {
    let revision_points = journal
        .revisions
        .iter()
        .map(|revision| NewPoint {
            id: revision_id(revision),
            dense: None,
            lexical: None,
            payload: to_payload(revision),
        })
        .collect();
    store.upsert(REVISIONS, revision_points).await?;
    let entry_points = journal.entries.iter().map(entry_point).collect();
    store.upsert(ENTRIES, entry_points).await?;
    Ok(())
}

fn candidates(hits: Vec<crate::store::Hit>, dense: bool) -> Vec<Candidate> {
    hits.into_iter()
        .filter_map(|hit| {
            let (dense_score, lexical_score) = if dense {
                (Some(hit.score), None)
            } else {
                (None, Some(hit.score))
            };
            Candidate::from_payload(hit.payload, dense_score, lexical_score)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::ImportOptions;
    use crate::import::parse_jsonl;
    use crate::store::edge::EdgeStore;
    use crate::workflow::Action;

    async fn knowledge_base(dir: &std::path::Path) -> KnowledgeBase {
        let models = std::env::var_os("WENKE_MODEL_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"));
        let model = embeddings::EmbeddingModel::load(&models.join("multilingual-e5-small-q4"))
            .unwrap_or_else(|e| panic!("{e}"));
        KnowledgeBase::open(
            Arc::new(EdgeStore::open(dir).expect("open store")),
            Embedder::from_model(Arc::new(model), 8),
            crate::dict::builtin_analyzer(),
            Calibration::default(),
        )
        .await
        .expect("open kb")
    }

    /// An instance starting while another one edits (server mode) finds the
    /// other's journal record of a change it has finished and followed with
    /// the next: replaying the record must not bring the older version back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replaying_a_superseded_journal_record_keeps_the_newer_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kb = knowledge_base(dir.path()).await;
        let rows = parse_jsonl(
            r#"{"external_key": "potato-blight", "question": "马铃薯晚疫病怎么防治？", "alt_questions": ["洋芋叶子发黑咋个办"], "answer": "选抗病品种，发病初期喷施烯酰吗啉等药剂。", "category": "农业种植", "source": {"organisation": "测试"}}"#,
        );
        let options = ImportOptions {
            actor: "编辑甲".into(),
            approve_as: Some("审核乙".into()),
        };
        kb.import(rows, &options, &|_, _| {}).await.expect("import");
        let published = kb
            .list(&ListFilter::default())
            .await
            .expect("list")
            .remove(0);
        assert_eq!(published.status, Status::Published);

        // The change that published it, as its journal record said, and
        // then a later change: the entry is retired.
        let finished = Journal {
            entries: vec![published.clone()],
            revisions: Vec::new(),
            stale_index_points: possible_index_point_ids(published.id).skip(3).collect(),
        };
        let retired = kb
            .apply(published.id, Action::Retire { note: None }, "审核乙")
            .await
            .expect("retire");
        kb.store
            .upsert(
                JOURNAL,
                vec![NewPoint {
                    id: Uuid::new_v4(),
                    dense: None,
                    lexical: None,
                    payload: to_payload(&finished),
                }],
            )
            .await
            .expect("write the record");

        kb.recover().await.expect("recover");

        let now = kb.get(published.id).await.expect("get").expect("entry");
        assert_eq!(
            (now.version, now.status),
            (retired.version, Status::Retired)
        );
        let outcome = kb
            .search("马铃薯晚疫病怎么防治？", &SearchFilter::default())
            .await
            .expect("search");
        assert!(
            outcome.hits.iter().all(|hit| hit.entry.id != published.id),
            "a retired entry came back into the search index"
        );
        let left = scroll_all(kb.store.as_ref(), JOURNAL, Filter::default())
            .await
            .expect("journal");
        assert!(left.is_empty(), "the record was not cleared");
    }
}
