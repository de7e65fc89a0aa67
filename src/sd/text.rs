//! Stable Diffusion's text encoder: the text transformer of OpenAI CLIP ViT-L/14 (`openai/clip-vit-large-patch14`,
//! HF `CLIPTextModel`, keys `text_model.*`, no projection), returning the **last hidden state after
//! `final_layer_norm`** for every token `[n, 77, 768]` — what the SD 1.5 pipeline feeds to the UNet's
//! cross-attention (`text_encoder(ids)[0]`, no clip-skip).
//!
//! [`crate::models::ClipTextTower`] pools one token and projects it (HF `get_text_features`) and loads
//! `text_projection`, which an SD checkpoint lacks; this module reuses its blocks ([`crate::nn::Encoder`],
//! [`crate::nn::LayerNorm`]) and its configuration type. Forward only: prompts are encoded once per run.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use crate::models::clip::ClipTextConfig;
use crate::nn::{Activation, Encoder, EncoderLayerConfig, LayerNorm};
use crate::{Error, Result};

/// The SD 1.5 text encoder configuration (CLIP ViT-L/14 text tower: 12 × 768, 12 heads, MLP 3072, QuickGELU,
/// vocabulary 49,408, context 77).
pub fn sd15_text_config() -> ClipTextConfig {
    crate::models::ClipConfig::vit_l_14().text
}

/// A tiny text encoder configuration: width `width`, 2 layers, 2 heads, MLP 2·width, context 77.
pub fn tiny_text_config(vocab_size: usize, width: usize) -> ClipTextConfig {
    ClipTextConfig {
        vocab_size,
        context_length: 77,
        width,
        layers: 2,
        heads: 2,
        mlp: 2 * width,
        act: Activation::QuickGelu,
        eps: 1e-5,
    }
}

/// HF `CLIPTextModel` returning `last_hidden_state`.
#[derive(Clone, Debug)]
pub struct TextEncoder {
    cfg: ClipTextConfig,
    token_embedding: Tensor,
    position_embedding: Tensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
}

impl TextEncoder {
    /// Loads `text_model.*` under the root `vb` of `text_encoder/model.safetensors`.
    pub fn load(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        if cfg.heads == 0 || cfg.width % cfg.heads != 0 {
            return Err(Error::config(format!(
                "text encoder: width {} not divisible by {} heads",
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

    /// `last_hidden_state` `[n, t, width]` of token ids `[n, t]` (t ≤ context length): token + position
    /// embeddings → causal pre-LN encoder → final LayerNorm.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (n, t) = ids.dims2()?;
        if t == 0 || t > self.cfg.context_length {
            return Err(Error::config(format!(
                "text encoder: token rows of length {t}; expected 1..={}",
                self.cfg.context_length
            )));
        }
        let ids = ids.to_dtype(DType::U32)?;
        if let Some(bad) = ids.flatten_all()?.to_vec1::<u32>()?.into_iter().find(|&i| i as usize >= self.cfg.vocab_size)
        {
            return Err(Error::config(format!(
                "text encoder: token id {bad} outside the vocabulary of {} tokens; use the model's tokenizer",
                self.cfg.vocab_size
            )));
        }
        let x = self.token_embedding.embedding(&ids.flatten_all()?)?.reshape((n, t, self.cfg.width))?;
        let x = x.broadcast_add(&self.position_embedding.narrow(0, 0, t)?.unsqueeze(0)?)?;
        let x = self.encoder.forward(&x, true)?;
        self.final_layer_norm.forward(&x)
    }
}
