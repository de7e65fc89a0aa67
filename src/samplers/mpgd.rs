//! MPGD — manifold-preserving guided diffusion (He et al. 2024; methods.md §6): the gradient is taken w.r.t. x̂0
//! only (no backprop through the denoiser, counted as `vjp_reward`), x̂0 ← x̂0 + ρ_t·g0 with the norm-matched
//! ρ_t = ρ·rms(ε̂)/rms(g0) inside the window j ∈ [0.3N, 0.7N), and the step continues from the updated x̂0 with the
//! ε-free form μ = √a'·x̂0 + √(1−a'−σ²)·(x_t − √a·x̂0)/√(1−a) (= c1·x̂0 + c2·x_t at η = 1). Optional time travel
//! (`repeats`, reference tt = 1) as in FreeDoM. Reference: ρ = 15, N = 100. The sampler is the norm-matched step
//! of `norm_matched.rs` with [`Target::X0`].

use serde::{Deserialize, Serialize};

use super::guidance::{NormScope, Window};
use super::method::{Chain, Method, MethodInfo, Needs};
use super::norm_matched::{NormMatched, NormMatchedSampler, Target};
use super::Sampler;
use crate::ledger::Cost;
use crate::Result;

/// Settings of MPGD (defaults: the reference run script).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// The norm-matched step this configuration runs.
    pub fn step(&self) -> NormMatched {
        NormMatched {
            particles: self.particles,
            rho: self.rho,
            window: self.window,
            travel_window: self.travel_window,
            repeats: self.repeats,
            norm_scope: self.norm_scope,
            target: Target::X0 { divide_sqrt_a_prev: self.divide_sqrt_a_prev },
        }
    }
    /// Check ranges once (plan time).
    pub fn validate(&self) -> Result<()> {
        self.step().validate("reference tt = 1", "reference 15")
    }
    /// Passes at loop index i of an `n`-step grid.
    pub fn passes(&self, i: usize, n: usize) -> usize {
        self.step().passes(i, n)
    }
}

/// `mpgd` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "mpgd",
    about: "MPGD: norm-matched step on x̂0 only, no denoiser backprop (He et al. 2024)",
    needs: Needs { reward_grad: true, denoiser_vjp: false, trainable_denoiser: false, exact_tilt: false },
};

impl Method for MpgdConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    fn validate(&self, _chain: &Chain) -> Result<()> {
        MpgdConfig::validate(self)
    }
    fn cost(&self, steps: usize) -> Cost {
        self.step().cost(steps)
    }
    fn sampler(&self, _alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(NormMatchedSampler::new(self.step())))
    }
}
