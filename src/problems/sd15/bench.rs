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
use super::vae::{VaeConfig as Vae, VaeDecoder};
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
    /// Steps timed (the first one, then `reps − 1` warm ones).
    pub reps: usize,
    /// The first step in the process (kernel loading, allocator warm-up).
    pub first_step_s: f64,
    /// UNet forward with CFG + VJP through it (excluding the decoder work inside the cotangent); median of the
    /// warm steps (the first step when `reps` is 1), as the two below.
    pub unet_fwd_vjp_s: f64,
    /// VAE decode + VJP through the decoder (inside the cotangent).
    pub vae_decode_vjp_s: f64,
    /// The whole step (both of the above).
    pub step_s: f64,
    /// Peak memory of the process on the device in bytes, where measurable (CPU: peak RSS; CUDA: not exposed).
    pub peak_memory_bytes: Option<u64>,
}

/// Time `reps` guided steps at loop index 1 of the SD 1.5 grid (t = 981) on `device`: ε̂ with CFG scale
/// `guidance_scale` for `batch` particles of an `image_size`² image, the look-ahead x̂0, its decode, the VJP of a
/// mean-brightness reward through the VAE and then through the UNet. Weights are random (seed `seed`).
pub fn sd_step_timing(
    device: &Device,
    dtype: DType,
    image_size: usize,
    batch: usize,
    guidance_scale: f64,
    seed: u64,
    reps: usize,
) -> Result<StepTiming> {
    if image_size == 0 || image_size % 64 != 0 || batch == 0 || reps == 0 {
        return Err(Error::config(
            "sd_step_timing: image size must be a positive multiple of 64, batch ≥ 1 and reps ≥ 1",
        ));
    }
    let t0 = Instant::now();
    let mut g = GuidedStep::new(device, dtype, &SdScale::Full, image_size, batch, guidance_scale, seed)?;
    let build_s = t0.elapsed().as_secs_f64();
    let mut step = || -> Result<(f64, f64)> {
        let t1 = Instant::now();
        let inner = g.run()?;
        Ok((t1.elapsed().as_secs_f64(), inner))
    };
    let first = step()?;
    let mut warm = Vec::new();
    for _ in 1..reps {
        warm.push(step()?);
    }
    let median = |f: &dyn Fn(&(f64, f64)) -> f64| -> f64 {
        if warm.is_empty() {
            return f(&first);
        }
        let mut v: Vec<f64> = warm.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        }
    };
    let (step_s, inner) = (median(&|s| s.0), median(&|s| s.1));
    let unet = median(&|s| s.0 - s.1);
    Ok(StepTiming {
        device: device_name(device),
        dtype: format!("{dtype:?}").to_lowercase(),
        image_size,
        batch,
        build_s,
        reps,
        first_step_s: first.0,
        unet_fwd_vjp_s: unet,
        vae_decode_vjp_s: inner,
        step_s,
        peak_memory_bytes: peak_memory_bytes(device),
    })
}

/// Which random-weight model a [`GuidedStep`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdScale {
    /// The full-size SD 1.5 UNet and VAE decoder (text width 768).
    Full,
    /// The tiny test model's UNet and VAE (text width 16).
    Tiny,
}

/// One guided step on random weights — ε̂ with CFG for `batch` particles at t = 981, the look-ahead x̂0, its decode,
/// the VJP of a mean-brightness reward through the VAE and then through the UNet — with its inputs and outputs.
pub struct GuidedStep {
    den: SdDenoiser,
    dec: SdDecoder,
    grid: Grid,
    x: Vec<f32>,
    /// ε̂ of the last run.
    pub eps: Vec<f32>,
    /// VJP through the UNet of the last run.
    pub vjp: Vec<f32>,
    /// Decoded images of the last run.
    pub image: Vec<f32>,
}

