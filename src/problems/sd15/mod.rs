//! Stable Diffusion 1.5 on candle with exact gradients: the base model of the DAS image experiments (Kim, Kim &
//! Park, ICLR 2025; methods.md §0.3, §16: `stable-diffusion-v1-5/stable-diffusion-v1-5`, DDIM 100 steps, η = 1,
//! scaled-linear β, CFG 5.0).
//!
//! - [`unet`], [`vae`], [`text`]: the UNet ε-network, the autoencoder's decoder and the CLIP text encoder with
//!   diffusers / HF checkpoint key names, configurable sizes (a tiny instance shares the key structure);
//!   UNet and VAE are built from the differentiable layers of [`layers`] (candle's fused softmax / layer norm have
//!   no backward pass, stack.md) and checked against finite differences.
//! - [`loader`]: the diffusers folder layout, pinned sizes and sha256 of the public files, `config.json` parsing.
//! - [`pipeline`]: [`SdDenoiser`] (ε̂ with classifier-free guidance, VJP through the UNet) and [`SdDecoder`]
//!   (latent → image in [0, 1], VJP through the VAE) for the samplers; [`SdPipeline`] loads everything.
//! - [`prompts`]: versioned prompt manifests and a seeded draw without replacement.
//! - [`device`]: `cpu` / `cuda:N` parsing (CUDA needs the `cuda` cargo feature) and peak memory.
//! - [`bench`]: [`sd_step_timing`], the cost of one guided step on a full-size random-weight SD 1.5.
//!
//! Row layout: a latent row is `[4, h, w]` flattened (h = w = 64 for 512² images); an image row is `[3, H, W]`
//! in [0, 1]. A row's [`crate::diffusion::Cond::Labels`] entry indexes [`SdPipeline::prompts`].

pub mod attention;
pub mod batch;
pub mod bench;
pub mod cell;
pub mod device;
pub mod layers;
pub mod loader;
pub mod pipeline;
pub mod prompts;
pub mod random;
pub mod setup;
pub mod text;
pub mod unet;
pub mod vae;

pub use bench::{sd_step_timing, StepTiming};
pub use device::{device_name, parse_device, peak_memory_bytes};
pub use loader::{Pins, SdConfig, SdFolder, Variant, SD15_FILES, SD15_REPO};
pub use pipeline::{encode_prompts, ClampGrad, PromptEmbeddings, SdDecoder, SdDenoiser, SdOptions, SdPipeline};
pub use prompts::{PromptDraw, PromptManifest};
pub use random::{tiny_config, tiny_tokenizer_files, write_random_folder};
pub use text::TextEncoder;
pub use unet::{UNet, UNetConfig};
pub use vae::{VaeConfig, VaeDecoder};

#[cfg(test)]
mod tests;
