//! One test suite for both stores: the embedded store on a temporary
//! directory always, the Qdrant server when `QDRANT_URL` is set.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use kb::lexical::{SparseVector, document_vector, query_vector};
use kb::store::edge::EdgeStore;
use kb::store::server::{ServerConfig, ServerStore};
use kb::store::{
    CollectionSpec, Condition, Exactness, Filter, NewPoint, Order, Payload, PointStore,
    QueryVector, SearchRequest, scroll_all,
};
use serde_json::json;
use uuid::Uuid;

fn spec(name: &str) -> CollectionSpec {
    CollectionSpec {
        name: name.into(),
        dense_dim: Some(4),
        lexical: true,
        keyword_fields: vec!["colour", "tags"],
        lookup_fields: Vec::new(),
        integer_fields: vec!["months", "rank"],
        datetime_fields: vec!["changed", "due"],
    }
}

fn payload(value: serde_json::Value) -> Payload {
    value.as_object().cloned().expect("object")
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|w| (*w).to_owned()).collect()
}

fn point(n: u128, dense: [f32; 4], tokens: &[&str], value: serde_json::Value) -> NewPoint {
    let lexical = document_vector(&words(tokens), 3.0);
    NewPoint {
        id: Uuid::from_u128(n),
        dense: Some(dense.to_vec()),
        lexical: (!lexical.is_empty()).then_some(lexical),
        payload: payload(value),
    }
}

