//! Q4_0 weights × Q8_0 activations: the linear layers of the E5S1 model.
//!
//! The arithmetic is the reference engine's (and GGML's): weights are 4-bit
//! nibbles with one scale per 32 inputs, activations are quantised per 32
//! inputs to int8 with one scale, and each 32-input block contributes
//! `d_w · d_a · (Σ nibble·a − 8·Σ a)`. What differs is the order of work.
//!
//! The reference (and this crate before) computed one output row at a time:
//! per block, a 32-wide integer dot product, then a float conversion, a scale
//! multiply and a horizontal sum per row and token. Here eight output rows are
//! computed side by side, one per 32-bit lane ("panel" layout, as in GEMM
//! micro-kernels): the weights are stored so that 32 bytes hold four
//! consecutive inputs of eight rows, the activation's four matching bytes are
//! broadcast, and one `maddubs` yields the eight rows' partial sums. The eight
//! 4-input groups of a block accumulate in 16-bit lanes (no overflow:
//! 16 products of at most 15·128 stay below 2¹⁵), so the float conversion and
//! scale multiply happen once per block for eight rows instead of once per
//! block per row, and no horizontal sum is needed at all. Four tokens share
//! each weight load.

use crate::e5s1::{Q4_BLOCK_BYTES, Q4_BLOCK_ELEMS};

/// Output rows per panel: one per 32-bit lane of an AVX2 register.
pub(crate) const PANEL_ROWS: usize = 8;
/// Inputs per broadcast group.
const QUAD: usize = 4;
/// Bytes of one quad of one panel (eight rows of four nibbles).
const QUAD_BYTES: usize = PANEL_ROWS * QUAD;
/// Bytes of one block of one panel.
const PANEL_BLOCK_BYTES: usize = PANEL_ROWS * Q4_BLOCK_ELEMS;
/// Tokens that share one weight load.
const TILE_TOKENS: usize = 4;

/// A linear layer `y = x·Wᵀ + b` with Q4_0 weights in panel layout.
pub(crate) struct PanelLinear {
    out_dim: usize,
    in_dim: usize,
    /// Panel-major: for each panel of eight rows, for each quad of four inputs,
    /// the eight rows' four nibbles (0..=15, meaning nibble − 8).
    nibbles: Vec<u8>,
    /// For each panel, for each block: the eight rows' block scales.
    scales: Vec<f32>,
    bias: Vec<f32>,
}

/// A layer shape the panel kernel cannot run.
#[derive(Debug)]
pub(crate) struct UnsupportedShape {
    pub out_dim: usize,
    pub in_dim: usize,
}

impl PanelLinear {
    /// Builds a layer from row-major Q4_0 blocks (`out_dim` rows of
    /// `in_dim / 32` blocks, GGML's byte order) and its bias.
    pub(crate) fn from_q4_0(
        blocks: &[u8],
        out_dim: usize,
        in_dim: usize,
        bias: Vec<f32>,
    ) -> Result<Self, UnsupportedShape> {
        let blocks_per_row = in_dim / Q4_BLOCK_ELEMS;
        if !out_dim.is_multiple_of(PANEL_ROWS)
            || !in_dim.is_multiple_of(Q4_BLOCK_ELEMS)
            || blocks.len() != out_dim * blocks_per_row * Q4_BLOCK_BYTES
            || bias.len() != out_dim
        {
            return Err(UnsupportedShape { out_dim, in_dim });
        }
        let mut nibbles = vec![0u8; out_dim * in_dim];
        let mut scales = vec![0f32; out_dim * blocks_per_row];
        for row in 0..out_dim {
            let (panel, lane) = (row / PANEL_ROWS, row % PANEL_ROWS);
            let panel_nibbles = &mut nibbles[panel * PANEL_ROWS * in_dim..][..PANEL_ROWS * in_dim];
            let panel_scales = &mut scales[panel * PANEL_ROWS * blocks_per_row..];
            for b in 0..blocks_per_row {
                let block =
                    &blocks[(row * blocks_per_row + b) * Q4_BLOCK_BYTES..][..Q4_BLOCK_BYTES];
                panel_scales[b * PANEL_ROWS + lane] =
                    half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                for (j, byte) in block[2..].iter().enumerate() {
                    for (element, nibble) in [(j, byte & 0x0f), (j + 16, byte >> 4)] {
                        let input = b * Q4_BLOCK_ELEMS + element;
                        let position = (input / QUAD) * QUAD_BYTES + lane * QUAD + input % QUAD;
                        panel_nibbles[position] = nibble;
                    }
                }
            }
        }
        Ok(Self {
            out_dim,
            in_dim,
            nibbles,
            scales,
            bias,
        })
    }

