//! FreeDoM (Yu et al. 2023; methods.md §5), energy L = −r: inside the guidance window the DDPM step is pushed along
//! the full gradient g = ∇_{x_t} r(D(x̂0(x_t))) with a norm-matched step ρ_t = ρ·rms(ε̂)/rms(g) (`ref_scale:
//! rms_eps`, the no-CFG replacement of w·rms(ε_c − ε_u)), and inside the time-travel window each step is repeated
//! R times: after every pass but the last, x_p is re-noised back to t_i, x ← √(a/a')·x_p + √(1−a/a')·z'.
//! Reference: N = 100, guidance j ∈ [30, 70), time travel j ∈ [40, 70) × 3, ρ = 0.2 (windows scaled as fractions
//! of N [design]). The sampler is the norm-matched step of `norm_matched.rs` with [`Target::State`].

use serde::{Deserialize, Serialize};

use super::guidance::{NormScope, Window};
use super::method::{Chain, Method, MethodInfo, Needs};
use super::norm_matched::{NormMatched, NormMatchedSampler, Target};
use super::Sampler;
use crate::ledger::Cost;
use crate::Result;

/// Settings of FreeDoM (defaults: the reference repository).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// The norm-matched step this configuration runs.
    pub fn step(&self) -> NormMatched {
        NormMatched {
            particles: self.particles,
            rho: self.rho,
            window: self.window,
            travel_window: self.travel_window,
            repeats: self.repeats,
            norm_scope: self.norm_scope,
            target: Target::State,
        }
    }
    /// Check ranges once (plan time).
    pub fn validate(&self) -> Result<()> {
        self.step().validate("1 = no time travel; reference 3", "reference 0.2")
    }
    /// Passes at loop index i of an `n`-step grid.
    pub fn passes(&self, i: usize, n: usize) -> usize {
        self.step().passes(i, n)
    }
}

/// `freedom` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "freedom",
    about: "FreeDoM: norm-matched gradient step in a window, time-travel repeats (Yu et al. 2023)",
    needs: Needs { reward_grad: true, denoiser_vjp: true, trainable_denoiser: false, exact_tilt: false },
};

impl Method for FreedomConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    fn validate(&self, _chain: &Chain) -> Result<()> {
        FreedomConfig::validate(self)
    }
    fn cost(&self, steps: usize) -> Cost {
        self.step().cost(steps)
    }
    fn sampler(&self, _alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(NormMatchedSampler::new(self.step())))
    }
}
