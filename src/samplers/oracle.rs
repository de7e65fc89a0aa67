//! `oracle` — the toy's best possible sampler at a given step count: unguided DDIM/DDPM with the exact ε of the
//! reward-tilted noised mixture (toy.md §3). The problem supplies that ε (`Needs::exact_tilt`); the sampler is
//! plain DDIM.

use serde::{Deserialize, Serialize};

use super::ddim::DdimConfig;
use super::method::{Chain, Method, MethodInfo, Needs};
use super::Sampler;
use crate::ledger::Cost;
use crate::Result;

/// Settings of the oracle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OracleConfig {
    /// Samples per group.
    #[serde(default = "one")]
    pub particles: usize,
}

fn one() -> usize {
    1
}

impl OracleConfig {
    fn ddim(&self) -> DdimConfig {
        DdimConfig { particles: self.particles }
    }
}

/// `oracle` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "oracle",
    about: "toy only: DDIM with the exact ε of the tilted noised mixture (best any sampler can do at this step count)",
    needs: Needs { reward_grad: false, denoiser_vjp: false, trainable_denoiser: false, exact_tilt: true },
};

impl Method for OracleConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    fn validate(&self, _chain: &Chain) -> Result<()> {
        Ok(())
    }
    /// Plain DDIM's cost and sampler; only the denoiser (the problem's exact tilted ε) differs.
    fn cost(&self, steps: usize) -> Cost {
        self.ddim().cost(steps)
    }
    fn sampler(&self, alpha: f64) -> Result<Box<dyn Sampler>> {
        self.ddim().sampler(alpha)
    }
}
