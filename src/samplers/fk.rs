//! FK steering (Singhal et al. 2025; methods.md §10): particles move with the pretrained step; at the resampling
//! steps S = {s_start, s_start + Δs, …, ≤ s_end} each particle is weighted by a potential G of its look-ahead reward
//! r_k = R_{s_k} (`max`, `diff`, `add`, `rt`; `potentials.rs`) and the system resamples (at every step of S, as in
//! the reference, or ESS-adaptively — weights of steps that do not resample are carried, not dropped). After the
//! last step the potential λ·r(D(x_0)) − Σ_{path} log G makes the product along every path exactly exp(λ·r_final),
//! so the outputs target p·exp(λr) and log Ẑ estimates log E[exp(λr)] (λ = 1/α by default).

use serde::{Deserialize, Serialize};

use super::guidance::{lookahead, Grad, Look};
use super::kernel::{finish_group, guard, settle, Resampling, ResamplingDefaults, Settled};
use super::method::{Chain, Method, MethodInfo, Needs};
use super::particles::{Particles, StaleFields};
use super::potentials::Potential;
use super::resampling::{ResampleWhen, Resampler};
use super::{final_reward, init_noise, step_noise, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::step::{mean, StepCoef};
use crate::ledger::Cost;
use crate::{Error, Result};

/// Settings of FK steering (defaults: the reference's `launch.sh` except λ = 1/α).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FkConfig {
    /// Particles K per group.
    pub particles: usize,
    /// Potential (reference: `max`).
    #[serde(default)]
    pub potential: Potential,
    /// Potential strength λ_fk (default 1/α: the exact tilt of the target p·exp(r/α)).
    #[serde(default)]
    pub lambda: Option<f64>,
    /// Δs: loop steps between resampling steps (reference: 20 of 100).
    #[serde(default = "twenty")]
    pub interval: usize,
    /// First resampling step s_start as a fraction of N over the loop index i (reference 0.2: step 20 of 100).
    #[serde(default = "ref_start")]
    pub start: f64,
    /// Last possible resampling step s_end as a fraction of N (reference 0.8: step 80 of 100).
    #[serde(default = "ref_end")]
    pub end: f64,
    /// Resampling: `always` at the steps of S (reference; `ess`: only when ESS < κK), multinomial scheme.
    #[serde(flatten)]
    pub resampling: Resampling<FkDefaults>,
    /// r_min: initial running state of `max`, `diff` and `add` (reference `reward_min_value` = 0; with rewards
    /// that are never positive, `max` needs a lower value to steer at all).
    #[serde(default)]
    pub reward_min: f64,
}

fn twenty() -> usize {
    20
}
fn ref_start() -> f64 {
    0.2
}
fn ref_end() -> f64 {
    0.8
}
/// FK's resampling defaults: the reference resamples at every step of S with the multinomial scheme.
#[derive(Clone, Debug, PartialEq)]
pub struct FkDefaults;
impl ResamplingDefaults for FkDefaults {
    fn resample() -> ResampleWhen {
        ResampleWhen::Always
    }
    fn resampler() -> Resampler {
        Resampler::Multinomial
    }
}

impl FkConfig {
    /// Check ranges once (plan time).
    pub fn validate(&self) -> Result<()> {
        if self.particles == 0 {
            return Err(Error::config("particles: must be at least 1 (e.g. `particles: 4`)"));
        }
        if self.interval == 0 {
            return Err(Error::config(
                "interval: must be at least 1 (loop steps between resampling steps; reference 20)",
            ));
        }
        let (a, b) = (self.start, self.end);
        if !(0.0 <= a && a <= b && b <= 1.0) {
            return Err(Error::config(format!(
                "start, end: must satisfy 0 ≤ start ≤ end ≤ 1 (fractions of N), got {a} and {b}"
            )));
        }
        if let Some(l) = self.lambda {
            if !(l >= 0.0) || !l.is_finite() {
                return Err(Error::config("lambda: must be a finite number ≥ 0 (default 1/α)"));
            }
        }
        if !self.reward_min.is_finite() {
            return Err(Error::config("reward_min: must be a finite number"));
        }
        self.resampling.validate(self.particles)
    }

    /// Whether loop index i of an `n`-step grid is a resampling step (i ∈ S).
    pub fn schedule(&self, n: usize) -> Vec<bool> {
        let start = (self.start * n as f64).round() as usize;
        let end = ((self.end * n as f64).round() as usize).min(n.saturating_sub(1));
        (0..n).map(|i| i >= start && i <= end && (i - start) % self.interval == 0).collect()
    }

    /// |S| for an `n`-step grid.
    pub fn resampling_steps(&self, n: usize) -> usize {
        self.schedule(n).iter().filter(|&&b| b).count()
    }
}

