//! The norm-matched gradient step shared by FreeDoM (Yu et al. 2023; methods.md §5) and MPGD (He et al. 2024;
//! methods.md §6). Inside the guidance window a step is pushed along a reward gradient scaled to
//! ρ_t = ρ·rms(ε̂)/rms(g); inside the time-travel window each step is repeated R times, re-noising x_p back to t_i
//! after every pass but the last (x ← √(a/a')·x_p + √(1−a/a')·z'). The two methods differ only in where the
//! gradient is taken and applied ([`Target`]):
//!
//! - FreeDoM: g = ∇_{x_t} r(D(x̂0(x_t))) through the denoiser (a VJP), applied to the DDPM draw: x_p += ρ_t·g.
//! - MPGD: g0 = ∇_{x̂0} r(D(x̂0)) only (no denoiser backprop, counted as `vjp_reward`), applied to x̂0:
//!   x̂0 += ρ_t·g0, and the step continues from the updated x̂0 with the ε-free form
//!   μ = √a'·x̂0 + √(1−a'−σ²)·(x_t − √a·x̂0)/√(1−a).

use super::guidance::{lookahead, norm_matched, posterior_draw, travel_back, Grad, Look, NormScope, Window};
use super::{final_reward, independent_outputs, init_noise, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::step::{eps_from_x0, StepCoef};
use crate::ledger::Cost;
use crate::{Error, Result};

/// Where the norm-matched step takes its gradient and applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// FreeDoM: the full gradient through the denoiser, added to the DDPM draw x_p.
    State,
    /// MPGD: the gradient w.r.t. x̂0 only, added to x̂0 (optionally divided by √a', the paper's implementation).
    X0 {
        /// Divide ρ_t by √a'.
        divide_sqrt_a_prev: bool,
    },
}

/// The resolved settings of one norm-matched guided sampler.
#[derive(Clone, Debug, PartialEq)]
pub struct NormMatched {
    /// Independent samples per group.
    pub particles: usize,
    /// ρ of the norm-matched step.
    pub rho: f64,
    /// Guidance window over j = N−1−i.
    pub window: Window,
    /// Time-travel window over j.
    pub travel_window: Window,
    /// Passes per step inside the time-travel window (1 = no time travel).
    pub repeats: usize,
    /// rms per sample or per prompt group.
    pub norm_scope: NormScope,
    /// FreeDoM or MPGD.
    pub target: Target,
}

impl NormMatched {
    /// Passes at loop index i of an `n`-step grid.
    pub fn passes(&self, i: usize, n: usize) -> usize {
        if self.travel_window.contains(i, n) {
            self.repeats
        } else {
            1
        }
    }

    /// Range checks; `reference` names the reference values in the messages (e.g. "reference 3", "reference 0.2").
    pub fn validate(&self, reference_repeats: &str, reference_rho: &str) -> Result<()> {
        if self.particles == 0 {
            return Err(Error::config("particles: must be at least 1"));
        }
        if self.repeats == 0 {
            return Err(Error::config(format!("repeats: must be at least 1 ({reference_repeats})")));
        }
        if !self.rho.is_finite() {
            return Err(Error::config(format!("rho: must be a finite number ({reference_rho})")));
        }
        self.window.validate("window")?;
        self.travel_window.validate("travel_window")
    }

    /// Ledger cost of one group: every pass is a denoiser forward; passes inside the guidance window add a
    /// gradient (a denoiser VJP for FreeDoM, a reward∘decoder VJP for MPGD) and its look-ahead reward.
    pub fn cost(&self, steps: usize) -> Cost {
        let k = self.particles as f64;
        let (mut fwd, mut vjp) = (0.0, 0.0);
        for i in 0..steps {
            let r = self.passes(i, steps) as f64;
            fwd += r;
            if self.window.contains(i, steps) {
                vjp += r;
            }
        }
        match self.target {
            Target::State => Cost { nfe: fwd * k, vjp_denoiser: vjp * k, reward_calls: vjp * k + k, vjp_reward: 0.0 },
            Target::X0 { .. } => {
                Cost { nfe: fwd * k, vjp_denoiser: 0.0, vjp_reward: vjp * k, reward_calls: vjp * k + k }
            }
        }
    }
}

