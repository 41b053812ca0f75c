//! The knowledge base: vetted entries and listings, stored in Qdrant.
//!
//! - [`entry`]: the entry model and its validation.
//! - [`workflow`]: the editorial state machine (draft → in review → published → retired).
//! - [`text`]: Chinese normalisation, segmentation, synonyms and typo correction.
//! - [`dict`]: the synonym and domain-term dictionaries.
//! - [`lexical`]: BM25 as sparse vectors.
//! - [`retrieval`]: fusion of dense and lexical candidates, calibrated confidence.
//! - [`store`]: the storage trait and its embedded and server implementations.
//! - [`base`]: the knowledge base service tying them together.
//! - [`import`]: JSONL, CSV and Markdown exchange formats.
//! - [`listing`]: demand and capability listings, their life cycle and matching.
//! - [`phrases`]: amounts, deadlines and phone numbers as people write them.
//! - [`region`]: the province's cities and counties.

pub mod backup;
pub mod base;
pub mod dict;
pub mod entry;
mod freshness;
pub mod import;
pub mod lexical;
pub mod listing;
pub mod phrases;
mod read_cache;
pub mod region;
pub mod retrieval;
pub mod store;
pub mod subjects;
pub mod text;
pub mod workflow;

pub use base::{
    Decision, EntryPage, Evidence, ImportOptions, ImportReport, KbError, KnowledgeBase, ListFilter,
    PhrasingKind, PublishedEntry, SearchFilter, SearchHit, SearchOutcome, TopicVocabulary,
};
pub use freshness::{ChangeTopic, SHARED_STORE_READ_MAX_AGE};
pub use read_cache::{ReadStamp, WatchedCache};
pub use retrieval::Calibration;
