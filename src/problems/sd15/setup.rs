//! The `sd15` problem's spec ([`Sd15Spec`]) and its resolution without loading a model: the diffusers folder (with the download command when it is
//! missing), the device (`--device` / `problem.device`), the prompt manifest and its seeded draw, the pipeline
//! options, and a cheap check that every file the pipeline reads is there.

use std::path::{Path, PathBuf};

use candle_core::Device;

use serde::{Deserialize, Serialize};

use super::batch::{BatchP, CPU_BATCH_P};
use super::loader::{sd15_pin, Component, MERGES_TXT, SD15_DIR_NAME, SD15_REPO, SD15_REVISION, VOCAB_JSON};
use super::{parse_device, Pins, PromptDraw, PromptManifest, SdConfig, SdFolder, SdOptions};
use crate::problems::setting::Setting;
use crate::rewards::spec::RewardSpec;
use crate::rng::Streams;
use crate::{Error, Result};

/// `problem: { kind: sd15, … }` — Stable Diffusion 1.5 (methods.md §0.3, §16): the diffusers folder's UNet with
/// classifier-free guidance, its VAE decoder and image rewards; group g is conditioned on prompt `g % n_prompts` of
/// a seeded draw from the `prompts` manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sd15Spec {
    /// Diffusers folder (default `<ALIGNBENCH_MODELS>/stable-diffusion-v1-5`).
    #[serde(default)]
    pub path: Option<String>,
    /// Precision of the UNet and VAE.
    #[serde(default)]
    pub dtype: SdDtype,
    /// `cpu`, `cuda`, `cuda:N`, or `auto` (the first GPU when the build has CUDA and one is present, else cpu).
    #[serde(default = "cpu")]
    pub device: String,
    /// Classifier-free guidance scale w (SD preset 5.0).
    #[serde(default = "sd_cfg")]
    pub guidance_scale: f64,
    /// Prompt manifest: a built-in name (`eval_simple_animals`, `simple_animals`, optionally `builtin:<name>`) or
    /// a file path (`crate::problems::sd15::PromptManifest`).
    #[serde(default = "eval_animals")]
    pub prompts: String,
    /// Prompts drawn without replacement from the manifest (seeded by the cell seed); default: the manifest's
    /// size, at most `groups`.
    #[serde(default)]
    pub n_prompts: Option<usize>,
    /// Micro-batch size in samples (memory only; results do not depend on it): a number, or `auto` (default) —
    /// measured from free memory on a GPU, 2 on the CPU ([`super::batch`]).
    #[serde(default)]
    pub batch_p: BatchP,
    /// Latent side h = w (64 ⇒ 512 × 512 images for SD 1.5).
    #[serde(default = "sixty_four")]
    pub latent_size: usize,
    /// Check the files against the SD 1.5 pins (size + sha256); `false` for fine-tunes and test models
    /// (existence only; digests are still recorded).
    #[serde(default = "yes")]
    pub pinned: bool,
    /// Rewards evaluated on every output besides the target (the cross-reward matrix row, metrics `r_<label>`).
    #[serde(default)]
    pub eval_rewards: Vec<RewardSpec>,
    /// Seeded random weights instead of the diffusers folder and the reward checkpoints, for cost figures only
    /// (the weights' values do not change the cost): `true` = the full-size SD 1.5 UNet, VAE and text encoder
    /// and the reward's full-size towers, `tiny` = the test-size ones. The cell then reports the ledger, seconds
    /// per image and peak memory — never reward numbers (`alignbench cost` sets it).
    #[serde(default, skip_serializing_if = "RandomWeights::is_off")]
    pub random_weights: RandomWeights,
}

/// `problem.random_weights` of an `sd15` problem (see [`Sd15Spec::random_weights`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RandomWeights {
    /// The real weights (default).
    #[default]
    Off,
    /// Full-size SD 1.5 and reward towers with seeded random weights (`true`).
    Full,
    /// The tiny test architectures with seeded random weights (`tiny`): seconds on a CPU, for tests.
    Tiny,
}

impl RandomWeights {
    /// Whether real weights are used.
    pub fn is_off(&self) -> bool {
        *self == RandomWeights::Off
    }
}

impl Serialize for RandomWeights {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            RandomWeights::Off => s.serialize_bool(false),
            RandomWeights::Full => s.serialize_bool(true),
            RandomWeights::Tiny => s.serialize_str("tiny"),
        }
    }
}

impl<'de> Deserialize<'de> for RandomWeights {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Flag(bool),
            Name(String),
        }
        match Repr::deserialize(d) {
            Ok(Repr::Flag(false)) => Ok(RandomWeights::Off),
            Ok(Repr::Flag(true)) => Ok(RandomWeights::Full),
            Ok(Repr::Name(n)) if n == "tiny" => Ok(RandomWeights::Tiny),
            _ => Err(serde::de::Error::custom(
                "random_weights: expected `true` (full-size random weights), `false` or `tiny`",
            )),
        }
    }
}