    /// Stacks layers with the same input size along the output dimension (Q,
    /// K and V become one projection that reads its input once). Panels are
    /// self-contained, so stacking is concatenation.
    pub(crate) fn stack(layers: Vec<PanelLinear>) -> Self {
        let in_dim = layers.first().map_or(0, |l| l.in_dim);
        let mut stacked = Self {
            out_dim: 0,
            in_dim,
            nibbles: Vec::new(),
            scales: Vec::new(),
            bias: Vec::new(),
        };
        for layer in layers {
            assert_eq!(
                layer.in_dim, in_dim,
                "stacked layers share their input size"
            );
            stacked.out_dim += layer.out_dim;
            stacked.nibbles.extend(layer.nibbles);
            stacked.scales.extend(layer.scales);
            stacked.bias.extend(layer.bias);
        }
        stacked
    }

    pub(crate) fn out_dim(&self) -> usize {
        self.out_dim
    }

    pub(crate) fn panels(&self) -> usize {
        self.out_dim / PANEL_ROWS
    }

    /// Computes `out = activation(x·Wᵀ + b)` for every row of `x`
    /// (`out` is `[rows of x, out_dim]`).
    ///
    /// Tokens are taken in chunks whose activations stay in the L2 cache
    /// while every panel of weights streams past them; within a chunk each
    /// panel's weights stay in L1 for all its tiles of four tokens.
    #[inline(always)]
    pub(crate) fn forward(&self, x: &QuantizedRows, out: &mut [f32], activation: Activation) {
        const CHUNK_TOKENS: usize = 256;
        debug_assert_eq!(x.in_dim, self.in_dim);
        debug_assert_eq!(out.len(), x.rows() * self.out_dim);
        let use_simd = avx2_available();
        let rows = x.rows();
        let mut chunk_start = 0;
        while chunk_start < rows {
            let chunk_end = (chunk_start + CHUNK_TOKENS).min(rows);
            for panel in 0..self.panels() {
                let bias = &self.bias[panel * PANEL_ROWS..][..PANEL_ROWS];
                let mut token = chunk_start;
                while token < chunk_end {
                    let count = (chunk_end - token).min(TILE_TOKENS);
                    let mut tile = [[0f32; PANEL_ROWS]; TILE_TOKENS];
                    if use_simd {
                        // SAFETY: AVX2 and FMA were detected at run time; the
                        // panel exists and `token + count <= rows`.
                        unsafe { simd::tile(self, panel, x, token, count, &mut tile) };
                    } else {
                        scalar_tile(self, panel, x, token, count, &mut tile);
                    }
                    for (offset, values) in tile.iter().take(count).enumerate() {
                        let columns = &mut out
                            [(token + offset) * self.out_dim + panel * PANEL_ROWS..][..PANEL_ROWS];
                        for lane in 0..PANEL_ROWS {
                            columns[lane] = values[lane] + bias[lane];
                        }
                    }
                    token += count;
                }
            }
            // The activation runs over the chunk's rows at once, a plain loop
            // that vectorises (per tile it stayed scalar).
            if activation == Activation::Gelu {
                for value in &mut out[chunk_start * self.out_dim..chunk_end * self.out_dim] {
                    *value = super::math::gelu(*value);
                }
            }
            chunk_start = chunk_end;
        }
    }

    fn panel_nibbles(&self, panel: usize) -> &[u8] {
        &self.nibbles[panel * PANEL_ROWS * self.in_dim..][..PANEL_ROWS * self.in_dim]
    }

    fn panel_scales(&self, panel: usize) -> &[f32] {
        let blocks = self.in_dim / Q4_BLOCK_ELEMS;
        &self.scales[panel * PANEL_ROWS * blocks..][..PANEL_ROWS * blocks]
    }
}

/// Whether this CPU runs the AVX2 kernels.
pub(crate) fn avx2_available() -> bool {
    simd::available()
}

