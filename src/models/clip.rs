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
}

impl ClipModel {
    /// Loads both towers (and `logit_scale` when present) from the root `vb` of an HF `CLIPModel` state dict.
    pub fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        let logit_scale = if vb.contains_tensor("logit_scale") { Some(vb.get((), "logit_scale")?) } else { None };
        Ok(Self { vision: ClipVisionTower::new(vb.clone(), cfg)?, text: ClipTextTower::new(vb, cfg)?, logit_scale })
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

/// Renames an open_clip state dict (HPSv2 checkpoints, rewards.md §4) to the HF `CLIPModel` layout loaded by
/// [`ClipModel::new`].
///
/// Maps `visual.conv1`, `visual.class_embedding`, `visual.positional_embedding`, `visual.ln_pre`,
/// `visual.transformer.resblocks.N.{ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj}`, `visual.ln_post`, `visual.proj`,
/// `token_embedding`, `positional_embedding`, `transformer.resblocks.N...`, `ln_final`, `text_projection` and
/// `logit_scale`. The fused `attn.in_proj_{weight,bias}` ([3w, w], [3w]) is split into `q_proj`, `k_proj`,
/// `v_proj` (in that order, as `nn.MultiheadAttention`), and the projections `visual.proj`, `text_projection`
/// ([width, proj], applied as x·P) are transposed to HF's [proj, width]. Non-parameter entries of older state
/// dicts ([`IGNORED_OPEN_CLIP_KEYS`]) are dropped; any other unknown key is an error naming it.
pub fn open_clip_to_hf(tensors: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(tensors.len() + 16);
    for (key, t) in tensors {
        let (prefix, rest) =
            if let Some(r) = key.strip_prefix("visual.") { ("vision_model", r) } else { ("text_model", key.as_str()) };
        let vision = prefix == "vision_model";
        if IGNORED_OPEN_CLIP_KEYS.contains(&rest) {
            continue;
        }
        let simple = |name: &str| -> Option<String> {
            let m = match (vision, name) {
                (true, "conv1.weight") => "vision_model.embeddings.patch_embedding.weight",
                (true, "class_embedding") => "vision_model.embeddings.class_embedding",
                (true, "positional_embedding") => "vision_model.embeddings.position_embedding.weight",
                (true, "ln_pre.weight") => "vision_model.pre_layrnorm.weight",
                (true, "ln_pre.bias") => "vision_model.pre_layrnorm.bias",
                (true, "ln_post.weight") => "vision_model.post_layernorm.weight",
                (true, "ln_post.bias") => "vision_model.post_layernorm.bias",
                (false, "token_embedding.weight") => "text_model.embeddings.token_embedding.weight",
                (false, "positional_embedding") => "text_model.embeddings.position_embedding.weight",
                (false, "ln_final.weight") => "text_model.final_layer_norm.weight",
                (false, "ln_final.bias") => "text_model.final_layer_norm.bias",
                (false, "logit_scale") => "logit_scale",
                _ => return None,
            };
            Some(m.to_string())
        };
        if let Some(name) = simple(rest) {
            out.insert(name, t);
        } else if (vision && rest == "proj") || (!vision && rest == "text_projection") {
            let name = if vision { "visual_projection.weight" } else { "text_projection.weight" };
            out.insert(name.to_string(), t.t()?.contiguous()?);
        } else if let Some(r) = rest.strip_prefix("transformer.resblocks.") {
            let (layer, sub) =
                r.split_once('.').filter(|(l, _)| l.parse::<usize>().is_ok()).ok_or_else(|| unknown_key(&key))?;
            let base = format!("{prefix}.encoder.layers.{layer}");
            match sub {
                "attn.in_proj_weight" | "attn.in_proj_bias" => {
                    let kind = if sub.ends_with("weight") { "weight" } else { "bias" };
                    let rows = t.dim(0)?;
                    if rows % 3 != 0 {
                        return Err(Error::config(format!("open_clip: {key} has {rows} rows, not 3 × width")));
                    }
                    let w = rows / 3;
                    for (i, p) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                        out.insert(format!("{base}.self_attn.{p}.{kind}"), t.narrow(0, i * w, w)?.contiguous()?);
                    }
                }
                _ => {
                    let (module, param) = sub.rsplit_once('.').ok_or_else(|| unknown_key(&key))?;
                    let hf = match module {
                        "ln_1" => "layer_norm1",
                        "ln_2" => "layer_norm2",
                        "attn.out_proj" => "self_attn.out_proj",
                        "mlp.c_fc" => "mlp.fc1",
                        "mlp.c_proj" => "mlp.fc2",
                        _ => return Err(unknown_key(&key)),
                    };
                    if param != "weight" && param != "bias" {
                        return Err(unknown_key(&key));
                    }
                    out.insert(format!("{base}.{hf}.{param}"), t);
                }
            }
        } else {
            return Err(unknown_key(&key));
        }
    }
    Ok(out)
}