/// FK-steering state for a batch of groups. `aux` columns: 0 = running potential state, 1 = Σ log G of the path.
pub struct FkSampler {
    cfg: FkConfig,
    lambda: f64,
    in_s: Vec<bool>,
    p: Particles,
    z: Vec<f32>,
    log_z: Vec<f64>,
}

impl FkSampler {
    /// New sampler at KL coefficient α.
    pub fn new(cfg: FkConfig, alpha: f64) -> Self {
        let lambda = cfg.lambda.unwrap_or(1.0 / alpha);
        Self { cfg, lambda, in_s: vec![], p: Particles::default(), z: vec![], log_z: vec![] }
    }
}

impl Sampler for FkSampler {
    fn init(&mut self, m: &Model, b: &Batch) -> Result<()> {
        let (k, d, g) = (self.cfg.particles, m.dim(), b.groups.len());
        self.in_s = self.cfg.schedule(m.grid.len());
        self.p = Particles::new(init_noise(m, b, k), g, k, d).with_aux(2, 0.0);
        for j in 0..g * k {
            self.p.aux[2 * j] = self.cfg.reward_min;
        }
        self.z = vec![0.0; g * k * d];
        self.log_z = vec![0.0; g];
        Ok(())
    }

    fn step(&mut self, m: &Model, b: &Batch, i: usize) -> Result<StepTrace> {
        let (k, cfg) = (self.cfg.particles, &self.cfg);
        let cond = b.row_cond(k);
        let p = &mut self.p;
        let weigh = self.in_s[i];
        let r: &mut [f64] = if weigh { &mut p.r } else { &mut [] };
        lookahead(m, &p.x, &cond, i, Grad::None, weigh, Look { eps: &mut p.eps, x0: &mut p.x0, r, g: &mut [] })?;
        let mut trace = StepTrace { groups: b.groups.len() as u64, ..Default::default() };
        if weigh {
            for (gi, &group) in b.groups.iter().enumerate() {
                for j in gi * k..(gi + 1) * k {
                    let (lg, state) = cfg.potential.log_g(self.lambda, p.r[j], p.aux[2 * j]);
                    p.aux[2 * j] = state;
                    p.aux[2 * j + 1] += lg;
                    p.log_w[j] += lg;
                    guard(&mut p.log_w[j], &mut trace);
                }
                let log_z = &mut self.log_z[gi];
                let rs = &cfg.resampling;
                if settle(m, p, gi, group, i, rs, StaleFields::default(), false, log_z, &mut trace, "fk")?
                    == Settled::Alive
                {
                    trace.lambda_sum += self.lambda;
                }
            }
        }
        // Pretrained proposal x' = μ + σz (the same arithmetic as unguided DDIM).
        let c = StepCoef::new(m.grid.a[i], m.grid.a_prev[i], m.eta);
        step_noise(m, b, k, i, &mut self.z);
        mean(&c, &p.x0, &p.eps, &mut p.x);
        let s = c.sigma as f32;
        for (x, z) in p.x.iter_mut().zip(&self.z) {
            *x += s * z;
        }
        Ok(trace)
    }

    fn finish(&mut self, m: &Model, b: &Batch) -> Result<Vec<GroupOutput>> {
        let k = self.cfg.particles;
        let r = final_reward(m, b, &self.p.x)?;
        let mut outs = Vec::with_capacity(b.groups.len());
        for (gi, &group) in b.groups.iter().enumerate() {
            let p = &mut self.p;
            for j in gi * k..(gi + 1) * k {
                p.log_w[j] += Potential::final_log_g(self.lambda, r[j], p.aux[2 * j + 1]);
                if !p.log_w[j].is_finite() {
                    p.log_w[j] = f64::NEG_INFINITY;
                }
            }
            outs.push(finish_group(m, p, gi, group, &r, self.log_z[gi], &self.cfg.resampling, false, "fk")?);
        }
        Ok(outs)
    }
}

/// `fk` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "fk",
    about: "FK steering: potentials max/diff/add/rt at resampling steps (Singhal et al. 2025)",
    needs: Needs { reward_grad: false, denoiser_vjp: false, trainable_denoiser: false, exact_tilt: false },
};

impl Method for FkConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    fn validate(&self, chain: &Chain) -> Result<()> {
        FkConfig::validate(self)?;
        chain.needs_noise(INFO.name)
    }
    /// Look-ahead rewards at the resampling steps only, plus the final reward.
    fn cost(&self, steps: usize) -> Cost {
        let k = self.particles as f64;
        Cost { reward_calls: k * (self.resampling_steps(steps) as f64 + 1.0), ..Cost::plain(steps, self.particles) }
    }
    fn sampler(&self, alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(FkSampler::new(self.clone(), alpha)))
    }
    fn is_smc(&self) -> bool {
        true
    }
}
