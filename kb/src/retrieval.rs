//! Fusion of dense and lexical candidates into ranked entries with a
//! calibrated confidence. Pure functions: the store is queried elsewhere.
//!
//! Each index point (a phrasing or an answer) gets a score
//! `dense + coverage_weight · coverage`, where `coverage` is the share of the
//! query's words, weighted by how informative each word is (an IDF estimate
//! from the segmenter's dictionary), that the point's text contains. An
//! entry scores as its best point. Raw BM25 is kept as evidence but not used
//! for ranking: its scale depends on the collection's IDF statistics, while
//! coverage means the same at 300 entries and at 100k.
//!
//! The confidence is a logistic function of the top entry's dense score, its
//! lead over the next entry, the coverage of its best point and the coverage
//! of all its points found (does the entry talk about what was asked at
//! all?), the query-to-answer similarity, which kind of text matched and how
//! well the best rival entry covers the question (Platt scaling; see
//! [`Features`]); its weights were fitted on the dev set (see
//! docs/BENCHMARKS.md), and live in [`Calibration`] so a deployment can
//! refit them.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::base::{Decision, Evidence, PhrasingKind};
use crate::store::Payload;

/// Weights and thresholds of ranking and confidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Calibration {
    /// Weight of word coverage in the ranking score.
    pub coverage_weight: f32,
    /// The logistic model's intercept.
    pub bias: f32,
    /// Weight of [`Features::dense`].
    pub dense_slope: f32,
    /// Weight of [`Features::margin`].
    pub margin_slope: f32,
    /// Weight of [`Features::coverage`].
    pub coverage_slope: f32,
    /// Weight of [`Features::entry_coverage`].
    pub entry_coverage_slope: f32,
    /// Weight of [`Features::missing`].
    pub missing_slope: f32,
    /// Weight of [`Features::answer_dense`].
    pub answer_slope: f32,
    /// Weight of [`Features::matched_question`]. This and the next three
    /// weights read as 0 when a calibration file lacks them: a file fitted
    /// before they existed keeps its own model rather than gaining the
    /// built-in weights of features it was not fitted with.
    #[serde(default)]
    pub matched_question_slope: f32,
    /// Weight of [`Features::matched_answer`].
    #[serde(default)]
    pub matched_answer_slope: f32,
    /// Weight of [`Features::rival_entry_coverage`].
    #[serde(default)]
    pub rival_entry_coverage_slope: f32,
    /// Weight of [`Features::absent_subject`].
    #[serde(default)]
    pub absent_subject_slope: f32,
    /// Confidence from which the top entry is answered directly.
    pub answer_threshold: f32,
    /// Confidence from which entries are offered as "did you mean".
    pub suggest_threshold: f32,
    /// Most entries returned.
    pub max_hits: usize,
}

impl Default for Calibration {
    /// Fitted with `scripts/fit-calibration.py` on the committed dev sets
    /// (see docs/BENCHMARKS.md).
    fn default() -> Self {
        Self {
            coverage_weight: 0.15,
            bias: -59.614357,
            dense_slope: 23.339335,
            margin_slope: 21.695452,
            coverage_slope: -4.345736,
            entry_coverage_slope: 4.510219,
            missing_slope: -0.048046,
            answer_slope: 43.351036,
            matched_question_slope: -0.653911,
            matched_answer_slope: 0.16001,
            rival_entry_coverage_slope: -1.300384,
            absent_subject_slope: -3.470354,
            answer_threshold: 0.592614,
            suggest_threshold: 0.296,
            max_hits: 10,
        }
    }
}

impl Calibration {
    /// The decision for a top confidence.
    pub fn decide(&self, confidence: f32) -> Decision {
        if confidence >= self.answer_threshold {
            Decision::Answer
        } else if confidence >= self.suggest_threshold {
            Decision::Suggest
        } else {
            Decision::Abstain
        }
    }

    /// How far below the answer threshold an entry that leaves the
    /// question's subject unmet is held.
    const UNMET_SUBJECT_MARGIN: f32 = 0.01;

