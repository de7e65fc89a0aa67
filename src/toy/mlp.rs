//! The reference's learned toy denoiser (toy.md §5): ε-net on [x, t/1000] → Linear(h) → ReLU → Linear(h) → ReLU →
//! Linear(d), trained by ε-MSE with candle-nn (`alignbench train toy-mlp`).
//!
//! Sampling uses a hand-written batched forward and vector-Jacobian product on `matrixmultiply` GEMMs (exact
//! backprop through the two ReLU layers; checked against finite differences and against candle's autograd), which
//! is what makes the 10⁷ particle-step DAS workload fast on one core. Weight names mirror PyTorch's
//! `nn.Sequential` (`net.0`, `net.2`, `net.4`) so the same file loads in either world.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use super::gmm::Gmm;
use crate::diffusion::schedule::BetaSchedule;
use crate::diffusion::{Cond, Cotangent, Denoiser};
use crate::rng::{fill_normal, Purpose, Streams};
use crate::{Error, Result};

/// A d → h → h → d ReLU MLP ε-network with time input t/1000.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// Data dimension.
    pub d: usize,
    /// Hidden width.
    pub h: usize,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    w3: Vec<f32>,
    b3: Vec<f32>,
}

const KEYS: [&str; 6] = ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "net.4.weight", "net.4.bias"];

/// C (m×n) = A (m×k) · B (k×n) with explicit strides.
#[allow(clippy::too_many_arguments)]
fn gemm(m: usize, k: usize, n: usize, a: &[f32], rsa: usize, csa: usize, b: &[f32], rsb: usize, csb: usize, c: &mut [f32]) {
    debug_assert!(c.len() >= m * n);
    // SAFETY: every index touched by sgemm lies inside the slices: a is m×k with the given strides, b is k×n,
    // c is m×n contiguous row-major (checked above); the slices outlive the call.
    unsafe {
        matrixmultiply::sgemm(
            m, k, n, 1.0, a.as_ptr(), rsa as isize, csa as isize, b.as_ptr(), rsb as isize, csb as isize, 0.0,
            c.as_mut_ptr(), n as isize, 1,
        );
    }
}

impl Mlp {
    /// Random initialisation as PyTorch's `nn.Linear` (U(±1/√fan_in)) from the seeded `train` stream.
    pub fn init(d: usize, h: usize, seed: u64) -> Self {
        let mut rng = Streams::new(seed).rng(Purpose::Train, 0, 0);
        let mut u = |n: usize, fan_in: usize| -> Vec<f32> {
            let b = 1.0 / (fan_in as f64).sqrt();
            (0..n).map(|_| ((crate::rng::uniform(&mut rng) * 2.0 - 1.0) * b) as f32).collect()
        };
        let (w1, b1) = (u(h * (d + 1), d + 1), u(h, d + 1));
        let (w2, b2) = (u(h * h, h), u(h, h));
        let (w3, b3) = (u(d * h, h), u(d, h));
        Mlp { d, h, w1, b1, w2, b2, w3, b3 }
    }

    /// The weights as trainable candle variables, in the order `net.0.weight, net.0.bias, …, net.4.bias`.
    pub fn to_vars(&self, dev: &Device) -> Result<Vec<Var>> {
        Ok(self
            .parts()
            .into_iter()
            .map(|(v, s)| Var::from_tensor(&Tensor::from_vec(v.clone(), s, dev)?))
            .collect::<candle_core::Result<_>>()?)
    }

    /// The weights as constant tensors (same order as [`Mlp::to_vars`]).
    pub fn to_tensors(&self, dev: &Device) -> Result<Vec<Tensor>> {
        Ok(self.parts().into_iter().map(|(v, s)| Tensor::from_vec(v.clone(), s, dev)).collect::<candle_core::Result<_>>()?)
    }

    /// A network from variables in the order of [`Mlp::to_vars`].
    pub fn from_vars(v: &[Var]) -> Result<Self> {
        if v.len() != 6 {
            return Err(Error::config(format!("toy MLP: expected 6 weight tensors, got {}", v.len())));
        }
        let t: Vec<Tensor> = v.iter().map(|x| x.as_tensor().clone()).collect();
        Self::from_tensors(&[t[0].clone(), t[1].clone(), t[2].clone(), t[3].clone(), t[4].clone(), t[5].clone()])
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.w1.len() + self.b1.len() + self.w2.len() + self.b2.len() + self.w3.len() + self.b3.len()
    }

