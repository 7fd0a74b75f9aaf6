//! Random test vectors, flat (`n * dim` values, row after row), uniform or on the unit sphere.

use crate::Rng;

/// `n` vectors of `dim` values uniform in [-1, 1), flat: row `i` is `[i * dim, (i + 1) * dim)`.
pub fn random_vectors(rng: &mut Rng, n: usize, dim: usize) -> Vec<f32> {
    (0..n * dim).map(|_| rng.signed()).collect()
}

/// `n` vectors of `dim` values, each of L2 norm 1 (uniform in [-1, 1), then normalised), flat.
pub fn random_unit_vectors(rng: &mut Rng, n: usize, dim: usize) -> Vec<f32> {
    let mut v = random_vectors(rng, n, dim);
    if dim > 0 {
        v.chunks_exact_mut(dim).for_each(normalize);
    }
    v
}

/// Scales `v` to L2 norm 1 (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_norms() {
        let mut rng = Rng::new(1);
        let v = random_vectors(&mut rng, 5, 7);
        assert_eq!(v.len(), 35);
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        let u = random_unit_vectors(&mut rng, 100, 16);
        for row in u.chunks_exact(16) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-5, "norm {n}");
        }
        let mut zero = [0.0f32; 3];
        normalize(&mut zero);
        assert_eq!(zero, [0.0; 3]);
        assert_eq!(random_vectors(&mut Rng::new(9), 3, 4), random_vectors(&mut Rng::new(9), 3, 4));
    }
}
