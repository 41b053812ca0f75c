//! A loaded embedding model: tokenizer, encoder, prefixes and the windowing
//! and batching policy that turns texts into normalised vectors.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::e5s1::E5s1File;
use crate::encoder::{Encoder, EncoderShape, LayerWeights, Linear, Pooling, WordTable};
use crate::q4::Q4Encoder;
use crate::tokenize::{HuggingFaceTokenizer, SentencePieceTokenizer, TextTokenizer};
use crate::{EmbedError, Embedding, TextKind};

/// Upper bound on padded tokens per forward pass. Bounds the attention scores'
/// memory (batch * heads * len^2 floats) while leaving batches large enough for
/// gemm to run at full speed.
const MAX_TOKENS_PER_FORWARD: usize = 2048;
/// Upper bound on sequences per forward pass.
const MAX_SEQUENCES_PER_FORWARD: usize = 64;

/// The instruction BGE's Chinese models expect in front of retrieval queries.
const BGE_ZH_QUERY_INSTRUCTION: &str = "为这个句子生成表示以用于检索相关文章：";

/// Text put in front of queries and passages, as the model was trained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefixes {
    /// Prepended to queries.
    pub query: String,
    /// Prepended to passages.
    pub passage: String,
}

impl Prefixes {
    /// E5's `"query: "` / `"passage: "`.
    pub fn e5() -> Self {
        Self {
            query: "query: ".to_owned(),
            passage: "passage: ".to_owned(),
        }
    }

    /// Chooses prefixes for a Hugging Face checkpoint from its name: E5 models
    /// get E5's, BGE Chinese models their query instruction, others none.
    pub fn for_checkpoint_name(name: &str) -> Self {
        let name = name.to_ascii_lowercase();
        if name.contains("e5") {
            return Self::e5();
        }
        if name.contains("bge") && name.contains("zh") {
            return Self {
                query: BGE_ZH_QUERY_INSTRUCTION.to_owned(),
                passage: String::new(),
            };
        }
        Self::default()
    }

    fn for_kind(&self, kind: TextKind) -> &str {
        match kind {
            TextKind::Query => &self.query,
            TextKind::Passage => &self.passage,
        }
    }
}

/// A model ready to embed; thread-safe, all methods take `&self`.
pub struct EmbeddingModel {
    id: String,
    tokenizer: TextTokenizer,
    network: Network,
    prefixes: Prefixes,
}

/// The network behind a model: E5S1 files run on the Q4 engine (`q4/`),
/// Hugging Face f32 checkpoints on candle tensors (`encoder.rs`).
enum Network {
    Q4(Q4Encoder),
    Candle(Encoder),
}

impl Network {
    fn hidden(&self) -> usize {
        match self {
            Self::Q4(encoder) => encoder.hidden(),
            Self::Candle(encoder) => encoder.shape.hidden,
        }
    }

    fn max_positions(&self) -> usize {
        match self {
            Self::Q4(encoder) => encoder.max_positions(),
            Self::Candle(encoder) => encoder.shape.max_positions,
        }
    }

    fn vocab_rows(&self) -> usize {
        match self {
            Self::Q4(encoder) => encoder.vocab_rows(),
            Self::Candle(encoder) => encoder.words.rows,
        }
    }

    /// Checks the sequences once for both networks, then runs one of them.
    /// Ids come from our own tokenizer and windows, so a failure here means a
    /// mismatched tokenizer and model, or a windowing bug.
    fn forward(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let rows = self.vocab_rows();
        if let Some(id) = sequences.iter().flatten().find(|id| **id as usize >= rows) {
            return Err(EmbedError::format(format!(
                "token id {id} outside the embedding table ({rows} rows)"
            )));
        }
        let max_positions = self.max_positions();
        if let Some(sequence) = sequences
            .iter()
            .find(|s| s.is_empty() || s.len() > max_positions)
        {
            return Err(EmbedError::format(format!(
                "a sequence of {} tokens (1..={max_positions} allowed)",
                sequence.len()
            )));
        }
        match self {
            Self::Q4(encoder) => encoder.forward(sequences),
            // Run candle's forward on a worker of the rayon pool: its
            // parallel matmuls then start on this thread at once instead of
            // this thread waking two workers and sleeping for every op.
            Self::Candle(encoder) => {
                let mut result = None;
                rayon::scope(|_| result = Some(encoder.forward(sequences)));
                result.unwrap_or(Err(EmbedError::WorkerStopped))
            }
        }
    }
}

