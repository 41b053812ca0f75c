//! The server store: a Qdrant server or cluster over gRPC (`qdrant-client`).
//!
//! Writes wait until Qdrant has applied them (`wait: true`), so a returned
//! write is durable by the cluster's own guarantees (its WAL and
//! replication). Aliases are Qdrant's own, which switch atomically for
//! readers.

use std::collections::HashMap;
use std::time::Duration;

use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    self, CountPointsBuilder, CreateAliasBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType, GetPointsBuilder,
    KeywordIndexParamsBuilder, Modifier, NamedVectors, PointId, PointStruct, PointsIdsList,
    QuantizationSearchParamsBuilder, Query, QueryPointsBuilder, ScalarQuantizationBuilder,
    ScrollPointsBuilder, SearchParamsBuilder, SetPayloadPointsBuilder, SparseVectorParamsBuilder,
    SparseVectorsConfigBuilder, UpsertPointsBuilder, VectorInput, VectorParamsBuilder,
    VectorsConfigBuilder, point_id::PointIdOptions,
};
use uuid::Uuid;

use super::{
    CollectionSpec, Condition, DENSE, DENSE_INT8_QUANTILE, DENSE_OVERSAMPLING, Exactness, Filter,
    Hit, LEXICAL, NewPoint, Order, Payload, PointStore, QueryVector, Record, SearchRequest,
    StoreError, Writers,
};

/// How long [`PointStore::optimize`] waits for the server's background
/// optimisation before it gives up, and how often it asks.
const OPTIMIZE_WAIT: Duration = Duration::from_secs(30 * 60);
const OPTIMIZE_POLL: Duration = Duration::from_millis(500);

/// Connection settings for a Qdrant server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// gRPC URL, e.g. `http://127.0.0.1:6334`.
    pub url: String,
    /// API key, if the server requires one.
    pub api_key: Option<String>,
    /// Prefix of every collection and alias name, so several deployments
    /// (or test runs) can share one server.
    pub prefix: String,
    /// How long one request may take before it fails. Readers answer users
    /// inside a channel's budget (WeChat's is 5 s), so a slow cluster must
    /// fail a request rather than hold the reply.
    pub timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Shards of each collection this store creates (`None`: the server's
    /// default: one per node of a cluster at creation, one on a single
    /// node). Set at creation; an existing collection keeps its own.
    pub shards: Option<u32>,
    /// Copies of each shard on different nodes (`None`: the server's
    /// default, one). With 2, a collection survives the loss of a node.
    pub replication_factor: Option<u32>,
}

impl ServerConfig {
    /// Settings for the server at `url` with collection names prefixed by
    /// `prefix`: no API key, a 3 s request and 1 s connect timeout, the
    /// server's default shards and replication.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            api_key: None,
            prefix: prefix.into(),
            timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(1),
            shards: None,
            replication_factor: None,
        }
    }
}

/// The store on a Qdrant server.
pub struct ServerStore {
    client: Qdrant,
    prefix: String,
    shards: Option<u32>,
    replication_factor: Option<u32>,
}

fn server_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Server(e.to_string())
}

/// A read that failed faster than this is tried once more; a slower one
/// has spent the user's wait already.
const READ_RETRY_WITHIN: Duration = Duration::from_millis(1_000);
/// The pause before that second attempt.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(30);

/// Whether an error is one a cluster clears by itself within moments: the
/// node could not be reached or reach a peer (`Unavailable`), it shed the
/// request (`ResourceExhausted`: its rate limit, or, as seen while a
/// restarted node's replicas were being caught up, "h2 protocol error"
/// from a connection between nodes torn down under load), or the request
/// lost a race with a shard transfer (`Aborted`). A bad request, a missing
/// collection or a timeout is not.
fn is_transient(error: &qdrant_client::QdrantError) -> bool {
    use qdrant_client::QdrantError;
    use tonic::Code;
    match error {
        QdrantError::ResponseError { status } => matches!(
            status.code(),
            Code::Unavailable | Code::ResourceExhausted | Code::Aborted
        ),
        QdrantError::ResourceExhaustedError { .. } => true,
        _ => false,
    }
}

