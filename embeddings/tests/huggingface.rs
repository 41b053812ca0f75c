//! The Hugging Face checkpoint path, on the real all-MiniLM-L6-v2 safetensors
//! checkpoint (installed by `scripts/fetch-models.sh --test`), against an
//! independent float64 numpy implementation (scripts/gen-minilm-reference.py).

mod common;

use embeddings::{EmbeddingModel, TextKind};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    records: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    text: String,
    ids: Vec<u32>,
    vector: Vec<f32>,
}

fn minilm() -> EmbeddingModel {
    let path = common::model_dir().join("all-MiniLM-L6-v2");
    EmbeddingModel::load(&path)
        .unwrap_or_else(|error| panic!("{error} (run scripts/fetch-models.sh --test)"))
}

#[test]
fn minilm_matches_the_numpy_reference() {
    let model = minilm();
    assert_eq!(model.dimension(), 384);
    assert!(model.prefixes().query.is_empty(), "MiniLM takes no prefix");
    let fixture: Fixture =
        serde_json::from_str(&common::data("minilm_reference.json")).expect("parses");
    let texts: Vec<&str> = fixture.records.iter().map(|r| r.text.as_str()).collect();
    let vectors = model.embed(&texts, TextKind::Passage).expect("embeds");
    for (record, vector) in fixture.records.iter().zip(&vectors) {
        assert_eq!(
            model
                .token_ids(&record.text, TextKind::Passage)
                .expect("tokenizes"),
            record.ids
        );
        let similarity = common::cosine(vector, &record.vector);
        assert!(
            similarity > 0.9999,
            "{:?}: cosine {similarity}",
            record.text
        );
    }
}

#[test]
fn minilm_ranks_an_english_paraphrase_first() {
    let model = minilm();
    let query = model
        .embed(
            &["How can I stop late blight on my potatoes?"],
            TextKind::Query,
        )
        .expect("embeds");
    let candidates = [
        "Controlling potato late blight",
        "Treating rice blast in paddy fields",
        "What to do in an earthquake",
        "Leftover vegetables and cancer risk",
    ];
    let vectors = model.embed(&candidates, TextKind::Passage).expect("embeds");
    let scores: Vec<f32> = vectors
        .iter()
        .map(|v| common::cosine(&query[0], v))
        .collect();
    let best = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i);
    assert_eq!(best, Some(0), "scores {scores:?}");
}

#[test]
fn a_missing_model_names_the_fetch_command() {
    let Err(error) = EmbeddingModel::load(std::path::Path::new("/nonexistent/model")) else {
        panic!("loading a missing model must fail");
    };
    assert!(
        error.to_string().contains("scripts/fetch-models.sh"),
        "{error}"
    );
}
