//! The FMNIST-align rewards (mini-benchmark.md §3.4), all on decoded images x = D(z) ∈ [0, 1]^{28×28}:
//!
//! | kind | r(x) | role |
//! |---|---|---|
//! | `style_a` | h_A(x) = w_Aᵀ φ̂_A(x) + b_A | target (aesthetic analogue) |
//! | `cls_a` | log softmax(f_A(x))_c | target (prompt alignment / classifier guidance) |
//! | `style_b` | h_B(x) | held-out preference |
//! | `cls_b` | log softmax(f_B(x))_c | held-out prompt fidelity |
//! | `gold_ink` | z(mean pixel) | ground truth behind the style labels |
//!
//! `multi_w` = w·style_a + (1−w)·cls_a[c] is a `weighted_sum` of the two (§5, T3). The class c of `cls_*` is the
//! reward's own `class:` when set (T2: a fixed target class with ∅ prompts), else each row's prompt class. Every
//! reward is differentiable: one candle forward and backward per batch (finite-difference tests below, through the
//! decoder as well).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::data::{CLASSES, PIXELS};
use super::models::{Autoencoder, Classifier, ClassifierA, ClassifierB, EpsMlp, StyleHead};
use super::MiniAssets;
use crate::diffusion::Cond;
use crate::rewards::weights::shared;
use crate::rewards::Reward;
use crate::{Error, Result};

/// Which FMNIST-align reward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MiniRewardKind {
    /// Style head A on classifier A's features.
    StyleA,
    /// Style head B on classifier B's features.
    StyleB,
    /// The gold ink statistic.
    GoldInk,
    /// log p_A(c | x).
    ClsA,
    /// log p_B(c | x).
    ClsB,
}

impl MiniRewardKind {
    /// The YAML kind / metric name.
    pub fn name(self) -> &'static str {
        match self {
            MiniRewardKind::StyleA => "style_a",
            MiniRewardKind::StyleB => "style_b",
            MiniRewardKind::GoldInk => "gold_ink",
            MiniRewardKind::ClsA => "cls_a",
            MiniRewardKind::ClsB => "cls_b",
        }
    }
    /// Every kind, in the order of the cross-reward columns.
    pub fn all() -> [MiniRewardKind; 5] {
        [
            MiniRewardKind::StyleA,
            MiniRewardKind::ClsA,
            MiniRewardKind::StyleB,
            MiniRewardKind::ClsB,
            MiniRewardKind::GoldInk,
        ]
    }
    /// Whether the reward scores a class.
    pub fn needs_class(self) -> bool {
        matches!(self, MiniRewardKind::ClsA | MiniRewardKind::ClsB)
    }
}

/// The trained FMNIST-align networks, loaded once per process and assets folder (f32, CPU).
#[derive(Clone, Debug)]
pub struct MiniNets {
    /// Autoencoder (its decoder is the problem's `Decoder`).
    pub ae: Autoencoder,
    /// EMA ε-MLP.
    pub eps: EpsMlp,
    /// Classifier A.
    pub clf_a: ClassifierA,
    /// Classifier B.
    pub clf_b: ClassifierB,
    /// Style head A.
    pub style_a: StyleHead,
    /// Style head B.
    pub style_b: StyleHead,
}

impl MiniNets {
    /// Load (verified against the manifest) or fetch from the process cache.
    pub fn shared(dir: Option<&Path>) -> Result<Arc<MiniNets>> {
        let a = MiniAssets::open(dir)?;
        let key = format!("mini-nets:{}", a.dir.display());
        shared(&key, || {
            let dev = Device::Cpu;
            Ok(MiniNets {
                ae: a.autoencoder(DType::F32, &dev)?,
                eps: a.eps_mlp(DType::F32, &dev)?,
                clf_a: a.classifier_a(DType::F32, &dev)?,
                clf_b: a.classifier_b(DType::F32, &dev)?,
                style_a: a.style_a(DType::F32, &dev)?,
                style_b: a.style_b(DType::F32, &dev)?,
            })
        })
    }

