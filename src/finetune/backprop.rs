//! `backprop` — the AlignProp-like direct-backpropagation fine-tuning baseline (Prabhudesai et al. 2023): of
//! Figure 1 on the toy (toy.md §4, a copy of the learned MLP) and `ft_backprop` on FMNIST-align
//! (mini-benchmark.md §6.4, a copy of the class-conditional ε-MLP with CFG, `crate::problems::mini::finetune`). Each update
//! runs the sampling chain x_{i+1} = μ_θ(x_i) + σ_i·z_i in candle from seeded noise and minimises
//! −mean r(D(x_0)) + α·mean Σ_{i∈W} KL_i, KL_i = ‖μ_θ(x_i) − μ_pre(x_i)‖²/(2σ_i²) (steps with σ = 0 carry no KL),
//! backpropagating (the reparameterised chain) through the window W of the **last `last_k` steps**; the steps
//! before W run with the same fine-tuned network but detached (AlignProp's truncated backpropagation, K = 1 in the
//! paper), so they carry neither gradient nor KL. `last_k` unset = every step (the toy's reference). A global
//! gradient-norm clip and Adam follow. Sampling afterwards is plain DDIM/DDPM with the fine-tuned weights
//! (`problems::toy::cell`, `problems::mini::cell`).
//!
//! Defaults depend on the problem ([`BackpropDefaults`]): the toy's reference hyper-parameters (lr 3e-5, batch 256,
//! 500 epochs, clip 5.0, whole chain: ≈ 80 s on one core) and mini-benchmark.md §6.4 on `mini` (lr 1e-4, batch 64,
//! 300 updates, clip 5.0, `last_k` 5). The weights are cached per training configuration, so a re-run costs nothing.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{
    adam, chain, clip_and_step, mean_std, reward_surrogate, step_kl, step_mean, time_input, ChainStep, TrainStats,
};
use crate::diffusion::schedule::Grid;
use crate::diffusion::Cond;
use crate::ledger::Cost;
use crate::models::mlp::{forward_candle, forward_tensors, Mlp};
use crate::rewards::Reward;
use crate::rng::{fill_normal, Purpose, Streams};
use crate::samplers::ddim::DdimSampler;
use crate::samplers::method::{Chain, Method, MethodInfo, Needs};
use crate::samplers::Sampler;
use crate::{Error, Result};

/// Settings of the `backprop` baseline as written in an experiment file; an unset value takes the problem's default
/// ([`BackpropDefaults::TOY`] on `gmm`, [`BackpropDefaults::MINI`] on `mini`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackpropConfig {
    /// Samples per group drawn with the fine-tuned model.
    #[serde(default = "one")]
    pub particles: usize,
    /// Training updates (toy reference 500, mini 300).
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Chains per update (toy reference 256, mini 64).
    #[serde(default)]
    pub batch: Option<usize>,
    /// Adam learning rate (toy reference 3e-5, mini 1e-4).
    #[serde(default)]
    pub lr: Option<f64>,
    /// Global gradient-norm clip (5.0).
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Backpropagate through the last `last_k` sampler steps only (toy: every step; mini: 5).
    #[serde(default)]
    pub last_k: Option<usize>,
}

fn one() -> usize {
    1
}

/// `backprop` in the registry.
pub const INFO: MethodInfo = MethodInfo {
    name: "backprop",
    about: "fine-tuning baseline: AlignProp-like backprop of −r + α·KL through the chain (toy MLP, mini ε-MLP)",
    needs: Needs { reward_grad: true, denoiser_vjp: false, trainable_denoiser: true, exact_tilt: false },
};

impl Method for BackpropConfig {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
    fn particles(&self) -> usize {
        self.particles
    }
    /// Nothing to size: the cost of a fine-tuning method is its training.
    fn size_key(&self) -> Option<&'static str> {
        None
    }
    fn validate(&self, chain: &Chain) -> Result<()> {
        BackpropConfig::validate(self)?;
        if let Some(k) = self.last_k.filter(|&k| k > chain.steps) {
            return Err(Error::config(format!(
                "last_k: {k} exceeds steps ({}); omit `last_k` to backpropagate through every step",
                chain.steps
            )));
        }
        Ok(())
    }
    /// Sampling only (plain DDIM/DDPM with the fine-tuned weights); training is reported separately.
    fn cost(&self, steps: usize) -> Cost {
        Cost::plain(steps, self.particles)
    }
    fn sampler(&self, _alpha: f64) -> Result<Box<dyn Sampler>> {
        Ok(Box::new(DdimSampler::new(self.particles)))
    }
}

