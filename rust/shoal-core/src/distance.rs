//! Distance kernels (dot product, squared L2, normalisation), dispatched once at runtime to AVX-512F,
//! AVX2+FMA or portable scalar code, plus the metric-level [`distance`] used by the indexes.
//!
//! All kernels take two slices that must have the same length; if they do not (a caller bug), only the
//! common prefix is used — memory safety never depends on the lengths agreeing.

use std::sync::OnceLock;

use crate::Metric;

/// One implementation family of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// 512-bit vectors (`avx512f`), masked tails.
    Avx512,
    /// 256-bit vectors with fused multiply-add (`avx2` + `fma`).
    Avx2,
    /// Portable code (auto-vectorisable, 8 independent accumulators).
    Scalar,
}

impl Path {
    /// Every path, fastest first.
    pub const ALL: [Path; 3] = [Path::Avx512, Path::Avx2, Path::Scalar];

    /// The name reported by [`kernel_name`]: `avx512`, `avx2` or `scalar`.
    pub fn name(self) -> &'static str {
        match self {
            Path::Avx512 => "avx512",
            Path::Avx2 => "avx2",
            Path::Scalar => "scalar",
        }
    }

    /// True when this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Path::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            Path::Avx512 | Path::Avx2 => false,
        }
    }

    /// The paths this CPU can run, fastest first (always ends with [`Path::Scalar`]).
    pub fn available() -> Vec<Path> {
        Path::ALL.into_iter().filter(|p| p.is_available()).collect()
    }

    /// The fastest available path (the one the dispatched functions use).
    pub fn best() -> Path {
        kernels().path
    }
}

/// A raw kernel. `unsafe` because the SIMD variants require CPU features; [`Kernels::for_path`] only hands
/// out pointers whose features were detected.
type Kernel = unsafe fn(&[f32], &[f32]) -> f32;

/// The kernel table of one path.
struct Kernels {
    /// The path these pointers implement; it is available on this CPU.
    path: Path,
    /// Dot product.
    dot: Kernel,
    /// Squared euclidean distance.
    l2sq: Kernel,
}

impl Kernels {
    /// The table for `path`, or `None` when the CPU lacks its features.
    fn for_path(path: Path) -> Option<Kernels> {
        if !path.is_available() {
            return None;
        }
        let (dot, l2sq): (Kernel, Kernel) = match path {
            Path::Scalar => (scalar::dot, scalar::l2sq),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => (x86::dot_avx512, x86::l2sq_avx512),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => (x86::dot_avx2, x86::l2sq_avx2),
            #[cfg(not(target_arch = "x86_64"))]
            Path::Avx512 | Path::Avx2 => return None,
        };
        Some(Kernels { path, dot, l2sq })
    }

    /// The fastest table for this CPU.
    fn detect() -> Kernels {
        Path::ALL.into_iter().find_map(Kernels::for_path).unwrap_or(Kernels {
            path: Path::Scalar,
            dot: scalar::dot,
            l2sq: scalar::l2sq,
        })
    }
}

/// The process-wide kernel table, detected on first use.
static KERNELS: OnceLock<Kernels> = OnceLock::new();

#[inline]
fn kernels() -> &'static Kernels {
    KERNELS.get_or_init(Kernels::detect)
}

/// The kernel table for a forced path. Panics when the CPU does not support it.
fn forced(path: Path) -> Kernels {
    Kernels::for_path(path).unwrap_or_else(|| panic!("distance path {} is not supported by this CPU", path.name()))
}

/// Name of the dispatched path: `"avx512"`, `"avx2"` or `"scalar"`.
pub fn kernel_name() -> &'static str {
    kernels().path.name()
}

/// Dot product of `a` and `b`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    // SAFETY: the table only holds kernels whose CPU features were detected.
    unsafe { (kernels().dot)(a, b) }
}

/// Squared euclidean distance between `a` and `b`.
#[inline]
pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    // SAFETY: as in `dot`.
    unsafe { (kernels().l2sq)(a, b) }
}

/// Scales `v` to unit L2 norm in place. A zero vector stays zero.
pub fn normalize(v: &mut [f32]) {
    normalize_by(kernels().dot, v)
}

/// [`dot`] on a forced path. Panics when the CPU does not support `path`.
pub fn dot_with(path: Path, a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: `forced` checked the CPU features.
    unsafe { (forced(path).dot)(a, b) }
}

/// [`l2sq`] on a forced path. Panics when the CPU does not support `path`.
pub fn l2sq_with(path: Path, a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: `forced` checked the CPU features.
    unsafe { (forced(path).l2sq)(a, b) }
}

