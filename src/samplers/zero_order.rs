//! Zero-order search over the noises (Ma et al. 2025, "Inference-time scaling for diffusion models beyond scaling
//! denoising steps", §3.2): a candidate is the whole noise of one sampling run — x_T and every step noise z_i — and
//! the verifier is the reward of the output.
//!
//! Round 0 draws N candidates from the common `init`/`step` streams (particle k of round 0 is the k-th sample every
//! unguided method draws, so round 0 alone is best-of-N — Ma et al.'s *random search*, which is `best_of_n`). Each
//! later round draws N neighbours of the pivot (the best noise so far), n' = √(1−λ²)·n* + λ·ξ with ξ ~ N(0, I) from
//! the `search` stream (a variance-preserving step of size λ [design]: a neighbour of a N(0, I) noise is N(0, I)
//! again); the pivot moves to the best neighbour when it beats the pivot. The output is the pivot's sample. A
//! search for high reward, not a sampler of the tilted target: it ignores α.

use serde::{Deserialize, Serialize};

use super::guidance::{lookahead, Grad, Look};
use super::method::{check_particles, Chain, Method, MethodInfo, Needs};
use super::{reward_rows, Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::diffusion::step::{mean, StepCoef};
use crate::ledger::Cost;
use crate::rng::Purpose;
use crate::{Error, Result};

/// Settings of zero-order search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZeroOrderConfig {
    /// Candidates N per round.
    #[serde(default = "four")]
    pub particles: usize,
    /// Rounds R ≥ 1: round 0 (the common noises) and R − 1 rounds of N neighbours of the pivot (what a `budget:`
    /// sizes).
    #[serde(default = "five")]
    pub rounds: usize,
    /// Neighbourhood size λ ∈ (0, 1].
    #[serde(default = "radius")]
    pub radius: f64,
}

fn four() -> usize {
    4
}
fn five() -> usize {
    5
}
fn radius() -> f64 {
    0.5
}

/// `zero_order` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "zero_order",
    about: "zero-order search over the noises: neighbours of the best noise, iterated (Ma et al. 2025)",
    needs: Needs { reward_grad: false, denoiser_vjp: false, trainable_denoiser: false, exact_tilt: false },
};

impl Method for ZeroOrderConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    /// A compute budget sizes the rounds.
    fn size_key(&self) -> Option<&'static str> {
        Some("rounds")
    }
    fn validate(&self, _chain: &Chain) -> Result<()> {
        check_particles(self.particles)?;
        if self.rounds == 0 {
            return Err(Error::config("rounds: must be at least 1 (round 0 is best-of-N)"));
        }
        if !(self.radius > 0.0 && self.radius <= 1.0) {
            return Err(Error::config("radius: must be in (0, 1] (the neighbourhood size λ; default 0.5)"));
        }
        Ok(())
    }
    /// R rounds of N full sampling runs, one reward each.
    fn cost(&self, steps: usize) -> Cost {
        let runs = (self.rounds * self.particles) as f64;
        Cost { nfe: runs * steps as f64, vjp_denoiser: 0.0, vjp_reward: 0.0, reward_calls: runs }
    }
    fn sampler(&self, _alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(ZeroOrderSampler { cfg: self.clone(), outputs: vec![] }))
    }
}

/// Zero-order search of a batch (all its work happens in `finish`; the steps only report progress).
pub struct ZeroOrderSampler {
    cfg: ZeroOrderConfig,
    outputs: Vec<GroupOutput>,
}

