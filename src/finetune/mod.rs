//! Shared machinery of the fine-tuning baselines of Figure 1 (toy.md §4): `rl` (DDPO-like) and `backprop`
//! (AlignProp-like) train a copy of the learned toy MLP with candle autograd and Adam, then sample with it by plain
//! DDIM/DDPM. Both see the sampling chain as affine maps of ε̂: μ_i = a_x·x + a_ε·ε̂ with
//! a_x = √a'/√a and a_ε = √(1−a'−σ²) − √a'·√(1−a)/√a (methods.md §0.4), and both regularise towards the pretrained
//! model with the per-step Gaussian KL between the two kernels N(μ_θ, σ²I) and N(μ_pre, σ²I):
//! KL_i = ‖μ_θ − μ_pre‖²/(2σ_i²) (steps with σ = 0 carry no KL). All randomness comes from the seeded `train`
//! streams; the reward enters through its host gradient, so any differentiable [`Reward`] works.
//!
//! A fine-tuning method is a [`Method`](crate::samplers::method::Method) whose `needs` ask for a trainable
//! denoiser: the problem trains it (its weights cached per training configuration) and the cell then samples with
//! the method's sampler, plain DDIM/DDPM.

pub mod backprop;
pub mod rl;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer};
use serde::{Deserialize, Serialize};

use crate::diffusion::schedule::Grid;
use crate::diffusion::step::StepCoef;
use crate::diffusion::Cond;
use crate::rewards::Reward;
use crate::{Error, Result};

/// What a training run did (saved next to the cached weights).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainStats {
    /// Epochs run.
    pub epochs: usize,
    /// Loss of the last optimiser step.
    pub final_loss: f64,
    /// Mean reward of the last epoch's training batch.
    pub reward_mean: f64,
    /// Mean per-sample Σ_i KL_i of the last epoch (backprop) or mean KL per step (rl).
    pub kl_mean: f64,
    /// Denoiser forward rows spent in training (fine-tuned and frozen copies).
    pub nfe: u64,
    /// Denoiser rows backpropagated through (`backprop`: the rows inside the truncation window; 0 for `rl`).
    #[serde(default)]
    pub vjp: u64,
    /// Wall seconds of training.
    pub wall_s: f64,
}

/// One step of the chain as an affine map of (x, ε̂): μ = a_x·x + a_ε·ε̂, x' = μ + σz.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChainStep {
    /// Timestep fed to the network.
    pub t: usize,
    /// a_x = √a'/√a.
    pub a_x: f64,
    /// a_ε = √(1−a'−σ²) − √a'·√(1−a)/√a.
    pub a_eps: f64,
    /// σ.
    pub sigma: f64,
}

/// The chain of a grid at η.
pub fn chain(grid: &Grid, eta: f64) -> Vec<ChainStep> {
    (0..grid.len())
        .map(|i| {
            let c = StepCoef::new(grid.a[i], grid.a_prev[i], eta);
            ChainStep {
                t: grid.t[i],
                a_x: c.c_x0 / c.sqrt_a,
                a_eps: c.c_eps - c.c_x0 * c.sqrt_1ma / c.sqrt_a,
                sigma: c.sigma,
            }
        })
        .collect()
}

/// The network input [x, t/1000] for a batch.
pub fn time_input(x: &Tensor, t: usize) -> Result<Tensor> {
    let n = x.dims()[0];
    let tt = Tensor::full(t as f32 / 1000.0, (n, 1), x.device())?;
    Ok(Tensor::cat(&[x, &tt], 1)?)
}

/// Step mean μ = a_x·x + a_ε·ε as a tensor op.
pub fn step_mean(s: &ChainStep, x: &Tensor, eps: &Tensor) -> Result<Tensor> {
    Ok(((x * s.a_x)? + (eps * s.a_eps)?)?)
}

/// Per-row Gaussian KL ‖μ_θ − μ_pre‖²/(2σ²) (shape `[n]`).
pub fn step_kl(s: &ChainStep, mu: &Tensor, mu_pre: &Tensor) -> Result<Tensor> {
    Ok(((mu - mu_pre)?.sqr()?.sum(1)? / (2.0 * s.sigma * s.sigma))?)
}

/// Adam (AdamW without weight decay) on `vars`.
pub fn adam(vars: Vec<Var>, lr: f64) -> Result<AdamW> {
    crate::nn::adam(vars, lr, 0.0)
}

/// Clip the global gradient norm of `vars` to `max_norm` (PyTorch's `clip_grad_norm_`), then take one optimiser
/// step. Returns the norm before clipping. A non-finite norm is an error (never silently skipped).
pub fn clip_and_step<O: Optimizer>(opt: &mut O, vars: &[Var], mut grads: GradStore, max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    if !norm.is_finite() {
        return Err(Error::numeric("fine-tuning", format!("gradient norm is {norm}; lower the learning rate")));
    }
    if norm > max_norm {
        let f = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * f)?);
            }
        }
    }
    opt.step(&grads)?;
    Ok(norm)
}