/// Runs a read, and once more when it failed fast with a transient error
/// (see [`is_transient`]): reads are idempotent, and one node of a cluster
/// restarting or moving shards should cost the user nothing. qdrant-client
/// itself retries only a channel that failed to connect.
async fn retrying_read<T, F, Fut>(attempt: F) -> Result<T, StoreError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, qdrant_client::QdrantError>>,
{
    let started = tokio::time::Instant::now();
    match attempt().await {
        Err(error) if is_transient(&error) && started.elapsed() < READ_RETRY_WITHIN => {
            tracing::info!(%error, "Qdrant read failed; trying once more");
            tokio::time::sleep(READ_RETRY_PAUSE).await;
            attempt().await.map_err(server_error)
        }
        result => result.map_err(server_error),
    }
}

impl ServerStore {
    /// Connects (lazily: the first call reaches the server).
    pub fn connect(config: &ServerConfig) -> Result<Self, StoreError> {
        let mut builder = Qdrant::from_url(&config.url)
            .skip_compatibility_check()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout);
        if let Some(key) = &config.api_key {
            builder = builder.api_key(key.clone());
        }
        Ok(Self {
            client: builder.build().map_err(server_error)?,
            prefix: config.prefix.clone(),
            shards: config.shards,
            replication_factor: config.replication_factor,
        })
    }

    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Checks that the server answers.
    pub async fn health(&self) -> Result<(), StoreError> {
        self.client.health_check().await.map_err(server_error)?;
        Ok(())
    }
}

fn server_filter(filter: &Filter) -> Option<qdrant::Filter> {
    if filter.is_empty() {
        return None;
    }
    let convert = |conditions: &[Condition]| -> Vec<qdrant::Condition> {
        conditions
            .iter()
            .map(|condition| match condition {
                Condition::KeywordIn { field, values } => {
                    qdrant::Condition::matches(*field, values.clone())
                }
                Condition::IntegerIn { field, values } => {
                    qdrant::Condition::matches(*field, values.clone())
                }
                Condition::Before { field, moment } => qdrant::Condition::datetime_range(
                    *field,
                    qdrant::DatetimeRange {
                        lt: Some(prost_types::Timestamp {
                            seconds: moment.unix_timestamp(),
                            nanos: i32::try_from(moment.nanosecond()).unwrap_or(0),
                        }),
                        ..Default::default()
                    },
                ),
            })
            .collect()
    };
    Some(qdrant::Filter {
        must: convert(&filter.must),
        must_not: convert(&filter.must_not),
        ..Default::default()
    })
}

fn uuid_of(id: Option<PointId>) -> Option<Uuid> {
    match id?.point_id_options? {
        PointIdOptions::Uuid(text) => Uuid::parse_str(&text).ok(),
        PointIdOptions::Num(_) => None,
    }
}

/// Records as the server hands them out (points without a UUID, which
/// this store never writes, are skipped).
fn records_of(points: Vec<qdrant::RetrievedPoint>) -> Vec<Record> {
    points
        .into_iter()
        .filter_map(|p| {
            Some(Record {
                id: uuid_of(p.id)?,
                payload: json_payload(p.payload),
            })
        })
        .collect()
}

fn json_payload(payload: HashMap<String, qdrant::Value>) -> Payload {
    serde_json::Map::from(qdrant_client::Payload::from(payload))
}

