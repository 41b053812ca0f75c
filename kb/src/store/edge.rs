//! The embedded store: one `qdrant-edge` shard per collection, in
//! `<data dir>/collections/<name>/`, with aliases in `<data dir>/aliases.json`.
//!
//! qdrant-edge 0.7 is a blocking library with three sharp edges this module
//! exists to hide:
//! - its write-ahead log is not replayed on load, so only flushed data
//!   survives a crash: every write here flushes before it is acknowledged;
//! - `flush` panics if another thread holds the log or segment lock, so no
//!   update runs beside a flush or an optimisation, while reads run
//!   concurrently; writers that arrive together share one flush
//!   ([`GroupCommit`]);
//! - optimisation (building HNSW) blocks the calling thread, so it runs on a
//!   blocking-pool thread and searches stay correct on the plain segments
//!   meanwhile.
//!
//! Every call runs on tokio's blocking pool: none of it touches the async
//! runtime's threads.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use qdrant_edge::{
    CountRequest, CreateIndex, DateTimeWrapper, Direction, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeSparseVectorParamsBuilder, EdgeVectorParamsBuilder, FieldCondition, FieldIndexOperations,
    JsonPath, KeywordIndexParams, Match, Modifier, NamedQuery, OrderBy, OrderByInterface,
    PayloadFieldSchema, PayloadOps, PayloadSchemaParams, PayloadSchemaType, PointId,
    PointInsertOperations, PointOperations, PointStruct, QuantizationConfig,
    QuantizationSearchParams, QueryEnum, QueryRequest, Range, ScalarQuantizationConfig, ScalarType,
    ScoringQuery, ScrollRequest, SearchParams, SetPayloadOp, UpdateOperation, Vector,
    VectorInternal, VectorStructInternal, Vectors, WithPayloadInterface, WithVector,
};
use serde_json::Value;
use uuid::Uuid;

use super::group_commit::GroupCommit;
use super::{
    CollectionSpec, Condition, DENSE, DENSE_INT8_QUANTILE, DENSE_OVERSAMPLING, Exactness, Filter,
    Hit, LEXICAL, NewPoint, Order, PointStore, QueryVector, Record, SearchRequest, StoreError,
    Writers,
};

const COLLECTIONS_DIR: &str = "collections";
const ALIASES_FILE: &str = "aliases.json";
const LOCK_FILE: &str = "LOCK";

/// The embedded store on a data directory.
pub struct EdgeStore {
    inner: Arc<Inner>,
    writers: Writers,
}

struct Inner {
    root: PathBuf,
    open: RwLock<HashMap<String, Arc<Collection>>>,
    aliases: RwLock<HashMap<String, String>>,
    /// Serialises alias-file rewrites and collection creation/removal.
    admin: Mutex<()>,
    /// How many loaded collections are still being read into the page
    /// cache ([`warm_page_cache`]).
    warming: Arc<AtomicUsize>,
    /// Held for the store's lifetime: one process per data directory.
    _lock: File,
}

struct Collection {
    name: String,
    shard: EdgeShard,
    /// Updates one at a time, never beside a flush (qdrant-edge's flush
    /// panics under contention), and one flush per group of writers.
    writes: GroupCommit,
}

impl EdgeStore {
    /// Opens (creating if needed) the store in `root`. Fails if another
    /// process has it open.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Io { path, source }
        };
        let collections = root.join(COLLECTIONS_DIR);
        std::fs::create_dir_all(&collections).map_err(io(&collections))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(StoreError::Storage {
                collection: root.display().to_string(),
                message: "the data directory is in use by another wenke process".into(),
            });
        }
        let aliases_path = root.join(ALIASES_FILE);
        let aliases = match std::fs::read(&aliases_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Storage {
                collection: aliases_path.display().to_string(),
                message: format!("unreadable alias file: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(io(&aliases_path)(e)),
        };
        // Leftovers of a creation that crashed before its rename.
        if let Ok(dir) = std::fs::read_dir(&collections) {
            for entry in dir.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".creating") {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                root: root.to_owned(),
                open: RwLock::new(HashMap::new()),
                aliases: RwLock::new(aliases),
                admin: Mutex::new(()),
                warming: Arc::new(AtomicUsize::new(0)),
                _lock: lock,
            }),
            // `open` holds the directory's lock file for the store's lifetime.
            writers: Writers::ThisProcessOnly,
        })
    }

    /// Declares that other writers in this process share the store: each
    /// knowledge base opened on it then leaves and polls change marks, as
    /// on a Qdrant server. For tests that stand in for several instances
    /// with one embedded store.
    pub fn shared_within_process(mut self) -> Self {
        self.writers = Writers::Shared;
        self
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| StoreError::Storage {
                collection: inner_root_name(&self.inner),
                message: format!("storage task failed: {e}"),
            })?
    }
}

