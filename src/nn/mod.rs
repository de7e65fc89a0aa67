//! Differentiable neural-network building blocks on candle tensors, composed from primitive ops only.
//!
//! candle's fused kernels (`candle_nn::ops::softmax_last_dim`, `ops::layer_norm`, `candle_nn::LayerNorm::forward` on
//! contiguous inputs) have **no backward pass**: `backward()` succeeds but the gradient is silently wrong
//! (rewards.md §9.1, stack.md "gradients silently dropped"). Every block here is written with ops that candle
//! differentiates (matmul, broadcast arithmetic, `exp`, `tanh`, `gelu_erf`, reductions), so a reward tower built from
//! them gives correct gradients with respect to its input pixels. Each block is checked against finite differences
//! with [`testing::check_grad`]. Where guidance only needs the input gradient, [`norm::with_input_grad`] attaches a
//! closed-form one to a value computed off the graph; on CUDA that value comes from our fused kernels
//! ([`fused`]: layer and group norm, forward and input gradient), checked against the composed formulas.
//!
//! Weight names follow the Hugging Face `transformers` layout (`weight`, `bias`, `q_proj`, `layer_norm1`, `mlp.fc1`,
//! ...), so the same code loads real checkpoints and tiny random ones through [`candle_nn::VarBuilder`].

pub mod fused;
pub mod matmul;
pub mod norm;
pub mod testing;

pub use norm::{
    fused_norm, layer_norm_input_grad, norm_input_grad, normalise_last, with_grads, with_input_grad, work_dtype,
    LayerNorm,
};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use crate::Result;

/// A dense layer y = x Wᵀ + b with `weight` [out, in] and optional `bias` [out] (PyTorch / HF layout).
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A layer from its weight [out, in] and optional bias [out].
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// Loads `weight` [out_dim, in_dim] and, when `bias` is true, `bias` [out_dim] under `vb`.
    pub fn load(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
        Ok(Self { weight, bias })
    }

    /// The weight [out, in].
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias [out], if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// y = x Wᵀ + b for x of shape [..., in]; returns [..., out]. On the CPU the product is [`matmul::matmul`]'s
    /// (the same bits on every CPU with FMA, gradients included).
    ///
    /// When `x` is on the autograd graph and W, b are constants (inference-time guidance through the UNet and the
    /// reward towers), the product runs off the graph and [`with_input_grad`] attaches ∂L/∂x = ∂L/∂y · W: one GEMM
    /// in the backward pass, where candle's matmul backward also forms the weight gradient (a second GEMM of the same
    /// size, never used) and accumulates both into zero-filled buffers. Trainable weights take the plain formula.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let constant = !self.weight.track_op() && !self.bias.as_ref().is_some_and(Tensor::track_op);
        if !(x.track_op() && constant) {
            return self.forward_plain(x);
        }
        let y = self.forward_plain(&x.detach())?;
        let weight = self.weight.clone();
        with_input_grad(&y, x, "linear-input-grad", move |x, g| {
            let dims = x.dims();
            let rows = dims[..dims.len() - 1].iter().product::<usize>();
            matmul::blocked(&g.reshape((rows, weight.dim(0)?))?, &weight)?.reshape(dims)
        })
    }

    /// The plain formula, differentiated by candle's autograd: the path without a graph and the tests' reference.
    pub fn forward_plain(&self, x: &Tensor) -> Result<Tensor> {
        // Flatten the leading dimensions into one matmul (no broadcast copies of the weight).
        let dims = x.dims();
        if dims.is_empty() {
            return Err(crate::Error::config("linear: input must have at least one dimension"));
        }
        let (lead, in_dim) = dims.split_at(dims.len() - 1);
        let rows: usize = lead.iter().product();
        let mut out_dims = lead.to_vec();
        out_dims.push(self.weight.dim(0)?);
        let y = matmul::matmul(&x.reshape((rows, in_dim[0]))?, &self.weight.t()?)?.reshape(out_dims)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// AdamW (β = 0.9, 0.999, ε = 1e-8) on `vars` with learning rate `lr` and decoupled weight decay (0 = Adam): the
/// one optimiser of every training loop (fine-tuning baselines, FMNIST-align).
pub fn adam(vars: Vec<candle_core::Var>, lr: f64, weight_decay: f64) -> Result<candle_nn::AdamW> {
    let p = candle_nn::ParamsAdamW { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay };
    Ok(<candle_nn::AdamW as candle_nn::Optimizer>::new(vars, p)?)
}

/// Softmax over the last dimension as exp / sum with max subtraction.
///
/// The subtracted maximum is detached: softmax is invariant to a per-row shift, so this changes no value and no
/// gradient, and it avoids differentiating through `max`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(work_dtype(dtype))?;
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    Ok(e.broadcast_div(&s)?.to_dtype(dtype)?)
}

