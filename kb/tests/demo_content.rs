//! The demo knowledge base parses cleanly with the importer and is marked as
//! sample content, with at least three alternative phrasings per entry.

use std::collections::HashSet;
use std::path::PathBuf;

use kb::import::parse_jsonl;

const SAMPLE_SOURCE: &str = "示例内容，未经专家审核";

#[test]
fn every_demo_entry_imports_and_is_marked_as_sample_content() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("kb/demo exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("entries-"))
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no demo entry files in {}",
        dir.display()
    );

    let mut keys = HashSet::new();
    let mut total = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for row in parse_jsonl(&text) {
            let content = row
                .result
                .unwrap_or_else(|errors| panic!("{} {}: {errors:?}", file.display(), row.origin));
            assert_eq!(
                content.source.organisation,
                SAMPLE_SOURCE,
                "{} {}",
                file.display(),
                row.origin
            );
            assert!(
                content.alt_questions.len() >= 3,
                "{} {}: fewer than 3 phrasings",
                file.display(),
                row.origin
            );
            let key = content
                .external_key
                .clone()
                .expect("every demo entry has an external key");
            assert!(keys.insert(key.clone()), "duplicate external key {key}");
            total += 1;
        }
    }
    assert!(total >= 300, "only {total} demo entries");

    // Every dev-set question names an entry that exists (or none).
    let eval_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("eval");
    let mut questions = 0;
    for file in std::fs::read_dir(&eval_dir)
        .expect("kb/eval exists")
        .filter_map(Result::ok)
    {
        let name = file.file_name().to_string_lossy().into_owned();
        if !name.starts_with("dev-") {
            continue;
        }
        let text = std::fs::read_to_string(file.path()).expect("readable");
        for (index, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let case: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}:{}: {e}", index + 1));
            assert!(
                case["question"]
                    .as_str()
                    .is_some_and(|q| !q.trim().is_empty())
            );
            if let Some(expected) = case["expected"].as_str() {
                assert!(
                    keys.contains(expected),
                    "{name}:{}: unknown entry {expected}",
                    index + 1
                );
            }
            questions += 1;
        }
    }
    assert!(questions >= 300, "only {questions} dev questions");
}
