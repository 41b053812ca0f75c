//! Integer linear layers for Q4_0 weights: the hot path of the E5S1 model.
//!
//! Why not candle's own kernels: candle's `QMatMul` for Q4_0 re-unpacks the
//! nibbles of every weight block on every call and ran about 2× slower than the
//! reference engine per query; dequantising to f32 and using gemm ran at ~9
//! GMAC/s on this machine's two cores, 1.8× slower than the reference. Here the
//! weights are unpacked once at load into bytes 0..=15 (21 MB for the whole
//! model instead of 85 MB of f32), activations are quantised per 32-value block
//! to int8 with one scale (GGML's Q8_0), and each block's dot product is four
//! AVX2 instructions on 32 pairs (`maddubs` → `sub` → `madd` → `fmadd`). The
//! arithmetic is the reference engine's, so vectors match it closely.
//!
//! The `-8` offset of Q4_0 nibbles is folded in per block as
//! `maddubs(w, a) - maddubs(8, a)`, computed once per activation block and
//! reused for every weight row, instead of a scalar correction per row.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use rayon::prelude::*;

use crate::e5s1::{Q4_BLOCK_BYTES, Q4_BLOCK_ELEMS};

/// A linear layer `y = x·Wᵀ + b` with Q4_0 weights unpacked to bytes.
pub(crate) struct Int8Linear {
    out_dim: usize,
    in_dim: usize,
    /// `[out_dim, in_dim]`, each byte a Q4_0 nibble (0..=15, meaning nibble − 8).
    nibbles: Vec<u8>,
    /// `[out_dim, in_dim / 32]` block scales.
    scales: Vec<f32>,
    bias: Vec<f32>,
}

/// Output rows computed together, so each activation block loaded is used four times.
const ROWS_PER_GROUP: usize = 4;

impl Int8Linear {
    /// Builds a layer from row-major Q4_0 blocks (`out_dim` rows of
    /// `in_dim / 32` blocks) and its bias.
    pub(crate) fn from_q4_0(blocks: &[u8], out_dim: usize, in_dim: usize, bias: Vec<f32>) -> Self {
        debug_assert_eq!(in_dim % Q4_BLOCK_ELEMS, 0);
        debug_assert_eq!(
            blocks.len(),
            out_dim * in_dim / Q4_BLOCK_ELEMS * Q4_BLOCK_BYTES
        );
        let mut nibbles = vec![0u8; out_dim * in_dim];
        let mut scales = Vec::with_capacity(out_dim * in_dim / Q4_BLOCK_ELEMS);
        for (block, out) in blocks
            .chunks_exact(Q4_BLOCK_BYTES)
            .zip(nibbles.chunks_exact_mut(Q4_BLOCK_ELEMS))
        {
            scales.push(half::f16::from_le_bytes([block[0], block[1]]).to_f32());
            for (j, byte) in block[2..].iter().enumerate() {
                out[j] = byte & 0x0f;
                out[j + 16] = byte >> 4;
            }
        }
        Self {
            out_dim,
            in_dim,
            nibbles,
            scales,
            bias,
        }
    }

    /// Concatenates layers with the same input size along the output dimension
    /// (Q, K and V become one projection that quantises its input once).
    pub(crate) fn concat(layers: Vec<Int8Linear>) -> Self {
        let in_dim = layers.first().map_or(0, |l| l.in_dim);
        let mut fused = Self {
            out_dim: 0,
            in_dim,
            nibbles: Vec::new(),
            scales: Vec::new(),
            bias: Vec::new(),
        };
        for layer in layers {
            debug_assert_eq!(layer.in_dim, in_dim);
            fused.out_dim += layer.out_dim;
            fused.nibbles.extend(layer.nibbles);
            fused.scales.extend(layer.scales);
            fused.bias.extend(layer.bias);
        }
        fused
    }