/// Logistic sigmoid σ(x) = ½(1 + tanh(x/2)), stable for large |x| and differentiable through `tanh`.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok((((x * 0.5)?.tanh()? + 1.0)? * 0.5)?)
}

/// QuickGELU x·σ(1.702x), the activation of OpenAI CLIP (Radford et al. 2021) and of `openai/clip-vit-large-patch14`.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    Ok((x * sigmoid(&(x * 1.702)?)?)?)
}

/// Exact GELU x·Φ(x) = ½x(1 + erf(x/√2)) (Hendrycks & Gimpel 2016), the activation of LAION open_clip ViT-H/14.
///
/// Composed from `erf`, whose backward is exact (2/√π·e^(−x²)); candle's fused `gelu_erf` has a backward too, but
/// with the constant 1/√(2π) rounded to 0.398942 (relative gradient error ≈ 1e-6, measured in the tests).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let phi = (((x * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)? * 0.5)?;
    Ok((x * phi)?)
}

/// An element-wise activation of a transformer MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// x·σ(1.702x) (HF `hidden_act: quick_gelu`).
    QuickGelu,
    /// Exact x·Φ(x) with erf (HF `hidden_act: gelu`).
    Gelu,
}

impl Activation {
    /// Applies the activation element-wise.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => quick_gelu(x),
            Activation::Gelu => gelu(x),
        }
    }
}

/// Multi-head scaled dot-product self-attention (Vaswani et al. 2017) with separate q/k/v/out projections
/// (HF names `q_proj`, `k_proj`, `v_proj`, `out_proj`, all with bias). Queries are scaled by head_dim^(−½) after
/// projection, as in HF CLIP and PyTorch `nn.MultiheadAttention`.
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl MultiHeadAttention {
    /// Builds attention from its four projections; `width` must be divisible by `heads`.
    pub fn new(q_proj: Linear, k_proj: Linear, v_proj: Linear, out_proj: Linear, heads: usize) -> Self {
        Self { q_proj, k_proj, v_proj, out_proj, heads }
    }

    /// Loads `{q,k,v,out}_proj.{weight,bias}` of a `width`-wide layer with `heads` heads under `vb`.
    pub fn load(vb: VarBuilder, width: usize, heads: usize) -> Result<Self> {
        if heads == 0 || width % heads != 0 {
            return Err(crate::Error::config(format!(
                "attention: width {width} is not divisible by {heads} heads; fix the model config"
            )));
        }
        Ok(Self {
            q_proj: Linear::load(vb.pp("q_proj"), width, width, true)?,
            k_proj: Linear::load(vb.pp("k_proj"), width, width, true)?,
            v_proj: Linear::load(vb.pp("v_proj"), width, width, true)?,
            out_proj: Linear::load(vb.pp("out_proj"), width, width, true)?,
            heads,
        })
    }

    /// Self-attention over `x` [batch, tokens, width]; with `causal`, token i attends only to tokens ≤ i.
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let (b, t, w) = x.dims3()?;
        let hd = w / self.heads;
        let split =
            |y: Tensor| -> Result<Tensor> { Ok(y.reshape((b, t, self.heads, hd))?.transpose(1, 2)?.contiguous()?) };
        let q = split((self.q_proj.forward(x)? * (hd as f64).powf(-0.5))?)?;
        let k = split(self.k_proj.forward(x)?)?;
        let v = split(self.v_proj.forward(x)?)?;
        let mut scores = q.matmul(&k.t()?.contiguous()?)?; // [b, h, t, t]
        if causal {
            scores = scores.broadcast_add(&causal_mask(t, scores.dtype(), scores.device())?)?;
        }
        let p = softmax_last_dim(&scores)?;
        let o = p.matmul(&v)?.transpose(1, 2)?.reshape((b, t, w))?;
        self.out_proj.forward(&o)
    }
}

/// Additive causal mask [t, t]: 0 on and below the diagonal, −∞ above (every row keeps at least its diagonal).
pub fn causal_mask(t: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> =
        (0..t).flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Ok(Tensor::from_vec(mask, (t, t), device)?.to_dtype(dtype)?)
}

