//! Cells of the Stable Diffusion 1.5 problem (`problem: { kind: sd15 }`, methods.md §0.3, §16): the diffusers
//! folder's UNet with classifier-free guidance as the denoiser, its VAE decoder, and any image reward of
//! `rewards::build`. The samplers run exactly as on the toy and FMNIST-align (one `Sampler` code path); group g is
//! conditioned on prompt `g % n_prompts` of a seeded draw from the prompt manifest (`crate::problems::sd15::PromptManifest`).
//!
//! A cell reports:
//!
//! - `reward_mean`: the target reward of the outputs as the sampler scored them (output-weighted);
//! - the **cross-reward matrix** row: the target and every reward of `eval_rewards` evaluated on the decoded outputs,
//!   `r_<label>` (output-weighted mean) and `r_<label>_sd` (spread over outputs), `<label>` = the reward's table
//!   label (`RewardSpec::label`, e.g. `aesthetic`, `0.5*aesthetic+0.5*clip_score`; a repeated label gets `#2`, …),
//!   and the same per prompt in the cell file's `prompts` (prompt id = manifest index, text = the prompt;
//!   `crate::problems::cross_reward`), tabulated by the store as `prompts.csv` / `prompts.parquet`;
//! - `non_finite_frac` (outputs whose latent diverged; left out of the reward rows), `n_prompts`, `sample_side` (side
//!   of the kept, downscaled images), `peak_mem_gb` where the device reports it, the shared ledger and SMC
//!   diagnostics;
//! - in the cell file: the manifest id, version and sha256, the drawn prompt indices and the sha256 of every model
//!   file read (`params`), and the first [`KEEP_IMAGES`] decoded images box-downscaled to at most
//!   [`SAMPLE_SIDE`] pixels a side, rounded to 1/100 (`samples`, rows `[3, s, s]`).
//!
//! On a GPU the cell samples one chunk of groups at a time and GPU cells run one at a time (device memory is
//! bounded by `batch_p`); on the CPU the runner's parallel chunks are kept.
//!
//! Plan time checks everything that does not need a sampling run: the model folder and its files (a missing folder
//! or file is a file error naming it and the `huggingface-cli` command that fetches it, so `alignbench reproduce`
//! lists the experiment as skipped), the reward weights (built once, shared with the run), the prompt draw, the
//! device and dtype, and that the method's needs are met (gradient methods refuse black-box rewards).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device};

use crate::diffusion::schedule::BetaSchedule;
use crate::diffusion::{Cond, Decoder, Denoiser};
use crate::ledger::BudgetAxis;
use crate::methods::{MethodSpec, Provides};
use crate::models::ClipTokenizer;
use crate::problems::core::{weighted_mean_sd, Evaluation, Instance, Pooled, SampleDump};
use crate::problems::cross_reward::{cross_reward, Prompt, Scores};
use crate::problems::sd15::batch::resolve_batch_p;
use crate::problems::sd15::device::{device_name, reset_peak_memory};
use crate::problems::sd15::loader::SdConfig;
use crate::problems::sd15::pipeline::{encode_prompts, text_dtype, SdOptions};
use crate::problems::sd15::random::{random_var_builder, tiny_tokenizer_files};
use crate::problems::sd15::{peak_memory_bytes, SdPipeline, TextEncoder, UNet, VaeDecoder};
use crate::problems::setting::Setting;
use crate::problems::Problem;
use crate::rewards::build::image_reward_on;
use crate::rewards::random::{random_image_reward, TowerSize};
use crate::rewards::spec::RewardSpec;
use crate::rewards::weights::shared;
use crate::rewards::Reward;
use crate::samplers::run::Sampled;
use crate::{Error, Result};

/// Decoded images kept per cell for the sample panels of the report.
pub const KEEP_IMAGES: usize = 4;
/// Largest side of a kept image (decoded images are box-downscaled by an integer factor to at most this).
pub const SAMPLE_SIDE: usize = 64;
/// Outputs decoded and scored per call when evaluating.
const EVAL_CHUNK: usize = 8;

pub use super::setup::{
    open_device, sd_device, sd_dir, RandomWeights, Sd15Spec, SdDtype, SdSetup, DEVICE_ENV, SD15_ROW_SECONDS,
};

