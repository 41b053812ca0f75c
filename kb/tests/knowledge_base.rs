//! The knowledge base end to end on a real store and the real model:
//! workflow, the published-only invariant, Chinese retrieval, import and
//! export, crash recovery, how long search results are reused. Runs on the
//! embedded store, and also on a Qdrant server when `QDRANT_URL` is set.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use embeddings::{Embedder, EmbeddingModel};
use kb::entry::Status;
use kb::import::{parse_csv, parse_jsonl, to_csv, to_jsonl_line};
use kb::store::edge::EdgeStore;
use kb::store::server::{ServerConfig, ServerStore};
use kb::store::{
    CollectionSpec, Filter, Hit, NewPoint, Order, Payload, PointStore, Record, SearchRequest,
    StoreError, Writers,
};
use kb::workflow::{Action, WorkflowError};
use kb::{Calibration, Decision, ImportOptions, KbError, KnowledgeBase, ListFilter, SearchFilter};
use uuid::Uuid;

fn model() -> Arc<EmbeddingModel> {
    static MODEL: OnceLock<Arc<EmbeddingModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = std::env::var_os("WENKE_MODEL_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"));
            Arc::new(
                EmbeddingModel::load(&dir.join("multilingual-e5-small-q4"))
                    .unwrap_or_else(|e| panic!("{e}")),
            )
        })
        .clone()
}

fn fixture() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixture.jsonl"),
    )
    .expect("fixture")
}

/// A store to run against, and what keeps it alive.
struct TestStore {
    name: &'static str,
    store: Arc<dyn PointStore>,
    _dir: Option<tempfile::TempDir>,
}

fn stores() -> Vec<TestStore> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stores = vec![TestStore {
        name: "embedded",
        store: Arc::new(EdgeStore::open(dir.path()).expect("open")),
        _dir: Some(dir),
    }];
    match std::env::var("QDRANT_URL").ok().filter(|u| !u.is_empty()) {
        Some(url) => stores.push(TestStore {
            name: "server",
            store: Arc::new(
                ServerStore::connect(&ServerConfig {
                    api_key: std::env::var("QDRANT_API_KEY").ok(),
                    ..ServerConfig::new(url, format!("test_{}_", uuid::Uuid::new_v4().simple()))
                })
                .expect("connect"),
            ),
            _dir: None,
        }),
        None => eprintln!(
            "server store skipped: set QDRANT_URL to run these tests against a Qdrant server"
        ),
    }
    stores
}

async fn open(store: Arc<dyn PointStore>) -> KnowledgeBase {
    KnowledgeBase::open(
        store,
        Embedder::from_model(model(), 8),
        kb::dict::builtin_analyzer(),
        Calibration::default(),
    )
    .await
    .expect("open kb")
}

async fn loaded(store: Arc<dyn PointStore>) -> KnowledgeBase {
    let kb = open(store).await;
    let report = kb
        .import(
            parse_jsonl(&fixture()),
            &ImportOptions {
                actor: "编辑甲".into(),
                approve_as: Some("审核乙".into()),
            },
            &|_, _| {},
        )
        .await
        .expect("import");
    assert_eq!(report.created, 8, "{report:?}");
    kb
}

