//! CLIP image and text towers (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
//! Supervision", §2.4), built from the differentiable blocks of [`crate::nn`] so the image features can be
//! differentiated with respect to the pixels (rewards.md §9.1: candle-transformers' CLIP gives no pixel gradient).
//!
//! Weight names mirror the HF `transformers` `CLIPModel` state dict (`vision_model.embeddings.patch_embedding.weight`,
//! `vision_model.encoder.layers.N.self_attn.q_proj.weight`, `visual_projection.weight`, `text_model...`,
//! `text_projection.weight`, `logit_scale`), so the same code loads `openai/clip-vit-large-patch14`
//! (aesthetic, CLIPScore, rewards.md §2, §6), `yuvalkirstain/PickScore_v1` (§3) or a tiny random instance.
//! open_clip checkpoints (HPSv2, §4) are renamed with [`open_clip_to_hf`].
//!
//! Vision: patch convolution (no bias) → prepend the class embedding → add position embeddings → pre-LayerNorm
//! (`pre_layrnorm`, HF's spelling) → pre-LN encoder → post-LayerNorm of the CLS token → projection (no bias).
//! Text: token + position embeddings → causal pre-LN encoder → final LayerNorm → the hidden state at the first
//! end-of-text token → projection (no bias). Features are returned **unnormalised**.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::nn::{Activation, Encoder, EncoderLayerConfig, LayerNorm, Linear};
use crate::rng::{fill_normal, Purpose, Streams};
use crate::{Error, Result};

/// Dimensions of the CLIP vision transformer (HF `CLIPVisionConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipVisionConfig {
    /// Input side in pixels (square input).
    pub image_size: usize,
    /// Patch side in pixels; `image_size` must be a multiple.
    pub patch_size: usize,
    /// Transformer width.
    pub width: usize,
    /// Number of encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden width.
    pub mlp: usize,
    /// MLP activation.
    pub act: Activation,
    /// LayerNorm eps.
    pub eps: f64,
}

/// Dimensions of the CLIP text transformer (HF `CLIPTextConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Maximum sequence length (HF `max_position_embeddings`, open_clip `context_length`).
    pub context_length: usize,
    /// Transformer width.
    pub width: usize,
    /// Number of encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden width.
    pub mlp: usize,
    /// MLP activation.
    pub act: Activation,
    /// LayerNorm eps.
    pub eps: f64,
}

/// A CLIP model: both towers and the shared embedding (projection) dimension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipConfig {
    /// Image tower.
    pub vision: ClipVisionConfig,
    /// Text tower.
    pub text: ClipTextConfig,
    /// Dimension of the joint embedding space.
    pub projection_dim: usize,
}

impl ClipConfig {
    /// `openai/clip-vit-large-patch14` (OpenAI ViT-L/14): vision 24 × 1024, 16 heads, MLP 4096, patch 14, 224 px;
    /// text 12 × 768, 12 heads, MLP 3072, vocabulary 49,408, context 77; QuickGELU; projection 768.
    pub fn vit_l_14() -> Self {
        Self {
            vision: ClipVisionConfig {
                image_size: 224,
                patch_size: 14,
                width: 1024,
                layers: 24,
                heads: 16,
                mlp: 4096,
                act: Activation::QuickGelu,
                eps: 1e-5,
            },
            text: ClipTextConfig {
                vocab_size: 49408,
                context_length: 77,
                width: 768,
                layers: 12,
                heads: 12,
                mlp: 3072,
                act: Activation::QuickGelu,
                eps: 1e-5,
            },
            projection_dim: 768,
        }
    }

    /// LAION ViT-H/14 (`laion/CLIP-ViT-H-14-laion2B-s32B-b79K`, fine-tuned as `yuvalkirstain/PickScore_v1` and
    /// HPSv2): vision 32 × 1280, 16 heads, MLP 5120, patch 14, 224 px; text 24 × 1024, 16 heads, MLP 4096,
    /// vocabulary 49,408, context 77; exact GELU; projection 1024.
    pub fn vit_h_14() -> Self {
        Self {
            vision: ClipVisionConfig {
                image_size: 224,
                patch_size: 14,
                width: 1280,
                layers: 32,
                heads: 16,
                mlp: 5120,
                act: Activation::Gelu,
                eps: 1e-5,
            },
            text: ClipTextConfig {
                vocab_size: 49408,
                context_length: 77,
                width: 1024,
                layers: 24,
                heads: 16,
                mlp: 4096,
                act: Activation::Gelu,
                eps: 1e-5,
            },
            projection_dim: 1024,
        }
    }

