//! BM25 as Qdrant sparse vectors.
//!
//! A document's sparse vector holds, per distinct token, BM25's saturated
//! term frequency `tf·(k1+1) / (tf + k1·(1 − b + b·len/avg_len))`; a query's
//! holds 1 per distinct token. The collection's sparse vector is configured
//! with Qdrant's IDF modifier, so the engine multiplies each matched term by
//! its inverse document frequency at query time and the dot product is BM25.
//! Token ids are the CRC-32 of the token's UTF-8 bytes: stable across
//! processes and versions (std's hasher is not), and collisions are
//! negligible for a vocabulary of some hundred thousand words.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// BM25's term-frequency saturation.
const K1: f32 = 1.2;
/// BM25's length normalisation.
const B: f32 = 0.75;

/// A sparse vector: sorted, distinct indices with their values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseVector {
    /// Token ids, ascending.
    pub indices: Vec<u32>,
    /// One value per index.
    pub values: Vec<f32>,
}

impl SparseVector {
    /// Whether the vector has no terms.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// The stable id of a token.
pub fn token_id(token: &str) -> u32 {
    crc32fast::hash(token.as_bytes())
}

/// The BM25 document vector of a token list; `average_len` is the typical
/// token count of this kind of text (a phrasing, an answer).
pub fn document_vector(tokens: &[String], average_len: f32) -> SparseVector {
    let mut counts: BTreeMap<u32, f32> = BTreeMap::new();
    for token in tokens {
        *counts.entry(token_id(token)).or_default() += 1.0;
    }
    let len = tokens.len() as f32;
    let norm = K1 * (1.0 - B + B * len / average_len.max(1.0));
    let (indices, values) = counts
        .into_iter()
        .map(|(id, tf)| (id, tf * (K1 + 1.0) / (tf + norm)))
        .unzip();
    SparseVector { indices, values }
}

/// The query vector of a token list: each distinct token once, weight 1.
pub fn query_vector(tokens: &[String]) -> SparseVector {
    let ids: std::collections::BTreeSet<u32> = tokens.iter().map(|t| token_id(t)).collect();
    SparseVector {
        values: vec![1.0; ids.len()],
        indices: ids.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn repeated_terms_saturate_and_indices_are_sorted_and_distinct() {
        let vector = document_vector(&tokens(&["马铃薯", "晚疫病", "马铃薯", "马铃薯"]), 4.0);
        assert_eq!(vector.indices.len(), 2);
        assert!(vector.indices.windows(2).all(|w| w[0] < w[1]));
        let potato = vector.values[vector
            .indices
            .iter()
            .position(|&i| i == token_id("马铃薯"))
            .unwrap()];
        let blight = vector.values[vector
            .indices
            .iter()
            .position(|&i| i == token_id("晚疫病"))
            .unwrap()];
        assert!(potato > blight && potato < K1 + 1.0);
    }

    #[test]
    fn longer_documents_weigh_each_term_less() {
        let short = document_vector(&tokens(&["水稻", "稻瘟病"]), 4.0);
        let long = document_vector(
            &tokens(&["水稻", "稻瘟病", "a", "b", "c", "d", "e", "f"]),
            4.0,
        );
        let id = token_id("稻瘟病");
        let value = |v: &SparseVector| v.values[v.indices.iter().position(|&i| i == id).unwrap()];
        assert!(value(&short) > value(&long));
    }

    #[test]
    fn query_vector_has_unit_weights() {
        let vector = query_vector(&tokens(&["水稻", "水稻", "稻瘟病"]));
        assert_eq!(vector.values, vec![1.0, 1.0]);
    }
}