    /// `x` is `[tokens, in_dim]` row-major; returns `[tokens, out_dim]`,
    /// passed through exact GELU when `gelu` is set (fused here so the
    /// activation runs on every worker instead of afterwards on one).
    pub(crate) fn forward(&self, x: &[f32], gelu: bool) -> Vec<f32> {
        let tokens = x.len() / self.in_dim;
        let activations = QuantizedActivations::new(x, tokens, self.in_dim);
        let groups = self.out_dim.div_ceil(ROWS_PER_GROUP);
        // Each rayon task computes a contiguous range of output rows for every
        // token, into its own buffer; the buffers are interleaved afterwards.
        let tasks = rayon::current_num_threads().max(1) * 2;
        let groups_per_task = groups.div_ceil(tasks).max(1);
        let parts: Vec<(usize, usize, Vec<f32>)> = (0..groups)
            .step_by(groups_per_task)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|first_group| {
                let row_start = first_group * ROWS_PER_GROUP;
                let row_end = ((first_group + groups_per_task) * ROWS_PER_GROUP).min(self.out_dim);
                let rows = row_end - row_start;
                let mut part = vec![0f32; tokens * rows];
                self.compute_rows(&activations, row_start, row_end, &mut part);
                if gelu {
                    part.iter_mut().for_each(|v| *v = gelu_erf(*v));
                }
                (row_start, rows, part)
            })
            .collect();
        let mut y = vec![0f32; tokens * self.out_dim];
        for (row_start, rows, part) in parts {
            for t in 0..tokens {
                y[t * self.out_dim + row_start..t * self.out_dim + row_start + rows]
                    .copy_from_slice(&part[t * rows..(t + 1) * rows]);
            }
        }
        y
    }

    /// Fills `out` (`[tokens, row_end - row_start]`) with rows `row_start..row_end`.
    fn compute_rows(
        &self,
        a: &QuantizedActivations,
        row_start: usize,
        row_end: usize,
        out: &mut [f32],
    ) {
        let rows = row_end - row_start;
        let blocks = self.in_dim / Q4_BLOCK_ELEMS;
        let mut row = row_start;
        while row < row_end {
            let group = (row_end - row).min(ROWS_PER_GROUP);
            let mut t = 0;
            while t < a.tokens {
                let pair = a.tokens - t >= 2;
                let mut sums = [[0f32; ROWS_PER_GROUP]; 2];
                if group == ROWS_PER_GROUP && simd::available() {
                    // SAFETY: AVX2 and FMA were detected at run time; the four rows
                    // and the token(s) exist, each with `blocks` blocks.
                    unsafe {
                        if pair {
                            sums = simd::dot_four_rows_two_tokens(self, a, row, t, blocks);
                        } else {
                            sums[0] = simd::dot_four_rows(self, a, row, t, blocks);
                        }
                    }
                } else {
                    for (k, token_sums) in
                        sums.iter_mut().enumerate().take(if pair { 2 } else { 1 })
                    {
                        for (r, sum) in token_sums.iter_mut().enumerate().take(group) {
                            *sum = scalar_dot(self, a, row + r, t + k, blocks);
                        }
                    }
                }
                for (k, token_sums) in sums.iter().enumerate().take(if pair { 2 } else { 1 }) {
                    for r in 0..group {
                        out[(t + k) * rows + (row - row_start) + r] =
                            token_sums[r] + self.bias[row + r];
                    }
                }
                t += if pair { 2 } else { 1 };
            }
            row += group;
        }
    }
}

/// Activations quantised per 32-value block to int8 (GGML's Q8_0).
struct QuantizedActivations {
    tokens: usize,
    /// `[tokens, in_dim]`
    values: Vec<i8>,
    /// `[tokens, in_dim / 32]`
    scales: Vec<f32>,
    /// `[tokens, in_dim / 32]`: Σ of the block's int8 values, for the −8 offset.
    sums: Vec<i32>,
}

