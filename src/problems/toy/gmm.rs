//! Gaussian mixtures in any dimension: exact samples, the analytic VP-noised denoiser (toy.md §2) and the exact
//! tilted target p_tar ∝ p·exp(r/α) for quadratic rewards (toy.md §3).

use crate::diffusion::schedule::BetaSchedule;
use crate::diffusion::{Cond, Cotangent, Denoiser};
use crate::numerics::linalg::{chol_logdet, cholesky, dot, matvec, spd_inverse};
use crate::rewards::quadratic::Quadratic;
use crate::rng::fill_normal;
use crate::{Error, Result};
use rand::RngCore;

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// A Gaussian mixture Σ_k w_k N(μ_k, Σ_k) in dimension d.
#[derive(Clone, Debug, PartialEq)]
pub struct Gmm {
    /// Dimension.
    pub d: usize,
    /// Weights (sum to 1).
    pub weights: Vec<f64>,
    /// Means, one per component.
    pub means: Vec<Vec<f64>>,
    /// Covariances, row-major d×d, one per component.
    pub covs: Vec<Vec<f64>>,
    chol: Vec<Vec<f64>>,
}

/// The exact tilted target of a GMM under a quadratic reward.
#[derive(Clone, Debug)]
pub struct Tilted {
    /// p_tar as a GMM (weights w', means μ', covariances Σ').
    pub gmm: Gmm,
    /// log Z = log E_p[exp(r/α)].
    pub log_z: f64,
    /// E_tar[r].
    pub reward_mean: f64,
    /// KL(p_tar ‖ p) = E_tar[r]/α − log Z.
    pub kl: f64,
}

/// The names of the built-in toy presets (problem and reward).
pub const PRESETS: [&str; 3] = ["gmm1", "gmm2", "rare10"];

/// Dimension of the `rare10` preset.
pub const RARE10_DIM: usize = 10;

impl Gmm {
    /// Build and validate a mixture. Weights must be positive; they are normalised.
    pub fn new(weights: Vec<f64>, means: Vec<Vec<f64>>, covs: Vec<Vec<Vec<f64>>>) -> Result<Self> {
        let k = weights.len();
        if k == 0 {
            return Err(Error::config("problem.weights: need at least one component"));
        }
        if means.len() != k || covs.len() != k {
            return Err(Error::config(format!(
                "problem: weights, means and covs must have one entry per component (got {k}, {}, {})",
                means.len(),
                covs.len()
            )));
        }
        let d = means[0].len();
        if d == 0 {
            return Err(Error::config("problem.means: dimension must be at least 1"));
        }
        if weights.iter().any(|w| !(*w > 0.0) || !w.is_finite()) {
            return Err(Error::config("problem.weights: every weight must be a positive finite number"));
        }
        let sum: f64 = weights.iter().sum();
        let mut flat = Vec::with_capacity(k);
        let mut chol = Vec::with_capacity(k);
        for (i, (m, c)) in means.iter().zip(&covs).enumerate() {
            if m.len() != d {
                return Err(Error::config(format!("problem.means[{i}]: has length {}, expected {d}", m.len())));
            }
            if c.len() != d || c.iter().any(|r| r.len() != d) {
                return Err(Error::config(format!("problem.covs[{i}]: must be a {d}×{d} matrix")));
            }
            let f: Vec<f64> = c.iter().flatten().copied().collect();
            for a in 0..d {
                for b in 0..a {
                    if (f[a * d + b] - f[b * d + a]).abs() > 1e-12 * (1.0 + f[a * d + b].abs()) {
                        return Err(Error::config(format!("problem.covs[{i}]: must be symmetric")));
                    }
                }
            }
            let l = cholesky(&f, d).ok_or_else(|| {
                Error::config(format!("problem.covs[{i}]: must be positive definite (a valid covariance)"))
            })?;
            flat.push(f);
            chol.push(l);
        }
        Ok(Gmm { d, weights: weights.iter().map(|w| w / sum).collect(), means, covs: flat, chol })
    }

