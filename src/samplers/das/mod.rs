//! DAS — Diffusion Alignment as Sampling: tempered sequential Monte Carlo with the locally optimal Gaussian
//! proposal (Kim, Kim & Park, ICLR 2025, arXiv 2501.05803; methods.md §7).
//!
//! Per step i (methods.md §7.7): look-ahead R = r(D(x̂0)), g = ∇_x R/α; twist τ' = λ_i·R/α; incremental weight
//! ℓ += Δ + τ' − τ; normalise (log Ẑ += LSE); resample when ESS < κK, gathering *every* per-particle array; propose
//! x' = μ + σz + σ²λ_{i+1}g with the closed-form Δ = −σλ(g·z) − ½σ²λ²‖g‖². Final weight r(D(x_0))/α − τ.
//! Non-finite values are counted, never hidden: a particle whose weight is undefined (its state, reward or gradient
//! left the floating-point range — a diverging proposal, e.g. TDS with a poorly conditioned learned denoiser) gets
//! weight zero and is counted in the step trace; a group whose particles all diverged reports log Ẑ = −∞ and its
//! (non-finite) outputs. `reference_bugs` keeps the reference's NaN behaviour instead.
//! TDS (`tds.rs`) is this sampler with λ ≡ 1; plain SMC (`smc.rs`) is this sampler with the pretrained proposal
//! (g ≡ 0, so Δ ≡ 0 and no VJP), methods.md §8, §9.

pub mod tempering;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::guidance::{lookahead, Grad, Look};
use super::kernel::{finish_group, guard, settle, Resampling, ResamplingDefaults};
use super::method::{Chain, Method, MethodInfo, Needs};
use super::particles::{Particles, StaleFields};
pub use super::selection::Selection;
use super::{final_reward, init_noise, step_noise, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::schedule::Grid;
use crate::diffusion::step::StepCoef;
use crate::ledger::Cost;
use crate::{Error, Result};
use tempering::{bisect_lambda, default_gamma, lambda_exp, TemperingKind};

/// The proposal kernel of the SMC family (methods.md §14).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Proposal {
    /// N(μ + σ²λ_next·g, σ²I) with g = ∇_x R/α — DAS and TDS (methods.md §7.2).
    #[default]
    LocallyOptimal,
    /// The pretrained step N(μ, σ²I): no gradient, no VJP, Δ ≡ 0 — plain (bootstrap) SMC (methods.md §9).
    Pretrained,
}

/// A soft value v_t(x) replacing the posterior-mean look-ahead R_i(x) = r(x̂0(x)) in the twist and the proposal
/// gradient — e.g. the exact soft value of the toy (toy.md §3, `oracle_twist`).
pub trait SoftValue: Send + Sync {
    /// v (in reward units, the twist is λ·v/α) and ∇_x v for every row of `x` at loop index `i` of `grid`.
    fn value_grad(&self, grid: &Grid, i: usize, x: &[f32], v: &mut [f64], g: &mut [f32]) -> Result<()>;
}

/// Settings of DAS (and TDS when `tempering: constant`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DasConfig {
    /// Particles K per group.
    pub particles: usize,
    /// Tempering schedule.
    #[serde(default)]
    pub tempering: TemperingKind,
    /// γ of the `exp` schedule; default γ(N) = 2^{1/round(0.87N)} − 1 (0.008 at N = 100).
    #[serde(default)]
    pub gamma: Option<f64>,
    /// Target ESS fraction of the `adaptive` schedule.
    #[serde(default = "half")]
    pub target_ess: f64,
    /// Resampling: ESS-adaptive at κ = 0.5, the default scheme, output selection `resample`.
    #[serde(flatten)]
    pub resampling: Resampling<DasDefaults>,
    /// Reproduce the reference implementation's bugs: g, τ and x̂0 not re-indexed after resampling; Δ as a
    /// difference of explicit Gaussian log-densities (NaN at σ = 0); proposal with λ_i instead of λ_{i+1}.
    #[serde(default)]
    pub reference_bugs: bool,
}

/// DAS's resampling defaults: ESS-adaptive at κ = 0.5 with the default scheme.
#[derive(Clone, Debug, PartialEq)]
pub struct DasDefaults;
impl ResamplingDefaults for DasDefaults {}

fn half() -> f64 {
    0.5
}

impl DasConfig {
    /// `particles` particles with every other setting at its default.
    pub fn with_particles(particles: usize) -> Self {
        DasConfig {
            particles,
            tempering: TemperingKind::default(),
            gamma: None,
            target_ess: half(),
            resampling: Resampling::default(),
            reference_bugs: false,
        }
    }
    /// Check ranges once (plan time).
    pub fn validate(&self) -> Result<()> {
        if self.particles == 0 {
            return Err(Error::config("particles: must be at least 1 (e.g. `particles: 100`)"));
        }
        if !(self.target_ess > 0.0 && self.target_ess <= 1.0) {
            return Err(Error::config("target_ess: must be in (0, 1]"));
        }
        if let Some(g) = self.gamma {
            if !(g > 0.0) {
                return Err(Error::config("gamma: must be > 0 (DAS default 0.008 at 100 steps)"));
            }
        }
        self.resampling.validate(self.particles)
    }
    /// Outputs per group.
    pub fn outputs(&self) -> usize {
        self.resampling.outputs(self.particles)
    }
}

