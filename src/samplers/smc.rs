//! Plain (bootstrap) SMC (methods.md §9): the pretrained step as proposal — no reward gradient, no VJP through the
//! denoiser — and twisted importance weights ℓ += λ_i·R_i/α − τ (Δ ≡ 0), final r/α − τ, with DAS's tempering,
//! ESS rule, resamplers and selection. It equals FK steering with a tempered `diff` potential at every step. The
//! algorithm is the DAS code of `das/` with [`Proposal::Pretrained`].

use serde::{Deserialize, Serialize};

use super::das::tempering::TemperingKind;
use super::das::{DasConfig, DasSampler, Proposal, Selection};
use super::resampling::{ResampleWhen, Resampler};
use crate::Result;

/// Settings of plain SMC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmcConfig {
    /// Particles K per group.
    pub particles: usize,
    /// Tempering of the twist: `constant` (λ ≡ 1, the twist r(x̂0)/α; default), `exp` or `adaptive`.
    #[serde(default = "constant")]
    pub tempering: TemperingKind,
    /// γ of the `exp` schedule (default γ(N) = 2^{1/round(0.87N)} − 1).
    #[serde(default)]
    pub gamma: Option<f64>,
    /// Target ESS fraction of the `adaptive` schedule.
    #[serde(default = "half")]
    pub target_ess: f64,
    /// `ess` (default) or `always`.
    #[serde(default)]
    pub resample: ResampleWhen,
    /// κ of ESS-adaptive resampling.
    #[serde(default = "half")]
    pub ess_threshold: f64,
    /// Resampling scheme.
    #[serde(default)]
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
fn constant() -> TemperingKind {
    TemperingKind::Constant
}

impl SmcConfig {
    /// The DAS configuration whose weights this sampler uses (with the pretrained proposal).
    pub fn to_das(&self) -> DasConfig {
        DasConfig {
            particles: self.particles,
            tempering: self.tempering,
            gamma: self.gamma,
            target_ess: self.target_ess,
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

/// The plain SMC sampler: DAS weights with the pretrained proposal.
pub fn sampler(cfg: &SmcConfig, alpha: f64) -> DasSampler {
    DasSampler::new(cfg.to_das(), alpha).with_proposal(Proposal::Pretrained).named("smc")
}
