//! Ψ-sampler-style SMC — posterior-initialised particles (Yoon et al. 2025, "Ψ-Sampler: initial particle sampling
//! for SMC-based inference-time reward alignment in score models"), written from the paper's equations.
//!
//! 1. **Initial particles from the reward-tilted prior.** π_0(x_T) ∝ N(x_T; 0, I)·exp(f(x_T)), f = r(D(Φ(x_T)))/α,
//!    where Φ is a deterministic map from the initial noise to a clean sample: `map_steps` DDIM steps at η = 0 on
//!    the sampling grid thinned to M steps (M = 1 is the Tweedie estimate x̂0(x_T) the paper reads the reward
//!    through; larger M is the deterministic DDIM map, whose push-forward of N(0, I) is the model's law, so π_0
//!    pushed through Φ is the tilted target up to discretisation). Each of the K particles runs its own
//!    preconditioned Crank–Nicolson Langevin chain (Cotter, Roberts, Stuart & White 2013): with the prior N(0, I),
//!    the Crank–Nicolson discretisation of dx = (−x + ∇f)dt + √2 dW is
//!    x' = ρx + κ∇f(x) + √(1−ρ²)·ξ, ρ = (2−δ)/(2+δ), κ = 2δ/(2+δ), ξ ~ N(0, I),
//!    accepted with probability min(1, π_0(x')q(x|x') / (π_0(x)q(x'|x))), q(y|x) = N(y; ρx + κ∇f(x), (1−ρ²)I).
//!    ∇f is a VJP through the M steps of Φ (each a denoiser VJP).
//! 2. **DAS-style SMC from there** (the DAS code, `das/`), with the first twist replacing f in the weights
//!    (ℓ_0 = τ'_0 − f): the SMC targets are unchanged, only the initial distribution moved, so the final tilt is exact
//!    whatever the chain's mixing — the chain only has to bring the particles close. Default tempering `constant`
//!    (λ ≡ 1: the particles start tilted already).
//!
//! Budget split: `chain_share` s of a particle's denoiser rows goes to the chain: S = ⌊s/(1−s) · N/(2M−1)⌋ pCNL
//! proposals after one initial evaluation (each evaluation is M−1 forwards and M VJPs = 2M−1 rows); s = 0 skips the
//! chain (then this is TDS with DAS's resampling defaults). log Ẑ is not reported: the SMC part estimates Z/Z_0
//! with Z_0 = E[exp f] unknown.

use serde::{Deserialize, Serialize};

use super::das::tempering::TemperingKind;
use super::das::{das_cost, DasConfig, DasDefaults, DasSampler};
use super::kernel::Resampling;
use super::method::{check_particles, Chain, Method, MethodInfo, Needs};
use super::{init_noise, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::step::StepCoef;
use crate::diffusion::Cond;
use crate::ledger::{Cost, Phase};
use crate::rng::{uniform, Purpose};
use crate::{Error, Result};

/// Settings of the Ψ-sampler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PsiConfig {
    /// Particles K per group.
    pub particles: usize,
    /// Fraction s ∈ [0, 1) of each particle's denoiser rows spent in the pCNL chain.
    #[serde(default = "half")]
    pub chain_share: f64,
    /// DDIM (η = 0) steps M of the map Φ: x_T → x_0 the chain reads the reward through (1 = x̂0(x_T)).
    #[serde(default = "ten")]
    pub map_steps: usize,
    /// pCNL step size δ > 0.
    #[serde(default = "step")]
    pub step_size: f64,
    /// Tempering of the SMC part (default `constant`: the particles start tilted).
    #[serde(default = "constant")]
    pub tempering: TemperingKind,
    /// γ of the `exp` schedule.
    #[serde(default)]
    pub gamma: Option<f64>,
    /// Target ESS fraction of `adaptive` tempering.
    #[serde(default = "half")]
    pub target_ess: f64,
    /// Resampling: DAS's defaults.
    #[serde(flatten)]
    pub resampling: Resampling<DasDefaults>,
}

