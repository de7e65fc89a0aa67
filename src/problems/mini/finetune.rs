//! `ft_backprop` on FMNIST-align (mini-benchmark.md §6.4): the AlignProp-like `backprop` baseline
//! ([`crate::finetune::backprop`]) on a trainable copy of the class-conditional ε-MLP. The training chain is the
//! one the cells sample: the cell's grid, steps and η, classifier-free guidance ε̂ = ε_∅ + w(ε_c − ε_∅) with the
//! cell's w (both branches from the fine-tuned copy; the KL compares with the frozen pretrained model under the same
//! w), the prompt classes cycled over the batch as the cells cycle them over groups, and the reward on the decoded
//! images r(D(z_0)) with D in the autograd graph. The loss backpropagates through the last `last_k` steps only
//! (spec: k ∈ {1, 5}); the earlier steps run with the fine-tuned copy, detached.
//!
//! Cost (300 updates of 64 chains, N = 50 with CFG): ≈ 2.0 M denoiser rows (k = 1) / 2.1 M (k = 5) per training;
//! measured 145–220 s on the project's 2-core machine with two trainings and other work sharing it (`sweep_ft`).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;

use super::models::{init_model, Autoencoder, EpsMlp};
use super::MiniDenoiser;
use crate::diffusion::schedule::Grid;
use crate::diffusion::Cond;
use crate::finetune::backprop::{train_chain, BackpropSettings, TrainChain};
use crate::finetune::{chain, TrainStats};
use crate::rng::Streams;
use crate::{Error, Result};

/// −mean r of decoded images `[n, 784]` as a scalar whose gradient w.r.t. the images is −∇r/n, with the rewards
/// (`finetune::reward_surrogate_cond` for a [`crate::rewards::Reward`]).
pub type ImageReward<'a> = dyn Fn(&Tensor, &Cond) -> Result<(Tensor, Vec<f64>)> + 'a;

/// A trainable copy of an ε-MLP: the network over variables initialised from named tensors.
pub struct TunedEps {
    /// The network (its weights are the variables).
    pub net: EpsMlp,
    /// The variables, sorted by name (a fixed order for the gradient norm).
    pub vars: Vec<(String, Var)>,
}

impl TunedEps {
    /// Variables holding a copy of `init` (every tensor of the ε-MLP, as `dtype`).
    pub fn new(init: &HashMap<String, Tensor>, dtype: DType) -> Result<Self> {
        // Seeded initialisation first (candle's own initialisers are unseeded), then every variable is overwritten.
        let (net, mut vm) = init_model(0, 0, dtype, &Device::Cpu, &[], EpsMlp::new)?;
        let names: Vec<String> = {
            let d = vm.data().lock().map_err(|_| Error::config("varmap lock poisoned"))?;
            let mut k: Vec<String> = d.keys().cloned().collect();
            k.sort();
            k
        };
        for k in &names {
            let t = init.get(k).ok_or_else(|| {
                Error::config(format!("ft_backprop: the pretrained ε-MLP has no tensor `{k}`; retrain the assets"))
            })?;
            vm.set_one(k, t.to_dtype(dtype)?)?;
        }
        let d = vm.data().lock().map_err(|_| Error::config("varmap lock poisoned"))?;
        let vars = names.iter().map(|k| (k.clone(), d[k].clone())).collect();
        Ok(TunedEps { net, vars })
    }

    /// The variables in name order.
    pub fn var_list(&self) -> Vec<Var> {
        self.vars.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The current weights as named tensors (a copy).
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        self.vars.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?))).collect()
    }
}

/// An ε-MLP from named tensors (f32, CPU).
pub fn eps_from_tensors(t: HashMap<String, Tensor>) -> Result<EpsMlp> {
    EpsMlp::new(VarBuilder::from_tensors(t, DType::F32, &Device::Cpu))
}

/// The FMNIST-align training chain.
pub struct MiniChain<'a> {
    /// The fine-tuned copy with the cell's guidance scale.
    pub tuned: MiniDenoiser,
    /// The frozen pretrained model with the same guidance scale.
    pub pre: &'a MiniDenoiser,
    /// The decoder D.
    pub ae: &'a Autoencoder,
    /// The reward on decoded images.
    pub reward: &'a ImageReward<'a>,
    /// Prompt classes cycled over the chains (empty = ∅).
    pub classes: &'a [usize],
    /// Element type of the chain.
    pub dtype: DType,
}

