//! `backprop` — the AlignProp-like direct-backpropagation fine-tuning baseline of Figure 1 (Prabhudesai et al. 2023;
//! toy.md §4), at toy scale on a copy of the learned MLP. Each epoch runs the whole sampling chain
//! x_{i+1} = μ_θ(x_i) + σ_i·z_i in candle from seeded noise and minimises
//! −mean r(x_0) + α·mean Σ_i KL_i, KL_i = ‖μ_θ(x_i) − μ_pre(x_i)‖²/(2σ_i²) (steps with σ = 0 carry no KL),
//! backpropagating through every step (the reparameterised chain), with a global gradient-norm clip and Adam.
//! Sampling afterwards is plain DDIM/DDPM with the fine-tuned weights (`experiment::runner`).
//!
//! Reference hyper-parameters (the defaults): lr 3e-5, batch 256, 500 epochs, gradient clip 5.0. Cost: ≈ 0.16 s per
//! epoch on one core (a 100-step chain of 256 samples through two MLP copies and its backward pass), ≈ 80 s per
//! training; the weights are cached, so a re-run costs nothing.

use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::finetune::{
    adam, chain, clip_and_step, mean_std, reward_surrogate, step_kl, step_mean, time_input, TrainStats,
};
use crate::diffusion::schedule::Grid;
use crate::rewards::Reward;
use crate::rng::{fill_normal, Purpose, Streams};
use crate::toy::mlp::{forward_candle, forward_tensors, Mlp};
use crate::{Error, Result};

/// Settings of the `backprop` baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackpropConfig {
    /// Samples per group drawn with the fine-tuned model.
    #[serde(default = "one")]
    pub particles: usize,
    /// Training epochs (reference and default 500, ≈ 80 s on one core).
    #[serde(default = "epochs")]
    pub epochs: usize,
    /// Chains per epoch (reference 256).
    #[serde(default = "batch")]
    pub batch: usize,
    /// Adam learning rate (reference 3e-5).
    #[serde(default = "lr")]
    pub lr: f64,
    /// Global gradient-norm clip (reference 5.0).
    #[serde(default = "grad_clip")]
    pub grad_clip: f64,
}

fn one() -> usize {
    1
}
fn epochs() -> usize {
    500
}
fn batch() -> usize {
    256
}
fn lr() -> f64 {
    3e-5
}
fn grad_clip() -> f64 {
    5.0
}

impl BackpropConfig {
    /// Check ranges once (plan time).
    pub fn validate(&self) -> Result<()> {
        if self.particles == 0 || self.epochs == 0 || self.batch == 0 {
            return Err(Error::config("particles, epochs and batch must be ≥ 1 (reference: batch 256, 500 epochs)"));
        }
        if !(self.lr > 0.0) || !(self.grad_clip > 0.0) {
            return Err(Error::config("lr and grad_clip must be > 0 (reference 3e-5 and 5.0)"));
        }
        Ok(())
    }
}

/// Fine-tune a copy of `pre` by backpropagating −r + α·ΣKL through the chain of `grid` at η.
#[allow(clippy::too_many_arguments)]
pub fn train(
    pre: &Mlp,
    reward: &dyn Reward,
    grid: &Grid,
    eta: f64,
    alpha: f64,
    cfg: &BackpropConfig,
    streams: Streams,
) -> Result<(Mlp, TrainStats)> {
    let t_start = Instant::now();
    let dev = Device::Cpu;
    let (d, b) = (pre.d, cfg.batch);
    let steps = chain(grid, eta);
    let vars = pre.to_vars(&dev)?;
    let frozen = pre.to_tensors(&dev)?;
    let mut opt = adam(vars.clone(), cfg.lr)?;
    let mut stats = TrainStats::default();
    for epoch in 0..cfg.epochs {
        let mut rng = streams.rng(Purpose::Train, 200, epoch as u64);
        let mut noise = vec![0f32; b * d];
        fill_normal(&mut rng, &mut noise);
        let mut x = Tensor::from_vec(noise.clone(), (b, d), &dev)?;
        let mut kl_total = Tensor::zeros(b, candle_core::DType::F32, &dev)?;
        for s in &steps {
            let inp = time_input(&x, s.t)?;
            let mu = step_mean(s, &x, &forward_candle(&vars, &inp)?)?;
            stats.nfe += b as u64;
            if s.sigma > 0.0 {
                let mu_pre = step_mean(s, &x, &forward_tensors(&frozen, &inp)?)?;
                kl_total = (kl_total + step_kl(s, &mu, &mu_pre)?)?;
                stats.nfe += b as u64;
                fill_normal(&mut rng, &mut noise);
                x = (mu + (Tensor::from_vec(noise.clone(), (b, d), &dev)? * s.sigma)?)?;
            } else {
                x = mu;
            }
        }
        let (neg_r, r) = reward_surrogate(reward, &x)?;
        let kl_mean = kl_total.mean_all()?;
        let loss = (neg_r + (&kl_mean * alpha)?)?;
        let (rm, _) = mean_std(&r);
        stats.reward_mean = rm;
        stats.kl_mean = kl_mean.to_scalar::<f32>()? as f64;
        stats.final_loss = -rm + alpha * stats.kl_mean;
        if !stats.final_loss.is_finite() {
            return Err(Error::numeric(
                "backprop",
                format!("loss became {} at epoch {epoch}; lower lr", stats.final_loss),
            ));
        }
        clip_and_step(&mut opt, &vars, loss.backward()?, cfg.grad_clip)?;
    }
    stats.epochs = cfg.epochs;
    stats.wall_s = t_start.elapsed().as_secs_f64();
    Ok((Mlp::from_vars(&vars)?, stats))
}