/// A transformer MLP: fc2(act(fc1(x))) with HF names `fc1`, `fc2`.
#[derive(Clone, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl Mlp {
    /// Loads `fc1` [hidden, width] and `fc2` [width, hidden] (both with bias) under `vb`.
    pub fn load(vb: VarBuilder, width: usize, hidden: usize, act: Activation) -> Result<Self> {
        Ok(Self {
            fc1: Linear::load(vb.pp("fc1"), width, hidden, true)?,
            fc2: Linear::load(vb.pp("fc2"), hidden, width, true)?,
            act,
        })
    }

    /// fc2(act(fc1(x))).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(x)?)?)
    }
}

/// Dimensions of a pre-LN transformer encoder layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncoderLayerConfig {
    /// Model width.
    pub width: usize,
    /// Number of attention heads.
    pub heads: usize,
    /// Hidden width of the MLP.
    pub mlp: usize,
    /// MLP activation.
    pub act: Activation,
    /// LayerNorm eps.
    pub eps: f64,
}

/// A pre-LN transformer encoder layer (Radford et al. 2021; Xiong et al. 2020):
/// x ← x + attn(ln1(x)); x ← x + mlp(ln2(x)). HF names `self_attn`, `layer_norm1`, `mlp`, `layer_norm2`.
#[derive(Clone, Debug)]
pub struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: MultiHeadAttention,
    layer_norm2: LayerNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    /// Loads one layer under `vb` (e.g. `vision_model.encoder.layers.3`).
    pub fn load(vb: VarBuilder, cfg: &EncoderLayerConfig) -> Result<Self> {
        Ok(Self {
            layer_norm1: LayerNorm::load(vb.pp("layer_norm1"), cfg.width, cfg.eps)?,
            self_attn: MultiHeadAttention::load(vb.pp("self_attn"), cfg.width, cfg.heads)?,
            layer_norm2: LayerNorm::load(vb.pp("layer_norm2"), cfg.width, cfg.eps)?,
            mlp: Mlp::load(vb.pp("mlp"), cfg.width, cfg.mlp, cfg.act)?,
        })
    }

    /// Applies the layer to `x` [batch, tokens, width].
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let h = (x + self.self_attn.forward(&self.layer_norm1.forward(x)?, causal)?)?;
        Ok((&h + self.mlp.forward(&self.layer_norm2.forward(&h)?)?)?)
    }
}

/// A stack of [`EncoderLayer`]s loaded from `layers.{0..n}` (HF `encoder`).
#[derive(Clone, Debug)]
pub struct Encoder {
    layers: Vec<EncoderLayer>,
}

