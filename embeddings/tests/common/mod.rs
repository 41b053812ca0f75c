//! Shared helpers for the embeddings integration tests.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use embeddings::EmbeddingModel;

/// The model directory: `$WENKE_MODEL_DIR` (when not empty), else `models/` at the workspace root.
pub fn model_dir() -> PathBuf {
    std::env::var_os("WENKE_MODEL_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"))
}

/// The production E5S1 model, loaded once per test binary. Panics with the
/// install command when the model is missing: these tests must not be skipped.
#[allow(dead_code)]
pub fn e5() -> Arc<EmbeddingModel> {
    static MODEL: OnceLock<Arc<EmbeddingModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = model_dir().join("multilingual-e5-small-q4");
            Arc::new(EmbeddingModel::load(&path).unwrap_or_else(|error| panic!("{error}")))
        })
        .clone()
}

/// Reads a file under `tests/data`.
#[allow(dead_code)]
pub fn data(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Cosine similarity of two vectors.
#[allow(dead_code)]
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}
