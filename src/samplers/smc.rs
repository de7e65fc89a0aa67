//! Plain (bootstrap) SMC (methods.md §9): the pretrained step as proposal — no reward gradient, no VJP through the
//! denoiser — and twisted importance weights ℓ += λ_i·R_i/α − τ (Δ ≡ 0), final r/α − τ, with DAS's tempering,
//! ESS rule, resamplers and selection. It equals FK steering with a tempered `diff` potential at every step. The
//! algorithm is the DAS code of `das/` with [`Proposal::Pretrained`].

use serde::{Deserialize, Serialize};

use super::das::tempering::TemperingKind;
use super::das::{DasConfig, DasDefaults, DasSampler, Proposal};
use super::kernel::Resampling;
use super::method::{Chain, Method, MethodInfo, Needs};
use super::Sampler;
use crate::ledger::Cost;
use crate::Result;

/// Settings of plain SMC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Resampling: DAS's defaults.
    #[serde(flatten)]
    pub resampling: Resampling<DasDefaults>,
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
            resampling: self.resampling.clone(),
            reference_bugs: false,
        }
    }
    /// Check ranges once (plan time).
    pub fn validate(&self) -> Result<()> {
        self.to_das().validate()
    }
}

/// `smc` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "smc",
    about: "plain SMC: pretrained proposal, twist r(x̂0)/α, ESS-adaptive resampling",
    needs: Needs { reward_grad: false, denoiser_vjp: false, trainable_denoiser: false, exact_tilt: false },
};

impl Method for SmcConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    fn validate(&self, chain: &Chain) -> Result<()> {
        SmcConfig::validate(self)?;
        chain.needs_noise(INFO.name)
    }
    /// A look-ahead reward per particle and step, no VJP.
    fn cost(&self, steps: usize) -> Cost {
        let (n, k) = (steps as f64, self.particles as f64);
        Cost { reward_calls: n * k + k, ..Cost::plain(steps, self.particles) }
    }
    fn sampler(&self, alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(DasSampler::new(self.to_das(), alpha).with_proposal(Proposal::Pretrained).named("smc")))
    }
    fn is_smc(&self) -> bool {
        true
    }
}