impl TrainChain for MiniChain<'_> {
    fn dim(&self) -> usize {
        super::LATENT
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn rows_per_eval(&self) -> u64 {
        crate::diffusion::Denoiser::rows_per_eval(&self.tuned)
    }
    /// Chain j of update u has the prompt `classes[(u·b + j) % len]`: the cells' cycling over groups, continued
    /// across updates so every class gets the same share.
    fn cond(&self, update: usize, b: usize) -> Cond {
        if self.classes.is_empty() {
            return Cond::None;
        }
        Cond::Labels((0..b).map(|j| self.classes[(update * b + j) % self.classes.len()]).collect())
    }
    fn eps_tuned(&self, x: &Tensor, t: usize, cond: &Cond) -> Result<Tensor> {
        self.tuned.eps_tensor(x, t, cond)
    }
    fn eps_pre(&self, x: &Tensor, t: usize, cond: &Cond) -> Result<Tensor> {
        self.pre.eps_tensor(x, t, cond)
    }
    fn neg_reward(&self, z0: &Tensor, cond: &Cond) -> Result<(Tensor, Vec<f64>)> {
        (self.reward)(&self.ae.decode(z0)?, cond)
    }
}

/// Everything a mini training run reads besides its settings.
pub struct MiniTrainInputs<'a> {
    /// Initial weights of the fine-tuned copy (the pretrained tensors).
    pub init: &'a HashMap<String, Tensor>,
    /// The frozen pretrained model with the cell's guidance scale (w = 0 for ∅ prompts).
    pub pre: &'a MiniDenoiser,
    /// The decoder.
    pub ae: &'a Autoencoder,
    /// The reward on decoded images.
    pub reward: &'a ImageReward<'a>,
    /// Prompt classes (empty = ∅).
    pub classes: &'a [usize],
    /// Element type (f32 in cells, f64 in gradient tests).
    pub dtype: DType,
}

