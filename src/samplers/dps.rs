//! DPS-style reward guidance (Chung et al. 2023, as reward ascent; methods.md §4), K = 1 per chain, no weights:
//! x_p = μ + σ·z + s_i·g with the full gradient g = ∇_{x_t} r(D(x̂0(x_t))) (a VJP through the denoiser).
//!
//! | `step_size` | s_i |
//! |---|---|
//! | `constant` | ρ (reference toy "approximate guidance": ρ = 1, which diverges on the toy) |
//! | `variance_scaled` | ρ·λ_next,i·σ_i² (ρ default 1/α; with DAS's tempering this is K = 1 DAS exactly) |
//! | `rms_normalized` | ρ/rms(g) (a unit-rms step) |
//!
//! Options: a guidance window over j = N−1−i and a per-sample gradient-norm clip.

use serde::{Deserialize, Serialize};

use super::das::tempering::{default_gamma, lambda_exp, TemperingKind};
use super::guidance::{lookahead, rms, Grad, Look, Window};
use super::method::{Chain, Method, MethodInfo, Needs};
use super::{final_reward, independent_outputs, init_noise, step_noise, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::step::StepCoef;
use crate::ledger::Cost;
use crate::{Error, Result};

/// The step-size rule s_i of DPS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepSize {
    /// s_i = ρ (the reference toy's unscaled step; ρ default 1).
    #[default]
    Constant,
    /// s_i = ρ·λ_next,i·σ_i² (ρ default 1/α).
    VarianceScaled,
    /// s_i = ρ/rms(g) (ρ default 1).
    RmsNormalized,
}

/// Settings of DPS.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpsConfig {
    /// Independent samples per group.
    #[serde(default = "one")]
    pub particles: usize,
    /// Step-size rule.
    #[serde(default)]
    pub step_size: StepSize,
    /// ρ (default: 1 for `constant` and `rms_normalized`, 1/α for `variance_scaled`).
    #[serde(default)]
    pub rho: Option<f64>,
    /// λ_next of `variance_scaled`: `constant` (λ ≡ 1, default) or DAS's `exp` schedule.
    #[serde(default = "constant")]
    pub tempering: TemperingKind,
    /// γ of the `exp` schedule.
    #[serde(default)]
    pub gamma: Option<f64>,
    /// Guidance window `{ from, to }` over j = N−1−i as fractions of N (default: every step).
    #[serde(default = "everywhere")]
    pub window: Window,
    /// Clip ‖g‖ of each sample to this value before stepping.
    #[serde(default)]
    pub clip: Option<f64>,
}

fn one() -> usize {
    1
}
fn constant() -> TemperingKind {
    TemperingKind::Constant
}
fn everywhere() -> Window {
    Window::new(0.0, 1.0)
}

impl DpsConfig {
    /// Check ranges once (plan time).
    pub fn validate(&self) -> Result<()> {
        if self.particles == 0 {
            return Err(Error::config("particles: must be at least 1"));
        }
        if let Some(r) = self.rho {
            if !r.is_finite() {
                return Err(Error::config("rho: must be a finite number"));
            }
        }
        if self.tempering == TemperingKind::Adaptive {
            return Err(Error::config("tempering: DPS has no weights to adapt to; use `constant` or `exp`"));
        }
        if let Some(c) = self.clip {
            if !(c > 0.0) {
                return Err(Error::config("clip: must be > 0 (a gradient-norm bound)"));
            }
        }
        self.window.validate("window")
    }
    /// ρ with its default for the step-size rule.
    pub fn rho(&self, alpha: f64) -> f64 {
        self.rho.unwrap_or(match self.step_size {
            StepSize::VarianceScaled => 1.0 / alpha,
            _ => 1.0,
        })
    }
}

/// DPS state for a batch.
pub struct DpsSampler {
    cfg: DpsConfig,
    alpha: f64,
    x: Vec<f32>,
    eps: Vec<f32>,
    x0: Vec<f32>,
    r: Vec<f64>,
    g: Vec<f32>,
    z: Vec<f32>,
}

impl DpsSampler {
    /// New sampler at KL coefficient α.
    pub fn new(cfg: DpsConfig, alpha: f64) -> Self {
        Self { cfg, alpha, x: vec![], eps: vec![], x0: vec![], r: vec![], g: vec![], z: vec![] }
    }
}

