//! The FMNIST-align networks (mini-benchmark.md §3): autoencoder, class-conditional ε-MLP, classifier A (MLP),
//! classifier B (CNN) and the affine style heads. All are built from a candle-nn `VarBuilder`, so the same code runs
//! trainable (over a `VarMap`, f32) and frozen (over loaded safetensors, f32 or f64 for gradient tests); tensor names
//! are the module paths (`encoder.0.weight`, `blocks.2.fc1.bias`, …).
//!
//! Every forward pass here uses differentiable primitives only (matmul, conv2d, max_pool2d, SiLU, ReLU, sigmoid,
//! exp/log): no fused normalisation or softmax kernels (stack.md, "gradients silently dropped by fused ops"), and each
//! model has a finite-difference test of its input gradient. Images are rows `[n, 784]` with pixels in [0, 1].

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, VarBuilder, VarMap};
use rand::Rng;

use super::data::{CLASSES, PIXELS, SIDE};
use crate::nn::matmul::matmul;
use crate::nn::Linear;
use crate::rng::{fill_normal, mix64, Purpose, Streams};
use crate::{Error, Result};

/// Latent dimension of the autoencoder (spec §3.1).
pub const LATENT: usize = 16;
/// Class index of the unconditional (∅) label of the ε-MLP.
pub const NULL_CLASS: usize = CLASSES;
/// Feature (φ) width of both classifiers.
pub const FEATURES: usize = 128;

