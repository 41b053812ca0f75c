//! The element-wise parts of the encoder: LayerNorm, GELU, softmax and the
//! small dot products of attention, written so the compiler vectorises them.
//!
//! Float sums are accumulated in eight independent lanes (`[f32; 8]`): a
//! single running sum is a dependency chain the compiler may not reorder, so
//! it would stay scalar. `erf` and `exp` are polynomial approximations
//! instead of libm calls, which are opaque to the vectoriser and cost ~10 ns
//! each: a passage of 80 tokens needs 1.5 million GELUs and 0.9 million
//! exponentials.

const LANES: usize = 8;

/// Σ a·b, in eight lanes.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_chunks.remainder(), b_chunks.remainder());
    for (a, b) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            lanes[i] += a[i] * b[i];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(a, b)| a * b).sum();
    lanes.iter().sum::<f32>() + tail
}

/// `y += scale · x`.
#[inline(always)]
pub(crate) fn add_scaled(y: &mut [f32], x: &[f32], scale: f32) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += scale * x;
    }
}

/// `x = LayerNorm(x + residual)` over one token's values.
#[inline(always)]
pub(crate) fn add_layer_norm(
    x: &mut [f32],
    residual: &[f32],
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) {
    for (x, r) in x.iter_mut().zip(residual) {
        *x += r;
    }
    layer_norm(x, weight, bias, eps);
}

/// `x = LayerNorm(x)` over one token's values (biased variance, as BERT).
#[inline(always)]
pub(crate) fn layer_norm(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = lane_sum(x, |v| v) / n;
    let variance = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
    let inverse = 1.0 / (variance + eps).sqrt();
    for ((x, w), b) in x.iter_mut().zip(weight).zip(bias) {
        *x = (*x - mean) * inverse * w + b;
    }
}

#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| f(*v)).sum();
    for chunk in chunks {
        for i in 0..LANES {
            lanes[i] += f(chunk[i]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Softmax in place.
#[inline(always)]
pub(crate) fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for v in x.iter_mut() {
        *v = exp(*v - max);
    }
    let inverse = 1.0 / lane_sum(x, |v| v);
    for v in x.iter_mut() {
        *v *= inverse;
    }
}

/// Exact GELU, `x·Φ(x) = x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf(x) as a rational function of odd degree 13 over even degree 8 on
/// [−4, 4] (outside it erf is ±1 in f32), the approximation Eigen and XLA
/// use for f32; its error stays within a few ulp.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    p *= x;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    p / q
}

/// eˣ for x ≤ 0 (softmax inputs after subtracting the maximum): 2ⁿ·e^r with
/// n = round(x·log₂e) and a degree-6 polynomial for e^r, |r| ≤ ln2/2.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Below this e^x is under f32's smallest normal number.
    let x = x.max(-87.0);
    const SHIFT: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let n = (x * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    // ln 2 in two parts, so r = x − n·ln2 loses no precision.
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let mut p = 1.0 / 720.0_f32;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // n ∈ [−126, 0], so the biased exponent n + 127 is a valid normal exponent.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 / 10_000.0;
            worst = worst.max((erf(x) - libm::erff(x)).abs());
        }
        assert!(worst < 5e-7, "max error {worst}");
    }

    #[test]
    fn exp_is_within_a_few_ulp_of_libm_on_softmax_inputs() {
        let mut worst = 0f32;
        // Below −87 the result is clamped to e⁻⁸⁷ (checked below), a weight
        // of no consequence next to the maximum's e⁰ = 1.
        for i in 0..=87_000 {
            let x = -(i as f32) / 1_000.0;
            let exact = libm::expf(x);
            worst = worst.max((exp(x) - exact).abs() / exact.max(f32::MIN_POSITIVE));
        }
        assert!(worst < 1e-6, "max relative error {worst}");
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(-1000.0) < 1e-37);
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        let mut x: Vec<f32> = (0..384)
            .map(|i| (i as f32 * 0.37).sin() * 3.0 + 1.0)
            .collect();
        let ones = vec![1.0; 384];
        let zeros = vec![0.0; 384];
        layer_norm(&mut x, &ones, &zeros, 1e-12);
        let mean: f32 = x.iter().sum::<f32>() / 384.0;
        let variance: f32 = x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 384.0;
        assert!(mean.abs() < 1e-5, "{mean}");
        assert!((variance - 1.0).abs() < 1e-4, "{variance}");
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, -50.0, 0.5];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0] && x[3] < 1e-20);
    }
}