impl Encoder {
    /// Loads `n_layers` layers under `vb.pp("layers")`.
    pub fn load(vb: VarBuilder, n_layers: usize, cfg: &EncoderLayerConfig) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..n_layers).map(|i| EncoderLayer::load(vb.pp(i), cfg)).collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// Applies every layer in order.
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(&h, causal)?;
        }
        Ok(h)
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{check_grad, random_tensor};
    use super::*;
    use std::collections::HashMap;

    const DEV: Device = Device::Cpu;

    fn layer_weights(seed: u64, cfg: &EncoderLayerConfig) -> HashMap<String, Tensor> {
        let mut m = HashMap::new();
        let (w, h) = (cfg.width, cfg.mlp);
        let mut s = seed;
        let mut put = |name: &str, shape: &[usize], mean: f64, std: f64| {
            s += 1;
            let t = (random_tensor(shape, s, DType::F64, &DEV).unwrap() * std).unwrap() + mean;
            m.insert(name.to_string(), t.unwrap());
        };
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            put(&format!("self_attn.{p}.weight"), &[w, w], 0.0, 1.0 / (w as f64).sqrt());
            put(&format!("self_attn.{p}.bias"), &[w], 0.0, 0.1);
        }
        for l in ["layer_norm1", "layer_norm2"] {
            put(&format!("{l}.weight"), &[w], 1.0, 0.2);
            put(&format!("{l}.bias"), &[w], 0.0, 0.2);
        }
        put("mlp.fc1.weight", &[h, w], 0.0, 1.0 / (w as f64).sqrt());
        put("mlp.fc1.bias", &[h], 0.0, 0.1);
        put("mlp.fc2.weight", &[w, h], 0.0, 1.0 / (h as f64).sqrt());
        put("mlp.fc2.bias", &[w], 0.0, 0.1);
        m
    }

    fn cfg(act: Activation) -> EncoderLayerConfig {
        EncoderLayerConfig { width: 8, heads: 2, mlp: 12, act, eps: 1e-5 }
    }

    #[test]
    fn softmax_and_activations() {
        let x = random_tensor(&[2, 7], 5, DType::F64, &DEV).unwrap();
        let x = (x * 3.0).unwrap();
        let ours = softmax_last_dim(&x).unwrap();
        let reference = candle_nn::ops::softmax(&x, D::Minus1).unwrap();
        let d = (&ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(d < 1e-14);
        let rows = ours.sum(D::Minus1).unwrap().to_vec1::<f64>().unwrap();
        assert!(rows.iter().all(|s| (s - 1.0).abs() < 1e-14));
        // Large logits do not overflow.
        let big = Tensor::new(&[[1000f64, 0.0]], &DEV).unwrap();
        let p = softmax_last_dim(&big).unwrap().to_vec2::<f64>().unwrap();
        assert!((p[0][0] - 1.0).abs() < 1e-12 && p[0][1] >= 0.0);

        let v = Tensor::new(&[-3f64, -0.5, 0.0, 0.7, 2.0], &DEV).unwrap();
        let qg = quick_gelu(&v).unwrap().to_vec1::<f64>().unwrap();
        let ge = gelu(&v).unwrap().to_vec1::<f64>().unwrap();
        for (i, &x) in [-3f64, -0.5, 0.0, 0.7, 2.0].iter().enumerate() {
            let q = x / (1.0 + (-1.702 * x).exp());
            assert!((qg[i] - q).abs() < 1e-14, "quick_gelu({x})");
        }
        // Φ(x) at a few points (erf tables): gelu(x) = x Φ(x).
        let phi = [0.0013498980316301, 0.3085375387259869, 0.5, 0.758036347776927, 0.9772498680518208];
        for (i, &x) in [-3f64, -0.5, 0.0, 0.7, 2.0].iter().enumerate() {
            assert!((ge[i] - x * phi[i]).abs() < 1e-12, "gelu({x}) = {} vs {}", ge[i], x * phi[i]);
        }
        // Extreme inputs stay finite in value.
        let ext = Tensor::new(&[-200f32, 200.0], &DEV).unwrap();
        let q = quick_gelu(&ext).unwrap().to_vec1::<f32>().unwrap();
        assert!(q[0].abs() < 1e-30 && (q[1] - 200.0).abs() < 1e-3);
    }

    #[test]
    fn activation_gradients() {
        let x = (random_tensor(&[4, 5], 6, DType::F64, &DEV).unwrap() * 2.0).unwrap();
        let e1 = check_grad(gelu, &x, 1).unwrap();
        let e0 = check_grad(|x| Ok(x.gelu_erf()?), &x, 1).unwrap();
        eprintln!("FD rel err of candle's fused gelu_erf {e0:.2e}");
        assert!(e0 < 1e-4, "{e0}");
        let d = (gelu(&x).unwrap() - x.gelu_erf().unwrap()).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f64>().unwrap() < 1e-14);
        let e2 = check_grad(quick_gelu, &x, 2).unwrap();
        let e3 = check_grad(softmax_last_dim, &x, 3).unwrap();
        eprintln!("FD rel err: gelu {e1:.2e}, quick_gelu {e2:.2e}, softmax {e3:.2e}");
        assert!(e1 < 1e-6 && e2 < 1e-6 && e3 < 1e-6, "{e1} {e2} {e3}");
        // quick_gelu gradients stay finite for extreme inputs.
        let ext = candle_core::Var::new(&[-200f32, 200.0], &DEV).unwrap();
        let g = quick_gelu(ext.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g.get(ext.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    }

    #[test]
    fn attention_gradient_and_causality() {
        let c = cfg(Activation::Gelu);
        let vb = VarBuilder::from_tensors(layer_weights(100, &c), DType::F64, &DEV);
        let attn = MultiHeadAttention::load(vb.pp("self_attn"), c.width, c.heads).unwrap();
        let x = random_tensor(&[2, 5, 8], 7, DType::F64, &DEV).unwrap();
        for causal in [false, true] {
            let err = check_grad(|x| attn.forward(x, causal), &x, 21).unwrap();
            eprintln!("attention (causal {causal}) FD rel err {err:.2e}");
            assert!(err < 1e-6, "{err}");
        }
        // Causal: perturbing the last token changes no earlier output.
        let y = attn.forward(&x, true).unwrap();
        let mut v = x.to_vec3::<f64>().unwrap();
        v[0][4][0] += 1.0;
        let x2 = Tensor::new(v, &DEV).unwrap();
        let y2 = attn.forward(&x2, true).unwrap();
        let d = (y2 - &y).unwrap().abs().unwrap().to_vec3::<f64>().unwrap();
        assert!(d[0][..4].iter().flatten().all(|&e| e < 1e-14));
        assert!(d[0][4].iter().any(|&e| e > 1e-6));
    }

    #[test]
    fn encoder_layer_gradient() {
        for act in [Activation::QuickGelu, Activation::Gelu] {
            let c = cfg(act);
            let vb = VarBuilder::from_tensors(layer_weights(200, &c), DType::F64, &DEV);
            let layer = EncoderLayer::load(vb, &c).unwrap();
            let x = random_tensor(&[2, 4, 8], 8, DType::F64, &DEV).unwrap();
            for causal in [false, true] {
                let err = check_grad(|x| layer.forward(x, causal), &x, 31).unwrap();
                eprintln!("encoder layer ({act:?}, causal {causal}) FD rel err {err:.2e}");
                assert!(err < 1e-6, "{err}");
            }
            // The same check in f32 meets the f32 tolerance.
            let vb32 = VarBuilder::from_tensors(layer_weights(200, &c), DType::F32, &DEV);
            let layer32 = EncoderLayer::load(vb32, &c).unwrap();
            let err = check_grad(|x| layer32.forward(x, false), &x.to_dtype(DType::F32).unwrap(), 31).unwrap();
            eprintln!("encoder layer ({act:?}) f32 FD rel err {err:.2e}");
            assert!(err < 1e-2, "{err}");
        }
    }

    #[test]
    fn linear_shapes_and_values() {
        let w = Tensor::new(&[[1f64, 2.0], [3.0, 4.0], [5.0, 6.0]], &DEV).unwrap();
        let b = Tensor::new(&[0.5f64, 0.0, -1.0], &DEV).unwrap();
        let lin = Linear::new(w, Some(b));
        let x = Tensor::new(&[[[1f64, 1.0]], [[0.0, 2.0]]], &DEV).unwrap();
        let y = lin.forward(&x).unwrap().to_vec3::<f64>().unwrap();
        assert_eq!(y, vec![vec![vec![3.5, 7.0, 10.0]], vec![vec![4.5, 8.0, 11.0]]]);
    }

    /// On the graph with constant weights the input gradient is attached (one GEMM): the same forward bits, the
    /// autograd gradient of the plain formula and the FD gradient; trainable weights still get theirs.
    #[test]
    fn linear_input_gradient_op() {
        use candle_core::Var;
        let w = testing::random_tensor(&[5, 4], 1, DType::F64, &DEV).unwrap();
        let b = testing::random_tensor(&[5], 2, DType::F64, &DEV).unwrap();
        let x = testing::random_tensor(&[2, 3, 4], 3, DType::F64, &DEV).unwrap();
        let u = testing::random_tensor(&[2, 3, 5], 4, DType::F64, &DEV).unwrap();
        let lin = Linear::new(w.clone(), Some(b.clone()));
        let grad = |plain: bool| {
            let var = Var::from_tensor(&x).unwrap();
            let y = if plain { lin.forward_plain(var.as_tensor()) } else { lin.forward(var.as_tensor()) }.unwrap();
            let g = (y * &u).unwrap().sum_all().unwrap().backward().unwrap();
            g.get(var.as_tensor()).unwrap().clone()
        };
        let max_abs = |t: &Tensor| t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
        let on_graph = lin.forward(Var::from_tensor(&x).unwrap().as_tensor()).unwrap();
        assert_eq!(max_abs(&(on_graph - lin.forward_plain(&x).unwrap()).unwrap()), 0.0);
        let (ours, theirs) = (grad(false), grad(true));
        assert!(max_abs(&(&ours - &theirs).unwrap()) < 1e-14 * max_abs(&theirs));
        assert!(testing::check_grad(|x| lin.forward(&x.transpose(0, 1)?), &x, 5).unwrap() < 1e-8);
        // A trainable weight keeps candle's autograd: W gets its gradient.
        let wv = Var::from_tensor(&w).unwrap();
        let trainable = Linear::new(wv.as_tensor().clone(), Some(b));
        let g = (trainable.forward(&x).unwrap() * &u).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(wv.as_tensor()).is_some());
    }
}