/// Whether building `spec` reads the models folder (a model reward without its own `weights:`).
fn needs_models_dir(spec: &RewardSpec) -> Option<&'static str> {
    match spec {
        RewardSpec::Aesthetic(c) if c.weights.is_none() => Some("aesthetic"),
        RewardSpec::Pickscore(c) if c.weights.is_none() => Some("pickscore"),
        RewardSpec::Hpsv2(c) if c.weights.is_none() => Some("hpsv2"),
        RewardSpec::ClipScore(c) if c.weights.is_none() => Some("clip_score"),
        RewardSpec::ImageReward(c) if c.weights.is_none() => Some("image_reward"),
        RewardSpec::WeightedSum { terms } => terms.iter().find_map(|t| needs_models_dir(&t.reward)),
        _ => None,
    }
}

/// Build a reward of the cell on `device` (a file error naming `$ALIGNBENCH_MODELS` when its weights folder is not
/// given); with `random` weights, the reward's architecture with seeded random towers (`rewards::random`; tiny
/// ones when `random` is `tiny`).
fn build_reward(
    spec: &RewardSpec,
    shape: [usize; 3],
    prompts: &[String],
    what: &str,
    device: &Device,
    random: RandomWeights,
) -> Result<Box<dyn Reward>> {
    let prefixed = |e: Error| match e {
        Error::Config(m) => Error::config(format!("{what}: {m}")),
        o => o,
    };
    let size = match random {
        RandomWeights::Off => None,
        RandomWeights::Full => Some(TowerSize::Full),
        RandomWeights::Tiny => Some(TowerSize::Tiny),
    };
    if let Some(size) = size {
        return random_image_reward(spec, shape, prompts, device, size).map_err(prefixed);
    }
    if let Some(kind) = needs_models_dir(spec) {
        if std::env::var_os("ALIGNBENCH_MODELS").is_none() {
            return Err(Error::File {
                path: "$ALIGNBENCH_MODELS".into(),
                message: format!(
                    "{what} `{kind}` needs its model files: set the env ALIGNBENCH_MODELS to the folder holding them \
                     or `weights: <DIR>` on the reward (the files and where to get them: docs/verify-rewards.md)"
                ),
            });
        }
    }
    image_reward_on(spec, shape, prompts, None, device).map_err(prefixed)
}

/// The target followed by the evaluation rewards, each with its metric label (`r_<label>`); an evaluation reward
/// equal to one before it is dropped, a different one with a taken label gets `#2`, `#3`, ….
pub fn cross_rewards(target: &RewardSpec, eval: &[RewardSpec]) -> Vec<(String, RewardSpec)> {
    let mut out: Vec<(String, RewardSpec)> = vec![(target.label(), target.clone())];
    for r in eval {
        if out.iter().any(|(_, s)| s == r) {
            continue;
        }
        let base = r.label();
        let mut label = base.clone();
        let mut k = 2;
        while out.iter().any(|(l, _)| *l == label) {
            label = format!("{base}#{k}");
            k += 1;
        }
        out.push((label, r.clone()));
    }
    out
}

impl Problem for Sd15Spec {
    fn label(&self) -> String {
        "sd15".into()
    }

    fn denoiser_label(&self, _s: &Setting) -> String {
        format!("sd15_{}_cfg{}", format!("{:?}", self.dtype).to_lowercase(), self.guidance_scale)
    }

    fn beta_schedule(&self) -> BetaSchedule {
        BetaSchedule::ScaledLinear
    }

    fn row_seconds(&self, _s: &Setting) -> [f64; 4] {
        SD15_ROW_SECONDS
    }

    fn state_dim(&self, _s: &Setting) -> usize {
        // Four latent channels of latent_size² (64 for 512² images).
        4 * self.latent_size * self.latent_size
    }

    fn wants_gpu(&self, _s: &Setting) -> bool {
        !self.device.trim().eq_ignore_ascii_case("cpu")
    }

