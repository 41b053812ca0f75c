//! Editors' changes to the word lists: dialect words and synonyms (洋芋 →
//! 马铃薯) and sensitive words. The shipped lists (and a deployment's own
//! files) are the base; an edit adds a word or removes one, base or not.
//!
//! Edits live in the point store (a payload-only collection
//! `dictionary_edits`, one point per list and word, so the latest edit of
//! a word wins), which keeps them in the data directory on the embedded
//! default and on the Qdrant cluster in server mode. Saving an edit bumps
//! a version in the session store; every instance's reload loop watches
//! it and rebuilds its lists, so an edit takes effect everywhere within
//! seconds and without a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kb::store::{CollectionSpec, Filter, NewPoint, PointStore, StoreError, scroll_all, to_payload};
use serde::{Deserialize, Serialize};

use crate::session::{SessionError, SessionStore};

const EDITS: &str = "dictionary_edits";
/// The session-store key whose value changes with every edit.
const VERSION_KEY: &str = "dictionary:version";
/// The version outlives any reload loop's poll by far; a lost version
/// only means instances reload on their periodic refresh instead.
const VERSION_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Which list an edit changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordList {
    /// Dialect words and synonyms, each read as a standard term.
    Synonym,
    /// Words whose messages are politely refused.
    Sensitive,
}

impl WordList {
    /// The list's stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synonym => "synonym",
            Self::Sensitive => "sensitive",
        }
    }

    /// The list named by [`Self::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Synonym, Self::Sensitive]
            .into_iter()
            .find(|list| list.as_str() == name)
    }
}

/// One editor's change to one word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordEdit {
    /// The list.
    pub list: WordList,
    /// The word (for synonyms, the variant users write), normalised.
    pub word: String,
    /// For synonyms, the standard term it is read as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard: Option<String>,
    /// Whether the edit removes the word instead of adding it.
    pub removed: bool,
    /// Who made it (console username).
    pub actor: String,
    /// When, Unix seconds.
    pub at: i64,
}

/// Why an edit was refused or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum DictionaryError {
    /// The word is empty or malformed.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session store failed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

fn spec() -> CollectionSpec {
    CollectionSpec {
        keyword_fields: vec!["list"],
        ..CollectionSpec::payload_only(EDITS)
    }
}

/// The longest word accepted (dictionary words are short).
const MAX_WORD_CHARS: usize = 20;

fn checked_word(text: &str, what: &str) -> Result<String, DictionaryError> {
    let word = kb::text::normalise(text);
    if word.is_empty() {
        return Err(DictionaryError::Invalid(format!("{what}不能为空")));
    }
    if word.chars().count() > MAX_WORD_CHARS {
        return Err(DictionaryError::Invalid(format!(
            "{what}太长了（最多 {MAX_WORD_CHARS} 字）"
        )));
    }
    if word.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DictionaryError::Invalid(format!("{what}不能含空格")));
    }
    Ok(word)
}

impl WordEdit {
    /// An edit adding `word` (read as `standard`, for synonyms) or removing
    /// it; words are normalised as questions are, and checked.
    pub fn new(
        list: WordList,
        word: &str,
        standard: Option<&str>,
        removed: bool,
        actor: &str,
    ) -> Result<Self, DictionaryError> {
        let word = checked_word(word, "词")?;
        let standard = match (list, removed) {
            (WordList::Synonym, false) => {
                let standard = checked_word(standard.unwrap_or_default(), "标准词")?;
                if standard == word {
                    return Err(DictionaryError::Invalid("方言词和标准词一样".into()));
                }
                Some(standard)
            }
            _ => None,
        };
        Ok(Self {
            list,
            word,
            standard,
            removed,
            actor: actor.to_owned(),
            at: time::OffsetDateTime::now_utc().unix_timestamp(),
        })
    }
}

/// The edits, on the point store, and the version that tells instances to
/// reload.
#[derive(Clone)]
pub struct Dictionary {
    store: Arc<dyn PointStore>,
    sessions: Arc<dyn SessionStore>,
}

impl Dictionary {
    /// Opens the edits' collection.
    pub async fn open(
        store: Arc<dyn PointStore>,
        sessions: Arc<dyn SessionStore>,
    ) -> Result<Self, DictionaryError> {
        store.ensure_collection(&spec()).await?;
        Ok(Self { store, sessions })
    }

    /// Every word's latest edit, by list and word.
    pub async fn edits(&self) -> Result<Vec<WordEdit>, DictionaryError> {
        let records = scroll_all(&*self.store, EDITS, Filter::default()).await?;
        let mut edits: Vec<WordEdit> = records
            .into_iter()
            .filter_map(|r| serde_json::from_value(serde_json::Value::Object(r.payload)).ok())
            .collect();
        edits.sort_by(|a, b| (a.list, &a.word).cmp(&(b.list, &b.word)));
        Ok(edits)
    }

