//! FreeDoM (Yu et al. 2023; methods.md §5), energy L = −r: inside the guidance window the DDPM step is pushed along
//! the full gradient g = ∇_{x_t} r(D(x̂0(x_t))) with a norm-matched step ρ_t = ρ·rms(ε̂)/rms(g) (`ref_scale:
//! rms_eps`, the no-CFG replacement of w·rms(ε_c − ε_u)), and inside the time-travel window each step is repeated
//! R times: after every pass but the last, x_p is re-noised back to t_i, x ← √(a/a')·x_p + √(1−a/a')·z'.
//! Reference: N = 100, guidance j ∈ [30, 70), time travel j ∈ [40, 70) × 3, ρ = 0.2 (windows scaled as fractions
//! of N [design]).

use serde::{Deserialize, Serialize};

use super::guidance::{lookahead, norm_matched, posterior_draw, travel_back, Grad, Look, NormScope, Window};
use super::{final_reward, independent_outputs, init_noise, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::{Error, Result};

/// Settings of FreeDoM (defaults: the reference repository).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreedomConfig {
    /// Independent samples per group.
    #[serde(default = "one")]
    pub particles: usize,
    /// ρ of the norm-matched step (reference 0.2).
    #[serde(default = "rho")]
    pub rho: f64,
    /// Guidance window `{ from, to }` over j = N−1−i, fractions of N (reference { from: 0.3, to: 0.7 }).
    #[serde(default = "guide")]
    pub window: Window,
    /// Time-travel window `{ from, to }` over j, fractions of N (reference { from: 0.4, to: 0.7 }).
    #[serde(default = "travel")]
    pub travel_window: Window,
    /// Passes R per step inside the time-travel window (reference 3; 1 = no time travel).
    #[serde(default = "three")]
    pub repeats: usize,
    /// rms per `sample` (default) or per prompt `group` (the reference's one scalar per batch).
    #[serde(default)]
    pub norm_scope: NormScope,
}

fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn rho() -> f64 {
    0.2
}
fn guide() -> Window {
    Window::new(0.3, 0.7)
}
fn travel() -> Window {
    Window::new(0.4, 0.7)
}

impl FreedomConfig {
    /// Check ranges once (plan time).
    pub fn validate(&self) -> Result<()> {
        if self.particles == 0 {
            return Err(Error::config("particles: must be at least 1"));
        }
        if self.repeats == 0 {
            return Err(Error::config("repeats: must be at least 1 (1 = no time travel; reference 3)"));
        }
        if !self.rho.is_finite() {
            return Err(Error::config("rho: must be a finite number (reference 0.2)"));
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

/// FreeDoM state for a batch.
pub struct FreedomSampler {
    cfg: FreedomConfig,
    x: Vec<f32>,
}

impl FreedomSampler {
    /// New sampler.
    pub fn new(cfg: FreedomConfig) -> Self {
        Self { cfg, x: vec![] }
    }
}

impl Sampler for FreedomSampler {
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
        let (mut eps, mut x0, mut g, mut z) = (vec![0f32; len], vec![0f32; len], vec![0f32; len], vec![0f32; len]);
        let mut r = vec![0f64; len / d];
        let mut x_p = vec![0f32; len];
        let mut x = std::mem::take(&mut self.x);
        for pass in 0..passes {
            let grad = if guided { Grad::Full } else { Grad::None };
            lookahead(m, &x, &cond, i, grad, guided, Look { eps: &mut eps, x0: &mut x0, r: &mut r, g: &mut g })?;
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