/// The defaults of a problem (what an unset [`BackpropConfig`] field means).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackpropDefaults {
    /// Training updates.
    pub epochs: usize,
    /// Chains per update.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Gradient-norm clip.
    pub grad_clip: f64,
    /// Truncation window (`None` = every step).
    pub last_k: Option<usize>,
}

impl BackpropDefaults {
    /// The toy's reference (toy.md §4): 500 epochs of 256 chains, lr 3e-5, clip 5.0, the whole chain.
    pub const TOY: BackpropDefaults =
        BackpropDefaults { epochs: 500, batch: 256, lr: 3e-5, grad_clip: 5.0, last_k: None };
    /// FMNIST-align (mini-benchmark.md §6.4): 300 updates of 64 chains, Adam 1e-4, clip 5.0, the last 5 steps.
    pub const MINI: BackpropDefaults =
        BackpropDefaults { epochs: 300, batch: 64, lr: 1e-4, grad_clip: 5.0, last_k: Some(5) };
}

/// The resolved settings of one training run (what it uses and what its cache key records).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackpropSettings {
    /// Samples per group drawn with the fine-tuned model.
    pub particles: usize,
    /// Training updates.
    pub epochs: usize,
    /// Chains per update.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// Truncation window (`None` = every step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_k: Option<usize>,
}

impl BackpropConfig {
    /// Check ranges once (plan time).
    pub fn validate(&self) -> Result<()> {
        if self.particles == 0 || self.epochs == Some(0) || self.batch == Some(0) {
            return Err(Error::config("particles, epochs and batch must be ≥ 1 (reference: batch 256, 500 epochs)"));
        }
        if self.lr.is_some_and(|v| !(v > 0.0)) || self.grad_clip.is_some_and(|v| !(v > 0.0)) {
            return Err(Error::config("lr and grad_clip must be > 0 (reference 3e-5 and 5.0)"));
        }
        if self.last_k == Some(0) {
            return Err(Error::config(
                "last_k: must be ≥ 1 (AlignProp: 1); omit it to backpropagate through every step",
            ));
        }
        Ok(())
    }

    /// The settings with `d`'s values for the unset fields.
    pub fn resolve(&self, d: &BackpropDefaults) -> BackpropSettings {
        BackpropSettings {
            particles: self.particles,
            epochs: self.epochs.unwrap_or(d.epochs),
            batch: self.batch.unwrap_or(d.batch),
            lr: self.lr.unwrap_or(d.lr),
            grad_clip: self.grad_clip.unwrap_or(d.grad_clip),
            last_k: self.last_k.or(d.last_k),
        }
    }
}

/// What the trainer needs from a problem: the fine-tuned and the frozen ε-models on the chain, the conditioning of
/// each update's chains, and −mean r at the chain's end.
pub trait TrainChain {
    /// Width d of the chain's state.
    fn dim(&self) -> usize;
    /// Element type of the chain's tensors.
    fn dtype(&self) -> DType;
    /// Denoiser rows per ε̂ evaluation (2 with classifier-free guidance).
    fn rows_per_eval(&self) -> u64;
    /// Conditioning of the `b` chains of update `update`.
    fn cond(&self, update: usize, b: usize) -> Cond;
    /// ε̂ of the model being trained (its graph reaches the trainable variables).
    fn eps_tuned(&self, x: &Tensor, t: usize, cond: &Cond) -> Result<Tensor>;
    /// ε̂ of the frozen pretrained model.
    fn eps_pre(&self, x: &Tensor, t: usize, cond: &Cond) -> Result<Tensor>;
    /// Both ε̂ at once (a model may share work, e.g. the network input, between them).
    fn eps_both(&self, x: &Tensor, t: usize, cond: &Cond) -> Result<(Tensor, Tensor)> {
        Ok((self.eps_tuned(x, t, cond)?, self.eps_pre(x, t, cond)?))
    }
    /// −mean r at the chain's end as a scalar whose gradient w.r.t. `x0` is −∇r/n, with the rewards.
    fn neg_reward(&self, x0: &Tensor, cond: &Cond) -> Result<(Tensor, Vec<f64>)>;
}