fn inner_root_name(inner: &Inner) -> String {
    inner.root.display().to_string()
}

fn storage_error(collection: &str) -> impl Fn(qdrant_edge::OperationError) -> StoreError + '_ {
    move |e| StoreError::Storage {
        collection: collection.to_owned(),
        message: e.to_string(),
    }
}

impl Inner {
    fn dir_of(&self, name: &str) -> PathBuf {
        self.root.join(COLLECTIONS_DIR).join(name)
    }

    fn resolve(&self, name: &str) -> String {
        self.aliases
            .read()
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }

    /// The open collection behind a name or alias, loading it on first use.
    fn collection(&self, name_or_alias: &str) -> Result<Arc<Collection>, StoreError> {
        let name = self.resolve(name_or_alias);
        if let Some(open) = self.open.read().get(&name) {
            return Ok(Arc::clone(open));
        }
        let mut open = self.open.write();
        if let Some(collection) = open.get(&name) {
            return Ok(Arc::clone(collection));
        }
        let dir = self.dir_of(&name);
        if !dir.is_dir() {
            return Err(StoreError::NoSuchCollection(name_or_alias.to_owned()));
        }
        let shard = EdgeShard::load(&dir, None).map_err(storage_error(&name))?;
        warm_page_cache(dir, Arc::clone(&self.warming));
        let collection = Arc::new(Collection {
            name: name.clone(),
            shard,
            writes: GroupCommit::default(),
        });
        open.insert(name, Arc::clone(&collection));
        Ok(collection)
    }

    fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        let _admin = self.admin.lock();
        let dir = self.dir_of(&spec.name);
        if !dir.is_dir() {
            // Created under a temporary name and renamed, so a crash never
            // leaves a half-created collection under the real name.
            let staging = self
                .root
                .join(COLLECTIONS_DIR)
                .join(format!("{}.creating", spec.name));
            let _ = std::fs::remove_dir_all(&staging);
            std::fs::create_dir_all(&staging).map_err(|source| StoreError::Io {
                path: staging.display().to_string(),
                source,
            })?;
            let mut config = EdgeConfigBuilder::new();
            if let Some(dim) = spec.dense_dim {
                config = config.vector(
                    DENSE,
                    EdgeVectorParamsBuilder::new(dim, Distance::Cosine)
                        .on_disk(true)
                        .quantization_config(QuantizationConfig::from(ScalarQuantizationConfig {
                            r#type: ScalarType::Int8,
                            quantile: Some(DENSE_INT8_QUANTILE),
                            always_ram: Some(true),
                        }))
                        .build(),
                );
            }
            if spec.lexical {
                config = config.sparse_vector(
                    LEXICAL,
                    EdgeSparseVectorParamsBuilder::new()
                        .modifier(Modifier::Idf)
                        .build(),
                );
            }
            let shard =
                EdgeShard::new(&staging, config.build()).map_err(storage_error(&spec.name))?;
            create_indexes(&shard, spec)?;
            shard.flush();
            drop(shard);
            std::fs::rename(&staging, &dir).map_err(|source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
            sync_dir(&self.root.join(COLLECTIONS_DIR));
        }
        // Indexes added to the spec after creation are created on open.
        let collection = self.collection(&spec.name)?;
        collection.writes.alone_then_flush(
            || create_indexes(&collection.shard, spec),
            || collection.shard.flush(),
        )
    }

