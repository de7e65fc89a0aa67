//! Small dense linear algebra in f64 (row-major d×d) for the toy problems: Cholesky, solves, inverses.

use crate::{Error, Result};

/// Lower Cholesky factor of a symmetric positive definite matrix; `None` if not positive definite.
pub fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= l[i * d + k] * l[j * d + k];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// log|A| from its Cholesky factor.
pub fn chol_logdet(l: &[f64], d: usize) -> f64 {
    (0..d).map(|i| 2.0 * l[i * d + i].ln()).sum()
}

/// Inverse of an SPD matrix, or an error naming `what`.
pub fn spd_inverse(a: &[f64], d: usize, what: &str) -> Result<(Vec<f64>, f64)> {
    let l = cholesky(a, d).ok_or_else(|| Error::numeric("toy", format!("{what} is not positive definite")))?;
    let logdet = chol_logdet(&l, d);
    let mut inv = vec![0.0; d * d];
    let mut col = vec![0.0; d];
    for c in 0..d {
        col.iter_mut().enumerate().for_each(|(i, v)| *v = if i == c { 1.0 } else { 0.0 });
        let x = chol_solve(&l, d, &col);
        for r in 0..d {
            inv[r * d + c] = x[r];
        }
    }
    // Symmetrise against round-off.
    for i in 0..d {
        for j in 0..i {
            let m = 0.5 * (inv[i * d + j] + inv[j * d + i]);
            inv[i * d + j] = m;
            inv[j * d + i] = m;
        }
    }
    Ok((inv, logdet))
}

/// Solve L Lᵀ x = b.
pub fn chol_solve(l: &[f64], d: usize, b: &[f64]) -> Vec<f64> {
    let mut y = b.to_vec();
    for i in 0..d {
        for k in 0..i {
            y[i] -= l[i * d + k] * y[k];
        }
        y[i] /= l[i * d + i];
    }
    for i in (0..d).rev() {
        for k in i + 1..d {
            y[i] -= l[k * d + i] * y[k];
        }
        y[i] /= l[i * d + i];
    }
    y
}

/// y = A x.
pub fn matvec(a: &[f64], d: usize, x: &[f64]) -> Vec<f64> {
    (0..d).map(|i| (0..d).map(|j| a[i * d + j] * x[j]).sum()).collect()
}

/// Dot product.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_and_logdet() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let (inv, logdet) = spd_inverse(&a, 3, "a").unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        let det = 4.0 * (3.0 * 2.0 - 0.04) - 1.0 * (2.0 - 0.1) + 0.5 * (0.2 - 1.5);
        assert!((logdet - f64::ln(det)).abs() < 1e-12);
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }
}
