//! `problem.batch_p`: the micro-batch size of the Stable Diffusion denoiser and decoder (the DAS reference's
//! `batch_p`, methods.md §16), fixed or `auto` (issue 16: "batch_p chosen automatically from free memory").
//!
//! `auto` (the default) on a GPU measures instead of guessing: after the weights are loaded it runs the costliest
//! call any method makes — one guided step (UNet forward with CFG and its VJP, VAE decode and VJP, the target
//! reward's gradient) — on 1 and on 2 latents, reads the device's used memory at each backward pass
//! ([`super::device::sample_memory`]), and fits `used = before + fixed + rows · per_row`. The largest batch whose
//! fit stays under [`HEADROOM`] of the memory this process may use (free memory before the probe plus what it
//! already holds) is taken, at most [`AUTO_MAX`]. When one latent does not fit, the cell fails with the bytes it
//! needed and the ways out. On the CPU `auto` is the reference's 2: host memory is rarely the limit and the
//! runner already spreads rows over threads. The choice is recorded in the cell's `params` (`batch_p`). Results do
//! not depend on `batch_p` (micro-batches are independent rows).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::device::{device_name, is_out_of_memory, memory_info, peak_memory_bytes, reset_peak_memory};
use super::pipeline::SdPipeline;
use crate::diffusion::{Cond, Denoiser};
use crate::rewards::{score_decoded, score_grad_decoded, Reward};
use crate::rng::{fill_normal, Purpose, Streams};
use crate::{Error, Result};

/// Share of the usable device memory `auto` plans to fill (the rest absorbs fragmentation and the sampler's own
/// buffers).
pub const HEADROOM: f64 = 0.9;

/// The largest micro-batch `auto` picks.
pub const AUTO_MAX: usize = 64;

/// `batch_p` of `auto` on the CPU (the DAS reference's value).
pub const CPU_BATCH_P: usize = 2;

/// `problem.batch_p`: a number ≥ 1 or `auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BatchP {
    /// Measured from free memory on a GPU; [`CPU_BATCH_P`] on the CPU.
    #[default]
    Auto,
    /// This many samples per micro-batch.
    Fixed(usize),
}

impl Serialize for BatchP {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            BatchP::Auto => s.serialize_str("auto"),
            BatchP::Fixed(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for BatchP {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(u64),
            Name(String),
        }
        match Repr::deserialize(d) {
            Ok(Repr::Number(n)) if n >= 1 => Ok(BatchP::Fixed(n as usize)),
            Ok(Repr::Name(n)) if n == "auto" => Ok(BatchP::Auto),
            _ => Err(serde::de::Error::custom(
                "batch_p: expected a number ≥ 1 (samples per micro-batch; the reference uses 2) or `auto` (from free \
                 GPU memory)",
            )),
        }
    }
}

/// What the probe measured, in bytes of device memory in use (the whole device, as `cuMemGetInfo` reports it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probe {
    /// In use before the probe (this process's weights and everything else on the device).
    pub before: u64,
    /// The most this process may have in use: `before` + free memory before the probe.
    pub limit: u64,
    /// Peak during a guided step of 1 latent.
    pub one: u64,
    /// Peak during a guided step of 2 latents; `None` when it ran out of memory.
    pub two: Option<u64>,
}

/// The micro-batch size for `probe` (see the module docs); `what` names the configuration in the error.
pub fn choose_batch_p(p: &Probe, what: &str) -> Result<usize> {
    let budget = (p.limit as f64 * HEADROOM) as u64;
    if p.one > budget {
        return Err(too_big(what, Some(p.one.saturating_sub(p.before)), p.limit.saturating_sub(p.before)));
    }
    let Some(two) = p.two else { return Ok(1) };
    let (a1, a2) = (p.one.saturating_sub(p.before), two.saturating_sub(p.before));
    // A row's share: the growth from 1 to 2 latents, but never below a quarter of the 2-latent step (allocator
    // reuse can hide growth).
    let per_row = a2.saturating_sub(a1).max(a2 / 4).max(1);
    let fixed = a2.saturating_sub(2 * per_row);
    let room = budget.saturating_sub(p.before + fixed);
    Ok(((room / per_row) as usize).clamp(1, AUTO_MAX))
}