    fn drop_collection(&self, name: &str) -> Result<(), StoreError> {
        let _admin = self.admin.lock();
        if self.aliases.read().values().any(|target| target == name) {
            return Err(StoreError::Storage {
                collection: name.to_owned(),
                message: "an alias still points at this collection".into(),
            });
        }
        let removed = self.open.write().remove(name);
        if let Some(mut collection) = removed {
            // Wait for in-flight operations to let go, so the shard's final
            // flush (in its Drop) runs before its files disappear.
            loop {
                match Arc::try_unwrap(collection) {
                    Ok(owned) => {
                        drop(owned);
                        break;
                    }
                    Err(still_shared) => {
                        collection = still_shared;
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
            }
        }
        let dir = self.dir_of(name);
        if dir.is_dir() {
            std::fs::remove_dir_all(&dir).map_err(|source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    fn set_alias(&self, alias: &str, collection: &str) -> Result<(), StoreError> {
        let _admin = self.admin.lock();
        if !self.dir_of(collection).is_dir() {
            return Err(StoreError::NoSuchCollection(collection.to_owned()));
        }
        let mut next = self.aliases.read().clone();
        next.insert(alias.to_owned(), collection.to_owned());
        let path = self.root.join(ALIASES_FILE);
        let staging = self.root.join(format!("{ALIASES_FILE}.tmp"));
        let io = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| StoreError::Storage {
            collection: alias.to_owned(),
            message: e.to_string(),
        })?;
        {
            use std::io::Write;
            let mut file = File::create(&staging).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&staging, &path).map_err(io)?;
        sync_dir(&self.root);
        *self.aliases.write() = next;
        Ok(())
    }

    fn write(&self, collection: &str, operation: UpdateOperation) -> Result<(), StoreError> {
        let collection = self.collection(collection)?;
        collection.writes.write(
            || {
                collection
                    .shard
                    .update(operation)
                    .map_err(storage_error(&collection.name))
            },
            || collection.shard.flush(),
        )
    }
}

/// Reads every file of a just-loaded collection once, on a background
/// thread, so that the page cache holds them before searches need them.
///
/// Why: qdrant-edge evicts a segment's files from the page cache when it
/// closes the segment, and reads its memory-mapped files (payloads, the
/// full dense vectors used for rescoring, the id tracker) with
/// random-access advice, page by page. Right after a reopen every search
/// would wait on disk for the pages it touches: at 100k entries, 19k major
/// page faults in 300 searches, and their p99 several times the warm one.
/// Read in one sequential pass (~1 GB/s here) instead, the files are cached
/// within a second or two while the store already serves. A file that
/// disappears meanwhile (a dropped collection) is skipped.
///
/// `warming` counts the warm-ups under way, for [`PointStore::warming_up`].
fn warm_page_cache(collection_dir: PathBuf, warming: Arc<AtomicUsize>) {
    warming.fetch_add(1, Ordering::SeqCst);
    let counter = Arc::clone(&warming);
    let spawned = std::thread::Builder::new()
        .name("wenke-page-cache-warm-up".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            let bytes = read_files_under(&collection_dir);
            counter.fetch_sub(1, Ordering::SeqCst);
            tracing::debug!(
                collection = %collection_dir.display(),
                bytes,
                seconds = started.elapsed().as_secs_f64(),
                "collection files read into the page cache"
            );
        });
    if let Err(e) = spawned {
        warming.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!("no page-cache warm-up thread: {e}");
    }
}

/// qdrant-edge's write-ahead log, under a collection's directory: never
/// read back (0.7 does not replay it) and as large as everything written.
const EDGE_WAL_DIR: &str = "wal";

/// Reads the files under `dir` (recursively, the write-ahead log aside) and
/// returns how many bytes it read; unreadable entries are skipped.
fn read_files_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut bytes = 0;
    for entry in entries.flatten() {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            if entry.file_name() != EDGE_WAL_DIR {
                bytes += read_files_under(&entry.path());
            }
        } else if file_type.is_file()
            && let Ok(mut file) = File::open(entry.path())
        {
            bytes += std::io::copy(&mut file, &mut std::io::sink()).unwrap_or(0);
        }
    }
    bytes
}

/// Makes a rename durable.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

fn create_indexes(shard: &EdgeShard, spec: &CollectionSpec) -> Result<(), StoreError> {
    let fields = spec
        .keyword_fields
        .iter()
        .map(|f| (*f, PayloadSchemaType::Keyword))
        .chain(
            spec.integer_fields
                .iter()
                .map(|f| (*f, PayloadSchemaType::Integer)),
        )
        .chain(
            spec.datetime_fields
                .iter()
                .map(|f| (*f, PayloadSchemaType::Datetime)),
        );
    let lookups = spec.lookup_fields.iter().map(|f| {
        (
            *f,
            PayloadFieldSchema::FieldParams(PayloadSchemaParams::Keyword(KeywordIndexParams {
                on_disk: Some(true),
                enable_hnsw: Some(false),
                ..KeywordIndexParams::default()
            })),
        )
    });
    let fields = fields
        .map(|(field, schema)| (field, PayloadFieldSchema::FieldType(schema)))
        .chain(lookups);
    for (field, schema) in fields {
        shard
            .update(UpdateOperation::FieldIndexOperation(
                FieldIndexOperations::CreateIndex(CreateIndex {
                    field_name: json_path(field)?,
                    field_schema: Some(schema),
                }),
            ))
            .map_err(storage_error(&spec.name))?;
    }
    Ok(())
}

fn json_path(field: &str) -> Result<JsonPath, StoreError> {
    JsonPath::try_from(field).map_err(|_| StoreError::Storage {
        collection: String::new(),
        message: format!("invalid payload field name {field}"),
    })
}

fn edge_filter(filter: &Filter) -> Result<Option<qdrant_edge::Filter>, StoreError> {
    if filter.is_empty() {
        return Ok(None);
    }
    let convert =
        |conditions: &[Condition]| -> Result<Option<Vec<qdrant_edge::Condition>>, StoreError> {
            if conditions.is_empty() {
                return Ok(None);
            }
            conditions
                .iter()
                .map(|condition| {
                    let field = match condition {
                        Condition::KeywordIn { field, values } => FieldCondition::new_match(
                            json_path(field)?,
                            Match::from(values.clone()),
                        ),
                        Condition::IntegerIn { field, values } => FieldCondition::new_match(
                            json_path(field)?,
                            Match::from(values.clone()),
                        ),
                        Condition::Before { field, moment } => FieldCondition::new_datetime_range(
                            json_path(field)?,
                            Range {
                                lt: Some(edge_datetime(*moment)?),
                                gt: None,
                                gte: None,
                                lte: None,
                            },
                        ),
                    };
                    Ok(qdrant_edge::Condition::Field(field))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        };
    let mut edge = qdrant_edge::Filter::new();
    edge.must = convert(&filter.must)?;
    edge.must_not = convert(&filter.must_not)?;
    Ok(Some(edge))
}

fn edge_datetime(moment: time::OffsetDateTime) -> Result<DateTimeWrapper, StoreError> {
    let text = moment
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    text.parse().map_err(|_| StoreError::Storage {
        collection: String::new(),
        message: format!("not a datetime bound: {moment}"),
    })
}

fn uuid_of(id: PointId) -> Option<Uuid> {
    match id {
        PointId::Uuid(uuid) => Some(uuid),
        PointId::NumId(_) => None,
    }
}

/// Records as the store hands them out (points without a UUID, which this
/// store never writes, are skipped).
fn records_of(records: Vec<qdrant_edge::Record>) -> Vec<Record> {
    records
        .into_iter()
        .filter_map(|r| {
            Some(Record {
                id: uuid_of(r.id)?,
                payload: payload_map(r.payload),
            })
        })
        .collect()
}

fn payload_map(payload: Option<qdrant_edge::Payload>) -> super::Payload {
    payload
        .map(|p| p.0.into_iter().collect())
        .unwrap_or_default()
}

fn edge_sparse(
    vector: &crate::lexical::SparseVector,
) -> Result<qdrant_edge::SparseVector, StoreError> {
    qdrant_edge::SparseVector::new(vector.indices.clone(), vector.values.clone()).map_err(|e| {
        StoreError::Storage {
            collection: String::new(),
            message: format!("invalid sparse vector: {e}"),
        }
    })
}

fn edge_point(point: NewPoint) -> Result<qdrant_edge::PointStructPersisted, StoreError> {
    let mut vectors: Vec<(&str, Vector)> = Vec::new();
    if let Some(dense) = point.dense {
        vectors.push((DENSE, Vector::new_dense(dense)));
    }
    if let Some(lexical) = &point.lexical {
        vectors.push((LEXICAL, Vector::from(edge_sparse(lexical)?)));
    }
    Ok(PointStruct::new(
        PointId::Uuid(point.id),
        Vectors::new_named(vectors),
        Value::Object(point.payload),
    )
    .into())
}

#[async_trait::async_trait]
impl PointStore for EdgeStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn indexes_itself(&self) -> bool {
        false
    }

    fn writers(&self) -> Writers {
        self.writers
    }

    fn warming_up(&self) -> bool {
        self.inner.warming.load(Ordering::SeqCst) > 0
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        let spec = spec.clone();
        self.blocking(move |inner| inner.ensure_collection(&spec))
            .await
    }

    async fn collection_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.inner.dir_of(name).is_dir())
    }

