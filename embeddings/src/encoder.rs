//! The BERT encoder forward pass on candle, for Hugging Face f32 checkpoints
//! (E5S1 files run on the Q4 engine in `q4/`).
//!
//! Post-LN BERT: embeddings (word + position + token type 0) and LayerNorm, then
//! per layer `x = LN(x + Attn(x))`, `x = LN(x + FFN(x))` with exact (erf) GELU.
//! Weights are stored transposed (`[in, out]`) for candle's gemm; Q, K and V
//! are fused into one projection so their input is read once.

use candle_core::{D, DType, Device, Tensor};

use crate::EmbedError;

/// How token vectors become one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over every token of the window, specials included (E5, MiniLM).
    Mean,
    /// The first token's vector (BGE).
    Cls,
}

/// Shape and numeric settings of an encoder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncoderShape {
    pub hidden: usize,
    pub heads: usize,
    pub max_positions: usize,
    /// First row of the position table to use (2 for RoBERTa-style checkpoints,
    /// whose positions start after the padding index; 0 otherwise).
    pub position_offset: usize,
    pub eps: f32,
    pub pooling: Pooling,
}

/// The word-embedding table, dense.
pub(crate) struct WordTable {
    pub values: Vec<f32>,
    pub rows: usize,
}

impl WordTable {
    fn copy_row(&self, row: usize, out: &mut [f32]) {
        let hidden = out.len();
        out.copy_from_slice(&self.values[row * hidden..(row + 1) * hidden]);
    }
}

/// A dense f32 linear layer, its weight stored `[in, out]`.
pub(crate) struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// One encoder layer's weights.
pub(crate) struct LayerWeights {
    /// Q, K and V fused into one projection of output size `3H`.
    pub qkv: Linear,
    pub attention_out: Linear,
    pub attention_norm_weight: Tensor,
    pub attention_norm_bias: Tensor,
    pub ffn_in: Linear,
    pub ffn_out: Linear,
    pub output_norm_weight: Tensor,
    pub output_norm_bias: Tensor,
}

/// A loaded encoder.
pub(crate) struct Encoder {
    pub shape: EncoderShape,
    pub words: WordTable,
    /// `[max_positions + position_offset, H]`
    pub positions: Tensor,
    /// `[H]`: token type 0, the only type single-text embedding uses.
    pub token_type: Tensor,
    pub embedding_norm_weight: Tensor,
    pub embedding_norm_bias: Tensor,
    pub layers: Vec<LayerWeights>,
}

impl Encoder {
    /// Runs the encoder on a batch of token sequences (specials included,
    /// each of 1..=`max_positions` ids below the table's rows, as
    /// `Network::forward` checks) and returns one pooled, *unnormalised*
    /// vector per sequence.
    pub(crate) fn forward(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        let shape = self.shape;
        let hidden = shape.hidden;
        let batch = sequences.len();
        let len = sequences.iter().map(Vec::len).max().unwrap_or(0).max(1);

        let mut embedded = vec![0f32; batch * len * hidden];
        let mut mask = vec![0f32; batch * len];
        for (i, sequence) in sequences.iter().enumerate() {
            for (t, &id) in sequence.iter().enumerate() {
                let row = (i * len + t) * hidden;
                self.words
                    .copy_row(id as usize, &mut embedded[row..row + hidden]);
                mask[i * len + t] = 1.0;
            }
        }
        let device = Device::Cpu;
        let x = Tensor::from_vec(embedded, (batch, len, hidden), &device)?;
        let x = x
            .broadcast_add(&self.positions.narrow(0, shape.position_offset, len)?)?
            .broadcast_add(&self.token_type)?;
        let mut x = candle_nn::ops::layer_norm(
            &x,
            &self.embedding_norm_weight,
            &self.embedding_norm_bias,
            shape.eps,
        )?
        .reshape((batch * len, hidden))?;

        let mask = Tensor::from_vec(mask, (batch, len), &device)?;
        // Padding keys get a large negative score so softmax gives them ~0 weight;
        // a single-sequence batch has no padding and skips the add entirely.
        let attention_bias = if batch > 1 {
            Some(((mask.clone() - 1.0)? * 1e9)?.reshape((batch, 1, 1, len))?)
        } else {
            None
        };
        let head_dim = hidden / shape.heads;
        let scale = 1.0 / (head_dim as f64).sqrt();
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?;
            let split_heads = |index: usize| -> candle_core::Result<Tensor> {
                qkv.narrow(1, index * hidden, hidden)?
                    .reshape((batch, len, shape.heads, head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (split_heads(0)?, split_heads(1)?, split_heads(2)?);
            let mut scores = (q.matmul(&k.t()?)? * scale)?;
            if let Some(bias) = &attention_bias {
                scores = scores.broadcast_add(bias)?;
            }
            let probabilities = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probabilities
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((batch * len, hidden))?;
            let attention = layer.attention_out.forward(&context)?;
            x = candle_nn::ops::layer_norm(
                &(x + attention)?,
                &layer.attention_norm_weight,
                &layer.attention_norm_bias,
                shape.eps,
            )?;
            let inner = layer.ffn_in.forward(&x)?.gelu_erf()?;
            let ffn = layer.ffn_out.forward(&inner)?;
            x = candle_nn::ops::layer_norm(
                &(x + ffn)?,
                &layer.output_norm_weight,
                &layer.output_norm_bias,
                shape.eps,
            )?;
        }

        let x = x.reshape((batch, len, hidden))?;
        let pooled = match shape.pooling {
            Pooling::Cls => x.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let counts = mask.sum_keepdim(1)?;
                x.broadcast_mul(&mask.unsqueeze(D::Minus1)?)?
                    .sum(1)?
                    .broadcast_div(&counts)?
            }
        };
        Ok(pooled.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }
}