    /// A tiny configuration for tests: 16 px images, patch 4 (16 patches + CLS), width 16, 2 heads, 2 layers,
    /// MLP 32; text vocabulary 64, context 8; projection 8; exact GELU in the image tower, QuickGELU in the text
    /// tower (so both activations are exercised).
    pub fn tiny() -> Self {
        Self {
            vision: ClipVisionConfig {
                image_size: 16,
                patch_size: 4,
                width: 16,
                layers: 2,
                heads: 2,
                mlp: 32,
                act: Activation::Gelu,
                eps: 1e-5,
            },
            text: ClipTextConfig {
                vocab_size: 64,
                context_length: 8,
                width: 16,
                layers: 2,
                heads: 2,
                mlp: 32,
                act: Activation::QuickGelu,
                eps: 1e-5,
            },
            projection_dim: 8,
        }
    }

    /// Checks divisibility constraints; the message names the field to fix.
    pub fn validate(&self) -> Result<()> {
        let v = &self.vision;
        if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
            return Err(Error::config(format!(
                "clip: vision.image_size {} is not a multiple of vision.patch_size {}",
                v.image_size, v.patch_size
            )));
        }
        for (tower, width, heads) in [("vision", v.width, v.heads), ("text", self.text.width, self.text.heads)] {
            if heads == 0 || width % heads != 0 {
                return Err(Error::config(format!("clip: {tower}.width {width} is not divisible by {heads} heads")));
            }
        }
        Ok(())
    }

    /// Every tensor of the HF `CLIPModel` layout with its shape, in a fixed order (including `logit_scale`, []).
    pub fn hf_tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let v = &self.vision;
        let t = &self.text;
        let p = self.projection_dim;
        let n_patches = (v.image_size / v.patch_size).pow(2);
        let mut out: Vec<(String, Vec<usize>)> = vec![
            ("vision_model.embeddings.patch_embedding.weight".into(), vec![v.width, 3, v.patch_size, v.patch_size]),
            ("vision_model.embeddings.class_embedding".into(), vec![v.width]),
            ("vision_model.embeddings.position_embedding.weight".into(), vec![n_patches + 1, v.width]),
            ("vision_model.pre_layrnorm.weight".into(), vec![v.width]),
            ("vision_model.pre_layrnorm.bias".into(), vec![v.width]),
        ];
        push_layers(&mut out, "vision_model.encoder.layers", v.layers, v.width, v.mlp);
        out.push(("vision_model.post_layernorm.weight".into(), vec![v.width]));
        out.push(("vision_model.post_layernorm.bias".into(), vec![v.width]));
        out.push(("visual_projection.weight".into(), vec![p, v.width]));
        out.push(("text_model.embeddings.token_embedding.weight".into(), vec![t.vocab_size, t.width]));
        out.push(("text_model.embeddings.position_embedding.weight".into(), vec![t.context_length, t.width]));
        push_layers(&mut out, "text_model.encoder.layers", t.layers, t.width, t.mlp);
        out.push(("text_model.final_layer_norm.weight".into(), vec![t.width]));
        out.push(("text_model.final_layer_norm.bias".into(), vec![t.width]));
        out.push(("text_projection.weight".into(), vec![p, t.width]));
        out.push(("logit_scale".into(), vec![]));
        out
    }
}

fn push_layers(out: &mut Vec<(String, Vec<usize>)>, prefix: &str, layers: usize, w: usize, mlp: usize) {
    for i in 0..layers {
        let l = format!("{prefix}.{i}");
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            out.push((format!("{l}.self_attn.{p}.weight"), vec![w, w]));
            out.push((format!("{l}.self_attn.{p}.bias"), vec![w]));
        }
        out.push((format!("{l}.layer_norm1.weight"), vec![w]));
        out.push((format!("{l}.layer_norm1.bias"), vec![w]));
        out.push((format!("{l}.mlp.fc1.weight"), vec![mlp, w]));
        out.push((format!("{l}.mlp.fc1.bias"), vec![mlp]));
        out.push((format!("{l}.mlp.fc2.weight"), vec![w, mlp]));
        out.push((format!("{l}.mlp.fc2.bias"), vec![w]));
        out.push((format!("{l}.layer_norm2.weight"), vec![w]));
        out.push((format!("{l}.layer_norm2.bias"), vec![w]));
    }
}