    /// r(x) `[n]` for images `[n, 784]` and per-row classes (needed by `cls_*`); differentiable w.r.t. x.
    pub fn reward_tensor(&self, kind: MiniRewardKind, x: &Tensor, classes: Option<&[usize]>) -> Result<Tensor> {
        Ok(match kind {
            MiniRewardKind::StyleA => self.style_a.score(&self.clf_a, x)?,
            MiniRewardKind::StyleB => self.style_b.score(&self.clf_b, x)?,
            MiniRewardKind::GoldInk => self.style_a.gold_ink(x)?,
            MiniRewardKind::ClsA | MiniRewardKind::ClsB => {
                let lp =
                    if kind == MiniRewardKind::ClsA { self.clf_a.log_probs(x)? } else { self.clf_b.log_probs(x)? };
                pick(&lp, classes.ok_or_else(|| Error::config(format!("{}: needs a class per row", kind.name())))?)?
            }
        })
    }
}

/// Row-wise `lp[i, c_i]` as a differentiable gather (one-hot product).
pub fn pick(lp: &Tensor, classes: &[usize]) -> Result<Tensor> {
    let n = lp.dim(0)?;
    if classes.len() != n {
        return Err(Error::config(format!("{} classes for {n} rows", classes.len())));
    }
    let mut onehot = vec![0f32; n * CLASSES];
    for (i, &c) in classes.iter().enumerate() {
        if c >= CLASSES {
            return Err(Error::config(format!("class {c} outside 0..9")));
        }
        onehot[i * CLASSES + c] = 1.0;
    }
    let oh = Tensor::from_vec(onehot, (n, CLASSES), lp.device())?.to_dtype(lp.dtype())?;
    Ok((lp * oh)?.sum(1)?)
}

/// An FMNIST-align reward as the samplers' [`Reward`].
#[derive(Clone, Debug)]
pub struct MiniReward {
    kind: MiniRewardKind,
    class: Option<usize>,
    nets: Arc<MiniNets>,
}

impl MiniReward {
    /// `kind` with an optional fixed class (`cls_*` only).
    pub fn new(kind: MiniRewardKind, class: Option<usize>, nets: Arc<MiniNets>) -> Result<Self> {
        if let Some(c) = class {
            if !kind.needs_class() {
                return Err(Error::config(format!("reward.class: `{}` scores no class; remove `class`", kind.name())));
            }
            if c >= CLASSES {
                return Err(Error::config(format!("reward.class: {c} is outside 0..9 (Fashion-MNIST classes)")));
            }
        }
        Ok(MiniReward { kind, class, nets })
    }

    /// The kind.
    pub fn kind(&self) -> MiniRewardKind {
        self.kind
    }

    /// The class each row is scored against: the fixed class, else the row's prompt class.
    pub fn row_classes(&self, n: usize, cond: &Cond) -> Result<Option<Vec<usize>>> {
        if !self.kind.needs_class() {
            return Ok(None);
        }
        match (self.class, cond) {
            (Some(c), _) => Ok(Some(vec![c; n])),
            (None, Cond::Labels(l)) if l.len() == n => Ok(Some(l.clone())),
            (None, Cond::Labels(l)) => {
                Err(Error::config(format!("{}: {} labels for {n} rows", self.kind.name(), l.len())))
            }
            (None, Cond::None) => Err(Error::config(format!(
                "reward `{}`: unconditional prompts (∅) give no class to score; set `class: <0..9>` on the reward",
                self.kind.name()
            ))),
        }
    }

    fn upload(&self, y: &[f32]) -> Result<Tensor> {
        if y.len() % PIXELS != 0 {
            return Err(Error::config(format!("{}: rows of {PIXELS} pixels expected", self.kind.name())));
        }
        Ok(Tensor::from_slice(y, (y.len() / PIXELS, PIXELS), &Device::Cpu)?)
    }
}

