//! Stable Diffusion's text encoder: the text transformer of OpenAI CLIP ViT-L/14 (`openai/clip-vit-large-patch14`,
//! HF `CLIPTextModel`, keys `text_model.*`, no projection), returning the **last hidden state after
//! `final_layer_norm`** for every token `[n, 77, 768]` — what the SD 1.5 pipeline feeds to the UNet's
//! cross-attention (`text_encoder(ids)[0]`, no clip-skip).
//!
//! It is [`crate::models::clip::ClipTextModel`] (the part of [`crate::models::clip::ClipTextTower`] before pooling and
//! `text_projection`, which an SD checkpoint lacks). Forward only: prompts are encoded once per run.

use crate::models::clip::ClipTextConfig;
use crate::nn::Activation;

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

/// HF `CLIPTextModel` returning `last_hidden_state`: the CLIP text transformer of [`crate::models::clip`].
pub type TextEncoder = crate::models::clip::ClipTextModel;
