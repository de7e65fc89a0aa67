//! MPGD — manifold-preserving guided diffusion (He et al. 2024; methods.md §6): the gradient is taken w.r.t. x̂0
//! only (no backprop through the denoiser, counted as `vjp_reward`), x̂0 ← x̂0 + ρ_t·g0 with the norm-matched
//! ρ_t = ρ·rms(ε̂)/rms(g0) inside the window j ∈ [0.3N, 0.7N), and the step continues from the updated x̂0 with the
//! ε-free form μ = √a'·x̂0 + √(1−a'−σ²)·(x_t − √a·x̂0)/√(1−a) (= c1·x̂0 + c2·x_t at η = 1). Optional time travel
//! (`repeats`, reference tt = 1) as in FreeDoM. Reference: ρ = 15, N = 100.

use serde::{Deserialize, Serialize};

use super::guidance::{lookahead, norm_matched, posterior_draw, travel_back, Grad, Look, NormScope, Window};
use super::{final_reward, independent_outputs, init_noise, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::step::{eps_from_x0, StepCoef};
use crate::{Error, Result};

/// Settings of MPGD (defaults: the reference run script).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MpgdConfig {
    /// Independent samples per group.
    #[serde(default = "one")]
    pub particles: usize,
    /// ρ of the norm-matched x̂0 step (reference 15, "15–30 is fine").
    #[serde(default = "rho")]
    pub rho: f64,
    /// Guidance window `{ from, to }` over j = N−1−i, fractions of N (reference { from: 0.3, to: 0.7 }).
    #[serde(default = "guide")]
    pub window: Window,
    /// Time-travel window `{ from, to }` over j, fractions of N (reference { from: 0.4, to: 0.7 }).
    #[serde(default = "travel")]
    pub travel_window: Window,
    /// Passes per step inside the time-travel window (reference tt = 1: no time travel).
    #[serde(default = "one")]
    pub repeats: usize,
    /// Divide ρ_t by √a' (the paper's implementation; commented out in the repository).
    #[serde(default)]
    pub divide_sqrt_a_prev: bool,
    /// rms per `sample` (default) or per prompt `group`.
    #[serde(default)]
    pub norm_scope: NormScope,
}

fn one() -> usize {
    1
}
fn rho() -> f64 {
    15.0
}
fn guide() -> Window {
    Window::new(0.3, 0.7)
}
fn travel() -> Window {
    Window::new(0.4, 0.7)
}

impl MpgdConfig {
    /// Check ranges once (plan time).
    pub fn validate(&self) -> Result<()> {
        if self.particles == 0 {
            return Err(Error::config("particles: must be at least 1"));
        }
        if self.repeats == 0 {
            return Err(Error::config("repeats: must be at least 1 (reference tt = 1)"));
        }
        if !self.rho.is_finite() {
            return Err(Error::config("rho: must be a finite number (reference 15)"));
        }
        self.window.validate("window")?;
        self.travel_window.validate("travel_window")
    }
    /// Passes at loop index i of an `n`-step grid.
    pub fn passes(&self, i: usize, n: usize) -> usize {
        if self.travel_window.contains(i, n) {
            self.repeats
        } else {
            1
        }
    }
}

/// MPGD state for a batch.
pub struct MpgdSampler {
    cfg: MpgdConfig,
    x: Vec<f32>,
}

impl MpgdSampler {
    /// New sampler.
    pub fn new(cfg: MpgdConfig) -> Self {
        Self { cfg, x: vec![] }
    }
}

impl Sampler for MpgdSampler {
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
        let (mut eps, mut x0, mut g0, mut z) = (vec![0f32; len], vec![0f32; len], vec![0f32; len], vec![0f32; len]);
        let mut r = vec![0f64; len / d];
        let mut x_p = vec![0f32; len];
        let mut x = std::mem::take(&mut self.x);
        for pass in 0..passes {
            let grad = if guided { Grad::X0Only } else { Grad::None };
            lookahead(m, &x, &cond, i, grad, false, Look { eps: &mut eps, x0: &mut x0, r: &mut r, g: &mut g0 })?;
            if guided {
                let mut rho_t = norm_matched(self.cfg.rho, &eps, &g0, d, k, self.cfg.norm_scope);
                if self.cfg.divide_sqrt_a_prev {
                    rho_t.iter_mut().for_each(|v| *v /= c.c_x0);
                }
                for (row, &rt) in rho_t.iter().enumerate() {
                    if rt != 0.0 {
                        let rg = row * d..(row + 1) * d;
                        for q in rg.clone() {
                            x0[q] += rt as f32 * g0[q];
                        }
                        // Continue from the updated x̂0 with the ε-free form (ε recomputed from x_t and x̂0).
                        eps_from_x0(&c, &x[rg.clone()], &x0[rg.clone()], &mut eps[rg]);
                    }
                }
            }
            posterior_draw(m, b, i, pass, &x0, &eps, &mut z, &mut x_p);
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
