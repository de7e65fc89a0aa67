//! Typed experiment files (YAML). A file is expanded into cells by `plan`; every cell deserialises into
//! [`CellSpec`] with `deny_unknown_fields`, so a misspelt key fails with its name.
//!
//! ```yaml
//! version: 1
//! name: toy-gmm1
//! seeds: [0, 1, 2]                         # a list sweeps; `seed: 0` for one
//! problem: { kind: gmm, preset: gmm1 }     # or { kind: gmm, weights: [..], means: [[..]], covs: [[[..]]] },
//!                                          # { kind: mini, .. }, { kind: sd15, path: .., prompts: .. }
//! reward: { kind: quadratic, preset: gmm1 } # or { kind: quadratic, a: [[..]], b: [..], c: .. }; default: the
//!                                          # problem preset's own reward
//! denoiser: [analytic, mlp]                # lists at the top level sweep: alpha, denoiser, steps, eta, groups,
//!                                          # grid, problem, reward
//! alpha: 1.0
//! steps: 100
//! budget: { axis: nfe, value: [400, 1600] } # optional compute matching: the plan sizes every method
//! methods:
//!   - method: das
//!     particles: [10, 100]                 # lists inside a method sweep too
//!   - method: rl
//!     denoiser: mlp                        # a method may override alpha, denoiser, steps, eta, groups, grid
//! ```

use serde::{Deserialize, Serialize};

use crate::diffusion::schedule::{BetaSchedule, Spacing};
pub use crate::ledger::BudgetAxis;
pub use crate::methods::{MethodSpec, METHOD_NAMES};
pub use crate::rewards::spec::{RewardSpec, WeightedTerm};

/// The file format version this build reads.
pub const VERSION: u32 = 1;

/// Top-level keys whose list values sweep.
pub const SWEEP_KEYS: [&str; 8] = ["alpha", "denoiser", "steps", "eta", "groups", "grid", "problem", "reward"];

/// Every top-level key of an experiment file: the fields of [`CellSpec`] (except `method`, which lives in each
/// `methods:` entry) and the file-level keys `description`, `seeds` and `methods`.
pub const TOP_KEYS: [&str; 17] = [
    "version",
    "name",
    "description",
    "seed",
    "seeds",
    "problem",
    "reward",
    "alpha",
    "denoiser",
    "mlp_weights",
    "steps",
    "eta",
    "grid",
    "groups",
    "metrics",
    "budget",
    "methods",
];

/// Top-level keys a `methods:` entry may set for itself (overriding, or sweeping, the top-level value).
pub const METHOD_OVERRIDES: [&str; 6] = ["alpha", "denoiser", "steps", "eta", "groups", "grid"];

/// Compute matching: the plan sets every method's size (N, particles, children) to the largest value whose
/// estimated cost per group stays within `value` on `axis`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// What is counted.
    pub axis: BudgetAxis,
    /// The budget per group (a list in the file sweeps).
    pub value: f64,
}

/// One fully resolved cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellSpec {
    /// File format version (must be 1).
    pub version: u32,
    /// Experiment name (folder under the results directory).
    pub name: String,
    /// The data distribution.
    pub problem: ProblemSpec,
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

/// A data distribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProblemSpec {
    /// A Gaussian mixture: a preset or explicit weights, means and covariances.
    Gmm {
        /// `gmm1` or `gmm2`.
        #[serde(default)]
        preset: Option<String>,
        /// Component weights.
        #[serde(default)]
        weights: Option<Vec<f64>>,
        /// Component means.
        #[serde(default)]
        means: Option<Vec<Vec<f64>>>,
        /// Component covariances.
        #[serde(default)]
        covs: Option<Vec<Vec<Vec<f64>>>>,
    },
    /// FMNIST-align (mini-benchmark.md): the trained class-conditional latent DDPM, its decoder and reward models.
    Mini {
        /// Assets folder (default `assets/mini`).
        #[serde(default)]
        assets: Option<String>,
        /// Classifier-free guidance scale w (ε̂ = ε_u + w(ε_c − ε_u)); ignored for unconditional prompts.
        #[serde(default = "mini_cfg")]
        guidance_scale: f64,
        /// Prompt classes, cycled over the groups (group g gets `classes[g % len]`); empty = ∅ (unconditional).
        #[serde(default)]
        classes: Vec<usize>,
    },
    /// Stable Diffusion 1.5 (methods.md §0.3, §16): the diffusers folder's UNet with classifier-free guidance, its
    /// VAE decoder and image rewards; group g is conditioned on prompt `g % n_prompts` of a seeded draw from the
    /// `prompts` manifest (`experiment::sd_cell`).
    Sd15 {
        /// Diffusers folder (default `<ALIGNBENCH_MODELS>/stable-diffusion-v1-5`).
        #[serde(default)]
        path: Option<String>,
        /// Precision of the UNet and VAE.
        #[serde(default)]
        dtype: SdDtype,
        /// `cpu`, `cuda`, `cuda:N`, or `auto` (the first GPU when the build has CUDA and one is present, else cpu).
        #[serde(default = "cpu")]
        device: String,
        /// Classifier-free guidance scale w (SD preset 5.0).
        #[serde(default = "sd_cfg")]
        guidance_scale: f64,
        /// Prompt manifest: a built-in name (`eval_simple_animals`, `simple_animals`, optionally `builtin:<name>`) or
        /// a file path (`crate::problems::sd15::PromptManifest`).
        #[serde(default = "eval_animals")]
        prompts: String,
        /// Prompts drawn without replacement from the manifest (seeded by the cell seed); default: the manifest's
        /// size, at most `groups`.
        #[serde(default)]
        n_prompts: Option<usize>,
        /// Micro-batch size in samples (memory only; results do not depend on it).
        #[serde(default = "two")]
        batch_p: usize,
        /// Latent side h = w (64 ⇒ 512 × 512 images for SD 1.5).
        #[serde(default = "sixty_four")]
        latent_size: usize,
        /// Check the files against the SD 1.5 pins (size + sha256); `false` for fine-tunes and test models
        /// (existence only; digests are still recorded).
        #[serde(default = "yes")]
        pinned: bool,
        /// Rewards evaluated on every output besides the target (the cross-reward matrix row, metrics `r_<label>`).
        #[serde(default)]
        eval_rewards: Vec<RewardSpec>,
    },
}

