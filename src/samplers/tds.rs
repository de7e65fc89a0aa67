//! TDS — the twisted diffusion sampler (Wu et al. 2023; methods.md §8): DAS with λ_i ≡ 1. The twist R_i/α applies
//! at every step including i = 0 (so the first weights are already non-uniform) and the proposal is
//! μ + σz + σ²·g. This file only fixes the tempering; the algorithm is the DAS code of `das/`.

use serde::{Deserialize, Serialize};

use super::das::tempering::TemperingKind;
use super::das::{das_cost, DasConfig, DasSampler};
use super::kernel::{Resampling, ResamplingDefaults};
use super::method::{Chain, Method, MethodInfo, Needs};
use super::resampling::Resampler;
use super::Sampler;
use crate::ledger::Cost;
use crate::Result;

/// Settings of TDS (every DAS option except the tempering, which is λ ≡ 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TdsConfig {
    /// Particles K per group.
    pub particles: usize,
    /// Resampling: ESS-adaptive at κ = 0.5 (`always` is the reference MNIST configuration), systematic scheme.
    #[serde(flatten)]
    pub resampling: Resampling<TdsDefaults>,
}

/// TDS's resampling defaults: the reference's systematic scheme.
#[derive(Clone, Debug, PartialEq)]
pub struct TdsDefaults;
impl ResamplingDefaults for TdsDefaults {
    fn resampler() -> Resampler {
        Resampler::Systematic
    }
}

impl TdsConfig {
    /// The equivalent DAS configuration: tempering `constant` (λ ≡ 1).
    pub fn to_das(&self) -> DasConfig {
        DasConfig {
            tempering: TemperingKind::Constant,
            resampling: self.resampling.cast(),
            ..DasConfig::with_particles(self.particles)
        }
    }
    /// Check ranges once (plan time).
    pub fn validate(&self) -> Result<()> {
        self.to_das().validate()
    }
}

/// `tds` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "tds",
    about: "TDS: twisted diffusion sampler = DAS with λ ≡ 1 (Wu et al. 2023)",
    needs: Needs { reward_grad: true, denoiser_vjp: true, trainable_denoiser: false, exact_tilt: false },
};

impl Method for TdsConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    fn validate(&self, chain: &Chain) -> Result<()> {
        TdsConfig::validate(self)?;
        chain.needs_noise(INFO.name)
    }
    fn cost(&self, steps: usize) -> Cost {
        das_cost(steps, self.particles)
    }
    fn sampler(&self, alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(DasSampler::new(self.to_das(), alpha).named("tds")))
    }
    fn is_smc(&self) -> bool {
        true
    }
}