    async fn drop_collection(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.blocking(move |inner| inner.drop_collection(&name))
            .await
    }

    async fn set_alias(&self, alias: &str, collection: &str) -> Result<(), StoreError> {
        let (alias, collection) = (alias.to_owned(), collection.to_owned());
        self.blocking(move |inner| inner.set_alias(&alias, &collection))
            .await
    }

    async fn resolve_alias(&self, alias: &str) -> Result<Option<String>, StoreError> {
        Ok(self.inner.aliases.read().get(alias).cloned())
    }

    async fn upsert(&self, collection: &str, points: Vec<NewPoint>) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let collection = collection.to_owned();
        self.blocking(move |inner| {
            let points = points
                .into_iter()
                .map(edge_point)
                .collect::<Result<Vec<_>, _>>()?;
            inner.write(
                &collection,
                UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                    PointInsertOperations::PointsList(points),
                )),
            )
        })
        .await
    }

    async fn replace_payload(
        &self,
        collection: &str,
        id: Uuid,
        payload: super::Payload,
    ) -> Result<(), StoreError> {
        let collection = collection.to_owned();
        self.blocking(move |inner| {
            inner.write(
                &collection,
                UpdateOperation::PayloadOperation(PayloadOps::OverwritePayload(SetPayloadOp {
                    payload: qdrant_edge::Payload(payload),
                    points: Some(vec![PointId::Uuid(id)]),
                    filter: None,
                    key: None,
                })),
            )
        })
        .await
    }

    async fn delete(&self, collection: &str, ids: Vec<Uuid>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let collection = collection.to_owned();
        self.blocking(move |inner| {
            let ids = ids.into_iter().map(PointId::Uuid).collect();
            inner.write(
                &collection,
                UpdateOperation::PointOperation(PointOperations::DeletePoints { ids }),
            )
        })
        .await
    }

    async fn delete_matching(&self, collection: &str, filter: Filter) -> Result<(), StoreError> {
        let collection = collection.to_owned();
        self.blocking(move |inner| {
            let Some(filter) = edge_filter(&filter)? else {
                return Err(StoreError::Storage {
                    collection: collection.clone(),
                    message: "refusing to delete with an empty filter".into(),
                });
            };
            inner.write(
                &collection,
                UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(filter)),
            )
        })
        .await
    }

    async fn get(&self, collection: &str, ids: Vec<Uuid>) -> Result<Vec<Record>, StoreError> {
        let collection = collection.to_owned();
        self.blocking(move |inner| {
            let handle = inner.collection(&collection)?;
            let ids: Vec<PointId> = ids.into_iter().map(PointId::Uuid).collect();
            let records = handle
                .shard
                .retrieve(
                    &ids,
                    Some(WithPayloadInterface::Bool(true)),
                    Some(WithVector::Bool(false)),
                )
                .map_err(storage_error(&collection))?;
            Ok(records_of(records))
        })
        .await
    }

    async fn scroll(
        &self,
        collection: &str,
        filter: Filter,
        offset: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<Record>, Option<Uuid>), StoreError> {
        let collection = collection.to_owned();
        self.blocking(move |inner| {
            let handle = inner.collection(&collection)?;
            let (records, next) = handle
                .shard
                .scroll(ScrollRequest {
                    offset: offset.map(PointId::Uuid),
                    limit: Some(limit.max(1)),
                    filter: edge_filter(&filter)?,
                    with_payload: Some(WithPayloadInterface::Bool(true)),
                    with_vector: WithVector::Bool(false),
                    order_by: None,
                })
                .map_err(storage_error(&collection))?;
            let records = records_of(records);
            Ok((records, next.and_then(uuid_of)))
        })
        .await
    }

    async fn first_by(
        &self,
        collection: &str,
        filter: Filter,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let collection = collection.to_owned();
        self.blocking(move |inner| {
            let handle = inner.collection(&collection)?;
            let order_by = OrderBy {
                key: json_path(order.field)?,
                direction: Some(if order.descending {
                    Direction::Desc
                } else {
                    Direction::Asc
                }),
                start_from: None,
            };
            let (records, _) = handle
                .shard
                .scroll(ScrollRequest {
                    offset: None,
                    limit: Some(limit.max(1)),
                    filter: edge_filter(&filter)?,
                    with_payload: Some(WithPayloadInterface::Bool(true)),
                    with_vector: WithVector::Bool(false),
                    order_by: Some(OrderByInterface::Struct(order_by)),
                })
                .map_err(storage_error(&collection))?;
            Ok(records_of(records))
        })
        .await
    }

    async fn collections(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.inner.root.join(COLLECTIONS_DIR);
        let entries = std::fs::read_dir(&dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|entry| entry.path().is_dir())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.ends_with(".creating"))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn aliases(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut aliases: Vec<(String, String)> = self
            .inner
            .aliases
            .read()
            .iter()
            .map(|(alias, collection)| (alias.clone(), collection.clone()))
            .collect();
        aliases.sort();
        Ok(aliases)
    }

    async fn export(
        &self,
        collection: &str,
        offset: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<NewPoint>, Option<Uuid>), StoreError> {
        let collection = collection.to_owned();
        self.blocking(move |inner| {
            let handle = inner.collection(&collection)?;
            let (records, next) = handle
                .shard
                .scroll(ScrollRequest {
                    offset: offset.map(PointId::Uuid),
                    limit: Some(limit.max(1)),
                    filter: None,
                    with_payload: Some(WithPayloadInterface::Bool(true)),
                    with_vector: WithVector::Bool(true),
                    order_by: None,
                })
                .map_err(storage_error(&collection))?;
            let points = records
                .into_iter()
                .filter_map(|record| {
                    let id = uuid_of(record.id)?;
                    let (mut dense, mut lexical) = (None, None);
                    if let Some(VectorStructInternal::Named(vectors)) = record.vector {
                        for (name, vector) in vectors {
                            match vector {
                                VectorInternal::Dense(values) if name == DENSE => {
                                    dense = Some(values);
                                }
                                VectorInternal::Sparse(sparse) if name == LEXICAL => {
                                    lexical = Some(crate::lexical::SparseVector {
                                        indices: sparse.indices,
                                        values: sparse.values,
                                    });
                                }
                                _ => {}
                            }
                        }
                    }
                    Some(NewPoint {
                        id,
                        dense,
                        lexical,
                        payload: payload_map(record.payload),
                    })
                })
                .collect();
            Ok((points, next.and_then(uuid_of)))
        })
        .await
    }

    async fn count(&self, collection: &str, filter: Filter) -> Result<usize, StoreError> {
        let collection = collection.to_owned();
        self.blocking(move |inner| {
            let handle = inner.collection(&collection)?;
            handle
                .shard
                .count(CountRequest {
                    filter: edge_filter(&filter)?,
                    exact: true,
                })
                .map_err(storage_error(&collection))
        })
        .await
    }

    async fn search(&self, request: SearchRequest) -> Result<Vec<Hit>, StoreError> {
        self.blocking(move |inner| {
            let handle = inner.collection(&request.collection)?;
            let (vector, using) = match &request.query {
                QueryVector::Dense(values) => (VectorInternal::Dense(values.clone()), DENSE),
                QueryVector::Lexical(sparse) => {
                    (VectorInternal::Sparse(edge_sparse(sparse)?), LEXICAL)
                }
            };
            let points = handle
                .shard
                .query(QueryRequest {
                    prefetches: Vec::new(),
                    query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery::new(
                        vector, using,
                    )))),
                    filter: edge_filter(&request.filter)?,
                    score_threshold: None,
                    limit: request.limit,
                    offset: 0,
                    params: Some(SearchParams {
                        exact: request.exactness == Exactness::Exact,
                        quantization: Some(QuantizationSearchParams {
                            ignore: false,
                            rescore: Some(true),
                            oversampling: Some(DENSE_OVERSAMPLING),
                        }),
                        ..SearchParams::default()
                    }),
                    with_vector: WithVector::Bool(false),
                    with_payload: WithPayloadInterface::Bool(true),
                })
                .map_err(storage_error(&request.collection))?;
            Ok(points
                .into_iter()
                .filter_map(|p| {
                    Some(Hit {
                        id: uuid_of(p.id)?,
                        score: p.score,
                        payload: payload_map(p.payload),
                    })
                })
                .collect())
        })
        .await
    }

    async fn optimize(&self, collection: &str) -> Result<(), StoreError> {
        let collection = collection.to_owned();
        self.blocking(move |inner| {
            let handle = inner.collection(&collection)?;
            // Alone: updates and flushes (which panic under contention)
            // stay away while segments are swapped; reads go on.
            handle.writes.alone_then_flush(
                || {
                    handle
                        .shard
                        .optimize()
                        .map(drop)
                        .map_err(storage_error(&collection))
                },
                || handle.shard.flush(),
            )
        })
        .await
    }
}