/// Precision of the Stable Diffusion UNet and VAE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SdDtype {
    /// 32-bit floats (CPU and GPU).
    #[default]
    F32,
    /// IEEE half precision (the reference's fp16 autocast).
    F16,
    /// bfloat16 (GPU only: candle's CPU matmul has no bf16 kernel).
    Bf16,
}

impl SdDtype {
    /// The candle dtype.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            SdDtype::F32 => candle_core::DType::F32,
            SdDtype::F16 => candle_core::DType::F16,
            SdDtype::Bf16 => candle_core::DType::BF16,
        }
    }
}

/// Stable Diffusion 1.5 has no measured per-row time model yet (it depends on device, dtype and resolution), so
/// the `wall_s` budget axis is undefined there (NaN) and validation refuses it; use `nfe`, `vjp_total` or
/// `reward_calls`.
pub const SD15_ROW_SECONDS: [f64; 4] = [f64::NAN; 4];

fn cpu() -> String {
    "cpu".into()
}
fn sd_cfg() -> f64 {
    5.0
}
fn eval_animals() -> String {
    "eval_simple_animals".into()
}
fn sixty_four() -> usize {
    64
}
fn yes() -> bool {
    true
}

/// The resolved settings of an `sd15` problem.
#[derive(Clone, Debug)]
pub struct SdSetup {
    /// The diffusers folder.
    pub dir: PathBuf,
    /// Pipeline options (dtype, device, guidance, micro-batch, latent size, pins).
    pub opts: SdOptions,
    /// The prompt manifest.
    pub manifest: PromptManifest,
    /// The seeded draw (row label i ↔ `draw.prompts[i]`).
    pub draw: PromptDraw,
    /// Rewards of the cross-reward row besides the target.
    pub eval_rewards: Vec<RewardSpec>,
    /// Random weights instead of files (cost figures only).
    pub random: RandomWeights,
    /// `problem.batch_p` as written (`opts.batch_p` holds the CPU value of `auto` until the cell resolves it).
    pub batch: BatchP,
}

/// The diffusers folder of a problem: `path`, else `<ALIGNBENCH_MODELS>/stable-diffusion-v1-5` (a file error naming
/// that path when the env is unset).
pub fn sd_dir(path: &Option<String>) -> Result<PathBuf> {
    if let Some(p) = path {
        return Ok(PathBuf::from(p));
    }
    match std::env::var_os("ALIGNBENCH_MODELS") {
        Some(m) => Ok(PathBuf::from(m).join(SD15_DIR_NAME)),
        None => Err(Error::File {
            path: format!("$ALIGNBENCH_MODELS/{SD15_DIR_NAME}"),
            message: format!(
                "no Stable Diffusion folder: set `problem.path: <DIR>` or the env ALIGNBENCH_MODELS to the folder \
                 holding `{SD15_DIR_NAME}/`, and download the diffusers layout of {SD15_REPO} into it: {}",
                download_command(&format!("$ALIGNBENCH_MODELS/{SD15_DIR_NAME}"))
            ),
        }),
    }
}

fn download_command(dir: &str) -> String {
    format!(
        "`huggingface-cli download {SD15_REPO} {} {} {} {VOCAB_JSON} {MERGES_TXT} unet/config.json vae/config.json \
         text_encoder/config.json --revision {SD15_REVISION} --local-dir {dir}`",
        Component::Unet.path(crate::problems::sd15::Variant::Fp32),
        Component::Vae.path(crate::problems::sd15::Variant::Fp32),
        Component::TextEncoder.path(crate::problems::sd15::Variant::Fp32),
    )
}

/// Environment variable overriding `problem.device` of every sd15 cell (set by `alignbench --device`).
pub const DEVICE_ENV: &str = "ALIGNBENCH_DEVICE";

/// `cpu`, `cuda[:N]`, or `auto` (the first GPU when this build has CUDA and one is present, else the CPU).
pub fn open_device(spec: &str) -> Result<Device> {
    if spec.trim().eq_ignore_ascii_case("auto") {
        return Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu));
    }
    parse_device(spec)
}

/// [`open_device`] for `problem.device` (errors name the key).
pub fn sd_device(spec: &str) -> Result<Device> {
    open_device(spec).map_err(|e| Error::config(format!("problem.device: {e}")))
}

/// A manifest by built-in name (bare or `builtin:<name>`) or file path.
fn manifest(spec: &str) -> Result<PromptManifest> {
    if !spec.starts_with("builtin:") && !Path::new(spec).exists() && PromptManifest::builtin(spec).is_ok() {
        return PromptManifest::builtin(spec);
    }
    PromptManifest::resolve(spec).map_err(|e| match e {
        Error::Config(m) => Error::config(format!("problem.prompts: {m}")),
        o => o,
    })
}