    /// Built-in presets ([`PRESETS`]): `gmm1` (9 modes on {−4,0,4}²) and `gmm2` (8 modes on a circle of radius 4),
    /// Σ = 0.3·I; `rare10`, a 10-D mixture whose prior mass sits in two modes at ∓3·e₁ (weight 0.495 each) while a
    /// rare mode (weight 0.01) at 4·e₂ holds the reward's peak — the tilted target puts ≈ 70 % of its mass there, so
    /// a sampler must find a mode the pretrained chain visits once in a hundred draws (issue #18's harder toy).
    pub fn preset(name: &str) -> Result<Self> {
        let iso = |v: f64| vec![vec![v, 0.0], vec![0.0, v]];
        match name {
            "gmm1" => {
                let mut means = Vec::new();
                for x in [-4.0, 0.0, 4.0] {
                    for y in [-4.0, 0.0, 4.0] {
                        means.push(vec![x, y]);
                    }
                }
                Gmm::new(vec![1.0 / 9.0; 9], means, vec![iso(0.3); 9])
            }
            "gmm2" => {
                let means = (0..8)
                    .map(|k| {
                        let th = k as f64 * std::f64::consts::FRAC_PI_4;
                        vec![4.0 * th.cos(), 4.0 * th.sin()]
                    })
                    .collect();
                Gmm::new(vec![1.0 / 8.0; 8], means, vec![iso(0.3); 8])
            }
            "rare10" => {
                let axis = |i: usize, v: f64| (0..RARE10_DIM).map(|j| if j == i { v } else { 0.0 }).collect();
                let cov = |_| (0..RARE10_DIM).map(|i| axis(i, 0.3)).collect();
                Gmm::new(
                    vec![0.495, 0.495, 0.01],
                    vec![axis(0, -3.0), axis(0, 3.0), axis(1, 4.0)],
                    (0..3).map(cov).collect(),
                )
            }
            other => {
                Err(Error::config(format!("problem.preset: unknown preset `{other}`; use {}", PRESETS.join(", "))))
            }
        }
    }

    /// Number of components.
    pub fn len(&self) -> usize {
        self.weights.len()
    }
    /// Whether the mixture has no components (never true for a validated mixture).
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// `n` exact samples, row-major `[n, d]`.
    pub fn sample<R: RngCore>(&self, rng: &mut R, n: usize) -> Vec<f32> {
        let d = self.d;
        let mut out = vec![0f32; n * d];
        let mut z = vec![0f32; d];
        let cum: Vec<f64> = self
            .weights
            .iter()
            .scan(0.0, |s, w| {
                *s += w;
                Some(*s)
            })
            .collect();
        for row in out.chunks_exact_mut(d) {
            let u = crate::rng::uniform(rng) * cum[cum.len() - 1];
            let k = cum.iter().position(|&c| u < c).unwrap_or(cum.len() - 1);
            fill_normal(rng, &mut z);
            let l = &self.chol[k];
            for i in 0..d {
                let mut v = self.means[k][i];
                for j in 0..=i {
                    v += l[i * d + j] * z[j] as f64;
                }
                row[i] = v as f32;
            }
        }
        out
    }

    /// log p(x).
    pub fn log_density(&self, x: &[f64]) -> f64 {
        let d = self.d;
        let terms: Vec<f64> = (0..self.len())
            .map(|k| {
                let diff: Vec<f64> = x.iter().zip(&self.means[k]).map(|(a, b)| a - b).collect();
                let sol = crate::numerics::linalg::chol_solve(&self.chol[k], d, &diff);
                self.weights[k].ln()
                    - 0.5 * dot(&diff, &sol)
                    - 0.5 * chol_logdet(&self.chol[k], d)
                    - 0.5 * d as f64 * LN_2PI
            })
            .collect();
        crate::samplers::logspace::lse(&terms)
    }