    /// The confidence of an entry from its features.
    ///
    /// An entry that never mentions the crop, animal, food, pest or hazard
    /// the question names ([`Features::absent_subject`]) is at most offered as
    /// "你是想问", however close its wording: answering 高粱丝黑穗病 with the
    /// maize entry would send a farmer to spray the wrong crop. Its
    /// confidence is held just below the answer threshold, so every reader
    /// of the confidence (the decision, the engine, the editors' view)
    /// agrees. So is an entry [`Features::promoted`] over such entries.
    pub fn confidence(&self, features: &Features) -> f32 {
        let logit = self.bias
            + self.dense_slope * features.dense
            + self.margin_slope * features.margin
            + self.coverage_slope * features.coverage
            + self.entry_coverage_slope * features.entry_coverage
            + self.missing_slope * features.missing
            + self.answer_slope * features.answer_dense
            + self.matched_question_slope * features.matched_question
            + self.matched_answer_slope * features.matched_answer
            + self.rival_entry_coverage_slope * features.rival_entry_coverage
            + self.absent_subject_slope * features.absent_subject;
        let confidence = 1.0 / (1.0 + (-logit).exp());
        if features.absent_subject > 0.0 || features.promoted > 0.0 {
            return confidence.min(self.answer_threshold - Self::UNMET_SUBJECT_MARGIN);
        }
        confidence
    }
}

/// What the confidence is computed from; also dumped by `wenke eval
/// --features` for refitting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Features {
    /// Dense score of the entry's best point.
    pub dense: f32,
    /// The entry's score minus the best other entry's score.
    pub margin: f32,
    /// Coverage of the entry's best point.
    pub coverage: f32,
    /// Coverage of all the entry's points the searches found, together.
    pub entry_coverage: f32,
    /// Weight of the most informative query word that none of those points
    /// contains, relative to the query's most informative word: 1 when the
    /// entry misses the question's key word (冻伤 asked, 烫伤 answered).
    pub missing: f32,
    /// Cosine similarity of the query (as a query) and the entry's answer
    /// (as a passage): does the answer answer it? Filled in by the caller,
    /// which looks it up; 0 until then.
    pub answer_dense: f32,
    /// 1 when the best point is the entry's canonical question. Template
    /// questions ("X病怎么防治") match other crops' template questions
    /// closely, so such a match is worth a little less than an
    /// alternative phrasing's.
    pub matched_question: f32,
    /// 1 when the best point is the entry's answer text.
    pub matched_answer: f32,
    /// Entry coverage of the best other entry: when a rival covers the
    /// question as well, the lead is less telling.
    pub rival_entry_coverage: f32,
    /// 1 when the entry leaves the question's subject unmet: the question
    /// names crops or animals of which the entry mentions none, foods it
    /// mentions none of, or a pest, disease, illness or hazard it never
    /// mentions (高粱丝黑穗病 asked, the maize entry found; see
    /// [`crate::subjects`]). Filled in by the caller, which reads the
    /// entry; 0 until then.
    pub absent_subject: f32,
    /// 1 when the entry was moved above entries the search scored higher
    /// because those leave the question's subject unmet (地震 + 在田里
    /// ranks the flood entry first, the outdoor earthquake entry is moved
    /// up). Such an entry leads the "你是想问" list but, like the ones it
    /// passed, is never answered directly: the model was not fitted on
    /// entries in that place. Not weighted; set by the caller.
    pub promoted: f32,
}

/// One index point returned by a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The entry it belongs to.
    pub entry_id: Uuid,
    /// Which text it is.
    pub kind: PhrasingKind,
    /// The text.
    pub text: String,
    /// Its lexical tokens.
    pub tokens: Vec<String>,
    /// Cosine similarity, if the dense search returned it.
    pub dense: Option<f32>,
    /// BM25 score, if the lexical search returned it.
    pub lexical: Option<f32>,
}