/// The behaviour every store must have.
async fn suite(store: Arc<dyn PointStore>) {
    let c = "suite_points";
    store.ensure_collection(&spec(c)).await.expect("create");
    // Idempotent.
    store.ensure_collection(&spec(c)).await.expect("re-create");
    assert!(store.collection_exists(c).await.expect("exists"));

    store
        .upsert(
            c,
            vec![
                point(
                    1,
                    [1.0, 0.0, 0.0, 0.0],
                    &["马铃薯", "晚疫病"],
                    json!({"colour": "red", "tags": ["a", "b"], "months": [5, 6], "rank": 30,
                        "changed": "2026-11-20T08:00:00Z", "due": "2026-12-01"}),
                ),
                point(
                    2,
                    [0.9, 0.1, 0.0, 0.0],
                    &["马铃薯", "储藏"],
                    json!({"colour": "red", "tags": ["b"], "months": [10], "rank": 10,
                        "changed": "2026-11-21T08:00:00+08:00", "due": "2027-01-01"}),
                ),
                point(
                    3,
                    [0.0, 1.0, 0.0, 0.0],
                    &["水稻", "稻瘟病"],
                    json!({"colour": "blue", "tags": [], "months": [6, 7], "rank": 20,
                        "changed": "2026-11-22T00:00:00Z"}),
                ),
                point(
                    4,
                    [0.0, 0.0, 1.0, 0.0],
                    &["柑橘", "黄龙病"],
                    json!({"colour": "green", "tags": ["c"], "months": []}),
                ),
            ],
        )
        .await
        .expect("upsert");

    // Reads by id keep the order asked and skip missing ids.
    let got = store
        .get(
            c,
            vec![Uuid::from_u128(3), Uuid::from_u128(99), Uuid::from_u128(1)],
        )
        .await
        .expect("get");
    assert_eq!(
        got.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![Uuid::from_u128(3), Uuid::from_u128(1)]
    );
    assert_eq!(got[1].payload["colour"], json!("red"));

    // Keyword, array-keyword and integer filters, and exclusions.
    let red = Filter::must(Condition::keyword("colour", "red"));
    assert_eq!(store.count(c, red.clone()).await.expect("count"), 2);
    let tagged_b = Filter::must(Condition::keyword("tags", "b"));
    assert_eq!(store.count(c, tagged_b).await.expect("count"), 2);
    let june = Filter::must(Condition::IntegerIn {
        field: "months",
        values: vec![6],
    });
    assert_eq!(store.count(c, june).await.expect("count"), 2);
    let not_red = Filter {
        must: Vec::new(),
        must_not: vec![Condition::keyword("colour", "red")],
    };
    assert_eq!(store.count(c, not_red).await.expect("count"), 2);
    assert_eq!(store.count(c, Filter::default()).await.expect("count"), 4);

    // Datetime order and bounds: newest first, points without the field
    // skipped; dates and RFC 3339 times compare as moments.
    let newest = Order {
        field: "changed",
        descending: true,
    };
    let first = store
        .first_by(c, Filter::default(), newest, 2)
        .await
        .expect("first_by");
    assert_eq!(
        first.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![Uuid::from_u128(3), Uuid::from_u128(2)]
    );
    let oldest_red = store
        .first_by(
            c,
            red.clone(),
            Order {
                field: "changed",
                descending: false,
            },
            10,
        )
        .await
        .expect("first_by");
    assert_eq!(
        oldest_red.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![Uuid::from_u128(1), Uuid::from_u128(2)]
    );
    let overdue = Filter::must(Condition::Before {
        field: "due",
        moment: time::macros::datetime!(2026-12-02 00:00 UTC),
    });
    let overdue: Vec<Uuid> = store
        .first_by(c, overdue, newest, 10)
        .await
        .expect("before")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(overdue, vec![Uuid::from_u128(1)]);

    // Integer order (the turn log's oldest-first scan by arrival time).
    let by_rank = Order {
        field: "rank",
        descending: false,
    };
    let ranked: Vec<Uuid> = store
        .first_by(c, Filter::default(), by_rank, 10)
        .await
        .expect("integer order")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        ranked,
        vec![Uuid::from_u128(2), Uuid::from_u128(3), Uuid::from_u128(1)]
    );
    let lowest_not_red: Vec<Uuid> = store
        .first_by(
            c,
            Filter {
                must: Vec::new(),
                must_not: vec![Condition::keyword("colour", "red")],
            },
            by_rank,
            1,
        )
        .await
        .expect("integer order with an exclusion")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(lowest_not_red, vec![Uuid::from_u128(3)]);

    // Scrolling pages through everything exactly once.
    let (page, next) = store
        .scroll(c, Filter::default(), None, 3)
        .await
        .expect("scroll");
    assert_eq!(page.len(), 3);
    let (rest, end) = store
        .scroll(c, Filter::default(), next, 3)
        .await
        .expect("scroll");
    assert_eq!(rest.len(), 1);
    assert_eq!(end, None);
    assert_eq!(
        scroll_all(store.as_ref(), c, Filter::default())
            .await
            .expect("all")
            .len(),
        4
    );

    // Dense search: nearest first, filters respected, exact equals indexed.
    for exactness in [Exactness::Indexed, Exactness::Exact] {
        let hits = store
            .search(SearchRequest {
                collection: c.into(),
                query: QueryVector::Dense(vec![1.0, 0.05, 0.0, 0.0]),
                filter: Filter::default(),
                limit: 2,
                exactness,
            })
            .await
            .expect("dense search");
        assert_eq!(hits[0].id, Uuid::from_u128(1));
        assert_eq!(hits[1].id, Uuid::from_u128(2));
        assert!(hits[0].score > 0.99 && hits[0].score <= 1.0001);
    }
    let blue_only = store
        .search(SearchRequest {
            collection: c.into(),
            query: QueryVector::Dense(vec![1.0, 0.0, 0.0, 0.0]),
            filter: Filter::must(Condition::keyword("colour", "blue")),
            limit: 5,
            exactness: Exactness::Indexed,
        })
        .await
        .expect("filtered search");
    assert_eq!(
        blue_only.iter().map(|h| h.id).collect::<Vec<_>>(),
        vec![Uuid::from_u128(3)]
    );

    // Lexical search: the rarer word decides (IDF), absent words find nothing.
    let lexical = store
        .search(SearchRequest {
            collection: c.into(),
            query: QueryVector::Lexical(query_vector(&words(&["马铃薯", "晚疫病"]))),
            filter: Filter::default(),
            limit: 5,
            exactness: Exactness::Indexed,
        })
        .await
        .expect("lexical search");
    assert_eq!(lexical[0].id, Uuid::from_u128(1));
    assert!(lexical.len() == 2, "{lexical:?}");
    assert!(lexical[0].score > lexical[1].score);
    let nothing = store
        .search(SearchRequest {
            collection: c.into(),
            query: QueryVector::Lexical(SparseVector {
                indices: vec![7],
                values: vec![1.0],
            }),
            filter: Filter::default(),
            limit: 5,
            exactness: Exactness::Indexed,
        })
        .await
        .expect("lexical search");
    assert!(nothing.is_empty());

    // Upserting an id replaces the point; deletes by id and by filter.
    store
        .upsert(
            c,
            vec![point(
                4,
                [0.0, 0.0, 0.0, 1.0],
                &["柠檬"],
                json!({"colour": "yellow"}),
            )],
        )
        .await
        .expect("replace");
    let replaced = store.get(c, vec![Uuid::from_u128(4)]).await.expect("get");
    assert_eq!(replaced[0].payload["colour"], json!("yellow"));
    assert!(!replaced[0].payload.contains_key("tags"));
    store
        .delete(c, vec![Uuid::from_u128(4)])
        .await
        .expect("delete");
    store.delete_matching(c, red).await.expect("delete red");
    let left = scroll_all(store.as_ref(), c, Filter::default())
        .await
        .expect("all");
    assert_eq!(
        left.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![Uuid::from_u128(3)]
    );
    assert!(
        store.delete_matching(c, Filter::default()).await.is_err(),
        "an empty filter must not delete everything"
    );

    // Collections without vectors hold plain records.
    let records = CollectionSpec {
        keyword_fields: vec!["key"],
        ..CollectionSpec::payload_only("suite_records")
    };
    store.ensure_collection(&records).await.expect("records");
    store
        .upsert(
            "suite_records",
            vec![NewPoint {
                id: Uuid::from_u128(10),
                dense: None,
                lexical: None,
                payload: payload(json!({"key": "k1", "text": "内容"})),
            }],
        )
        .await
        .expect("record upsert");
    assert_eq!(
        store
            .count(
                "suite_records",
                Filter::must(Condition::keyword("key", "k1"))
            )
            .await
            .expect("count"),
        1
    );

    lookup_fields_find_their_values(store.as_ref(), 40, 4).await;

    // Aliases switch between collections.
    store
        .ensure_collection(&spec("suite_v2"))
        .await
        .expect("v2");
    store
        .upsert(
            "suite_v2",
            vec![point(
                20,
                [0.0, 1.0, 0.0, 0.0],
                &["新"],
                json!({"colour": "new"}),
            )],
        )
        .await
        .expect("v2 upsert");
    store.set_alias("suite_live", c).await.expect("alias");
    assert_eq!(
        store.resolve_alias("suite_live").await.expect("resolve"),
        Some(c.to_owned())
    );
    assert_eq!(
        store
            .count("suite_live", Filter::default())
            .await
            .expect("count"),
        1
    );
    store
        .set_alias("suite_live", "suite_v2")
        .await
        .expect("switch");
    let via_alias = store
        .get("suite_live", vec![Uuid::from_u128(20)])
        .await
        .expect("get via alias");
    assert_eq!(via_alias.len(), 1);
    store.drop_collection(c).await.expect("drop old");
    assert!(!store.collection_exists(c).await.expect("exists"));
    store.optimize("suite_live").await.expect("optimize");
    assert_eq!(
        store
            .count("suite_live", Filter::default())
            .await
            .expect("count"),
        1
    );

    payload_replacement_keeps_the_vectors(&*store).await;
}

