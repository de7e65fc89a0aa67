//! TDS — the twisted diffusion sampler (Wu et al. 2023; methods.md §8): DAS with λ_i ≡ 1. The twist R_i/α applies
//! at every step including i = 0 (so the first weights are already non-uniform) and the proposal is
//! μ + σz + σ²·g. This file only fixes the tempering; the algorithm is the DAS code of `das/`.

use serde::{Deserialize, Serialize};

use super::das::tempering::TemperingKind;
use super::das::{DasConfig, DasSampler, Selection};
use super::resampling::{ResampleWhen, Resampler};
use crate::Result;

/// Settings of TDS (every DAS option except the tempering, which is λ ≡ 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdsConfig {
    /// Particles K per group.
    pub particles: usize,
    /// `always` resamples at every step (the reference MNIST configuration); `ess` when ESS < κK.
    #[serde(default)]
    pub resample: ResampleWhen,
    /// κ of ESS-adaptive resampling.
    #[serde(default = "half")]
    pub ess_threshold: f64,
    /// Resampling scheme (reference: systematic).
    #[serde(default = "systematic")]
    pub resampler: Resampler,
    /// Output selection.
    #[serde(default)]
    pub selection: Selection,
    /// Outputs per group for `resample` and `toy_compat` (default K).
    #[serde(default)]
    pub n_out: Option<usize>,
}

fn half() -> f64 {
    0.5
}
fn systematic() -> Resampler {
    Resampler::Systematic
}

impl TdsConfig {
    /// The equivalent DAS configuration: tempering `constant` (λ ≡ 1).
    pub fn to_das(&self) -> DasConfig {
        DasConfig {
            particles: self.particles,
            tempering: TemperingKind::Constant,
            gamma: None,
            target_ess: 0.5,
            ess_threshold: self.ess_threshold,
            resample: self.resample,
            resampler: self.resampler,
            selection: self.selection,
            n_out: self.n_out,
            reference_bugs: false,
        }
    }
    /// Check ranges once (plan time).
    pub fn validate(&self) -> Result<()> {
        self.to_das().validate()
    }
}

/// The TDS sampler: DAS with λ ≡ 1.
pub fn sampler(cfg: &TdsConfig, alpha: f64) -> DasSampler {
    DasSampler::new(cfg.to_das(), alpha).named("tds")
}