    /// The exact tilted target under `reward` at KL coefficient α (toy.md §3). Errors when Σ_k⁻¹ + A/α is not
    /// positive definite for some k (the tilt is not normalisable).
    pub fn tilt(&self, reward: &Quadratic, alpha: f64) -> Result<Tilted> {
        let d = self.d;
        if reward.dim() != d {
            return Err(Error::config(format!(
                "reward: dimension {} does not match the problem's dimension {d}",
                reward.dim()
            )));
        }
        if !(alpha > 0.0) {
            return Err(Error::config(format!("alpha: must be > 0 (got {alpha})")));
        }
        let mut log_terms = Vec::new();
        let mut means = Vec::new();
        let mut covs = Vec::new();
        for k in 0..self.len() {
            let (sinv, logdet_s) = spd_inverse(&self.covs[k], d, "covariance")?;
            let p: Vec<f64> = sinv.iter().zip(&reward.a).map(|(s, a)| s + a / alpha).collect();
            let (sig, logdet_p) = spd_inverse(&p, d, "tilt").map_err(|_| {
                Error::config(format!(
                    "reward: the tilt is not normalisable: Σ⁻¹ + A/α is not positive definite for component {k} \
                     (α = {alpha}); make A less negative or α larger"
                ))
            })?;
            let mu = &self.means[k];
            let h: Vec<f64> = matvec(&sinv, d, mu).iter().zip(&reward.b).map(|(v, b)| v + b / alpha).collect();
            let mu_t = matvec(&sig, d, &h);
            // log|Σ'| = −log|P| where Σ' = P⁻¹.
            let log_zk = -0.5 * logdet_p - 0.5 * logdet_s + 0.5 * dot(&mu_t, &matvec(&p, d, &mu_t))
                - 0.5 * dot(mu, &matvec(&sinv, d, mu))
                + reward.c / alpha;
            log_terms.push(self.weights[k].ln() + log_zk);
            means.push(mu_t);
            covs.push(sig);
        }
        let log_z = crate::samplers::logspace::lse(&log_terms);
        let w: Vec<f64> = log_terms.iter().map(|l| (l - log_z).exp()).collect();
        let reward_mean: f64 = (0..self.len()).map(|k| w[k] * reward.expect_gaussian(&means[k], &covs[k])).sum();
        let covs3 = covs.iter().map(|c| c.chunks(d).map(|r| r.to_vec()).collect()).collect();
        let gmm = Gmm::new(w, means, covs3)?;
        Ok(Tilted { gmm, log_z, reward_mean, kl: reward_mean / alpha - log_z })
    }

    /// Index of the nearest mean (Euclidean) for each row.
    pub fn nearest_mode(&self, x: &[f32]) -> Vec<usize> {
        x.chunks_exact(self.d)
            .map(|row| {
                let mut best = (f64::INFINITY, 0);
                for (k, m) in self.means.iter().enumerate() {
                    let dist: f64 = row.iter().zip(m).map(|(a, b)| (*a as f64 - b).powi(2)).sum();
                    if dist < best.0 {
                        best = (dist, k);
                    }
                }
                best.1
            })
            .collect()
    }
}

/// The exact ε of the VP-noised mixture: ε*(x, t) = −√(1−ᾱ_t)·∇log p_t(x) (toy.md §2).
pub struct AnalyticDenoiser {
    gmm: Gmm,
    alpha_bar: Vec<f64>,
    /// The per-timestep constants, computed once per timestep on first use (samplers that call the denoiser on
    /// a few rows at a time, like DTS, would otherwise spend their time re-inverting the noised covariances).
    noised: Vec<std::sync::OnceLock<Noised>>,
}

/// Per-timestep constants of the noised mixture.
struct Noised {
    sqrt_a: f64,
    sqrt_1ma: f64,
    cinv: Vec<Vec<f64>>,
    log_norm: Vec<f64>,
}

impl AnalyticDenoiser {
    /// The analytic denoiser of `gmm` under the β schedule.
    pub fn new(gmm: Gmm, schedule: BetaSchedule) -> Self {
        let alpha_bar = schedule.alpha_bar();
        let noised = (0..alpha_bar.len()).map(|_| std::sync::OnceLock::new()).collect();
        Self { gmm, alpha_bar, noised }
    }
    /// The mixture.
    pub fn gmm(&self) -> &Gmm {
        &self.gmm
    }

    fn noised(&self, t: usize) -> &Noised {
        self.noised[t].get_or_init(|| self.compute_noised(t))
    }

    fn compute_noised(&self, t: usize) -> Noised {
        let a = self.alpha_bar[t];
        let d = self.gmm.d;
        let mut cinv = Vec::new();
        let mut log_norm = Vec::new();
        for k in 0..self.gmm.len() {
            let c: Vec<f64> =
                (0..d * d).map(|ij| a * self.gmm.covs[k][ij] + if ij / d == ij % d { 1.0 - a } else { 0.0 }).collect();
            let (inv, logdet) = spd_inverse(&c, d, "noised covariance").expect("C_k = aΣ + (1−a)I is SPD");
            cinv.push(inv);
            log_norm.push(self.gmm.weights[k].ln() - 0.5 * logdet);
        }
        Noised { sqrt_a: a.sqrt(), sqrt_1ma: (1.0 - a).sqrt(), cinv, log_norm }
    }