/// Non-parameter entries that some open_clip / OpenAI state dicts carry (the causal mask buffer and the integer
/// metadata of JIT-exported OpenAI models); [`open_clip_to_hf`] drops them.
pub const IGNORED_OPEN_CLIP_KEYS: [&str; 4] = ["attn_mask", "input_resolution", "context_length", "vocab_size"];

fn unknown_key(key: &str) -> Error {
    Error::config(format!(
        "open_clip: unexpected key `{key}` (not a standard open_clip CLIP tensor); strip wrappers such as \
         `module.` or `state_dict` before mapping"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::preprocess::{differentiable, official, CropRounding};
    use crate::nn::testing::{check_grad, grad_check, random_tensor};

    const DEV: Device = Device::Cpu;

    fn tiny(dtype: DType) -> (ClipConfig, ClipModel) {
        let cfg = ClipConfig::tiny();
        let vb = VarBuilder::from_tensors(random_weights(&cfg, 7, dtype, &DEV).unwrap(), dtype, &DEV);
        let m = ClipModel::new(vb, &cfg).unwrap();
        (cfg, m)
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn presets_are_consistent() {
        for cfg in [ClipConfig::vit_l_14(), ClipConfig::vit_h_14(), ClipConfig::tiny()] {
            cfg.validate().unwrap();
        }
        let l = ClipConfig::vit_l_14();
        assert_eq!((l.vision.image_size / l.vision.patch_size).pow(2) + 1, 257);
        assert_eq!(l.vision.width / l.vision.heads, 64);
        let h = ClipConfig::vit_h_14();
        assert_eq!(h.vision.width / h.vision.heads, 80);
        // ViT-L/14 parameter count: ≈ 428 M for the full HF CLIPModel (vision 303 M + text 123 M + projections).
        let n: usize = l.hf_tensor_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert!((427_000_000..429_000_000).contains(&n), "{n}");
        let n: usize = h.hf_tensor_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert!((985_000_000..988_000_000).contains(&n), "{n}"); // PickScore ≈ 986 M (rewards.md §3)
    }

    #[test]
    fn forward_shapes_and_missing_weights() {
        let (cfg, m) = tiny(DType::F32);
        let px = random_tensor(&[3, 3, 16, 16], 1, DType::F32, &DEV).unwrap();
        assert_eq!(m.image_features(&px).unwrap().dims(), &[3, cfg.projection_dim]);
        let ids = Tensor::new(&[[1u32, 5, 63, 0, 0, 0], [1, 63, 63, 63, 63, 63]], &DEV).unwrap();
        assert_eq!(m.text_features(&ids).unwrap().dims(), &[2, cfg.projection_dim]);
        assert!((m.logit_scale_exp().unwrap().unwrap() - 100.0).abs() < 1e-3);
        let bad = random_tensor(&[1, 3, 12, 12], 1, DType::F32, &DEV).unwrap();
        assert!(m.image_features(&bad).unwrap_err().to_string().contains("expected pixels"));
        let mut w = random_weights(&cfg, 7, DType::F32, &DEV).unwrap();
        w.remove("vision_model.encoder.layers.1.mlp.fc2.bias");
        let err = ClipModel::new(VarBuilder::from_tensors(w, DType::F32, &DEV), &cfg).unwrap_err().to_string();
        assert!(err.contains("layers.1.mlp.fc2.bias"), "{err}");
    }

    #[test]
    fn patch_embedding_equals_convolution_and_vision_loads_alone() {
        let cfg = ClipConfig::tiny();
        let mut w = random_weights(&cfg, 7, DType::F64, &DEV).unwrap();
        w.retain(|k, _| !k.starts_with("text_"));
        let tower = ClipVisionTower::new(VarBuilder::from_tensors(w, DType::F64, &DEV), &cfg).unwrap();
        let px = random_tensor(&[2, 3, 16, 16], 8, DType::F64, &DEV).unwrap();
        let ours = tower.features(&px).unwrap();
        // Reference: the same tower with candle's conv2d for the patch embedding.
        let conv = px.conv2d(&tower.patch_embedding, 0, 4, 1, 1).unwrap().flatten_from(2).unwrap();
        let conv = conv.transpose(1, 2).unwrap();
        let cls = tower.class_embedding.reshape((1, 1, 16)).unwrap().broadcast_as((2, 1, 16)).unwrap();
        let tokens = Tensor::cat(&[&cls, &conv], 1).unwrap();
        let tokens = tokens.broadcast_add(&tower.position_embedding.unsqueeze(0).unwrap()).unwrap();
        let x = tower.pre_layrnorm.forward(&tokens).unwrap();
        let x = tower.encoder.forward(&x, false).unwrap();
        let cls = tower.post_layernorm.forward(&x.narrow(1, 0, 1).unwrap().squeeze(1).unwrap()).unwrap();
        let reference = tower.visual_projection.forward(&cls).unwrap();
        assert!(max_abs_diff(&ours, &reference) < 1e-12);
    }

    #[test]
    fn text_pooling_at_first_eos_and_padding_invariance() {
        assert_eq!(eos_positions(&[vec![1, 5, 9, 9, 9], vec![1, 9, 0, 0, 0], vec![3, 3, 3]]), vec![2, 1, 0]);
        let (_, m) = tiny(DType::F64);
        // EOS = 63 (largest id of the tiny vocabulary). Pad with EOS (HF openai) or with 0 (open_clip).
        let ids = Tensor::new(&[[62u32, 5, 17, 63, 63, 63, 63, 63], [62, 5, 17, 63, 0, 0, 0, 0]], &DEV).unwrap();
        let f = m.text_features(&ids).unwrap();
        let d = max_abs_diff(&f.get(0).unwrap(), &f.get(1).unwrap());
        assert!(d < 1e-12, "padding changed the text features by {d}");
        // Shorter rows (no padding at all) agree too, and a different token changes the features.
        let short = Tensor::new(&[[62u32, 5, 17, 63]], &DEV).unwrap();
        assert!(max_abs_diff(&m.text_features(&short).unwrap().get(0).unwrap(), &f.get(0).unwrap()) < 1e-12);
        let other = Tensor::new(&[[62u32, 6, 17, 63]], &DEV).unwrap();
        assert!(max_abs_diff(&m.text_features(&other).unwrap().get(0).unwrap(), &f.get(0).unwrap()) > 1e-6);
    }

    #[test]
    fn image_features_gradient_wrt_pixels() {
        let (_, m) = tiny(DType::F64);
        let px = random_tensor(&[2, 3, 16, 16], 3, DType::F64, &DEV).unwrap();
        let c = grad_check(|x| m.image_features(x), &px, 9, 1e-5).unwrap();
        eprintln!("tiny CLIP image features w.r.t. pixels, f64: {c:?}");
        // The trap of rewards.md §9.1: a fused op would leave the pixel gradient at zero.
        assert!(c.analytic.abs() > 1e-3, "no gradient reached the pixels: {c:?}");
        assert!(c.rel_err < 1e-6, "{c:?}");
        // Normalised features (the cosine rewards) and f32.
        let e = check_grad(|x| l2_normalize(&m.image_features(x)?), &px, 10).unwrap();
        eprintln!("normalised features f64 FD rel err {e:.2e}");
        assert!(e < 1e-6);
        let (_, m32) = tiny(DType::F32);
        let e = check_grad(|x| m32.image_features(x), &px.to_dtype(DType::F32).unwrap(), 9).unwrap();
        eprintln!("tiny CLIP image features f32 FD rel err {e:.2e}");
        assert!(e < 1e-2);
    }

    #[test]
    fn image_features_gradient_through_differentiable_preprocessing() {
        let (cfg, m) = tiny(DType::F64);
        let img = ((random_tensor(&[2, 3, 24, 24], 4, DType::F64, &DEV).unwrap().tanh().unwrap() * 0.5).unwrap() + 0.5)
            .unwrap();
        let f = |x: &Tensor| m.image_features(&differentiable(x, cfg.vision.image_size)?);
        let c = grad_check(f, &img, 12, 1e-5).unwrap();
        eprintln!("tiny CLIP through differentiable preprocessing, f64: {c:?}");
        assert!(c.analytic.abs() > 1e-3 && c.rel_err < 1e-6, "{c:?}");
    }

    /// The real ViT-L/14 preset with random weights: loads, gives [1, 768] features and a finite, non-zero pixel
    /// gradient through the differentiable preprocessing (slow: `cargo test --lib vit_l_14 -- --ignored`).
    #[test]
    #[ignore]
    fn vit_l_14_preset_forward_and_backward() {
        let cfg = ClipConfig::vit_l_14();
        let t0 = std::time::Instant::now();
        let mut w = random_weights(&cfg, 1, DType::F32, &DEV).unwrap();
        w.retain(|k, _| !k.starts_with("text_"));
        let tower = ClipVisionTower::new(VarBuilder::from_tensors(w, DType::F32, &DEV), &cfg).unwrap();
        let t1 = std::time::Instant::now();
        let img = crate::image::preprocess::smooth_test_images(1, 256, 256, 3, &DEV).unwrap();
        let var = candle_core::Var::from_tensor(&img).unwrap();
        let f = tower.features(&differentiable(var.as_tensor(), 224).unwrap()).unwrap();
        assert_eq!(f.dims(), &[1, 768]);
        let t2 = std::time::Instant::now();
        let g = f.sum_all().unwrap().backward().unwrap();
        let g = g.get(var.as_tensor()).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        let t3 = std::time::Instant::now();
        eprintln!(
            "ViT-L/14 random weights: init+load {:.1}s, forward {:.1}s, backward {:.1}s, Σ|∂/∂pixels| = {g:.3e}",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64()
        );
        assert!(g.is_finite() && g > 0.0);
    }

    /// Inverse of `open_clip_to_hf`, written independently for the round trip.
    fn hf_to_open_clip(hf: &HashMap<String, Tensor>, cfg: &ClipConfig) -> HashMap<String, Tensor> {
        let mut o = HashMap::new();
        let g = |k: &str| hf[k].clone();
        let pairs = [
            ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
            ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
            ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
            ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),
            ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
            ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
            ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
            ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
            ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
            ("ln_final.weight", "text_model.final_layer_norm.weight"),
            ("ln_final.bias", "text_model.final_layer_norm.bias"),
            ("logit_scale", "logit_scale"),
        ];
        for (oc, h) in pairs {
            o.insert(oc.to_string(), g(h));
        }
        o.insert("visual.proj".into(), g("visual_projection.weight").t().unwrap().contiguous().unwrap());
        o.insert("text_projection".into(), g("text_projection.weight").t().unwrap().contiguous().unwrap());
        for (oc_pre, hf_pre, n) in
            [("visual.transformer", "vision_model", cfg.vision.layers), ("transformer", "text_model", cfg.text.layers)]
        {
            for i in 0..n {
                let h = format!("{hf_pre}.encoder.layers.{i}");
                let oc = format!("{oc_pre}.resblocks.{i}");
                for kind in ["weight", "bias"] {
                    let qkv: Vec<Tensor> =
                        ["q", "k", "v"].iter().map(|p| g(&format!("{h}.self_attn.{p}_proj.{kind}"))).collect();
                    o.insert(format!("{oc}.attn.in_proj_{kind}"), Tensor::cat(&qkv, 0).unwrap());
                    for (a, b) in [
                        ("ln_1", "layer_norm1"),
                        ("ln_2", "layer_norm2"),
                        ("attn.out_proj", "self_attn.out_proj"),
                        ("mlp.c_fc", "mlp.fc1"),
                        ("mlp.c_proj", "mlp.fc2"),
                    ] {
                        o.insert(format!("{oc}.{a}.{kind}"), g(&format!("{h}.{b}.{kind}")));
                    }
                }
            }
        }
        o
    }

    #[test]
    fn open_clip_round_trip_gives_identical_outputs() {
        let cfg = ClipConfig::tiny();
        let hf = random_weights(&cfg, 21, DType::F32, &DEV).unwrap();
        let oc = hf_to_open_clip(&hf, &cfg);
        assert_eq!(oc.len(), hf.len() - 4 * (cfg.vision.layers + cfg.text.layers));
        let mut with_buffers = oc.clone();
        with_buffers.insert("attn_mask".into(), Tensor::zeros((8, 8), DType::F32, &DEV).unwrap());
        let back = open_clip_to_hf(with_buffers).unwrap();
        assert_eq!(back.len(), hf.len());
        for (k, v) in &hf {
            assert_eq!(back[k].dims(), v.dims(), "{k}");
            assert_eq!(max_abs_diff(&back[k], v), 0.0, "{k}");
        }
        let a = ClipModel::new(VarBuilder::from_tensors(hf, DType::F32, &DEV), &cfg).unwrap();
        let b = ClipModel::new(VarBuilder::from_tensors(back, DType::F32, &DEV), &cfg).unwrap();
        let px = random_tensor(&[2, 3, 16, 16], 5, DType::F32, &DEV).unwrap();
        assert_eq!(max_abs_diff(&a.image_features(&px).unwrap(), &b.image_features(&px).unwrap()), 0.0);
        let ids = Tensor::new(&[[62u32, 9, 63, 0]], &DEV).unwrap();
        assert_eq!(max_abs_diff(&a.text_features(&ids).unwrap(), &b.text_features(&ids).unwrap()), 0.0);
        // Unknown keys are refused with the key named.
        let mut bad = oc;
        bad.insert("visual.attn_pool.weight".into(), Tensor::zeros(1, DType::F32, &DEV).unwrap());
        assert!(open_clip_to_hf(bad).unwrap_err().to_string().contains("visual.attn_pool.weight"));
    }

    /// Official (PIL bicubic + crop, uint8) vs differentiable (bilinear matrices) preprocessing on 16 smooth seeded
    /// images through the tiny CLIP: the feature cosine stays close to 1 (rewards.md §7 parity design).
    #[test]
    fn preprocessing_parity_on_tiny_clip() {
        let (cfg, m) = tiny(DType::F32);
        let s = cfg.vision.image_size;
        let n = 16;
        let side = 40;
        let imgs = crate::image::preprocess::smooth_test_images(n, side, side, 77, &DEV).unwrap();
        let pa = official(&imgs, s, CropRounding::Torchvision).unwrap();
        let pb = differentiable(&imgs, s).unwrap();
        let gap = (&pa - &pb).unwrap().abs().unwrap().flatten_all().unwrap();
        let (mean_gap, max_gap) =
            (gap.mean(0).unwrap().to_scalar::<f32>().unwrap(), gap.max(0).unwrap().to_scalar::<f32>().unwrap());
        eprintln!("parity pixels (normalised units): mean |Δ| {mean_gap:.4}, max |Δ| {max_gap:.4}");
        assert!(max_gap < 0.1, "{max_gap}");
        let a = m.image_features(&pa).unwrap();
        let b = m.image_features(&pb).unwrap();
        let cos = (l2_normalize(&a).unwrap() * l2_normalize(&b).unwrap()).unwrap().sum(1).unwrap();
        let cos = cos.to_vec1::<f32>().unwrap();
        let worst = cos.iter().cloned().fold(f32::INFINITY, f32::min);
        let mean = cos.iter().sum::<f32>() / n as f32;
        eprintln!("parity over {n} images ({side}px → {s}px): cosine mean {mean:.5}, min {worst:.5}");
        assert!(worst > 0.99, "{cos:?}");
    }
}