/// Seeded initialisation of every variable of `varmap` (candle's own initialisers draw from an unseeded generator).
///
/// Rules, by name: `*.weight` of rank ≥ 2 and `*.bias` ~ U(±1/√fan_in) (PyTorch's `nn.Linear`/`nn.Conv2d`
/// default, fan_in = product of the weight's trailing dims); `*emb*.weight` ~ N(0, 1); `latent_mean`, `gold_mean`
/// = 0; `latent_scale`, `gold_std` = 1; names starting with any of `zero` = 0. Each tensor draws from its own
/// stream `(seed, train, group, hash(name))`, so the result does not depend on the order of creation.
pub fn seeded_init(varmap: &VarMap, seed: u64, group: u64, zero: &[&str]) -> Result<()> {
    let data = varmap.data().lock().map_err(|_| Error::config("varmap lock poisoned"))?;
    let shapes: HashMap<String, Vec<usize>> = data.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect();
    let streams = Streams::new(seed);
    for (name, var) in data.iter() {
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let mut rng = streams.rng(Purpose::Train, group, name_hash(name));
        let vals: Vec<f32> = if zero.iter().any(|z| name.starts_with(z)) || name.ends_with("_mean") {
            vec![0.0; n]
        } else if name.ends_with("_scale") || name.ends_with("_std") {
            vec![1.0; n]
        } else if name.contains("emb") && name.ends_with(".weight") {
            let mut v = vec![0f32; n];
            fill_normal(&mut rng, &mut v);
            v
        } else {
            let fan_in = if name.ends_with(".bias") {
                let w = format!("{}.weight", name.trim_end_matches(".bias"));
                shapes.get(&w).map(|s| s[1..].iter().product()).unwrap_or(n)
            } else {
                dims[1..].iter().product::<usize>().max(1)
            };
            let b = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| rng.random_range(-b..b)).collect()
        };
        let t = Tensor::from_vec(vals, dims.as_slice(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// FNV-1a of a tensor name, mixed (stream index of its initialisation).
fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    mix64(h)
}

/// Number of scalars of a set of named tensors.
pub fn count_params(t: &HashMap<String, Tensor>) -> usize {
    t.values().map(|x| x.elem_count()).sum()
}

/// A dense layer `name.{weight, bias}` (the product is [`matmul`]'s: the same bits on every CPU with FMA).
fn linear(i: usize, o: usize, vb: VarBuilder, name: &str) -> Result<Linear> {
    Linear::load(vb.pp(name), i, o, true)
}

/// log softmax over the last dimension, composed of primitives (max, sub, exp, sum, log): differentiable.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let d = logits.broadcast_sub(&m)?;
    let lse = d.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(d.broadcast_sub(&lse)?)
}

// ---------------------------------------------------------------------------------------------------------------
// 3.1 Autoencoder
// ---------------------------------------------------------------------------------------------------------------

/// MLP autoencoder 784 → 512 → 256 → (μ, log σ²) ∈ ℝ¹⁶ × 2; decoder 16 → 256 → 512 → 784 → sigmoid (spec §3.1).
///
/// The *latent* is μ standardised, z = (μ − `latent_mean`)/`latent_scale` (the analogue of SD's 0.18215);
/// [`Autoencoder::decode`] applies the inverse first.
#[derive(Clone, Debug)]
pub struct Autoencoder {
    enc: [Linear; 3],
    dec: [Linear; 3],
    /// Per-dimension mean m of μ over P, `[16]`.
    pub latent_mean: Tensor,
    /// One global scale s of μ − m over P, `[1]`.
    pub latent_scale: Tensor,
}

impl Autoencoder {
    /// Build from a var builder (names `encoder.{0,1,2}`, `decoder.{0,1,2}`, `latent_mean`, `latent_scale`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let e = vb.pp("encoder");
        let d = vb.pp("decoder");
        Ok(Autoencoder {
            enc: [
                linear(PIXELS, 512, e.clone(), "0")?,
                linear(512, 256, e.clone(), "1")?,
                linear(256, 2 * LATENT, e, "2")?,
            ],
            dec: [
                linear(LATENT, 256, d.clone(), "0")?,
                linear(256, 512, d.clone(), "1")?,
                linear(512, PIXELS, d, "2")?,
            ],
            latent_mean: vb.get(LATENT, "latent_mean")?,
            latent_scale: vb.get(1, "latent_scale")?,
        })
    }

    /// Encoder moments (μ, log σ²), each `[n, 16]`, in raw (unstandardised) latent units.
    pub fn moments(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.enc[1].forward(&self.enc[0].forward(x)?.silu()?)?.silu()?;
        let o = self.enc[2].forward(&h)?;
        Ok((o.narrow(1, 0, LATENT)?, o.narrow(1, LATENT, LATENT)?))
    }

    /// Standardised latent z = (μ − m)/s of images `[n, 784]`.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let (mu, _) = self.moments(x)?;
        Ok(mu.broadcast_sub(&self.latent_mean)?.broadcast_div(&self.latent_scale)?)
    }

    /// Decoder pre-activations (logits) from a raw latent.
    pub fn decode_raw_logits(&self, z_raw: &Tensor) -> Result<Tensor> {
        let h = self.dec[1].forward(&self.dec[0].forward(z_raw)?.silu()?)?.silu()?;
        self.dec[2].forward(&h)
    }

    /// Images in [0, 1], `[n, 784]`, from standardised latents `[n, 16]`: sigmoid(dec(z·s + m)).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let raw = z.broadcast_mul(&self.latent_scale)?.broadcast_add(&self.latent_mean)?;
        Ok(candle_nn::ops::sigmoid(&self.decode_raw_logits(&raw)?)?)
    }

    /// Reconstructions D(E(x)) of images `[n, 784]` (the posterior mean latent, decoded).
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        self.decode(&self.encode(x)?)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 3.2 ε-MLP
// ---------------------------------------------------------------------------------------------------------------

/// Width of the sinusoidal time features.
pub const TIME_FEATURES: usize = 128;
/// Hidden width of the ε-MLP.
pub const EPS_HIDDEN: usize = 256;
/// Residual blocks of the ε-MLP.
pub const EPS_BLOCKS: usize = 3;