impl Reward for MiniReward {
    fn name(&self) -> String {
        match self.class {
            Some(c) => format!("{}[{c}]", self.kind.name()),
            None => self.kind.name().to_string(),
        }
    }
    fn differentiable(&self) -> bool {
        true
    }
    fn scale(&self) -> String {
        match self.kind {
            MiniRewardKind::StyleA | MiniRewardKind::StyleB => "z-scored ink units (ridge head; data sd ≈ 1)".into(),
            MiniRewardKind::GoldInk => "z-score of the mean pixel over the training images".into(),
            MiniRewardKind::ClsA | MiniRewardKind::ClsB => "log-probability, ≤ 0 nats".into(),
        }
    }
    fn input_dim(&self) -> usize {
        PIXELS
    }
    fn score(&self, y: &[f32], cond: &Cond, out: &mut [f64]) -> Result<()> {
        let x = self.upload(y)?;
        let cls = self.row_classes(out.len(), cond)?;
        let r = self.nets.reward_tensor(self.kind, &x, cls.as_deref())?;
        for (o, v) in out.iter_mut().zip(r.to_vec1::<f32>()?) {
            *o = v as f64;
        }
        Ok(())
    }
    fn score_grad(&self, y: &[f32], cond: &Cond, out: &mut [f64], grad: &mut [f32]) -> Result<()> {
        let xv = Var::from_tensor(&self.upload(y)?)?;
        let cls = self.row_classes(out.len(), cond)?;
        let r = self.nets.reward_tensor(self.kind, xv.as_tensor(), cls.as_deref())?;
        let g = r.sum_all()?.backward()?;
        let gx = g.get(xv.as_tensor()).ok_or_else(|| Error::numeric(self.kind.name(), "no gradient w.r.t. pixels"))?;
        grad.copy_from_slice(&gx.flatten_all()?.to_vec1::<f32>()?);
        for (o, v) in out.iter_mut().zip(r.to_vec1::<f32>()?) {
            *o = v as f64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problems::mini::models::init_model;
    use crate::problems::mini::LATENT;
    use crate::rng::{fill_normal, Purpose, Streams};

    fn normals(n: usize, step: u64) -> Vec<f32> {
        let mut v = vec![0f32; n];
        fill_normal(&mut Streams::new(3).rng(Purpose::Train, 91, step), &mut v);
        v
    }

    /// Tiny random nets in f64 (the assets' shapes; weights seeded).
    fn random_nets() -> MiniNets {
        let dev = Device::Cpu;
        let ae = init_model(1, 1, DType::F64, &dev, &[], Autoencoder::new).unwrap().0;
        let eps = init_model(1, 2, DType::F64, &dev, &[], EpsMlp::new).unwrap().0;
        let clf_a = init_model(1, 3, DType::F64, &dev, &[], ClassifierA::new).unwrap().0;
        let clf_b = init_model(1, 4, DType::F64, &dev, &[], ClassifierB::new).unwrap().0;
        let head = |g| {
            let mut s = init_model(1, g, DType::F64, &dev, &[], StyleHead::new).unwrap().0;
            s.gold_mean = Tensor::new(&[0.3f64], &dev).unwrap();
            s.gold_std = Tensor::new(&[0.1f64], &dev).unwrap();
            s
        };
        MiniNets { ae, eps, clf_a, clf_b, style_a: head(5), style_b: head(6) }
    }

    /// f64 reward on f32 buffers: the upload converts, so evaluate through the tensor API in f64 directly.
    fn reward64(nets: &MiniNets, kind: MiniRewardKind, x: &[f64], cls: &[usize]) -> Vec<f64> {
        let n = x.len() / PIXELS;
        let t = Tensor::from_slice(x, (n, PIXELS), &Device::Cpu).unwrap();
        nets.reward_tensor(kind, &t, Some(cls)).unwrap().to_vec1::<f64>().unwrap()
    }

    #[test]
    fn every_reward_gradient_matches_finite_differences_through_the_decoder() {
        let nets = random_nets();
        let n = 3;
        let z: Vec<f64> = normals(n * LATENT, 0).iter().map(|&v| v as f64).collect();
        let dir: Vec<f64> = normals(n * LATENT, 1).iter().map(|&v| v as f64).collect();
        let cls = [0usize, 4, 9];
        let composite = |kind, z: &[f64]| -> (f64, Vec<f64>) {
            let zv = Var::from_tensor(&Tensor::from_slice(z, (n, LATENT), &Device::Cpu).unwrap()).unwrap();
            let x = nets.ae.decode(zv.as_tensor()).unwrap();
            let r = nets.reward_tensor(kind, &x, Some(&cls)).unwrap().sum_all().unwrap();
            let g = r.backward().unwrap();
            let gz = g.get(zv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            (r.to_scalar::<f64>().unwrap(), gz)
        };
        for kind in MiniRewardKind::all() {
            let (_, g) = composite(kind, &z);
            let h = 1e-5;
            let zp: Vec<f64> = z.iter().zip(&dir).map(|(a, b)| a + h * b).collect();
            let zm: Vec<f64> = z.iter().zip(&dir).map(|(a, b)| a - h * b).collect();
            let num = (composite(kind, &zp).0 - composite(kind, &zm).0) / (2.0 * h);
            let ana: f64 = g.iter().zip(&dir).map(|(a, b)| a * b).sum();
            let rel = (num - ana).abs() / num.abs().max(ana.abs()).max(1e-8);
            assert!(rel < 1e-6, "{}: ∂r(D(z))/∂z rel err {rel:e} (num {num}, ana {ana})", kind.name());
        }
    }

    #[test]
    fn rewards_are_finite_and_classes_are_routed() {
        let nets = random_nets();
        let n = 4;
        let x64: Vec<f64> = (0..n * PIXELS).map(|i| ((i * 37 % 101) as f64) / 101.0).collect();
        let cls = vec![1usize, 2, 3, 4];
        for kind in MiniRewardKind::all() {
            let want = reward64(&nets, kind, &x64, &cls);
            assert_eq!(want.len(), n);
            assert!(want.iter().all(|v| v.is_finite()), "{}", kind.name());
        }
        // Class routing: a fixed class overrides the prompt labels; ∅ prompts need one.
        let arc = Arc::new(nets);
        let r = MiniReward::new(MiniRewardKind::ClsB, Some(7), arc.clone()).unwrap();
        assert_eq!(r.row_classes(2, &Cond::Labels(vec![1, 2])).unwrap(), Some(vec![7, 7]));
        let r = MiniReward::new(MiniRewardKind::ClsA, None, arc.clone()).unwrap();
        assert_eq!(r.row_classes(2, &Cond::Labels(vec![1, 2])).unwrap(), Some(vec![1, 2]));
        let e = r.row_classes(2, &Cond::None).unwrap_err().to_string();
        assert!(e.contains("class:"), "{e}");
        let e = MiniReward::new(MiniRewardKind::StyleA, Some(1), arc.clone()).unwrap_err().to_string();
        assert!(e.contains("remove `class`"), "{e}");
        assert!(MiniReward::new(MiniRewardKind::ClsA, Some(10), arc).is_err());
    }

    #[test]
    fn committed_rewards_score_real_test_images_sensibly() {
        let Ok(nets) = MiniNets::shared(None) else {
            crate::testing::missing(format!("no assets/mini ({})", crate::problems::mini::assets::TRAIN_HINT));
            return;
        };
        let Ok(data) = crate::problems::mini::FashionMnist::load(None) else {
            crate::testing::missing("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)");
            return;
        };
        let splits = crate::problems::mini::Splits::new(&data, None, None, 5000);
        let e = splits.e.head(64);
        let x = e.all_pixels(&data);
        let labels: Vec<usize> = e.all_labels(&data).iter().map(|&c| c as usize).collect();
        let cond = Cond::Labels(labels.clone());
        let mut out = vec![0f64; 64];
        let mut grad = vec![0f32; 64 * PIXELS];
        for kind in MiniRewardKind::all() {
            let r = MiniReward::new(kind, None, nets.clone()).unwrap();
            r.score(&x, &cond, &mut out).unwrap();
            let s = out.clone();
            r.score_grad(&x, &cond, &mut out, &mut grad).unwrap();
            assert_eq!(s, out, "{}: score and score_grad disagree", kind.name());
            assert!(grad.iter().any(|g| *g != 0.0), "{}: zero gradient", kind.name());
            if kind.needs_class() {
                // Real images of the true class: mean log-probability well above chance (ln 0.1 = −2.3).
                let m = out.iter().sum::<f64>() / 64.0;
                assert!(m > -0.7, "{}: mean log p(true class) {m}", kind.name());
            }
        }
        // Style heads track the gold statistic on real images (R² band of spec §4 ⇒ correlation > 0.6).
        let score = |k| {
            let mut o = vec![0f64; 64];
            MiniReward::new(k, None, nets.clone()).unwrap().score(&x, &cond, &mut o).unwrap();
            o
        };
        let (a, g) = (score(MiniRewardKind::StyleA), score(MiniRewardKind::GoldInk));
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (ma, mg) = (mean(&a), mean(&g));
        let cov: f64 = a.iter().zip(&g).map(|(p, q)| (p - ma) * (q - mg)).sum();
        let var = |v: &[f64], m: f64| v.iter().map(|p| (p - m).powi(2)).sum::<f64>();
        let corr = cov / (var(&a, ma) * var(&g, mg)).sqrt();
        assert!(corr > 0.6, "style_a vs gold_ink correlation {corr}");
    }
}