/// Random HF-layout weights for `cfg` from the seeded stream `seed` (tests and benchmarks; never candle's
/// unseedable `randn`, never `VarMap`'s zero default). LayerNorm γ ~ 1 + 0.1·N, biases ~ 0.1·N, matrices
/// ~ N/√fan_in, embeddings ~ 0.5·N, `logit_scale` = ln 100. Load with
/// `VarBuilder::from_tensors(weights, dtype, device)`.
pub fn random_weights(cfg: &ClipConfig, seed: u64, dtype: DType, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut rng = Streams::new(seed).rng(Purpose::Train, 0xC11F, 0);
    let mut out = HashMap::new();
    for (name, shape) in cfg.hf_tensor_shapes() {
        let n: usize = shape.iter().product();
        let t = if name == "logit_scale" {
            Tensor::new(100f32.ln(), device)?
        } else {
            let mut v = vec![0f32; n];
            fill_normal(&mut rng, &mut v);
            let is_norm = name.contains("layer_norm") || name.contains("layrnorm") || name.contains("layernorm");
            let (mean, std) = if is_norm && name.ends_with(".weight") {
                (1.0, 0.1)
            } else if name.ends_with(".bias") {
                (0.0, 0.1)
            } else if name.contains("embedding") {
                (0.0, 0.5)
            } else {
                let fan_in: usize = shape[1..].iter().product();
                (0.0, 1.0 / (fan_in as f32).sqrt())
            };
            v.iter_mut().for_each(|x| *x = mean + std * *x);
            Tensor::from_vec(v, shape, device)?
        };
        out.insert(name, t.to_dtype(dtype)?);
    }
    Ok(out)
}

/// The CLIP vision transformer plus `visual_projection` (HF `CLIPVisionModelWithProjection`).
#[derive(Clone, Debug)]
pub struct ClipVisionTower {
    cfg: ClipVisionConfig,
    patch_embedding: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_layrnorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    visual_projection: Linear,
}

