//! The E5S1 encoder: post-LN BERT with Q4_0 weights, on a team of threads
//! that split the tokens.
//!
//! Why not candle tensors here, as for Hugging Face checkpoints: at a query's
//! ~15 tokens every candle op is a small allocation and a dispatch, a forward
//! is ~250 of them, and candle's Q4_0 kernels re-unpack nibbles on every
//! call; the projections are better served by the panel kernel in
//! `kernel.rs`, and everything between them is cheap enough to write as
//! plain loops over preallocated buffers.
//!
//! Work is split by tokens, not by output rows. The tokens of all texts in a
//! batch are concatenated (no padding; attention is restricted to each
//! text's own tokens, as the reference does) and each worker owns a
//! contiguous range of them: it embeds them, and every projection,
//! LayerNorm, GELU and quantisation of its tokens is its own business. The
//! only exchange is attention, which needs the keys and values of every
//! token of a text: each layer's fused Q/K/V output is one shared buffer,
//! and one barrier per layer separates writing it from reading it. Splitting
//! by output rows instead would need a barrier after every projection (about
//! seven per layer) and was what kept the previous engine's second thread
//! idle. The price is that every worker streams all weights (21 MB, from the
//! shared L3 cache) per forward, which the measurements say is cheap.

mod kernel;
mod math;
mod team;

use std::ops::Range;

use crate::EmbedError;
use crate::e5s1::{E5s1File, Q4Rows, StoredDType};
use kernel::{Activation, PanelLinear, QuantizedRows};
use team::{SharedRows, SpinBarrier, WorkerFailed};

/// LayerNorm parameters.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// One encoder layer.
struct Layer {
    /// Q, K and V stacked: output `[3H]`, read by attention from a shared buffer.
    qkv: PanelLinear,
    attention_out: PanelLinear,
    attention_norm: Norm,
    ffn_in: PanelLinear,
    ffn_out: PanelLinear,
    output_norm: Norm,
}

/// A loaded E5S1 encoder.
pub(crate) struct Q4Encoder {
    hidden: usize,
    heads: usize,
    max_positions: usize,
    eps: f32,
    words: Q4Rows,
    /// `[max_positions, H]`
    positions: Vec<f32>,
    /// `[H]`: token type 0, the only one single-text embedding uses.
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    threads: usize,
}

/// The texts of one forward, concatenated.
struct Batch {
    ids: Vec<u32>,
    /// Position of each token within its own text.
    positions: Vec<usize>,
    /// Which text each token belongs to.
    segment_of: Vec<usize>,
    /// Token range of each text.
    segments: Vec<Range<usize>>,
}

impl Batch {
    fn new(sequences: &[Vec<u32>]) -> Self {
        let total = sequences.iter().map(Vec::len).sum();
        let mut batch = Self {
            ids: Vec::with_capacity(total),
            positions: Vec::with_capacity(total),
            segment_of: Vec::with_capacity(total),
            segments: Vec::with_capacity(sequences.len()),
        };
        for (segment, sequence) in sequences.iter().enumerate() {
            let start = batch.ids.len();
            batch.ids.extend_from_slice(sequence);
            batch.positions.extend(0..sequence.len());
            batch
                .segment_of
                .extend(std::iter::repeat_n(segment, sequence.len()));
            batch.segments.push(start..batch.ids.len());
        }
        batch
    }

    fn tokens(&self) -> usize {
        self.ids.len()
    }
}

/// How the workers of a forward get the keys and values of tokens they do
/// not own.
enum Exchange<'a> {
    /// Every text lies within one worker's tokens: nothing to exchange.
    None,
    /// Texts span workers: each layer's Q/K/V rows go through two alternating
    /// shared buffers, written before and read after one barrier per layer.
    Shared {
        buffers: &'a [SharedRows<'a>; 2],
        barrier: &'a SpinBarrier,
    },
}

