//! Unguided DDIM / DDPM (methods.md §2): x ← μ + σ·z with ε̂ from the denoiser. η = 1 is the DDPM posterior.
//! Also the `oracle` method of the toy, which is this sampler run with the exact ε of the tilted mixture.

use serde::{Deserialize, Serialize};

use super::guidance::{lookahead, Grad, Look};
use super::{final_reward, init_noise, step_noise, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::step::{mean, StepCoef};
use crate::Result;

/// Settings of unguided sampling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
        let c = StepCoef::new(m.grid.a[i], m.grid.a_prev[i], m.eta);
        step_noise(m, b, self.k, i, &mut self.z);
        mean(&c, &self.x0, &self.eps, &mut self.x);
        let s = c.sigma as f32;
        for (x, z) in self.x.iter_mut().zip(&self.z) {
            *x += s * z;
        }
        Ok(StepTrace { groups: b.groups.len() as u64, ..Default::default() })
    }

    fn finish(&mut self, m: &Model, b: &Batch) -> Result<Vec<GroupOutput>> {
        self.rewards = final_reward(m, b, &self.x)?;
        let (k, d) = (self.k, m.dim());
        Ok((0..b.groups.len())
            .map(|gi| GroupOutput {
                samples: self.x[gi * k * d..(gi + 1) * k * d].to_vec(),
                weights: vec![1.0 / k as f64; k],
                rewards: self.rewards[gi * k..(gi + 1) * k].to_vec(),
                log_z_hat: None,
            })
            .collect())
    }
}