/// `das` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "das",
    about: "DAS: tempered SMC with the locally optimal Gaussian proposal (Kim, Kim & Park 2025)",
    needs: Needs { reward_grad: true, denoiser_vjp: true, trainable_denoiser: false, exact_tilt: false },
};

/// The ledger cost of the locally optimal proposal: a VJP through the denoiser and a look-ahead reward per particle
/// and step, plus the final reward (methods.md §17); shared by DAS and TDS.
pub fn das_cost(steps: usize, k: usize) -> Cost {
    let (n, kf) = (steps as f64, k as f64);
    Cost { vjp_denoiser: n * kf, reward_calls: n * kf + kf, ..Cost::plain(steps, k) }
}

impl Method for DasConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    fn validate(&self, chain: &Chain) -> Result<()> {
        DasConfig::validate(self)?;
        chain.needs_noise(INFO.name)
    }
    fn cost(&self, steps: usize) -> Cost {
        das_cost(steps, self.particles)
    }
    fn sampler(&self, alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(DasSampler::new(self.clone(), alpha)))
    }
    fn is_smc(&self) -> bool {
        true
    }
}

/// DAS state for a batch of groups.
pub struct DasSampler {
    cfg: DasConfig,
    alpha: f64,
    proposal: Proposal,
    value: Option<Arc<dyn SoftValue>>,
    name: &'static str,
    p: Particles,
    z: Vec<f32>,
    log_z: Vec<f64>,
    lambda: Vec<f64>,
}

impl DasSampler {
    /// New sampler at KL coefficient α.
    pub fn new(cfg: DasConfig, alpha: f64) -> Self {
        Self {
            cfg,
            alpha,
            proposal: Proposal::LocallyOptimal,
            value: None,
            name: "das",
            p: Particles::default(),
            z: vec![],
            log_z: vec![],
            lambda: vec![],
        }
    }

    /// Use another proposal kernel.
    pub fn with_proposal(mut self, proposal: Proposal) -> Self {
        self.proposal = proposal;
        self
    }

    /// Use a soft value v_t in place of the look-ahead reward R_i (twist and proposal gradient).
    pub fn with_value(mut self, value: Arc<dyn SoftValue>) -> Self {
        self.value = Some(value);
        self
    }

    /// The method name used in error messages (`das`, `tds`, `smc`).
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Start from given particles `x` (`groups × K` rows) whose law is the prior tilted by `tau0` (per particle,
    /// log-density ratio to N(0, I)): the first twist τ' then replaces τ0 in the weights, so particles drawn from
    /// that tilt start with uniform weight corrections (the Ψ-sampler's posterior-initialised particles).
    pub fn init_from(&mut self, x: Vec<f32>, tau0: Vec<f64>, groups: usize, d: usize) {
        let k = self.cfg.particles;
        self.p = Particles::new(x, groups, k, d);
        self.p.tau = tau0;
        self.z = vec![0.0; groups * k * d];
        self.log_z = vec![0.0; groups];
        self.lambda = vec![0.0; groups];
    }

    fn stale(&self) -> StaleFields {
        let b = self.cfg.reference_bugs;
        StaleFields { guidance: b, twist: b, x0hat: b }
    }
}

/// λ_i of the fixed schedules (`exp`, `constant`) for a grid of `n` steps.
fn lambda_sched(cfg: &DasConfig, n: usize, i: usize) -> f64 {
    match cfg.tempering {
        TemperingKind::Constant => 1.0,
        _ => lambda_exp(cfg.gamma.unwrap_or_else(|| default_gamma(n)), i),
    }
}

impl Sampler for DasSampler {
    fn init(&mut self, m: &Model, b: &Batch) -> Result<()> {
        let (k, d) = (self.cfg.particles, m.dim());
        let g = b.groups.len();
        self.p = Particles::new(init_noise(m, b, k), g, k, d);
        self.z = vec![0.0; g * k * d];
        self.log_z = vec![0.0; g];
        self.lambda = vec![0.0; g];
        Ok(())
    }