fn too_big(what: &str, need: Option<u64>, free: u64) -> Error {
    let gb = |b: u64| b as f64 / 1e9;
    let need = need.map(|n| format!("{:.1} GB", gb(n))).unwrap_or_else(|| "more than that".into());
    Error::config(format!(
        "problem.batch_p: auto: one particle does not fit on {what}: a guided step of one latent needs {need} of \
         device memory, {:.1} GB are free; use `dtype: f16`, a smaller `latent_size`, a GPU with more memory, or \
         free the device (other processes count)",
        gb(free)
    ))
}

/// Probe results by configuration (device, architecture, dtype, size, CFG, reward), once per process.
static CHOSEN: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

/// Resolve `batch_p` for `pipe` with target `reward` and set it; returns the value and how it was chosen
/// (`"2"`, `"6 (auto)"`, `"2 (auto: cpu)"`).
pub fn resolve_batch_p(batch: BatchP, pipe: &mut SdPipeline, reward: &dyn Reward, key: &str) -> Result<String> {
    let device = pipe.denoiser.device().clone();
    let (b, how) = match batch {
        BatchP::Fixed(n) => (n, n.to_string()),
        BatchP::Auto if memory_info(&device).is_none() => (CPU_BATCH_P, format!("{CPU_BATCH_P} (auto: cpu)")),
        BatchP::Auto => {
            let key = format!("{key}:{}:{}", device_name(&device), reward.name());
            let known = CHOSEN.lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied();
            let b = match known {
                Some(b) => b,
                None => {
                    let b = choose_batch_p(&probe(pipe, reward)?, &device_name(&device))?;
                    CHOSEN.lock().unwrap_or_else(|e| e.into_inner()).insert(key, b);
                    b
                }
            };
            (b, format!("{b} (auto)"))
        }
    };
    pipe.set_batch_p(b);
    Ok(how)
}