/// −mean r(x) as a surrogate whose gradient w.r.t. `x` is −∇r/n: −Σ x ⊙ stop_grad(∇r)/n. Returns the surrogate and
/// the rewards.
pub fn reward_surrogate(reward: &dyn Reward, x: &Tensor) -> Result<(Tensor, Vec<f64>)> {
    reward_surrogate_cond(reward, x, &Cond::None)
}

/// [`reward_surrogate`] for conditioned rows (prompt classes of the FMNIST-align rewards). The reward's gradient
/// is its host VJP ([`Reward::score_grad`]), so any differentiable reward works; `x` may be f32 or f64 (the reward
/// sees f32).
pub fn reward_surrogate_cond(reward: &dyn Reward, x: &Tensor, cond: &Cond) -> Result<(Tensor, Vec<f64>)> {
    let (n, d) = x.dims2()?;
    let host: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut r = vec![0f64; n];
    let mut g = vec![0f32; n * d];
    reward.score_grad(&host, cond, &mut r, &mut g)?;
    if let Some(bad) = r.iter().find(|v| !v.is_finite()) {
        return Err(Error::numeric("fine-tuning", format!("reward {bad} is not finite")));
    }
    let gt = Tensor::from_vec(g, (n, d), &Device::Cpu)?.to_dtype(x.dtype())?;
    Ok((((x * gt)?.sum_all()? * (-1.0 / n as f64))?, r))
}

/// Mean and standard deviation (population).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::{BetaSchedule, Spacing};
    use crate::diffusion::step::{mean, x0_hat};
    use crate::rewards::quadratic::Quadratic;

    #[test]
    fn affine_chain_matches_the_step_function() {
        let g = Grid::new(BetaSchedule::Linear, Spacing::ToyClean, 20);
        for (i, s) in chain(&g, 1.0).iter().enumerate() {
            let c = StepCoef::new(g.a[i], g.a_prev[i], 1.0);
            let (x, e) = ([0.7f32, -1.1], [0.3f32, 0.9]);
            let mut x0 = [0f32; 2];
            let mut mu = [0f32; 2];
            x0_hat(&c, &x, &e, &mut x0);
            mean(&c, &x0, &e, &mut mu);
            for q in 0..2 {
                let want = s.a_x * x[q] as f64 + s.a_eps * e[q] as f64;
                assert!((mu[q] as f64 - want).abs() < 1e-5, "step {i}: {} vs {want}", mu[q]);
            }
            assert_eq!(s.sigma, c.sigma);
        }
    }

    #[test]
    fn surrogate_gradient_is_minus_mean_reward_gradient() {
        let r = Quadratic::new(vec![vec![2.0, 0.0], vec![0.0, 0.2]], vec![0.0, 0.2], -0.1).unwrap();
        let x =
            Var::from_tensor(&Tensor::from_vec(vec![0.5f32, 1.0, -2.0, 3.0], (2, 2), &Device::Cpu).unwrap()).unwrap();
        let (loss, rw) = reward_surrogate(&r, x.as_tensor()).unwrap();
        assert!((rw[0] - r.eval(&[0.5, 1.0])).abs() < 1e-6);
        let g: Vec<f32> =
            loss.backward().unwrap().get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        // ∇r = −Ax + b; gradient of −mean r is (Ax − b)/2.
        let want = [2.0 * 0.5 / 2.0, (0.2 * 1.0 - 0.2) / 2.0, 2.0 * -2.0 / 2.0, (0.2 * 3.0 - 0.2) / 2.0];
        for (a, b) in g.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn clipping_bounds_the_update_norm() {
        let v = Var::from_tensor(&Tensor::from_vec(vec![1f32, 2.0], 2, &Device::Cpu).unwrap()).unwrap();
        let grads = (v.as_tensor().sqr().unwrap().sum_all().unwrap() * 100.0).unwrap().backward().unwrap();
        // SGD with lr 1: the update equals the clipped gradient, whose norm must be the bound 0.5.
        let mut opt = candle_nn::SGD::new(vec![v.clone()], 1.0).unwrap();
        let before: Vec<f32> = v.as_tensor().to_vec1().unwrap();
        let n = clip_and_step(&mut opt, std::slice::from_ref(&v), grads, 0.5).unwrap();
        assert!((n - 200.0 * 5f64.sqrt()).abs() < 1e-3, "norm before clipping {n}");
        let after: Vec<f32> = v.as_tensor().to_vec1().unwrap();
        let step: f64 = before.iter().zip(&after).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        assert!((step - 0.5).abs() < 1e-4, "{step}");
        // Below the bound the gradient is untouched.
        let grads = v.as_tensor().sum_all().unwrap().backward().unwrap();
        let before: Vec<f32> = v.as_tensor().to_vec1().unwrap();
        clip_and_step(&mut opt, std::slice::from_ref(&v), grads, 10.0).unwrap();
        let after: Vec<f32> = v.as_tensor().to_vec1().unwrap();
        assert!((before[0] - after[0] - 1.0).abs() < 1e-6);
    }
}