    fn validate(&self, c: &Setting) -> Result<()> {
        if c.metrics.sir.is_some() {
            return Err(Error::config(
                "metrics.sir: the SIR reference is for `problem: { kind: mini }` (on sd15 8192 unguided images per \
             prompt are out of reach); remove it",
            ));
        }
        match &c.method {
            MethodSpec::Rl(_) | MethodSpec::Backprop(_) | MethodSpec::Oracle(_) => {
                return Err(Error::config(format!(
                    "method `{}` is available on the toy (`problem: gmm`) only",
                    c.method.name()
                )))
            }
            _ => {}
        }
        if c.budget.is_some_and(|b| b.axis == BudgetAxis::WallS) {
            return Err(Error::config(
                "budget.axis: wall_s has no measured per-row time model on sd15 (it depends on device, dtype and \
             resolution); use nfe, vjp_total or reward_calls",
            ));
        }
        // Order: missing inputs first (file errors: `reproduce` skips the experiment and names what it needs).
        let setup = SdSetup::new(self, c)?;
        let shape = setup.check_files()?;
        // Checked on the CPU at plan time (the run builds the target reward on the cell's device); random
        // towers are checked at the tiny size (the full ones take seconds to draw).
        let cpu = Device::Cpu;
        let check = if setup.random.is_off() { RandomWeights::Off } else { RandomWeights::Tiny };
        let target = build_reward(&c.reward, shape, &setup.draw.prompts, "reward", &cpu, check)?;
        for (i, r) in setup.eval_rewards.iter().enumerate() {
            build_reward(r, shape, &setup.draw.prompts, &format!("problem.eval_rewards[{i}]"), &cpu, check)?;
        }
        setup.with_device(self)?;
        if let Some(info) = crate::methods::method_info(c.method.name()) {
            let provides = Provides {
                reward_grad: target.differentiable(),
                denoiser_vjp: true,
                trainable_denoiser: false,
                exact_tilt: false,
            };
            info.needs
                .check(c.method.name(), provides)
                .map_err(|e| Error::config(format!("{e} (reward: `{}`, {})", c.reward.kind(), target.name())))?;
        }
        Ok(())
    }

    fn instance<'a>(&'a self, s: &'a Setting, _cache: Option<&Path>) -> Result<Box<dyn Instance + 'a>> {
        let setup = SdSetup::new(self, s)?.with_device(self)?;
        let mut pipe = match setup.random_config() {
            Some(cfg) => random_pipeline(&cfg, &setup.opts, &setup.draw.prompts)?,
            None => SdPipeline::load(Some(&setup.dir), &setup.opts, &setup.draw.prompts)?,
        };
        // The target reward is on the gradient path of every step: its towers run on the SD device.
        let dev = &setup.opts.device;
        let reward = build_reward(&s.reward, pipe.image_shape, &pipe.prompts, "reward", dev, setup.random)?;
        let o = &setup.opts;
        let arch =
            format!("{:?}:{:?}:{:?}:{}:{}", pipe.config.unet, o.dtype, setup.random, o.latent_size, o.guidance_scale);
        let batch_p = resolve_batch_p(setup.batch, &mut pipe, reward.as_ref(), &arch)?;
        let labels: Vec<usize> = (0..pipe.prompts.len()).collect();
        Ok(Box::new(SdInstance { s, setup, pipe, reward, labels, sample_s: Default::default(), batch_p }))
    }
}

/// Box-downscale a `[c, h, w]` image by the smallest integer factor that brings both sides to at most `max_side`
/// (trailing rows/columns that do not fill a box are dropped), rounded to 1/100. Returns the image and its sides.
pub fn downscale(img: &[f32], shape: [usize; 3], max_side: usize) -> (Vec<f32>, usize, usize) {
    let [c, h, w] = shape;
    let f = h.max(w).div_ceil(max_side.max(1)).max(1);
    let (oh, ow) = (h / f, w / f);
    let mut out = Vec::with_capacity(c * oh * ow);
    for ch in 0..c {
        for i in 0..oh {
            for j in 0..ow {
                let mut s = 0f32;
                for di in 0..f {
                    let row = ch * h * w + (i * f + di) * w + j * f;
                    s += img[row..row + f].iter().sum::<f32>();
                }
                out.push((s / (f * f) as f32 * 100.0).round() / 100.0);
            }
        }
    }
    (out, oh, ow)
}

/// An `sd15` cell's models: the pipeline (UNet with CFG, VAE decoder) on its device and the target reward.
struct SdInstance<'a> {
    s: &'a Setting,
    setup: SdSetup,
    pipe: SdPipeline,
    reward: Box<dyn Reward>,
    labels: Vec<usize>,
    /// Seconds [`Instance::sample`] took.
    sample_s: std::sync::Mutex<f64>,
    /// The micro-batch size used and how it was chosen (`problem.batch_p`).
    batch_p: String,
}