impl QuantizedActivations {
    fn new(x: &[f32], tokens: usize, in_dim: usize) -> Self {
        let blocks = tokens * in_dim / Q4_BLOCK_ELEMS;
        let mut values = vec![0i8; tokens * in_dim];
        let mut scales = Vec::with_capacity(blocks);
        let mut sums = Vec::with_capacity(blocks);
        for (block, out) in x
            .chunks_exact(Q4_BLOCK_ELEMS)
            .zip(values.chunks_exact_mut(Q4_BLOCK_ELEMS))
        {
            let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = max / 127.0;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (q, v) in out.iter_mut().zip(block) {
                let quantised = round_half_even(v * inverse).clamp(-128.0, 127.0) as i8;
                *q = quantised;
                sum += i32::from(quantised);
            }
            scales.push(scale);
            sums.push(sum);
        }
        Self {
            tokens,
            values,
            scales,
            sums,
        }
    }
}

/// Exact GELU, `x·Φ(x)`, as BERT and the reference engine compute it.
#[inline]
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Rounds half to even, as the reference's `lrintf` does, without a libm call
/// (the baseline x86-64 target has no rounding instruction, so
/// `f32::round_ties_even` becomes a call to `rintf`): adding and subtracting
/// 1.5·2²³ leaves the nearest integer for |x| < 2²², and activations here are
/// scaled into [−127, 127].
#[inline]
fn round_half_even(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (x + SHIFT) - SHIFT
}

fn scalar_dot(
    layer: &Int8Linear,
    a: &QuantizedActivations,
    row: usize,
    token: usize,
    blocks: usize,
) -> f32 {
    let w = &layer.nibbles[row * layer.in_dim..(row + 1) * layer.in_dim];
    let x = &a.values[token * layer.in_dim..(token + 1) * layer.in_dim];
    let mut total = 0f32;
    for b in 0..blocks {
        let range = b * Q4_BLOCK_ELEMS..(b + 1) * Q4_BLOCK_ELEMS;
        let dot: i32 = w[range.clone()]
            .iter()
            .zip(&x[range])
            .map(|(w, x)| i32::from(*w) * i32::from(*x))
            .sum();
        let corrected = dot - 8 * a.sums[token * blocks + b];
        total += layer.scales[row * blocks + b] * a.scales[token * blocks + b] * corrected as f32;
    }
    total
}

mod simd {
    use super::{Int8Linear, QuantizedActivations, ROWS_PER_GROUP};
    use crate::e5s1::Q4_BLOCK_ELEMS;