/// `replace_payload` swaps the whole payload (and what its indexes
/// find) while the point stays findable by both of its vectors.
async fn payload_replacement_keeps_the_vectors(store: &dyn PointStore) {
    let c = "suite_payloads";
    store.ensure_collection(&spec(c)).await.expect("create");
    store
        .upsert(
            c,
            vec![point(
                30,
                [0.0, 0.0, 0.0, 1.0],
                &["玉米", "螟虫"],
                json!({"colour": "red", "rank": 1}),
            )],
        )
        .await
        .expect("upsert");
    store
        .replace_payload(
            c,
            Uuid::from_u128(30),
            payload(json!({"colour": "blue", "tags": ["new"]})),
        )
        .await
        .expect("replace payload");

    let got = store.get(c, vec![Uuid::from_u128(30)]).await.expect("get");
    assert_eq!(
        got[0].payload,
        payload(json!({"colour": "blue", "tags": ["new"]}))
    );
    let red = Filter::must(Condition::keyword("colour", "red"));
    assert_eq!(store.count(c, red).await.expect("count"), 0);
    let blue = Filter::must(Condition::keyword("colour", "blue"));
    for query in [
        QueryVector::Dense(vec![0.0, 0.0, 0.0, 1.0]),
        QueryVector::Lexical(query_vector(&words(&["螟虫"]))),
    ] {
        let hits = store
            .search(SearchRequest {
                collection: c.into(),
                query,
                filter: blue.clone(),
                limit: 5,
                exactness: Exactness::Exact,
            })
            .await
            .expect("search");
        assert_eq!(
            hits.iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![Uuid::from_u128(30)]
        );
        assert_eq!(hits[0].payload["colour"], json!("blue"));
    }

    let missing = store
        .replace_payload(c, Uuid::from_u128(31), payload(json!({"colour": "red"})))
        .await;
    assert!(missing.is_err(), "a missing point's payload was replaced");
    assert_eq!(store.count(c, Filter::default()).await.expect("count"), 1);
    store.drop_collection(c).await.expect("drop");
}