    /// Stores an edit (replacing the word's earlier one) and bumps the
    /// version, so every instance reloads.
    pub async fn save(&self, edit: &WordEdit) -> Result<(), DictionaryError> {
        let point = NewPoint {
            id: kb::listing::listing_id(
                "dictionary",
                &format!("{}:{}", edit.list.as_str(), edit.word),
            ),
            dense: None,
            lexical: None,
            payload: to_payload(edit),
        };
        self.store.upsert(EDITS, vec![point]).await?;
        self.sessions
            .put(VERSION_KEY, &uuid::Uuid::now_v7().to_string(), VERSION_TTL)
            .await?;
        Ok(())
    }

    /// The current version; it changes with every saved edit.
    pub async fn version(&self) -> Result<Option<String>, DictionaryError> {
        Ok(self.sessions.get(VERSION_KEY).await?)
    }
}

/// The synonym pairs after the edits: an added variant maps to its new
/// standard (replacing a base mapping), a removed one is gone.
pub fn merged_synonyms(
    base: impl IntoIterator<Item = (String, String)>,
    edits: &[WordEdit],
) -> Vec<(String, String)> {
    let mut pairs: BTreeMap<String, String> = base.into_iter().collect();
    for edit in edits.iter().filter(|e| e.list == WordList::Synonym) {
        match (&edit.standard, edit.removed) {
            (Some(standard), false) => {
                pairs.insert(edit.word.clone(), standard.clone());
            }
            _ => {
                pairs.remove(&edit.word);
            }
        }
    }
    pairs.into_iter().collect()
}

/// The sensitive words after the edits.
pub fn merged_sensitive_words(
    base: impl IntoIterator<Item = String>,
    edits: &[WordEdit],
) -> Vec<String> {
    let mut words: std::collections::BTreeSet<String> =
        base.into_iter().map(|w| kb::text::normalise(&w)).collect();
    for edit in edits.iter().filter(|e| e.list == WordList::Sensitive) {
        if edit.removed {
            words.remove(&edit.word);
        } else {
            words.insert(edit.word.clone());
        }
    }
    words.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(list: WordList, word: &str, standard: Option<&str>, removed: bool) -> WordEdit {
        match WordEdit::new(list, word, standard, removed, "editor") {
            Ok(edit) => edit,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn edits_add_replace_and_remove_base_words() {
        let base = vec![
            ("洋芋".to_owned(), "马铃薯".to_owned()),
            ("红苕".to_owned(), "甘薯".to_owned()),
        ];
        let edits = vec![
            edit(WordList::Synonym, "苞谷", Some("玉米"), false),
            edit(WordList::Synonym, "红苕", None, true),
            edit(WordList::Synonym, "洋芋", Some("土豆"), false),
        ];
        let merged = merged_synonyms(base, &edits);
        assert_eq!(
            merged,
            vec![
                ("洋芋".to_owned(), "土豆".to_owned()),
                ("苞谷".to_owned(), "玉米".to_owned()),
            ]
        );
        let words = merged_sensitive_words(
            vec!["赌博".to_owned(), "冰毒".to_owned()],
            &[
                edit(WordList::Sensitive, "冰毒", None, true),
                edit(WordList::Sensitive, "代开发票", None, false),
            ],
        );
        assert_eq!(words, vec!["代开发票".to_owned(), "赌博".to_owned()]);
    }

    #[test]
    fn malformed_words_are_refused_with_a_reason() {
        for (word, standard) in [
            ("", Some("玉米")),
            ("苞谷", Some("")),
            ("苞谷", Some("苞谷")),
            ("a b", Some("c")),
        ] {
            let result = WordEdit::new(WordList::Synonym, word, standard, false, "editor");
            assert!(result.is_err(), "{word} → {standard:?}");
        }
        // Distinct characters: normalisation folds repeats.
        let long: String = "一二三四五六七八九十甲乙丙丁戊己庚辛壬癸子丑寅卯"
            .chars()
            .take(MAX_WORD_CHARS + 1)
            .collect();
        assert!(WordEdit::new(WordList::Sensitive, &long, None, false, "editor").is_err());
        // Full-width and traditional forms are normalised like questions.
        let Ok(edit) = WordEdit::new(WordList::Sensitive, "賭博", None, false, "editor") else {
            panic!("valid");
        };
        assert_eq!(edit.word, "赌博");
    }
}