/// Run the sampling chain from given noises: `noise` holds per row x_T followed by the N step noises
/// (`(N + 1)·d` numbers); returns the outputs, one row each.
pub fn run_noises(m: &Model, b: &Batch, per_group: usize, noise: &[f32]) -> Result<Vec<f32>> {
    let (n, d) = (m.grid.len(), m.dim());
    let rows = noise.len() / ((n + 1) * d);
    let block = (n + 1) * d;
    let mut x: Vec<f32> = (0..rows).flat_map(|r| noise[r * block..r * block + d].to_vec()).collect();
    let (mut eps, mut x0) = (vec![0f32; x.len()], vec![0f32; x.len()]);
    let cond = b.row_cond(per_group);
    for i in 0..n {
        lookahead(m, &x, &cond, i, Grad::None, false, Look { eps: &mut eps, x0: &mut x0, r: &mut [], g: &mut [] })?;
        let c = StepCoef::new(m.grid.a[i], m.grid.a_prev[i], m.eta);
        mean(&c, &x0, &eps, &mut x);
        let s = c.sigma as f32;
        for r in 0..rows {
            let z = &noise[r * block + (i + 1) * d..r * block + (i + 2) * d];
            for (xv, zv) in x[r * d..(r + 1) * d].iter_mut().zip(z) {
                *xv += s * zv;
            }
        }
    }
    Ok(x)
}

impl ZeroOrderSampler {
    fn search(&mut self, m: &Model, b: &Batch) -> Result<()> {
        let (k, n, d) = (self.cfg.particles, m.grid.len(), m.dim());
        let g = b.groups.len();
        let block = (n + 1) * d;
        // Round 0: the common noises (particle k's x_T and step noises).
        let mut noise = vec![0f32; g * k * block];
        let init = super::init_noise(m, b, k);
        let mut z = vec![0f32; g * k * d];
        for i in 0..=n {
            if i > 0 {
                super::step_noise(m, b, k, i - 1, &mut z);
            }
            let src = if i == 0 { &init } else { &z };
            for r in 0..g * k {
                noise[r * block + i * d..r * block + (i + 1) * d].copy_from_slice(&src[r * d..(r + 1) * d]);
            }
        }
        let mut pivot = vec![0f32; g * block];
        let mut best_x = vec![0f32; g * d];
        let mut best_r = vec![f64::NEG_INFINITY; g];
        let (lam, keep) = (self.cfg.radius, (1.0 - self.cfg.radius * self.cfg.radius).sqrt());
        for round in 0..self.cfg.rounds {
            if round > 0 {
                for (gi, &group) in b.groups.iter().enumerate() {
                    let span = gi * k * block..(gi + 1) * k * block;
                    m.streams.normals(Purpose::Search, group, round as u64, &mut noise[span.clone()]);
                    for (j, v) in noise[span].iter_mut().enumerate() {
                        *v = (keep * pivot[gi * block + j % block] as f64 + lam * *v as f64) as f32;
                    }
                }
            }
            let x = run_noises(m, b, k, &noise)?;
            let r = reward_rows(m, &x, &b.row_cond(k))?;
            for (gi, &group) in b.groups.iter().enumerate() {
                for c in gi * k..(gi + 1) * k {
                    if !r[c].is_finite() {
                        return Err(Error::numeric(
                            "zero_order",
                            format!("non-finite reward {} in group {group}", r[c]),
                        ));
                    }
                    // Strictly better only: ties keep the pivot (and, in round 0, the lowest index).
                    if r[c] > best_r[gi] {
                        best_r[gi] = r[c];
                        best_x[gi * d..(gi + 1) * d].copy_from_slice(&x[c * d..(c + 1) * d]);
                        pivot[gi * block..(gi + 1) * block].copy_from_slice(&noise[c * block..(c + 1) * block]);
                    }
                }
            }
        }
        self.outputs = (0..g)
            .map(|gi| GroupOutput {
                samples: best_x[gi * d..(gi + 1) * d].to_vec(),
                weights: vec![1.0],
                rewards: vec![best_r[gi]],
                log_z_hat: None,
                stats: vec![],
            })
            .collect();
        Ok(())
    }
}

impl Sampler for ZeroOrderSampler {
    fn init(&mut self, _m: &Model, _b: &Batch) -> Result<()> {
        Ok(())
    }
    fn step(&mut self, m: &Model, b: &Batch, i: usize) -> Result<StepTrace> {
        if i == 0 {
            self.search(m, b)?;
        }
        Ok(StepTrace { groups: b.groups.len() as u64, ..Default::default() })
    }
    fn finish(&mut self, _m: &Model, _b: &Batch) -> Result<Vec<GroupOutput>> {
        Ok(std::mem::take(&mut self.outputs))
    }
}
