//! Pretrained-model architectures used by the rewards (rewards.md §2–§6), written on the differentiable blocks of
//! [`crate::nn`] so that gradients reach the input pixels.
//!
//! - [`clip`]: CLIP image and text towers (Radford et al. 2021, "Learning Transferable Visual Models From Natural
//!   Language Supervision"), HF `transformers` `CLIPModel` weight names, with a key map from open_clip checkpoints.
//! - [`clip_tokenizer`]: the CLIP byte-level BPE tokenizer from a local `vocab.json` + `merges.txt`.

pub mod clip;
pub mod clip_tokenizer;

pub use clip::{open_clip_to_hf, ClipConfig, ClipModel, ClipTextConfig, ClipVisionConfig};
pub use clip_tokenizer::ClipTokenizer;