impl ClipVisionTower {
    /// Loads `vision_model.*` and `visual_projection.weight` from the root `vb` of an HF `CLIPModel` state dict
    /// (the text tower is not read, so an image-only reward needs no text weights in memory).
    pub fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        cfg.validate()?;
        let v = &cfg.vision;
        let vm = vb.pp("vision_model");
        let emb = vm.pp("embeddings");
        let n_patches = (v.image_size / v.patch_size).pow(2);
        let layer = EncoderLayerConfig { width: v.width, heads: v.heads, mlp: v.mlp, act: v.act, eps: v.eps };
        Ok(Self {
            cfg: v.clone(),
            patch_embedding: emb.get((v.width, 3, v.patch_size, v.patch_size), "patch_embedding.weight")?,
            class_embedding: emb.get(v.width, "class_embedding")?,
            position_embedding: emb.get((n_patches + 1, v.width), "position_embedding.weight")?,
            pre_layrnorm: LayerNorm::load(vm.pp("pre_layrnorm"), v.width, v.eps)?,
            encoder: Encoder::load(vm.pp("encoder"), v.layers, &layer)?,
            post_layernorm: LayerNorm::load(vm.pp("post_layernorm"), v.width, v.eps)?,
            visual_projection: Linear::load(vb.pp("visual_projection"), v.width, cfg.projection_dim, false)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.cfg
    }

    /// Post-LayerNorm CLS state [n, width] of normalised pixels [n, 3, S, S] (HF `pooler_output`).
    pub fn pooled(&self, pixels: &Tensor) -> Result<Tensor> {
        let s = self.cfg.image_size;
        let (n, c, h, w) = pixels.dims4()?;
        if c != 3 || h != s || w != s {
            return Err(Error::config(format!(
                "clip vision: expected pixels [n, 3, {s}, {s}], got [{n}, {c}, {h}, {w}]; resize and normalise with \
                 image::preprocess first"
            )));
        }
        let pixels = pixels.to_dtype(self.patch_embedding.dtype())?;
        let p = self.cfg.patch_size;
        let width = self.cfg.width;
        // Non-overlapping patch convolution (stride = kernel = patch) as patchify + matmul: primitive ops with
        // exact gradients, equal to `conv2d` (checked in the tests).
        let g = s / p;
        let patches = pixels.reshape(vec![n, 3, g, p, g, p])?.permute([0, 2, 4, 1, 3, 5])?.contiguous()?.reshape((
            n,
            g * g,
            3 * p * p,
        ))?;
        let kernel = self.patch_embedding.reshape((width, 3 * p * p))?;
        let patches = patches.broadcast_matmul(&kernel.t()?)?; // [n, patches, width]
        let cls = self.class_embedding.reshape((1, 1, width))?.broadcast_as((n, 1, width))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        let x = self.pre_layrnorm.forward(&x)?;
        let x = self.encoder.forward(&x, false)?;
        let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
        self.post_layernorm.forward(&cls)
    }

    /// Image features [n, projection_dim] (unnormalised, HF `get_image_features`).
    pub fn features(&self, pixels: &Tensor) -> Result<Tensor> {
        self.visual_projection.forward(&self.pooled(pixels)?)
    }
}

/// The CLIP text transformer (HF `CLIPTextModel`, keys `text_model.*`): token + position embeddings → causal
/// pre-LN encoder → final LayerNorm. Stable Diffusion feeds its last hidden state to the UNet
/// ([`crate::problems::sd15::TextEncoder`] is this type); [`ClipTextTower`] pools and projects it.
#[derive(Clone, Debug)]
pub struct ClipTextModel {
    cfg: ClipTextConfig,
    token_embedding: Tensor,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
}

impl ClipTextModel {
    /// Loads `text_model.*` under the root `vb` of a state dict (HF `CLIPModel`, or SD's `text_encoder/`).
    pub fn load(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        if cfg.heads == 0 || cfg.width % cfg.heads != 0 {
            return Err(Error::config(format!(
                "clip text: width {} is not divisible by {} heads; fix the model config",
                cfg.width, cfg.heads
            )));
        }
        let tm = vb.pp("text_model");
        let emb = tm.pp("embeddings");
        let layer = EncoderLayerConfig { width: cfg.width, heads: cfg.heads, mlp: cfg.mlp, act: cfg.act, eps: cfg.eps };
        Ok(Self {
            cfg: cfg.clone(),
            token_embedding: emb.get((cfg.vocab_size, cfg.width), "token_embedding.weight")?,
            position_embedding: emb.get((cfg.context_length, cfg.width), "position_embedding.weight")?,
            encoder: Encoder::load(tm.pp("encoder"), cfg.layers, &layer)?,
            final_layer_norm: LayerNorm::load(tm.pp("final_layer_norm"), cfg.width, cfg.eps)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClipTextConfig {
        &self.cfg
    }

    /// The device of the weights.
    pub fn device(&self) -> candle_core::Device {
        self.token_embedding.device().clone()
    }

    /// `last_hidden_state` [n, t, width] (after the final LayerNorm) of token ids `ids` [n, t] (t ≤ context
    /// length).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (n, t) = ids.dims2()?;
        if t == 0 || t > self.cfg.context_length {
            return Err(Error::config(format!(
                "clip text: token rows have length {t}; expected 1..={} (truncate with the tokenizer)",
                self.cfg.context_length
            )));
        }
        let ids = ids.to_dtype(DType::U32)?;
        if let Some(bad) = ids.flatten_all()?.to_vec1::<u32>()?.into_iter().find(|&i| i as usize >= self.cfg.vocab_size)
        {
            return Err(Error::config(format!(
                "clip text: token id {bad} is outside the vocabulary of {} tokens; use the model's tokenizer",
                self.cfg.vocab_size
            )));
        }
        let x = self.token_embedding.embedding(&ids.flatten_all()?)?.reshape((n, t, self.cfg.width))?;
        let x = x.broadcast_add(&self.position_embedding.narrow(0, 0, t)?.unsqueeze(0)?)?;
        let x = self.encoder.forward(&x, true)?;
        self.final_layer_norm.forward(&x)
    }
}

/// The CLIP text transformer plus `text_projection` (HF `CLIPTextModelWithProjection`).
#[derive(Clone, Debug)]
pub struct ClipTextTower {
    model: ClipTextModel,
    text_projection: Linear,
}

impl ClipTextTower {
    /// Loads `text_model.*` and `text_projection.weight` from the root `vb` of an HF `CLIPModel` state dict.
    pub fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            model: ClipTextModel::load(vb.clone(), &cfg.text)?,
            text_projection: Linear::load(vb.pp("text_projection"), cfg.text.width, cfg.projection_dim, false)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClipTextConfig {
        self.model.config()
    }

    /// Final-LayerNorm hidden state [n, width] at the pooling position of each row of `ids` [n, t] (u32,
    /// t ≤ context length), see [`eos_positions`] (HF `pooler_output`).
    pub fn pooled(&self, ids: &Tensor) -> Result<Tensor> {
        let x = self.model.forward(ids)?;
        let (n, t, width) = x.dims3()?;
        let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let index: Vec<u32> = eos_positions(&rows).iter().enumerate().map(|(i, &p)| (i * t + p) as u32).collect();
        let index = Tensor::from_vec(index, n, x.device())?;
        Ok(x.reshape((n * t, width))?.index_select(&index, 0)?)
    }

    /// Text features [n, projection_dim] (unnormalised, HF `get_text_features`).
    pub fn features(&self, ids: &Tensor) -> Result<Tensor> {
        self.text_projection.forward(&self.pooled(ids)?)
    }
}

/// The pooling position of each token row: the index of the **first** occurrence of the row's largest id.
///
/// This is HF's legacy rule `argmax(input_ids)` (used by `openai/clip-vit-large-patch14`, whose config has the
/// legacy `eos_token_id = 2`) and open_clip's `text.argmax(dim=-1)`: `<|endoftext|>` = 49407 is the largest id of
/// the CLIP vocabulary, and `torch.argmax` returns the first maximal index. Ties matter when padding with
/// `<|endoftext|>` (HF openai tokenizer): the first end-of-text token is chosen, so, with the causal mask, padding
/// with `<|endoftext|>` or with 0 (open_clip) gives the same features.
pub fn eos_positions(rows: &[Vec<u32>]) -> Vec<usize> {
    rows.iter()
        .map(|r| {
            let mut best = 0;
            for (j, &id) in r.iter().enumerate() {
                if id > r[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}

/// A full CLIP model: image tower, text tower and (optionally) the learned temperature `logit_scale`.
#[derive(Clone, Debug)]
pub struct ClipModel {
    vision: ClipVisionTower,
    text: ClipTextTower,
    logit_scale: Option<Tensor>,
    device: Device,
}

impl ClipModel {
    /// Loads both towers (and `logit_scale` when present) from the root `vb` of an HF `CLIPModel` state dict.
    pub fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        let logit_scale = if vb.contains_tensor("logit_scale") { Some(vb.get((), "logit_scale")?) } else { None };
        let device = vb.device().clone();
        Ok(Self {
            vision: ClipVisionTower::new(vb.clone(), cfg)?,
            text: ClipTextTower::new(vb, cfg)?,
            logit_scale,
            device,
        })
    }

    /// The device the weights live on (inputs must be put there).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Image features [n, projection_dim] of normalised pixels [n, 3, S, S] (unnormalised features).
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        self.vision.features(pixels)
    }

    /// Text features [n, projection_dim] of token ids [n, t] (u32; unnormalised features).
    pub fn text_features(&self, ids: &Tensor) -> Result<Tensor> {
        self.text.features(ids)
    }

    /// exp(`logit_scale`) (≈ 100 for the released models), if the checkpoint has it.
    pub fn logit_scale_exp(&self) -> Result<Option<f64>> {
        match &self.logit_scale {
            Some(t) => Ok(Some(t.to_dtype(DType::F64)?.to_scalar::<f64>()?.exp())),
            None => Ok(None),
        }
    }

    /// The image tower.
    pub fn vision(&self) -> &ClipVisionTower {
        &self.vision
    }

    /// The text tower.
    pub fn text(&self) -> &ClipTextTower {
        &self.text
    }
}

/// Row-wise L2 normalisation x / ‖x‖₂ of features [n, d] (differentiable).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?)
}

mod open_clip;
pub use open_clip::{open_clip_to_hf, IGNORED_OPEN_CLIP_KEYS};

#[cfg(test)]
mod tests;
