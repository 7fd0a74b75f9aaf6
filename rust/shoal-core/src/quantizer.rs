//! Scalar (int8) quantization of a shard's vectors: per-dimension ranges trained on the shard's first
//! [`TRAIN_ROWS`] vectors, one byte per component, and asymmetric distances (a float query against byte
//! codes) for graph traversal. Final results are rescored against the full-precision vectors.
//!
//! # Determinism
//! Training reads rows `0..TRAIN_ROWS` of the arena, and every replica of a shard holds the same rows in the
//! same slots (slots follow the apply order of the shard's log, and snapshots keep every slot), so every
//! replica, a restarted node and a node that received the shard by transfer train the same quantizer and
//! encode the same codes: nothing quantized travels in snapshots, it is rebuilt from the vectors.

use std::sync::OnceLock;

use crate::Metric;

/// Vectors a shard holds before its quantizer is trained. Below it, searches use the float vectors only.
pub const TRAIN_ROWS: usize = 4096;
/// Fraction of each dimension's training values left outside its range at either end (clamped to the
/// nearest code): outliers do not stretch the range and cost every other value its precision.
const TAIL: f64 = 0.001;
/// Oversampling used when a collection does not set one: rescore `ceil(k * 2)` candidates.
pub const DEFAULT_OVERSAMPLING: f32 = 2.0;
/// Largest accepted oversampling factor.
pub const MAX_OVERSAMPLING: f32 = 16.0;

/// How a collection's graph scores candidates while traversing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Quantization {
    /// Full-precision float32 vectors only.
    #[default]
    None,
    /// One byte per component (scalar quantization), rescored with the float vectors.
    Int8,
}

impl Quantization {
    /// The name used in the API: `"none"` or `"int8"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::None => "none",
            Quantization::Int8 => "int8",
        }
    }

    /// Parses an API name (`""` is `none`); `None` for anything else.
    pub fn parse(s: &str) -> Option<Quantization> {
        match s {
            "" | "none" => Some(Quantization::None),
            "int8" => Some(Quantization::Int8),
            _ => None,
        }
    }
}

/// How a graph search over a quantized shard uses the codes (ignored when the shard has no codes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rescore {
    /// Rescore the best candidates with the float vectors; else return the code distances as they are.
    pub enabled: bool,
    /// The beam keeps at least `ceil(k * oversampling)` candidates (at least `k`; `1..=MAX_OVERSAMPLING`),
    /// and all of the beam's candidates are rescored: `max(ef, ceil(k * oversampling))` of them.
    pub oversampling: f32,
}

impl Default for Rescore {
    fn default() -> Self {
        Rescore { enabled: true, oversampling: DEFAULT_OVERSAMPLING }
    }
}

impl Rescore {
    /// The smallest beam the graph search uses for `k` results.
    pub fn candidates(&self, k: usize) -> usize {
        if !self.enabled {
            return k;
        }
        let f = if self.oversampling.is_finite() { self.oversampling.clamp(1.0, MAX_OVERSAMPLING) } else { 1.0 };
        ((k as f64 * f64::from(f)).ceil() as usize).max(k)
    }
}

/// Per-dimension affine map from a float to a byte: `x ≈ lo[d] + step[d] * code`.
/// Invariant: `lo.len() == step.len() == dim`; every `step` is finite and `>= 0` (0 for a dimension that
/// was constant in the training rows, whose code is always 0); every `lo` is finite.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarQuantizer {
    /// The value code 0 stands for, per dimension.
    lo: Vec<f32>,
    /// The value between adjacent codes, per dimension.
    step: Vec<f32>,
}