/// [`normalize`] on a forced path. Panics when the CPU does not support `path`.
pub fn normalize_with(path: Path, v: &mut [f32]) {
    normalize_by(forced(path).dot, v)
}

fn normalize_by(dot: Kernel, v: &mut [f32]) {
    // SAFETY: callers pass a kernel whose CPU features were detected.
    let sq = unsafe { dot(v, v) };
    let norm = if sq.is_finite() && sq >= f32::MIN_POSITIVE {
        sq.sqrt()
    } else {
        // Overflow (huge components) or underflow (tiny ones): redo the sum in f64.
        let sq64: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        sq64.sqrt() as f32
    };
    if norm > 0.0 && norm.is_finite() {
        let inv = 1.0 / norm;
        if inv.is_finite() {
            v.iter_mut().for_each(|x| *x *= inv);
        } else {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
}

/// Distance between two *prepared* vectors (see [`prepare`]); smaller is closer.
/// Cosine: `1 - dot` (both unit-norm), L2: squared euclidean, Dot: `-dot`.
#[inline]
pub fn distance(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::Cosine => 1.0 - dot(a, b),
        Metric::L2 => l2sq(a, b),
        Metric::Dot => -dot(a, b),
    }
}

/// Brings a stored vector or a query into the form [`distance`] expects: unit norm for cosine, unchanged
/// otherwise.
///
/// The norm is summed in f64, in order, with no SIMD kernel: the result is bit-identical on every CPU, so
/// replicas on different machines store identical vectors (and their content digests agree).
pub fn prepare(metric: Metric, v: &mut [f32]) {
    if metric == Metric::Cosine {
        let sq: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let norm = sq.sqrt();
        if norm > 0.0 && norm.is_finite() {
            v.iter_mut().for_each(|x| *x = (f64::from(*x) / norm) as f32);
        }
    }
}

/// Portable reference kernels (also the fallback on CPUs without AVX2).
pub mod scalar {
    /// Lanes of independent accumulators; lets the compiler vectorise without reassociating.
    const LANES: usize = 8;

    /// Dot product of the common prefix of `a` and `b`.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(LANES);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..LANES {
                acc[i] += x[i] * y[i];
            }
        }
        let mut tail = 0.0f32;
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            tail += x * y;
        }
        acc.iter().sum::<f32>() + tail
    }

    /// Squared euclidean distance over the common prefix of `a` and `b`.
    pub fn l2sq(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(LANES);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..LANES {
                let d = x[i] - y[i];
                acc[i] += d * d;
            }
        }
        let mut tail = 0.0f32;
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            let d = x - y;
            tail += d * d;
        }
        acc.iter().sum::<f32>() + tail
    }
}

