//! What a cell fixes besides its problem ([`Setting`]), and the small typed blocks it is made of: the evaluation
//! protocol ([`MetricsSpec`], toy.md §7), the compute budget a plan sized the method to ([`Budget`], methods.md
//! §17) and the toy's choice of ε-model ([`DenoiserKind`]).

use serde::{Deserialize, Serialize};

use crate::diffusion::schedule::Spacing;
use crate::ledger::BudgetAxis;
use crate::methods::MethodSpec;
use crate::rewards::spec::RewardSpec;

/// Compute matching: the plan sets every method's size (N, particles, children) to the largest value whose
/// estimated cost per group stays within `value` on `axis`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// What is counted.
    pub axis: BudgetAxis,
    /// The budget per group (a list in the file sweeps).
    pub value: f64,
}

/// Everything a cell fixes besides its problem: reward, seed, KL coefficient, denoiser choice, chain, groups,
/// evaluation protocol, budget and method (the flattened rest of an experiment cell).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// File format version (must be 1).
    pub version: u32,
    /// Experiment name (folder under the results directory).
    pub name: String,
    /// The reward aligned to.
    pub reward: RewardSpec,
    /// Root seed of the cell's random streams.
    pub seed: u64,
    /// KL coefficient α of the target p·exp(r/α).
    #[serde(default = "one_f")]
    pub alpha: f64,
    /// Which ε-model samples.
    #[serde(default)]
    pub denoiser: DenoiserKind,
    /// Weights of the MLP denoiser (default `assets/toy/<preset>-mlp.safetensors`).
    #[serde(default)]
    pub mlp_weights: Option<String>,
    /// Sampling steps N.
    #[serde(default = "hundred")]
    pub steps: usize,
    /// DDIM η (1 = DDPM).
    #[serde(default = "one_f")]
    pub eta: f64,
    /// Timestep spacing.
    #[serde(default = "toy_clean")]
    pub grid: Spacing,
    /// Prompt groups (independent particle systems).
    #[serde(default = "thousand")]
    pub groups: usize,
    /// Evaluation protocol.
    #[serde(default)]
    pub metrics: MetricsSpec,
    /// Compute budget the method was sized to (set by the plan).
    #[serde(default)]
    pub budget: Option<Budget>,
    /// The method and its parameters.
    pub method: MethodSpec,
}

fn one_f() -> f64 {
    1.0
}
fn hundred() -> usize {
    100
}
fn thousand() -> usize {
    1000
}
fn toy_clean() -> Spacing {
    Spacing::ToyClean
}

/// Which ε-model the toy uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenoiserKind {
    /// The exact ε of the noised mixture.
    #[default]
    Analytic,
    /// The learned 2-64-64-2 MLP.
    Mlp,
}

/// Evaluation protocol of the toy (toy.md §7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsSpec {
    /// Exact target samples in the reference pool.
    #[serde(default = "pool")]
    pub target_pool: usize,
    /// Points per EMD draw.
    #[serde(default = "five_hundred")]
    pub emd_n: usize,
    /// EMD repeats.
    #[serde(default = "twenty")]
    pub emd_repeats: usize,
    /// Samples kept in the cell file for figures.
    #[serde(default = "keep")]
    pub keep_samples: usize,
    /// `mini` only: unguided samples per prompt of the SIR reference of the tilted target (mini-benchmark.md §7:
    /// 8192; `problems::mini::sir`). Absent: no reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sir: Option<usize>,
}

fn pool() -> usize {
    10_000
}
fn five_hundred() -> usize {
    500
}
fn twenty() -> usize {
    20
}
fn keep() -> usize {
    2000
}

impl Default for MetricsSpec {
    fn default() -> Self {
        MetricsSpec {
            target_pool: pool(),
            emd_n: five_hundred(),
            emd_repeats: twenty(),
            keep_samples: keep(),
            sir: None,
        }
    }
}