/// Sampler state for a batch.
pub struct NormMatchedSampler {
    cfg: NormMatched,
    x: Vec<f32>,
}

impl NormMatchedSampler {
    /// New sampler.
    pub fn new(cfg: NormMatched) -> Self {
        Self { cfg, x: vec![] }
    }
}

impl Sampler for NormMatchedSampler {
    fn init(&mut self, m: &Model, b: &Batch) -> Result<()> {
        self.x = init_noise(m, b, self.cfg.particles);
        Ok(())
    }

    fn step(&mut self, m: &Model, b: &Batch, i: usize) -> Result<StepTrace> {
        let (k, d, n) = (self.cfg.particles, m.dim(), m.grid.len());
        let cond = b.row_cond(k);
        let len = self.x.len();
        let guided = self.cfg.window.contains(i, n);
        let passes = self.cfg.passes(i, n);
        let c = StepCoef::new(m.grid.a[i], m.grid.a_prev[i], m.eta);
        let (mut eps, mut x0, mut g, mut z) = (vec![0f32; len], vec![0f32; len], vec![0f32; len], vec![0f32; len]);
        let mut r = vec![0f64; len / d];
        let mut x_p = vec![0f32; len];
        let mut x = std::mem::take(&mut self.x);
        for pass in 0..passes {
            let look = Look { eps: &mut eps, x0: &mut x0, r: &mut r, g: &mut g };
            match self.cfg.target {
                Target::State => {
                    let grad = if guided { Grad::Full } else { Grad::None };
                    lookahead(m, &x, &cond, i, grad, guided, look)?;
                    posterior_draw(m, b, i, pass, &x0, &eps, &mut z, &mut x_p);
                    if guided {
                        let rho_t = norm_matched(self.cfg.rho, &eps, &g, d, k, self.cfg.norm_scope);
                        for (row, &rt) in rho_t.iter().enumerate() {
                            if rt != 0.0 {
                                for q in row * d..(row + 1) * d {
                                    x_p[q] += rt as f32 * g[q];
                                }
                            }
                        }
                    }
                }
                Target::X0 { divide_sqrt_a_prev } => {
                    let grad = if guided { Grad::X0Only } else { Grad::None };
                    lookahead(m, &x, &cond, i, grad, false, look)?;
                    if guided {
                        let mut rho_t = norm_matched(self.cfg.rho, &eps, &g, d, k, self.cfg.norm_scope);
                        if divide_sqrt_a_prev {
                            rho_t.iter_mut().for_each(|v| *v /= c.c_x0);
                        }
                        for (row, &rt) in rho_t.iter().enumerate() {
                            if rt != 0.0 {
                                let rg = row * d..(row + 1) * d;
                                for q in rg.clone() {
                                    x0[q] += rt as f32 * g[q];
                                }
                                // Continue from the updated x̂0 with the ε-free form (ε recomputed from x_t and x̂0).
                                eps_from_x0(&c, &x[rg.clone()], &x0[rg.clone()], &mut eps[rg]);
                            }
                        }
                    }
                    posterior_draw(m, b, i, pass, &x0, &eps, &mut z, &mut x_p);
                }
            }
            if pass + 1 < passes {
                travel_back(m, b, i, pass, &x_p, &mut z, &mut x);
            }
        }
        self.x = x_p;
        Ok(StepTrace { groups: b.groups.len() as u64, ..Default::default() })
    }

    fn finish(&mut self, m: &Model, b: &Batch) -> Result<Vec<GroupOutput>> {
        let r = final_reward(m, b, &self.x)?;
        Ok(independent_outputs(&self.x, &r, b.groups.len(), self.cfg.particles, m.dim()))
    }
}