/// Sinusoidal features of integer timesteps, `[n, 128]`: [sin(t·f_k), cos(t·f_k)], f_k = 10000^(−k/64).
pub fn time_features(ts: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
    let half = TIME_FEATURES / 2;
    let mut v = Vec::with_capacity(ts.len() * TIME_FEATURES);
    for &t in ts {
        let t = t as f64;
        for k in 0..half {
            v.push((t * (-(10000f64.ln()) * k as f64 / half as f64).exp()).sin() as f32);
        }
        for k in 0..half {
            v.push((t * (-(10000f64.ln()) * k as f64 / half as f64).exp()).cos() as f32);
        }
    }
    Ok(Tensor::from_vec(v, (ts.len(), TIME_FEATURES), dev)?.to_dtype(dtype)?)
}

/// The class-conditional ε-network (spec §3.2): h = `inp`(z); e = `time.1`(SiLU(`time.0`(sin₁₂₈(t)))) +
/// `class_emb`(c); 3 blocks h ← h + `fc2`(SiLU(`fc1`(SiLU(h + e)))); ε̂ = `out`(SiLU(h)), `out` zero-initialised.
/// Class 10 is ∅ (unconditional). No normalisation layers.
#[derive(Clone, Debug)]
pub struct EpsMlp {
    inp: Linear,
    time: [Linear; 2],
    class_emb: Embedding,
    blocks: Vec<[Linear; 2]>,
    out: Linear,
}

impl EpsMlp {
    /// Names of zero-initialised tensors (for [`seeded_init`]).
    pub const ZERO_INIT: [&'static str; 1] = ["out."];

    /// Build from a var builder.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let h = EPS_HIDDEN;
        let blocks = (0..EPS_BLOCKS)
            .map(|k| {
                let b = vb.pp(format!("blocks.{k}"));
                Ok([linear(h, h, b.clone(), "fc1")?, linear(h, h, b, "fc2")?])
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EpsMlp {
            inp: linear(LATENT, h, vb.clone(), "inp")?,
            time: [linear(TIME_FEATURES, h, vb.pp("time"), "0")?, linear(h, h, vb.pp("time"), "1")?],
            class_emb: candle_nn::embedding(CLASSES + 1, h, vb.pp("class_emb"))?,
            blocks,
            out: linear(h, LATENT, vb, "out")?,
        })
    }

    /// ε̂ for latents `[n, 16]`, time features `[n, 128]` ([`time_features`]) and labels `[n]` (u32, 10 = ∅).
    pub fn forward(&self, z: &Tensor, temb: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let e = (self.time[1].forward(&self.time[0].forward(temb)?.silu()?)? + self.class_emb.forward(labels)?)?;
        let mut h = self.inp.forward(z)?;
        for [fc1, fc2] in &self.blocks {
            let u = fc2.forward(&fc1.forward(&(&h + &e)?.silu()?)?.silu()?)?;
            h = (h + u)?;
        }
        self.out.forward(&h.silu()?)
    }

    /// [`EpsMlp::forward`] from host timesteps and labels.
    pub fn forward_t(&self, z: &Tensor, ts: &[usize], labels: &[u32]) -> Result<Tensor> {
        let temb = time_features(ts, z.dtype(), z.device())?;
        let lab = Tensor::from_slice(labels, labels.len(), z.device())?;
        self.forward(z, &temb, &lab)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 3.3 Classifiers and style heads
// ---------------------------------------------------------------------------------------------------------------

/// A classifier with a feature map φ (spec §3.3): what the rewards and diversity metrics need.
pub trait Classifier {
    /// φ(x), `[n, 128]`, for images `[n, 784]` in [0, 1]; differentiable w.r.t. x.
    fn features(&self, x: &Tensor) -> Result<Tensor>;
    /// Class logits from features, `[n, 10]`.
    fn head(&self, phi: &Tensor) -> Result<Tensor>;
    /// Class logits f(x), `[n, 10]`.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.head(&self.features(x)?)
    }
    /// log softmax(f(x)), `[n, 10]` (composed of primitives: differentiable).
    fn log_probs(&self, x: &Tensor) -> Result<Tensor> {
        log_softmax(&self.logits(x)?)
    }
}

/// Classifier A: MLP 784 → 256 → 128 (φ_A) → 10 with SiLU (`fc1`, `fc2`, `head`).
#[derive(Clone, Debug)]
pub struct ClassifierA {
    fc1: Linear,
    fc2: Linear,
    head: Linear,
}

impl ClassifierA {
    /// Build from a var builder.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(ClassifierA {
            fc1: linear(PIXELS, 256, vb.clone(), "fc1")?,
            fc2: linear(256, FEATURES, vb.clone(), "fc2")?,
            head: linear(FEATURES, CLASSES, vb, "head")?,
        })
    }
}

