//! Fuzzing of everything that reads outside input in the knowledge base:
//! the import parsers (JSONL, CSV in UTF-8 or GBK, Markdown with front
//! matter), the text decoder, the normaliser and the analyzer.
//!
//! `cargo fuzz` needs a nightly compiler, which this project's machines do
//! not have, so these are proptest targets: random and near-miss inputs,
//! checked for panics and for each parser's contract. `cargo test -p kb
//! --test fuzz` runs 256 cases per target; the long run in
//! docs/BENCHMARKS.md ("Fuzzing") sets `PROPTEST_CASES`.

use std::path::Path;

use kb::import::{RowOrigin, decode_text, parse_csv, parse_jsonl, parse_markdown};
use kb::text::normalise;
use proptest::prelude::*;

/// Pieces that make random text look like the formats, so cases reach past
/// the first syntax check.
fn near_miss_line() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("\"question\": ".to_owned()),
        Just("\"answer\": ".to_owned()),
        Just("\"category\": \"农业种植\"".to_owned()),
        Just("\"alt_questions\": [".to_owned()),
        Just("\"tags\": [\"水稻\"]".to_owned()),
        Just("\"external_key\": ".to_owned()),
        Just("\"source\": {\"organisation\": \"省农科院\"}".to_owned()),
        Just(", ".to_owned()),
        Just("]".to_owned()),
        Just("\"稻瘟病怎么防治？\"".to_owned()),
        Just("null".to_owned()),
        Just("\u{feff}".to_owned()),
        "[\\PC]{0,8}",
    ];
    proptest::collection::vec(piece, 0..14).prop_map(|pieces| pieces.concat())
}

fn csv_like() -> impl Strategy<Value = Vec<u8>> {
    let header = proptest::sample::subsequence(
        vec![
            "question",
            "answer",
            "category",
            "alt_questions",
            "tags",
            "external_key",
            "source",
        ],
        0..7,
    )
    .prop_map(|columns| columns.join(","));
    let cell = prop_oneof![
        Just("稻瘟病怎么防治".to_owned()),
        Just("农业种植".to_owned()),
        Just("\"有,逗号\"".to_owned()),
        Just("\"未闭合".to_owned()),
        Just("a|b｜c".to_owned()),
        "[\\PC]{0,6}",
    ];
    let row = proptest::collection::vec(cell, 0..8).prop_map(|cells| cells.join(","));
    (header, proptest::collection::vec(row, 0..6), any::<bool>()).prop_map(|(header, rows, gbk)| {
        let text = format!("{header}\n{}", rows.join("\n"));
        if gbk {
            encoding_rs::GBK.encode(&text).0.into_owned()
        } else {
            text.into_bytes()
        }
    })
}

fn markdown_like() -> impl Strategy<Value = String> {
    let front = prop_oneof![
        Just("question: 稻瘟病怎么防治？".to_owned()),
        Just("category: 农业种植".to_owned()),
        Just("tags: [水稻, 稻瘟病]".to_owned()),
        Just("alt_questions:\n  - 谷子叶子有病斑".to_owned()),
        Just("source: {organisation: 省农科院}".to_owned()),
        Just("key: [unclosed".to_owned()),
        Just("&anchor x: *anchor".to_owned()),
        "[\\PC]{0,10}",
    ];
    (
        any::<bool>(),
        proptest::collection::vec(front, 0..6),
        any::<bool>(),
        "[\\PC\n]{0,40}",
    )
        .prop_map(|(open, lines, close, body)| {
            let mut text = String::new();
            if open {
                text.push_str("---\n");
            }
            text.push_str(&lines.join("\n"));
            if close {
                text.push_str("\n---\n");
            }
            text.push_str(&body);
            text
        })
}

proptest! {
    /// One result per non-blank line, each with its own line number, in
    /// order; no input panics.
    #[test]
    fn jsonl_reports_every_line(lines in proptest::collection::vec(
        prop_oneof![near_miss_line(), any::<String>(), Just(String::new())], 0..8))
    {
        let text = lines.join("\n");
        let rows = parse_jsonl(&text);
        let expected: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, _)| i + 1)
            .collect();
        let got: Vec<usize> = rows
            .iter()
            .map(|row| match row.origin {
                RowOrigin::Line(line) => line,
                ref other => panic!("a JSONL row from {other:?}"),
            })
            .collect();
        prop_assert_eq!(got, expected);
    }

    /// Any bytes: rows or a clear error, never a panic; an accepted row
    /// validated like any other.
    #[test]
    fn csv_never_panics(bytes in prop_oneof![csv_like(), proptest::collection::vec(any::<u8>(), 0..256)]) {
        if let Ok(rows) = parse_csv(&bytes) {
            for row in rows {
                if let Ok(content) = row.result {
                    prop_assert!(!content.question.trim().is_empty());
                    prop_assert!(!content.answer.trim().is_empty());
                }
            }
        }
    }

    /// Any text: one row, a parsed entry or the problems with it.
    #[test]
    fn markdown_never_panics(text in prop_oneof![markdown_like(), any::<String>()]) {
        let row = parse_markdown(Path::new("entry.md"), &text);
        if let Ok(content) = row.result {
            prop_assert!(!content.question.trim().is_empty());
        }
    }

    /// UTF-8 (with or without a BOM) decodes to itself; anything else
    /// decodes as GB18030 without panicking.
    #[test]
    fn decoding_keeps_utf8(text in any::<String>(), bom in any::<bool>(),
                           bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut encoded = Vec::new();
        if bom {
            encoded.extend_from_slice(b"\xEF\xBB\xBF");
        }
        encoded.extend_from_slice(text.as_bytes());
        prop_assert_eq!(decode_text(&encoded), text);
        let _ = decode_text(&bytes);
    }

    /// Normalising twice changes nothing more than once: stored canonical
    /// forms and queries meet whichever was normalised first.
    #[test]
    fn normalising_is_idempotent(text in prop_oneof![
        any::<String>(),
        "[洋芋馬鈴薯稻瘟病ＡＢＣ１２３ 　！!？?。，😀好]{0,24}",
    ]) {
        let once = normalise(&text);
        prop_assert_eq!(normalise(&once), once.clone());
    }

    /// The analyzer takes any text a user can send.
    #[test]
    fn the_analyzer_takes_any_text(text in prop_oneof![
        any::<String>(),
        "[洋芋红苕海椒包谷到温病牙虫咋个办那打啥子药 　!？😀]{0,30}",
    ]) {
        let analyzer = analyzer();
        let _ = analyzer.analyze_query(&text);
        let _ = analyzer.canonical(&text);
        let _ = analyzer.index_tokens(&text);
        let _ = analyzer.embedding_text(&text);
    }
}

/// The shipped analyzer, built once: building it loads jieba's dictionary.
fn analyzer() -> &'static kb::text::Analyzer {
    static ANALYZER: std::sync::OnceLock<kb::text::Analyzer> = std::sync::OnceLock::new();
    ANALYZER.get_or_init(kb::dict::builtin_analyzer)
}