impl Sampler for DpsSampler {
    fn init(&mut self, m: &Model, b: &Batch) -> Result<()> {
        self.x = init_noise(m, b, self.cfg.particles);
        let n = self.x.len();
        (self.eps, self.x0, self.g, self.z) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        self.r = vec![0.0; n / m.dim()];
        Ok(())
    }

    fn step(&mut self, m: &Model, b: &Batch, i: usize) -> Result<StepTrace> {
        let (k, d, n) = (self.cfg.particles, m.dim(), m.grid.len());
        let cond = b.row_cond(k);
        let guided = self.cfg.window.contains(i, n);
        let grad = if guided { Grad::Full } else { Grad::None };
        let look = Look { eps: &mut self.eps, x0: &mut self.x0, r: &mut self.r, g: &mut self.g };
        lookahead(m, &self.x, &cond, i, grad, guided, look)?;
        let c = StepCoef::new(m.grid.a[i], m.grid.a_prev[i], m.eta);
        step_noise(m, b, k, i, &mut self.z);
        let sigma = c.sigma;
        let rho = self.cfg.rho(self.alpha);
        // x_p = μ + σz + shift·(scale·g), in the same f32 arithmetic as DAS's proposal (K = 1 DAS ≡ variance_scaled).
        let gscale = if self.cfg.step_size == StepSize::VarianceScaled { rho as f32 } else { 1.0 };
        if guided && gscale != 1.0 {
            self.g.iter_mut().for_each(|v| *v *= gscale);
        }
        for row in 0..self.x.len() / d {
            let rg = row * d..(row + 1) * d;
            let shift = if !guided {
                0.0
            } else {
                let gr = &mut self.g[rg.clone()];
                if let Some(cl) = self.cfg.clip {
                    let norm = gr.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                    if norm > cl {
                        let f = (cl / norm) as f32;
                        gr.iter_mut().for_each(|v| *v *= f);
                    }
                }
                match self.cfg.step_size {
                    StepSize::Constant => rho as f32,
                    StepSize::VarianceScaled => {
                        let lam = match self.cfg.tempering {
                            TemperingKind::Exp => lambda_exp(self.cfg.gamma.unwrap_or_else(|| default_gamma(n)), i + 1),
                            _ => 1.0,
                        };
                        (sigma * sigma * lam) as f32
                    }
                    StepSize::RmsNormalized => {
                        let s = rms(gr);
                        if s > 0.0 {
                            (rho / s) as f32
                        } else {
                            0.0
                        }
                    }
                }
            };
            for q in rg {
                let mu = (c.c_x0 * self.x0[q] as f64 + c.c_eps * self.eps[q] as f64) as f32;
                self.x[q] = if guided {
                    mu + sigma as f32 * self.z[q] + shift * self.g[q]
                } else {
                    mu + sigma as f32 * self.z[q]
                };
            }
        }
        Ok(StepTrace { groups: b.groups.len() as u64, ..Default::default() })
    }

    fn finish(&mut self, m: &Model, b: &Batch) -> Result<Vec<GroupOutput>> {
        let r = final_reward(m, b, &self.x)?;
        Ok(independent_outputs(&self.x, &r, b.groups.len(), self.cfg.particles, m.dim()))
    }
}

/// `dps` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "dps",
    about: "DPS-style guidance x += s·∇r(x̂0): constant (reference toy), σ²-scaled or rms-normalised step",
    needs: Needs { reward_grad: true, denoiser_vjp: true, trainable_denoiser: false, exact_tilt: false },
};

impl Method for DpsConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    fn validate(&self, _chain: &Chain) -> Result<()> {
        DpsConfig::validate(self)
    }
    /// A VJP through the denoiser and a look-ahead reward per sample and guided step, plus the final reward.
    fn cost(&self, steps: usize) -> Cost {
        let (w, k) = (self.window.count(steps) as f64, self.particles as f64);
        Cost { vjp_denoiser: w * k, reward_calls: w * k + k, ..Cost::plain(steps, self.particles) }
    }
    fn sampler(&self, alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(DpsSampler::new(self.clone(), alpha)))
    }
}