/// Run the two probe steps on `pipe`'s device.
fn probe(pipe: &mut SdPipeline, reward: &dyn Reward) -> Result<Probe> {
    let device = pipe.denoiser.device().clone();
    let what = device_name(&device);
    let (free, total) = memory_info(&device).ok_or_else(|| Error::numeric("batch_p: auto", "no memory counter"))?;
    let before = total.saturating_sub(free);
    pipe.set_batch_p(2);
    let step = |rows: usize| -> Result<Option<u64>> {
        reset_peak_memory();
        match guided_step(pipe, reward, rows) {
            Ok(()) => Ok(Some(peak_memory_bytes(&device).unwrap_or(before))),
            Err(e) if is_out_of_memory(&e) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let Some(one) = step(1)? else { return Err(too_big(&what, None, free)) };
    let two = step(2)?;
    Ok(Probe { before, limit: before + free, one, two })
}

/// One guided step of `rows` latents: ε̂ with CFG and its VJP, with the cotangent from the decoder and the reward's
/// gradient (its score only when it has none).
fn guided_step(pipe: &SdPipeline, reward: &dyn Reward, rows: usize) -> Result<()> {
    let d = pipe.denoiser.dim();
    let mut x = vec![0f32; rows * d];
    fill_normal(&mut Streams::new(0x5D15).rng(Purpose::Init, 0, 0), &mut x);
    let cond = Cond::Labels(vec![0; rows]);
    let (mut eps, mut vjp) = (vec![0f32; rows * d], vec![0f32; rows * d]);
    let mut cot = |_: &[f32], u: &mut [f32]| -> Result<()> {
        let mut s = vec![0f64; rows];
        if reward.differentiable() {
            // The decoder's graph and the reward's are alive together, as in the samplers' look-ahead.
            score_grad_decoded(&pipe.decoder, reward, &x, &cond, &mut s, u)
        } else {
            score_decoded(&pipe.decoder, reward, &x, &cond, &mut s)?;
            u.iter_mut().for_each(|v| *v = 1.0);
            Ok(())
        }
    };
    pipe.denoiser.eps_vjp(&x, 500, &cond, &mut eps, &mut cot, &mut vjp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1_000_000_000;

    #[test]
    fn auto_fits_the_measured_steps_into_the_free_memory() {
        // 10 GB before, 80 GB usable; a latent adds 10 GB over a 2 GB fixed part: (72 − 10 − 2) / 10 = 6.
        let p = Probe { before: 10 * GB, limit: 80 * GB, one: 22 * GB, two: Some(32 * GB) };
        assert_eq!(choose_batch_p(&p, "cuda:0").unwrap(), 6);
        // Two latents did not fit: one.
        assert_eq!(choose_batch_p(&Probe { two: None, ..p }, "cuda:0").unwrap(), 1);
        // No visible growth (allocator reuse): a quarter of the 2-latent step per row, (72 − 10 − 2) / 1.
        let flat = Probe { before: 10 * GB, limit: 80 * GB, one: 14 * GB, two: Some(14 * GB) };
        assert_eq!(choose_batch_p(&flat, "cuda:0").unwrap(), 60);
        let tiny = Probe { before: 0, limit: 80 * GB, one: 1, two: Some(2) };
        assert_eq!(choose_batch_p(&tiny, "cuda:0").unwrap(), AUTO_MAX);
        // One latent over the budget: the error names the need, the free memory and the ways out.
        let e = choose_batch_p(&Probe { one: 75 * GB, two: None, ..p }, "cuda:0").unwrap_err().to_string();
        assert!(e.contains("problem.batch_p") && e.contains("65.0 GB") && e.contains("70.0 GB are free"), "{e}");
        assert!(e.contains("f16") && e.contains("latent_size") && e.contains("cuda:0"), "{e}");
    }

    #[test]
    fn batch_p_reads_numbers_and_auto_and_names_the_key() {
        let v: BatchP = serde_json::from_str("3").unwrap();
        assert_eq!(v, BatchP::Fixed(3));
        assert_eq!(serde_json::from_str::<BatchP>("\"auto\"").unwrap(), BatchP::Auto);
        assert_eq!(serde_json::to_string(&BatchP::Auto).unwrap(), "\"auto\"");
        for bad in ["0", "\"big\"", "-1", "1.5"] {
            let e = serde_json::from_str::<BatchP>(bad).unwrap_err().to_string();
            assert!(e.contains("batch_p") && e.contains("auto"), "{bad}: {e}");
        }
        assert!(is_out_of_memory(&Error::numeric("cuda", "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")")));
        assert!(!is_out_of_memory(&Error::config("problem.dtype: bad")));
    }

    /// The probe's guided step runs end to end on the tiny SD with the random aesthetic tower (the CPU has no
    /// device memory counter, so `auto` there is the reference value and no probe runs).
    #[test]
    fn the_probe_step_runs_and_auto_on_the_cpu_is_the_reference_value() {
        use crate::problems::sd15::SdOptions;
        use crate::rewards::random::{random_image_reward, TowerSize};
        use candle_core::Device;
        let prompts = vec!["a cat".to_string()];
        let opts = SdOptions { latent_size: 8, batch_p: 1, ..Default::default() };
        let mut pipe = SdPipeline::tiny_random(3, &opts, &prompts).unwrap();
        let spec = yaml_serde::from_str("{ kind: aesthetic }").unwrap();
        let reward = random_image_reward(&spec, pipe.image_shape, &prompts, &Device::Cpu, TowerSize::Tiny).unwrap();
        guided_step(&pipe, reward.as_ref(), 2).unwrap();
        let how = resolve_batch_p(BatchP::Auto, &mut pipe, reward.as_ref(), "tiny").unwrap();
        assert_eq!(how, "2 (auto: cpu)");
        assert_eq!(resolve_batch_p(BatchP::Fixed(3), &mut pipe, reward.as_ref(), "tiny").unwrap(), "3");
    }
}
