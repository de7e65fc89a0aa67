//! Samplers: one file per method behind the [`Sampler`] trait. A sampler performs **one step at a time**; the
//! runner (`experiment::runner`) owns the loop, the progress bar, the ledger and the store (argmin's
//! Solver/Executor split). Shared pieces — the look-ahead reward and its gradient, particle state with one
//! `gather`, resampling, log-space weights — live once in this module tree.

pub mod backprop;
pub mod best_of_n;
pub mod das;
pub mod ddim;
pub mod dps;
pub mod finetune;
pub mod fk;
pub mod freedom;
pub mod guidance;
pub mod logspace;
pub mod mpgd;
pub mod particles;
pub mod potentials;
pub mod resampling;
pub mod rl;
pub mod selection;
pub mod smc;
pub mod svdd;
pub mod tds;

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
    /// log Ẑ of the group's particle system, for SMC methods.
    pub log_z_hat: Option<f64>,
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
    let cond = b.row_cond(rows / b.groups.len().max(1));
    let t0 = std::time::Instant::now();
    let mut out = vec![0f64; rows];
    if m.decoder.is_identity() {
        m.reward.score(x, &cond, &mut out)?;
    } else {
        let mut y = Vec::new();
        m.decoder.decode(x, &mut y)?;
        m.reward.score(&y, &cond, &mut out)?;
    }
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
        })
        .collect()
}

/// What a method needs from the models (checked at plan time against what the cell provides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// A differentiable reward (∇r).
    pub reward_grad: bool,
    /// A VJP through the denoiser (∂ε̂/∂x)ᵀu.
    pub denoiser_vjp: bool,
    /// A trainable copy of the learned MLP denoiser (fine-tuning baselines).
    pub trainable_mlp: bool,
}

/// What a cell's models provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provides {
    /// The reward has a gradient.
    pub reward_grad: bool,
    /// The denoiser has a VJP.
    pub denoiser_vjp: bool,
    /// The denoiser is a learned network with a trainable copy (the toy MLP, the mini ε-MLP).
    pub trainable_mlp: bool,
}

impl Needs {
    /// Error naming the method, what is missing and the fix.
    pub fn check(self, method: &str, p: Provides) -> Result<()> {
        if self.reward_grad && !p.reward_grad {
            return Err(crate::Error::config(format!(
                "method `{method}` needs a differentiable reward (it follows ∇r), but this reward is black-box; \
                 use a gradient-free method (best_of_n, smc, fk, svdd) or a differentiable reward"
            )));
        }
        if self.denoiser_vjp && !p.denoiser_vjp {
            return Err(crate::Error::config(format!(
                "method `{method}` backpropagates through the denoiser, which has no VJP; use mpgd (x̂0-only gradient) \
                 or a gradient-free method"
            )));
        }
        if self.trainable_mlp && !p.trainable_mlp {
            return Err(crate::Error::config(format!(
                "method `{method}` fine-tunes the learned MLP denoiser: set `denoiser: mlp` (for this method only: \
                 put `denoiser: mlp` inside its `methods:` entry)"
            )));
        }
        Ok(())
    }
}

/// Description of a method for `alignbench list methods`.
pub struct MethodInfo {
    /// YAML tag.
    pub name: &'static str,
    /// Needs a differentiable reward.
    pub needs_reward_grad: bool,
    /// Differentiates through the denoiser.
    pub needs_denoiser_vjp: bool,
    /// One line.
    pub about: &'static str,
}

impl MethodInfo {
    /// The needs of this method.
    pub fn needs(&self) -> Needs {
        Needs {
            reward_grad: self.needs_reward_grad,
            denoiser_vjp: self.needs_denoiser_vjp,
            trainable_mlp: matches!(self.name, "rl" | "backprop"),
        }
    }
}

/// Every method of this build.
pub fn catalogue() -> Vec<MethodInfo> {
    let m = |name, needs_reward_grad, needs_denoiser_vjp, about| MethodInfo {
        name,
        needs_reward_grad,
        needs_denoiser_vjp,
        about,
    };
    vec![
        m("ddim", false, false, "unguided DDIM/DDPM (η = 1 ⇒ DDPM posterior)"),
        m("best_of_n", false, false, "n unguided samples, keep the best by reward"),
        m("das", true, true, "DAS: tempered SMC with the locally optimal Gaussian proposal (Kim, Kim & Park 2025)"),
        m("tds", true, true, "TDS: twisted diffusion sampler = DAS with λ ≡ 1 (Wu et al. 2023)"),
        m("smc", false, false, "plain SMC: pretrained proposal, twist r(x̂0)/α, ESS-adaptive resampling"),
        m("fk", false, false, "FK steering: potentials max/diff/add/rt at resampling steps (Singhal et al. 2025)"),
        m(
            "svdd",
            false,
            false,
            "SVDD: M children per step, keep argmax / softmax(v/α) of the soft value (PM or MC rollouts)",
        ),
        m(
            "dps",
            true,
            true,
            "DPS-style guidance x += s·∇r(x̂0): constant (reference toy), σ²-scaled or rms-normalised step",
        ),
        m(
            "freedom",
            true,
            true,
            "FreeDoM: norm-matched gradient step in a window, time-travel repeats (Yu et al. 2023)",
        ),
        m("mpgd", true, false, "MPGD: norm-matched step on x̂0 only, no denoiser backprop (He et al. 2024)"),
        m(
            "rl",
            false,
            false,
            "fine-tuning baseline: DDPO-like policy gradient with per-step KL, then sampling (toy MLP)",
        ),
        m(
            "backprop",
            true,
            false,
            "fine-tuning baseline: AlignProp-like backprop of −r + α·KL through the chain (toy MLP, mini ε-MLP)",
        ),
        m(
            "oracle",
            false,
            false,
            "toy only: DDIM with the exact ε of the tilted noised mixture (best any sampler can do at this step count)",
        ),
    ]
}

/// The catalogue entry of a method tag.
pub fn method_info(name: &str) -> Option<MethodInfo> {
    catalogue().into_iter().find(|m| m.name == name)
}
