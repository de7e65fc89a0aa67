//! Kernel Inception Distance (Bińkowski et al. 2018) on any feature space: the unbiased estimator of MMD² with the
//! cubic polynomial kernel k(x, y) = (xᵀy/d + 1)³ (mini-benchmark.md §7, on classifier-B features φ_B).
//!
//! MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j) − 2/(mn) Σ_{i,j} k(x_i, y_j).

use crate::{Error, Result};

fn kernel(a: &[f32], b: &[f32]) -> f64 {
    let d = a.len() as f64;
    let dot: f64 = a.iter().zip(b).map(|(p, q)| *p as f64 * *q as f64).sum();
    (dot / d + 1.0).powi(3)
}

fn check(len: usize, d: usize, what: &str) -> Result<usize> {
    if d == 0 || len % d != 0 {
        return Err(Error::config(format!("kid: {what} has {len} values, not rows of {d}")));
    }
    let n = len / d;
    if n < 2 {
        return Err(Error::config(format!("kid: {what} needs at least two rows (got {n})")));
    }
    Ok(n)
}

/// Mean of k over the ordered pairs i ≠ j of one set.
fn within(s: &[f32], d: usize) -> f64 {
    let k = s.len() / d;
    let mut t = 0.0;
    for i in 0..k {
        for j in i + 1..k {
            t += 2.0 * kernel(&s[i * d..(i + 1) * d], &s[j * d..(j + 1) * d]);
        }
    }
    t / (k * (k - 1)) as f64
}

/// A fixed reference set (real-image features) with its within-set kernel mean computed once.
#[derive(Clone, Debug)]
pub struct KidReference {
    y: Vec<f32>,
    d: usize,
    yy: f64,
}

impl KidReference {
    /// Rows `y` `[n, d]`.
    pub fn new(y: Vec<f32>, d: usize) -> Result<Self> {
        check(y.len(), d, "the reference set")?;
        let yy = within(&y, d);
        Ok(KidReference { y, d, yy })
    }
    /// Reference rows.
    pub fn len(&self) -> usize {
        self.y.len() / self.d
    }
    /// Whether the reference is empty (never: construction needs two rows).
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    /// Unbiased MMD² between rows `x` `[m, d]` and the reference.
    pub fn kid(&self, x: &[f32]) -> Result<f64> {
        let (m, d) = (check(x.len(), self.d, "the sample set")?, self.d);
        let n = self.len();
        let mut cross = 0.0;
        for i in 0..m {
            let a = &x[i * d..(i + 1) * d];
            for j in 0..n {
                cross += kernel(a, &self.y[j * d..(j + 1) * d]);
            }
        }
        Ok(within(x, d) + self.yy - 2.0 * cross / (m * n) as f64)
    }
}

/// Unbiased MMD² between row sets `x` `[m, d]` and `y` `[n, d]` (row-major), cubic polynomial kernel.
pub fn kid(x: &[f32], y: &[f32], d: usize) -> Result<f64> {
    KidReference::new(y.to_vec(), d)?.kid(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{fill_normal, Purpose, Streams};

    fn normals(n: usize, seed: u64, shift: f32) -> Vec<f32> {
        let mut v = vec![0f32; n];
        fill_normal(&mut Streams::new(seed).rng(Purpose::Metric, 7, 0), &mut v);
        v.iter().map(|x| x + shift).collect()
    }

    #[test]
    fn kid_is_unbiased_near_zero_for_equal_laws_and_grows_with_a_shift() {
        let d = 4;
        // Same law: the estimator averages to 0 (unbiased); different seeds give small values of either sign.
        let mean: f64 =
            (0..20).map(|s| kid(&normals(200 * d, s, 0.0), &normals(300 * d, 100 + s, 0.0), d).unwrap()).sum::<f64>()
                / 20.0;
        assert!(mean.abs() < 0.01, "mean KID of equal laws {mean}");
        let k1 = kid(&normals(200 * d, 1, 0.0), &normals(200 * d, 2, 0.5), d).unwrap();
        let k2 = kid(&normals(200 * d, 1, 0.0), &normals(200 * d, 2, 1.0), d).unwrap();
        assert!(k1 > 0.05 && k2 > k1, "{k1} {k2}");
    }

    #[test]
    fn kid_by_hand_on_two_points_each() {
        // x = {0, 1}, y = {2, 3} in d = 1: k(a, b) = (ab + 1)³.
        let k = |a: f64, b: f64| (a * b + 1.0).powi(3);
        let want = k(0.0, 1.0) + k(2.0, 3.0) - 2.0 * (k(0.0, 2.0) + k(0.0, 3.0) + k(1.0, 2.0) + k(1.0, 3.0)) / 4.0;
        let got = kid(&[0.0, 1.0], &[2.0, 3.0], 1).unwrap();
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        assert!(kid(&[0.0], &[1.0, 2.0], 1).is_err());
    }
}
