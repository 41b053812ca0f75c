//! Import parsers: every row reports its own errors with its line or file,
//! GBK CSV decodes, and exports parse back to the same content.

use kb::entry::{Category, Entry, EntryContent, EntryId, Source, Status};
use kb::import::{
    RowOrigin, parse_csv, parse_jsonl, parse_markdown, to_csv, to_jsonl_line, to_markdown,
};
use time::OffsetDateTime;

#[test]
fn jsonl_reports_bad_rows_by_line_and_keeps_good_ones() {
    let text = [
        r#"{"external_key":"a","question":"稻瘟病怎么防治","alt_questions":["到温病咋个防"],"answer":"选用抗病品种。","category":"农业种植","source":"示例内容，未经专家审核"}"#,
        "",
        r#"{"external_key":"b","question":"","answer":"","category":"不存在的分类"}"#,
        r#"{not json"#,
        r#"{"external_key":"c","question":"隔夜菜会致癌吗","answer":"正常冷藏的隔夜菜不会致癌。","category":"科学辟谣","source":{"organisation":"示例","url":null}}"#,
    ]
    .join("\n");
    let rows = parse_jsonl(&text);
    assert_eq!(rows.len(), 4);
    assert!(rows[0].result.is_ok());
    assert_eq!(rows[1].origin, RowOrigin::Line(3));
    let errors = rows[1].result.as_ref().unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
    assert!(
        fields.contains(&"category") && fields.contains(&"question") && fields.contains(&"answer"),
        "{fields:?}"
    );
    assert_eq!(rows[2].origin, RowOrigin::Line(4));
    assert!(rows[2].result.is_err());
    let good = rows[3].result.as_ref().unwrap();
    assert_eq!(good.category, Category::Rumour);
    assert_eq!(good.source.organisation, "示例");
}

#[test]
fn gbk_csv_decodes_and_splits_lists() {
    let csv = "external_key,question,alt_questions,answer,category,crops,months,source\n\
               k1,红苕怎么储藏,红薯咋个存|甘薯储藏方法,窖温保持10到14度。,农业种植,甘薯,10|11,示例内容\n\
               k2,坏行,,,,,13,示例\n";
    let (gbk, _, _) = encoding_rs::GBK.encode(csv);
    let rows = parse_csv(&gbk).unwrap();
    assert_eq!(rows.len(), 2);
    let first = rows[0].result.as_ref().unwrap();
    assert_eq!(first.question, "红苕怎么储藏");
    assert_eq!(first.alt_questions, vec!["红薯咋个存", "甘薯储藏方法"]);
    assert_eq!(first.months, vec![10, 11]);
    assert_eq!(rows[1].origin, RowOrigin::Line(3));
    assert!(rows[1].result.is_err());
}

#[test]
fn csv_without_required_columns_is_refused_whole() {
    assert!(parse_csv(b"question,category\nq,c\n").is_err());
}

fn sample_entry() -> Entry {
    Entry {
        id: EntryId::new(),
        content: EntryContent {
            external_key: Some("agri-x".into()),
            question: "辣椒疫病怎么防治？".into(),
            alt_questions: vec!["海椒死苗咋个办".into(), "辣椒茎基部发黑".into()],
            answer: "## 防治\n\n1. 高垄栽培，雨后排水。\n2. 发病初期喷药，注意安全间隔期。".into(),
            short_answer: Some("高垄排水、发病初期用药。".into()),
            category: Category::Farming,
            tags: vec!["病害".into(), "辣椒".into()],
            crops: vec!["辣椒".into()],
            regions: vec!["成都市".into()],
            months: vec![6, 7],
            audience: Some("农户".into()),
            source: Source {
                organisation: "示例内容，未经专家审核".into(),
                document: Some("示例文档".into()),
                url: Some("https://example.invalid/doc".into()),
            },
            review_by: Some("2027-01-31".into()),
        },
        status: Status::Published,
        author: "王编辑".into(),
        reviewer: Some("李审核".into()),
        version: 4,
        created_at: OffsetDateTime::UNIX_EPOCH,
        updated_at: OffsetDateTime::UNIX_EPOCH,
        reviewed_at: None,
    }
}

#[test]
fn every_export_format_round_trips_the_content() {
    let entry = sample_entry();
    let jsonl = parse_jsonl(&to_jsonl_line(&entry));
    assert_eq!(jsonl[0].result.as_ref().unwrap(), &entry.content);

    let csv = parse_csv(&to_csv(std::slice::from_ref(&entry)).unwrap()).unwrap();
    assert_eq!(csv[0].result.as_ref().unwrap(), &entry.content);

    let markdown = parse_markdown(std::path::Path::new("x.md"), &to_markdown(&entry));
    assert_eq!(markdown.result.as_ref().unwrap(), &entry.content);
}

#[test]
fn markdown_without_front_matter_is_a_clear_error() {
    let row = parse_markdown(std::path::Path::new("bad.md"), "# 只有正文");
    let errors = row.result.unwrap_err();
    assert!(errors[0].message.contains("front matter"), "{errors:?}");
}