    /// For one row: responsibilities γ and per-component scores s_k (written to `s`, K×d); returns nothing.
    fn row_scores(&self, nz: &Noised, x: &[f32], gamma: &mut [f64], s: &mut [f64]) {
        let d = self.gmm.d;
        let mut diff = [0f64; 16];
        let mut diffv = vec![];
        let diff: &mut [f64] = if d <= 16 {
            &mut diff[..d]
        } else {
            diffv.resize(d, 0.0);
            &mut diffv
        };
        let mut max = f64::NEG_INFINITY;
        for k in 0..self.gmm.len() {
            for i in 0..d {
                diff[i] = x[i] as f64 - nz.sqrt_a * self.gmm.means[k][i];
            }
            let ci = &nz.cinv[k];
            let sk = &mut s[k * d..(k + 1) * d];
            let mut quad = 0.0;
            for i in 0..d {
                let mut v = 0.0;
                for j in 0..d {
                    v += ci[i * d + j] * diff[j];
                }
                sk[i] = -v;
                quad += diff[i] * v;
            }
            gamma[k] = nz.log_norm[k] - 0.5 * quad;
            max = max.max(gamma[k]);
        }
        let mut tot = 0.0;
        for g in gamma.iter_mut() {
            *g = (*g - max).exp();
            tot += *g;
        }
        for g in gamma.iter_mut() {
            *g /= tot;
        }
    }
}

impl Denoiser for AnalyticDenoiser {
    fn dim(&self) -> usize {
        self.gmm.d
    }

    fn eps(&self, x: &[f32], t: usize, _cond: &Cond, eps: &mut [f32]) -> Result<()> {
        let d = self.gmm.d;
        let nk = self.gmm.len();
        let nz = self.noised(t);
        let mut gamma = vec![0f64; nk];
        let mut s = vec![0f64; nk * d];
        for (row, e) in x.chunks_exact(d).zip(eps.chunks_exact_mut(d)) {
            self.row_scores(nz, row, &mut gamma, &mut s);
            for i in 0..d {
                let score: f64 = (0..nk).map(|k| gamma[k] * s[k * d + i]).sum();
                e[i] = (-nz.sqrt_1ma * score) as f32;
            }
        }
        Ok(())
    }

