//! Point storage behind one trait, with an in-process Qdrant ([`edge`]) and a
//! Qdrant server ([`server`]) implementation.
//!
//! The trait speaks in this crate's own small vocabulary (collections of
//! points with an optional dense vector, an optional sparse vector and a JSON
//! payload; keyword and integer filters; aliases), not in either Qdrant
//! crate's types, so everything above it (entries, revisions, retrieval) is
//! written once and one shared test suite runs against both.
//!
//! Every write is durable when its future resolves: the embedded store
//! flushes before returning, the server store waits for the operation to be
//! applied.

pub mod edge;
mod group_commit;
pub mod server;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::lexical::SparseVector;

/// A JSON object stored with a point.
pub type Payload = Map<String, Value>;

/// Name of the dense vector in collections that have one.
pub const DENSE: &str = "dense";

/// How the dense vectors are kept, the same on both stores: the full
/// vectors on disk (memory-mapped), an int8 copy (4× smaller) in memory.
/// Approximate searches walk the graph on the int8 copy, then rescore their
/// candidates with the full vectors, so the order they return is exact over
/// what they found. Why: at 100k entries the full vectors are ~1 GiB, and
/// reading them all in on open made the reopen miss its 2 s budget; the
/// int8 copy is a quarter of that and its distances are cheaper.
///
/// Quantile of the values the int8 scale covers (outliers are clipped).
pub const DENSE_INT8_QUANTILE: f32 = 0.99;
/// Candidates an approximate search finds on the int8 copy, as a multiple
/// of those it returns, before rescoring them with the full vectors.
pub const DENSE_OVERSAMPLING: f64 = 2.0;
/// Name of the sparse (BM25) vector in collections that have one.
pub const LEXICAL: &str = "lexical";

/// What a collection holds and which payload fields are filtered on.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionSpec {
    /// Physical collection name.
    pub name: String,
    /// Dimension of the dense vector [`DENSE`] (cosine), if the collection has one.
    pub dense_dim: Option<usize>,
    /// Whether the collection has the sparse vector [`LEXICAL`] (with IDF).
    pub lexical: bool,
    /// Payload fields that get a keyword index.
    pub keyword_fields: Vec<&'static str>,
    /// Keyword fields with about one value per point or per entry (ids,
    /// exact texts), which filters only ever look up by value. Their
    /// indexes stay on disk (memory-mapped) instead of being read into
    /// memory when the store opens, where hundreds of thousands of distinct
    /// values made most of the opening time of a large store, and get no
    /// filter-specific HNSW links (no value has enough points for one).
    pub lookup_fields: Vec<&'static str>,
    /// Payload fields that get an integer index.
    pub integer_fields: Vec<&'static str>,
    /// Payload fields that get a datetime index (RFC 3339 times or
    /// `YYYY-MM-DD` dates), for [`Condition::Before`] and [`Order`].
    pub datetime_fields: Vec<&'static str>,
}

impl CollectionSpec {
    /// A collection of payloads alone: no vectors and no payload indexes;
    /// the base, with `..`, of payload collections that index fields.
    pub fn payload_only(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            dense_dim: None,
            lexical: false,
            keyword_fields: Vec::new(),
            lookup_fields: Vec::new(),
            integer_fields: Vec::new(),
            datetime_fields: Vec::new(),
        }
    }
}

/// One point to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPoint {
    /// Identity; writing an existing id replaces the point.
    pub id: Uuid,
    /// The dense vector, for collections that have one.
    pub dense: Option<Vec<f32>>,
    /// The sparse vector, for collections that have one.
    pub lexical: Option<SparseVector>,
    /// The payload; must be a JSON object.
    pub payload: Payload,
}

/// One stored point, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Identity.
    pub id: Uuid,
    /// Payload.
    pub payload: Payload,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Identity.
    pub id: Uuid,
    /// Cosine similarity for dense searches, BM25 for lexical ones.
    pub score: f32,
    /// Payload.
    pub payload: Payload,
}