impl SdSetup {
    /// Resolve the problem of `c` (no model is loaded; the folder is not checked).
    pub fn new(spec: &Sd15Spec, c: &Setting) -> Result<Self> {
        let Sd15Spec {
            path,
            dtype,
            device: _,
            guidance_scale,
            prompts,
            n_prompts,
            batch_p,
            latent_size,
            pinned,
            eval_rewards,
            random_weights,
        } = spec;
        // Random weights read no folder (a given path is not used).
        let dir = if random_weights.is_off() { sd_dir(path)? } else { PathBuf::new() };
        if !guidance_scale.is_finite() || *guidance_scale < 0.0 {
            return Err(Error::config(format!(
                "problem.guidance_scale: must be a finite number ≥ 0 (got {guidance_scale}; SD preset 5.0)"
            )));
        }
        if *latent_size == 0 {
            return Err(Error::config("problem.latent_size: must be at least 1 (64 for 512 × 512 images)"));
        }
        let manifest = manifest(prompts)?;
        let n = n_prompts.unwrap_or_else(|| manifest.len().min(c.groups));
        if n == 0 {
            return Err(Error::config("problem.n_prompts: must be at least 1"));
        }
        let draw = manifest.draw(n, &Streams::new(c.seed)).map_err(|e| match e {
            Error::Config(m) => Error::config(format!("problem.n_prompts: {m}")),
            o => o,
        })?;
        let opts = SdOptions {
            dtype: dtype.dtype(),
            device: Device::Cpu,
            guidance_scale: *guidance_scale,
            batch_p: match batch_p {
                BatchP::Fixed(n) => *n,
                BatchP::Auto => CPU_BATCH_P,
            },
            latent_size: *latent_size,
            variant: None,
            pins: if *pinned { Pins::Sd15 } else { Pins::Unpinned },
            clamp: Default::default(),
        };
        if !random_weights.is_off() && !eval_rewards.is_empty() {
            return Err(Error::config(
                "problem.eval_rewards: random_weights reports cost only (ledger, seconds per image, peak memory), \
                 never reward numbers; remove eval_rewards or set random_weights: false",
            ));
        }
        let random = *random_weights;
        let setup = SdSetup { dir, opts, manifest, draw, eval_rewards: eval_rewards.clone(), random, batch: *batch_p };
        Ok(setup)
    }

    /// The device (opened here: `cuda` needs the GPU): env [`DEVICE_ENV`] (`--device`) when set, else
    /// `problem.device`.
    pub fn with_device(mut self, spec: &Sd15Spec) -> Result<Self> {
        let Sd15Spec { device, dtype, .. } = spec;
        self.opts.device = match std::env::var(DEVICE_ENV) {
            Ok(d) if !d.trim().is_empty() => {
                open_device(&d).map_err(|e| Error::config(format!("{DEVICE_ENV} / --device: {e}")))?
            }
            _ => sd_device(device)?,
        };
        if *dtype == SdDtype::Bf16 && self.opts.device.is_cpu() {
            return Err(Error::config(
                "problem.dtype: bf16 needs a GPU (candle's CPU matmul has no bf16 kernel); use f32 or f16 on cpu",
            ));
        }
        Ok(self)
    }

    /// Check that the folder and every file the pipeline reads exist (cheap: no hashing, no loading); a missing
    /// one is a file error naming it and how to get it. Returns the image shape `[3, H, W]` of one output.
    pub fn check_files(&self) -> Result<[usize; 3]> {
        if let Some(cfg) = self.random_config() {
            return Ok(image_shape(&cfg, self.opts.latent_size));
        }
        let folder = SdFolder::locate(Some(&self.dir), self.opts.pins)?;
        let mut missing = Vec::new();
        let comps = [Component::Unet, Component::Vae, Component::TextEncoder];
        let mut rels: Vec<&str> =
            comps.iter().map(|&c| folder.resolve(c, self.opts.variant, self.opts.dtype)).collect::<Result<_>>()?;
        rels.extend([VOCAB_JSON, MERGES_TXT]);
        for rel in rels {
            if !self.dir.join(rel).is_file() {
                missing.push(rel);
            }
        }
        if let Some(first) = missing.first() {
            let how = match sd15_pin(first) {
                Some(_) => download_command(&self.dir.display().to_string()),
                None => "re-save the model with diffusers `save_pretrained`".into(),
            };
            return Err(Error::file(
                self.dir.join(first),
                format!(
                    "Stable Diffusion folder {} lacks {}; download them: {how}",
                    self.dir.display(),
                    missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok(image_shape(&folder.config()?, self.opts.latent_size))
    }

    /// The architecture of random weights (`None` for real ones): SD 1.5's, or the tiny test model's.
    pub fn random_config(&self) -> Option<SdConfig> {
        match self.random {
            RandomWeights::Off => None,
            RandomWeights::Full => Some(SdConfig::sd15()),
            RandomWeights::Tiny => Some(super::tiny_config()),
        }
    }
}

/// `[3, H, W]` of one decoded image of `cfg` at latent side `latent_size`.
fn image_shape(cfg: &SdConfig, latent_size: usize) -> [usize; 3] {
    let f = cfg.vae.upsample_factor();
    [cfg.vae.out_channels, f * latent_size, f * latent_size]
}
