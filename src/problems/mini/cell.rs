//! Cells of the FMNIST-align problem (`problem: { kind: mini }`, mini-benchmark.md): the trained class-conditional
//! latent ε-MLP with CFG as the denoiser, the autoencoder's decoder, and the project's reward models. The samplers
//! run exactly as on the toy (one `Sampler` code path); only the evaluation differs — no closed-form target here, so
//! a cell reports (§7):
//!
//! - the **cross-reward matrix** row of its target: every FMNIST-align reward (`r_style_a`, `r_cls_a`, `r_style_b`,
//!   `r_cls_b`, `r_gold_ink`, each a weighted mean over outputs, plus `_sd`, the spread over outputs), and the same
//!   per prompt class (∅ when unconditional) in the cell file's `prompts` (`crate::problems::cross_reward`), tabulated by the
//!   store as `prompts.csv` / `prompts.parquet`;
//! - **fidelity**: classifier-B accuracy on the prompt (or fixed target) class `acc_b`, the entropy of B's class
//!   histogram `class_entropy_b` (nats), KID on φ_B against the test images of the same classes `kid_x1000`;
//! - **diversity** on φ_B: truncated entropy pooled (`tce_pooled`, K = 16) and per prompt (`tce_prompt`, K = 3),
//!   mean pairwise cosine distance per prompt (`pairwise_cos`), the LPIPS-style distance on B's two post-ReLU conv
//!   maps per prompt (`lpips_b`, uniform channel weights: LPIPS's `lin=False` variant);
//! - the shared ledger and SMC diagnostics;
//! - for `backprop` (`ft_backprop`, §6.4), which first fine-tunes a copy of the ε-MLP ([`fine_tune`], cached under
//!   the results folder's `weights/`) and then samples it by DDIM with the same guidance scale and prompts: the
//!   training cost and end state (`train_s`, `train_nfe`, `train_vjp_denoiser`, `train_reward`, `train_kl`,
//!   `train_loss`; `wall_s` includes the training).
//!
//! Diversity and fidelity-set metrics treat the outputs as equally weighted: use an output selection with uniform
//! weights (`argmax_weight`, `resample`) on this problem; the reward means use the output weights.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

pub use super::spec::{
    fixed_class, guide_kind, mini_reward, needs_prompt_class, MiniProblem, MiniSpec, MINI_CFG, MINI_ROW_SECONDS,
};
use crate::diffusion::schedule::{BetaSchedule, Grid};
use crate::diffusion::{Cond, Decoder, Denoiser};
use crate::finetune::backprop::{BackpropConfig, BackpropDefaults};
use crate::finetune::{reward_surrogate_cond, TrainStats};
use crate::methods::{MethodSpec, Provides};
use crate::metrics::diversity::{mean_pairwise_cosine_distance, truncated_entropy};
use crate::metrics::kid::KidReference;
use crate::metrics::lpips::mean_pairwise_tap_distance;
use crate::problems::core::{
    backprop_key, cached_training, training_key, weighted_mean_sd, Evaluation, Instance, Pooled, SampleDump,
};
use crate::problems::cross_reward::{cross_reward, Prompt, Scores};
use crate::problems::mini::data::{CLASSES, CLASS_NAMES, PIXELS};
use crate::problems::mini::finetune;
use crate::problems::mini::models::{Classifier, EpsMlp, FEATURES};
use crate::problems::mini::rewards::{MiniNets, MiniRewardKind};
use crate::problems::mini::{map_rows, FashionMnist, MiniAssets, MiniDenoiser};
use crate::problems::setting::Setting;
use crate::problems::Problem;
use crate::rewards::weights::shared;
use crate::rewards::Reward;
use crate::rng::Streams;
use crate::samplers::run::Sampled;
use crate::{Error, Result};

/// Images kept per cell for the sample panels of the report.
pub const KEEP_IMAGES: usize = 20;
/// Real test images per class in the KID reference set.
pub const KID_PER_CLASS: usize = 500;
/// Rows per network call when evaluating outputs.
const EVAL_CHUNK: usize = 1024;

impl Problem for MiniSpec {
    fn label(&self) -> String {
        if self.classes.is_empty() {
            "mini-uncond".into()
        } else {
            format!("mini-{}", self.classes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("_"))
        }
    }