/// Work counters of a training run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Denoiser forward rows (fine-tuned and frozen copies).
    pub nfe: u64,
    /// Denoiser rows inside the backpropagated window (each also costs a backward pass).
    pub vjp: u64,
}

/// The loss of one update, with its parts.
pub struct ChainLoss {
    /// −mean r + α·mean Σ_W KL_i (a graph reaching the trainable variables).
    pub loss: Tensor,
    /// Mean reward of the batch.
    pub reward_mean: f64,
    /// Mean per-chain Σ_W KL_i.
    pub kl_mean: f64,
}

fn noise_tensor(rng: &mut ChaCha8Rng, b: usize, d: usize, dtype: DType) -> Result<Tensor> {
    let mut v = vec![0f32; b * d];
    fill_normal(rng, &mut v);
    Ok(Tensor::from_vec(v, (b, d), &Device::Cpu)?.to_dtype(dtype)?)
}

/// First index of the backpropagated window of `n` steps.
pub fn window_start(n: usize, last_k: Option<usize>) -> usize {
    n - last_k.unwrap_or(n).min(n)
}

/// Draw x_T from `rng` and run `steps` (the steps before the window) with the fine-tuned model, detached: the state
/// where the window starts, with no graph behind it.
pub fn chain_prefix(
    m: &dyn TrainChain,
    steps: &[ChainStep],
    b: usize,
    cond: &Cond,
    rng: &mut ChaCha8Rng,
    n: &mut Counters,
) -> Result<Tensor> {
    let d = m.dim();
    let mut x = noise_tensor(rng, b, d, m.dtype())?;
    for s in steps {
        let mu = step_mean(s, &x, &m.eps_tuned(&x, s.t, cond)?)?.detach();
        n.nfe += b as u64 * m.rows_per_eval();
        x = if s.sigma > 0.0 { (mu + (noise_tensor(rng, b, d, m.dtype())? * s.sigma)?)?.detach() } else { mu };
    }
    Ok(x)
}

/// Run the window `steps` from `x` with the graph kept, and the loss −mean r(x_0) + α·mean Σ KL_i.
pub fn window_loss(
    m: &dyn TrainChain,
    steps: &[ChainStep],
    mut x: Tensor,
    cond: &Cond,
    alpha: f64,
    rng: &mut ChaCha8Rng,
    n: &mut Counters,
) -> Result<ChainLoss> {
    let (b, d) = x.dims2()?;
    let rows = b as u64 * m.rows_per_eval();
    let mut kl_total = Tensor::zeros(b, m.dtype(), x.device())?;
    for s in steps {
        n.vjp += rows;
        if s.sigma > 0.0 {
            let (eps, eps_pre) = m.eps_both(&x, s.t, cond)?;
            let mu = step_mean(s, &x, &eps)?;
            let mu_pre = step_mean(s, &x, &eps_pre)?;
            kl_total = (kl_total + step_kl(s, &mu, &mu_pre)?)?;
            n.nfe += 2 * rows;
            x = (mu + (noise_tensor(rng, b, d, m.dtype())? * s.sigma)?)?;
        } else {
            x = step_mean(s, &x, &m.eps_tuned(&x, s.t, cond)?)?;
            n.nfe += rows;
        }
    }
    let (neg_r, r) = m.neg_reward(&x, cond)?;
    let kl_mean = kl_total.mean_all()?;
    let loss = (neg_r + (&kl_mean * alpha)?)?;
    Ok(ChainLoss { loss, reward_mean: mean_std(&r).0, kl_mean: kl_mean.to_dtype(DType::F64)?.to_scalar::<f64>()? })
}

/// The loss of update `update`: x_T and step noise from the stream `(train, 200, update)`, the prefix detached, the
/// window of the last `last_k` steps backpropagated.
pub fn chain_loss(
    m: &dyn TrainChain,
    steps: &[ChainStep],
    alpha: f64,
    s: &BackpropSettings,
    streams: Streams,
    update: usize,
    n: &mut Counters,
) -> Result<ChainLoss> {
    let mut rng = streams.rng(Purpose::Train, 200, update as u64);
    let cond = m.cond(update, s.batch);
    let w = window_start(steps.len(), s.last_k);
    let x = chain_prefix(m, &steps[..w], s.batch, &cond, &mut rng, n)?;
    window_loss(m, &steps[w..], x, &cond, alpha, &mut rng, n)
}