impl Classifier for ClassifierA {
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.fc2.forward(&self.fc1.forward(x)?.silu()?)?.silu()?)
    }
    fn head(&self, phi: &Tensor) -> Result<Tensor> {
        self.head.forward(phi)
    }
}

/// A 3×3 convolution with zero padding 1 (stride 1) on channels-last maps, written as patches × matrix so that
/// its backward pass is candle's matmul, concatenation and padding (candle's own `conv2d` backward goes through a
/// slow direct `conv_transpose2d` on CPU). Weights keep PyTorch's layout: `weight` `[out, in, 3, 3]`, `bias` `[out]`.
#[derive(Clone, Debug)]
pub struct Conv3x3 {
    /// `[out, in, 3, 3]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Tensor,
}

impl Conv3x3 {
    /// Build from a var builder (`weight`, `bias`).
    pub fn new(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Conv3x3 { weight: vb.get((c_out, c_in, 3, 3), "weight")?, bias: vb.get(c_out, "bias")? })
    }

    /// `[n, h, w, c_in]` → `[n, h, w, c_out]`: y[p] = Σ_{ky,kx,c} W[o, c, ky, kx] · x_pad[p + (ky, kx), c] + b[o].
    pub fn forward_nhwc(&self, x: &Tensor) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let o = self.weight.dim(0)?;
        let xp = x.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
        // Σ over the 9 taps of (shifted map) × W[:, :, ky, kx]ᵀ; each shifted map is a block copy (no per-element
        // strided gathers, which dominate an im2col built with a last-axis concatenation in candle).
        let wt = self.weight.permute((2, 3, 1, 0))?.contiguous()?; // [3, 3, in, out]
        let mut y: Option<Tensor> = None;
        for ky in 0..3 {
            for kx in 0..3 {
                let piece = xp.narrow(1, ky, h)?.narrow(2, kx, w)?.contiguous()?.reshape((n * h * w, c))?;
                let term = matmul(&piece, &wt.get(ky)?.get(kx)?)?;
                y = Some(match y {
                    None => term,
                    Some(acc) => (acc + term)?,
                });
            }
        }
        let y = y.expect("nine taps");
        Ok(y.broadcast_add(&self.bias)?.reshape((n, h, w, o))?)
    }
}

/// 2×2 max pooling (stride 2) of channels-last maps `[n, h, w, c]` → `[n, h/2, w/2, c]`.
///
/// On CPU a custom op with a hand-written backward (the gradient goes to the first maximal element of each window,
/// as in PyTorch); elsewhere two max reductions (candle's reduction backward, ties share the gradient).
pub fn max_pool2_nhwc(x: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) {
        return Ok(x.contiguous()?.apply_op1(MaxPool2Nhwc)?);
    }
    Ok(x.reshape((n, h / 2, 2, w / 2, 2, c))?.max(4)?.max(2)?)
}

/// The CPU custom op behind [`max_pool2_nhwc`].
struct MaxPool2Nhwc;