    fn denoiser_label(&self, _s: &Setting) -> String {
        if self.classes.is_empty() {
            "eps_mlp".into()
        } else {
            format!("eps_mlp_cfg{}", self.guidance_scale)
        }
    }

    fn beta_schedule(&self) -> BetaSchedule {
        BetaSchedule::ScaledLinear
    }

    fn row_seconds(&self, _s: &Setting) -> [f64; 4] {
        MINI_ROW_SECONDS
    }

    fn state_dim(&self, _s: &Setting) -> usize {
        crate::problems::mini::LATENT
    }

    fn validate(&self, c: &Setting) -> Result<()> {
        let (_, w, classes) = self.parts();
        if !(w >= 0.0) || !w.is_finite() {
            return Err(Error::config(format!("problem.guidance_scale: must be a finite number ≥ 0 (got {w})")));
        }
        if let Some(&k) = classes.iter().find(|&&k| k >= CLASSES) {
            return Err(Error::config(format!("problem.classes: {k} is not a Fashion-MNIST class (0..9)")));
        }
        if classes.is_empty() && needs_prompt_class(&c.reward) {
            return Err(Error::config(
                "reward: cls_a/cls_b score the prompt class, but this problem is unconditional (`classes` empty); set \
             `class: <0..9>` on the reward or give `classes:`",
            ));
        }
        if c.metrics.sir.is_some_and(|n| n < 2) {
            return Err(Error::config(
                "metrics.sir: the SIR reference needs at least 2 samples per prompt (spec: 8192)",
            ));
        }
        match &c.method {
            MethodSpec::Rl(_) | MethodSpec::Oracle(_) => {
                return Err(Error::config(format!(
                    "method `{}` is available on the toy (`problem: gmm`) only",
                    c.method.name()
                )))
            }
            MethodSpec::Das(d) if d.resampling.selection == crate::samplers::selection::Selection::Weighted => {
                return Err(Error::config(
                    "das.selection: `weighted` outputs are not equally weighted, but the mini diversity metrics treat \
                 outputs as a sample; use `argmax_weight` or `resample`",
                ))
            }
            _ => {}
        }
        let p = MiniProblem::build(self, c)?;
        if let Some(info) = crate::methods::method_info(c.method.name()) {
            let provides = Provides {
                reward_grad: p.reward.differentiable(),
                denoiser_vjp: true,
                // `backprop` fine-tunes a copy of the ε-MLP (`mini::finetune`).
                trainable_denoiser: true,
                exact_tilt: false,
            };
            info.needs
                .check(c.method.name(), provides)
                .map_err(|e| Error::config(format!("{e} (reward: `{}`, {})", c.reward.kind(), p.reward.name())))?;
        }
        Ok(())
    }

    fn instance<'a>(&'a self, s: &'a Setting, cache: Option<&Path>) -> Result<Box<dyn Instance + 'a>> {
        let p = MiniProblem::build(self, s)?;
        // A fine-tuning method samples its fine-tuned copy by plain DDIM/DDPM with the same guidance scale.
        let tuned = match &s.method {
            MethodSpec::Backprop(c) => Some(fine_tune(self, s, &p, c, cache)?),
            _ => None,
        };
        let tuned =
            tuned.map(|(net, st)| (MiniDenoiser::new(net, p.denoiser.guidance_scale(), DType::F32, Device::Cpu), st));
        Ok(Box::new(MiniInstance { spec: self, s, p, tuned }))
    }
}