/// A condition on one payload field.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The field (or one of its array values) equals one of these keywords.
    KeywordIn {
        /// Field name.
        field: &'static str,
        /// Accepted values.
        values: Vec<String>,
    },
    /// The field (or one of its array values) equals one of these integers.
    IntegerIn {
        /// Field name.
        field: &'static str,
        /// Accepted values.
        values: Vec<i64>,
    },
    /// The datetime field (with a datetime index) is strictly before this
    /// moment; points without the field do not match.
    Before {
        /// Field name.
        field: &'static str,
        /// The exclusive bound.
        moment: time::OffsetDateTime,
    },
}

/// The order of [`PointStore::first_by`]: by a datetime or integer field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// A field with a datetime or integer index.
    pub field: &'static str,
    /// Newest first.
    pub descending: bool,
}

impl Condition {
    /// The field equals `value`.
    pub fn keyword(field: &'static str, value: impl Into<String>) -> Self {
        Self::KeywordIn {
            field,
            values: vec![value.into()],
        }
    }
}

/// A conjunction of conditions, with optional exclusions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// All must hold.
    pub must: Vec<Condition>,
    /// None may hold.
    pub must_not: Vec<Condition>,
}

impl Filter {
    /// A filter with one required condition.
    pub fn must(condition: Condition) -> Self {
        Self {
            must: vec![condition],
            must_not: Vec::new(),
        }
    }

    /// Adds a required condition.
    pub fn and(mut self, condition: Condition) -> Self {
        self.must.push(condition);
        self
    }

    /// Whether the filter accepts everything.
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.must_not.is_empty()
    }
}

/// How a vector search trades speed for exactness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exactness {
    /// Use the HNSW index where there is one (Qdrant falls back to exact
    /// search by itself when a filter is selective).
    #[default]
    Indexed,
    /// Compare with every point: the ground truth for recall measurements.
    Exact,
}

/// A dense or lexical search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// Collection or alias.
    pub collection: String,
    /// The query vector.
    pub query: QueryVector,
    /// Restricts the points searched.
    pub filter: Filter,
    /// Most hits returned.
    pub limit: usize,
    /// Index or exact.
    pub exactness: Exactness,
}

/// The vector a search compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryVector {
    /// Compared with [`DENSE`] by cosine.
    Dense(Vec<f32>),
    /// Compared with [`LEXICAL`] by dot product with IDF.
    Lexical(SparseVector),
}

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory or a collection is unusable.
    #[error("storage error in {collection}: {message}")]
    Storage {
        /// Collection (or directory) concerned.
        collection: String,
        /// What went wrong.
        message: String,
    },
    /// The collection or alias does not exist.
    #[error("no collection or alias named {0}")]
    NoSuchCollection(String),
    /// The Qdrant server failed or could not be reached.
    #[error("Qdrant server error: {0}")]
    Server(String),
    /// Filesystem error.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// Path concerned.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Who can change a store's collections besides this process's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writers {
    /// Only this handle: the embedded store locks its directory, so every
    /// change to it goes through this process.
    ThisProcessOnly,
    /// Other processes too: several instances share one Qdrant server.
    Shared,
}