    fn eps_vjp(
        &self,
        x: &[f32],
        t: usize,
        cond: &Cond,
        eps: &mut [f32],
        cot: &mut Cotangent<'_>,
        vjp: &mut [f32],
    ) -> Result<()> {
        self.eps(x, t, cond, eps)?;
        let mut u = vec![0f32; x.len()];
        cot(eps, &mut u)?;
        // J_ε = −√(1−a)·H, H = ∇²log p_t = Σγ_k(−C_k⁻¹) + Σγ_k s_k s_kᵀ − s̄s̄ᵀ (symmetric).
        let d = self.gmm.d;
        let nk = self.gmm.len();
        let nz = self.noised(t);
        let mut gamma = vec![0f64; nk];
        let mut s = vec![0f64; nk * d];
        let mut sbar = vec![0f64; d];
        let mut hu = vec![0f64; d];
        for ((row, ur), out) in x.chunks_exact(d).zip(u.chunks_exact(d)).zip(vjp.chunks_exact_mut(d)) {
            self.row_scores(nz, row, &mut gamma, &mut s);
            sbar.iter_mut().for_each(|v| *v = 0.0);
            hu.iter_mut().for_each(|v| *v = 0.0);
            for k in 0..nk {
                let sk = &s[k * d..(k + 1) * d];
                let ci = &nz.cinv[k];
                let su: f64 = (0..d).map(|i| sk[i] * ur[i] as f64).sum();
                for i in 0..d {
                    sbar[i] += gamma[k] * sk[i];
                    let ciu: f64 = (0..d).map(|j| ci[i * d + j] * ur[j] as f64).sum();
                    hu[i] += gamma[k] * (sk[i] * su - ciu);
                }
            }
            let sbu: f64 = (0..d).map(|i| sbar[i] * ur[i] as f64).sum();
            for i in 0..d {
                out[i] = (-nz.sqrt_1ma * (hu[i] - sbar[i] * sbu)) as f32;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, Streams};

    fn quad(name: &str) -> Quadratic {
        match name {
            "gmm1" => Quadratic::new(vec![vec![0.02, 0.0], vec![0.0, 2.0]], vec![0.0, 0.0], 0.0).unwrap(),
            _ => Quadratic::new(vec![vec![2.0, 0.0], vec![0.0, 0.2]], vec![0.0, 0.2], -0.1).unwrap(),
        }
    }

    #[test]
    fn exact_values_of_toy_md() {
        let cases = [
            ("gmm1", 1.0, -1.439687, -0.290720, 1.148966),
            ("gmm1", 0.3, -1.974529, -0.186365, 1.353312),
            ("gmm2", 1.0, -2.967804, -1.340043, 1.627761),
            ("gmm2", 0.3, -5.206865, -0.763602, 2.661524),
        ];
        for (p, alpha, lz, er, kl) in cases {
            let t = Gmm::preset(p).unwrap().tilt(&quad(p), alpha).unwrap();
            assert!((t.log_z - lz).abs() < 2e-6, "{p} {alpha} log Z {}", t.log_z);
            assert!((t.reward_mean - er).abs() < 2e-6, "{p} {alpha} E r {}", t.reward_mean);
            assert!((t.kl - kl).abs() < 2e-6, "{p} {alpha} KL {}", t.kl);
        }
        let t = Gmm::preset("gmm1").unwrap().tilt(&quad("gmm1"), 1.0).unwrap();
        // (0,0) component is index 4; (±4, 0) are 1 and 7.
        assert!((t.gmm.weights[4] - 0.369527).abs() < 1e-6);
        assert!((t.gmm.weights[1] - 0.315191).abs() < 1e-6);
        assert!((t.gmm.means[7][0] - 3.976143).abs() < 1e-6);
        assert!((t.gmm.covs[0][0] - 0.298211).abs() < 1e-6);
        assert!((t.gmm.covs[0][3] - 0.1875).abs() < 1e-6);
    }

    #[test]
    fn rare10_puts_most_tilted_mass_on_the_rare_mode() {
        // Closed form for isotropic S = 0.3·I and A = ½I: the component k is tilted by
        // |I + SA|^{-1/2}·exp(−½‖m_k − c‖²/(0.3 + 2)), c = 4e₂; ‖m_k − c‖² = 25 for the two common modes, 0 for the
        // rare one.
        let g = Gmm::preset("rare10").unwrap();
        assert_eq!((g.d, g.len()), (RARE10_DIM, 3));
        let q = super::super::preset_reward("rare10").unwrap();
        let t = g.tilt(&q, 1.0).unwrap();
        let common = 0.495 * (-0.5 * 25.0 / 2.3f64).exp();
        let rare = 0.01;
        let norm = 2.0 * common + rare;
        assert!((t.gmm.weights[2] - rare / norm).abs() < 1e-9, "{:?}", t.gmm.weights);
        assert!((t.gmm.weights[2] - 0.698).abs() < 1e-3, "≈ 70 % of the tilted mass on the rare mode");
        let log_z = norm.ln() - 0.5 * RARE10_DIM as f64 * 1.15f64.ln();
        assert!((t.log_z - log_z).abs() < 1e-9, "log Z {} vs {log_z}", t.log_z);
        let mut r = [0.0];
        let mut top = vec![0f32; RARE10_DIM];
        top[1] = 4.0;
        crate::rewards::Reward::score(&q, &top, &Cond::None, &mut r).unwrap();
        assert_eq!(r[0], 0.0, "the reward peaks at the rare mode's mean");
    }

    #[test]
    fn tilted_target_matches_grid_quadrature() {
        for p in ["gmm1", "gmm2"] {
            let g = Gmm::preset(p).unwrap();
            let q = quad(p);
            let t = g.tilt(&q, 1.0).unwrap();
            let (lo, hi, n) = (-9.0, 9.0, 900);
            let h = (hi - lo) / n as f64;
            let (mut z, mut er) = (0.0, 0.0);
            for i in 0..n {
                for j in 0..n {
                    let x = [lo + (i as f64 + 0.5) * h, lo + (j as f64 + 0.5) * h];
                    let r = q.eval(&x);
                    let w = (g.log_density(&x) + r).exp() * h * h;
                    z += w;
                    er += w * r;
                }
            }
            assert!((z.ln() - t.log_z).abs() < 1e-5, "{p}: {} vs {}", z.ln(), t.log_z);
            assert!((er / z - t.reward_mean).abs() < 1e-5, "{p}: {} vs {}", er / z, t.reward_mean);
        }
    }

    #[test]
    fn reward_mean_is_minus_alpha_squared_dlogz() {
        let g = Gmm::preset("gmm2").unwrap();
        let q = quad("gmm2");
        let h = 1e-5;
        let lp = g.tilt(&q, 0.7 + h).unwrap().log_z;
        let lm = g.tilt(&q, 0.7 - h).unwrap().log_z;
        let er = g.tilt(&q, 0.7).unwrap().reward_mean;
        assert!((er - (-0.49 * (lp - lm) / (2.0 * h))).abs() < 1e-6);
    }

    #[test]
    fn non_normalisable_tilt_is_an_error() {
        let g = Gmm::preset("gmm1").unwrap();
        let q = Quadratic::new(vec![vec![-10.0, 0.0], vec![0.0, 1.0]], vec![0.0, 0.0], 0.0).unwrap();
        let e = g.tilt(&q, 1.0).unwrap_err().to_string();
        assert!(e.contains("not normalisable"), "{e}");
    }

    #[test]
    fn analytic_eps_matches_finite_difference_score() {
        let g = Gmm::preset("gmm2").unwrap();
        let den = AnalyticDenoiser::new(g.clone(), BetaSchedule::Linear);
        let ab = BetaSchedule::Linear.alpha_bar();
        for t in [0usize, 100, 500, 900] {
            let a = ab[t];
            // Noised mixture as an explicit GMM.
            let covs = g
                .covs
                .iter()
                .map(|c| vec![vec![a * c[0] + 1.0 - a, a * c[1]], vec![a * c[2], a * c[3] + 1.0 - a]])
                .collect();
            let means = g.means.iter().map(|m| m.iter().map(|v| v * a.sqrt()).collect()).collect();
            let pt = Gmm::new(g.weights.clone(), means, covs).unwrap();
            let x = [1.3f32, -0.4];
            let mut e = [0f32; 2];
            den.eps(&x, t, &Cond::None, &mut e).unwrap();
            for i in 0..2 {
                let h = 1e-5;
                let mut xp = [x[0] as f64, x[1] as f64];
                let mut xm = xp;
                xp[i] += h;
                xm[i] -= h;
                let score = (pt.log_density(&xp) - pt.log_density(&xm)) / (2.0 * h);
                let want = -(1.0 - a).sqrt() * score;
                assert!((e[i] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "t={t}: {} vs {want}", e[i]);
            }
        }
    }

    #[test]
    fn analytic_vjp_matches_finite_difference() {
        let g = Gmm::preset("gmm1").unwrap();
        let den = AnalyticDenoiser::new(g, BetaSchedule::Linear);
        let x = [0.9f32, -1.7, 2.0, 2.1];
        let u = [0.3f32, -0.8, 1.0, 0.5];
        for t in [50usize, 400, 800] {
            let mut e = [0f32; 4];
            let mut v = [0f32; 4];
            den.eps_vjp(
                &x,
                t,
                &Cond::None,
                &mut e,
                &mut |_, out: &mut [f32]| {
                    out.copy_from_slice(&u);
                    Ok(())
                },
                &mut v,
            )
            .unwrap();
            for i in 0..4 {
                let h = 1e-2f32;
                let mut xp = x;
                let mut xm = x;
                xp[i] += h;
                xm[i] -= h;
                let (mut ep, mut em) = ([0f32; 4], [0f32; 4]);
                den.eps(&xp, t, &Cond::None, &mut ep).unwrap();
                den.eps(&xm, t, &Cond::None, &mut em).unwrap();
                let row = i / 2;
                let fd: f64 = (0..2)
                    .map(|j| u[row * 2 + j] as f64 * (ep[row * 2 + j] - em[row * 2 + j]) as f64 / (2.0 * h as f64))
                    .sum();
                assert!((fd - v[i] as f64).abs() < 2e-3 * (1.0 + fd.abs()), "t={t} i={i}: {fd} vs {}", v[i]);
            }
        }
    }

    #[test]
    fn exact_sampler_moments() {
        let g = Gmm::preset("gmm2").unwrap();
        let t = g.tilt(&quad("gmm2"), 1.0).unwrap();
        let mut rng = Streams::new(7).rng(Purpose::Target, 0, 0);
        let n = 100_000;
        let xs = t.gmm.sample(&mut rng, n);
        let q = quad("gmm2");
        let rs: Vec<f64> = xs.chunks(2).map(|r| q.eval(&[r[0] as f64, r[1] as f64])).collect();
        let m = rs.iter().sum::<f64>() / n as f64;
        let sd = (rs.iter().map(|r| (r - m).powi(2)).sum::<f64>() / n as f64).sqrt();
        assert!((m - t.reward_mean).abs() < 3.0 * sd / (n as f64).sqrt(), "{m} vs {}", t.reward_mean);
        let up = xs.chunks(2).filter(|r| r[1] > 0.0).count() as f64 / n as f64;
        assert!((up - 0.81709).abs() < 3.0 * (0.817f64 * 0.183 / n as f64).sqrt(), "{up}");
    }
}