/// φ_B features of the Fashion-MNIST test images of `classes` (all when empty), up to [`KID_PER_CLASS`] per class,
/// divided by their RMS entry s, as a KID reference with s (computed once per process and assets folder). `None`
/// when the dataset is not installed.
///
/// The scale is a declared deviation from KID on raw features: raw φ_B entries are ReLU activations of order 1–10,
/// so xᵀy/128 ≫ 1 and the cubic kernel would be dominated by feature norms (values in the thousands with a huge
/// variance); with the reference's RMS entry scaled to 1 the kernel argument is O(1), as for Inception features.
fn kid_reference(nets: &Arc<MiniNets>, classes: &[usize]) -> Result<Option<Arc<(KidReference, f32)>>> {
    let mut cls: Vec<usize> = if classes.is_empty() { (0..CLASSES).collect() } else { classes.to_vec() };
    cls.sort_unstable();
    cls.dedup();
    let data = match shared("fashion-mnist", || FashionMnist::load(None)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("warning: no KID (Fashion-MNIST test images unavailable: {e})");
            return Ok(None);
        }
    };
    let key = format!("mini-kid:{:p}:{cls:?}", Arc::as_ptr(nets));
    let r = shared(&key, || {
        let mut x = Vec::new();
        let mut taken = [0usize; CLASSES];
        for (i, &l) in data.test_labels.iter().enumerate() {
            let l = l as usize;
            if cls.contains(&l) && taken[l] < KID_PER_CLASS {
                taken[l] += 1;
                x.extend(data.test_images[i * PIXELS..(i + 1) * PIXELS].iter().map(|&v| v as f32 / 255.0));
            }
        }
        let phi = map_rows(&x, PIXELS, EVAL_CHUNK, &|t| nets.clf_b.features(t))?;
        let scale = (phi.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / phi.len() as f64).sqrt().max(1e-12) as f32;
        Ok((KidReference::new(phi.iter().map(|v| v / scale).collect(), FEATURES)?, scale))
    })?;
    Ok(Some(r))
}

/// `ft_backprop` (mini-benchmark.md §6.4): fine-tune a copy of the ε-MLP on the cell's chain ([`finetune::train`]),
/// or load the weights a previous run cached under `cache` (keyed by the resolved settings, problem, reward, α,
/// chain, seed, the pretrained ε-MLP's sha256, every asset's sha256 and the crate version).
pub fn fine_tune(
    problem: &MiniSpec,
    spec: &Setting,
    p: &MiniProblem,
    c: &BackpropConfig,
    cache: Option<&Path>,
) -> Result<(EpsMlp, TrainStats)> {
    let s = c.resolve(&BackpropDefaults::MINI);
    let (dir, _, _) = problem.parts();
    let assets = MiniAssets::open(dir.as_deref())?;
    let sha: BTreeMap<&String, &String> = assets.manifest.files.iter().map(|(k, e)| (k, &e.sha256)).collect();
    let eps_file = crate::problems::mini::assets::FILES[1];
    let pre_sha = sha.get(&eps_file.to_string()).map(|v| v.as_str()).unwrap_or_default();
    let mut key = training_key(problem.tagged(), spec, backprop_key(&s), pre_sha);
    key["assets_sha256"] = serde_json::to_value(&sha).expect("json");
    let train = || {
        let init = assets.tensors(eps_file, DType::F32, &Device::Cpu)?;
        let reward = |x: &Tensor, cond: &Cond| reward_surrogate_cond(p.reward.as_ref(), x, cond);
        let inp = finetune::MiniTrainInputs {
            init: &init,
            pre: &p.denoiser,
            ae: &p.nets.ae,
            reward: &reward,
            classes: &p.classes,
            dtype: DType::F32,
        };
        let grid = Grid::new(problem.beta_schedule(), spec.grid, spec.steps);
        finetune::train(&inp, &grid, spec.eta, spec.alpha, &s, Streams::new(spec.seed))
    };
    let save = |t: &HashMap<String, Tensor>, w: &Path| -> Result<()> {
        candle_core::safetensors::save(t, w).map_err(|e| Error::file(w, format!("cannot write weights: {e}")))
    };
    let load = |w: &Path| -> Result<HashMap<String, Tensor>> {
        candle_core::safetensors::load(w, &Device::Cpu)
            .map_err(|e| Error::file(w, format!("corrupt cached weights ({e}); delete it to retrain")))
    };
    let (t, stats) = cached_training(cache, "backprop", &key, load, save, train)?;
    Ok((finetune::eps_from_tensors(t)?, stats))
}

/// A mini cell's models (the fine-tuned ε-MLP when the method trained one).
struct MiniInstance<'a> {
    spec: &'a MiniSpec,
    s: &'a Setting,
    p: MiniProblem,
    tuned: Option<(MiniDenoiser, TrainStats)>,
}