impl ScalarQuantizer {
    /// Trains on `rows` (row-major, a whole number of `dim`-vectors, at least one): per dimension, the range
    /// between the [`TAIL`] and `1 - TAIL` quantiles of the training values. Non-finite values are ignored.
    pub fn train(rows: &[f32], dim: usize) -> ScalarQuantizer {
        let n = rows.len().checked_div(dim).unwrap_or(0);
        let mut lo = vec![0.0; dim];
        let mut step = vec![0.0; dim];
        let mut col: Vec<f32> = Vec::with_capacity(n);
        for d in 0..dim {
            col.clear();
            col.extend((0..n).map(|r| rows[r * dim + d]).filter(|x| x.is_finite()));
            if col.is_empty() {
                continue;
            }
            col.sort_unstable_by(f32::total_cmp);
            let last = col.len() - 1;
            let a = col[(TAIL * last as f64).floor() as usize];
            let b = col[((1.0 - TAIL) * last as f64).ceil() as usize];
            lo[d] = a;
            let s = (b - a) / 255.0;
            step[d] = if s.is_finite() && s > 0.0 { s } else { 0.0 };
        }
        ScalarQuantizer { lo, step }
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        self.lo.len()
    }

    /// Appends the code of `v` (`dim` components) to `out`: each component clamped into its range.
    pub fn encode_into(&self, v: &[f32], out: &mut Vec<u8>) {
        out.extend(v.iter().zip(self.lo.iter().zip(&self.step)).map(|(&x, (&lo, &s))| {
            if s > 0.0 {
                let c = ((x - lo) / s).round();
                if c >= 255.0 {
                    255
                } else if c > 0.0 {
                    c as u8
                } else {
                    0 // also NaN
                }
            } else {
                0
            }
        }));
    }

    /// The value a code stands for (for tests and error reports).
    pub fn decode(&self, code: &[u8]) -> Vec<f32> {
        code.iter().zip(self.lo.iter().zip(&self.step)).map(|(&c, (&lo, &s))| lo + s * f32::from(c)).collect()
    }

    /// Prepares `query` (already in [`crate::distance::prepare`]d form) for scoring codes under `metric`.
    pub fn query(&self, metric: Metric, query: &[f32]) -> CodeQuery {
        let dim = self.dim();
        match metric {
            // dot(q, x) ≈ Σ q·lo + Σ (q·step)·code
            Metric::Cosine | Metric::Dot => {
                let bias: f32 = query.iter().zip(&self.lo).map(|(q, lo)| q * lo).sum();
                let w: Vec<f32> = query.iter().zip(&self.step).map(|(q, s)| q * s).collect();
                CodeQuery { metric, w, a: Vec::new(), bias, dim }
            }
            // |q - x|² ≈ Σ step²·((q - lo)/step - code)²; constant dimensions add (q - lo)².
            Metric::L2 => {
                let mut bias = 0.0f32;
                let mut w = Vec::with_capacity(dim);
                let mut a = Vec::with_capacity(dim);
                for ((&q, &lo), &s) in query.iter().zip(&self.lo).zip(&self.step) {
                    if s > 0.0 {
                        w.push(s * s);
                        a.push((q - lo) / s);
                    } else {
                        bias += (q - lo) * (q - lo);
                        w.push(0.0);
                        a.push(0.0);
                    }
                }
                CodeQuery { metric, w, a, bias, dim }
            }
        }
    }
}

/// A query prepared against one [`ScalarQuantizer`]: scores a code in one pass over its bytes.
/// Invariant: `w.len() == dim`, and `a.len() == dim` for L2 (empty otherwise).
#[derive(Debug, Clone)]
pub struct CodeQuery {
    /// The metric the distances approximate.
    metric: Metric,
    /// Per-dimension weights (dot: `q·step`; L2: `step²`).
    w: Vec<f32>,
    /// L2 only: the query in code units, `(q - lo) / step`.
    a: Vec<f32>,
    /// The code-independent part of the score.
    bias: f32,
    /// Code length.
    dim: usize,
}

impl CodeQuery {
    /// Approximate distance (same scale as [`crate::distance::distance`]) to the vector coded by `code`.
    #[inline]
    pub fn distance(&self, code: &[u8]) -> f32 {
        match self.metric {
            Metric::Cosine => 1.0 - (self.bias + dot_u8(&self.w, code)),
            Metric::Dot => -(self.bias + dot_u8(&self.w, code)),
            Metric::L2 => self.bias + l2_u8(&self.w, &self.a, code),
        }
    }