/// What follows the projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    None,
    /// Exact (erf) GELU, as BERT computes it.
    Gelu,
}

/// Rows of activations quantised per 32-value block to int8 (GGML's Q8_0),
/// with each block's `8 · Σ values` for the nibbles' −8 offset.
pub(crate) struct QuantizedRows {
    in_dim: usize,
    /// `[rows, in_dim]`
    values: Vec<i8>,
    /// `[rows, in_dim / 32]`
    scales: Vec<f32>,
    /// `[rows, in_dim / 32]`
    offsets: Vec<i32>,
}

impl QuantizedRows {
    /// Room for `rows` rows of `in_dim` values (zero until quantised).
    pub(crate) fn new(rows: usize, in_dim: usize) -> Self {
        let blocks = rows * in_dim / Q4_BLOCK_ELEMS;
        Self {
            in_dim,
            values: vec![0; rows * in_dim],
            scales: vec![0.0; blocks],
            offsets: vec![0; blocks],
        }
    }

    /// Number of rows.
    pub(crate) fn rows(&self) -> usize {
        self.values.len() / self.in_dim
    }

    /// Quantises `x` (`[rows, in_dim]`) into these rows.
    #[inline(always)]
    pub(crate) fn quantize(&mut self, x: &[f32]) {
        debug_assert_eq!(x.len(), self.values.len());
        for (((source, target), scale), offset) in x
            .chunks_exact(Q4_BLOCK_ELEMS)
            .zip(self.values.chunks_exact_mut(Q4_BLOCK_ELEMS))
            .zip(&mut self.scales)
            .zip(&mut self.offsets)
        {
            let (block_scale, sum) = quantize_block(source, target);
            *scale = block_scale;
            *offset = 8 * sum;
        }
    }
}

/// Quantises 32 values to int8 with one scale, as the reference does
/// (`scale = max|x| / 127`, round half to even); returns the scale and the
/// sum of the int8 values.
#[inline(always)]
fn quantize_block(source: &[f32], target: &mut [i8]) -> (f32, i32) {
    let max = source.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = max / 127.0;
    let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    let mut sum = 0i32;
    for (q, v) in target.iter_mut().zip(source) {
        let quantised = round_half_even(v * inverse).clamp(-128.0, 127.0) as i8;
        *q = quantised;
        sum += i32::from(quantised);
    }
    (scale, sum)
}

/// Rounds half to even, as the reference's `lrintf` does, without a libm call
/// (the baseline x86-64 target has no rounding instruction, so
/// `f32::round_ties_even` becomes a call to `rintf`): adding and subtracting
/// 1.5·2²³ leaves the nearest integer for |x| < 2²², and values here are
/// scaled into [−127, 127].
#[inline]
fn round_half_even(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0;
    (x + SHIFT) - SHIFT
}

/// The portable version of [`simd::tile`], used where AVX2 is missing and as
/// the tests' reference.
fn scalar_tile(
    layer: &PanelLinear,
    panel: usize,
    x: &QuantizedRows,
    first_token: usize,
    count: usize,
    tile: &mut [[f32; PANEL_ROWS]; TILE_TOKENS],
) {
    let blocks = layer.in_dim / Q4_BLOCK_ELEMS;
    let nibbles = layer.panel_nibbles(panel);
    let scales = layer.panel_scales(panel);
    for (offset, out) in tile.iter_mut().take(count).enumerate() {
        let token = first_token + offset;
        let values = &x.values[token * x.in_dim..][..x.in_dim];
        for block in 0..blocks {
            let mut dots = [0i32; PANEL_ROWS];
            for quad in 0..Q4_BLOCK_ELEMS / QUAD {
                let input = block * Q4_BLOCK_ELEMS + quad * QUAD;
                let weights = &nibbles[(input / QUAD) * QUAD_BYTES..][..QUAD_BYTES];
                for (lane, dot) in dots.iter_mut().enumerate() {
                    for k in 0..QUAD {
                        *dot += i32::from(weights[lane * QUAD + k]) * i32::from(values[input + k]);
                    }
                }
            }
            let activation_scale = x.scales[token * blocks + block];
            let offset_term = x.offsets[token * blocks + block];
            for (lane, dot) in dots.iter().enumerate() {
                out[lane] += scales[block * PANEL_ROWS + lane]
                    * activation_scale
                    * (dot - offset_term) as f32;
            }
        }
    }
}