/// x86-64 SIMD kernels. Every function requires the CPU features named in its `target_feature`.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// Horizontal sum of a 256-bit vector.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn hsum256(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let x = _mm_add_ps(lo, hi);
        let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
        let x = _mm_add_ss(x, _mm_shuffle_ps::<0x55>(x, x));
        _mm_cvtss_f32(x)
    }

    /// Dot product, AVX2+FMA, 4 accumulators of 8 lanes.
    ///
    /// # Safety
    /// The CPU must support `avx2` and `fma`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut acc2 = _mm256_setzero_ps();
        let mut acc3 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY (all loads below): every load reads 8 floats starting at an index `j` with `j + 8 <= n`.
        while i + 32 <= n {
            // SAFETY: `i + 32 <= n`, so every load of this block stays inside the slices (see above).
            unsafe {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)), acc1);
                acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 16)), _mm256_loadu_ps(pb.add(i + 16)), acc2);
                acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 24)), _mm256_loadu_ps(pb.add(i + 24)), acc3);
            }
            i += 32;
        }
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`, so every load of this block stays inside the slices (see above).
            unsafe {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            }
            i += 8;
        }
        let mut sum = hsum256(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
        for j in i..n {
            sum += a[j] * b[j];
        }
        sum
    }

    /// Squared euclidean distance, AVX2+FMA, 4 accumulators of 8 lanes.
    ///
    /// # Safety
    /// The CPU must support `avx2` and `fma`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn l2sq_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut acc2 = _mm256_setzero_ps();
        let mut acc3 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY (all loads below): every load reads 8 floats starting at an index `j` with `j + 8 <= n`.
        while i + 32 <= n {
            // SAFETY: `i + 32 <= n`, so every load of this block stays inside the slices (see above).
            unsafe {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                let d1 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)));
                let d2 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i + 16)), _mm256_loadu_ps(pb.add(i + 16)));
                let d3 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i + 24)), _mm256_loadu_ps(pb.add(i + 24)));
                acc0 = _mm256_fmadd_ps(d0, d0, acc0);
                acc1 = _mm256_fmadd_ps(d1, d1, acc1);
                acc2 = _mm256_fmadd_ps(d2, d2, acc2);
                acc3 = _mm256_fmadd_ps(d3, d3, acc3);
            }
            i += 32;
        }
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`, so every load of this block stays inside the slices (see above).
            unsafe {
                let d = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                acc0 = _mm256_fmadd_ps(d, d, acc0);
            }
            i += 8;
        }
        let mut sum = hsum256(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
        for j in i..n {
            let d = a[j] - b[j];
            sum += d * d;
        }
        sum
    }

    /// Mask selecting the first `r` (< 16) lanes.
    #[inline]
    fn tail_mask(r: usize) -> __mmask16 {
        debug_assert!(r < 16);
        ((1u32 << r) - 1) as __mmask16
    }

    /// Dot product, AVX-512F, 4 accumulators of 16 lanes, masked tail.
    ///
    /// # Safety
    /// The CPU must support `avx512f`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut acc2 = _mm512_setzero_ps();
        let mut acc3 = _mm512_setzero_ps();
        let mut i = 0;
        // SAFETY (all loads below): full loads read 16 floats at `j` with `j + 16 <= n`; the masked load
        // only touches the `n - i` lanes inside the slices (masked-off lanes never fault).
        while i + 64 <= n {
            // SAFETY: `i + 64 <= n`, so every load of this block stays inside the slices (see above).
            unsafe {
                acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i + 16)), _mm512_loadu_ps(pb.add(i + 16)), acc1);
                acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i + 32)), _mm512_loadu_ps(pb.add(i + 32)), acc2);
                acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i + 48)), _mm512_loadu_ps(pb.add(i + 48)), acc3);
            }
            i += 64;
        }
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`, so every load of this block stays inside the slices (see above).
            unsafe {
                acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            }
            i += 16;
        }
        if i < n {
            let m = tail_mask(n - i);
            // SAFETY: a masked load touches only the `n - i` lanes inside the slices.
            unsafe {
                let x = _mm512_maskz_loadu_ps(m, pa.add(i));
                let y = _mm512_maskz_loadu_ps(m, pb.add(i));
                acc1 = _mm512_fmadd_ps(x, y, acc1);
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)))
    }

    /// Squared euclidean distance, AVX-512F, 4 accumulators of 16 lanes, masked tail.
    ///
    /// # Safety
    /// The CPU must support `avx512f`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn l2sq_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut acc2 = _mm512_setzero_ps();
        let mut acc3 = _mm512_setzero_ps();
        let mut i = 0;
        // SAFETY (all loads below): as in `dot_avx512`.
        while i + 64 <= n {
            // SAFETY: `i + 64 <= n`, so every load of this block stays inside the slices (see above).
            unsafe {
                let d0 = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
                let d1 = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i + 16)), _mm512_loadu_ps(pb.add(i + 16)));
                let d2 = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i + 32)), _mm512_loadu_ps(pb.add(i + 32)));
                let d3 = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i + 48)), _mm512_loadu_ps(pb.add(i + 48)));
                acc0 = _mm512_fmadd_ps(d0, d0, acc0);
                acc1 = _mm512_fmadd_ps(d1, d1, acc1);
                acc2 = _mm512_fmadd_ps(d2, d2, acc2);
                acc3 = _mm512_fmadd_ps(d3, d3, acc3);
            }
            i += 64;
        }
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`, so every load of this block stays inside the slices (see above).
            unsafe {
                let d = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
                acc0 = _mm512_fmadd_ps(d, d, acc0);
            }
            i += 16;
        }
        if i < n {
            let m = tail_mask(n - i);
            // SAFETY: a masked load touches only the `n - i` lanes inside the slices.
            unsafe {
                let d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, pa.add(i)), _mm512_maskz_loadu_ps(m, pb.add(i)));
                acc1 = _mm512_fmadd_ps(d, d, acc1);
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)))
    }
}

#[cfg(test)]
mod tests {
    use shoal_testkit::Rng;

    use super::*;