    /// Code length this query scores.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// True when the AVX2+FMA kernels can run (the distance kernels' detection, done once).
fn has_avx2() -> bool {
    static AVX2: OnceLock<bool> = OnceLock::new();
    *AVX2.get_or_init(|| crate::distance::Path::Avx2.is_available())
}

/// `Σ w[i]·code[i]` over the common prefix.
#[inline]
pub fn dot_u8(w: &[f32], code: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA were detected on this CPU.
        return unsafe { x86::dot_u8_avx2(w, code) };
    }
    scalar_dot_u8(w, code)
}

/// `Σ w[i]·(a[i] - code[i])²` over the common prefix.
#[inline]
pub fn l2_u8(w: &[f32], a: &[f32], code: &[u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA were detected on this CPU.
        return unsafe { x86::l2_u8_avx2(w, a, code) };
    }
    scalar_l2_u8(w, a, code)
}

/// Portable [`dot_u8`].
pub fn scalar_dot_u8(w: &[f32], code: &[u8]) -> f32 {
    w.iter().zip(code).map(|(w, &c)| w * f32::from(c)).sum()
}

/// Portable [`l2_u8`].
pub fn scalar_l2_u8(w: &[f32], a: &[f32], code: &[u8]) -> f32 {
    w.iter()
        .zip(a)
        .zip(code)
        .map(|((w, a), &c)| {
            let d = a - f32::from(c);
            w * d * d
        })
        .sum()
}

