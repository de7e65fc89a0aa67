//! Training the toy MLP denoiser (toy.md §5) on samples of a Gaussian mixture: full-batch Adam on the ε-MSE at
//! uniform t with the linear β schedule (`alignbench train toy-mlp`).

use candle_core::{Device, Tensor, Var};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use super::gmm::Gmm;
use crate::diffusion::schedule::BetaSchedule;
use crate::models::mlp::{forward_candle, Mlp};
use crate::rng::{fill_normal, Purpose, Streams};
use crate::{Error, Result};

/// Training settings of the toy MLP (defaults = the reference, toy.md §5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Training samples drawn from the mixture.
    pub n_data: usize,
    /// Full-batch epochs.
    pub epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Hidden width.
    pub hidden: usize,
    /// Seed of the `train` streams.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig { n_data: 100_000, epochs: 1000, lr: 1e-3, hidden: 64, seed: 42 }
    }
}

/// Train the ε-net on samples of `gmm` with full-batch Adam on the ε-MSE (uniform t, linear β). Deterministic:
/// every random number comes from the seeded `train` streams. `progress(epoch, loss)` is called every epoch.
pub fn train(gmm: &Gmm, cfg: &TrainConfig, progress: &mut dyn FnMut(usize, f32)) -> Result<(Mlp, f32)> {
    let dev = Device::Cpu;
    let d = gmm.d;
    let streams = Streams::new(cfg.seed);
    let data = gmm.sample(&mut streams.rng(Purpose::Train, 1, 0), cfg.n_data);
    let x0 = Tensor::from_vec(data, (cfg.n_data, d), &dev)?;
    let init = Mlp::init(d, cfg.hidden, cfg.seed);
    let vars: Vec<Var> = init
        .parts()
        .into_iter()
        .map(|(v, s)| Var::from_tensor(&Tensor::from_vec(v.clone(), s, &dev)?))
        .collect::<candle_core::Result<_>>()?;
    let params = candle_nn::ParamsAdamW { lr: cfg.lr, weight_decay: 0.0, ..Default::default() };
    let mut opt = candle_nn::AdamW::new(vars.clone(), params)?;
    let ab = BetaSchedule::Linear.alpha_bar();
    let mut last = f32::NAN;
    let n = cfg.n_data;
    for epoch in 0..cfg.epochs {
        let mut rng = streams.rng(Purpose::Train, 2, epoch as u64);
        let mut noise = vec![0f32; n * d];
        fill_normal(&mut rng, &mut noise);
        let ts: Vec<usize> = (0..n).map(|_| rand::Rng::random_range(&mut rng, 0..1000)).collect();
        let sa: Vec<f32> = ts.iter().map(|&t| ab[t].sqrt() as f32).collect();
        let s1: Vec<f32> = ts.iter().map(|&t| (1.0 - ab[t]).sqrt() as f32).collect();
        let tin: Vec<f32> = ts.iter().map(|&t| t as f32 / 1000.0).collect();
        let eps = Tensor::from_vec(noise, (n, d), &dev)?;
        let sa = Tensor::from_vec(sa, (n, 1), &dev)?;
        let s1 = Tensor::from_vec(s1, (n, 1), &dev)?;
        let xt = (x0.broadcast_mul(&sa)? + eps.broadcast_mul(&s1)?)?;
        let inp = Tensor::cat(&[xt, Tensor::from_vec(tin, (n, 1), &dev)?], 1)?;
        let pred = forward_candle(&vars, &inp)?;
        let loss = (pred - &eps)?.sqr()?.mean_all()?;
        opt.backward_step(&loss)?;
        last = loss.to_scalar::<f32>()?;
        if !last.is_finite() {
            return Err(Error::numeric("toy-mlp training", format!("loss became {last} at epoch {epoch}")));
        }
        progress(epoch, last);
    }
    let t: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let mlp = Mlp::from_tensors(&[t[0].clone(), t[1].clone(), t[2].clone(), t[3].clone(), t[4].clone(), t[5].clone()])?;
    Ok((mlp, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_is_deterministic_and_round_trips() {
        let g = Gmm::preset("gmm1").unwrap();
        let cfg = TrainConfig { n_data: 512, epochs: 5, lr: 1e-3, hidden: 8, seed: 1 };
        let (a, la) = train(&g, &cfg, &mut |_, _| {}).unwrap();
        let (b, lb) = train(&g, &cfg, &mut |_, _| {}).unwrap();
        assert_eq!(a, b);
        assert_eq!(la, lb);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        a.save(&p).unwrap();
        assert_eq!(Mlp::load(&p).unwrap(), a);
    }
}