    fn parts(&self) -> [(&Vec<f32>, Vec<usize>); 6] {
        let (d, h) = (self.d, self.h);
        [
            (&self.w1, vec![h, d + 1]),
            (&self.b1, vec![h]),
            (&self.w2, vec![h, h]),
            (&self.b2, vec![h]),
            (&self.w3, vec![d, h]),
            (&self.b3, vec![d]),
        ]
    }

    /// Weights as named tensors.
    pub fn tensors(&self, dev: &Device) -> Result<HashMap<String, Tensor>> {
        let mut m = HashMap::new();
        for (k, (v, s)) in KEYS.iter().zip(self.parts()) {
            m.insert(k.to_string(), Tensor::from_vec(v.clone(), s, dev)?);
        }
        Ok(m)
    }

    /// Save as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        let tmp = path.with_extension("safetensors.tmp");
        candle_core::safetensors::save(&self.tensors(&Device::Cpu)?, &tmp)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Load from safetensors (keys `net.{0,2,4}.{weight,bias}`).
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::file(
                path,
                "toy MLP weights not found; train them with `alignbench train toy-mlp --preset gmm1` (or gmm2)",
            ));
        }
        let t = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
        let get = |k: &str| -> Result<Tensor> {
            t.get(k).cloned().ok_or_else(|| Error::file(path, format!("missing tensor `{k}`")))
        };
        Self::from_tensors(&[get(KEYS[0])?, get(KEYS[1])?, get(KEYS[2])?, get(KEYS[3])?, get(KEYS[4])?, get(KEYS[5])?])
    }

    fn from_tensors(t: &[Tensor; 6]) -> Result<Self> {
        let (h, d1) = t[0].dims2()?;
        let d = t[4].dims2()?.0;
        if d1 != d + 1 {
            return Err(Error::config(format!("toy MLP: first layer has {d1} inputs, expected d + 1 = {}", d + 1)));
        }
        let v = |x: &Tensor| -> Result<Vec<f32>> { Ok(x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?) };
        Ok(Mlp { d, h, w1: v(&t[0])?, b1: v(&t[1])?, w2: v(&t[2])?, b2: v(&t[3])?, w3: v(&t[4])?, b3: v(&t[5])? })
    }

    /// Forward pass keeping the hidden activations (post-ReLU) for the VJP.
    fn forward(&self, x: &[f32], t: usize, eps: &mut [f32], h1: &mut Vec<f32>, h2: &mut Vec<f32>) {
        let (d, h) = (self.d, self.h);
        let n = x.len() / d;
        let mut inp = vec![0f32; n * (d + 1)];
        let tt = t as f32 / 1000.0;
        for (row, src) in inp.chunks_exact_mut(d + 1).zip(x.chunks_exact(d)) {
            row[..d].copy_from_slice(src);
            row[d] = tt;
        }
        h1.resize(n * h, 0.0);
        h2.resize(n * h, 0.0);
        gemm(n, d + 1, h, &inp, d + 1, 1, &self.w1, 1, d + 1, h1);
        relu_bias(h1, &self.b1);
        gemm(n, h, h, h1, h, 1, &self.w2, 1, h, h2);
        relu_bias(h2, &self.b2);
        gemm(n, h, d, h2, h, 1, &self.w3, 1, h, eps);
        for row in eps.chunks_exact_mut(d) {
            for (v, b) in row.iter_mut().zip(&self.b3) {
                *v += b;
            }
        }
    }
}

fn relu_bias(a: &mut [f32], b: &[f32]) {
    for row in a.chunks_exact_mut(b.len()) {
        for (v, bb) in row.iter_mut().zip(b) {
            *v = (*v + bb).max(0.0);
        }
    }
}

fn mask(g: &mut [f32], act: &[f32]) {
    for (v, a) in g.iter_mut().zip(act) {
        if *a <= 0.0 {
            *v = 0.0;
        }
    }
}