/// A collection whose `key` is first an ordinary keyword field and then,
/// as after an upgrade, a lookup field (its index rebuilt on disk).
fn lookup_spec(as_lookup: bool, dim: usize) -> CollectionSpec {
    let (keyword_fields, lookup_fields) = if as_lookup {
        (vec!["colour"], vec!["key"])
    } else {
        (vec!["colour", "key"], Vec::new())
    };
    CollectionSpec {
        name: "suite_lookup".into(),
        dense_dim: Some(dim),
        lexical: false,
        keyword_fields,
        lookup_fields,
        integer_fields: Vec::new(),
        datetime_fields: Vec::new(),
    }
}

/// Finds points by their lookup field, one value and several, beside an
/// ordinary keyword condition.
async fn assert_lookups(store: &dyn PointStore, dim: usize, stage: &str) {
    let collection = "suite_lookup";
    let one = store
        .scroll(
            collection,
            Filter::must(Condition::keyword("key", "k7")),
            None,
            10,
        )
        .await
        .expect("lookup");
    assert_eq!(
        one.0.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![Uuid::from_u128(107)],
        "{stage}: one value"
    );
    let some = store
        .count(
            collection,
            Filter::must(Condition::KeywordIn {
                field: "key",
                values: vec!["k1".into(), "k2".into(), "k3".into(), "missing".into()],
            })
            .and(Condition::keyword("colour", "red")),
        )
        .await
        .expect("count");
    // k1 and k3 are red, k2 is blue.
    assert_eq!(some, 2, "{stage}: several values with another condition");
    let hits = store
        .search(SearchRequest {
            collection: collection.into(),
            query: QueryVector::Dense(unit(dim, 0.0)),
            filter: Filter::must(Condition::keyword("key", "k20")),
            limit: 5,
            exactness: Exactness::Indexed,
        })
        .await
        .expect("search");
    assert_eq!(
        hits.iter().map(|h| h.id).collect::<Vec<_>>(),
        vec![Uuid::from_u128(120)],
        "{stage}: a search filtered by a lookup value"
    );
}