    fn step(&mut self, m: &Model, b: &Batch, i: usize) -> Result<StepTrace> {
        let (k, d) = (self.cfg.particles, m.dim());
        let cond = b.row_cond(k);
        let stale = self.stale();
        let cfg = &self.cfg;
        let p = &mut self.p;
        match (&self.value, self.proposal) {
            (Some(v), prop) => {
                lookahead(
                    m,
                    &p.x,
                    &cond,
                    i,
                    Grad::None,
                    false,
                    Look { eps: &mut p.eps, x0: &mut p.x0, r: &mut [], g: &mut [] },
                )?;
                v.value_grad(m.grid, i, &p.x, &mut p.r, &mut p.g)?;
                if prop == Proposal::Pretrained {
                    p.g.iter_mut().for_each(|v| *v = 0.0);
                }
            }
            (None, Proposal::LocallyOptimal) => {
                lookahead(
                    m,
                    &p.x,
                    &cond,
                    i,
                    Grad::Full,
                    true,
                    Look { eps: &mut p.eps, x0: &mut p.x0, r: &mut p.r, g: &mut p.g },
                )?;
            }
            // g stays 0: the proposal is the pretrained step and Δ = 0 exactly.
            (None, Proposal::Pretrained) => {
                lookahead(
                    m,
                    &p.x,
                    &cond,
                    i,
                    Grad::None,
                    true,
                    Look { eps: &mut p.eps, x0: &mut p.x0, r: &mut p.r, g: &mut [] },
                )?;
            }
        }
        let t0 = std::time::Instant::now();
        let inv_alpha = 1.0 / self.alpha;
        let ia = inv_alpha as f32;
        p.g.iter_mut().for_each(|v| *v *= ia);
        let mut trace = StepTrace { groups: b.groups.len() as u64, ..Default::default() };
        let mut lam_p = vec![0.0; b.groups.len()];
        for (gi, &group) in b.groups.iter().enumerate() {
            let rg = gi * k..(gi + 1) * k;
            let lam_i = match cfg.tempering {
                TemperingKind::Adaptive => {
                    let base: Vec<f64> = rg.clone().map(|j| p.log_w[j] + p.delta[j] - p.tau[j]).collect();
                    let s: Vec<f64> = rg.clone().map(|j| p.r[j] * inv_alpha).collect();
                    bisect_lambda(&base, &s, self.lambda[gi], cfg.target_ess * k as f64)
                }
                _ => lambda_sched(cfg, m.grid.len(), i),
            };
            self.lambda[gi] = lam_i;
            lam_p[gi] = match cfg.tempering {
                TemperingKind::Adaptive => lam_i,
                _ if cfg.reference_bugs => lam_i,
                _ => lambda_sched(cfg, m.grid.len(), i + 1),
            };
            trace.lambda_sum += lam_i;
            for j in rg.clone() {
                p.tau_new[j] = lam_i * p.r[j] * inv_alpha;
                p.log_w[j] += p.delta[j] + p.tau_new[j] - p.tau[j];
                if !cfg.reference_bugs {
                    guard(&mut p.log_w[j], &mut trace);
                }
            }
            let log_z = &mut self.log_z[gi];
            settle(m, p, gi, group, i, &cfg.resampling, stale, cfg.reference_bugs, log_z, &mut trace, self.name)?;
        }
        // Proposal x' = μ + σz + σ²λ_p·g and its closed-form log p − log q.
        let c = StepCoef::new(m.grid.a[i], m.grid.a_prev[i], m.eta);
        step_noise(m, b, k, i, &mut self.z);
        let sigma = c.sigma;
        for gi in 0..b.groups.len() {
            let lp = lam_p[gi];
            let shift = (sigma * sigma * lp) as f32;
            for j in gi * k..(gi + 1) * k {
                let r = j * d..(j + 1) * d;
                let (mut gz, mut gg, mut e1, mut e2) = (0f64, 0f64, 0f64, 0f64);
                for q in r {
                    let mu = (c.c_x0 * p.x0[q] as f64 + c.c_eps * p.eps[q] as f64) as f32;
                    let (g, z) = (p.g[q], self.z[q]);
                    let xn = mu + sigma as f32 * z + shift * g;
                    if cfg.reference_bugs {
                        let d1 = (xn - mu) as f64;
                        let d2 = (xn - mu - shift * g) as f64;
                        e1 += d1 * d1;
                        e2 += d2 * d2;
                    }
                    p.x[q] = xn;
                    gz += g as f64 * z as f64;
                    gg += g as f64 * g as f64;
                }
                p.delta[j] = if cfg.reference_bugs {
                    (-e1 + e2) / (2.0 * sigma * sigma)
                } else {
                    -sigma * lp * gz - 0.5 * sigma * sigma * lp * lp * gg
                };
            }
        }
        std::mem::swap(&mut p.tau, &mut p.tau_new);
        m.ledger.add_time(crate::ledger::Phase::Smc, t0);
        Ok(trace)
    }

    fn finish(&mut self, m: &Model, b: &Batch) -> Result<Vec<GroupOutput>> {
        let k = self.cfg.particles;
        let r = final_reward(m, b, &self.p.x)?;
        let inv_alpha = 1.0 / self.alpha;
        let bugs = self.cfg.reference_bugs;
        let mut outs = Vec::with_capacity(b.groups.len());
        for (gi, &group) in b.groups.iter().enumerate() {
            let p = &mut self.p;
            for j in gi * k..(gi + 1) * k {
                p.log_w[j] += p.delta[j] + r[j] * inv_alpha - p.tau[j];
                if !bugs && !p.log_w[j].is_finite() {
                    p.log_w[j] = f64::NEG_INFINITY;
                }
            }
            outs.push(finish_group(m, p, gi, group, &r, self.log_z[gi], &self.cfg.resampling, bugs, self.name)?);
        }
        Ok(outs)
    }
}
