//! Quadratic reward r(x) = −½xᵀAx + bᵀx + c (toy.md §1), exact gradient ∇r = −Ax + b.

use super::Reward;
use crate::diffusion::Cond;
use crate::{Error, Result};

/// r(x) = −½xᵀAx + bᵀx + c with symmetric A (d×d, row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct Quadratic {
    /// A, row-major d×d, symmetric.
    pub a: Vec<f64>,
    /// b.
    pub b: Vec<f64>,
    /// c.
    pub c: f64,
}

impl Quadratic {
    /// Build and check the shapes and symmetry.
    pub fn new(a: Vec<Vec<f64>>, b: Vec<f64>, c: f64) -> Result<Self> {
        let d = b.len();
        if d == 0 {
            return Err(Error::config("reward.b: must have at least one entry (the dimension d ≥ 1)"));
        }
        if a.len() != d || a.iter().any(|r| r.len() != d) {
            return Err(Error::config(format!("reward.a: must be a {d}×{d} matrix to match reward.b of length {d}")));
        }
        for i in 0..d {
            for j in 0..d {
                if (a[i][j] - a[j][i]).abs() > 1e-12 * (1.0 + a[i][j].abs()) {
                    return Err(Error::config(format!(
                        "reward.a: must be symmetric, but a[{i}][{j}] = {} ≠ a[{j}][{i}] = {}",
                        a[i][j], a[j][i]
                    )));
                }
            }
        }
        let flat: Vec<f64> = a.into_iter().flatten().collect();
        if flat.iter().chain(b.iter()).any(|v| !v.is_finite()) || !c.is_finite() {
            return Err(Error::config("reward: a, b and c must be finite numbers"));
        }
        Ok(Self { a: flat, b, c })
    }
    /// (A as rows, b, c).
    pub fn parts(&self) -> (Vec<Vec<f64>>, Vec<f64>, f64) {
        (self.a.chunks(self.dim()).map(|r| r.to_vec()).collect(), self.b.clone(), self.c)
    }
    /// Dimension d.
    pub fn dim(&self) -> usize {
        self.b.len()
    }
    /// r(x) in f64.
    pub fn eval(&self, x: &[f64]) -> f64 {
        let d = self.dim();
        let mut r = self.c;
        for i in 0..d {
            let mut ax = 0.0;
            for j in 0..d {
                ax += self.a[i * d + j] * x[j];
            }
            r += -0.5 * x[i] * ax + self.b[i] * x[i];
        }
        r
    }
    /// E_{N(m,S)}[r] = −½(tr(AS) + mᵀAm) + bᵀm + c.
    pub fn expect_gaussian(&self, m: &[f64], s: &[f64]) -> f64 {
        let d = self.dim();
        let tr: f64 =
            (0..d).flat_map(|i| (0..d).map(move |j| (i, j))).map(|(i, j)| self.a[i * d + j] * s[j * d + i]).sum();
        self.eval(m) - 0.5 * tr
    }
}

impl Reward for Quadratic {
    fn name(&self) -> String {
        "quadratic".into()
    }
    fn differentiable(&self) -> bool {
        true
    }
    fn scale(&self) -> String {
        "unbounded below; max r_max at the centre".into()
    }
    fn input_dim(&self) -> usize {
        self.dim()
    }
    fn score(&self, y: &[f32], _cond: &Cond, out: &mut [f64]) -> Result<()> {
        let d = self.dim();
        let mut buf = vec![0f64; d];
        for (row, o) in y.chunks_exact(d).zip(out.iter_mut()) {
            for (b, &v) in buf.iter_mut().zip(row) {
                *b = v as f64;
            }
            *o = self.eval(&buf);
        }
        Ok(())
    }
    fn score_grad(&self, y: &[f32], cond: &Cond, out: &mut [f64], grad: &mut [f32]) -> Result<()> {
        let d = self.dim();
        self.score(y, cond, out)?;
        for (row, g) in y.chunks_exact(d).zip(grad.chunks_exact_mut(d)) {
            for i in 0..d {
                let mut ax = 0.0;
                for j in 0..d {
                    ax += self.a[i * d + j] * row[j] as f64;
                }
                g[i] = (self.b[i] - ax) as f32;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_difference() {
        let q = Quadratic::new(vec![vec![2.0, 0.3], vec![0.3, 0.2]], vec![0.1, 0.2], -0.1).unwrap();
        let x = [0.7f32, -1.1];
        let mut r = [0f64];
        let mut g = [0f32; 2];
        q.score_grad(&x, &Cond::None, &mut r, &mut g).unwrap();
        for k in 0..2 {
            let h = 1e-3;
            let mut xp = [x[0] as f64, x[1] as f64];
            let mut xm = xp;
            xp[k] += h;
            xm[k] -= h;
            let fd = (q.eval(&xp) - q.eval(&xm)) / (2.0 * h);
            assert!((fd - g[k] as f64).abs() < 1e-5);
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(Quadratic::new(vec![vec![1.0]], vec![0.0, 0.0], 0.0).is_err());
        assert!(Quadratic::new(vec![vec![1.0, 2.0], vec![0.0, 1.0]], vec![0.0, 0.0], 0.0).is_err());
    }
}