impl Denoiser for Mlp {
    fn dim(&self) -> usize {
        self.d
    }
    fn eps(&self, x: &[f32], t: usize, _cond: &Cond, eps: &mut [f32]) -> Result<()> {
        let (mut h1, mut h2) = (Vec::new(), Vec::new());
        self.forward(x, t, eps, &mut h1, &mut h2);
        Ok(())
    }
    fn eps_vjp(&self, x: &[f32], t: usize, _c: &Cond, eps: &mut [f32], cot: &mut Cotangent<'_>, vjp: &mut [f32]) -> Result<()> {
        let (d, h) = (self.d, self.h);
        let n = x.len() / d;
        let (mut h1, mut h2) = (Vec::new(), Vec::new());
        self.forward(x, t, eps, &mut h1, &mut h2);
        let mut u = vec![0f32; n * d];
        cot(eps, &mut u)?;
        let mut g2 = vec![0f32; n * h];
        gemm(n, d, h, &u, d, 1, &self.w3, h, 1, &mut g2);
        mask(&mut g2, &h2);
        let mut g1 = vec![0f32; n * h];
        gemm(n, h, h, &g2, h, 1, &self.w2, h, 1, &mut g1);
        mask(&mut g1, &h1);
        // W1 restricted to its first d input columns (the time input gets no cotangent).
        gemm(n, h, d, &g1, h, 1, &self.w1, d + 1, 1, vjp);
        Ok(())
    }
}

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

/// The same network in candle ops (used for training and to cross-check the hand-written passes).
pub fn forward_candle(v: &[Var], inp: &Tensor) -> Result<Tensor> {
    let t: Vec<Tensor> = v.iter().map(|x| x.as_tensor().clone()).collect();
    forward_tensors(&t, inp)
}

/// [`forward_candle`] on plain tensors (a frozen copy: gradients still flow to the input).
pub fn forward_tensors(w: &[Tensor], inp: &Tensor) -> Result<Tensor> {
    let lin = |x: &Tensor, w: &Tensor, b: &Tensor| -> candle_core::Result<Tensor> { x.matmul(&w.t()?)?.broadcast_add(b) };
    let h1 = lin(inp, &w[0], &w[1])?.relu()?;
    let h2 = lin(&h1, &w[2], &w[3])?.relu()?;
    Ok(lin(&h2, &w[4], &w[5])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(m: &Mlp) -> Vec<Var> {
        m.parts().into_iter().map(|(v, s)| Var::from_tensor(&Tensor::from_vec(v.clone(), s, &Device::Cpu).unwrap()).unwrap()).collect()
    }

    #[test]
    fn hand_forward_and_vjp_match_candle_autograd() {
        let m = Mlp::init(2, 16, 5);
        let x = [0.3f32, -1.2, 2.0, 0.4, -0.7, 0.9];
        let t = 370;
        let u = [0.5f32, -1.0, 0.25, 0.75, -0.3, 0.1];
        let mut e = [0f32; 6];
        let mut v = [0f32; 6];
        m.eps_vjp(&x, t, &Cond::None, &mut e, &mut |_, o: &mut [f32]| { o.copy_from_slice(&u); Ok(()) }, &mut v).unwrap();
        let dev = Device::Cpu;
        let xv = Var::from_tensor(&Tensor::from_vec(x.to_vec(), (3, 2), &dev).unwrap()).unwrap();
        let inp = Tensor::cat(&[xv.as_tensor().clone(), Tensor::full(0.37f32, (3, 1), &dev).unwrap()], 1).unwrap();
        let out = forward_candle(&vars(&m), &inp).unwrap();
        let ec: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in e.iter().zip(&ec) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let ut = Tensor::from_vec(u.to_vec(), (3, 2), &dev).unwrap();
        let grads = (out * ut).unwrap().sum_all().unwrap().backward().unwrap();
        let gc: Vec<f32> = grads.get(xv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in v.iter().zip(&gc) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn vjp_matches_finite_difference() {
        let m = Mlp::init(3, 32, 9);
        let x = [0.3f32, -1.2, 2.0];
        let u = [0.5f32, -1.0, 0.25];
        let mut e = [0f32; 3];
        let mut v = [0f32; 3];
        m.eps_vjp(&x, 500, &Cond::None, &mut e, &mut |_, o: &mut [f32]| { o.copy_from_slice(&u); Ok(()) }, &mut v).unwrap();
        for i in 0..3 {
            let h = 1e-3f32;
            let (mut xp, mut xm) = (x, x);
            xp[i] += h;
            xm[i] -= h;
            let (mut ep, mut em) = ([0f32; 3], [0f32; 3]);
            m.eps(&xp, 500, &Cond::None, &mut ep).unwrap();
            m.eps(&xm, 500, &Cond::None, &mut em).unwrap();
            let fd: f32 = (0..3).map(|j| u[j] * (ep[j] - em[j]) / (2.0 * h)).sum();
            assert!((fd - v[i]).abs() < 1e-2 * (1.0 + fd.abs()), "{fd} vs {}", v[i]);
        }
    }

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
