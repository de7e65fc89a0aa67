//! Pretrained-model architectures used by the rewards (rewards.md §2–§6), written on the differentiable blocks of
//! [`crate::nn`] so that gradients reach the input pixels.
//!
//! - [`clip`]: CLIP image and text towers (Radford et al. 2021, "Learning Transferable Visual Models From Natural
//!   Language Supervision"), HF `transformers` `CLIPModel` weight names, with a key map from open_clip checkpoints.
//! - [`clip_tokenizer`]: the CLIP byte-level BPE tokenizer from a local `vocab.json` + `merges.txt`.
//! - [`blip_vit`]: BLIP's ViT image encoder (Li et al. 2022, "BLIP"; ViT of Dosovitskiy et al. 2021), ImageReward
//!   checkpoint names.
//! - [`bert`]: BLIP's BERT text encoder with cross-attention to image tokens (Devlin et al. 2019; Li et al. 2022).
//! - [`wordpiece`]: the BERT WordPiece tokenizer from a local `vocab.txt`.

pub mod bert;
pub mod blip_vit;
pub mod clip;
pub mod clip_tokenizer;
pub mod mlp;
pub mod wordpiece;

pub use clip::{open_clip_to_hf, ClipConfig, ClipModel, ClipTextConfig, ClipVisionConfig};
pub use clip_tokenizer::ClipTokenizer;
