//! BLIP's ViT image encoder (Li et al. 2022, "BLIP: Bootstrapping Language-Image Pre-training", §3.1; ViT of
//! Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", Eq. 1–4) as ImageReward v1.0 uses it (rewards.md §5):
//! ViT-L/16 at 224 px — 196 patches + CLS, width 1024, 24 pre-norm blocks of 16 heads, MLP 4096 with exact GELU,
//! LayerNorm eps 1e-6, a final LayerNorm over **all** tokens (the text encoder cross-attends to every token).
//!
//! Built from the differentiable blocks of [`crate::nn`] (candle's fused softmax / layer norm have no backward,
//! rewards.md §9.1), so the image embeddings can be differentiated with respect to the pixels.
//!
//! Weight names are those of BLIP's `VisionTransformer` (timm layout) under the caller's prefix
//! (`blip.visual_encoder` in `ImageReward.pt`): `patch_embed.proj.{weight,bias}` (conv 16×16 stride 16, with bias),
//! `cls_token` [1, 1, W], `pos_embed` [1, N + 1, W], `blocks.N.norm1`, `blocks.N.attn.qkv` (one [3W, W] matrix with
//! bias, rows q | k | v), `blocks.N.attn.proj`, `blocks.N.norm2`, `blocks.N.mlp.fc1`, `blocks.N.mlp.fc2`, `norm`.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::nn::{Activation, LayerNorm, Linear, Mlp, MultiHeadAttention};
use crate::rng::{fill_normal, Purpose, Streams};
use crate::{Error, Result};

/// Dimensions of a BLIP ViT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlipVitConfig {
    /// Input side in pixels (square input).
    pub image_size: usize,
    /// Patch side in pixels; `image_size` must be a multiple.
    pub patch_size: usize,
    /// Transformer width.
    pub width: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden width (4 × width in BLIP).
    pub mlp: usize,
    /// LayerNorm eps.
    pub eps: f64,
}

impl BlipVitConfig {
    /// BLIP `vit='large'` at 224 px (ImageReward v1.0): patch 16, width 1024, 24 layers, 16 heads, MLP 4096, eps 1e-6.
    pub fn vit_l_16() -> Self {
        Self { image_size: 224, patch_size: 16, width: 1024, layers: 24, heads: 16, mlp: 4096, eps: 1e-6 }
    }

    /// A tiny configuration for tests: 16 px, patch 4 (16 patches + CLS), width 12, 2 layers, 2 heads, MLP 24.
    pub fn tiny() -> Self {
        Self { image_size: 16, patch_size: 4, width: 12, layers: 2, heads: 2, mlp: 24, eps: 1e-6 }
    }

    /// Tokens per image: patches + CLS.
    pub fn tokens(&self) -> usize {
        (self.image_size / self.patch_size).pow(2) + 1
    }

