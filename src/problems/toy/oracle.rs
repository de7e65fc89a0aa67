//! The exact soft value of the toy (toy.md §3): p_tar is a Gaussian mixture, so its noised marginal p^tar_t is exact
//! and exp(v_t(x)/α) = E[e^{r(x_0)/α} | x_t = x] = Z·p^tar_t(x)/p_t(x), i.e.
//! v_t(x) = α·(log Z + log p^tar_t(x) − log p_t(x)), ∇v_t = α·(∇log p^tar_t − ∇log p_t).
//! Used as DAS's twist (`oracle_twist`): with it the SMC weights should stay nearly uniform — a check of the
//! weight code (the residual drop comes from the discretisation of the chain).

use super::gmm::{AnalyticDenoiser, Gmm, Tilted};
use crate::diffusion::schedule::{BetaSchedule, Grid};
use crate::diffusion::{Cond, Denoiser};
use crate::samplers::das::SoftValue;
use crate::Result;

/// v_t of the exact tilted target of a mixture under a quadratic reward.
pub struct ExactSoftValue {
    data: AnalyticDenoiser,
    tilted: AnalyticDenoiser,
    log_z: f64,
    alpha: f64,
    alpha_bar: Vec<f64>,
}

impl ExactSoftValue {
    /// The soft value of `tilted` = tilt of `data` at KL coefficient α.
    pub fn new(data: &Gmm, tilted: &Tilted, alpha: f64) -> Self {
        ExactSoftValue {
            data: AnalyticDenoiser::new(data.clone(), BetaSchedule::Linear),
            tilted: AnalyticDenoiser::new(tilted.gmm.clone(), BetaSchedule::Linear),
            log_z: tilted.log_z,
            alpha,
            alpha_bar: BetaSchedule::Linear.alpha_bar(),
        }
    }

    /// The mixture noised to ᾱ = a: components N(√a·μ_k, a·Σ_k + (1−a)·I).
    fn noised(g: &Gmm, a: f64) -> Result<Gmm> {
        let d = g.d;
        let means = g.means.iter().map(|m| m.iter().map(|v| a.sqrt() * v).collect()).collect();
        let covs = g
            .covs
            .iter()
            .map(|c| {
                (0..d)
                    .map(|i| (0..d).map(|j| a * c[i * d + j] + if i == j { 1.0 - a } else { 0.0 }).collect())
                    .collect()
            })
            .collect();
        Gmm::new(g.weights.clone(), means, covs)
    }
}

impl SoftValue for ExactSoftValue {
    fn value_grad(&self, grid: &Grid, i: usize, x: &[f32], v: &mut [f64], g: &mut [f32]) -> Result<()> {
        let t = grid.t[i];
        let a = self.alpha_bar[t];
        let (pd, pt) = (Self::noised(self.data.gmm(), a)?, Self::noised(self.tilted.gmm(), a)?);
        let d = pd.d;
        for (row, vr) in x.chunks_exact(d).zip(v.iter_mut()) {
            let xr: Vec<f64> = row.iter().map(|&q| q as f64).collect();
            *vr = self.alpha * (self.log_z + pt.log_density(&xr) - pd.log_density(&xr));
        }
        // ∇log p_t = −ε*/√(1−a), so ∇v = α·(ε*_data − ε*_tilted)/√(1−a).
        let (mut ed, mut et) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        self.data.eps(x, t, &Cond::None, &mut ed)?;
        self.tilted.eps(x, t, &Cond::None, &mut et)?;
        let s = self.alpha / (1.0 - a).sqrt();
        for ((o, e1), e2) in g.iter_mut().zip(&ed).zip(&et) {
            *o = (s * (*e1 as f64 - *e2 as f64)) as f32;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::Spacing;
    use crate::rewards::quadratic::Quadratic;

    #[test]
    fn value_at_low_noise_is_the_reward_and_gradient_matches_finite_differences() {
        let gmm = Gmm::preset("gmm2").unwrap();
        let r = Quadratic::new(vec![vec![2.0, 0.0], vec![0.0, 0.2]], vec![0.0, 0.2], -0.1).unwrap();
        let tilted = gmm.tilt(&r, 1.0).unwrap();
        let sv = ExactSoftValue::new(&gmm, &tilted, 1.0);
        let grid = Grid::new(BetaSchedule::Linear, Spacing::ToyClean, 100);
        // At t = 0 (ᾱ ≈ 1) the soft value is the reward up to O(1−ᾱ).
        let x = [0.3f32, 3.5];
        let (mut v, mut g) = ([0f64], [0f32; 2]);
        sv.value_grad(&grid, 99, &x, &mut v, &mut g).unwrap();
        assert!((v[0] - r.eval(&[0.3, 3.5])).abs() < 0.02, "{} vs {}", v[0], r.eval(&[0.3, 3.5]));
        // Gradient vs central differences of v at a mid-noise step.
        let x = [0.7f32, -1.2];
        sv.value_grad(&grid, 50, &x, &mut v, &mut g).unwrap();
        for q in 0..2 {
            let h = 1e-2f32;
            let (mut xp, mut xm) = (x, x);
            xp[q] += h;
            xm[q] -= h;
            let (mut vp, mut vm, mut gg) = ([0f64], [0f64], [0f32; 2]);
            sv.value_grad(&grid, 50, &xp, &mut vp, &mut gg).unwrap();
            sv.value_grad(&grid, 50, &xm, &mut vm, &mut gg).unwrap();
            let fd = (vp[0] - vm[0]) / (2.0 * h as f64);
            assert!((fd - g[q] as f64).abs() < 1e-3 * (1.0 + fd.abs()), "{q}: fd {fd} vs {}", g[q]);
        }
    }
}
