//! The sensitive-word filter: a message that contains a listed word gets a
//! polite refusal instead of an answer, and the turn is logged as refused.
//!
//! Words are matched after the same normalisation as questions (full/half
//! width, traditional → simplified, case), so 冰毒 and 氷毒 in full width
//! or traditional script are caught alike.

use aho_corasick::{AhoCorasick, MatchKind};

/// The compiled word list.
pub struct SafetyFilter {
    words: Vec<String>,
    matcher: Option<AhoCorasick>,
}

impl SafetyFilter {
    /// A filter over `words` (any script or width; normalised here).
    pub fn new(words: impl IntoIterator<Item = String>) -> Self {
        let mut words: Vec<String> = words
            .into_iter()
            .map(|w| kb::text::normalise(&w))
            .filter(|w| !w.is_empty())
            .collect();
        words.sort();
        words.dedup();
        let matcher = if words.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&words)
                .ok()
        };
        Self { words, matcher }
    }

    /// The words, normalised and sorted.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// How many words the filter holds.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether the filter holds no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The first listed word in an already normalised text, if any.
    pub fn find(&self, normalised: &str) -> Option<&str> {
        let found = self.matcher.as_ref()?.find(normalised)?;
        self.words
            .get(found.pattern().as_usize())
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_words_are_found_in_any_script_and_ordinary_questions_pass() {
        let filter = SafetyFilter::new(["冰毒".to_owned(), "网络赌博".to_owned()]);
        let check = |text: &str| filter.find(&kb::text::normalise(text)).map(str::to_owned);
        assert_eq!(check("哪里能买到冰毒"), Some("冰毒".to_owned()));
        assert_eq!(check("網絡賭博靠譜嗎"), Some("网络赌博".to_owned()));
        assert_eq!(check("洋芋叶子发黑咋个办"), None);
        assert!(SafetyFilter::new(Vec::new()).find("冰毒").is_none());
    }
}
