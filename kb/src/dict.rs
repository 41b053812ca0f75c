//! The dictionaries the analyzer is built from: dialect/synonym pairs,
//! domain terms and the subject lexicon. Built-in copies ship in the binary
//! (from `kb/dict/`); a deployment's editors keep their own in
//! `<data dir>/dict/`, which wins when present.

use std::path::Path;

use crate::subjects::SubjectLexicon;
use crate::text::{Analyzer, Synonyms, parse_dictionary_rows};

/// The shipped synonym dictionary (`variant<TAB>standard`).
pub const BUILTIN_SYNONYMS: &str = include_str!("../dict/synonyms.tsv");
/// The shipped domain terms (one per line).
pub const BUILTIN_TERMS: &str = include_str!("../dict/terms.txt");

/// The shipped subject lexicon (`word<TAB>kind`).
pub const BUILTIN_SUBJECTS: &str = include_str!("../dict/entities.txt");

/// File names inside `<data dir>/dict/`.
pub const SYNONYMS_FILE: &str = "synonyms.tsv";
/// File names inside `<data dir>/dict/`.
pub const TERMS_FILE: &str = "terms.txt";
/// File names inside `<data dir>/dict/`.
pub const SUBJECTS_FILE: &str = "entities.txt";

/// A problem in a dictionary file.
#[derive(Debug, thiserror::Error)]
pub enum DictError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Parses a term list: one term per line, `#` comments and blank lines ignored.
pub fn parse_terms(text: &str) -> Vec<String> {
    let (terms, _) = parse_dictionary_rows(text, |line| Some(line.to_owned()));
    terms
}

/// The texts of the three dictionary files.
#[derive(Debug, Clone, Copy)]
pub struct DictionaryTexts<'a> {
    /// `synonyms.tsv`.
    pub synonyms_tsv: &'a str,
    /// `terms.txt`.
    pub terms: &'a str,
    /// `entities.txt`.
    pub subjects_tsv: &'a str,
}

impl DictionaryTexts<'static> {
    /// The dictionaries shipped in the binary.
    pub const BUILTIN: Self = Self {
        synonyms_tsv: BUILTIN_SYNONYMS,
        terms: BUILTIN_TERMS,
        subjects_tsv: BUILTIN_SUBJECTS,
    };
}

/// Builds an analyzer from dictionary texts; malformed synonym and subject
/// lines are skipped and logged with their line numbers.
pub fn analyzer_from(texts: DictionaryTexts<'_>) -> Analyzer {
    let (pairs, bad_lines) = Synonyms::parse_tsv(texts.synonyms_tsv);
    if !bad_lines.is_empty() {
        tracing::warn!(?bad_lines, "skipped malformed synonym lines");
    }
    let (subjects, bad_lines) = SubjectLexicon::parse_tsv(texts.subjects_tsv);
    if !bad_lines.is_empty() {
        tracing::warn!(?bad_lines, "skipped malformed subject lines");
    }
    Analyzer::new(parse_terms(texts.terms), Synonyms::new(pairs), subjects)
}

/// The analyzer of the built-in dictionaries.
pub fn builtin_analyzer() -> Analyzer {
    analyzer_from(DictionaryTexts::BUILTIN)
}

/// The analyzer for a data directory: its own dictionaries where present,
/// the built-in ones otherwise.
pub fn load_analyzer(data_dir: &Path) -> Result<Analyzer, DictError> {
    let read = |name: &str, builtin: &'static str| -> Result<String, DictError> {
        let path = data_dir.join("dict").join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(builtin.to_owned()),
            Err(source) => Err(DictError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    };
    Ok(analyzer_from(DictionaryTexts {
        synonyms_tsv: &read(SYNONYMS_FILE, BUILTIN_SYNONYMS)?,
        terms: &read(TERMS_FILE, BUILTIN_TERMS)?,
        subjects_tsv: &read(SUBJECTS_FILE, BUILTIN_SUBJECTS)?,
    }))
}