/// The number of threads a forward uses by default: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// One window of one text, ready for the encoder.
struct Window {
    text: usize,
    tokens: Vec<u32>,
    weight: f32,
}

impl EmbeddingModel {
    /// Loads a model from a path: an E5S1 file, a directory holding one
    /// (`e5-small-q4.bin`), or a Hugging Face checkpoint directory
    /// (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub fn load(path: &Path) -> Result<Self, EmbedError> {
        if !path.exists() {
            return Err(EmbedError::ModelMissing {
                path: path.to_owned(),
            });
        }
        if path.is_file() {
            return Self::load_e5s1(path, default_threads());
        }
        let e5s1 = path.join("e5-small-q4.bin");
        if e5s1.is_file() {
            return Self::load_e5s1(&e5s1, default_threads());
        }
        if path.join("config.json").is_file() {
            return Self::load_hugging_face(path);
        }
        Err(EmbedError::ModelMissing {
            path: path.to_owned(),
        })
    }

    /// A stable identifier of the model and its text handling; a knowledge base
    /// must re-embed its content when this changes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Length of the vectors.
    pub fn dimension(&self) -> usize {
        self.network.hidden()
    }

    /// Sets how many threads one forward of an E5S1 model uses (default: one
    /// per core). Hugging Face checkpoints use the rayon pool instead.
    pub fn set_threads(&mut self, threads: usize) {
        if let Network::Q4(encoder) = &mut self.network {
            encoder.set_threads(threads);
        }
    }

    /// The prefixes applied to queries and passages.
    pub fn prefixes(&self) -> &Prefixes {
        &self.prefixes
    }

    /// Content token ids (no window specials) of a text with its prefix, as the
    /// encoder will see them. Exposed for tests against reference tokenizers.
    pub fn token_ids(&self, text: &str, kind: TextKind) -> Result<Vec<u32>, EmbedError> {
        let prefixed = format!("{}{}", self.prefixes.for_kind(kind), text);
        self.tokenizer.content_ids(&prefixed)
    }

    /// Embeds texts into L2-normalised vectors.
    ///
    /// A text longer than the model's positions is cut into windows without
    /// overlap; its vector is the token-weighted mean of the windows' pooled
    /// vectors, then normalised (the mean over the whole text, up to windowed
    /// attention). Windows of all texts are sorted by length and batched, so a
    /// batch of similar texts pads little on candle (the Q4 engine does not
    /// pad at all).
    pub fn embed(&self, texts: &[&str], kind: TextKind) -> Result<Vec<Embedding>, EmbedError> {
        let texts: Vec<(&str, TextKind)> = texts.iter().map(|&text| (text, kind)).collect();
        self.embed_mixed(&texts)
    }

    /// Embeds texts of different kinds in one pass, as [`Self::embed`] does
    /// texts of one kind (each text's vector is the same either way).
    pub fn embed_mixed(&self, texts: &[(&str, TextKind)]) -> Result<Vec<Embedding>, EmbedError> {
        let windows = self.windows(texts)?;
        let mut order: Vec<usize> = (0..windows.len()).collect();
        order.sort_by_key(|&i| windows[i].tokens.len());

        let hidden = self.dimension();
        let mut sums = vec![vec![0f32; hidden]; texts.len()];
        let mut start = 0;
        while start < order.len() {
            let end = self.batch_end(&windows, &order, start);
            let batch: Vec<Vec<u32>> = order[start..end]
                .iter()
                .map(|&i| windows[i].tokens.clone())
                .collect();
            let pooled = self.network.forward(&batch)?;
            for (&window_index, vector) in order[start..end].iter().zip(pooled) {
                let window = &windows[window_index];
                for (sum, value) in sums[window.text].iter_mut().zip(vector) {
                    *sum += window.weight * value;
                }
            }
            start = end;
        }
        Ok(sums.into_iter().map(normalise).collect())
    }

    /// Where the batch starting at `order[start]` ends: sequences are sorted by
    /// length, so the last one taken sets the padded length.
    fn batch_end(&self, windows: &[Window], order: &[usize], start: usize) -> usize {
        let mut end = start + 1;
        while end < order.len() && end - start < MAX_SEQUENCES_PER_FORWARD {
            let padded_len = windows[order[end]].tokens.len();
            if (end - start + 1) * padded_len > MAX_TOKENS_PER_FORWARD {
                break;
            }
            end += 1;
        }
        end
    }

    fn windows(&self, texts: &[(&str, TextKind)]) -> Result<Vec<Window>, EmbedError> {
        let (open, close) = self.tokenizer.boundary_ids();
        let content_per_window = self.network.max_positions() - 2;
        let mut windows = Vec::with_capacity(texts.len());
        for (text_index, &(text, kind)) in texts.iter().enumerate() {
            let content = self.token_ids(text, kind)?;
            if content.is_empty() {
                windows.push(Window {
                    text: text_index,
                    tokens: vec![open, close],
                    weight: 1.0,
                });
                continue;
            }
            for chunk in content.chunks(content_per_window) {
                let mut tokens = Vec::with_capacity(chunk.len() + 2);
                tokens.push(open);
                tokens.extend_from_slice(chunk);
                tokens.push(close);
                windows.push(Window {
                    text: text_index,
                    tokens,
                    weight: chunk.len() as f32,
                });
            }
        }
        Ok(windows)
    }

    fn load_e5s1(path: &Path, threads: usize) -> Result<Self, EmbedError> {
        let file = E5s1File::open(path)?;
        let header = file.header;
        let hidden = header.hidden;
        let encoder = Q4Encoder::load(&file, threads)?;
        let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            id: format!(
                "multilingual-e5-small/e5s1-q4_0/{}x{}/{file_len}/mean/e5-prefix",
                header.layers, hidden
            ),
            tokenizer: TextTokenizer::SentencePiece(SentencePieceTokenizer::from_e5s1(&file)?),
            network: Network::Q4(encoder),
            prefixes: Prefixes::e5(),
        })
    }

    fn load_hugging_face(dir: &Path) -> Result<Self, EmbedError> {
        let read_json = |path: PathBuf| -> Result<serde_json::Value, EmbedError> {
            let text = std::fs::read_to_string(&path).map_err(|source| EmbedError::Io {
                path: path.clone(),
                source,
            })?;
            serde_json::from_str(&text)
                .map_err(|error| EmbedError::format(format!("{}: {error}", path.display())))
        };
        let config = read_json(dir.join("config.json"))?;
        let number = |key: &str| -> Result<usize, EmbedError> {
            config
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .map(|n| n as usize)
                .ok_or_else(|| EmbedError::format(format!("config.json: missing {key}")))
        };
        let hidden = number("hidden_size")?;
        let heads = number("num_attention_heads")?;
        let layer_count = number("num_hidden_layers")?;
        let table_positions = number("max_position_embeddings")?;
        let eps = config
            .get("layer_norm_eps")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(1e-12);
        let model_type = config
            .get("model_type")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("bert");
        if let Some(act) = config.get("hidden_act").and_then(serde_json::Value::as_str)
            && act != "gelu"
        {
            return Err(EmbedError::format(format!("unsupported activation {act}")));
        }
        // RoBERTa-family checkpoints number positions from padding_idx + 1.
        let position_offset = if model_type.contains("roberta") {
            number("pad_token_id").unwrap_or(1) + 1
        } else {
            0
        };
        let pooling = match read_json(dir.join("1_Pooling/config.json")) {
            Ok(pooling)
                if pooling
                    .get("pooling_mode_cls_token")
                    .and_then(serde_json::Value::as_bool)
                    == Some(true) =>
            {
                Pooling::Cls
            }
            _ => Pooling::Mean,
        };

        let weights_path = dir.join("model.safetensors");
        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(&weights_path, &device)?;
        let get = |name: &str| -> Result<Tensor, EmbedError> {
            ["", "bert.", "roberta.", "model."]
                .iter()
                .find_map(|prefix| tensors.get(&format!("{prefix}{name}")))
                .map(|t| t.to_dtype(DType::F32))
                .transpose()?
                .ok_or_else(|| EmbedError::format(format!("model.safetensors: missing {name}")))
        };
        let linear =
            |name: &str| -> Result<Tensor, EmbedError> { Ok(get(name)?.t()?.contiguous()?) };

        let mut layers = Vec::with_capacity(layer_count);
        for l in 0..layer_count {
            let p = format!("encoder.layer.{l}.");
            let n = |suffix: &str| format!("{p}{suffix}");
            let dense = |weight: &str, bias: &str| -> Result<Linear, EmbedError> {
                Ok(Linear {
                    weight: linear(&n(weight))?,
                    bias: get(&n(bias))?,
                })
            };
            layers.push(LayerWeights {
                qkv: Linear {
                    weight: Tensor::cat(
                        &[
                            &linear(&n("attention.self.query.weight"))?,
                            &linear(&n("attention.self.key.weight"))?,
                            &linear(&n("attention.self.value.weight"))?,
                        ],
                        1,
                    )?
                    .contiguous()?,
                    bias: Tensor::cat(
                        &[
                            &get(&n("attention.self.query.bias"))?,
                            &get(&n("attention.self.key.bias"))?,
                            &get(&n("attention.self.value.bias"))?,
                        ],
                        0,
                    )?,
                },
                attention_out: dense(
                    "attention.output.dense.weight",
                    "attention.output.dense.bias",
                )?,
                attention_norm_weight: get(&n("attention.output.LayerNorm.weight"))?,
                attention_norm_bias: get(&n("attention.output.LayerNorm.bias"))?,
                ffn_in: dense("intermediate.dense.weight", "intermediate.dense.bias")?,
                ffn_out: dense("output.dense.weight", "output.dense.bias")?,
                output_norm_weight: get(&n("output.LayerNorm.weight"))?,
                output_norm_bias: get(&n("output.LayerNorm.bias"))?,
            });
        }
        let words = get("embeddings.word_embeddings.weight")?;
        let rows = words.dim(0)?;
        let words = WordTable {
            values: words.flatten_all()?.to_vec1::<f32>()?,
            rows,
        };
        let encoder = Encoder {
            shape: EncoderShape {
                hidden,
                heads,
                max_positions: table_positions - position_offset,
                position_offset,
                eps: eps as f32,
                pooling,
            },
            words,
            positions: get("embeddings.position_embeddings.weight")?,
            token_type: get("embeddings.token_type_embeddings.weight")?.get(0)?,
            embedding_norm_weight: get("embeddings.LayerNorm.weight")?,
            embedding_norm_bias: get("embeddings.LayerNorm.bias")?,
            layers,
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "checkpoint".to_owned());
        let weights_len = std::fs::metadata(&weights_path)
            .map(|m| m.len())
            .unwrap_or(0);
        let prefixes = Prefixes::for_checkpoint_name(&name);
        Ok(Self {
            id: format!(
                "{name}/hf-f32/{layer_count}x{hidden}/{weights_len}/{}/{}",
                match pooling {
                    Pooling::Mean => "mean",
                    Pooling::Cls => "cls",
                },
                if prefixes == Prefixes::default() {
                    "no-prefix"
                } else {
                    "prefix"
                }
            ),
            tokenizer: TextTokenizer::HuggingFace(HuggingFaceTokenizer::from_file(
                &dir.join("tokenizer.json"),
            )?),
            network: Network::Candle(encoder),
            prefixes,
        })
    }
}

/// L2-normalises a vector; an all-zero vector stays zero instead of becoming NaN.
fn normalise(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
    vector.iter_mut().for_each(|v| *v /= norm);
    vector
}