impl Candidate {
    /// Reads a candidate from an index point's payload, taking its text
    /// and tokens out of it rather than copying them.
    pub fn from_payload(
        mut payload: Payload,
        dense: Option<f32>,
        lexical: Option<f32>,
    ) -> Option<Self> {
        let entry_id = Uuid::parse_str(payload.get("entry_id")?.as_str()?).ok()?;
        let kind: PhrasingKind = serde_json::from_value(payload.remove("kind")?).ok()?;
        let text = match payload.remove("text")? {
            Value::String(text) => text,
            _ => return None,
        };
        let tokens = match payload.remove("tokens") {
            Some(Value::Array(tokens)) => tokens
                .into_iter()
                .filter_map(|token| match token {
                    Value::String(token) => Some(token),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(Self {
            entry_id,
            kind,
            text,
            tokens,
            dense,
            lexical,
        })
    }
}

/// One ranked entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The entry.
    pub entry_id: Uuid,
    /// Ranking score.
    pub score: f32,
    /// Confidence.
    pub confidence: f32,
    /// The features the confidence came from.
    pub features: Features,
    /// Why it matched.
    pub evidence: Evidence,
}

/// A query word and how informative it is.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedWord {
    /// The word.
    pub word: String,
    /// Its weight (see `Analyzer::word_weight`).
    pub weight: f32,
}

/// The query's distinct words, and which of them a list of tokens holds.
///
/// Ranking asks "which query words does this text contain?" of every
/// candidate and of every entry's candidates together. Answering it once per
/// candidate as a bit set, and combining sets with `|`, avoids building a
/// hash set of each candidate's tokens (tens of words, 80 candidates per
/// search) on the request path.
struct QueryWords<'q> {
    /// Distinct words in order of first appearance; at most
    /// [`QueryWords::MAX`].
    words: Vec<&'q WeightedWord>,
    total_weight: f32,
    heaviest: f32,
}

/// Bit `i` set: the text contains `QueryWords::words[i]`.
type WordSet = u128;

impl<'q> QueryWords<'q> {
    /// Words beyond this many distinct ones are not counted. A chat
    /// question has a few dozen at most.
    const MAX: usize = WordSet::BITS as usize;

    fn new(query: &'q [WeightedWord]) -> Self {
        let mut words: Vec<&WeightedWord> = Vec::new();
        for word in query {
            if words.len() == Self::MAX {
                break;
            }
            if !words.iter().any(|seen| seen.word == word.word) {
                words.push(word);
            }
        }
        Self {
            total_weight: words.iter().map(|w| w.weight).sum(),
            heaviest: words.iter().map(|w| w.weight).fold(0.0f32, f32::max),
            words,
        }
    }

    /// Which query words occur among `tokens`. A linear scan over the
    /// query's few words beats hashing each token.
    fn found_in<'t>(&self, tokens: impl IntoIterator<Item = &'t String>) -> WordSet {
        let mut found: WordSet = 0;
        for token in tokens {
            if let Some(i) = self.words.iter().position(|w| w.word == *token) {
                found |= 1 << i;
            }
        }
        found
    }

    /// Share of the query's weight that the words in `found` carry.
    fn coverage(&self, found: WordSet) -> f32 {
        if self.total_weight == 0.0 {
            return 0.0;
        }
        let found_weight: f32 = self
            .words
            .iter()
            .enumerate()
            .filter(|(i, _)| found & (1 << i) != 0)
            .map(|(_, w)| w.weight)
            .sum();
        found_weight / self.total_weight
    }

    /// Weight of the heaviest word not in `found`, over the heaviest word's.
    fn missing(&self, found: WordSet) -> f32 {
        if self.heaviest == 0.0 {
            return 0.0;
        }
        let heaviest_missing = self
            .words
            .iter()
            .enumerate()
            .filter(|(i, _)| found & (1 << i) == 0)
            .map(|(_, w)| w.weight)
            .fold(0.0f32, f32::max);
        heaviest_missing / self.heaviest
    }
}

/// Share of the query's distinct words found among `tokens`, each word
/// counted by its weight.
pub fn coverage<'a>(query: &[WeightedWord], tokens: impl IntoIterator<Item = &'a String>) -> f32 {
    let words = QueryWords::new(query);
    words.coverage(words.found_in(tokens))
}