    pub(super) fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn dot_four_rows_two_tokens(
        _: &Int8Linear,
        _: &QuantizedActivations,
        _: usize,
        _: usize,
        _: usize,
    ) -> [[f32; ROWS_PER_GROUP]; 2] {
        unreachable!("available() is false off x86_64")
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn dot_four_rows(
        _: &Int8Linear,
        _: &QuantizedActivations,
        _: usize,
        _: usize,
        _: usize,
    ) -> [f32; ROWS_PER_GROUP] {
        unreachable!("available() is false off x86_64")
    }

    /// Dot products of rows `row..row + 4` with token `token`, scaled, without bias.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `row + 4 <= out_dim`, `token < tokens`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_four_rows(
        layer: &Int8Linear,
        a: &QuantizedActivations,
        row: usize,
        token: usize,
        blocks: usize,
    ) -> [f32; ROWS_PER_GROUP] {
        use std::arch::x86_64::*;
        let in_dim = layer.in_dim;
        let x = a.values[token * in_dim..].as_ptr();
        let x_scales = &a.scales[token * blocks..(token + 1) * blocks];
        let w = layer.nibbles[row * in_dim..].as_ptr();
        let w_scales = &layer.scales[row * blocks..(row + ROWS_PER_GROUP) * blocks];
        let ones = _mm256_set1_epi16(1);
        let eights = _mm256_set1_epi8(8);
        let mut acc = [_mm256_setzero_ps(); ROWS_PER_GROUP];
        for b in 0..blocks {
            // SAFETY: every block offset lies inside the token's and the rows' slices.
            unsafe {
                let xv = _mm256_loadu_si256(x.add(b * Q4_BLOCK_ELEMS).cast());
                let offset = _mm256_maddubs_epi16(eights, xv);
                let x_scale = *x_scales.get_unchecked(b);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let wv = _mm256_loadu_si256(w.add(r * in_dim + b * Q4_BLOCK_ELEMS).cast());
                    let pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(wv, xv), offset);
                    let dots = _mm256_madd_epi16(pairs, ones);
                    let scale = _mm256_set1_ps(*w_scales.get_unchecked(r * blocks + b) * x_scale);
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), scale, *acc);
                }
            }
        }
        acc.map(|v| horizontal_sum(v))
    }

    /// As [`dot_four_rows`] for tokens `token` and `token + 1`: each weight
    /// block loaded serves two tokens.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `row + 4 <= out_dim`, `token + 1 < tokens`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_four_rows_two_tokens(
        layer: &Int8Linear,
        a: &QuantizedActivations,
        row: usize,
        token: usize,
        blocks: usize,
    ) -> [[f32; ROWS_PER_GROUP]; 2] {
        use std::arch::x86_64::*;
        let in_dim = layer.in_dim;
        let x0 = a.values[token * in_dim..].as_ptr();
        let x1 = a.values[(token + 1) * in_dim..].as_ptr();
        let x_scales0 = &a.scales[token * blocks..(token + 1) * blocks];
        let x_scales1 = &a.scales[(token + 1) * blocks..(token + 2) * blocks];
        let w = layer.nibbles[row * in_dim..].as_ptr();
        let w_scales = &layer.scales[row * blocks..(row + ROWS_PER_GROUP) * blocks];
        let ones = _mm256_set1_epi16(1);
        let eights = _mm256_set1_epi8(8);
        let mut acc0 = [_mm256_setzero_ps(); ROWS_PER_GROUP];
        let mut acc1 = [_mm256_setzero_ps(); ROWS_PER_GROUP];
        for b in 0..blocks {
            // SAFETY: every block offset lies inside the tokens' and the rows' slices.
            unsafe {
                let xv0 = _mm256_loadu_si256(x0.add(b * Q4_BLOCK_ELEMS).cast());
                let xv1 = _mm256_loadu_si256(x1.add(b * Q4_BLOCK_ELEMS).cast());
                let offset0 = _mm256_maddubs_epi16(eights, xv0);
                let offset1 = _mm256_maddubs_epi16(eights, xv1);
                let xs0 = _mm256_set1_ps(*x_scales0.get_unchecked(b));
                let xs1 = _mm256_set1_ps(*x_scales1.get_unchecked(b));
                for r in 0..ROWS_PER_GROUP {
                    let wv = _mm256_loadu_si256(w.add(r * in_dim + b * Q4_BLOCK_ELEMS).cast());
                    let ws = _mm256_set1_ps(*w_scales.get_unchecked(r * blocks + b));
                    let dots0 = _mm256_madd_epi16(
                        _mm256_sub_epi16(_mm256_maddubs_epi16(wv, xv0), offset0),
                        ones,
                    );
                    let dots1 = _mm256_madd_epi16(
                        _mm256_sub_epi16(_mm256_maddubs_epi16(wv, xv1), offset1),
                        ones,
                    );
                    acc0[r] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots0), _mm256_mul_ps(ws, xs0), acc0[r]);
                    acc1[r] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots1), _mm256_mul_ps(ws, xs1), acc1[r]);
                }
            }
        }
        [
            acc0.map(|v| horizontal_sum(v)),
            acc1.map(|v| horizontal_sum(v)),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn horizontal_sum(v: std::arch::x86_64::__m256) -> f32 {
        use std::arch::x86_64::*;
        let high = _mm256_extractf128_ps(v, 1);
        let low = _mm256_castps256_ps128(v);
        let sum = _mm_add_ps(high, low);
        let sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
        let sum = _mm_add_ss(sum, _mm_shuffle_ps(sum, sum, 1));
        _mm_cvtss_f32(sum)
    }
}

/// [`Int8Linear`] as a candle op, optionally followed by GELU.
pub(crate) struct Int8Op<'a> {
    pub layer: &'a Int8Linear,
    pub gelu: bool,
}