fn half() -> f64 {
    0.5
}
fn ten() -> usize {
    10
}
fn step() -> f64 {
    0.5
}
fn constant() -> TemperingKind {
    TemperingKind::Constant
}

impl PsiConfig {
    /// The DAS configuration of the SMC part.
    pub fn to_das(&self) -> DasConfig {
        DasConfig {
            particles: self.particles,
            tempering: self.tempering,
            gamma: self.gamma,
            target_ess: self.target_ess,
            resampling: self.resampling.clone(),
            reference_bugs: false,
        }
    }
    /// pCNL proposals per particle on a grid of `steps` steps.
    pub fn mcmc_steps(&self, steps: usize) -> usize {
        let per_eval = (2 * self.map_steps.max(1) - 1) as f64;
        (self.chain_share / (1.0 - self.chain_share) * steps as f64 / per_eval).floor().max(0.0) as usize
    }
}

/// `psi` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "psi",
    about: "Ψ-sampler: pCNL chain on x_T towards the reward-tilted prior, then DAS-style SMC (Yoon et al. 2025)",
    needs: Needs { reward_grad: true, denoiser_vjp: true, trainable_denoiser: false, exact_tilt: false },
};

impl Method for PsiConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    fn validate(&self, chain: &Chain) -> Result<()> {
        check_particles(self.particles)?;
        if !(0.0..1.0).contains(&self.chain_share) {
            return Err(Error::config(
                "chain_share: must be in [0, 1) (the chain's fraction of the rows; default 0.5)",
            ));
        }
        if self.map_steps == 0 || self.map_steps > chain.steps {
            return Err(Error::config(format!(
                "map_steps: must be in 1..={} (the steps of the sampling grid; 1 = x̂0(x_T))",
                chain.steps
            )));
        }
        if !(self.step_size > 0.0 && self.step_size.is_finite()) {
            return Err(Error::config("step_size: must be a positive number (pCNL δ; default 0.5)"));
        }
        self.to_das().validate()?;
        chain.needs_noise(INFO.name)
    }
    /// Chain: K·(S + 1) evaluations of f and ∇f (M − 1 forwards, M VJPs and one reward each; none when S = 0),
    /// then DAS's cost.
    fn cost(&self, steps: usize) -> Cost {
        let (s, k, mm) = (self.mcmc_steps(steps), self.particles as f64, self.map_steps as f64);
        let evals = if s == 0 { 0.0 } else { k * (s as f64 + 1.0) };
        let smc = das_cost(steps, self.particles);
        Cost {
            nfe: smc.nfe + evals * (2.0 * mm - 1.0),
            vjp_denoiser: smc.vjp_denoiser + evals * mm,
            vjp_reward: 0.0,
            reward_calls: smc.reward_calls + evals,
        }
    }
    fn sampler(&self, alpha: f64) -> Result<Box<dyn Sampler>> {
        let das = DasSampler::new(self.to_das(), alpha).named("psi");
        Ok(Box::new(PsiSampler { cfg: self.clone(), alpha, das, accept: vec![] }))
    }
    fn is_smc(&self) -> bool {
        true
    }
}

/// Ψ-sampler state: the chain's acceptance counts and the SMC that follows.
pub struct PsiSampler {
    cfg: PsiConfig,
    alpha: f64,
    das: DasSampler,
    accept: Vec<f64>,
}