/// x86-64 kernels over byte codes.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::distance::x86::hsum256;

    /// 8 code bytes at `p` widened to floats.
    ///
    /// # Safety
    /// `p..p+8` must be readable; AVX2 must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn widen8(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 8 readable bytes; `_mm_loadl_epi64` reads exactly 8, unaligned.
        let b = unsafe { _mm_loadl_epi64(p.cast::<__m128i>()) };
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b))
    }

    /// [`super::dot_u8`], two accumulators of 8 lanes.
    ///
    /// # Safety
    /// The CPU must support `avx2` and `fma`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_u8_avx2(w: &[f32], code: &[u8]) -> f32 {
        let n = w.len().min(code.len());
        let (pw, pc) = (w.as_ptr(), code.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY (all loads below): each reads 8 elements from an index `j` with `j + 8 <= n`.
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`, so every load of this block stays inside the slices (see above).
            unsafe {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pw.add(i)), widen8(pc.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pw.add(i + 8)), widen8(pc.add(i + 8)), acc1);
            }
            i += 16;
        }
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`, so every load of this block stays inside the slices (see above).
            unsafe {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pw.add(i)), widen8(pc.add(i)), acc0);
            }
            i += 8;
        }
        let mut sum = hsum256(_mm256_add_ps(acc0, acc1));
        for j in i..n {
            sum += w[j] * f32::from(code[j]);
        }
        sum
    }

    /// [`super::l2_u8`], two accumulators of 8 lanes.
    ///
    /// # Safety
    /// The CPU must support `avx2` and `fma`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l2_u8_avx2(w: &[f32], a: &[f32], code: &[u8]) -> f32 {
        let n = w.len().min(a.len()).min(code.len());
        let (pw, pa, pc) = (w.as_ptr(), a.as_ptr(), code.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY (all loads below): each reads 8 elements from an index `j` with `j + 8 <= n`.
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`, so every load of this block stays inside the slices (see above).
            unsafe {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), widen8(pc.add(i)));
                let d1 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i + 8)), widen8(pc.add(i + 8)));
                acc0 = _mm256_fmadd_ps(_mm256_mul_ps(d0, _mm256_loadu_ps(pw.add(i))), d0, acc0);
                acc1 = _mm256_fmadd_ps(_mm256_mul_ps(d1, _mm256_loadu_ps(pw.add(i + 8))), d1, acc1);
            }
            i += 16;
        }
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`, so every load of this block stays inside the slices (see above).
            unsafe {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), widen8(pc.add(i)));
                acc0 = _mm256_fmadd_ps(_mm256_mul_ps(d0, _mm256_loadu_ps(pw.add(i))), d0, acc0);
            }
            i += 8;
        }
        let mut sum = hsum256(_mm256_add_ps(acc0, acc1));
        for j in i..n {
            let d = a[j] - f32::from(code[j]);
            sum += w[j] * d * d;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::{distance, prepare};

    fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n * dim)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn names_round_trip() {
        for q in [Quantization::None, Quantization::Int8] {
            assert_eq!(Quantization::parse(q.as_str()), Some(q));
        }
        assert_eq!(Quantization::parse(""), Some(Quantization::None));
        assert_eq!(Quantization::parse("int4"), None);
    }

    #[test]
    fn codes_decode_close_and_clamp() {
        let dim = 37;
        let data = rows(2000, dim, 7);
        let q = ScalarQuantizer::train(&data, dim);
        let mut code = Vec::new();
        q.encode_into(&data[..dim], &mut code);
        let back = q.decode(&code);
        for (x, y) in data[..dim].iter().zip(&back) {
            assert!((x - y).abs() <= 2.0 / 255.0 + 1e-6, "{x} vs {y}");
        }
        // Out of range and non-finite values clamp.
        code.clear();
        let mut v = vec![100.0; dim];
        v[0] = -100.0;
        v[1] = f32::NAN;
        q.encode_into(&v, &mut code);
        assert_eq!(code[0], 0);
        assert_eq!(code[1], 0);
        assert!(code[2..].iter().all(|&c| c == 255));
    }

    #[test]
    fn constant_dimension_gets_step_zero() {
        let dim = 4;
        let mut data = rows(100, dim, 3);
        for r in 0..100 {
            data[r * dim + 2] = 0.5;
        }
        let q = ScalarQuantizer::train(&data, dim);
        assert_eq!(q.step[2], 0.0);
        let mut code = Vec::new();
        q.encode_into(&data[..dim], &mut code);
        assert_eq!(code[2], 0);
        assert!((q.decode(&code)[2] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn code_distances_track_float_distances() {
        for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
            for dim in [3usize, 16, 100, 128] {
                let mut data = rows(1500, dim, 11 + dim as u64);
                for v in data.chunks_exact_mut(dim) {
                    prepare(metric, v);
                }
                let qz = ScalarQuantizer::train(&data, dim);
                let mut query = rows(1, dim, 99)[..dim].to_vec();
                prepare(metric, &mut query);
                let cq = qz.query(metric, &query);
                let mut code = Vec::new();
                for v in data.chunks_exact(dim).take(200) {
                    code.clear();
                    qz.encode_into(v, &mut code);
                    let exact = distance(metric, &query, v);
                    let approx = cq.distance(&code);
                    // Error of the decoded vector's distance, plus the float rounding of the kernels.
                    let decoded = qz.decode(&code);
                    let reference = distance(metric, &query, &decoded);
                    assert!((approx - reference).abs() <= 1e-3 * (1.0 + reference.abs()), "{metric:?} {dim}");
                    let tol = if metric == Metric::L2 { 0.01 * (1.0 + exact) } else { 0.05 };
                    assert!((approx - exact).abs() <= tol, "{metric:?} dim {dim}: {approx} vs {exact}");
                }
            }
        }
    }

    #[test]
    fn kernels_match_scalar() {
        for n in [0usize, 1, 7, 8, 9, 16, 31, 128, 133] {
            let w = rows(1, n.max(1), 5)[..n].to_vec();
            let a = rows(1, n.max(1), 6)[..n].iter().map(|x| x * 200.0).collect::<Vec<_>>();
            let code: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            let (d, ds) = (dot_u8(&w, &code), scalar_dot_u8(&w, &code));
            assert!((d - ds).abs() <= 1e-3 * (1.0 + ds.abs()), "dot n={n}: {d} vs {ds}");
            let (l, ls) = (l2_u8(&w, &a, &code), scalar_l2_u8(&w, &a, &code));
            assert!((l - ls).abs() <= 1e-3 * (1.0 + ls.abs()), "l2 n={n}: {l} vs {ls}");
        }
    }
}
