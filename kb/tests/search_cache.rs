//! How long a search result is reused: until a local write when only this
//! process can write to the store (the embedded store), and at most a
//! moment when other instances share it (a Qdrant server), so what they
//! publish is answerable within a second. Counts the store's searches
//! through a wrapper around a real embedded store and the real model.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use embeddings::{Embedder, EmbeddingModel};
use kb::import::parse_jsonl;
use kb::store::edge::EdgeStore;
use kb::store::{
    CollectionSpec, Filter, Hit, NewPoint, Order, PointStore, Record, SearchRequest, StoreError,
    Writers,
};
use kb::{Calibration, ImportOptions, KnowledgeBase, SearchFilter};
use uuid::Uuid;

/// A real store that says who writes to it as told, and counts searches.
struct CountingStore {
    inner: EdgeStore,
    writers: Writers,
    searches: AtomicUsize,
}

#[async_trait::async_trait]
impl PointStore for CountingStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn writers(&self) -> Writers {
        self.writers
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
        self.inner.upsert(collection, points).await
    }
    async fn delete(&self, collection: &str, ids: Vec<Uuid>) -> Result<(), StoreError> {
        self.inner.delete(collection, ids).await
    }
    async fn delete_matching(&self, collection: &str, filter: Filter) -> Result<(), StoreError> {
        self.inner.delete_matching(collection, filter).await
    }
    async fn get(&self, collection: &str, ids: Vec<Uuid>) -> Result<Vec<Record>, StoreError> {
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

fn model() -> Arc<EmbeddingModel> {
    let dir = std::env::var_os("WENKE_MODEL_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"));
    Arc::new(
        EmbeddingModel::load(&dir.join("multilingual-e5-small-q4"))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// Asks the same question twice, more than the shared-store lifetime
/// apart, then once more after a publish; returns the store searches each
/// of the three asks made.
async fn searches_per_ask(writers: Writers) -> [usize; 3] {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(CountingStore {
        inner: EdgeStore::open(dir.path()).expect("open"),
        writers,
        searches: AtomicUsize::new(0),
    });
    let kb = KnowledgeBase::open(
        Arc::clone(&store) as Arc<dyn PointStore>,
        Embedder::from_model(model(), 8),
        kb::dict::builtin_analyzer(),
        Calibration::default(),
    )
    .await
    .expect("open kb");
    let approved = ImportOptions {
        actor: "编辑甲".into(),
        approve_as: Some("审核乙".into()),
    };
    let first = parse_jsonl(
        r#"{"external_key": "potato-blight", "question": "马铃薯晚疫病怎么防治？", "alt_questions": ["洋芋叶子发黑咋个办"], "answer": "选抗病品种，发病初期喷施烯酰吗啉等药剂。", "category": "农业种植", "source": {"organisation": "测试"}}"#,
    );
    kb.import(first, &approved, &|_, _| {})
        .await
        .expect("import");

    let question = "洋芋叶子发黑了咋个整";
    let mut counts = [0; 3];
    let mut ask = async |slot: usize| {
        let before = store.searches.load(Ordering::SeqCst);
        kb.search(question, &SearchFilter::default())
            .await
            .expect("search");
        counts[slot] = store.searches.load(Ordering::SeqCst) - before;
    };
    ask(0).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ask(1).await;
    let second = parse_jsonl(
        r#"{"external_key": "sweet-potato-rot", "question": "红苕黑斑病怎么防治？", "alt_questions": ["红苕烂了有黑斑"], "answer": "选无病种薯，温汤浸种，轮作。", "category": "农业种植", "source": {"organisation": "测试"}}"#,
    );
    kb.import(second, &approved, &|_, _| {})
        .await
        .expect("import");
    ask(2).await;
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_only_this_process_writes_keeps_results_until_a_write() {
    let [first, later, after_publish] = searches_per_ask(Writers::ThisProcessOnly).await;
    assert!(first > 0, "the first ask must search the store");
    assert_eq!(later, 0, "nothing changed: the result is reused");
    assert!(
        after_publish > 0,
        "a publish must make the next ask search again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_searches_again_after_a_moment() {
    let [first, later, after_publish] = searches_per_ask(Writers::Shared).await;
    assert!(first > 0, "the first ask must search the store");
    assert!(
        later > 0,
        "another instance may have published: the result must be read again"
    );
    assert!(
        after_publish > 0,
        "a publish must make the next ask search again"
    );
}