/// Token ranges for `workers` workers that cut only between texts, each
/// within half the longest text of an even split, or `None` when the texts
/// are too few or too uneven for that.
fn split_at_text_boundaries(batch: &Batch, workers: usize) -> Option<Vec<Range<usize>>> {
    if workers <= 1 {
        return Some(std::iter::once(0..batch.tokens()).collect());
    }
    if batch.segments.len() < workers {
        return None;
    }
    let total = batch.tokens();
    let longest = batch.segments.iter().map(Range::len).max().unwrap_or(0);
    let mut cuts = vec![0];
    for worker in 1..workers {
        let ideal = total * worker / workers;
        // The text boundary nearest to the even cut.
        let cut = batch
            .segments
            .iter()
            .map(|segment| segment.start)
            .min_by_key(|start| start.abs_diff(ideal))
            .unwrap_or(0);
        if cut <= *cuts.last().unwrap_or(&0) || cut.abs_diff(ideal) > longest / 2 {
            return None;
        }
        cuts.push(cut);
    }
    cuts.push(total);
    Some(cuts.windows(2).map(|pair| pair[0]..pair[1]).collect())
}

/// What one worker hands back: the sums of its tokens' final hidden states
/// per text, for texts `first_segment..first_segment + sums.len() / H`.
struct PartialPool {
    first_segment: usize,
    sums: Vec<f32>,
}

impl Q4Encoder {
    /// Reads the weights of an E5S1 file into panel layout; forwards use
    /// `threads` workers.
    pub(crate) fn load(file: &E5s1File, threads: usize) -> Result<Self, EmbedError> {
        let header = file.header;
        let (hidden, ffn) = (header.hidden, header.ffn);
        if header.heads == 0 || hidden % header.heads != 0 {
            return Err(EmbedError::format(format!(
                "hidden size {hidden} is not a multiple of {} heads",
                header.heads
            )));
        }
        let vector = |name: &str, len: usize| file.f32_values(name, len);
        let norm = |prefix: &str| -> Result<Norm, EmbedError> {
            Ok(Norm {
                weight: vector(&format!("{prefix}.w"), hidden)?,
                bias: vector(&format!("{prefix}.b"), hidden)?,
            })
        };
        let linear = |name: &str,
                      out_dim: usize,
                      in_dim: usize|
         -> Result<PanelLinear, EmbedError> {
            let weight = file.tensor(&format!("{name}.w"), StoredDType::Q4_0, out_dim * in_dim)?;
            let bias = vector(&format!("{name}.b"), out_dim)?;
            PanelLinear::from_q4_0(file.bytes(weight), out_dim, in_dim, bias).map_err(|shape| {
                EmbedError::format(format!(
                    "{name}: a {}×{} layer does not fit the kernel (rows must be a multiple of 8, inputs of 32)",
                    shape.out_dim, shape.in_dim
                ))
            })
        };
        let mut layers = Vec::with_capacity(header.layers);
        for l in 0..header.layers {
            let name = |suffix: &str| format!("l{l}.{suffix}");
            layers.push(Layer {
                qkv: PanelLinear::stack(vec![
                    linear(&name("q"), hidden, hidden)?,
                    linear(&name("k"), hidden, hidden)?,
                    linear(&name("v"), hidden, hidden)?,
                ]),
                attention_out: linear(&name("ao"), hidden, hidden)?,
                attention_norm: norm(&name("aln"))?,
                ffn_in: linear(&name("fi"), ffn, hidden)?,
                ffn_out: linear(&name("fo"), hidden, ffn)?,
                output_norm: norm(&name("oln"))?,
            });
        }
        let token_types = vector("emb.type", header.type_vocab * hidden)?;
        Ok(Self {
            hidden,
            heads: header.heads,
            max_positions: header.max_positions,
            eps: header.eps as f32,
            words: Q4Rows::new(file, "emb.word", header.vocab_rows, hidden)?,
            positions: vector("emb.pos", header.max_positions * hidden)?,
            token_type: token_types[..hidden].to_vec(),
            embedding_norm: norm("emb.ln")?,
            layers,
            threads: threads.max(1),
        })
    }

    pub(crate) fn hidden(&self) -> usize {
        self.hidden
    }

    pub(crate) fn max_positions(&self) -> usize {
        self.max_positions
    }

    pub(crate) fn vocab_rows(&self) -> usize {
        self.words.rows()
    }