impl CustomOp1 for Int8Op<'_> {
    fn name(&self) -> &'static str {
        "int8-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let layer = self.layer;
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("int8-linear takes f32 input");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("int8-linear takes contiguous input");
        };
        let dims = layout.shape().dims();
        if dims.last() != Some(&layer.in_dim) {
            candle_core::bail!(
                "int8-linear expects last dimension {}, got {dims:?}",
                layer.in_dim
            );
        }
        let y = layer.forward(&data[start..end], self.gelu);
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = layer.out_dim;
        }
        Ok((CpuStorage::F32(y), Shape::from(out_dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q4_0 blocks for a deterministic pseudo-random `[out, in]` matrix, and the
    /// matrix they decode to.
    fn random_q4(out_dim: usize, in_dim: usize, seed: u32) -> (Vec<u8>, Vec<f32>) {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state >> 8
        };
        let mut bytes = Vec::new();
        let mut dense = Vec::new();
        for _ in 0..out_dim * in_dim / 32 {
            let scale = half::f16::from_f32(0.01 + (next() % 100) as f32 / 1000.0);
            bytes.extend_from_slice(&scale.to_le_bytes());
            let nibbles: Vec<u8> = (0..32).map(|_| (next() % 16) as u8).collect();
            for j in 0..16 {
                bytes.push(nibbles[j] | (nibbles[j + 16] << 4));
            }
            dense.extend(
                nibbles
                    .iter()
                    .map(|n| (f32::from(*n) - 8.0) * scale.to_f32()),
            );
        }
        (bytes, dense)
    }

    #[test]
    fn matches_a_float_matmul_of_the_quantised_operands() {
        let (out_dim, in_dim, tokens) = (10, 64, 3);
        let (bytes, dense) = random_q4(out_dim, in_dim, 7);
        let bias: Vec<f32> = (0..out_dim).map(|i| i as f32 * 0.1).collect();
        let layer = Int8Linear::from_q4_0(&bytes, out_dim, in_dim, bias.clone());
        let x: Vec<f32> = (0..tokens * in_dim)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let quantised = QuantizedActivations::new(&x, tokens, in_dim);
        let y = layer.forward(&x, false);
        for t in 0..tokens {
            for r in 0..out_dim {
                let exact: f32 = (0..in_dim)
                    .map(|i| {
                        let activation = f32::from(quantised.values[t * in_dim + i])
                            * quantised.scales[(t * in_dim + i) / 32];
                        activation * dense[r * in_dim + i]
                    })
                    .sum::<f32>()
                    + bias[r];
                let got = y[t * out_dim + r];
                assert!(
                    (got - exact).abs() < 1e-4 * exact.abs().max(1.0),
                    "t{t} r{r}: {got} vs {exact}"
                );
            }
        }
        // And the quantisation itself stays close to the float product.
        let float: f32 = (0..in_dim).map(|i| x[i] * dense[i]).sum::<f32>() + bias[0];
        assert!(
            (y[0] - float).abs() < 0.05 * float.abs().max(1.0),
            "{} vs {float}",
            y[0]
        );
    }

    #[test]
    fn simd_and_scalar_paths_agree() {
        let (out_dim, in_dim) = (8, 96);
        let (bytes, _) = random_q4(out_dim, in_dim, 3);
        let layer = Int8Linear::from_q4_0(&bytes, out_dim, in_dim, vec![0.0; out_dim]);
        let x: Vec<f32> = (0..2 * in_dim)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 10.0)
            .collect();
        let a = QuantizedActivations::new(&x, 2, in_dim);
        if !simd::available() {
            return;
        }
        for t in 0..2 {
            // SAFETY: availability checked above; rows 0..4 and 4..8 exist.
            let simd = unsafe { simd::dot_four_rows(&layer, &a, 4, t, 3) };
            for (r, value) in simd.iter().enumerate() {
                let scalar = scalar_dot(&layer, &a, 4 + r, t, 3);
                assert!(
                    (value - scalar).abs() <= 1e-4 * scalar.abs().max(1.0),
                    "{value} vs {scalar}"
                );
            }
        }
    }
}