impl Instance for MiniInstance<'_> {
    fn denoiser(&self) -> &dyn Denoiser {
        self.tuned.as_ref().map_or(&self.p.denoiser, |t| &t.0)
    }

    fn decoder(&self) -> &dyn Decoder {
        &self.p.decoder
    }

    fn reward(&self) -> &dyn Reward {
        self.p.reward.as_ref()
    }

    fn labels(&self) -> &[usize] {
        &self.p.classes
    }

    fn training(&self) -> Option<&TrainStats> {
        self.tuned.as_ref().map(|t| &t.1)
    }

    fn evaluate(&self, sampled: &Sampled, m: &mut BTreeMap<String, f64>) -> Result<Evaluation> {
        let (p, spec) = (&self.p, self.s);
        // Outputs in group order (each group counting equally) with their prompt labels; a diverged chain
        // (non-finite latent) is counted, and left out of the image metrics.
        let d = crate::problems::mini::LATENT;
        let pooled = Pooled::new(sampled, d);
        let label = |gi: usize| if p.classes.is_empty() { None } else { Some(p.classes[gi % p.classes.len()]) };
        let keep = pooled.finite_rows();
        let (z, w, rewards) = (&pooled.x, &pooled.w, &pooled.rewards);
        let zk: Vec<f32> = keep.iter().flat_map(|&i| z[i * d..(i + 1) * d].iter().copied()).collect();
        let wk: Vec<f64> = keep.iter().map(|&i| w[i]).collect();
        let rk: Vec<f64> = keep.iter().map(|&i| rewards[i]).collect();
        let pk: Vec<Option<usize>> = keep.iter().map(|&i| label(pooled.group[i])).collect();
        m.insert("non_finite_frac".into(), pooled.non_finite_frac);
        let n = keep.len();
        let mut images = Vec::with_capacity(n * PIXELS);
        let mut prompt_rows = Vec::new();
        if n > 0 {
            let mut y = Vec::new();
            for c in zk.chunks(EVAL_CHUNK * d) {
                p.decoder.decode(c, &mut y)?;
                images.extend_from_slice(&y);
            }
            m.insert("reward_mean".into(), weighted_mean_sd(&rk, &wk).0);
            // The class each output is judged against: the target's fixed class (T2), else its prompt class.
            let fixed = fixed_class(&spec.reward);
            let eval_cls: Option<Vec<usize>> = match fixed {
                Some(c) => Some(vec![c; n]),
                None => pk.iter().copied().collect(),
            };
            let guide = guide_kind(&spec.reward);
            let mut scores = Vec::new();
            for kind in MiniRewardKind::all() {
                if kind.needs_class() && eval_cls.is_none() {
                    continue;
                }
                let mut r = Vec::with_capacity(n);
                for (ci, c) in images.chunks(EVAL_CHUNK * PIXELS).enumerate() {
                    let rows = c.len() / PIXELS;
                    let x = Tensor::from_slice(c, (rows, PIXELS), &Device::Cpu)?;
                    let cls = eval_cls.as_ref().map(|v| &v[ci * EVAL_CHUNK..ci * EVAL_CHUNK + rows]);
                    r.extend(p.nets.reward_tensor(kind, &x, cls)?.to_vec1::<f32>()?.into_iter().map(f64::from));
                }
                scores.push(Scores { label: kind.name().into(), guide: guide == Some(kind.name()), values: r });
            }
            // Classes play prompts (∅ when unconditional), in the order they are first cycled over.
            let mut classes: Vec<usize> = Vec::new();
            for &c in &p.classes {
                if !classes.contains(&c) {
                    classes.push(c);
                }
            }
            let prompts: Vec<Prompt> = if classes.is_empty() {
                vec![Prompt::unconditional()]
            } else {
                classes.iter().map(|&c| Prompt { id: c.to_string(), text: CLASS_NAMES[c].into() }).collect()
            };
            let prompt_of: Vec<usize> =
                pk.iter().map(|l| l.and_then(|c| classes.iter().position(|&k| k == c)).unwrap_or(0)).collect();
            prompt_rows = cross_reward(&scores, &wk, &prompt_of, &prompts, m);
            // Fidelity: classifier B's decisions.
            let mut hist = [0f64; CLASSES];
            let mut correct = 0.0;
            for (ci, c) in images.chunks(EVAL_CHUNK * PIXELS).enumerate() {
                let rows = c.len() / PIXELS;
                let x = Tensor::from_slice(c, (rows, PIXELS), &Device::Cpu)?;
                let am: Vec<u32> = p.nets.clf_b.logits(&x)?.argmax(1)?.to_vec1()?;
                for (j, &a) in am.iter().enumerate() {
                    let i = ci * EVAL_CHUNK + j;
                    hist[a as usize] += wk[i];
                    if eval_cls.as_ref().is_some_and(|v| v[i] == a as usize) {
                        correct += wk[i];
                    }
                }
            }
            let ws: f64 = wk.iter().sum();
            if eval_cls.is_some() {
                m.insert("acc_b".into(), correct / ws);
            }
            let ent = -hist.iter().filter(|&&h| h > 0.0).map(|&h| (h / ws) * (h / ws).ln()).sum::<f64>();
            m.insert("class_entropy_b".into(), ent);
            // Diversity on φ_B: pooled and per prompt.
            let phi = map_rows(&images, PIXELS, EVAL_CHUNK, &|t| p.nets.clf_b.features(t))?;
            if n > 16 {
                m.insert("tce_pooled".into(), truncated_entropy(&phi, n, FEATURES, 16)?);
            }
            let mut by_prompt: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
            for (i, l) in pk.iter().enumerate() {
                by_prompt.entry(*l).or_default().push(i);
            }
            let (mut tce, mut cos, mut lp, mut cnt) = (0.0, 0.0, 0.0, 0usize);
            for idx in by_prompt.values().filter(|v| v.len() > 3) {
                let f: Vec<f32> =
                    idx.iter().flat_map(|&i| phi[i * FEATURES..(i + 1) * FEATURES].iter().copied()).collect();
                let im: Vec<f32> =
                    idx.iter().flat_map(|&i| images[i * PIXELS..(i + 1) * PIXELS].iter().copied()).collect();
                tce += truncated_entropy(&f, idx.len(), FEATURES, 3)?;
                cos += mean_pairwise_cosine_distance(&f, idx.len(), FEATURES)?;
                let x = Tensor::from_slice(&im, (idx.len(), PIXELS), &Device::Cpu)?;
                let taps = p.nets.clf_b.taps(&x)?;
                let nchw = [taps.conv1.permute((0, 3, 1, 2))?, taps.conv2.permute((0, 3, 1, 2))?];
                lp += mean_pairwise_tap_distance(&nchw, None)?;
                cnt += 1;
            }
            if cnt > 0 {
                m.insert("tce_prompt".into(), tce / cnt as f64);
                m.insert("pairwise_cos".into(), cos / cnt as f64);
                m.insert("lpips_b".into(), lp / cnt as f64);
            }
            if let Some(n_sir) = spec.metrics.sir {
                let sir = super::sir::SirReference::shared(p, self.spec, spec, n_sir)?;
                let reward_mean = weighted_mean_sd(&rk, &wk).0;
                m.extend(sir.metrics(spec.alpha, &phi, &pk, reward_mean, spec.seed)?);
            }
            if n >= 2 {
                let prompts: Vec<usize> = match fixed {
                    Some(c) => vec![c],
                    None => p.classes.clone(),
                };
                if let Some(r) = kid_reference(&p.nets, &prompts)? {
                    let (reference, scale) = &*r;
                    let x: Vec<f32> = phi.iter().map(|v| v / scale).collect();
                    m.insert("kid_x1000".into(), 1000.0 * reference.kid(&x)?);
                }
            }
        } else {
            m.insert("reward_mean".into(), f64::NEG_INFINITY);
        }
        let kept = KEEP_IMAGES.min(spec.metrics.keep_samples).min(n);
        let samples = SampleDump {
            d: PIXELS,
            x: images[..kept * PIXELS].iter().map(|v| (v * 1000.0).round() / 1000.0).collect(),
        };
        Ok(Evaluation { samples, prompts: prompt_rows, ..Default::default() })
    }
}
