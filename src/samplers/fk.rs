//! FK steering (Singhal et al. 2025; methods.md §10): particles move with the pretrained step; at the resampling
//! steps S = {s_start, s_start + Δs, …, ≤ s_end} each particle is weighted by a potential G of its look-ahead reward
//! r_k = R_{s_k} (`max`, `diff`, `add`, `rt`; `potentials.rs`) and the system resamples (at every step of S, as in
//! the reference, or ESS-adaptively — weights of steps that do not resample are carried, not dropped). After the
//! last step the potential λ·r(D(x_0)) − Σ_{path} log G makes the product along every path exactly exp(λ·r_final),
//! so the outputs target p·exp(λr) and log Ẑ estimates log E[exp(λr)] (λ = 1/α by default).

use serde::{Deserialize, Serialize};

use super::guidance::{lookahead, Grad, Look};
use super::particles::{Particles, StaleFields};
use super::potentials::Potential;
use super::resampling::{ResampleWhen, Resampler};
use super::selection::{select, Selection};
use super::{final_reward, init_noise, step_noise, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::step::{mean, StepCoef};
use crate::rng::Purpose;
use crate::{Error, Result};

/// Settings of FK steering (defaults: the reference's `launch.sh` except λ = 1/α).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// `always` (resample at every step of S; reference) or `ess` (only when ESS < κK).
    #[serde(default = "always")]
    pub resample: ResampleWhen,
    /// κ of ESS-adaptive resampling.
    #[serde(default = "half")]
    pub ess_threshold: f64,
    /// Resampling scheme (reference: multinomial).
    #[serde(default = "multinomial")]
    pub resampler: Resampler,
    /// Output selection.
    #[serde(default)]
    pub selection: Selection,
    /// Outputs per group for `resample` and `toy_compat` (default K).
    #[serde(default)]
    pub n_out: Option<usize>,
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
fn always() -> ResampleWhen {
    ResampleWhen::Always
}
fn half() -> f64 {
    0.5
}
fn multinomial() -> Resampler {
    Resampler::Multinomial
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
        if !(0.0..=1.0).contains(&self.ess_threshold) {
            return Err(Error::config("ess_threshold: must be in [0, 1]"));
        }
        if !self.reward_min.is_finite() {
            return Err(Error::config("reward_min: must be a finite number"));
        }
        self.selection.validate(self.particles, self.n_out)
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
                    if !p.log_w[j].is_finite() {
                        // Zero weight for a particle with an undefined potential (as in DAS); counted.
                        p.log_w[j] = f64::NEG_INFINITY;
                        trace.non_finite += 1;
                    }
                }
                let l = p.normalise(gi);
                if l == f64::NEG_INFINITY {
                    self.log_z[gi] = f64::NEG_INFINITY;
                    continue;
                }
                if !l.is_finite() {
                    return Err(Error::numeric("fk", format!("log-weights of group {group} sum to {l} at step {i}")));
                }
                self.log_z[gi] += l;
                let e = p.ess(gi);
                trace.ess_sum += e;
                trace.lambda_sum += self.lambda;
                if cfg.resample.fires(e, k, cfg.ess_threshold) {
                    let mut rng = m.streams.rng(Purpose::Resample, group, i as u64);
                    p.resample(gi, cfg.resampler, &mut rng, StaleFields::default());
                    trace.resampled += 1;
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
        let (k, d) = (self.cfg.particles, m.dim());
        let r = final_reward(m, b, &self.p.x)?;
        let n_out = self.cfg.selection.outputs(k, self.cfg.n_out);
        let mut outs = Vec::with_capacity(b.groups.len());
        for (gi, &group) in b.groups.iter().enumerate() {
            let p = &mut self.p;
            for j in gi * k..(gi + 1) * k {
                p.log_w[j] += Potential::final_log_g(self.lambda, r[j], p.aux[2 * j + 1]);
                if !p.log_w[j].is_finite() {
                    p.log_w[j] = f64::NEG_INFINITY;
                }
            }
            let lw = p.log_w[gi * k..(gi + 1) * k].to_vec();
            let l = super::logspace::lse(&lw);
            if !l.is_finite() && l != f64::NEG_INFINITY {
                return Err(Error::numeric("fk", format!("final log-weights of group {group} sum to {l}")));
            }
            let mut rng = m.streams.rng(Purpose::Select, group, 0);
            let (idx, weights) = if l == f64::NEG_INFINITY {
                let n = n_out.min(k);
                ((0..n).collect(), vec![1.0 / n as f64; n])
            } else {
                select(self.cfg.selection, self.cfg.resampler, self.cfg.ess_threshold, &lw, n_out, &mut rng, "fk")?
            };
            let base = gi * k;
            outs.push(GroupOutput {
                samples: idx.iter().flat_map(|&j| p.x[(base + j) * d..(base + j + 1) * d].iter().copied()).collect(),
                weights,
                rewards: idx.iter().map(|&j| r[base + j]).collect(),
                log_z_hat: Some(if l == f64::NEG_INFINITY { l } else { self.log_z[gi] + l }),
            });
        }
        Ok(outs)
    }
}