impl GuidedStep {
    /// Build the models with seeded random weights on `device` (the same values on every device) and draw x_t.
    pub fn new(
        device: &Device,
        dtype: DType,
        scale: &SdScale,
        image_size: usize,
        batch: usize,
        guidance_scale: f64,
        seed: u64,
    ) -> Result<Self> {
        let (ucfg, vcfg, ctx) = match scale {
            SdScale::Full => (UNetConfig::sd15(), Vae::sd15(), 768),
            SdScale::Tiny => (UNetConfig::tiny(16), Vae::tiny(), 16),
        };
        let unet = UNet::load(random_var_builder(seed, dtype, device, None), &ucfg)?;
        let vae = VaeDecoder::load(random_var_builder(seed, dtype, device, None), &vcfg)?;
        let streams = Streams::new(seed);
        let emb = |step: u64| -> Result<Tensor> {
            let mut v = vec![0f32; 77 * ctx];
            streams.normals(Purpose::Train, 77, step, &mut v);
            Ok(Tensor::from_vec(v, (1, 77, ctx), device)?)
        };
        let emb = PromptEmbeddings { cond: emb(0)?, uncond: emb(1)? };
        let hw = (image_size / 8, image_size / 8);
        let den = SdDenoiser::new(std::sync::Arc::new(unet), &emb, guidance_scale, hw, batch, dtype, device)?;
        let dec = SdDecoder::new(std::sync::Arc::new(vae), hw, batch, ClampGrad::Exact, dtype, device);
        let d = den.dim();
        let mut x = vec![0f32; batch * d];
        streams.normals(Purpose::Init, 0, 0, &mut x);
        let grid = Grid::new(BetaSchedule::ScaledLinear, Spacing::Sd15, 100);
        Ok(Self { den, dec, grid, x, eps: vec![0f32; batch * d], vjp: vec![0f32; batch * d], image: Vec::new() })
    }

    /// Run the step; returns the seconds spent inside the cotangent (the VAE decode + VJP).
    pub fn run(&mut self) -> Result<f64> {
        let i = 1;
        let c = StepCoef::new(self.grid.a[i], self.grid.a_prev[i], 1.0);
        let out_dim = self.dec.out_dim(self.den.dim());
        let batch = self.x.len() / self.den.dim();
        let (x, dec, image) = (&self.x, &self.dec, &mut self.image);
        let mut inner = 0f64;
        let mut cot = |e: &[f32], u: &mut [f32]| -> Result<()> {
            let ti = Instant::now();
            let mut x0 = vec![0f32; e.len()];
            x0_hat(&c, x, e, &mut x0);
            // r = mean brightness: ∇ = 1/out_dim per pixel. One decoder forward (the samplers' look-ahead path).
            image.clear();
            let mut score = |y: &[f32], _: std::ops::Range<usize>, gy: &mut [f32]| -> Result<()> {
                image.extend_from_slice(y);
                gy.fill(1.0 / out_dim as f32);
                Ok(())
            };
            let mut g0 = vec![0f32; x0.len()];
            dec.decode_vjp(&x0, batch, &mut score, &mut g0)?;
            let s = -(c.sqrt_1ma / c.sqrt_a) as f32;
            u.iter_mut().zip(&g0).for_each(|(ui, gi)| *ui = s * gi);
            inner += ti.elapsed().as_secs_f64();
            Ok(())
        };
        let labels = Cond::Labels(vec![0; batch]);
        self.den.eps_vjp(&self.x, self.grid.t[i], &labels, &mut self.eps, &mut cot, &mut self.vjp)?;
        if !self.vjp.iter().all(|v| v.is_finite()) {
            return Err(Error::numeric("sd guided step", "non-finite gradient"));
        }
        Ok(inner)
    }
}

/// Largest |a − b| over the largest |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs())) / scale
}

/// CPU-vs-`device` parity of one f32 guided step on random weights: relative differences of ε̂ (with CFG), of the
/// VJP through the UNet and of the decoded image.
pub fn sd_parity(device: &Device, scale: SdScale, image_size: usize, batch: usize) -> Result<[f64; 3]> {
    let run = |dev: &Device| -> Result<GuidedStep> {
        let mut g = GuidedStep::new(dev, DType::F32, &scale, image_size, batch, 5.0, 7)?;
        g.run()?;
        Ok(g)
    };
    let (cpu, other) = (run(&Device::Cpu)?, run(device)?);
    Ok([rel_diff(&other.eps, &cpu.eps), rel_diff(&other.vjp, &cpu.vjp), rel_diff(&other.image, &cpu.image)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parity_of_the_cpu_with_itself_is_exact_and_the_tiny_step_runs() {
        let [e, v, i] = sd_parity(&Device::Cpu, SdScale::Tiny, 64, 2).unwrap();
        assert_eq!((e, v, i), (0.0, 0.0, 0.0), "the step is deterministic");
        let mut g = GuidedStep::new(&Device::Cpu, DType::F32, &SdScale::Tiny, 64, 1, 5.0, 7).unwrap();
        g.run().unwrap();
        assert!(g.vjp.iter().any(|v| *v != 0.0) && !g.image.is_empty());
    }
}
