//! The method seam: every method — inference-time sampler or fine-tuning baseline — is a typed configuration (its
//! YAML `methods:` entry) that implements [`Method`]: its name and one-line description, what it needs from the
//! models, the key a compute budget sizes, range checks, its cost on the ledger axes (methods.md §17) and the
//! sampler it runs. The registry (`crate::methods`) lists each configuration once; nothing else names a method.

use crate::ledger::Cost;
use crate::{Error, Result};

use super::Sampler;

/// What a method needs from the models (checked at plan time against what the cell provides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// A differentiable reward (∇r).
    pub reward_grad: bool,
    /// A VJP through the denoiser (∂ε̂/∂x)ᵀu.
    pub denoiser_vjp: bool,
    /// A trainable copy of the learned denoiser (fine-tuning baselines).
    pub trainable_denoiser: bool,
    /// The exact ε of the reward-tilted data distribution (the toy's oracle).
    pub exact_tilt: bool,
}

/// What a cell's models provide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Provides {
    /// The reward has a gradient.
    pub reward_grad: bool,
    /// The denoiser has a VJP.
    pub denoiser_vjp: bool,
    /// The denoiser is a learned network with a trainable copy (the toy MLP, the mini ε-MLP).
    pub trainable_denoiser: bool,
    /// The problem knows the exact tilted ε (the Gaussian-mixture toy with a quadratic reward).
    pub exact_tilt: bool,
}

impl Needs {
    /// Error naming the method, what is missing and the fix.
    pub fn check(self, method: &str, p: Provides) -> Result<()> {
        if self.reward_grad && !p.reward_grad {
            return Err(Error::config(format!(
                "method `{method}` needs a differentiable reward (it follows ∇r), but this reward is black-box; \
                 use a gradient-free method (best_of_n, smc, fk, svdd) or a differentiable reward"
            )));
        }
        if self.denoiser_vjp && !p.denoiser_vjp {
            return Err(Error::config(format!(
                "method `{method}` backpropagates through the denoiser, which has no VJP; use mpgd (x̂0-only gradient) \
                 or a gradient-free method"
            )));
        }
        if self.trainable_denoiser && !p.trainable_denoiser {
            return Err(Error::config(format!(
                "method `{method}` fine-tunes the learned MLP denoiser: set `denoiser: mlp` (for this method only: \
                 put `denoiser: mlp` inside its `methods:` entry)"
            )));
        }
        if self.exact_tilt && !p.exact_tilt {
            return Err(Error::config(format!(
                "method `{method}` samples with the exact ε of the tilted target, which only the Gaussian-mixture toy \
                 with a quadratic reward has; remove it from this experiment"
            )));
        }
        Ok(())
    }
}

/// A method's entry in `alignbench list methods`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// YAML tag (`method: <name>`), equal to the file name.
    pub name: &'static str,
    /// One line.
    pub about: &'static str,
    /// What it needs from the models.
    pub needs: Needs,
}

/// The chain a method runs on (what its range checks may depend on).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chain {
    /// Sampling steps N.
    pub steps: usize,
    /// DDIM η (1 = DDPM posterior).
    pub eta: f64,
    /// Numbers per sample (the state dimension), for methods whose memory grows with their budget.
    pub dim: usize,
}

impl Chain {
    /// Error unless η > 0: the proposal, weights or policy of `method` are undefined at η = 0.
    pub fn needs_noise(&self, method: &str) -> Result<()> {
        if self.eta == 0.0 {
            return Err(Error::config(format!(
                "eta: {method} needs η > 0 (its proposal, weights or policy are undefined at η = 0); use `eta: 1.0`"
            )));
        }
        Ok(())
    }
}

/// One method: its typed configuration (a `methods:` entry) and everything the harness asks of it.
pub trait Method: Send + Sync {
    /// Name, description and needs.
    fn info(&self) -> &'static MethodInfo;
    /// Particles (samples, candidates, chains) per group.
    fn particles(&self) -> usize;
    /// The key a compute budget sets (`None`: nothing to size, e.g. a fine-tuning method whose cost is training).
    fn size_key(&self) -> Option<&'static str> {
        Some("particles")
    }
    /// Range checks of the method's own settings on `chain` (plan time).
    fn validate(&self, chain: &Chain) -> Result<()>;
    /// Ledger cost of one prompt group of sampling on a chain of `steps` steps (the sampler's exact counts).
    fn cost(&self, steps: usize) -> Cost;
    /// The sampler of one batch at KL coefficient α (fine-tuning methods: the sampler used after training).
    fn sampler(&self, alpha: f64) -> Result<Box<dyn Sampler>>;
    /// Whether the outputs come from a weighted particle system (ESS, resamplings and log Ẑ are reported).
    fn is_smc(&self) -> bool {
        false
    }
}

/// `particles: 0` is never valid.
pub fn check_particles(k: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::config("particles: must be at least 1 (e.g. `particles: 100`)"));
    }
    Ok(())
}