/// f(x) = r(D(Φ(x)))/α and ∇f for every row of `x` (Φ: `mm` DDIM η = 0 steps on the thinned grid), counted in the
/// ledger: M − 1 forwards, then M VJPs backwards through the steps (the last one's cotangent from the reward).
pub fn map_value_grad(m: &Model, x: &[f32], cond: &Cond, mm: usize, alpha: f64) -> Result<(Vec<f64>, Vec<f32>)> {
    let (n, d) = (m.grid.len(), m.dim());
    let rows = (x.len() / d) as u64;
    let idx: Vec<usize> = (0..mm).map(|j| j * n / mm).collect();
    // Coefficients of x_{j+1} = A_j·x_j + B_j·ε̂(x_j): A = √a'/√a, B = √(1−a') − √a'·√(1−a)/√a.
    let coef: Vec<(usize, f64, f64)> = (0..mm)
        .map(|j| {
            let a = m.grid.a[idx[j]];
            let ap = if j + 1 < mm { m.grid.a[idx[j + 1]] } else { m.grid.a_prev[n - 1] };
            let c = StepCoef::new(a, ap, 0.0);
            (m.grid.t[idx[j]], c.c_x0 / c.sqrt_a, c.c_eps - c.c_x0 * c.sqrt_1ma / c.sqrt_a)
        })
        .collect();
    let rpe = m.denoiser.rows_per_eval();
    let t0 = std::time::Instant::now();
    let mut xs: Vec<Vec<f32>> = vec![x.to_vec()];
    let mut eps = vec![0f32; x.len()];
    for &(t, a, b) in &coef[..mm - 1] {
        let cur = xs.last().expect("x_0");
        m.denoiser.eps(cur, t, cond, &mut eps)?;
        m.ledger.add_nfe(rows * rpe);
        let next: Vec<f32> = cur.iter().zip(&eps).map(|(xv, e)| (a * *xv as f64 + b * *e as f64) as f32).collect();
        xs.push(next);
    }
    let mut f = vec![0f64; rows as usize];
    let mut u = vec![0f32; x.len()];
    let mut jv = vec![0f32; x.len()];
    for j in (0..mm).rev() {
        let (t, a, b) = coef[j];
        let xj = &xs[j];
        if j == mm - 1 {
            let mut cot = |e: &[f32], uo: &mut [f32]| -> Result<()> {
                let y: Vec<f32> = xj.iter().zip(e).map(|(xv, ev)| (a * *xv as f64 + b * *ev as f64) as f32).collect();
                let mut gy = vec![0f32; y.len()];
                reward_grad(m, &y, cond, &mut f, &mut gy)?;
                let inv = (1.0 / alpha) as f32;
                for (ui, gi) in u.iter_mut().zip(&gy) {
                    *ui = gi * inv;
                }
                for (o, ui) in uo.iter_mut().zip(u.iter()) {
                    *o = b as f32 * ui;
                }
                Ok(())
            };
            m.denoiser.eps_vjp(xj, t, cond, &mut eps, &mut cot, &mut jv)?;
        } else {
            let mut cot = |_e: &[f32], uo: &mut [f32]| -> Result<()> {
                for (o, ui) in uo.iter_mut().zip(u.iter()) {
                    *o = b as f32 * ui;
                }
                Ok(())
            };
            m.denoiser.eps_vjp(xj, t, cond, &mut eps, &mut cot, &mut jv)?;
        }
        m.ledger.add_nfe(rows * rpe);
        m.ledger.add_vjp_denoiser(rows);
        for (ui, jvi) in u.iter_mut().zip(&jv) {
            *ui = (a * *ui as f64) as f32 + jvi;
        }
    }
    m.ledger.add_time(Phase::Denoise, t0);
    for v in f.iter_mut() {
        *v /= alpha;
    }
    Ok((f, u))
}

/// r(D(y)) and ∇_y r(D(y)) per row, counted as decoder and reward rows.
fn reward_grad(m: &Model, y: &[f32], cond: &Cond, r: &mut [f64], g: &mut [f32]) -> Result<()> {
    let rows = r.len() as u64;
    m.ledger.add_decoder(rows);
    m.ledger.add_reward(rows);
    crate::rewards::score_grad_decoded(m.decoder, m.reward, y, cond, r, g)
}