mod simd {
    use super::{PANEL_ROWS, PanelLinear, QuantizedRows, TILE_TOKENS};

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
    pub(super) unsafe fn tile(
        _: &PanelLinear,
        _: usize,
        _: &QuantizedRows,
        _: usize,
        _: usize,
        _: &mut [[f32; PANEL_ROWS]; TILE_TOKENS],
    ) {
        unreachable!("available() is false off x86_64")
    }

    /// One panel (eight output rows) for `count` (1..=4) consecutive tokens.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `panel < layer.panels()` and
    /// `first_token + count <= rows of x`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        layer: &PanelLinear,
        panel: usize,
        x: &QuantizedRows,
        first_token: usize,
        count: usize,
        tile: &mut [[f32; PANEL_ROWS]; TILE_TOKENS],
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match count {
                4 => tile_n::<4>(layer, panel, x, first_token, tile),
                3 => tile_n::<3>(layer, panel, x, first_token, tile),
                2 => tile_n::<2>(layer, panel, x, first_token, tile),
                _ => tile_n::<1>(layer, panel, x, first_token, tile),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile_n<const N: usize>(
        layer: &PanelLinear,
        panel: usize,
        x: &QuantizedRows,
        first_token: usize,
        tile: &mut [[f32; PANEL_ROWS]; TILE_TOKENS],
    ) {
        use std::arch::x86_64::*;

        use super::{PANEL_BLOCK_BYTES, QUAD, QUAD_BYTES};
        use crate::e5s1::Q4_BLOCK_ELEMS;

        let in_dim = layer.in_dim;
        let blocks = in_dim / Q4_BLOCK_ELEMS;
        let mut nibbles = layer.panel_nibbles(panel).as_ptr();
        let weight_scales = layer.panel_scales(panel).as_ptr();
        let values = x.values[first_token * in_dim..][..N * in_dim].as_ptr();
        let activation_scales = x.scales[first_token * blocks..][..N * blocks].as_ptr();
        let offsets = x.offsets[first_token * blocks..][..N * blocks].as_ptr();
        let ones = _mm256_set1_epi16(1);
        let mut sums = [_mm256_setzero_ps(); N];
        for block in 0..blocks {
            // SAFETY: every offset stays inside the slices taken above: the
            // panel holds `blocks` blocks of PANEL_BLOCK_BYTES, each token row
            // `in_dim` values and `blocks` scales and offsets.
            unsafe {
                let block_values = values.add(block * Q4_BLOCK_ELEMS);
                // 16-bit partial sums: 16 products of at most 15·128 each
                // cannot overflow before the block's widening below.
                let mut partial = [_mm256_setzero_si256(); N];
                let mut quad = 0;
                while quad < Q4_BLOCK_ELEMS / QUAD {
                    let weights =
                        _mm256_loadu_si256(nibbles.add(quad * QUAD_BYTES).cast::<__m256i>());
                    let mut token = 0;
                    while token < N {
                        let four = block_values
                            .add(token * in_dim + quad * QUAD)
                            .cast::<i32>()
                            .read_unaligned();
                        let products = _mm256_maddubs_epi16(weights, _mm256_set1_epi32(four));
                        partial[token] = _mm256_add_epi16(partial[token], products);
                        token += 1;
                    }
                    quad += 1;
                }
                nibbles = nibbles.add(PANEL_BLOCK_BYTES);
                let row_scales = _mm256_loadu_ps(weight_scales.add(block * PANEL_ROWS));
                let mut token = 0;
                while token < N {
                    let dots = _mm256_sub_epi32(
                        _mm256_madd_epi16(partial[token], ones),
                        _mm256_set1_epi32(*offsets.add(token * blocks + block)),
                    );
                    let scale = _mm256_mul_ps(
                        row_scales,
                        _mm256_set1_ps(*activation_scales.add(token * blocks + block)),
                    );
                    sums[token] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), scale, sums[token]);
                    token += 1;
                }
            }
        }
        for (out, sum) in tile.iter_mut().zip(sums) {
            // SAFETY: `out` holds PANEL_ROWS = 8 floats.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        }
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

    fn activations(tokens: usize, in_dim: usize) -> Vec<f32> {
        (0..tokens * in_dim)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect()
    }

    fn quantized(x: &[f32], tokens: usize, in_dim: usize) -> QuantizedRows {
        let mut rows = QuantizedRows::new(tokens, in_dim);
        rows.quantize(x);
        rows
    }

    fn forward(layer: &PanelLinear, x: &QuantizedRows, tokens: usize) -> Vec<f32> {
        let mut y = vec![0f32; tokens * layer.out_dim()];
        layer.forward(x, &mut y, Activation::None);
        y
    }

    #[test]
    fn matches_a_float_matmul_of_the_quantised_operands() {
        // Seven tokens: one tile of four and one of three.
        let (out_dim, in_dim, tokens) = (16, 96, 7);
        let (bytes, dense) = random_q4(out_dim, in_dim, 7);
        let bias: Vec<f32> = (0..out_dim).map(|i| i as f32 * 0.1).collect();
        let layer = PanelLinear::from_q4_0(&bytes, out_dim, in_dim, bias.clone()).expect("shape");
        let x = activations(tokens, in_dim);
        let q = quantized(&x, tokens, in_dim);
        let y = forward(&layer, &q, tokens);
        for t in 0..tokens {
            for r in 0..out_dim {
                let exact: f32 = (0..in_dim)
                    .map(|i| {
                        let activation =
                            f32::from(q.values[t * in_dim + i]) * q.scales[(t * in_dim + i) / 32];
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
    fn simd_and_scalar_tiles_agree_for_every_tile_size() {
        let (out_dim, in_dim, tokens) = (16, 128, 4);
        let (bytes, _) = random_q4(out_dim, in_dim, 3);
        let layer =
            PanelLinear::from_q4_0(&bytes, out_dim, in_dim, vec![0.0; out_dim]).expect("shape");
        // Extreme activations: a block of −128s and +127s stresses the 16-bit sums.
        let mut x = activations(tokens, in_dim);
        x[..32].iter_mut().for_each(|v| *v = -1.0);
        x[32..64].iter_mut().for_each(|v| *v = 1.0);
        let q = quantized(&x, tokens, in_dim);
        if !simd::available() {
            return;
        }
        for count in 1..=TILE_TOKENS {
            for panel in 0..layer.panels() {
                let mut expected = [[0f32; PANEL_ROWS]; TILE_TOKENS];
                scalar_tile(&layer, panel, &q, 0, count, &mut expected);
                let mut got = [[0f32; PANEL_ROWS]; TILE_TOKENS];
                // SAFETY: availability checked above; the panel and tokens exist.
                unsafe { simd::tile(&layer, panel, &q, 0, count, &mut got) };
                for (e, g) in expected.iter().flatten().zip(got.iter().flatten()) {
                    assert!((e - g).abs() <= 1e-4 * e.abs().max(1.0), "{e} vs {g}");
                }
            }
        }
    }

    #[test]
    fn stacking_equals_running_the_layers_apart() {
        let in_dim = 64;
        let (a_bytes, _) = random_q4(8, in_dim, 11);
        let (b_bytes, _) = random_q4(16, in_dim, 12);
        let a = || PanelLinear::from_q4_0(&a_bytes, 8, in_dim, vec![0.5; 8]).expect("shape");
        let b = || PanelLinear::from_q4_0(&b_bytes, 16, in_dim, vec![-0.5; 16]).expect("shape");
        let x = quantized(&activations(3, in_dim), 3, in_dim);
        let stacked = PanelLinear::stack(vec![a(), b()]);
        let (ya, yb, ys) = (
            forward(&a(), &x, 3),
            forward(&b(), &x, 3),
            forward(&stacked, &x, 3),
        );
        for t in 0..3 {
            assert_eq!(ys[t * 24..t * 24 + 8], ya[t * 8..t * 8 + 8]);
            assert_eq!(ys[t * 24 + 8..t * 24 + 24], yb[t * 16..t * 16 + 16]);
        }
    }

    #[test]
    fn refuses_shapes_the_panels_cannot_hold() {
        let (bytes, _) = random_q4(12, 64, 1);
        assert!(PanelLinear::from_q4_0(&bytes, 12, 64, vec![0.0; 12]).is_err());
    }
}