impl MaxPool2Nhwc {
    /// Index (into the input) of the first maximum of every output element.
    fn argmax<T: PartialOrd + Copy>(x: &[T], (n, h, w, c): (usize, usize, usize, usize)) -> Vec<usize> {
        let (ho, wo) = (h / 2, w / 2);
        let mut idx = Vec::with_capacity(n * ho * wo * c);
        for b in 0..n {
            for i in 0..ho {
                for j in 0..wo {
                    for k in 0..c {
                        let at = |dy: usize, dx: usize| ((b * h + 2 * i + dy) * w + 2 * j + dx) * c + k;
                        let mut best = at(0, 0);
                        for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                            if x[at(dy, dx)] > x[best] {
                                best = at(dy, dx);
                            }
                        }
                        idx.push(best);
                    }
                }
            }
        }
        idx
    }
}

impl candle_core::CustomOp1 for MaxPool2Nhwc {
    fn name(&self) -> &'static str {
        "max-pool2-nhwc"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage as S;
        let (n, h, w, c) = layout.shape().dims4()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("max-pool2-nhwc: input must be contiguous")
        };
        if h % 2 != 0 || w % 2 != 0 {
            candle_core::bail!("max-pool2-nhwc: odd spatial size {h}×{w}")
        }
        let shape = candle_core::Shape::from((n, h / 2, w / 2, c));
        let out = match storage {
            S::F32(v) => {
                let x = &v[start..end];
                S::F32(Self::argmax(x, (n, h, w, c)).into_iter().map(|i| x[i]).collect())
            }
            S::F64(v) => {
                let x = &v[start..end];
                S::F64(Self::argmax(x, (n, h, w, c)).into_iter().map(|i| x[i]).collect())
            }
            _ => candle_core::bail!("max-pool2-nhwc: f32 or f64 only"),
        };
        Ok((out, shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dims = arg.dims4()?;
        let g = grad_res.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let idx = match arg.dtype() {
            DType::F32 => Self::argmax(&arg.flatten_all()?.to_vec1::<f32>()?, dims),
            _ => Self::argmax(&arg.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?, dims),
        };
        let mut out = vec![0f64; arg.elem_count()];
        for (i, gv) in idx.into_iter().zip(g) {
            out[i] += gv;
        }
        Ok(Some(Tensor::from_vec(out, arg.shape(), arg.device())?.to_dtype(arg.dtype())?))
    }
}

/// Classifier B: conv3×3 1→16, ReLU, maxpool2 → conv3×3 16→32, ReLU, maxpool2 → 1568 → 128 (φ_B), ReLU →
/// dropout 0.3 (training only) → 10 (`conv1`, `conv2`, `fc`, `head`). Maps are channels-last internally, so the
/// 1568 inputs of `fc` are ordered (h, w, c).
#[derive(Clone, Debug)]
pub struct ClassifierB {
    conv1: Conv3x3,
    conv2: Conv3x3,
    fc: Linear,
    head: Linear,
}

/// The two post-ReLU convolution maps of classifier B (the LPIPS-style taps of spec §7), channels-last.
#[derive(Clone, Debug)]
pub struct Taps {
    /// After `conv1` + ReLU, `[n, 28, 28, 16]`.
    pub conv1: Tensor,
    /// After `conv2` + ReLU, `[n, 14, 14, 32]`.
    pub conv2: Tensor,
}

impl ClassifierB {
    /// Build from a var builder.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(ClassifierB {
            conv1: Conv3x3::new(1, 16, vb.pp("conv1"))?,
            conv2: Conv3x3::new(16, 32, vb.pp("conv2"))?,
            fc: linear(32 * 7 * 7, FEATURES, vb.clone(), "fc")?,
            head: linear(FEATURES, CLASSES, vb, "head")?,
        })
    }

    /// Post-ReLU convolution maps (channels-last).
    pub fn taps(&self, x: &Tensor) -> Result<Taps> {
        let n = x.dim(0)?;
        let a1 = self.conv1.forward_nhwc(&x.reshape((n, SIDE, SIDE, 1))?)?.relu()?;
        let a2 = self.conv2.forward_nhwc(&max_pool2_nhwc(&a1)?)?.relu()?;
        Ok(Taps { conv1: a1, conv2: a2 })
    }

    fn features_from_taps(&self, taps: &Taps) -> Result<Tensor> {
        let n = taps.conv2.dim(0)?;
        let p = max_pool2_nhwc(&taps.conv2)?.reshape((n, 32 * 7 * 7))?;
        Ok(self.fc.forward(&p)?.relu()?)
    }

    /// Training logits: dropout with a caller-supplied keep mask `[n, 128]` of 0/(1/(1−p)) values (host-seeded).
    pub fn logits_train(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let phi = self.features(x)?;
        let phi = match mask {
            Some(m) => (phi * m)?,
            None => phi,
        };
        self.head(&phi)
    }
}