impl PsiSampler {
    /// K pCNL chains per group on the initial noise; returns the final states and their f.
    fn chain(&mut self, m: &Model, b: &Batch) -> Result<(Vec<f32>, Vec<f64>)> {
        let (k, d) = (self.cfg.particles, m.dim());
        let g = b.groups.len();
        let mut x = init_noise(m, b, k);
        let steps = self.cfg.mcmc_steps(m.grid.len());
        self.accept = vec![0.0; g];
        if steps == 0 {
            return Ok((x, vec![0.0; g * k]));
        }
        let cond = b.row_cond(k);
        let (mm, al) = (self.cfg.map_steps, self.alpha);
        let (mut f, mut gr) = map_value_grad(m, &x, &cond, mm, al)?;
        if let Some(bad) = f.iter().find(|v| !v.is_finite()) {
            return Err(Error::numeric("psi", format!("non-finite reward {bad} at the chain's start")));
        }
        let dl = self.cfg.step_size;
        let (rho, kap) = ((2.0 - dl) / (2.0 + dl), 2.0 * dl / (2.0 + dl));
        let s = (1.0 - rho * rho).sqrt();
        let mut xi = vec![0f32; x.len()];
        for j in 0..steps {
            for (gi, &group) in b.groups.iter().enumerate() {
                m.streams.normals(Purpose::Chain, group, 2 * j as u64, &mut xi[gi * k * d..(gi + 1) * k * d]);
            }
            let prop: Vec<f32> =
                (0..x.len()).map(|q| (rho * x[q] as f64 + kap * gr[q] as f64 + s * xi[q] as f64) as f32).collect();
            let (fp, gp) = map_value_grad(m, &prop, &cond, mm, al)?;
            // log q(y | x) up to a constant: −‖y − ρx − κ∇f(x)‖²/(2s²).
            let log_q = |y: &[f32], x: &[f32], g: &[f32]| -> f64 {
                let mut acc = 0.0;
                for q in 0..y.len() {
                    let e = y[q] as f64 - rho * x[q] as f64 - kap * g[q] as f64;
                    acc += e * e;
                }
                -acc / (2.0 * s * s)
            };
            let sq = |v: &[f32]| v.iter().map(|a| *a as f64 * *a as f64).sum::<f64>();
            for (gi, &group) in b.groups.iter().enumerate() {
                let mut rng = m.streams.rng(Purpose::Chain, group, 2 * j as u64 + 1);
                for p in gi * k..(gi + 1) * k {
                    let u = uniform(&mut rng);
                    let r = p * d..(p + 1) * d;
                    let (xo, xn, go, gn) = (&x[r.clone()], &prop[r.clone()], &gr[r.clone()], &gp[r.clone()]);
                    let log_a =
                        (-0.5 * sq(xn) + fp[p]) - (-0.5 * sq(xo) + f[p]) + log_q(xo, xn, gn) - log_q(xn, xo, go);
                    // A non-finite proposal (f or ∇f left the floating-point range) is rejected.
                    if log_a.is_finite() && u.ln() < log_a {
                        x[r.clone()].copy_from_slice(xn);
                        gr[r].copy_from_slice(gn);
                        f[p] = fp[p];
                        self.accept[gi] += 1.0;
                    }
                }
            }
        }
        for a in &mut self.accept {
            *a /= (k * steps) as f64;
        }
        Ok((x, f))
    }
}

impl Sampler for PsiSampler {
    fn init(&mut self, m: &Model, b: &Batch) -> Result<()> {
        let (x, f) = self.chain(m, b)?;
        self.das.init_from(x, f, b.groups.len(), m.dim());
        Ok(())
    }
    fn step(&mut self, m: &Model, b: &Batch, i: usize) -> Result<StepTrace> {
        self.das.step(m, b, i)
    }
    fn finish(&mut self, m: &Model, b: &Batch) -> Result<Vec<GroupOutput>> {
        let chained = self.cfg.mcmc_steps(m.grid.len()) > 0;
        let mut out = self.das.finish(m, b)?;
        for (o, a) in out.iter_mut().zip(&self.accept) {
            o.log_z_hat = None;
            if chained {
                o.stats.push(("mcmc_accept", *a));
            }
        }
        Ok(out)
    }
}
