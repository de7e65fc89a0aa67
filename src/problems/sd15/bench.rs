//! The cost of one guided step of Stable Diffusion 1.5 (methods.md §17: a DAS/DPS step is one UNet forward with
//! CFG, one VJP through the UNet, one VAE decode and one VJP through the VAE per particle), measured on a
//! full-size SD 1.5 UNet + VAE decoder with seeded random weights — the cost does not depend on the values, and
//! no weights need to be present. Used by `cargo run --release --example sd_step_timing -- [device] [image] [batch]
//! [dtype]`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::device::{device_name, peak_memory_bytes};
use super::pipeline::{ClampGrad, PromptEmbeddings, SdDecoder, SdDenoiser};
use super::random::random_var_builder;
use super::unet::{UNet, UNetConfig};
use super::vae::{VaeConfig, VaeDecoder};
use crate::diffusion::schedule::{BetaSchedule, Grid, Spacing};
use crate::diffusion::step::{x0_hat, StepCoef};
use crate::diffusion::{Cond, Decoder, Denoiser};
use crate::rng::{Purpose, Streams};
use crate::{Error, Result};

/// Seconds spent in one guided step, and the peak memory.
#[derive(Clone, Debug, Serialize)]
pub struct StepTiming {
    /// Device (`cpu`, `cuda:0`).
    pub device: String,
    /// Model dtype.
    pub dtype: String,
    /// Image side in pixels (latent side × 8).
    pub image_size: usize,
    /// Particles in the step (UNet rows = 2 × batch with CFG).
    pub batch: usize,
    /// Building the random-weight models.
    pub build_s: f64,
    /// UNet forward with CFG + VJP through it (excluding the decoder work inside the cotangent).
    pub unet_fwd_vjp_s: f64,
    /// VAE decode + VJP through the decoder (inside the cotangent).
    pub vae_decode_vjp_s: f64,
    /// The whole step (both of the above).
    pub step_s: f64,
    /// Peak memory of the process on the device in bytes, where measurable (CPU: peak RSS; CUDA: not exposed).
    pub peak_memory_bytes: Option<u64>,
}

/// Time one guided step at loop index 1 of the SD 1.5 grid (t = 981) on `device`: ε̂ with CFG scale
/// `guidance_scale` for `batch` particles of an `image_size`² image, the look-ahead x̂0, its decode, the VJP of a
/// mean-brightness reward through the VAE and then through the UNet. Weights are random (seed `seed`).
pub fn sd_step_timing(
    device: &Device,
    dtype: DType,
    image_size: usize,
    batch: usize,
    guidance_scale: f64,
    seed: u64,
) -> Result<StepTiming> {
    if image_size == 0 || image_size % 64 != 0 || batch == 0 {
        return Err(Error::config("sd_step_timing: image size must be a positive multiple of 64 and batch ≥ 1"));
    }
    let t0 = Instant::now();
    let unet = UNet::load(random_var_builder(seed, dtype, device, None), &UNetConfig::sd15())?;
    let vae = VaeDecoder::load(random_var_builder(seed, dtype, device, None), &VaeConfig::sd15())?;
    let streams = Streams::new(seed);
    let emb = |step: u64| -> Result<Tensor> {
        let mut v = vec![0f32; 77 * 768];
        streams.normals(Purpose::Train, 77, step, &mut v);
        Ok(Tensor::from_vec(v, (1, 77, 768), device)?)
    };
    let emb = PromptEmbeddings { cond: emb(0)?, uncond: emb(1)? };
    let hw = (image_size / 8, image_size / 8);
    let den = SdDenoiser::new(std::sync::Arc::new(unet), &emb, guidance_scale, hw, batch, dtype, device)?;
    let dec = SdDecoder::new(std::sync::Arc::new(vae), hw, batch, ClampGrad::Exact, dtype, device);
    let build_s = t0.elapsed().as_secs_f64();

    let d = den.dim();
    let mut x = vec![0f32; batch * d];
    streams.normals(Purpose::Init, 0, 0, &mut x);
    let grid = Grid::new(BetaSchedule::ScaledLinear, Spacing::Sd15, 100);
    let i = 1;
    let c = StepCoef::new(grid.a[i], grid.a_prev[i], 1.0);
    let mut eps = vec![0f32; batch * d];
    let mut vjp = vec![0f32; batch * d];
    let mut inner = 0f64;
    let out_dim = dec.out_dim(d);
    let t1 = Instant::now();
    {
        let mut cot = |e: &[f32], u: &mut [f32]| -> Result<()> {
            let ti = Instant::now();
            let mut x0 = vec![0f32; e.len()];
            x0_hat(&c, &x, e, &mut x0);
            let mut img = Vec::new();
            dec.decode(&x0, &mut img)?;
            // r = mean brightness: ∇ = 1/out_dim per pixel.
            let gy = vec![1.0 / out_dim as f32; img.len()];
            let mut g0 = vec![0f32; x0.len()];
            dec.vjp(&x0, &gy, &mut g0)?;
            let s = -(c.sqrt_1ma / c.sqrt_a) as f32;
            u.iter_mut().zip(&g0).for_each(|(ui, gi)| *ui = s * gi);
            inner += ti.elapsed().as_secs_f64();
            Ok(())
        };
        let labels = Cond::Labels(vec![0; batch]);
        den.eps_vjp(&x, grid.t[i], &labels, &mut eps, &mut cot, &mut vjp)?;
    }
    let step_s = t1.elapsed().as_secs_f64();
    if !vjp.iter().all(|v| v.is_finite()) {
        return Err(Error::numeric("sd_step_timing", "non-finite gradient"));
    }
    Ok(StepTiming {
        device: device_name(device),
        dtype: format!("{dtype:?}").to_lowercase(),
        image_size,
        batch,
        build_s,
        unet_fwd_vjp_s: step_s - inner,
        vae_decode_vjp_s: inner,
        step_s,
        peak_memory_bytes: peak_memory_bytes(device),
    })
}