#[async_trait::async_trait]
impl PointStore for ServerStore {
    fn kind(&self) -> &'static str {
        "server"
    }

    fn indexes_itself(&self) -> bool {
        true
    }

    fn writers(&self) -> Writers {
        Writers::Shared
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), StoreError> {
        let name = self.name(&spec.name);
        let exists = self
            .client
            .collection_exists(&name)
            .await
            .map_err(server_error)?;
        if !exists {
            let mut vectors = VectorsConfigBuilder::default();
            if let Some(dim) = spec.dense_dim {
                // `on_disk` and `always_ram` rather than their successor
                // `memory`: servers before 1.19 know only these, and newer
                // ones still read them.
                #[allow(deprecated)]
                let params = VectorParamsBuilder::new(dim as u64, Distance::Cosine)
                    .on_disk(true)
                    .quantization_config(
                        ScalarQuantizationBuilder::default()
                            .quantile(DENSE_INT8_QUANTILE)
                            .always_ram(true),
                    );
                vectors.add_named_vector_params(DENSE, params);
            }
            let mut create = CreateCollectionBuilder::new(&name).vectors_config(vectors);
            if let Some(shards) = self.shards {
                create = create.shard_number(shards);
            }
            if let Some(copies) = self.replication_factor {
                create = create.replication_factor(copies);
            }
            if spec.lexical {
                let mut sparse = SparseVectorsConfigBuilder::default();
                sparse.add_named_vector_params(
                    LEXICAL,
                    SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
                );
                create = create.sparse_vectors_config(sparse);
            }
            if let Err(e) = self.client.create_collection(create).await {
                // Another instance may have created it meanwhile.
                let now_exists = self
                    .client
                    .collection_exists(&name)
                    .await
                    .map_err(server_error)?;
                if !now_exists {
                    return Err(server_error(e));
                }
            }
        }
        let fields = spec
            .keyword_fields
            .iter()
            .map(|f| (*f, FieldType::Keyword))
            .chain(spec.integer_fields.iter().map(|f| (*f, FieldType::Integer)))
            .chain(
                spec.datetime_fields
                    .iter()
                    .map(|f| (*f, FieldType::Datetime)),
            );
        for (field, field_type) in fields {
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(&name, field, field_type).wait(true),
                )
                .await
                .map_err(server_error)?;
        }
        for field in &spec.lookup_fields {
            // `on_disk` rather than its successor `memory`: servers before
            // 1.19 know only `on_disk`, and newer ones still read it.
            #[allow(deprecated)]
            let params = KeywordIndexParamsBuilder::default()
                .on_disk(true)
                .enable_hnsw(false);
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(&name, *field, FieldType::Keyword)
                        .field_index_params(params)
                        .wait(true),
                )
                .await
                .map_err(server_error)?;
        }
        Ok(())
    }

    async fn collection_exists(&self, name: &str) -> Result<bool, StoreError> {
        self.client
            .collection_exists(self.name(name))
            .await
            .map_err(server_error)
    }

    async fn drop_collection(&self, name: &str) -> Result<(), StoreError> {
        self.client
            .delete_collection(self.name(name))
            .await
            .map_err(server_error)?;
        Ok(())
    }

    async fn set_alias(&self, alias: &str, collection: &str) -> Result<(), StoreError> {
        // Qdrant's create-alias replaces an existing alias in one step, so
        // readers see either the old or the new collection, never neither.
        self.client
            .create_alias(CreateAliasBuilder::new(
                self.name(collection),
                self.name(alias),
            ))
            .await
            .map_err(server_error)?;
        Ok(())
    }

    async fn resolve_alias(&self, alias: &str) -> Result<Option<String>, StoreError> {
        let wanted = self.name(alias);
        let aliases = self.client.list_aliases().await.map_err(server_error)?;
        Ok(aliases
            .aliases
            .into_iter()
            .find(|a| a.alias_name == wanted)
            .map(|a| {
                a.collection_name
                    .strip_prefix(&self.prefix)
                    .unwrap_or(&a.collection_name)
                    .to_owned()
            }))
    }

    async fn upsert(&self, collection: &str, points: Vec<NewPoint>) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let points: Vec<PointStruct> = points
            .into_iter()
            .map(|point| {
                let mut vectors = NamedVectors::default();
                if let Some(dense) = point.dense {
                    vectors = vectors.add_vector(DENSE, qdrant::Vector::new_dense(dense));
                }
                if let Some(lexical) = point.lexical {
                    vectors = vectors.add_vector(
                        LEXICAL,
                        qdrant::Vector::new_sparse(lexical.indices, lexical.values),
                    );
                }
                PointStruct::new(
                    point.id.to_string(),
                    vectors,
                    qdrant_client::Payload::from(point.payload),
                )
            })
            .collect();
        self.client
            .upsert_points(UpsertPointsBuilder::new(self.name(collection), points).wait(true))
            .await
            .map_err(server_error)?;
        Ok(())
    }

    async fn replace_payload(
        &self,
        collection: &str,
        id: Uuid,
        payload: super::Payload,
    ) -> Result<(), StoreError> {
        self.client
            .overwrite_payload(
                SetPayloadPointsBuilder::new(
                    self.name(collection),
                    qdrant_client::Payload::from(payload),
                )
                .points_selector(PointsIdsList {
                    ids: vec![PointId::from(id.to_string())],
                })
                .wait(true),
            )
            .await
            .map_err(server_error)?;
        Ok(())
    }

    async fn delete(&self, collection: &str, ids: Vec<Uuid>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids
            .into_iter()
            .map(|id| PointId::from(id.to_string()))
            .collect();
        self.client
            .delete_points(
                DeletePointsBuilder::new(self.name(collection))
                    .points(PointsIdsList { ids })
                    .wait(true),
            )
            .await
            .map_err(server_error)?;
        Ok(())
    }

    async fn delete_matching(&self, collection: &str, filter: Filter) -> Result<(), StoreError> {
        let Some(filter) = server_filter(&filter) else {
            return Err(StoreError::Storage {
                collection: collection.to_owned(),
                message: "refusing to delete with an empty filter".into(),
            });
        };
        self.client
            .delete_points(
                DeletePointsBuilder::new(self.name(collection))
                    .points(filter)
                    .wait(true),
            )
            .await
            .map_err(server_error)?;
        Ok(())
    }

    async fn get(&self, collection: &str, ids: Vec<Uuid>) -> Result<Vec<Record>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let point_ids: Vec<PointId> = ids.iter().map(|id| PointId::from(id.to_string())).collect();
        let request = GetPointsBuilder::new(self.name(collection), point_ids)
            .with_payload(true)
            .build();
        let response = retrying_read(|| self.client.get_points(request.clone())).await?;
        let mut by_id: HashMap<Uuid, Payload> = response
            .result
            .into_iter()
            .filter_map(|p| Some((uuid_of(p.id)?, json_payload(p.payload))))
            .collect();
        Ok(ids
            .into_iter()
            .filter_map(|id| {
                Some(Record {
                    id,
                    payload: by_id.remove(&id)?,
                })
            })
            .collect())
    }

    async fn scroll(
        &self,
        collection: &str,
        filter: Filter,
        offset: Option<Uuid>,
        limit: usize,
    ) -> Result<(Vec<Record>, Option<Uuid>), StoreError> {
        let mut request = ScrollPointsBuilder::new(self.name(collection))
            .limit(limit.max(1) as u32)
            .with_payload(true);
        if let Some(filter) = server_filter(&filter) {
            request = request.filter(filter);
        }
        if let Some(offset) = offset {
            request = request.offset(PointId::from(offset.to_string()));
        }
        let request = request.build();
        let response = retrying_read(|| self.client.scroll(request.clone())).await?;
        let records = records_of(response.result);
        Ok((records, uuid_of(response.next_page_offset)))
    }

    async fn first_by(
        &self,
        collection: &str,
        filter: Filter,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let direction = if order.descending {
            qdrant::Direction::Desc
        } else {
            qdrant::Direction::Asc
        };
        let mut request = ScrollPointsBuilder::new(self.name(collection))
            .limit(limit.max(1) as u32)
            .with_payload(true)
            .order_by(qdrant::OrderBy {
                key: order.field.to_owned(),
                direction: Some(direction as i32),
                start_from: None,
            });
        if let Some(filter) = server_filter(&filter) {
            request = request.filter(filter);
        }
        let request = request.build();
        let response = retrying_read(|| self.client.scroll(request.clone())).await?;
        Ok(records_of(response.result))
    }

    async fn collections(&self) -> Result<Vec<String>, StoreError> {
        let listed = self.client.list_collections().await.map_err(server_error)?;
        let mut names: Vec<String> = listed
            .collections
            .into_iter()
            .filter_map(|c| c.name.strip_prefix(&self.prefix).map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn aliases(&self) -> Result<Vec<(String, String)>, StoreError> {
        let listed = self.client.list_aliases().await.map_err(server_error)?;
        let mut aliases: Vec<(String, String)> = listed
            .aliases
            .into_iter()
            .filter_map(|a| {
                let alias = a.alias_name.strip_prefix(&self.prefix)?.to_owned();
                let collection = a.collection_name.strip_prefix(&self.prefix)?.to_owned();
                Some((alias, collection))
            })
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
        let mut request = ScrollPointsBuilder::new(self.name(collection))
            .limit(limit.max(1) as u32)
            .with_payload(true)
            .with_vectors(true);
        if let Some(offset) = offset {
            request = request.offset(PointId::from(offset.to_string()));
        }
        let response = self.client.scroll(request).await.map_err(server_error)?;
        let points = response
            .result
            .into_iter()
            .filter_map(|point| {
                let id = uuid_of(point.id)?;
                let (mut dense, mut lexical) = (None, None);
                if let Some(qdrant::vectors_output::VectorsOptions::Vectors(named)) =
                    point.vectors.and_then(|v| v.vectors_options)
                {
                    for (name, vector) in named.vectors {
                        match vector.into_vector() {
                            qdrant::vector_output::Vector::Dense(values) if name == DENSE => {
                                dense = Some(values.data);
                            }
                            qdrant::vector_output::Vector::Sparse(sparse) if name == LEXICAL => {
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
                    payload: json_payload(point.payload),
                })
            })
            .collect();
        Ok((points, uuid_of(response.next_page_offset)))
    }

    async fn count(&self, collection: &str, filter: Filter) -> Result<usize, StoreError> {
        let mut request = CountPointsBuilder::new(self.name(collection)).exact(true);
        if let Some(filter) = server_filter(&filter) {
            request = request.filter(filter);
        }
        let request = request.build();
        let response = retrying_read(|| self.client.count(request.clone())).await?;
        Ok(response.result.map_or(0, |r| r.count as usize))
    }

    async fn search(&self, request: SearchRequest) -> Result<Vec<Hit>, StoreError> {
        let (input, using) = match request.query {
            QueryVector::Dense(values) => (VectorInput::new_dense(values), DENSE),
            QueryVector::Lexical(sparse) => (
                VectorInput::new_sparse(sparse.indices, sparse.values),
                LEXICAL,
            ),
        };
        let mut query = QueryPointsBuilder::new(self.name(&request.collection))
            .query(Query::new_nearest(input))
            .using(using)
            .limit(request.limit as u64)
            .with_payload(true)
            .params(
                SearchParamsBuilder::default()
                    .exact(request.exactness == Exactness::Exact)
                    .quantization(
                        QuantizationSearchParamsBuilder::default()
                            .rescore(true)
                            .oversampling(DENSE_OVERSAMPLING),
                    ),
            );
        if let Some(filter) = server_filter(&request.filter) {
            query = query.filter(filter);
        }
        let query = query.build();
        let response = retrying_read(|| self.client.query(query.clone())).await?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|p| {
                Some(Hit {
                    id: uuid_of(p.id)?,
                    score: p.score,
                    payload: json_payload(p.payload),
                })
            })
            .collect())
    }

    async fn optimize(&self, collection: &str) -> Result<(), StoreError> {
        // The server optimises in the background by itself; what a caller
        // of `optimize` wants is that work finished, so wait for it: the
        // collection is green once no optimisation is pending or running.
        let name = self.name(collection);
        let deadline = tokio::time::Instant::now() + OPTIMIZE_WAIT;
        loop {
            // First give the server a moment to notice the last writes: it
            // starts optimising asynchronously, and is green until then.
            tokio::time::sleep(OPTIMIZE_POLL).await;
            let info = self
                .client
                .collection_info(&name)
                .await
                .map_err(server_error)?;
            let green = info
                .result
                .is_some_and(|info| info.status == qdrant::CollectionStatus::Green as i32);
            if green {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Server(format!(
                    "{name} still optimising after {} s",
                    OPTIMIZE_WAIT.as_secs()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use qdrant_client::QdrantError;
    use tonic::{Code, Status};

    use super::*;

    fn failure(code: Code) -> QdrantError {
        QdrantError::ResponseError {
            status: Status::new(code, "test"),
        }
    }

    /// Runs `retrying_read` over attempts that fail with `first` and then succeed;
    /// returns the outcome and the number of attempts.
    async fn read_failing_once_with(first: Code) -> (Result<u8, StoreError>, usize) {
        let attempts = AtomicUsize::new(0);
        let outcome = retrying_read(|| async {
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0 => Err(failure(first)),
                _ => Ok(7),
            }
        })
        .await;
        (outcome, attempts.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_read_that_fails_transiently_is_tried_once_more() {
        for code in [Code::Unavailable, Code::ResourceExhausted, Code::Aborted] {
            let (outcome, attempts) = read_failing_once_with(code).await;
            assert_eq!(outcome.ok(), Some(7), "{code:?}");
            assert_eq!(attempts, 2, "{code:?}");
        }
    }

    #[tokio::test]
    async fn a_read_refused_for_what_it_asks_is_not_retried() {
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::DeadlineExceeded,
        ] {
            let (outcome, attempts) = read_failing_once_with(code).await;
            assert!(outcome.is_err(), "{code:?}");
            assert_eq!(attempts, 1, "{code:?}");
        }
    }

    #[tokio::test]
    async fn a_read_that_keeps_failing_is_tried_twice_at_most() {
        let attempts = AtomicUsize::new(0);
        let outcome: Result<(), StoreError> = retrying_read(|| async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err(failure(Code::Unavailable))
        })
        .await;
        assert!(outcome.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }
}