/// Point storage: the only way the knowledge base touches Qdrant.
#[async_trait::async_trait]
pub trait PointStore: Send + Sync + 'static {
    /// A short name for logs: "embedded" or "server".
    fn kind(&self) -> &'static str;

    /// Whether changes can come from elsewhere, which decides how long
    /// what was read can be trusted without reading it again.
    fn writers(&self) -> Writers;

    /// Whether the store builds its search indexes (HNSW graphs, the int8
    /// copies) by itself as points arrive. A Qdrant server does, in the
    /// background; the embedded store builds them only inside
    /// [`PointStore::optimize`], so whoever writes to it must call that,
    /// off the request path, or its searches stay exact scans.
    fn indexes_itself(&self) -> bool;

    /// Whether the store is still reading collections it just loaded into
    /// memory. Searches are correct meanwhile, only slower, so `wenke
    /// serve`'s `/readyz` reports not ready until this is over (also,
    /// briefly, when a collection is first loaded later, such as a
    /// re-index's new one). A store with nothing to warm up never is.
    fn warming_up(&self) -> bool {
        false
    }

    /// Creates the collection if missing, with its payload indexes.
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), StoreError>;

    /// Whether a collection with this physical name exists.
    async fn collection_exists(&self, name: &str) -> Result<bool, StoreError>;

    /// Deletes a collection and its data.
    async fn drop_collection(&self, name: &str) -> Result<(), StoreError>;

    /// Points `alias` at `collection`, atomically for readers.
    async fn set_alias(&self, alias: &str, collection: &str) -> Result<(), StoreError>;

    /// The collection an alias points at.
    async fn resolve_alias(&self, alias: &str) -> Result<Option<String>, StoreError>;

    /// Writes points, replacing any with the same ids; durable on return.
    async fn upsert(&self, collection: &str, points: Vec<NewPoint>) -> Result<(), StoreError>;

    /// Replaces the whole payload of one existing point and keeps its
    /// vectors, so a change that leaves the embedded text alone needs no
    /// model pass; durable on return. An error if the point does not exist.
    async fn replace_payload(
        &self,
        collection: &str,
        id: Uuid,
        payload: Payload,
    ) -> Result<(), StoreError>;

    /// Deletes points by id; durable on return.
    async fn delete(&self, collection: &str, ids: Vec<Uuid>) -> Result<(), StoreError>;

    /// Deletes every point the filter accepts; durable on return.
    async fn delete_matching(&self, collection: &str, filter: Filter) -> Result<(), StoreError>;

    /// Reads points by id, in the order given, skipping missing ones.
    async fn get(&self, collection: &str, ids: Vec<Uuid>) -> Result<Vec<Record>, StoreError>;

    /// Reads a page of points the filter accepts, by ascending id, from
    /// `offset` on; returns the page and the offset of the next page.
    async fn scroll(
        &self,
        collection: &str,
        filter: Filter,
        offset: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<Record>, Option<Uuid>), StoreError>;

    /// The first `limit` points the filter accepts in the given order
    /// (points without the order's field are skipped), so a page of the
    /// newest records is read without reading the rest.
    async fn first_by(
        &self,
        collection: &str,
        filter: Filter,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;

    /// Counts the points the filter accepts.
    async fn count(&self, collection: &str, filter: Filter) -> Result<usize, StoreError>;

    /// Nearest points to a dense or lexical query vector.
    async fn search(&self, request: SearchRequest) -> Result<Vec<Hit>, StoreError>;

    /// The physical names of every collection.
    async fn collections(&self) -> Result<Vec<String>, StoreError>;

    /// Every alias with the collection it points at.
    async fn aliases(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// A page of whole points (payload and vectors) by ascending id from
    /// `offset` on, and the offset of the next page: what a backup copies.
    async fn export(
        &self,
        collection: &str,
        offset: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<NewPoint>, Option<Uuid>), StoreError>;

    /// Returns once the collection's indexes are built. The embedded store
    /// builds them only when asked, here (blocking a thread for as long as
    /// it takes); the server builds them by itself, and this waits for it.
    async fn optimize(&self, collection: &str) -> Result<(), StoreError>;
}

/// The payload of a record type. Every type stored as a payload is a
/// struct (of strings, numbers and lists), which serialises to an object;
/// anything else would be a programming error, stored as an empty payload.
pub fn to_payload<T: serde::Serialize>(value: &T) -> Payload {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => Payload::new(),
    }
}

/// Reads every point the filter accepts, page by page.
pub async fn scroll_all(
    store: &dyn PointStore,
    collection: &str,
    filter: Filter,
) -> Result<Vec<Record>, StoreError> {
    const PAGE: usize = 1000;
    let mut all = Vec::new();
    let mut offset = None;
    loop {
        let (page, next) = store
            .scroll(collection, filter.clone(), offset, PAGE)
            .await?;
        all.extend(page);
        match next {
            Some(next) => offset = Some(next),
            None => return Ok(all),
        }
    }
}