/// Weight of the heaviest query word absent from `tokens`, over the heaviest
/// query word's weight.
pub fn missing<'a>(query: &[WeightedWord], tokens: impl IntoIterator<Item = &'a String>) -> f32 {
    let words = QueryWords::new(query);
    words.missing(words.found_in(tokens))
}

/// Merges the two candidate lists into ranked entries.
pub fn rank_candidates(
    query: &[WeightedWord],
    dense: Vec<Candidate>,
    lexical: Vec<Candidate>,
    calibration: &Calibration,
) -> Vec<Ranked> {
    // A point found only lexically gets the weakest dense score seen: it is
    // known to be no closer than that.
    let dense_floor = dense
        .iter()
        .filter_map(|c| c.dense)
        .fold(f32::INFINITY, f32::min);
    let dense_floor = if dense_floor.is_finite() {
        dense_floor
    } else {
        0.0
    };
    let mut points: HashMap<(Uuid, String), Candidate> = HashMap::new();
    for candidate in dense.into_iter().chain(lexical) {
        let key = (candidate.entry_id, candidate.text.clone());
        match points.get_mut(&key) {
            Some(existing) => {
                existing.dense = existing.dense.or(candidate.dense);
                existing.lexical = existing.lexical.or(candidate.lexical);
            }
            None => {
                points.insert(key, candidate);
            }
        }
    }
    struct Best {
        score: f32,
        dense: f32,
        coverage: f32,
        candidate: Candidate,
    }
    let words = QueryWords::new(query);
    // Which query words each entry's found points contain, together.
    let mut entry_words: HashMap<Uuid, WordSet> = HashMap::new();
    let mut best_per_entry: HashMap<Uuid, Best> = HashMap::new();
    for candidate in points.into_values() {
        let found = words.found_in(&candidate.tokens);
        *entry_words.entry(candidate.entry_id).or_default() |= found;
        let dense = candidate.dense.unwrap_or(dense_floor);
        let coverage = words.coverage(found);
        let score = dense + calibration.coverage_weight * coverage;
        let replace = best_per_entry
            .get(&candidate.entry_id)
            .is_none_or(|b| score > b.score);
        if replace {
            best_per_entry.insert(
                candidate.entry_id,
                Best {
                    score,
                    dense,
                    coverage,
                    candidate,
                },
            );
        }
    }
    let mut entries: Vec<Best> = best_per_entry.into_values().collect();
    entries.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.candidate.entry_id.cmp(&b.candidate.entry_id))
    });
    entries.truncate(calibration.max_hits.max(1));
    let scores: Vec<f32> = entries.iter().map(|b| b.score).collect();
    // Which query words each ranked entry's points hold, in rank order.
    let found_by_rank: Vec<WordSet> = entries
        .iter()
        .map(|best| {
            entry_words
                .get(&best.candidate.entry_id)
                .copied()
                .unwrap_or_default()
        })
        .collect();
    let entry_coverages: Vec<f32> = found_by_rank
        .iter()
        .map(|found| words.coverage(*found))
        .collect();
    entries
        .into_iter()
        .enumerate()
        .map(|(rank, best)| {
            let best_other = scores
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != rank)
                .map(|(_, s)| *s)
                .fold(f32::NEG_INFINITY, f32::max);
            // With a single candidate there is no rival: count the lead as
            // the coverage weight, a typical clear lead.
            let margin = if best_other.is_finite() {
                best.score - best_other
            } else {
                calibration.coverage_weight
            };
            let entry_coverage = entry_coverages[rank];
            let missing = words.missing(found_by_rank[rank]);
            // The best other entry is the leader, or for the leader the
            // runner-up.
            let rival = if rank == 0 { 1 } else { 0 };
            let rival_entry_coverage = entry_coverages.get(rival).copied().unwrap_or(0.0);
            let flag = |kind| f32::from(best.candidate.kind == kind);
            let features = Features {
                dense: best.dense,
                margin,
                coverage: best.coverage,
                entry_coverage,
                missing,
                answer_dense: 0.0,
                matched_question: flag(PhrasingKind::Question),
                matched_answer: flag(PhrasingKind::Answer),
                rival_entry_coverage,
                absent_subject: 0.0,
                promoted: 0.0,
            };
            Ranked {
                entry_id: best.candidate.entry_id,
                score: best.score,
                confidence: calibration.confidence(&features),
                features,
                evidence: Evidence {
                    matched_text: best.candidate.text,
                    matched_kind: best.candidate.kind,
                    dense: best.candidate.dense,
                    lexical: best.candidate.lexical,
                    coverage: best.coverage,
                    exact: false,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| (*w).to_owned()).collect()
    }

    /// Query words weighted by length, as a stand-in for the analyzer's weights.
    fn query(list: &[&str]) -> Vec<WeightedWord> {
        list.iter()
            .map(|w| WeightedWord {
                word: (*w).to_owned(),
                weight: w.chars().count() as f32,
            })
            .collect()
    }

    fn candidate(entry: u128, text: &str, tokens: &[&str], dense: Option<f32>) -> Candidate {
        Candidate {
            entry_id: Uuid::from_u128(entry),
            kind: PhrasingKind::Alternative,
            text: text.into(),
            tokens: words(tokens),
            dense,
            lexical: None,
        }
    }

    #[test]
    fn coverage_counts_each_word_by_its_weight() {
        let query = query(&["马铃薯", "晚疫病", "咋"]);
        assert!(coverage(&query, &words(&["马铃薯", "晚疫病"])) > 0.8);
        assert!(coverage(&query, &words(&["咋"])) < 0.2);
        assert_eq!(coverage(&[], &words(&["咋"])), 0.0);
    }

    #[test]
    fn an_entry_scores_as_its_best_phrasing_and_leads_get_confidence() {
        let query = query(&["马铃薯", "晚疫病"]);
        let ranked = rank_candidates(
            &query,
            vec![
                candidate(1, "马铃薯晚疫病怎么防治", &["马铃薯", "晚疫病"], Some(0.93)),
                candidate(1, "洋芋叶子发黑", &["马铃薯", "叶子"], Some(0.88)),
                candidate(2, "马铃薯怎么储藏", &["马铃薯", "储藏"], Some(0.84)),
            ],
            Vec::new(),
            &Calibration::default(),
        );
        assert_eq!(ranked.len(), 2);
        assert_eq!(ranked[0].entry_id, Uuid::from_u128(1));
        assert_eq!(ranked[0].evidence.matched_text, "马铃薯晚疫病怎么防治");
        assert!(ranked[1].confidence < ranked[0].confidence);
        // With its answer as relevant as a good answer is, the leader is answered.
        let calibration = Calibration::default();
        let mut features = ranked[0].features;
        features.answer_dense = 0.9;
        let confidence = calibration.confidence(&features);
        assert_eq!(
            calibration.decide(confidence),
            Decision::Answer,
            "{confidence}"
        );
    }

    #[test]
    fn lexical_only_points_get_the_dense_floor() {
        let query = query(&["安岳柠檬"]);
        let ranked = rank_candidates(
            &query,
            vec![candidate(1, "柑橘", &["柑橘"], Some(0.80))],
            vec![candidate(
                2,
                "安岳柠檬流胶病",
                &["安岳柠檬", "流胶病"],
                None,
            )],
            &Calibration::default(),
        );
        let lexical = ranked
            .iter()
            .find(|r| r.entry_id == Uuid::from_u128(2))
            .expect("lexical candidate kept");
        assert_eq!(lexical.evidence.dense, None);
        assert!((lexical.features.dense - 0.80).abs() < 1e-6);
        assert_eq!(ranked[0].entry_id, Uuid::from_u128(2));
    }

    #[test]
    fn a_calibration_file_fitted_before_the_newer_features_ignores_them() {
        let old: Calibration = serde_json::from_str(
            r#"{"bias": -54.5, "dense_slope": 17.1, "answer_threshold": 0.81}"#,
        )
        .expect("parse");
        assert_eq!(old.matched_question_slope, 0.0);
        assert_eq!(old.rival_entry_coverage_slope, 0.0);
        assert_eq!(old.absent_subject_slope, 0.0);
        // Fields it does not name still come from the built-in calibration.
        assert_eq!(old.max_hits, Calibration::default().max_hits);
        assert_eq!(old.bias, -54.5);
    }

    #[test]
    fn an_entry_that_misses_the_asked_subject_is_never_answered_directly() {
        let calibration = Calibration::default();
        let strong = Features {
            dense: 0.98,
            margin: 0.1,
            coverage: 1.0,
            entry_coverage: 1.0,
            missing: 0.0,
            answer_dense: 0.95,
            matched_question: 0.0,
            matched_answer: 0.0,
            rival_entry_coverage: 0.2,
            absent_subject: 0.0,
            promoted: 0.0,
        };
        assert_eq!(
            calibration.decide(calibration.confidence(&strong)),
            Decision::Answer
        );
        // Missing the subject, or moved above entries that miss it: the
        // same features are only offered.
        let unmet = Features {
            absent_subject: 1.0,
            ..strong
        };
        let promoted = Features {
            promoted: 1.0,
            ..strong
        };
        for held in [unmet, promoted] {
            assert_eq!(
                calibration.decide(calibration.confidence(&held)),
                Decision::Suggest,
                "{held:?}"
            );
        }
    }

    #[test]
    fn thresholds_split_answer_suggest_abstain() {
        let calibration = Calibration::default();
        assert_eq!(calibration.decide(0.9), Decision::Answer);
        assert_eq!(calibration.decide(0.4), Decision::Suggest);
        assert_eq!(calibration.decide(0.1), Decision::Abstain);
    }

    /// The definitions the bit sets must agree with, written the direct way.
    fn reference_coverage(query: &[WeightedWord], tokens: &[String]) -> f32 {
        let present: std::collections::HashSet<&str> = tokens.iter().map(String::as_str).collect();
        let mut seen = std::collections::HashSet::new();
        let (mut total, mut found) = (0.0f32, 0.0f32);
        for word in query {
            if seen.insert(word.word.as_str()) {
                total += word.weight;
                if present.contains(word.word.as_str()) {
                    found += word.weight;
                }
            }
        }
        if total == 0.0 { 0.0 } else { found / total }
    }

    fn reference_missing(query: &[WeightedWord], tokens: &[String]) -> f32 {
        let heaviest = query.iter().map(|w| w.weight).fold(0.0f32, f32::max);
        if heaviest == 0.0 {
            return 0.0;
        }
        query
            .iter()
            .filter(|w| !tokens.contains(&w.word))
            .map(|w| w.weight)
            .fold(0.0f32, f32::max)
            / heaviest
    }

    proptest::proptest! {
        /// Coverage and the missing key word, computed through bit sets,
        /// equal their direct definitions, repeated query words included.
        #[test]
        fn word_sets_agree_with_the_definitions(
            query_words in proptest::collection::vec((0usize..12, 0.0f32..5.0), 0..20),
            token_words in proptest::collection::vec(0usize..16, 0..40),
        ) {
            let vocabulary: Vec<String> = (0..16).map(|i| format!("词{i}")).collect();
            // A word's weight depends on the word, as the analyzer's does.
            let weight_of: Vec<f32> = (0..16).map(|i| {
                query_words.iter().find(|(w, _)| *w == i).map_or(1.0, |(_, weight)| *weight)
            }).collect();
            let query: Vec<WeightedWord> = query_words
                .iter()
                .map(|(w, _)| WeightedWord { word: vocabulary[*w].clone(), weight: weight_of[*w] })
                .collect();
            let tokens: Vec<String> = token_words.iter().map(|t| vocabulary[*t].clone()).collect();
            proptest::prop_assert!((coverage(&query, &tokens) - reference_coverage(&query, &tokens)).abs() < 1e-5);
            proptest::prop_assert!((missing(&query, &tokens) - reference_missing(&query, &tokens)).abs() < 1e-6);
        }
    }
}
