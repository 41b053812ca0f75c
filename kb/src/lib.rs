//! The knowledge base: vetted entries and listings, stored in Qdrant.
//!
//! - [`entry`]: the entry model and its validation.
//! - [`workflow`]: the editorial state machine (draft → in review → published → retired).
//! - [`text`]: Chinese normalisation, segmentation, synonyms and typo correction.
//! - [`lexical`]: BM25 as sparse vectors.
//! - [`import`]: JSONL, CSV and Markdown exchange formats.

pub mod entry;
pub mod import;
pub mod lexical;
pub mod text;
pub mod workflow;
