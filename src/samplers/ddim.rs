//! Unguided DDIM / DDPM (methods.md §2): x ← μ + σ·z with ε̂ from the denoiser. η = 1 is the DDPM posterior.
//! Also the `oracle` method of the toy, which is this sampler run with the exact ε of the tilted mixture.

use serde::{Deserialize, Serialize};

use super::guidance::{lookahead, posterior_draw, Grad, Look};
use super::method::{Chain, Method, MethodInfo, Needs};
use super::{final_reward, independent_outputs, init_noise, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::ledger::Cost;
use crate::Result;

/// Settings of unguided sampling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DdimConfig {
    /// Samples per group.
    #[serde(default = "default_particles")]
    pub particles: usize,
}

fn default_particles() -> usize {
    1
}

/// Unguided sampler state for a batch.
pub struct DdimSampler {
    k: usize,
    x: Vec<f32>,
    eps: Vec<f32>,
    x0: Vec<f32>,
    z: Vec<f32>,
    /// Final rewards (filled by `finish`).
    pub rewards: Vec<f64>,
}

impl DdimSampler {
    /// `k` samples per group.
    pub fn new(k: usize) -> Self {
        Self { k, x: vec![], eps: vec![], x0: vec![], z: vec![], rewards: vec![] }
    }
    /// Final states, row-major.
    pub fn states(&self) -> &[f32] {
        &self.x
    }
}

impl Sampler for DdimSampler {
    fn init(&mut self, m: &Model, b: &Batch) -> Result<()> {
        self.x = init_noise(m, b, self.k);
        self.eps = vec![0.0; self.x.len()];
        self.x0 = vec![0.0; self.x.len()];
        self.z = vec![0.0; self.x.len()];
        Ok(())
    }

    fn step(&mut self, m: &Model, b: &Batch, i: usize) -> Result<StepTrace> {
        let cond = b.row_cond(self.k);
        let look = Look { eps: &mut self.eps, x0: &mut self.x0, r: &mut [], g: &mut [] };
        lookahead(m, &self.x, &cond, i, Grad::None, false, look)?;
        posterior_draw(m, b, i, 0, &self.x0, &self.eps, &mut self.z, &mut self.x);
        Ok(StepTrace { groups: b.groups.len() as u64, ..Default::default() })
    }

    fn finish(&mut self, m: &Model, b: &Batch) -> Result<Vec<GroupOutput>> {
        self.rewards = final_reward(m, b, &self.x)?;
        Ok(independent_outputs(&self.x, &self.rewards, b.groups.len(), self.k, m.dim()))
    }
}

/// `ddim` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "ddim",
    about: "unguided DDIM/DDPM (η = 1 ⇒ DDPM posterior)",
    needs: Needs { reward_grad: false, denoiser_vjp: false, trainable_denoiser: false, exact_tilt: false },
};

impl Method for DdimConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    fn validate(&self, _chain: &Chain) -> Result<()> {
        Ok(())
    }
    fn cost(&self, steps: usize) -> Cost {
        Cost::plain(steps, self.particles)
    }
    fn sampler(&self, _alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(DdimSampler::new(self.particles)))
    }
}