fn top_key(outcome: &kb::SearchOutcome) -> Option<String> {
    outcome
        .hits
        .first()
        .and_then(|h| h.entry.content.external_key.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn farmer_questions_find_the_right_entry() {
    for TestStore { name, store, _dir } in stores() {
        let kb = loaded(store).await;
        let cases = [
            ("洋芋叶子发黑咋个办", "t-potato-late-blight"),
            ("土豆叶子上面有黑斑，背面一层白毛", "t-potato-late-blight"),
            ("到温病用啥子药", "t-rice-blast"),
            ("海椒苗一片一片地死", "t-chili-blight"),
            ("红苕在窖里头烂了好多", "t-sweet-potato-storage"),
            ("剩菜放一晚上再吃会不会得癌", "t-overnight-veg"),
            ("下大雨后山坡垮了往哪里跑", "t-landslide"),
        ];
        for (question, expected) in cases {
            let outcome = kb
                .search(question, &SearchFilter::default())
                .await
                .expect("search");
            assert_eq!(
                top_key(&outcome).as_deref(),
                Some(expected),
                "[{name}] {question}: {:?}",
                outcome
                    .hits
                    .iter()
                    .map(|h| (&h.entry.content.question, h.confidence))
                    .collect::<Vec<_>>()
            );
        }
        // Evidence says which phrasing matched and why.
        let outcome = kb
            .search("洋芋叶子发黑咋个办", &SearchFilter::default())
            .await
            .expect("search");
        let hit = &outcome.hits[0];
        assert!(
            hit.evidence.exact,
            "[{name}] a stored phrasing must match exactly"
        );
        assert_eq!(outcome.decision, Decision::Answer);
        let rewritten = kb
            .search("洋芋叶子发黑了怎么搞", &SearchFilter::default())
            .await
            .expect("search");
        assert!(
            rewritten
                .query
                .rewrites
                .iter()
                .any(|r| r.from == "洋芋" && r.to == "马铃薯"),
            "[{name}] dialect rewrite shown: {:?}",
            rewritten.query.rewrites
        );
        assert!(rewritten.hits[0].evidence.dense.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_disease_on_another_crop_is_offered_not_answered() {
    for TestStore { name, store, _dir } in stores() {
        let kb = loaded(store).await;
        // Tomato late blight: the closest entry is the potato one, which
        // never mentions tomatoes.
        let other_crop = kb
            .search("番茄晚疫病怎么防治", &SearchFilter::default())
            .await
            .expect("search");
        assert_eq!(
            top_key(&other_crop).as_deref(),
            Some("t-potato-late-blight"),
            "[{name}]"
        );
        assert_eq!(other_crop.hits[0].features.absent_subject, 1.0, "[{name}]");
        assert_ne!(other_crop.decision, Decision::Answer, "[{name}]");
        // The entry's own crop, in dialect, meets the check.
        let own_crop = kb
            .search("洋芋晚疫病打啥子药", &SearchFilter::default())
            .await
            .expect("search");
        assert_eq!(
            top_key(&own_crop).as_deref(),
            Some("t-potato-late-blight"),
            "[{name}]"
        );
        assert_eq!(own_crop.hits[0].features.absent_subject, 0.0, "[{name}]");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_match_ignores_punctuation_width_and_script() {
    for TestStore { name, store, _dir } in stores() {
        let kb = loaded(store).await;
        for variant in [
            "隔夜菜会致癌吗",
            "隔夜菜會致癌嗎？？",
            "  隔夜菜会致癌吗!  ",
        ] {
            let outcome = kb
                .search(variant, &SearchFilter::default())
                .await
                .expect("search");
            assert_eq!(
                top_key(&outcome).as_deref(),
                Some("t-overnight-veg"),
                "[{name}] {variant}"
            );
            assert!(outcome.hits[0].evidence.exact, "[{name}] {variant}");
            assert_eq!(outcome.hits[0].confidence, 1.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_published_entries_are_ever_returned() {
    for TestStore { name, store, _dir } in stores() {
        let kb = loaded(store).await;
        let content = parse_jsonl(
            r#"{"question": "蚕豆赤斑病怎么防治？", "alt_questions": ["胡豆叶子上有红褐色斑点"], "answer": "草稿答案", "category": "农业种植", "source": {"organisation": "测试"}}"#,
        )
        .remove(0)
        .result
        .expect("valid");
        let draft = kb.create(content, "编辑甲").await.expect("create");
        let search = |q: &'static str| {
            let kb = &kb;
            async move {
                kb.search(q, &SearchFilter::default())
                    .await
                    .expect("search")
            }
        };
        let is_found =
            |outcome: &kb::SearchOutcome| outcome.hits.iter().any(|h| h.entry.id == draft.id);

        assert!(
            !is_found(&search("蚕豆赤斑病怎么防治？").await),
            "[{name}] draft leaked"
        );
        kb.apply(draft.id, Action::Submit, "编辑甲")
            .await
            .expect("submit");
        assert!(
            !is_found(&search("蚕豆赤斑病怎么防治？").await),
            "[{name}] entry in review leaked"
        );

        // Four eyes: the author cannot approve.
        let own = kb
            .apply(draft.id, Action::Approve { note: None }, "编辑甲")
            .await;
        assert!(
            matches!(
                own,
                Err(KbError::Workflow(WorkflowError::SelfReview { .. }))
            ),
            "[{name}] {own:?}"
        );
        kb.apply(draft.id, Action::Approve { note: None }, "审核乙")
            .await
            .expect("approve");
        let live = search("蚕豆赤斑病怎么防治？").await;
        assert!(is_found(&live), "[{name}] published entry not found");
        assert!(
            live.hits
                .iter()
                .all(|h| h.entry.status == Status::Published)
        );

        // Editing a published entry takes it offline until approved again.
        let mut changed = kb
            .get(draft.id)
            .await
            .expect("get")
            .expect("exists")
            .content;
        changed.answer = "修订后的答案".into();
        kb.apply(draft.id, Action::Edit { content: changed }, "编辑甲")
            .await
            .expect("edit");
        assert!(
            !is_found(&search("蚕豆赤斑病怎么防治？").await),
            "[{name}] unreviewed edit is live"
        );

        kb.apply(draft.id, Action::Submit, "编辑甲")
            .await
            .expect("submit");
        kb.apply(draft.id, Action::Approve { note: None }, "审核乙")
            .await
            .expect("approve");
        // The entry was read (and kept) by searches before the edit: the
        // answer users see now is the reviewed revision.
        let revised = search("蚕豆赤斑病怎么防治？").await;
        let revised = revised
            .hits
            .iter()
            .find(|h| h.entry.id == draft.id)
            .unwrap_or_else(|| panic!("[{name}] re-approved entry not found"));
        assert_eq!(revised.entry.content.answer, "修订后的答案", "[{name}]");
        kb.apply(
            draft.id,
            Action::Retire {
                note: Some("过时".into()),
            },
            "审核乙",
        )
        .await
        .expect("retire");
        assert!(
            !is_found(&search("蚕豆赤斑病怎么防治？").await),
            "[{name}] retired entry found"
        );
        assert!(
            !is_found(&search("胡豆叶子上有红褐色斑点").await),
            "[{name}] retired phrasing found"
        );

        // Every change was recorded; restoring brings back old content as a new draft.
        let history = kb.history(draft.id).await.expect("history");
        let actions: Vec<&str> = history.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "create", "submit", "approve", "edit", "submit", "approve", "retire"
            ],
            "[{name}]"
        );
        let restored = kb
            .apply(draft.id, Action::Restore { version: 1 }, "编辑甲")
            .await
            .expect("restore");
        assert_eq!(restored.status, Status::Draft);
        assert_eq!(restored.content.answer, "草稿答案");
        assert_eq!(restored.version, 8);
        assert_eq!(kb.history(draft.id).await.expect("history").len(), 8);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_is_idempotent_reports_bad_rows_and_exports_losslessly() {
    for TestStore { name, store, _dir } in stores() {
        let kb = loaded(store).await;
        let options = ImportOptions {
            actor: "编辑甲".into(),
            approve_as: Some("审核乙".into()),
        };
        let again = kb
            .import(parse_jsonl(&fixture()), &options, &|_, _| {})
            .await
            .expect("re-import");
        assert_eq!(
            (again.created, again.updated, again.unchanged),
            (0, 0, 8),
            "[{name}]"
        );

        // One changed row, one broken row, one unknown category: the good one lands.
        let mut lines: Vec<String> = fixture().lines().map(str::to_owned).collect();
        lines[0] = lines[0].replace("按标签用量使用", "严格按标签用量使用");
        lines.push("{not json".into());
        lines.push(r#"{"question": "问题", "answer": "答案", "category": "天文地理", "source": {"organisation": "x"}}"#.into());
        let report = kb
            .import(parse_jsonl(&lines.join("\n")), &options, &|_, _| {})
            .await
            .expect("import");
        assert_eq!(
            (report.created, report.updated, report.unchanged),
            (0, 1, 7),
            "[{name}] {report:?}"
        );
        assert_eq!(report.errors.len(), 2);
        assert_eq!(report.errors[0].origin, "line 9");
        assert!(
            report.errors[1].message.contains("天文地理"),
            "{:?}",
            report.errors[1]
        );
        let updated = kb
            .find("t-potato-late-blight")
            .await
            .expect("find")
            .expect("exists");
        assert_eq!(updated.status, Status::Published);
        assert!(updated.content.answer.contains("严格按标签"));

        // Export round-trips through both JSONL and CSV.
        let entries = kb.list(&ListFilter::default()).await.expect("list");
        assert_eq!(entries.len(), 8);
        let jsonl: String = entries.iter().map(|e| to_jsonl_line(e) + "\n").collect();
        let csv = to_csv(&entries).expect("csv");
        let from_csv = parse_csv(&csv).expect("csv parses");
        for (entry, (json_row, csv_row)) in entries
            .iter()
            .zip(parse_jsonl(&jsonl).into_iter().zip(from_csv))
        {
            assert_eq!(
                json_row.result.expect("json row"),
                entry.content,
                "[{name}] JSONL"
            );
            assert_eq!(
                csv_row.result.expect("csv row"),
                entry.content,
                "[{name}] CSV"
            );
        }

        // Drafts stay drafts without a reviewer.
        let drafts = kb
            .import(
                parse_jsonl(r#"{"external_key": "t-new", "question": "新问题", "alt_questions": [], "answer": "新答案", "category": "生活科普", "source": {"organisation": "x"}}"#),
                &ImportOptions { actor: "编辑甲".into(), approve_as: None },
                &|_, _| {},
            )
            .await
            .expect("import");
        assert_eq!(drafts.created, 1);
        let new = kb.find("t-new").await.expect("find").expect("exists");
        assert_eq!(new.status, Status::Draft);
        let outcome = kb
            .search("新问题", &SearchFilter::default())
            .await
            .expect("search");
        assert!(outcome.hits.iter().all(|h| h.entry.id != new.id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_switches_without_losing_anything_and_reopen_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let kb = loaded(Arc::new(EdgeStore::open(dir.path()).expect("open"))).await;
        let before = kb
            .search("柑子树叶子斑驳发黄", &SearchFilter::default())
            .await
            .expect("search");
        let name = kb.reindex(&|_, _| {}).await.expect("reindex");
        assert!(name.starts_with("index__"));
        kb.optimize().await.expect("optimize");
        let after = kb
            .search("柑子树叶子斑驳发黄", &SearchFilter::default())
            .await
            .expect("search");
        assert_eq!(top_key(&before), top_key(&after));
    }
    let kb = open(Arc::new(EdgeStore::open(dir.path()).expect("reopen"))).await;
    let counts = kb.count_by_status().await.expect("counts");
    assert!(counts.contains(&(Status::Published, 8)), "{counts:?}");
    let outcome = kb
        .search("黄龙病能治好吗", &SearchFilter::default())
        .await
        .expect("search");
    assert_eq!(top_key(&outcome).as_deref(), Some("t-citrus-hlb"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn category_filter_restricts_results() {
    let TestStore { store, _dir, .. } = stores().remove(0);
    let kb = loaded(store).await;
    let outcome = kb
        .search(
            "中暑了怎么办",
            &SearchFilter {
                category: Some(kb::entry::Category::Farming),
                crops: Vec::new(),
            },
        )
        .await
        .expect("search");
    assert!(
        outcome
            .hits
            .iter()
            .all(|h| h.entry.content.category == kb::entry::Category::Farming)
    );
}

const CHILD_DIR: &str = "WENKE_TEST_KB_CRASH_DIR";

/// In the child process: imports the fixture one entry per batch forever
/// (re-importing edits each time), printing each acknowledged import.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_importer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return; // Only meaningful when started by the crash test below.
    };
    let kb = open(Arc::new(
        EdgeStore::open(std::path::Path::new(&dir)).expect("open"),
    ))
    .await;
    let rows: Vec<String> = fixture().lines().map(str::to_owned).collect();
    for round in 0u32.. {
        for (i, row) in rows.iter().enumerate() {
            let edited = row.replace("按标签用量使用", &format!("按标签用量使用（第{round}轮）"));
            let parsed = parse_jsonl(&edited);
            kb.import(
                parsed,
                &ImportOptions {
                    actor: "编辑甲".into(),
                    approve_as: Some("审核乙".into()),
                },
                &|_, _| {},
            )
            .await
            .expect("import");
            println!("acked {round} {i}");
        }
    }
}

#[test]
fn a_kill_9_during_import_leaves_no_half_written_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    for kill_after in [3usize, 11] {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_importer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("acked ") {
                acked.push(rest.to_owned());
                if acked.len() >= kill_after {
                    break;
                }
            }
        }
        // Let the child get into its next write before the kill.
        std::thread::sleep(std::time::Duration::from_millis(30));
        child.kill().expect("kill -9");
        let _ = child.wait();
        assert!(acked.len() >= kill_after);

        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let kb = open(Arc::new(EdgeStore::open(dir.path()).expect("reopen"))).await;
            let entries = kb.list(&ListFilter::default()).await.expect("list");
            // Every acknowledged import is there, published.
            let fixture_keys: Vec<String> = parse_jsonl(&fixture())
                .into_iter()
                .map(|r| r.result.expect("valid").external_key.expect("key"))
                .collect();
            let acked_keys: std::collections::HashSet<usize> = acked
                .iter()
                .map(|a| a.split(' ').nth(1).expect("index").parse().expect("number"))
                .collect();
            for index in acked_keys {
                let key = &fixture_keys[index];
                let entry = entries
                    .iter()
                    .find(|e| e.content.external_key.as_deref() == Some(key.as_str()))
                    .unwrap_or_else(|| panic!("acknowledged import of {key} lost"));
                assert_eq!(entry.status, Status::Published);
            }
            // No half-written entry: each entry's record matches its latest
            // revision, and each published entry is findable by its question.
            for entry in &entries {
                let history = kb.history(entry.id).await.expect("history");
                let last = history.last().expect("has revisions");
                assert_eq!(
                    last.version, entry.version,
                    "{:?}",
                    entry.content.external_key
                );
                assert_eq!(&last.snapshot, entry);
                if entry.status == Status::Published {
                    let outcome = kb
                        .search(&entry.content.question, &SearchFilter::default())
                        .await
                        .expect("search");
                    assert_eq!(outcome.hits[0].entry.id, entry.id);
                    assert_eq!(outcome.hits[0].entry.entry(), entry);
                }
            }
        });
    }
}

/// What the editors' list search must find: the entries whose question,
/// phrasings, tags or crops contain the needle after normalisation.
fn containing(entries: &[kb::entry::Entry], needle: &str) -> std::collections::BTreeSet<String> {
    let needle = kb::text::normalise(needle);
    entries
        .iter()
        .filter(|e| {
            let c = &e.content;
            std::iter::once(&c.question)
                .chain(&c.alt_questions)
                .chain(&c.tags)
                .chain(&c.crops)
                .any(|t| kb::text::normalise(t).contains(&needle))
        })
        .map(|e| e.id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_editors_list_reads_one_page_searches_substrings_and_filters_in_the_store() {
    for TestStore { name, store, _dir } in stores() {
        let kb = loaded(Arc::clone(&store)).await;
        let all = kb.list(&ListFilter::default()).await.expect("list");

        // Newest changes first, only the page read, the total counted.
        let page = kb
            .list_page(&ListFilter::default(), "", 3)
            .await
            .expect("page");
        assert_eq!(page.total, all.len(), "{name}");
        let times: Vec<_> = page.entries.iter().map(|e| e.updated_at).collect();
        let newest: Vec<_> = all.iter().take(3).map(|e| e.updated_at).collect();
        assert_eq!(times, newest, "{name}");

        // Substrings of one, two and more characters, in either script.
        for needle in [
            "稻",
            "晚疫",
            "马铃薯晚疫病",
            "馬鈴薯",
            "叶子发黑",
            "黄龙病",
            "航天飞机",
        ] {
            let found: std::collections::BTreeSet<String> = kb
                .list_page(&ListFilter::default(), needle, 100)
                .await
                .expect("search")
                .entries
                .iter()
                .map(|e| e.id.to_string())
                .collect();
            assert_eq!(found, containing(&all, needle), "{name}: {needle}");
        }
        assert!(
            !containing(&all, "晚疫").is_empty(),
            "the fixture has blight"
        );

        // Filters combine with the search, and review dates are compared
        // in the store.
        let mut overdue = all[0].content.clone();
        overdue.external_key = None;
        overdue.question = "复审过期的草稿条目".into();
        overdue.review_by = Some("2020-01-01".into());
        let draft = kb.create(overdue, "编辑甲").await.expect("draft");
        let drafts = ListFilter {
            status: Some(Status::Draft),
            ..Default::default()
        };
        let page = kb.list_page(&drafts, "草稿", 10).await.expect("drafts");
        assert_eq!(page.total, 1, "{name}");
        assert_eq!(page.entries[0].id, draft.id);
        assert!(
            kb.list_page(&drafts, "晚疫", 10)
                .await
                .expect("drafts")
                .entries
                .is_empty(),
            "{name}: published entries are not drafts"
        );
        let stale = ListFilter {
            stale_before: Some("2026-12-02".into()),
            ..Default::default()
        };
        let page = kb.list_page(&stale, "", 10).await.expect("stale");
        assert_eq!(
            page.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![draft.id],
            "{name}"
        );
        let bad = ListFilter {
            stale_before: Some("昨天".into()),
            ..Default::default()
        };
        assert!(matches!(
            kb.list_page(&bad, "", 10).await,
            Err(KbError::BadFilter(_))
        ));

        // An entry stored before search terms existed is found once the
        // knowledge base is opened again.
        let old = all[0].clone();
        store
            .upsert(
                "entries",
                vec![kb::store::NewPoint {
                    id: old.id.0,
                    dense: None,
                    lexical: None,
                    payload: kb::store::to_payload(&old),
                }],
            )
            .await
            .expect("old-style point");
        drop(kb);
        let reopened = open(Arc::clone(&store)).await;
        let needle: String = old.content.question.chars().take(4).collect();
        let found = reopened
            .list_page(&ListFilter::default(), &needle, 100)
            .await
            .expect("search");
        assert!(
            found.entries.iter().any(|e| e.id == old.id),
            "{name}: {needle}"
        );
        // The store goes before its directory does.
        drop(reopened);
        drop(store);
    }
}

// ----- how long a search result is reused -----
//
// Until a local write when only this process can write to the store (the
// embedded store). When other instances share it (a Qdrant server), until
// the change mark they leave moves, or, if the mark cannot be read, for a
// moment only: what they publish is answerable within a second either way.
// Counted through a wrapper around a real embedded store.

/// A real store that says who writes to it as told, counts searches,
/// and can be told to take its time over writes to the search index.
struct CountingStore {
    inner: EdgeStore,
    writers: Writers,
    searches: AtomicUsize,
    /// Added to every write to the search index (as a build running
    /// beside it would make a write wait), in milliseconds.
    index_write_delay_ms: AtomicU64,
    /// Whether reads of the change mark fail (a server that cannot be
    /// reached for them).
    change_marks_unreadable: AtomicBool,
}

impl CountingStore {
    fn new(dir: &std::path::Path, writers: Writers) -> Self {
        Self {
            inner: EdgeStore::open(dir).expect("open"),
            writers,
            searches: AtomicUsize::new(0),
            index_write_delay_ms: AtomicU64::new(0),
            change_marks_unreadable: AtomicBool::new(false),
        }
    }
}

#[async_trait::async_trait]
impl PointStore for CountingStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn writers(&self) -> Writers {
        self.writers
    }
    fn indexes_itself(&self) -> bool {
        self.inner.indexes_itself()
    }
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        self.inner.ensure_collection(spec).await
    }
    async fn collection_exists(&self, name: &str) -> Result<bool, StoreError> {
        self.inner.collection_exists(name).await
    }
    async fn drop_collection(&self, name: &str) -> Result<(), StoreError> {
        self.inner.drop_collection(name).await
    }
    async fn set_alias(&self, alias: &str, collection: &str) -> Result<(), StoreError> {
        self.inner.set_alias(alias, collection).await
    }
    async fn resolve_alias(&self, alias: &str) -> Result<Option<String>, StoreError> {
        self.inner.resolve_alias(alias).await
    }
    async fn upsert(&self, collection: &str, points: Vec<NewPoint>) -> Result<(), StoreError> {
        let delay = self.index_write_delay_ms.load(Ordering::SeqCst);
        if collection == "index" && delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.inner.upsert(collection, points).await
    }
    async fn replace_payload(
        &self,
        collection: &str,
        id: Uuid,
        payload: Payload,
    ) -> Result<(), StoreError> {
        self.inner.replace_payload(collection, id, payload).await
    }
    async fn delete(&self, collection: &str, ids: Vec<Uuid>) -> Result<(), StoreError> {
        self.inner.delete(collection, ids).await
    }
    async fn delete_matching(&self, collection: &str, filter: Filter) -> Result<(), StoreError> {
        self.inner.delete_matching(collection, filter).await
    }
    async fn get(&self, collection: &str, ids: Vec<Uuid>) -> Result<Vec<Record>, StoreError> {
        if collection == "kb_changes" && self.change_marks_unreadable.load(Ordering::SeqCst) {
            return Err(StoreError::Storage {
                collection: collection.into(),
                message: "unreachable".into(),
            });
        }
        self.inner.get(collection, ids).await
    }
    async fn scroll(
        &self,
        collection: &str,
        filter: Filter,
        offset: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<Record>, Option<Uuid>), StoreError> {
        self.inner.scroll(collection, filter, offset, limit).await
    }
    async fn first_by(
        &self,
        collection: &str,
        filter: Filter,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.inner.first_by(collection, filter, order, limit).await
    }
    async fn count(&self, collection: &str, filter: Filter) -> Result<usize, StoreError> {
        self.inner.count(collection, filter).await
    }
    async fn search(&self, request: SearchRequest) -> Result<Vec<Hit>, StoreError> {
        self.searches.fetch_add(1, Ordering::SeqCst);
        self.inner.search(request).await
    }
    async fn collections(&self) -> Result<Vec<String>, StoreError> {
        self.inner.collections().await
    }
    async fn aliases(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.aliases().await
    }
    async fn export(
        &self,
        collection: &str,
        offset: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<NewPoint>, Option<Uuid>), StoreError> {
        self.inner.export(collection, offset, limit).await
    }
    async fn optimize(&self, collection: &str) -> Result<(), StoreError> {
        self.inner.optimize(collection).await
    }
}

const POTATO_BLIGHT: &str = r#"{"external_key": "potato-blight", "question": "马铃薯晚疫病怎么防治？", "alt_questions": ["洋芋叶子发黑咋个办"], "answer": "选抗病品种，发病初期喷施烯酰吗啉等药剂。", "category": "农业种植", "source": {"organisation": "测试"}}"#;
const SWEET_POTATO_ROT: &str = r#"{"external_key": "sweet-potato-rot", "question": "红苕黑斑病怎么防治？", "alt_questions": ["红苕烂了有黑斑"], "answer": "选无病种薯，温汤浸种，轮作。", "category": "农业种植", "source": {"organisation": "测试"}}"#;

fn approved() -> ImportOptions {
    ImportOptions {
        actor: "编辑甲".into(),
        approve_as: Some("审核乙".into()),
    }
}

/// The store searches one search of `kb` made.
async fn searches_for(kb: &KnowledgeBase, store: &CountingStore, question: &str) -> usize {
    let before = store.searches.load(Ordering::SeqCst);
    kb.search(question, &SearchFilter::default())
        .await
        .expect("search");
    store.searches.load(Ordering::SeqCst) - before
}

/// Asks the same question twice, more than a second apart, then once more
/// after a publish; returns the store searches each of the three asks
/// made.
async fn searches_per_ask(store: Arc<CountingStore>) -> [usize; 3] {
    let kb = open(Arc::clone(&store) as Arc<dyn PointStore>).await;
    kb.import(parse_jsonl(POTATO_BLIGHT), &approved(), &|_, _| {})
        .await
        .expect("import");
    let question = "洋芋叶子发黑了咋个整";
    let first = searches_for(&kb, &store, question).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = searches_for(&kb, &store, question).await;
    kb.import(parse_jsonl(SWEET_POTATO_ROT), &approved(), &|_, _| {})
        .await
        .expect("import");
    let after_publish = searches_for(&kb, &store, question).await;
    [first, later, after_publish]
}

fn counting_store(dir: &tempfile::TempDir, writers: Writers) -> Arc<CountingStore> {
    Arc::new(CountingStore::new(dir.path(), writers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_only_this_process_writes_keeps_results_until_a_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [first, later, after_publish] =
        searches_per_ask(counting_store(&dir, Writers::ThisProcessOnly)).await;
    assert!(first > 0, "the first ask must search the store");
    assert_eq!(later, 0, "nothing changed: the result is reused");
    assert!(
        after_publish > 0,
        "a publish must make the next ask search again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_keeps_results_while_its_change_mark_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [first, later, after_publish] =
        searches_per_ask(counting_store(&dir, Writers::Shared)).await;
    assert!(first > 0, "the first ask must search the store");
    assert_eq!(
        later, 0,
        "the polls of the change mark say nothing changed: the result is reused"
    );
    assert!(
        after_publish > 0,
        "a publish must make the next ask search again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_whose_change_mark_cannot_be_read_searches_again_after_a_moment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = counting_store(&dir, Writers::Shared);
    store.change_marks_unreadable.store(true, Ordering::SeqCst);
    let [first, later, _] = searches_per_ask(store).await;
    assert!(first > 0, "the first ask must search the store");
    assert!(
        later > 0,
        "another instance may have published unseen: the result must be read again"
    );
}

/// Two knowledge bases on one shared store, as two instances on one Qdrant
/// server: what one publishes, the other answers within a second, although
/// it had cached the question's earlier result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_publish_is_noticed_within_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = counting_store(&dir, Writers::Shared);
    let writer = open(Arc::clone(&store) as Arc<dyn PointStore>).await;
    let reader = open(Arc::clone(&store) as Arc<dyn PointStore>).await;
    writer
        .import(parse_jsonl(POTATO_BLIGHT), &approved(), &|_, _| {})
        .await
        .expect("import");
    // Time for the reader to take in the writer's mark, so its result below
    // is not made stale by that.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let question = "红苕烂了有黑斑怎么办";
    let before = reader
        .search(question, &SearchFilter::default())
        .await
        .expect("search");
    assert!(
        before
            .hits
            .iter()
            .all(|hit| hit.entry.content.question != "红苕黑斑病怎么防治？"),
        "not published yet"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        searches_for(&reader, &store, question).await,
        0,
        "cached while nothing changes"
    );

    writer
        .import(parse_jsonl(SWEET_POTATO_ROT), &approved(), &|_, _| {})
        .await
        .expect("import");
    let published = std::time::Instant::now();
    loop {
        let found = reader
            .search(question, &SearchFilter::default())
            .await
            .expect("search");
        if found
            .hits
            .first()
            .map(|hit| hit.entry.content.question.as_str())
            == Some("红苕黑斑病怎么防治？")
        {
            break;
        }
        assert!(
            published.elapsed() < Duration::from_secs(1),
            "the reader still misses the entry a second after the publish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A caller that gives up on a change (an HTTP deadline passing while a
/// write to the index waits for a build) does not cut the change short: it
/// completes, its journal record is cleared, and the search that had
/// cached "nothing found" finds the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_caller_gives_up_still_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(CountingStore::new(dir.path(), Writers::ThisProcessOnly));
    let kb = open(Arc::clone(&store) as Arc<dyn PointStore>).await;
    let drafts = ImportOptions {
        actor: "编辑甲".into(),
        approve_as: None,
    };
    kb.import(parse_jsonl(POTATO_BLIGHT), &drafts, &|_, _| {})
        .await
        .expect("import");
    let draft = kb
        .find_by_key("potato-blight")
        .await
        .expect("read")
        .expect("imported");
    kb.apply(draft.id, Action::Submit, "编辑甲")
        .await
        .expect("submit");
    let question = "洋芋叶子发黑咋个办";
    let before = kb
        .search(question, &SearchFilter::default())
        .await
        .expect("search");
    assert!(before.hits.is_empty(), "a draft is never found");

    store.index_write_delay_ms.store(600, Ordering::SeqCst);
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        kb.apply(draft.id, Action::Approve { note: None }, "审核乙"),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "the caller must give up before the write ends"
    );
    store.index_write_delay_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let entry = kb.get(draft.id).await.expect("read").expect("entry");
    assert_eq!(entry.status, Status::Published);
    let (pending, _) = store
        .scroll("journal", Filter::default(), None, 10)
        .await
        .expect("journal");
    assert!(pending.is_empty(), "the change's journal record is cleared");
    let after = kb
        .search(question, &SearchFilter::default())
        .await
        .expect("search");
    assert_eq!(
        after.hits.first().map(|hit| hit.entry.id),
        Some(draft.id),
        "the cached empty result is not served after the change"
    );
}