    fn random_vec(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| rng.signed() * scale).collect()
    }

    fn close(got: f32, want: f32) -> bool {
        let err = (got - want).abs();
        err <= 1e-4 * want.abs() || err <= 1e-3
    }

    fn exact_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
    }

    fn exact_l2sq(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum()
    }

    #[test]
    fn scalar_matches_f64_reference() {
        let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
        for len in 0..300 {
            let a = random_vec(&mut rng, len, 1.0);
            let b = random_vec(&mut rng, len, 1.0);
            assert!(close(scalar::dot(&a, &b), exact_dot(&a, &b) as f32), "dot len {len}");
            assert!(close(scalar::l2sq(&a, &b), exact_l2sq(&a, &b) as f32), "l2sq len {len}");
        }
    }

    #[test]
    fn every_available_path_matches_scalar() {
        let paths = Path::available();
        assert_eq!(paths.last(), Some(&Path::Scalar));
        let mut rng = Rng::new(42);
        for round in 0..2000 {
            let len = if round < 300 { round } else { rng.below(300) };
            let scale = [1.0f32, 0.01, 10.0, 1000.0][rng.below(4)];
            let a = random_vec(&mut rng, len, scale);
            let b = random_vec(&mut rng, len, scale);
            let want_dot = scalar::dot(&a, &b);
            let want_l2 = scalar::l2sq(&a, &b);
            // Relative to the magnitudes involved: cancellation in dot makes a pure relative check unfair.
            let dot_scale = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum::<f32>();
            for &p in &paths {
                let got = dot_with(p, &a, &b);
                assert!(
                    close(got, want_dot) || (got - want_dot).abs() <= 1e-5 * dot_scale,
                    "{} dot len {len} scale {scale}: {got} vs {want_dot}",
                    p.name()
                );
                let got = l2sq_with(p, &a, &b);
                assert!(close(got, want_l2), "{} l2sq len {len} scale {scale}: {got} vs {want_l2}", p.name());
            }
        }
    }

    #[test]
    fn dispatched_functions_use_best_path() {
        assert_eq!(kernel_name(), Path::available()[0].name());
        assert_eq!(Path::best().name(), kernel_name());
        let mut rng = Rng::new(7);
        let a = random_vec(&mut rng, 131, 1.0);
        let b = random_vec(&mut rng, 131, 1.0);
        assert_eq!(dot(&a, &b), dot_with(Path::best(), &a, &b));
        assert_eq!(l2sq(&a, &b), l2sq_with(Path::best(), &a, &b));
    }

    #[test]
    fn normalize_gives_unit_norm_and_keeps_zero() {
        let mut rng = Rng::new(99);
        for &p in &Path::available() {
            for len in [1usize, 3, 16, 17, 64, 100, 257] {
                let mut v = random_vec(&mut rng, len, 5.0);
                normalize_with(p, &mut v);
                let n = exact_dot(&v, &v).sqrt();
                assert!((n - 1.0).abs() < 1e-5, "{} len {len}: norm {n}", p.name());
            }
            let mut z = vec![0.0f32; 33];
            normalize_with(p, &mut z);
            assert!(z.iter().all(|&x| x == 0.0));
            let mut empty: Vec<f32> = Vec::new();
            normalize_with(p, &mut empty);
        }
        // Extreme magnitudes do not overflow or underflow to zero.
        let mut big = vec![1e30f32; 8];
        normalize(&mut big);
        assert!((exact_dot(&big, &big).sqrt() - 1.0).abs() < 1e-5);
        let mut tiny = vec![1e-30f32; 8];
        normalize(&mut tiny);
        assert!((exact_dot(&tiny, &tiny).sqrt() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn metric_distances_on_prepared_vectors() {
        let mut a = vec![3.0f32, 4.0];
        let mut b = vec![4.0f32, 3.0];
        assert_eq!(distance(Metric::L2, &a, &b), 2.0);
        assert_eq!(distance(Metric::Dot, &a, &b), -24.0);
        prepare(Metric::L2, &mut a);
        assert_eq!(a, vec![3.0, 4.0]);
        prepare(Metric::Cosine, &mut a);
        prepare(Metric::Cosine, &mut b);
        assert!((distance(Metric::Cosine, &a, &b) - (1.0 - 24.0 / 25.0)).abs() < 1e-6);
        assert!(distance(Metric::Cosine, &a, &a).abs() < 1e-6);
    }

    #[test]
    fn mismatched_lengths_use_common_prefix() {
        let a = vec![1.0f32; 40];
        let b = vec![2.0f32; 37];
        for &p in &Path::available() {
            assert_eq!(dot_with(p, &a, &b), 74.0);
            assert_eq!(l2sq_with(p, &a, &b), 37.0);
        }
    }
}