impl Classifier for ClassifierB {
    fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.features_from_taps(&self.taps(x)?)
    }
    fn head(&self, phi: &Tensor) -> Result<Tensor> {
        self.head.forward(phi)
    }
}

/// Normalised features φ̂ = φ / √(‖φ‖² + 1e-12) (the ε keeps an all-zero ReLU feature finite).
pub fn normalize_features(phi: &Tensor) -> Result<Tensor> {
    let norm = (phi.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    Ok(phi.broadcast_div(&norm)?)
}

/// Affine style head h(x) = wᵀφ̂(x) + b on a classifier's normalised features, plus the gold statistic's
/// standardisation (`gold_mean`, `gold_std`). Tensors: `weight` `[128]`, `bias` `[1]`, `gold_mean`, `gold_std` `[1]`.
#[derive(Clone, Debug)]
pub struct StyleHead {
    /// w.
    pub weight: Tensor,
    /// b.
    pub bias: Tensor,
    /// Mean of the gold attribute over P.
    pub gold_mean: Tensor,
    /// Standard deviation of the gold attribute over P.
    pub gold_std: Tensor,
}

impl StyleHead {
    /// Build from a var builder.
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(StyleHead {
            weight: vb.get(FEATURES, "weight")?,
            bias: vb.get(1, "bias")?,
            gold_mean: vb.get(1, "gold_mean")?,
            gold_std: vb.get(1, "gold_std")?,
        })
    }

    /// h on raw features φ `[n, 128]` → `[n]`.
    pub fn score_features(&self, phi: &Tensor) -> Result<Tensor> {
        let phi_hat = normalize_features(phi)?;
        Ok(phi_hat.broadcast_mul(&self.weight.unsqueeze(0)?)?.sum(1)?.broadcast_add(&self.bias)?)
    }

    /// h(x) for images `[n, 784]` through the classifier's φ.
    pub fn score(&self, clf: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
        self.score_features(&clf.features(x)?)
    }

    /// The gold attribute z(g(x)) = (mean pixel − gold_mean)/gold_std (`ink`) → `[n]`; differentiable.
    pub fn gold_ink(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.mean(1)?.broadcast_sub(&self.gold_mean)?.broadcast_div(&self.gold_std)?)
    }
}

/// Build a model over a fresh, seeded `VarMap` of `dtype` (training start or tiny test instances).
pub fn init_model<M>(
    seed: u64,
    group: u64,
    dtype: DType,
    dev: &Device,
    zero: &[&str],
    build: impl FnOnce(VarBuilder) -> Result<M>,
) -> Result<(M, VarMap)> {
    let vm = VarMap::new();
    let m = build(VarBuilder::from_varmap(&vm, dtype, dev))?;
    seeded_init(&vm, seed, group, zero)?;
    Ok((m, vm))
}

/// The variables of a map as named tensors (a snapshot that shares storage with the vars).
pub fn varmap_tensors(vm: &VarMap) -> Result<HashMap<String, Tensor>> {
    let d = vm.data().lock().map_err(|_| Error::config("varmap lock poisoned"))?;
    Ok(d.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect())
}

#[cfg(test)]
pub(crate) mod tests;
