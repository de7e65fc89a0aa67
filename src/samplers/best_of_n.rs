//! Best-of-N (methods.md §3): n unguided samples per group (sharing particle noise streams with every other
//! method), output the argmax of r(D(x_k)) (ties → lowest k), or the top m.

use serde::{Deserialize, Serialize};

use super::ddim::DdimSampler;
use super::method::{Chain, Method, MethodInfo, Needs};
use super::{Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::ledger::Cost;
use crate::{Error, Result};

/// Settings of best-of-N.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestOfNConfig {
    /// Candidates per group (n).
    pub particles: usize,
    /// Outputs kept per group (the top m by reward).
    #[serde(default = "one")]
    pub top_m: usize,
}

fn one() -> usize {
    1
}

/// Best-of-N state: unguided sampling plus a final selection.
pub struct BestOfN {
    inner: DdimSampler,
    cfg: BestOfNConfig,
}

impl BestOfN {
    /// New sampler.
    pub fn new(cfg: BestOfNConfig) -> Self {
        Self { inner: DdimSampler::new(cfg.particles), cfg }
    }
}

impl Sampler for BestOfN {
    fn init(&mut self, m: &Model, b: &Batch) -> Result<()> {
        self.inner.init(m, b)
    }
    fn step(&mut self, m: &Model, b: &Batch, i: usize) -> Result<StepTrace> {
        self.inner.step(m, b, i)
    }
    fn finish(&mut self, m: &Model, b: &Batch) -> Result<Vec<GroupOutput>> {
        let all = self.inner.finish(m, b)?;
        let d = m.dim();
        let top = self.cfg.top_m.min(self.cfg.particles);
        Ok(all
            .into_iter()
            .map(|g| {
                let mut idx: Vec<usize> = (0..g.rewards.len()).collect();
                // Stable sort: ties keep the lowest index first.
                idx.sort_by(|&a, &b| g.rewards[b].partial_cmp(&g.rewards[a]).unwrap_or(std::cmp::Ordering::Equal));
                idx.truncate(top);
                GroupOutput {
                    samples: idx.iter().flat_map(|&k| g.samples[k * d..(k + 1) * d].iter().copied()).collect(),
                    weights: vec![1.0 / top as f64; top],
                    rewards: idx.iter().map(|&k| g.rewards[k]).collect(),
                    log_z_hat: None,
                    stats: vec![],
                }
            })
            .collect())
    }
}

/// `best_of_n` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "best_of_n",
    about: "n unguided samples, keep the best by reward",
    needs: Needs { reward_grad: false, denoiser_vjp: false, trainable_denoiser: false, exact_tilt: false },
};

impl Method for BestOfNConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    fn validate(&self, _chain: &Chain) -> Result<()> {
        if self.top_m == 0 {
            return Err(Error::config("top_m: must be at least 1"));
        }
        Ok(())
    }
    fn cost(&self, steps: usize) -> Cost {
        Cost::plain(steps, self.particles)
    }
    fn sampler(&self, _alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(BestOfN::new(self.clone())))
    }
}