impl Instance for SdInstance<'_> {
    fn denoiser(&self) -> &dyn Denoiser {
        &self.pipe.denoiser
    }

    fn decoder(&self) -> &dyn Decoder {
        &self.pipe.decoder
    }

    fn reward(&self) -> &dyn Reward {
        self.reward.as_ref()
    }

    fn labels(&self) -> &[usize] {
        &self.labels
    }

    fn sample(&self, run: &(dyn Fn() -> Result<Sampled> + Sync)) -> Result<Sampled> {
        let timed = || {
            let t0 = std::time::Instant::now();
            let out = run();
            *self.sample_s.lock().unwrap_or_else(|e| e.into_inner()) = t0.elapsed().as_secs_f64();
            out
        };
        if self.setup.opts.device.is_cpu() {
            return timed();
        }
        // On a GPU, one chunk of groups at a time and one cell at a time: concurrent UNet graphs (the runner's
        // parallel chunks, the plan's parallel cells) would multiply device memory, not speed.
        static GPU: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_cell = GPU.lock().unwrap_or_else(|e| e.into_inner());
        // The cell's own peak (cells run one at a time on a GPU; the models stay loaded).
        reset_peak_memory();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| Error::config(format!("sd: cannot build the sampling thread: {e}")))?;
        pool.install(timed)
    }

    fn evaluate(&self, sampled: &Sampled, m: &mut BTreeMap<String, f64>) -> Result<Evaluation> {
        let (spec, setup, pipe, labels) = (self.s, &self.setup, &self.pipe, &self.labels);
        let shape = pipe.image_shape;
        let n_prompts = pipe.prompts.len();

        // Outputs in group order (each group counting equally); group g is conditioned on prompt `g % n_prompts`.
        let d = pipe.denoiser.latent_shape().iter().product::<usize>();
        let pooled = Pooled::new(sampled, d);
        let (z, rewards) = (&pooled.x, &pooled.rewards);
        let keep = pooled.finite_rows();
        let wk: Vec<f64> = keep.iter().map(|&i| pooled.w[i]).collect();
        m.insert("non_finite_frac".into(), pooled.non_finite_frac);
        m.insert("n_prompts".into(), n_prompts as f64);
        let sample_s = *self.sample_s.lock().unwrap_or_else(|e| e.into_inner());
        m.insert("sample_s".into(), sample_s);
        m.insert("s_per_image".into(), sample_s / spec.groups.max(1) as f64);
        m.insert("rows_per_eval".into(), pipe.denoiser.rows_per_eval() as f64);
        if let Some(b) = peak_memory_bytes(&setup.opts.device) {
            m.insert("peak_mem_gb".into(), b as f64 / 1e9);
        }
        if !setup.random.is_off() {
            // Cost figures only: random towers' scores are not rewards.
            m.insert("random_weights".into(), 1.0);
            let mut params = BTreeMap::new();
            params.insert("random_weights".into(), format!("{:?}", setup.random).to_lowercase());
            params.insert("sd_dtype".into(), format!("{:?}", setup.opts.dtype).to_lowercase());
            params.insert("sd_device".into(), crate::problems::sd15::device_name(&setup.opts.device));
            params.insert("batch_p".into(), self.batch_p.clone());
            return Ok(Evaluation { samples: SampleDump::default(), prompts: vec![], params, view: None });
        }
        let n = keep.len();
        let mut samples = SampleDump::default();
        let mut prompt_rows = Vec::new();
        if n > 0 {
            let rk: Vec<f64> = keep.iter().map(|&i| rewards[i]).collect();
            m.insert("reward_mean".into(), weighted_mean_sd(&rk, &wk).0);
            // The cross-reward row: the target (re-scored on the decoded outputs) and every evaluation reward.
            let evals = cross_rewards(&spec.reward, &setup.eval_rewards);
            let models: Vec<Box<dyn Reward>> = evals
                .iter()
                .enumerate()
                .map(|(i, (_, r))| {
                    let what = if i == 0 { "reward" } else { "problem.eval_rewards" };
                    build_reward(r, shape, &pipe.prompts, what, &setup.opts.device, setup.random)
                })
                .collect::<Result<_>>()?;
            let mut scores: Vec<Vec<f64>> = vec![Vec::with_capacity(n); evals.len()];
            let img_d: usize = shape.iter().product();
            let mut y = Vec::new();
            for rows in keep.chunks(EVAL_CHUNK) {
                let zc: Vec<f32> = rows.iter().flat_map(|&i| z[i * d..(i + 1) * d].iter().copied()).collect();
                pipe.decoder.decode(&zc, &mut y)?;
                let cond = Cond::Labels(rows.iter().map(|&i| labels[pooled.group[i] % n_prompts]).collect());
                for (r, s) in models.iter().zip(scores.iter_mut()) {
                    let mut out = vec![0f64; rows.len()];
                    r.score(&y, &cond, &mut out)?;
                    s.extend(out);
                }
                for img in y.chunks_exact(img_d) {
                    if samples.x.len() / samples.d.max(1) >= KEEP_IMAGES.min(spec.metrics.keep_samples) {
                        break;
                    }
                    let (small, oh, ow) = downscale(img, shape, SAMPLE_SIDE);
                    samples.d = shape[0] * oh * ow;
                    m.insert("sample_side".into(), oh as f64);
                    samples.x.extend(small);
                }
            }
            // The target comes first in `evals`; prompt slot i of the draw is manifest prompt `draw.indices[i]`.
            let scores: Vec<Scores> = evals
                .iter()
                .zip(scores)
                .enumerate()
                .map(|(i, ((label, _), values))| Scores { label: label.clone(), guide: i == 0, values })
                .collect();
            let prompts: Vec<Prompt> = setup
                .draw
                .indices
                .iter()
                .zip(&setup.draw.prompts)
                .map(|(i, t)| Prompt { id: i.to_string(), text: t.clone() })
                .collect();
            let prompt_of: Vec<usize> = keep.iter().map(|&i| pooled.group[i] % n_prompts).collect();
            prompt_rows = cross_reward(&scores, &wk, &prompt_of, &prompts, m);
        } else {
            m.insert("reward_mean".into(), f64::NEG_INFINITY);
        }
        let mut params = BTreeMap::new();
        let dr = &setup.draw;
        params.insert(
            "prompt_manifest".into(),
            format!("{} v{} ({})", dr.manifest_id, dr.version, setup.manifest.source),
        );
        params.insert("prompt_sha256".into(), dr.sha256.clone());
        params.insert("prompt_indices".into(), dr.indices.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "));
        for f in &pipe.files {
            params.insert(format!("sha256:{}", f.file), f.sha256.clone());
        }
        params.insert("sd_dtype".into(), format!("{:?}", setup.opts.dtype).to_lowercase());
        params.insert("sd_device".into(), crate::problems::sd15::device_name(&setup.opts.device));
        params.insert("batch_p".into(), self.batch_p.clone());
        Ok(Evaluation { samples, prompts: prompt_rows, params, view: None })
    }
}