/// Precision of the Stable Diffusion UNet and VAE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SdDtype {
    /// 32-bit floats (CPU and GPU).
    #[default]
    F32,
    /// IEEE half precision (the reference's fp16 autocast).
    F16,
    /// bfloat16 (GPU only: candle's CPU matmul has no bf16 kernel).
    Bf16,
}

impl SdDtype {
    /// The candle dtype.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            SdDtype::F32 => candle_core::DType::F32,
            SdDtype::F16 => candle_core::DType::F16,
            SdDtype::Bf16 => candle_core::DType::BF16,
        }
    }
}

fn cpu() -> String {
    "cpu".into()
}
fn sd_cfg() -> f64 {
    5.0
}
fn eval_animals() -> String {
    "eval_simple_animals".into()
}
fn two() -> usize {
    2
}
fn sixty_four() -> usize {
    64
}
fn yes() -> bool {
    true
}

/// The CFG scale chosen by the pilot of `alignbench mini check` (smallest w with B accuracy ≥ 0.85).
pub const MINI_CFG: f64 = 1.0;

fn mini_cfg() -> f64 {
    MINI_CFG
}

impl ProblemSpec {
    /// Short label for tables (preset name or `custom`).
    pub fn label(&self) -> String {
        match self {
            ProblemSpec::Gmm { preset: Some(p), .. } => p.clone(),
            ProblemSpec::Gmm { .. } => "custom".into(),
            ProblemSpec::Mini { classes, .. } if classes.is_empty() => "mini-uncond".into(),
            ProblemSpec::Mini { classes, .. } => {
                format!("mini-{}", classes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("_"))
            }
            ProblemSpec::Sd15 { .. } => "sd15".into(),
        }
    }
    /// Whether this is the Gaussian-mixture toy (exact targets, 2-d points).
    pub fn is_toy(&self) -> bool {
        matches!(self, ProblemSpec::Gmm { .. })
    }
    /// The β schedule of the problem's diffusion model.
    pub fn beta_schedule(&self) -> BetaSchedule {
        match self {
            ProblemSpec::Gmm { .. } => BetaSchedule::Linear,
            ProblemSpec::Mini { .. } | ProblemSpec::Sd15 { .. } => BetaSchedule::ScaledLinear,
        }
    }
    /// The denoiser label of the tables.
    pub fn denoiser_label(&self, kind: DenoiserKind) -> String {
        match self {
            ProblemSpec::Gmm { .. } => format!("{kind:?}").to_lowercase(),
            ProblemSpec::Mini { guidance_scale, classes, .. } if !classes.is_empty() => {
                format!("eps_mlp_cfg{guidance_scale}")
            }
            ProblemSpec::Mini { .. } => "eps_mlp".into(),
            ProblemSpec::Sd15 { guidance_scale, dtype, .. } => {
                format!("sd15_{}_cfg{guidance_scale}", format!("{dtype:?}").to_lowercase())
            }
        }
    }
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
    /// 8192; `experiment::mini_sir`). Absent: no reference.
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

/// The key a compute budget sizes for a method tag (`None`: the method has no size to match, or no such method).
pub fn size_key(method: &str) -> Option<&'static str> {
    let spec: MethodSpec = serde_json::from_value(serde_json::json!({ "method": method, "particles": 1 })).ok()?;
    spec.method().size_key()
}