    pub(crate) fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// Runs the encoder on token sequences (specials included, each of
    /// 1..=`max_positions` ids below the table's rows, as `Network::forward`
    /// checks) and returns one mean-pooled, *unnormalised* vector per
    /// sequence.
    pub(crate) fn forward(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        let batch = Batch::new(sequences);
        let workers = self.threads.min(batch.tokens());
        // Several texts split at text boundaries make independent workers;
        // one text (a query) is split mid-text and its workers exchange keys
        // and values once per layer.
        let (ranges, exchange) = match split_at_text_boundaries(&batch, workers) {
            Some(ranges) => (ranges, false),
            None => (team::split(batch.tokens(), workers), true),
        };
        let row_len = 3 * self.hidden;
        let shared_len = if exchange {
            batch.tokens() * row_len
        } else {
            0
        };
        let mut qkv_even = vec![0f32; shared_len];
        let mut qkv_odd = vec![0f32; shared_len];
        let shared = [
            SharedRows::new(&mut qkv_even, row_len),
            SharedRows::new(&mut qkv_odd, row_len),
        ];
        let barrier = SpinBarrier::new(ranges.len());
        let exchange = if exchange {
            Exchange::Shared {
                buffers: &shared,
                barrier: &barrier,
            }
        } else {
            Exchange::None
        };
        let partials = team::run(&ranges, &barrier, |range| {
            if kernel::avx2_available() {
                // SAFETY: AVX2 and FMA were detected at run time.
                unsafe { self.work_avx2(&batch, range, &exchange) }
            } else {
                self.work(&batch, range, &exchange)
            }
        })
        .map_err(|failure| EmbedError::BatchFailed(failure.to_string()))?;

        let mut pooled = vec![vec![0f32; self.hidden]; sequences.len()];
        for partial in partials {
            for (offset, sums) in partial.sums.chunks_exact(self.hidden).enumerate() {
                for (total, value) in pooled[partial.first_segment + offset].iter_mut().zip(sums) {
                    *total += value;
                }
            }
        }
        for (vector, segment) in pooled.iter_mut().zip(&batch.segments) {
            let inverse = 1.0 / segment.len() as f32;
            vector.iter_mut().for_each(|v| *v *= inverse);
        }
        Ok(pooled)
    }

    /// [`Q4Encoder::work`] compiled for AVX2 and FMA, so that attention,
    /// LayerNorm and quantisation vectorise eight floats at a time.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
    unsafe fn work_avx2(
        &self,
        batch: &Batch,
        range: Range<usize>,
        exchange: &Exchange<'_>,
    ) -> Result<PartialPool, WorkerFailed> {
        self.work(batch, range, exchange)
    }