/// A vector of `dim` dimensions leaning towards the first axis by `tilt`.
fn unit(dim: usize, tilt: f32) -> Vec<f32> {
    let mut vector = vec![0.0; dim];
    vector[0] = 1.0;
    vector[1] = tilt;
    vector
}

/// Writes `count` points of `dim` dimensions with `key` an ordinary keyword
/// field, checks lookups, makes `key` a lookup field, checks again, then
/// optimises and checks once more.
async fn lookup_fields_find_their_values(store: &dyn PointStore, count: u128, dim: usize) {
    store
        .ensure_collection(&lookup_spec(false, dim))
        .await
        .expect("create");
    let points = (0..count)
        .map(|n| NewPoint {
            id: Uuid::from_u128(100 + n),
            dense: Some(unit(dim, n as f32 / count as f32)),
            lexical: None,
            payload: payload(json!({
                "key": format!("k{n}"),
                "colour": if n % 2 == 0 { "blue" } else { "red" },
            })),
        })
        .collect();
    store.upsert("suite_lookup", points).await.expect("upsert");
    assert_lookups(store, dim, "keyword index").await;
    store
        .ensure_collection(&lookup_spec(true, dim))
        .await
        .expect("the same field as a lookup field");
    assert_lookups(store, dim, "lookup index").await;
    store.optimize("suite_lookup").await.expect("optimize");
    assert_lookups(store, dim, "lookup index, optimised").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EdgeStore::open(dir.path()).expect("open"));
    suite(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_store_passes_the_suite() {
    let Some(url) = std::env::var("QDRANT_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("skipped: set QDRANT_URL to run the store suite against a Qdrant server");
        return;
    };
    let prefix = format!("test_{}_", Uuid::new_v4().simple());
    let store = Arc::new(
        ServerStore::connect(&ServerConfig {
            api_key: std::env::var("QDRANT_API_KEY").ok(),
            ..ServerConfig::new(url, prefix)
        })
        .expect("connect"),
    );
    suite(store.clone()).await;
    for name in ["suite_v2", "suite_records", "suite_lookup"] {
        let _ = store.drop_collection(name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_survives_reopen_and_refuses_a_second_opener() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = EdgeStore::open(dir.path()).expect("open");
        assert!(
            EdgeStore::open(dir.path()).is_err(),
            "a second process-level opener must be refused"
        );
        store
            .ensure_collection(&spec("kept"))
            .await
            .expect("create");
        store
            .upsert(
                "kept",
                vec![point(
                    1,
                    [1.0, 0.0, 0.0, 0.0],
                    &["水稻"],
                    json!({"colour": "red"}),
                )],
            )
            .await
            .expect("upsert");
        store.set_alias("kept_alias", "kept").await.expect("alias");
    }
    let store = EdgeStore::open(dir.path()).expect("reopen");
    let got = store
        .get("kept_alias", vec![Uuid::from_u128(1)])
        .await
        .expect("get");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload["colour"], json!("red"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_lookup_fields_work_in_an_optimised_segment_and_after_reopen() {
    // Enough vectors (7,000 × 384 floats, over qdrant-edge's 10 MB indexing
    // threshold) for optimising to build an immutable segment, where a
    // lookup index is the on-disk kind; small collections stay appendable.
    const COUNT: u128 = 7_000;
    const DIM: usize = 384;
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = EdgeStore::open(dir.path()).expect("open");
        lookup_fields_find_their_values(&store, COUNT, DIM).await;
    }
    let segments = dir.path().join("collections/suite_lookup/segments");
    let indexed = segment_configs(&segments)
        .iter()
        .any(|config| config.contains("\"hnsw\""));
    assert!(indexed, "optimising built no indexed segment to test");

    let store = EdgeStore::open(dir.path()).expect("reopen");
    // Opening a collection ensures its spec again, as the knowledge base
    // does on every start.
    store
        .ensure_collection(&lookup_spec(true, DIM))
        .await
        .expect("ensure");
    assert_lookups(&store, DIM, "after reopen").await;
    approximate_search_scores_are_exact(&store, &segments, COUNT, DIM).await;
    // The page-cache warm-up of the loaded collection ends (`/readyz`
    // waits for it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.warming_up() {
        assert!(
            std::time::Instant::now() < deadline,
            "still warming up after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The `segment.json` of each qdrant-edge segment under `segments`.
fn segment_configs(segments: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(segments)
        .expect("segments")
        .filter_map(Result::ok)
        .filter_map(|segment| std::fs::read_to_string(segment.path().join("segment.json")).ok())
        .collect()
}

/// An approximate search over an optimised segment walks the int8 copy of
/// the vectors but returns scores rescored with the full vectors: each
/// equals the exact cosine, in descending order.
async fn approximate_search_scores_are_exact(
    store: &dyn PointStore,
    segments: &std::path::Path,
    count: u128,
    dim: usize,
) {
    let quantized = segment_configs(segments)
        .iter()
        .any(|config| config.contains("\"hnsw\"") && config.contains("\"int8\""));
    assert!(quantized, "the optimised segment keeps no int8 copy");
    let query_tilt = 0.37;
    let hits = store
        .search(SearchRequest {
            collection: "suite_lookup".into(),
            query: QueryVector::Dense(unit(dim, query_tilt)),
            filter: Filter::default(),
            limit: 5,
            exactness: Exactness::Indexed,
        })
        .await
        .expect("search");
    assert_eq!(hits.len(), 5);
    let cosine = |tilt: f32| {
        (1.0 + query_tilt * tilt) / ((1.0 + query_tilt * query_tilt) * (1.0 + tilt * tilt)).sqrt()
    };
    for hit in &hits {
        let n = hit.id.as_u128() - 100;
        let exact = cosine(n as f32 / count as f32);
        assert!(
            (hit.score - exact).abs() < 1e-5,
            "point {n}: score {} is not the exact cosine {exact}",
            hit.score
        );
    }
    assert!(hits.windows(2).all(|pair| pair[0].score >= pair[1].score));
}

const CHILD_DIR: &str = "WENKE_TEST_CRASH_CHILD_DIR";

/// In the child process: writes points one at a time, printing each id once
/// its write is acknowledged, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return; // Only meaningful when started by the crash test below.
    };
    let store = EdgeStore::open(std::path::Path::new(&dir)).expect("open");
    store
        .ensure_collection(&spec("crash"))
        .await
        .expect("create");
    for n in 1u128.. {
        let value = n as f32;
        store
            .upsert(
                "crash",
                vec![point(
                    n,
                    [1.0, value, 0.0, 0.0],
                    &["水稻"],
                    json!({"colour": "red", "n": n as u64}),
                )],
            )
            .await
            .expect("upsert");
        println!("acked {n}");
    }
}

#[test]
fn a_kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut acked = Vec::new();
        // Kill after a different number of writes each round.
        let kill_after = 20 + round * 17;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("acked ") {
                acked.push(n.trim().parse::<u128>().expect("number"));
                if acked.len() >= kill_after {
                    break;
                }
            }
        }
        child.kill().expect("kill -9");
        let _ = child.wait();
        assert!(acked.len() >= kill_after, "child stopped early");

        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let store = EdgeStore::open(dir.path()).expect("reopen after crash");
            let ids: Vec<Uuid> = acked.iter().map(|n| Uuid::from_u128(*n)).collect();
            let found = store.get("crash", ids.clone()).await.expect("get");
            assert_eq!(
                found.len(),
                ids.len(),
                "round {round}: acknowledged writes lost after kill -9"
            );
        });
    }
}