    /// Checks divisibility; the message names the field to fix.
    pub fn validate(&self) -> Result<()> {
        if self.patch_size == 0 || self.image_size % self.patch_size != 0 {
            return Err(Error::config(format!(
                "blip vit: image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        if self.heads == 0 || self.width % self.heads != 0 {
            return Err(Error::config(format!(
                "blip vit: width {} is not divisible by {} heads",
                self.width, self.heads
            )));
        }
        Ok(())
    }

    /// Every parameter with its shape, names relative to the encoder's prefix, in a fixed order.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (w, p, m) = (self.width, self.patch_size, self.mlp);
        let mut out: Vec<(String, Vec<usize>)> = vec![
            ("patch_embed.proj.weight".into(), vec![w, 3, p, p]),
            ("patch_embed.proj.bias".into(), vec![w]),
            ("cls_token".into(), vec![1, 1, w]),
            ("pos_embed".into(), vec![1, self.tokens(), w]),
        ];
        for i in 0..self.layers {
            let b = format!("blocks.{i}");
            for (name, shape) in [
                ("norm1.weight", vec![w]),
                ("norm1.bias", vec![w]),
                ("attn.qkv.weight", vec![3 * w, w]),
                ("attn.qkv.bias", vec![3 * w]),
                ("attn.proj.weight", vec![w, w]),
                ("attn.proj.bias", vec![w]),
                ("norm2.weight", vec![w]),
                ("norm2.bias", vec![w]),
                ("mlp.fc1.weight", vec![m, w]),
                ("mlp.fc1.bias", vec![m]),
                ("mlp.fc2.weight", vec![w, m]),
                ("mlp.fc2.bias", vec![w]),
            ] {
                out.push((format!("{b}.{name}"), shape));
            }
        }
        out.push(("norm.weight".into(), vec![w]));
        out.push(("norm.bias".into(), vec![w]));
        out
    }
}

/// Random tensors for `shapes` (names prefixed with `prefix`), from the seeded stream `seed` (tests and
/// benchmarks; never candle's unseedable `randn`, never `VarMap`'s zero default). Norm weights ~ 1 + 0.1·N, biases
/// ~ 0.1·N, embeddings / tokens ~ 0.5·N, matrices ~ N/√fan_in. Shared by the BLIP ViT, the BERT encoder and the
/// ImageReward head.
pub fn random_tensors(
    shapes: &[(String, Vec<usize>)],
    prefix: &str,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = Streams::new(seed).rng(Purpose::Train, 0xB11F, 0);
    let mut out = HashMap::new();
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let mut v = vec![0f32; n];
        fill_normal(&mut rng, &mut v);
        let lower = name.to_lowercase();
        let is_norm = lower.contains("norm");
        let (mean, std) = if is_norm && name.ends_with(".weight") {
            (1.0, 0.1)
        } else if name.ends_with(".bias") {
            (0.0, 0.1)
        } else if lower.contains("embed") || lower.contains("token") {
            (0.0, 0.5)
        } else {
            let fan_in: usize = shape[1..].iter().product();
            (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
        };
        v.iter_mut().for_each(|x| *x = mean + std * *x);
        let full = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        out.insert(full, Tensor::from_vec(v, shape.as_slice(), device)?.to_dtype(dtype)?);
    }
    Ok(out)
}

/// One pre-norm ViT block: x ← x + attn(norm1(x)); x ← x + mlp(norm2(x)).
#[derive(Clone, Debug)]
struct Block {
    norm1: LayerNorm,
    attn: MultiHeadAttention,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &BlipVitConfig) -> Result<Self> {
        let w = cfg.width;
        let attn = vb.pp("attn");
        let qkv_w = attn.get((3 * w, w), "qkv.weight")?;
        let qkv_b = attn.get(3 * w, "qkv.bias")?;
        // The fused qkv projection, split into its q | k | v row blocks (timm layout).
        let part = |i: usize| -> Result<Linear> {
            Ok(Linear::new(qkv_w.narrow(0, i * w, w)?.contiguous()?, Some(qkv_b.narrow(0, i * w, w)?.contiguous()?)))
        };
        let proj = Linear::load(attn.pp("proj"), w, w, true)?;
        Ok(Self {
            norm1: LayerNorm::load(vb.pp("norm1"), w, cfg.eps)?,
            attn: MultiHeadAttention::new(part(0)?, part(1)?, part(2)?, proj, cfg.heads),
            norm2: LayerNorm::load(vb.pp("norm2"), w, cfg.eps)?,
            mlp: Mlp::load(vb.pp("mlp"), w, cfg.mlp, Activation::Gelu)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = (x + self.attn.forward(&self.norm1.forward(x)?, false)?)?;
        Ok((&h + self.mlp.forward(&self.norm2.forward(&h)?)?)?)
    }
}

/// The BLIP ViT image encoder.
#[derive(Clone, Debug)]
pub struct BlipVit {
    cfg: BlipVitConfig,
    patch_weight: Tensor,
    patch_bias: Tensor,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
}

impl BlipVit {
    /// Loads the encoder from `vb` positioned at its prefix (e.g. `vb.pp("blip").pp("visual_encoder")`).
    pub fn load(vb: VarBuilder, cfg: &BlipVitConfig) -> Result<Self> {
        cfg.validate()?;
        let (w, p) = (cfg.width, cfg.patch_size);
        let blocks = (0..cfg.layers).map(|i| Block::load(vb.pp("blocks").pp(i), cfg)).collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            patch_weight: vb.get((w, 3, p, p), "patch_embed.proj.weight")?,
            patch_bias: vb.get(w, "patch_embed.proj.bias")?,
            cls_token: vb.get((1, 1, w), "cls_token")?,
            pos_embed: vb.get((1, cfg.tokens(), w), "pos_embed")?,
            blocks,
            norm: LayerNorm::load(vb.pp("norm"), w, cfg.eps)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BlipVitConfig {
        &self.cfg
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.patch_weight.dtype()
    }

    /// Image embeddings [n, tokens, width] (final LayerNorm applied to every token) of normalised pixels
    /// [n, 3, S, S].
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let s = self.cfg.image_size;
        let (n, c, h, w) = pixels.dims4()?;
        if c != 3 || h != s || w != s {
            return Err(Error::config(format!(
                "blip vit: expected pixels [n, 3, {s}, {s}], got [{n}, {c}, {h}, {w}]; resize and normalise with \
                 image::preprocess first"
            )));
        }
        let pixels = pixels.to_dtype(self.dtype())?;
        let (p, width) = (self.cfg.patch_size, self.cfg.width);
        let g = s / p;
        // Patch convolution (kernel = stride = p) as patchify + matmul: primitive ops with exact gradients.
        let patches = pixels.reshape(vec![n, 3, g, p, g, p])?.permute([0, 2, 4, 1, 3, 5])?.contiguous()?.reshape((
            n,
            g * g,
            3 * p * p,
        ))?;
        let kernel = self.patch_weight.reshape((width, 3 * p * p))?;
        let patches = Linear::new(kernel, Some(self.patch_bias.clone())).forward(&patches)?;
        let cls = self.cls_token.broadcast_as((n, 1, width))?;
        let mut x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.pos_embed)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        self.norm.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::{check_grad, random_tensor};

    const DEV: Device = Device::Cpu;

    fn tiny(dtype: DType) -> BlipVit {
        let cfg = BlipVitConfig::tiny();
        let w = random_tensors(&cfg.tensor_shapes(), "", 3, dtype, &DEV).unwrap();
        BlipVit::load(VarBuilder::from_tensors(w, dtype, &DEV), &cfg).unwrap()
    }

    #[test]
    fn patch_embedding_equals_conv2d_with_bias() {
        let vit = tiny(DType::F64);
        let x = random_tensor(&[2, 3, 16, 16], 4, DType::F64, &DEV).unwrap();
        let (p, width) = (4, 12);
        let conv = x
            .conv2d(&vit.patch_weight, 0, p, 1, 1)
            .unwrap()
            .broadcast_add(&vit.patch_bias.reshape((1, width, 1, 1)).unwrap())
            .unwrap()
            .flatten_from(2)
            .unwrap()
            .transpose(1, 2)
            .unwrap();
        let g = 4;
        let ours = x.reshape(vec![2, 3, g, p, g, p]).unwrap().permute([0, 2, 4, 1, 3, 5]).unwrap();
        let ours = ours.contiguous().unwrap().reshape((2, g * g, 3 * p * p)).unwrap();
        let kernel = vit.patch_weight.reshape((width, 3 * p * p)).unwrap();
        let ours = Linear::new(kernel, Some(vit.patch_bias.clone())).forward(&ours).unwrap();
        let d = (ours - conv).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(d < 1e-12, "{d}");
    }

    #[test]
    fn output_shape_and_pixel_gradient() {
        let vit = tiny(DType::F64);
        let x = random_tensor(&[2, 3, 16, 16], 5, DType::F64, &DEV).unwrap();
        assert_eq!(vit.forward(&x).unwrap().dims(), &[2, 17, 12]);
        let err = check_grad(|x| vit.forward(x), &x, 6).unwrap();
        eprintln!("blip vit tiny FD rel err {err:.2e}");
        assert!(err < 1e-6, "{err}");
        let e = vit.forward(&random_tensor(&[1, 3, 8, 8], 1, DType::F64, &DEV).unwrap()).unwrap_err();
        assert!(e.to_string().contains("expected pixels [n, 3, 16, 16]"), "{e}");
    }

    #[test]
    fn real_config_names_and_counts() {
        let cfg = BlipVitConfig::vit_l_16();
        assert_eq!(cfg.tokens(), 197);
        let shapes = cfg.tensor_shapes();
        let params: usize = shapes.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        // ViT-L/16: ≈ 303.3 M parameters.
        assert_eq!(params, 303_301_632);
        assert!(shapes.iter().any(|(n, s)| n == "blocks.23.attn.qkv.weight" && s == &[3072, 1024]));
        assert!(BlipVitConfig { patch_size: 15, ..cfg }.validate().is_err());
    }
}