/// Fine-tune a copy of the ε-MLP on the chain of `grid` at η: returns the fine-tuned weights and the run's stats.
pub fn train(
    inp: &MiniTrainInputs,
    grid: &Grid,
    eta: f64,
    alpha: f64,
    s: &BackpropSettings,
    streams: Streams,
) -> Result<(HashMap<String, Tensor>, TrainStats)> {
    let tuned = TunedEps::new(inp.init, inp.dtype)?;
    let vars = tuned.var_list();
    let m = MiniChain {
        tuned: MiniDenoiser::new(tuned.net.clone(), inp.pre.guidance_scale(), inp.dtype, Device::Cpu),
        pre: inp.pre,
        ae: inp.ae,
        reward: inp.reward,
        classes: inp.classes,
        dtype: inp.dtype,
    };
    let stats = train_chain(&m, &vars, &chain(grid, eta), alpha, s, streams)?;
    Ok((tuned.tensors()?, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::{BetaSchedule, Spacing};
    use crate::finetune::backprop::{chain_loss, chain_prefix, window_loss, window_start, Counters};
    use crate::problems::mini::models::{varmap_tensors, ClassifierA, StyleHead};
    use crate::problems::mini::rewards::{MiniNets, MiniRewardKind};
    use crate::rng::Purpose;

    /// Tiny f64 FMNIST-align nets (the assets' shapes, seeded weights; the ε-MLP's output layer not zeroed so the
    /// chain depends on every parameter).
    struct Nets {
        ae: Autoencoder,
        clf_a: ClassifierA,
        style_a: StyleHead,
        eps_init: HashMap<String, Tensor>,
        pre: MiniDenoiser,
    }

    fn nets(dtype: DType) -> Nets {
        let dev = Device::Cpu;
        let ae = init_model(1, 1, dtype, &dev, &[], Autoencoder::new).unwrap().0;
        let clf_a = init_model(1, 3, dtype, &dev, &[], ClassifierA::new).unwrap().0;
        let mut style_a = init_model(1, 5, dtype, &dev, &[], StyleHead::new).unwrap().0;
        style_a.gold_mean = Tensor::new(&[0.3f64], &dev).unwrap().to_dtype(dtype).unwrap();
        style_a.gold_std = Tensor::new(&[0.1f64], &dev).unwrap().to_dtype(dtype).unwrap();
        // The fine-tuned copy starts from one initialisation, the frozen model is another: the KL term is non-zero.
        let (_, vm) = init_model(1, 2, dtype, &dev, &[], EpsMlp::new).unwrap();
        let eps_init = varmap_tensors(&vm).unwrap().into_iter().map(|(k, v)| (k, v.copy().unwrap())).collect();
        let pre_net = init_model(2, 2, dtype, &dev, &[], EpsMlp::new).unwrap().0;
        Nets { ae, clf_a, style_a, eps_init, pre: MiniDenoiser::new(pre_net, 1.5, dtype, dev) }
    }

    fn style_reward(n: &Nets) -> impl Fn(&Tensor, &Cond) -> Result<(Tensor, Vec<f64>)> + '_ {
        |x: &Tensor, _c: &Cond| {
            let r = n.style_a.score(&n.clf_a, x)?;
            let v: Vec<f64> = r.to_dtype(DType::F64)?.to_vec1()?;
            Ok((r.mean_all()?.neg()?, v))
        }
    }

    fn settings(last_k: Option<usize>) -> BackpropSettings {
        BackpropSettings { particles: 1, epochs: 3, batch: 3, lr: 1e-3, grad_clip: 5.0, last_k }
    }

    /// ∂loss/∂θ_j of one update by autograd and by central differences, for a few parameters θ_j. With truncation
    /// the reference is the window's loss from the (fixed) state where the window starts: truncated backpropagation
    /// differentiates exactly that.
    #[test]
    fn loss_gradient_matches_finite_differences() {
        let n = nets(DType::F64);
        let reward = style_reward(&n);
        let grid = Grid::new(BetaSchedule::ScaledLinear, Spacing::Sd15, 6);
        let steps = chain(&grid, 1.0);
        let streams = Streams::new(4);
        let classes = [0usize, 9];
        let tuned = TunedEps::new(&n.eps_init, DType::F64).unwrap();
        let m = MiniChain {
            tuned: MiniDenoiser::new(tuned.net.clone(), 1.5, DType::F64, Device::Cpu),
            pre: &n.pre,
            ae: &n.ae,
            reward: &reward,
            classes: &classes,
            dtype: DType::F64,
        };
        let alpha = 0.7;
        let probes = [("blocks.1.fc1.weight", 37usize), ("out.bias", 3), ("class_emb.weight", 9 * 256 + 5)];
        for last_k in [None, Some(2)] {
            let s = settings(last_k);
            let w = window_start(steps.len(), last_k);
            let mut rng = streams.rng(Purpose::Train, 200, 0);
            let cond = m.cond(0, s.batch);
            let x_w = chain_prefix(&m, &steps[..w], s.batch, &cond, &mut rng, &mut Counters::default()).unwrap();
            let loss = |rng: &mut rand_chacha::ChaCha8Rng| -> Tensor {
                window_loss(&m, &steps[w..], x_w.clone(), &cond, alpha, rng, &mut Counters::default()).unwrap().loss
            };
            let full = chain_loss(&m, &steps, alpha, &s, streams, 0, &mut Counters::default()).unwrap();
            let grads = full.loss.backward().unwrap();
            let l0 = loss(&mut rng.clone()).to_scalar::<f64>().unwrap();
            assert_eq!(l0, full.loss.to_scalar::<f64>().unwrap(), "chain_loss is prefix + window");
            assert!(full.kl_mean > 0.0);
            for (name, j) in probes {
                let var = &tuned.vars.iter().find(|(k, _)| k == name).unwrap().1;
                let g: Vec<f64> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
                let orig = var.as_tensor().copy().unwrap();
                let at = |h: f64| -> f64 {
                    let mut v: Vec<f64> = orig.flatten_all().unwrap().to_vec1().unwrap();
                    v[j] += h;
                    var.set(&Tensor::from_vec(v, orig.shape(), &Device::Cpu).unwrap()).unwrap();
                    let l = loss(&mut rng.clone()).to_scalar::<f64>().unwrap();
                    var.set(&orig).unwrap();
                    l
                };
                let h = 1e-5;
                let num = (at(h) - at(-h)) / (2.0 * h);
                let rel = (num - g[j]).abs() / num.abs().max(g[j].abs()).max(1e-10);
                assert!(rel < 1e-5, "last_k {last_k:?}, {name}[{j}]: autograd {} vs FD {num} (rel {rel:e})", g[j]);
                assert!(g[j].abs() > 1e-8, "{name}[{j}]: zero gradient");
            }
        }
    }

    #[test]
    fn same_seed_gives_identical_weights() {
        let n = nets(DType::F32);
        let reward = style_reward(&n);
        let grid = Grid::new(BetaSchedule::ScaledLinear, Spacing::Sd15, 5);
        let inp = MiniTrainInputs {
            init: &n.eps_init,
            pre: &n.pre,
            ae: &n.ae,
            reward: &reward,
            classes: &[1, 2, 3],
            dtype: DType::F32,
        };
        let s = settings(Some(2));
        let run = |seed| train(&inp, &grid, 1.0, 0.1, &s, Streams::new(seed)).unwrap();
        let (a, sa) = run(7);
        let (b, sb) = run(7);
        let (c, _) = run(8);
        assert_eq!(sa.nfe, sb.nfe);
        // 3 updates × 6 rows (3 chains, CFG) × (5 tuned + 2 frozen window steps, the last with σ > 0).
        assert_eq!(sa.nfe, 3 * 6 * (5 + 2));
        assert_eq!(sa.vjp, 3 * 6 * 2);
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut moved = false;
        let mut differs = false;
        for (k, v) in &a {
            assert_eq!(flat(v), flat(&b[k]), "{k}: two trainings with the same seed differ");
            moved |= flat(v) != flat(&n.eps_init[k]);
            differs |= flat(v) != flat(&c[k]);
        }
        assert!(moved, "training did not change the weights");
        assert!(differs, "another seed gave the same weights");
        assert_eq!(sa.final_loss, sb.final_loss);
    }

    /// The committed assets: the reward path of the cells (host VJP of `style_a`, decoder in the graph) gives the
    /// same loss gradient as autograd of `reward_tensor` through the decoder. Skips without assets.
    #[test]
    fn host_reward_vjp_matches_autograd_on_the_committed_nets() {
        let Ok(nets) = MiniNets::shared(None) else {
            crate::testing::missing(format!("no assets/mini ({})", crate::problems::mini::assets::TRAIN_HINT));
            return;
        };
        let r = crate::problems::mini::rewards::MiniReward::new(MiniRewardKind::StyleA, None, nets.clone()).unwrap();
        let host = |x: &Tensor, c: &Cond| crate::finetune::reward_surrogate_cond(&r, x, c);
        let auto = |x: &Tensor, _c: &Cond| -> Result<(Tensor, Vec<f64>)> {
            let t = nets.reward_tensor(MiniRewardKind::StyleA, x, None)?;
            Ok((t.mean_all()?.neg()?, t.to_dtype(DType::F64)?.to_vec1()?))
        };
        let mut z = vec![0f32; 4 * super::super::LATENT];
        crate::rng::fill_normal(&mut Streams::new(1).rng(Purpose::Train, 92, 0), &mut z);
        let grad = |f: &ImageReward| -> Vec<f32> {
            let zv =
                Var::from_tensor(&Tensor::from_slice(&z, (4, super::super::LATENT), &Device::Cpu).unwrap()).unwrap();
            let (l, _) = f(&nets.ae.decode(zv.as_tensor()).unwrap(), &Cond::Labels(vec![0, 1, 5, 9])).unwrap();
            l.backward().unwrap().get(zv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap()
        };
        let (a, b) = (grad(&host), grad(&auto));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-4 * y.abs().max(1e-2), "{x} vs {y}");
        }
    }
}
