//! Samplers: one file per method behind the [`Sampler`] trait, its configuration implementing
//! [`method::Method`] and registered once in `crate::methods`. A sampler performs **one step at a time**; the
//! runner (`experiment::runner`) owns the loop, the progress bar, the ledger and the store (argmin's
//! Solver/Executor split). Shared pieces — the look-ahead reward and its gradient, particle state with one
//! `gather`, the SMC kernel (`kernel`), the norm-matched guided step of FreeDoM and MPGD (`norm_matched`),
//! resampling, log-space weights — live once in this module tree.

pub mod beam_search;
pub mod best_of_n;
pub mod das;
pub mod ddim;
pub mod dps;
pub mod dts;
pub mod fk;
pub mod freedom;
pub mod guidance;
pub mod kernel;
pub mod logspace;
pub mod method;
pub mod mpgd;
pub mod norm_matched;
pub mod oracle;
pub mod particles;
pub mod path_search;
pub mod potentials;
pub mod psi;
pub mod resampling;
pub mod run;
pub mod selection;
pub mod smc;
pub mod svdd;
pub mod tds;
pub mod tree;
pub mod zero_order;

use serde::{Deserialize, Serialize};

use crate::diffusion::schedule::Grid;
use crate::diffusion::{Cond, Decoder, Denoiser};
use crate::ledger::Ledger;
use crate::rewards::Reward;
use crate::rng::Streams;
use crate::Result;

/// Everything a sampler may call: the models, the grid, η, the ledger and the random streams.
pub struct Model<'a> {
    /// ε-prediction network.
    pub denoiser: &'a dyn Denoiser,
    /// Latent → reward input.
    pub decoder: &'a dyn Decoder,
    /// The reward being aligned to.
    pub reward: &'a dyn Reward,
    /// Sampling grid.
    pub grid: &'a Grid,
    /// DDIM η (1 = DDPM posterior).
    pub eta: f64,
    /// Compute ledger of the cell.
    pub ledger: &'a Ledger,
    /// Seeded streams of the cell.
    pub streams: Streams,
}

impl Model<'_> {
    /// Sample dimension.
    pub fn dim(&self) -> usize {
        self.denoiser.dim()
    }
}

/// The prompt groups processed together by one sampler instance.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Global group (prompt) indices.
    pub groups: Vec<u64>,
    /// Conditioning per group (expanded to rows by the samplers).
    pub cond: Cond,
}

impl Batch {
    /// Conditioning for `per_group` rows of each group.
    pub fn row_cond(&self, per_group: usize) -> Cond {
        match &self.cond {
            Cond::None => Cond::None,
            Cond::Labels(l) => Cond::Labels(l.iter().flat_map(|&c| std::iter::repeat_n(c, per_group)).collect()),
        }
    }
}

/// What one group produced.
#[derive(Clone, Debug, Default)]
pub struct GroupOutput {
    /// Output samples, row-major `[n_out, dim]`.
    pub samples: Vec<f32>,
    /// Normalised weights of the outputs (uniform unless selection is `weighted`).
    pub weights: Vec<f64>,
    /// Reward of each output.
    pub rewards: Vec<f64>,
    /// log Ẑ of the group's particle system, for SMC methods (and DTS's root soft value).
    pub log_z_hat: Option<f64>,
    /// Method-specific per-group figures (e.g. DTS's tree size), averaged over groups into the cell's metrics.
    pub stats: Vec<(&'static str, f64)>,
}

/// Diagnostics of one step, summed over the groups of a batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTrace {
    /// Σ over groups of ESS before resampling.
    pub ess_sum: f64,
    /// Groups that resampled.
    pub resampled: u64,
    /// Σ over groups of λ_i.
    pub lambda_sum: f64,
    /// Groups contributing.
    pub groups: u64,
    /// Non-finite weights met (only possible in bug-compatible modes).
    pub non_finite: u64,
}

impl StepTrace {
    /// Accumulate another batch's trace.
    pub fn add(&mut self, o: &StepTrace) {
        self.ess_sum += o.ess_sum;
        self.resampled += o.resampled;
        self.lambda_sum += o.lambda_sum;
        self.groups += o.groups;
        self.non_finite += o.non_finite;
    }
}

/// One step at a time; the runner owns the loop.
pub trait Sampler: Send {
    /// Draw the initial state for the batch.
    fn init(&mut self, m: &Model, b: &Batch) -> Result<()>;
    /// Advance from loop index i to i + 1.
    fn step(&mut self, m: &Model, b: &Batch, i: usize) -> Result<StepTrace>;
    /// Final weighting and output selection.
    fn finish(&mut self, m: &Model, b: &Batch) -> Result<Vec<GroupOutput>>;
}

/// Initial noise x_T for `k` particles of every group in the batch (common random numbers).
pub fn init_noise(m: &Model, b: &Batch, k: usize) -> Vec<f32> {
    let d = m.dim();
    let mut x = vec![0f32; b.groups.len() * k * d];
    for (gi, &g) in b.groups.iter().enumerate() {
        m.streams.normals(crate::rng::Purpose::Init, g, 0, &mut x[gi * k * d..(gi + 1) * k * d]);
    }
    x
}

/// Step noise z_i for `k` particles of every group (the same for every method).
pub fn step_noise(m: &Model, b: &Batch, k: usize, i: usize, z: &mut [f32]) {
    let d = m.dim();
    for (gi, &g) in b.groups.iter().enumerate() {
        m.streams.normals(crate::rng::Purpose::Step, g, i as u64, &mut z[gi * k * d..(gi + 1) * k * d]);
    }
}

/// Reward of the decoded rows (final evaluation, no gradient), counted in the ledger. Rows are the batch's groups
/// in order, the same number per group.
pub fn final_reward(m: &Model, b: &Batch, x: &[f32]) -> Result<Vec<f64>> {
    let rows = x.len() / m.dim();
    reward_rows(m, x, &b.row_cond(rows / b.groups.len().max(1)))
}

/// Reward of the decoded rows of `x` under conditioning `cond` (one label per row), no gradient, counted in the
/// ledger — [`final_reward`] for rows that are not a batch's groups in order (tree nodes, search candidates).
pub fn reward_rows(m: &Model, x: &[f32], cond: &crate::diffusion::Cond) -> Result<Vec<f64>> {
    let rows = x.len() / m.dim();
    let t0 = std::time::Instant::now();
    let mut out = vec![0f64; rows];
    crate::rewards::score_decoded(m.decoder, m.reward, x, cond, &mut out)?;
    m.ledger.add_decoder(rows as u64);
    m.ledger.add_reward(rows as u64);
    m.ledger.add_time(crate::ledger::Phase::Reward, t0);
    Ok(out)
}

/// Outputs of samplers whose `k` chains per group are independent and equally weighted (DDIM, guidance, SVDD):
/// each group's rows of `x` with uniform weights and their rewards.
pub fn independent_outputs(x: &[f32], rewards: &[f64], groups: usize, k: usize, d: usize) -> Vec<GroupOutput> {
    (0..groups)
        .map(|gi| GroupOutput {
            samples: x[gi * k * d..(gi + 1) * k * d].to_vec(),
            weights: vec![1.0 / k as f64; k],
            rewards: rewards[gi * k..(gi + 1) * k].to_vec(),
            log_z_hat: None,
            stats: vec![],
        })
        .collect()
}