    /// One worker's share of a forward: tokens `range` through every layer.
    ///
    /// With [`Exchange::Shared`], layer `l` writes its Q/K/V rows into
    /// `buffers[l % 2]`. Alternating buffers is what makes one barrier per
    /// layer enough: a worker that runs ahead into layer `l + 1` writes the
    /// other buffer, and it cannot reach layer `l + 2` (this buffer again)
    /// before every worker has passed layer `l + 1`'s barrier, that is,
    /// finished its reads of layer `l`.
    #[inline(always)]
    fn work(
        &self,
        batch: &Batch,
        range: Range<usize>,
        exchange: &Exchange<'_>,
    ) -> Result<PartialPool, WorkerFailed> {
        let hidden = self.hidden;
        let ffn = self.layers.first().map_or(0, |l| l.ffn_in.out_dim());
        let tokens = range.len();
        let mut x = vec![0f32; tokens * hidden];
        for (row, token) in x.chunks_exact_mut(hidden).zip(range.clone()) {
            self.words.dequantize_row(batch.ids[token] as usize, row);
            let position = &self.positions[batch.positions[token] * hidden..][..hidden];
            for ((value, position), token_type) in
                row.iter_mut().zip(position).zip(&self.token_type)
            {
                *value += position + token_type;
            }
            math::layer_norm(
                row,
                &self.embedding_norm.weight,
                &self.embedding_norm.bias,
                self.eps,
            );
        }

        let mut quantized_hidden = QuantizedRows::new(tokens, hidden);
        let mut quantized_ffn = QuantizedRows::new(tokens, ffn);
        let mut context = vec![0f32; tokens * hidden];
        let mut projected = vec![0f32; tokens * hidden];
        let mut inner = vec![0f32; tokens * ffn];
        let longest = batch.segments.iter().map(Range::len).max().unwrap_or(0);
        let mut scores = vec![0f32; longest];
        let row_len = 3 * hidden;
        let mut own_qkv = match exchange {
            Exchange::Shared { .. } => Vec::new(),
            Exchange::None => vec![0f32; tokens * row_len],
        };
        for (index, layer) in self.layers.iter().enumerate() {
            quantized_hidden.quantize(&x);
            match exchange {
                Exchange::Shared { buffers, barrier } => {
                    let qkv = &buffers[index % 2];
                    // SAFETY: these rows are this worker's alone, and no
                    // worker reads this buffer before the barrier below (see
                    // the doc comment).
                    let own_rows = unsafe { qkv.rows_mut(range.clone()) };
                    layer
                        .qkv
                        .forward(&quantized_hidden, own_rows, Activation::None);
                    barrier.wait()?;
                    // SAFETY: every worker has written its rows and passed the
                    // barrier; nobody writes this buffer again until every
                    // worker, this one included, has passed the next layer's
                    // barrier.
                    let all_rows = unsafe { qkv.all() };
                    self.attention(batch, range.clone(), all_rows, 0, &mut context, &mut scores);
                }
                Exchange::None => {
                    layer
                        .qkv
                        .forward(&quantized_hidden, &mut own_qkv, Activation::None);
                    self.attention(
                        batch,
                        range.clone(),
                        &own_qkv,
                        range.start,
                        &mut context,
                        &mut scores,
                    );
                }
            }

            quantized_hidden.quantize(&context);
            layer
                .attention_out
                .forward(&quantized_hidden, &mut projected, Activation::None);
            self.add_layer_norm_rows(&mut x, &projected, &layer.attention_norm);

            quantized_hidden.quantize(&x);
            layer
                .ffn_in
                .forward(&quantized_hidden, &mut inner, Activation::Gelu);
            quantized_ffn.quantize(&inner);
            layer
                .ffn_out
                .forward(&quantized_ffn, &mut projected, Activation::None);
            self.add_layer_norm_rows(&mut x, &projected, &layer.output_norm);
        }

        let first_segment = batch.segment_of[range.start];
        let last_segment = batch.segment_of[range.end - 1];
        let mut sums = vec![0f32; (last_segment - first_segment + 1) * hidden];
        for (row, token) in x.chunks_exact(hidden).zip(range) {
            let segment = batch.segment_of[token] - first_segment;
            for (sum, value) in sums[segment * hidden..][..hidden].iter_mut().zip(row) {
                *sum += value;
            }
        }
        Ok(PartialPool {
            first_segment,
            sums,
        })
    }

    /// `x = LayerNorm(x + residual)`, token by token.
    #[inline(always)]
    fn add_layer_norm_rows(&self, x: &mut [f32], residual: &[f32], norm: &Norm) {
        let rows = x.chunks_exact_mut(self.hidden);
        for (row, residual) in rows.zip(residual.chunks_exact(self.hidden)) {
            math::add_layer_norm(row, residual, &norm.weight, &norm.bias, self.eps);
        }
    }

    /// Scaled dot-product attention of tokens `range` over their own text's
    /// tokens; `qkv` holds the `[Q | K | V]` rows of tokens `first_row..`,
    /// every token of those texts included.
    #[inline(always)]
    fn attention(
        &self,
        batch: &Batch,
        range: Range<usize>,
        qkv: &[f32],
        first_row: usize,
        context: &mut [f32],
        scores: &mut [f32],
    ) {
        let hidden = self.hidden;
        let head_dim = hidden / self.heads;
        let row_len = 3 * hidden;
        let scale = 1.0 / (head_dim as f32).sqrt();
        for (out, token) in context.chunks_exact_mut(hidden).zip(range) {
            let segment = &batch.segments[batch.segment_of[token]];
            let scores = &mut scores[..segment.len()];
            for head in 0..self.heads {
                let column = head * head_dim;
                let query = &qkv[(token - first_row) * row_len + column..][..head_dim];
                for (score, key_token) in scores.iter_mut().zip(segment.clone()) {
                    let key =
                        &qkv[(key_token - first_row) * row_len + hidden + column..][..head_dim];
                    *score = math::dot(query, key) * scale;
                }
                math::softmax(scores);
                let out = &mut out[column..column + head_dim];
                out.fill(0.0);
                for (weight, value_token) in scores.iter().zip(segment.clone()) {
                    let value = &qkv[(value_token - first_row) * row_len + 2 * hidden + column..]
                        [..head_dim];
                    math::add_scaled(out, value, *weight);
                }
            }
        }
    }
}