/// Seed of the weights of `problem.random_weights` (any seed costs the same).
pub const RANDOM_WEIGHTS_SEED: u64 = 0x5D15;

/// A pipeline of `config` with seeded random weights ([`RANDOM_WEIGHTS_SEED`]) for `problem.random_weights`:
/// UNet, VAE and text encoder are built once per process, architecture, dtype and device, and shared by every
/// cell. Prompts are tokenised with the byte-level tokenizer of the tiny test model (ids below every CLIP
/// vocabulary size; the text encoder runs once per prompt, so this does not change the cost of a step).
pub fn random_pipeline(config: &SdConfig, opts: &SdOptions, prompts: &[String]) -> Result<SdPipeline> {
    let (dtype, device) = (opts.dtype, &opts.device);
    let key = |c: &str, dt: DType| format!("sd-random:{c}:{:?}:{dt:?}:{}", config.unet, device_name(device));
    let seed = RANDOM_WEIGHTS_SEED;
    let unet = shared(&key("unet", dtype), || UNet::load(random_var_builder(seed, dtype, device, None), &config.unet))?;
    let vae =
        shared(&key("vae", dtype), || VaeDecoder::load(random_var_builder(seed, dtype, device, None), &config.vae))?;
    let tdt = text_dtype(dtype);
    let text =
        shared(&key("text", tdt), || TextEncoder::load(random_var_builder(seed, tdt, device, None), &config.text))?;
    let (vocab, merges) = tiny_tokenizer_files();
    let tok = ClipTokenizer::from_strs(&vocab, &merges)?.with_context_length(config.text.context_length)?;
    let emb = encode_prompts(&text, &tok, prompts)?;
    SdPipeline::assemble(unet, vae, &emb, opts, prompts, vec![], config.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewards::jpeg::JpegConfig;

    #[test]
    fn downscale_box_averages_and_rounds() {
        let img: Vec<f32> = (0..3 * 4 * 4).map(|i| (i % 2) as f32).collect();
        let (s, h, w) = downscale(&img, [3, 4, 4], 2);
        assert_eq!((h, w, s.len()), (2, 2, 12));
        assert!(s.iter().all(|&v| (v - 0.5).abs() < 1e-6));
        let (same, h, _) = downscale(&img, [3, 4, 4], 64);
        assert_eq!((h, same), (4, img));
    }

    #[test]
    fn cross_reward_labels_are_unique_and_the_target_comes_first() {
        let jpeg = |q| RewardSpec::JpegCompressibility(JpegConfig { quality: q });
        let l = cross_rewards(&RewardSpec::Brightness {}, &[jpeg(95), RewardSpec::Brightness {}, jpeg(50)]);
        let labels: Vec<&str> = l.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(labels, ["brightness", "jpeg_compressibility", "jpeg_compressibility#2"]);
    }
}
