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
//! all?) (Platt scaling); its weights
//! were fitted on the dev set and rounded (see docs/BENCHMARKS.md), and live
//! in [`Calibration`] so a deployment can refit them.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
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
            bias: -54.5,
            dense_slope: 17.1,
            margin_slope: 27.4,
            coverage_slope: -5.6,
            entry_coverage_slope: 3.6,
            missing_slope: -1.3,
            answer_slope: 45.2,
            answer_threshold: 0.81,
            suggest_threshold: 0.3,
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

    /// The confidence of an entry from its features.
    pub fn confidence(&self, features: &Features) -> f32 {
        let logit = self.bias
            + self.dense_slope * features.dense
            + self.margin_slope * features.margin
            + self.coverage_slope * features.coverage
            + self.entry_coverage_slope * features.entry_coverage
            + self.missing_slope * features.missing
            + self.answer_slope * features.answer_dense;
        1.0 / (1.0 + (-logit).exp())
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
    /// Reads a candidate from an index point's payload.
    pub fn from_payload(
        payload: &Payload,
        dense: Option<f32>,
        lexical: Option<f32>,
    ) -> Option<Self> {
        let entry_id = Uuid::parse_str(payload.get("entry_id")?.as_str()?).ok()?;
        let kind = serde_json::from_value(payload.get("kind")?.clone()).ok()?;
        let text = payload.get("text")?.as_str()?.to_owned();
        let tokens = payload
            .get("tokens")
            .and_then(|t| t.as_array())
            .map(|tokens| {
                tokens
                    .iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
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

/// Share of the query's distinct words found among `tokens`, each word
/// counted by its weight.
pub fn coverage<'a>(query: &[WeightedWord], tokens: impl IntoIterator<Item = &'a String>) -> f32 {
    let present: HashSet<&str> = tokens.into_iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    let (mut total, mut found) = (0.0f32, 0.0f32);
    for word in query {
        if !seen.insert(word.word.as_str()) {
            continue;
        }
        total += word.weight;
        if present.contains(word.word.as_str()) {
            found += word.weight;
        }
    }
    if total == 0.0 { 0.0 } else { found / total }
}

/// Weight of the heaviest query word absent from `tokens`, over the heaviest
/// query word's weight.
pub fn missing<'a>(query: &[WeightedWord], tokens: impl IntoIterator<Item = &'a String>) -> f32 {
    let present: HashSet<&str> = tokens.into_iter().map(String::as_str).collect();
    let heaviest = query.iter().map(|w| w.weight).fold(0.0f32, f32::max);
    if heaviest == 0.0 {
        return 0.0;
    }
    let heaviest_missing = query
        .iter()
        .filter(|w| !present.contains(w.word.as_str()))
        .map(|w| w.weight)
        .fold(0.0f32, f32::max);
    heaviest_missing / heaviest
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
    let mut entry_tokens: HashMap<Uuid, HashSet<String>> = HashMap::new();
    for candidate in points.values() {
        entry_tokens
            .entry(candidate.entry_id)
            .or_default()
            .extend(candidate.tokens.iter().cloned());
    }
    let mut best_per_entry: HashMap<Uuid, Best> = HashMap::new();
    for candidate in points.into_values() {
        let dense = candidate.dense.unwrap_or(dense_floor);
        let coverage = coverage(query, &candidate.tokens);
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
            let tokens = entry_tokens.get(&best.candidate.entry_id);
            let entry_coverage = tokens.map_or(0.0, |tokens| coverage(query, tokens));
            let missing = tokens.map_or(1.0, |tokens| missing(query, tokens));
            let features = Features {
                dense: best.dense,
                margin,
                coverage: best.coverage,
                entry_coverage,
                missing,
                answer_dense: 0.0,
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
    fn thresholds_split_answer_suggest_abstain() {
        let calibration = Calibration::default();
        assert_eq!(calibration.decide(0.9), Decision::Answer);
        assert_eq!(calibration.decide(0.4), Decision::Suggest);
        assert_eq!(calibration.decide(0.1), Decision::Abstain);
    }
}