/// Fine-tune the variables `vars` behind `m.eps_tuned` for `s.epochs` updates (Adam, global norm clip).
pub fn train_chain(
    m: &dyn TrainChain,
    vars: &[Var],
    steps: &[ChainStep],
    alpha: f64,
    s: &BackpropSettings,
    streams: Streams,
) -> Result<TrainStats> {
    let t_start = Instant::now();
    let mut opt = adam(vars.to_vec(), s.lr)?;
    let mut stats = TrainStats::default();
    let mut n = Counters::default();
    for update in 0..s.epochs {
        let l = chain_loss(m, steps, alpha, s, streams, update, &mut n)?;
        stats.reward_mean = l.reward_mean;
        stats.kl_mean = l.kl_mean;
        stats.final_loss = -l.reward_mean + alpha * l.kl_mean;
        if !stats.final_loss.is_finite() {
            return Err(Error::numeric(
                "backprop",
                format!("loss became {} at update {update}; lower lr", stats.final_loss),
            ));
        }
        clip_and_step(&mut opt, vars, l.loss.backward()?, s.grad_clip)?;
    }
    stats.epochs = s.epochs;
    stats.nfe = n.nfe;
    stats.vjp = n.vjp;
    stats.wall_s = t_start.elapsed().as_secs_f64();
    Ok(stats)
}

/// The toy chain: the learned 2-64-64-2 MLP on [x, t/1000], unconditional, the reward on the points themselves.
struct ToyChain<'a> {
    vars: &'a [Var],
    frozen: Vec<Tensor>,
    reward: &'a dyn Reward,
    d: usize,
}

impl TrainChain for ToyChain<'_> {
    fn dim(&self) -> usize {
        self.d
    }
    fn dtype(&self) -> DType {
        DType::F32
    }
    fn rows_per_eval(&self) -> u64 {
        1
    }
    fn cond(&self, _update: usize, _b: usize) -> Cond {
        Cond::None
    }
    fn eps_tuned(&self, x: &Tensor, t: usize, _cond: &Cond) -> Result<Tensor> {
        forward_candle(self.vars, &time_input(x, t)?)
    }
    fn eps_pre(&self, x: &Tensor, t: usize, _cond: &Cond) -> Result<Tensor> {
        forward_tensors(&self.frozen, &time_input(x, t)?)
    }
    fn eps_both(&self, x: &Tensor, t: usize, _cond: &Cond) -> Result<(Tensor, Tensor)> {
        let inp = time_input(x, t)?;
        Ok((forward_candle(self.vars, &inp)?, forward_tensors(&self.frozen, &inp)?))
    }
    fn neg_reward(&self, x0: &Tensor, _cond: &Cond) -> Result<(Tensor, Vec<f64>)> {
        reward_surrogate(self.reward, x0)
    }
}

/// Fine-tune a copy of the toy MLP `pre` by backpropagating −r + α·ΣKL through the chain of `grid` at η.
pub fn train(
    pre: &Mlp,
    reward: &dyn Reward,
    grid: &Grid,
    eta: f64,
    alpha: f64,
    s: &BackpropSettings,
    streams: Streams,
) -> Result<(Mlp, TrainStats)> {
    let dev = Device::Cpu;
    let vars = pre.to_vars(&dev)?;
    let m = ToyChain { vars: &vars, frozen: pre.to_tensors(&dev)?, reward, d: pre.d };
    let stats = train_chain(&m, &vars, &chain(grid, eta), alpha, s, streams)?;
    Ok((Mlp::from_vars(&vars)?, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_take_the_problem_defaults() {
        let c: BackpropConfig = serde_json::from_str(r#"{"lr": 1e-3}"#).unwrap();
        let toy = c.resolve(&BackpropDefaults::TOY);
        assert_eq!((toy.epochs, toy.batch, toy.lr, toy.last_k), (500, 256, 1e-3, None));
        let mini = c.resolve(&BackpropDefaults::MINI);
        assert_eq!((mini.epochs, mini.batch, mini.lr, mini.last_k), (300, 64, 1e-3, Some(5)));
        // The resolved toy settings serialise as the pre-`last_k` config did (cache keys of existing runs hold).
        let v = serde_json::to_value(&toy).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 5, "{v}");
        assert_eq!((window_start(50, Some(5)), window_start(50, None), window_start(3, Some(5))), (45, 0, 0));
        assert!(BackpropConfig { last_k: Some(0), ..Default::default() }.validate().is_err());
    }
}
