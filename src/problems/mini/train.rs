//! Training of the FMNIST-align models (mini-benchmark.md §3, §8, §9): `alignbench train mini`.
//!
//! Stages `ae` → `ddpm` (on the autoencoder's latents), `clf_a`, `clf_b`, `style` (ridge heads on the classifiers'
//! features). Each stage is resumable: it is skipped when its output exists, its sha256 matches `manifest.json` and
//! the manifest records the same configuration hash (stage config, data selection, seed and the sha256 of the
//! artifacts it was trained from) — unless `fresh`. The manifest is rewritten after every stage.
//!
//! Determinism: every random number (initialisation, data order, reparameterisation and diffusion noise,
//! timesteps, label dropout, shifts, dropout masks, rater noise) comes from a named seeded stream
//! `(seed, train, group, step)` with one group range per stage; the same binary and thread count reproduce the
//! weights bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, VarBuilder, VarMap};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::assets::{FileEntry, Manifest, MiniAssets, FILES};
use super::data::{FashionMnist, Splits, Subset, PIXELS, SIDE};
use super::models::{
    count_params, init_model, log_softmax, normalize_features, Autoencoder, Classifier, ClassifierA, ClassifierB,
    EpsMlp, LATENT, NULL_CLASS,
};
use crate::diffusion::schedule::{BetaSchedule, T_TRAIN};
use crate::numerics::{r_squared, sha256_hex};
use crate::rng::{fill_normal, Purpose, Streams};
use crate::{Error, Result};

/// Configuration of `alignbench train mini` (defaults = spec §3; YAML `experiments/mini/train.yaml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MiniTrainConfig {
    /// Format version (1).
    pub version: u32,
    /// Root seed of every training stream.
    pub seed: u64,
    /// Which images are used.
    pub data: DataConfig,
    /// Autoencoder (§3.1).
    pub ae: AeConfig,
    /// Latent DDPM (§3.2).
    pub ddpm: DdpmConfig,
    /// Classifier A (§3.3).
    pub clf_a: ClfConfig,
    /// Classifier B (§3.3).
    pub clf_b: ClfConfig,
    /// Style heads (§3.3).
    pub style: StyleConfig,
}

impl Default for MiniTrainConfig {
    fn default() -> Self {
        MiniTrainConfig {
            version: 1,
            seed: 0,
            data: DataConfig::default(),
            ae: AeConfig::default(),
            ddpm: DdpmConfig::default(),
            clf_a: ClfConfig {
                epochs: 10,
                batch: 128,
                lr: 1e-3,
                lr_min: 1e-3,
                shift: 0,
                dropout: 0.0,
                recon: 0.0,
                ema: 0.0,
            },
            clf_b: ClfConfig {
                epochs: 24,
                batch: 128,
                lr: 1e-3,
                lr_min: 1e-5,
                shift: 1,
                dropout: 0.3,
                recon: 0.6,
                ema: 0.999,
            },
            style: StyleConfig::default(),
        }
    }
}

/// Data selection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Use only the first `n_train` training images (all 60,000 when absent). P, A, B are built from them.
    pub n_train: Option<usize>,
    /// Use only the first `n_test` test images for the final metrics (all 10,000 when absent).
    pub n_test: Option<usize>,
}

/// Autoencoder training (Adam, cosine decay, β-weighted KL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AeConfig {
    /// Epochs over P.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine decay.
    pub lr_min: f64,
    /// β_KL.
    pub beta_kl: f64,
}

impl Default for AeConfig {
    fn default() -> Self {
        AeConfig { epochs: 24, batch: 256, lr: 1e-3, lr_min: 0.0, beta_kl: 0.05 }
    }
}

/// Latent DDPM training (scaled-linear β, ε-prediction, AdamW with warm-up + cosine, clipping, EMA).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdpmConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Batch size.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine decay.
    pub lr_min: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// EMA decay (the saved weights are the EMA).
    pub ema: f64,
    /// Probability of replacing a label by ∅ (classifier-free guidance training).
    pub label_dropout: f64,
    /// Test latents used for the final held-out ε-MSE.
    pub eval_rows: usize,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        DdpmConfig {
            steps: 12_000,
            batch: 256,
            lr: 1e-3,
            lr_min: 1e-5,
            warmup: 500,
            weight_decay: 0.0,
            grad_clip: 1.0,
            ema: 0.999,
            label_dropout: 0.1,
            eval_rows: 10_000,
        }
    }
}

/// Classifier training (Adam with cosine decay, cross-entropy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClfConfig {
    /// Epochs over the split.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// Final learning rate of a cosine decay (= `lr` for a constant rate).
    pub lr_min: f64,
    /// Random shifts of ±`shift` pixels (zero fill) as augmentation.
    pub shift: usize,
    /// Dropout probability on φ (classifier B only).
    pub dropout: f64,
    /// Probability that a training image is replaced by its autoencoder reconstruction D(E(x)) before augmentation
    /// (needs `ae.safetensors`). Classifier B uses 0.6: its rewards and φ_B features score decoded samples, and a B
    /// that never saw the decoder's blur read reconstructions of E at 0.773 accuracy — a declared deviation from the
    /// spec (B trained on real B images only; see [`DEVIATIONS`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recon: f64,
    /// Decay of an exponential moving average of the weights, updated after every step; the saved weights are the
    /// average (0 = off: the last iterate is saved).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ema: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// The gold attribute behind the style labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    /// Mean pixel intensity ("ink").
    Ink,
    /// Pixel standard deviation.
    Contrast,
    /// Left-right symmetry: −mean |x − mirror(x)|.
    Symmetry,
    /// Fraction of pixels > 0.5.
    Bright,
}

impl Attribute {
    /// g(x) of one image (784 pixels in [0, 1]).
    pub fn value(self, x: &[f32]) -> f64 {
        let n = x.len() as f64;
        match self {
            Attribute::Ink => x.iter().map(|&v| v as f64).sum::<f64>() / n,
            Attribute::Contrast => {
                let m = x.iter().map(|&v| v as f64).sum::<f64>() / n;
                (x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n).sqrt()
            }
            Attribute::Symmetry => {
                let mut s = 0.0;
                for r in 0..SIDE {
                    for c in 0..SIDE {
                        s += (x[r * SIDE + c] - x[r * SIDE + SIDE - 1 - c]).abs() as f64;
                    }
                }
                -s / n
            }
            Attribute::Bright => x.iter().filter(|&&v| v > 0.5).count() as f64 / n,
        }
    }
}

/// Style-head fitting (ridge regression on normalised features).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StyleConfig {
    /// Labelled images per side (A_r, B_r = first `n_labels` of A, B).
    pub n_labels: usize,
    /// Standard deviation of the rater noise added to the z-scored gold attribute.
    pub label_noise: f64,
    /// λ of the ridge objective (1/n)‖Φ̂w + b − y‖² + λ‖w‖².
    pub ridge: f64,
    /// The gold attribute.
    pub attribute: Attribute,
}

impl Default for StyleConfig {
    fn default() -> Self {
        StyleConfig { n_labels: 5000, label_noise: 0.3, ridge: 1e-2, attribute: Attribute::Ink }
    }
}

impl MiniTrainConfig {
    /// Parse a YAML configuration file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let c: Self = yaml_serde::from_str(&text).map_err(|e| Error::file(path, format!("invalid config: {e}")))?;
        c.validate().map_err(|e| Error::file(path, e.to_string()))?;
        Ok(c)
    }

    /// Check ranges once.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::config(format!("mini training config: {m}")));
        if self.version != 1 {
            return bad("`version` must be 1");
        }
        if self.ae.batch == 0 || self.ddpm.batch == 0 || self.clf_a.batch == 0 || self.clf_b.batch == 0 {
            return bad("batch sizes must be > 0");
        }
        if !(0.0..1.0).contains(&self.clf_a.dropout) || !(0.0..1.0).contains(&self.clf_b.dropout) {
            return bad("`dropout` must be in [0, 1)");
        }
        if !(0.0..=1.0).contains(&self.clf_a.recon) || !(0.0..=1.0).contains(&self.clf_b.recon) {
            return bad("`recon` must be in [0, 1]");
        }
        if !(0.0..1.0).contains(&self.clf_a.ema) || !(0.0..1.0).contains(&self.clf_b.ema) {
            return bad("`clf_a.ema` and `clf_b.ema` must be in [0, 1)");
        }
        if !(0.0..=1.0).contains(&self.ddpm.label_dropout) || !(0.0..1.0).contains(&self.ddpm.ema) {
            return bad("`ddpm.label_dropout` must be in [0, 1] and `ddpm.ema` in [0, 1)");
        }
        if self.style.n_labels < 2 || !(self.style.ridge >= 0.0) || !(self.style.label_noise >= 0.0) {
            return bad("`style.n_labels` ≥ 2, `style.ridge` ≥ 0 and `style.label_noise` ≥ 0 are required");
        }
        if self.data.n_train.is_some_and(|n| n < 4) || self.data.n_test.is_some_and(|n| n < 1) {
            return bad("`data.n_train` ≥ 4 and `data.n_test` ≥ 1 are required");
        }
        Ok(())
    }
}

/// A training stage (`--stage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Stage {
    /// Autoencoder → `ae.safetensors`.
    Ae,
    /// Latent DDPM → `ddpm.safetensors`.
    Ddpm,
    /// Classifier A → `clf_a.safetensors`.
    ClfA,
    /// Classifier B → `clf_b.safetensors`.
    ClfB,
    /// Style heads → `style_a.safetensors`, `style_b.safetensors`.
    Style,
    /// Every stage in order.
    All,
}

impl Stage {
    /// The stages this selection runs, in order.
    pub fn expand(self) -> Vec<Stage> {
        match self {
            Stage::All => vec![Stage::Ae, Stage::Ddpm, Stage::ClfA, Stage::ClfB, Stage::Style],
            s => vec![s],
        }
    }
    /// Output files.
    pub fn files(self) -> Vec<&'static str> {
        match self {
            Stage::Ae => vec![FILES[0]],
            Stage::Ddpm => vec![FILES[1]],
            Stage::ClfA => vec![FILES[2]],
            Stage::ClfB => vec![FILES[3]],
            Stage::Style => vec![FILES[4], FILES[5]],
            Stage::All => FILES.to_vec(),
        }
    }
    /// Input artifacts.
    fn inputs(self, cfg: &MiniTrainConfig) -> Vec<&'static str> {
        match self {
            Stage::Ddpm => vec![FILES[0]],
            Stage::ClfA if cfg.clf_a.recon > 0.0 => vec![FILES[0]],
            Stage::ClfB if cfg.clf_b.recon > 0.0 => vec![FILES[0]],
            Stage::Style => vec![FILES[2], FILES[3]],
            _ => vec![],
        }
    }
    /// Stream group base of the stage.
    fn group(self) -> u64 {
        match self {
            Stage::Ae => 100,
            Stage::Ddpm => 200,
            Stage::ClfA => 300,
            Stage::ClfB => 400,
            Stage::Style => 500,
            Stage::All => 0,
        }
    }
    /// Name used in messages and hashes.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Ae => "ae",
            Stage::Ddpm => "ddpm",
            Stage::ClfA => "clf_a",
            Stage::ClfB => "clf_b",
            Stage::Style => "style",
            Stage::All => "all",
        }
    }
}

/// Options of one training run.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Output folder (`assets/mini`).
    pub out: PathBuf,
    /// Which stage(s).
    pub stage: Stage,
    /// Retrain even when the output is up to date.
    pub fresh: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Independent stages trained at the same time (≥ 1; each on its own thread).
    pub jobs: usize,
}

/// What happened to one stage.
#[derive(Clone, Debug, PartialEq)]
pub struct StageReport {
    /// The stage.
    pub stage: Stage,
    /// Whether it was skipped as up to date.
    pub skipped: bool,
    /// Wall time of the training (as recorded in the manifest when skipped).
    pub wall_s: f64,
    /// Final metrics per output file.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Train the selected stages into `opts.out`, updating `manifest.json` after each.
///
/// Stages run in waves: a stage joins the current wave unless it reads a file that a stage of the wave writes, so
/// with the defaults the waves are `ae`, then `ddpm`, `clf_a`, `clf_b` (up to `opts.jobs` of them at once), then
/// `style`. Every stage draws from its own seeded streams, so the weights do not depend on `jobs`; a stage that
/// finishes is saved and recorded in the manifest at once (an interrupted wave keeps its finished stages).
pub fn train(data: &FashionMnist, cfg: &MiniTrainConfig, opts: &TrainOptions) -> Result<Vec<StageReport>> {
    cfg.validate()?;
    let splits = Splits::new(data, cfg.data.n_train, cfg.data.n_test, cfg.style.n_labels);
    let mut manifest = Manifest::read(&opts.out).unwrap_or_default();
    manifest.version = 1;
    manifest.code_version = code_version();
    manifest.dataset = data.info.clone();
    manifest.splits = splits.counts(data);
    let bars = indicatif::MultiProgress::new();
    let state = std::sync::Mutex::new((manifest, Vec::new()));
    for wave in waves(&opts.stage.expand(), cfg) {
        // Up-to-date check against the manifest as the earlier waves left it.
        let mut todo = Vec::new();
        {
            let (manifest, reports) = &mut *state.lock().expect("training state");
            for stage in wave {
                let mut inputs = BTreeMap::new();
                for f in stage.inputs(cfg) {
                    let p = opts.out.join(f);
                    let bytes = std::fs::read(&p).map_err(|e| {
                        Error::file(
                            &p,
                            format!("stage `{}` needs it ({e}); train it first (`--stage all`)", stage.name()),
                        )
                    })?;
                    inputs.insert(f.to_string(), sha256_hex(&bytes));
                }
                let stage_cfg = stage_config(cfg, stage);
                let hash = config_hash(stage, &stage_cfg, cfg, &inputs);
                let up_to_date = !opts.fresh
                    && stage.files().iter().all(|f| {
                        manifest.files.get(*f).is_some_and(|e| {
                            e.config_hash == hash
                                && std::fs::read(opts.out.join(f)).is_ok_and(|b| sha256_hex(&b) == e.sha256)
                        })
                    });
                if up_to_date {
                    let e = &manifest.files[stage.files()[0]];
                    reports.push(StageReport {
                        stage,
                        skipped: true,
                        wall_s: e.wall_s,
                        metrics: stage
                            .files()
                            .iter()
                            .map(|f| (f.to_string(), manifest.files[*f].metrics.clone()))
                            .collect(),
                    });
                } else {
                    todo.push((stage, stage_cfg, hash, inputs));
                }
            }
        }
        if todo.is_empty() {
            continue;
        }
        let before = state.lock().expect("training state").0.clone();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let errors = std::sync::Mutex::new(Vec::new());
        let run_one =
            |(stage, stage_cfg, hash, inputs): &(Stage, serde_json::Value, String, BTreeMap<String, String>)| {
                let t0 = Instant::now();
                let ctx = Ctx {
                    data,
                    splits: &splits,
                    cfg,
                    opts,
                    streams: Streams::new(cfg.seed),
                    manifest: &before,
                    stage: *stage,
                    bars: &bars,
                };
                let outputs = match stage {
                    Stage::Ae => vec![train_ae(&ctx)?],
                    Stage::Ddpm => vec![train_ddpm(&ctx)?],
                    Stage::ClfA => vec![train_classifier(&ctx, false)?],
                    Stage::ClfB => vec![train_classifier(&ctx, true)?],
                    Stage::Style => fit_style(&ctx)?,
                    Stage::All => unreachable!("expanded above"),
                };
                let wall_s = t0.elapsed().as_secs_f64();
                let mut entries = Vec::new();
                for (file, tensors, m) in outputs {
                    let path = opts.out.join(file);
                    save_tensors(&tensors, &path)?;
                    let bytes =
                        std::fs::read(&path).map_err(|e| Error::file(&path, format!("cannot read back: {e}")))?;
                    let entry = FileEntry {
                        sha256: sha256_hex(&bytes),
                        parameters: count_params(&tensors),
                        config: stage_cfg.clone(),
                        config_hash: hash.clone(),
                        seed: cfg.seed,
                        threads: candle_core::utils::get_num_threads(),
                        wall_s,
                        metrics: m,
                        inputs: inputs.clone(),
                    };
                    entries.push((file, entry));
                }
                let (manifest, reports) = &mut *state.lock().expect("training state");
                let metrics = entries.iter().map(|(f, e)| (f.to_string(), e.metrics.clone())).collect();
                for (f, e) in entries {
                    manifest.files.insert(f.to_string(), e);
                }
                manifest.write(&opts.out)?;
                reports.push(StageReport { stage: *stage, skipped: false, wall_s, metrics });
                Ok::<(), Error>(())
            };
        std::thread::scope(|s| {
            for _ in 0..opts.jobs.clamp(1, todo.len()) {
                s.spawn(|| loop {
                    // After a failure, stages not yet started are not started.
                    if !errors.lock().expect("training errors").is_empty() {
                        break;
                    }
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(job) = todo.get(i) else { break };
                    if let Err(e) = run_one(job) {
                        errors.lock().expect("training errors").push(e);
                    }
                });
            }
        });
        if let Some(e) = errors.into_inner().expect("training errors").into_iter().next() {
            return Err(e);
        }
    }
    let (mut manifest, mut reports) = state.into_inner().expect("training state");
    reports.sort_by_key(|r: &StageReport| r.stage.group());
    manifest.extra.insert("deviations".into(), serde_json::json!(DEVIATIONS));
    manifest.write(&opts.out)?;
    Ok(reports)
}

/// Split stages (in order) into waves whose members do not read each other's outputs.
fn waves(stages: &[Stage], cfg: &MiniTrainConfig) -> Vec<Vec<Stage>> {
    let mut out: Vec<Vec<Stage>> = Vec::new();
    for &s in stages {
        let reads_wave =
            out.last().is_some_and(|w| w.iter().any(|o| o.files().iter().any(|f| s.inputs(cfg).contains(f))));
        match out.last_mut() {
            Some(w) if !reads_wave => w.push(s),
            _ => out.push(vec![s]),
        }
    }
    out
}

/// Where the shipped configuration (`experiments/mini/train.yaml`, the defaults) departs from mini-benchmark.md, and
/// the measurement that made it necessary; written into `manifest.json` (`deviations`).
pub const DEVIATIONS: &[&str] = &[
    "ae: 24 epochs instead of 12: test reconstruction MSE 0.0123 → 0.0102, and classifier B (trained on the \
     12-epoch AE's reconstructions) read the sharper reconstructions at 0.861 instead of 0.850 (check: ≥ 0.85); \
     lr 2e-3 with β_KL 0.02 gave MSE 0.0094 but CFG samples at w = 1 scored 0.838 with the same B (check: ≥ 0.85)",
    "clf_b: random shifts ±1 px instead of ±2 and more epochs (spec 8): measured test accuracy 0.874 (±2 px, 8 \
     epochs), 0.878 (±1 px, 8 epochs), 0.864 (±2 px, cosine decay), all below the 0.89 check",
    "clf_b: each training row is replaced by its autoencoder reconstruction D(E(x)) with probability `recon` = 0.6, \
     24 epochs with cosine decay to 1e-5, saved as the EMA (0.999) of the iterates: B scores decoded samples, and a B \
     trained on real images only read AE reconstructions of the test set at 0.773 accuracy (check: ≥ 0.85); measured \
     on the 12-epoch AE: recon 0.5 / 12 epochs constant lr 0.884 / 0.842 (clean / reconstructions), 0.5 / 20 epochs \
     cosine 0.890 / 0.847, 0.6 / 24 epochs cosine 0.890 / 0.850; on the lr 2e-3 AE with the EMA 0.892 / 0.866",
    "ddpm: CFG scale w = 1 (the pilot's rule, the smallest w with B accuracy ≥ 0.85 on CFG samples of all ten \
     classes; the spec expected 2–4). At w = 1.5 the unguided per-class φ_B diversity was 0.63 of the real images' \
     (check: ∈ [0.8, 1.2]; AE reconstructions keep 0.86–1.10, tripling DDPM training moved it by 0.015)",
    "kid_x1000: φ_B divided by the reference set's RMS entry before the cubic kernel (raw ReLU features make xᵀy/128 ≫ 1 \
     and the kernel norm-dominated)",
];

/// `alignbench <version> (<git commit>)`.
pub fn code_version() -> String {
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown commit".into());
    format!("alignbench {} ({git})", env!("CARGO_PKG_VERSION"))
}

/// The resolved configuration recorded for a stage (its own section plus the data selection and seed).
fn stage_config(cfg: &MiniTrainConfig, stage: Stage) -> serde_json::Value {
    let section = match stage {
        Stage::Ae => serde_json::to_value(&cfg.ae),
        Stage::Ddpm => serde_json::to_value(&cfg.ddpm),
        Stage::ClfA => serde_json::to_value(&cfg.clf_a),
        Stage::ClfB => serde_json::to_value(&cfg.clf_b),
        Stage::Style => serde_json::to_value(&cfg.style),
        Stage::All => serde_json::to_value(cfg),
    }
    .expect("config serialises");
    let data = serde_json::to_value(&cfg.data).expect("config serialises");
    serde_json::json!({ "stage": stage.name(), "version": cfg.version, "seed": cfg.seed, "data": data, stage.name(): section })
}

fn config_hash(
    stage: Stage,
    stage_cfg: &serde_json::Value,
    cfg: &MiniTrainConfig,
    inputs: &BTreeMap<String, String>,
) -> String {
    let v = serde_json::json!({ "stage": stage.name(), "config": stage_cfg, "seed": cfg.seed, "inputs": inputs });
    sha256_hex(v.to_string().as_bytes())[..16].to_string()
}

fn save_tensors(t: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| Error::file(p, format!("cannot create folder: {e}")))?;
    }
    candle_core::safetensors::save(t, &tmp).map_err(|e| Error::file(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, format!("cannot rename into place: {e}")))?;
    Ok(())
}

type Output = (&'static str, HashMap<String, Tensor>, BTreeMap<String, f64>);

struct Ctx<'a> {
    data: &'a FashionMnist,
    splits: &'a Splits,
    cfg: &'a MiniTrainConfig,
    opts: &'a TrainOptions,
    streams: Streams,
    manifest: &'a Manifest,
    stage: Stage,
    bars: &'a indicatif::MultiProgress,
}

/// Stream sub-groups of a stage.
const INIT: u64 = 0;
const ORDER: u64 = 1;
const NOISE: u64 = 2;
const AUG: u64 = 3;
const RECON: u64 = 4;
const EVAL: u64 = 5;

impl Ctx<'_> {
    fn rng(&self, sub: u64, step: u64) -> rand_chacha::ChaCha8Rng {
        self.streams.rng(Purpose::Train, self.stage.group() + sub, step)
    }
    fn bar(&self, len: u64) -> indicatif::ProgressBar {
        if !self.opts.progress {
            return indicatif::ProgressBar::hidden();
        }
        let b = self.bars.add(indicatif::ProgressBar::new(len));
        b.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "train mini {:<5} [{{bar:32}}] {{pos}}/{{len}} {{msg}} ETA {{eta}}",
                self.stage.name()
            ))
            .expect("template"),
        );
        b
    }
    /// A frozen copy (constant tensors) of a trained var map.
    fn frozen(&self, t: &HashMap<String, Tensor>) -> VarBuilder<'static> {
        VarBuilder::from_tensors(t.clone(), DType::F32, &Device::Cpu)
    }
    /// Assets saved by earlier stages (verified).
    fn assets(&self) -> MiniAssets {
        MiniAssets { dir: self.opts.out.clone(), manifest: self.manifest.clone() }
    }
}

/// Seeded Fisher–Yates permutation of 0..n.
fn permutation(n: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        p.swap(i, j);
    }
    p
}

/// Cosine decay from `lr` to `lr_min` over `total` steps after `warmup` linear warm-up steps.
pub fn lr_at(step: usize, total: usize, warmup: usize, lr: f64, lr_min: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let u = ((step - warmup) as f64 / span as f64).min(1.0);
    lr_min + 0.5 * (lr - lr_min) * (1.0 + (std::f64::consts::PI * u).cos())
}

fn vars_sorted(vm: &VarMap) -> Result<Vec<(String, Var)>> {
    let d = vm.data().lock().map_err(|_| Error::config("varmap lock poisoned"))?;
    let mut v: Vec<(String, Var)> = d.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

fn snapshot(vm: &VarMap) -> Result<HashMap<String, Tensor>> {
    // Deep copies: later optimiser steps must not change a snapshot.
    vars_sorted(vm)?.into_iter().map(|(k, v)| Ok((k, v.as_tensor().copy()?.detach()))).collect()
}

/// Exponential moving average of a model's variables (name order), the weights a stage saves when its decay is > 0.
struct Ema {
    decay: f64,
    avg: Vec<Tensor>,
}

impl Ema {
    fn new(vars: &[(String, Var)], decay: f64) -> Result<Self> {
        let avg = vars.iter().map(|(_, v)| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
        Ok(Ema { decay, avg })
    }

    /// avg ← decay·avg + (1 − decay)·v after an optimiser step.
    fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        for (e, (_, v)) in self.avg.iter_mut().zip(vars) {
            // Detached: an EMA built from variables would keep the op graph of every past step alive.
            *e = ((&*e * self.decay)? + (v.as_tensor().detach() * (1.0 - self.decay))?)?.detach();
        }
        Ok(())
    }

    /// The averaged weights under the variables' names.
    fn tensors(self, vars: &[(String, Var)]) -> HashMap<String, Tensor> {
        vars.iter().map(|(k, _)| k.clone()).zip(self.avg).collect()
    }
}

fn adam(vm: &VarMap, lr: f64, weight_decay: f64) -> Result<AdamW> {
    crate::nn::adam(vars_sorted(vm)?.into_iter().map(|(_, v)| v).collect(), lr, weight_decay)
}

fn finite(stage: &'static str, step: usize, loss: f32) -> Result<f32> {
    if !loss.is_finite() {
        return Err(Error::numeric(stage, format!("training loss became {loss} at step {step}")));
    }
    Ok(loss)
}

fn rows(x: Vec<f32>, dim: usize) -> Result<Tensor> {
    let n = x.len() / dim;
    Ok(Tensor::from_vec(x, (n, dim), &Device::Cpu)?)
}

// ---------------------------------------------------------------------------------------------------------------
// Autoencoder
// ---------------------------------------------------------------------------------------------------------------

fn train_ae(ctx: &Ctx) -> Result<Output> {
    let c = &ctx.cfg.ae;
    let p = &ctx.splits.p;
    let dev = Device::Cpu;
    let (ae, vm) = init_model(ctx.cfg.seed, ctx.stage.group() + INIT, DType::F32, &dev, &[], Autoencoder::new)?;
    let per_epoch = p.len().div_ceil(c.batch);
    let total = c.epochs * per_epoch;
    let mut opt = adam(&vm, c.lr, 0.0)?;
    let bar = ctx.bar(total as u64);
    let mut step = 0;
    let mut last = f32::NAN;
    for epoch in 0..c.epochs {
        let perm = permutation(p.len(), &mut ctx.rng(ORDER, epoch as u64));
        for idx in perm.chunks(c.batch) {
            let b = idx.len();
            let x = rows(p.pixels(ctx.data, idx.iter().copied()), PIXELS)?;
            let mut noise = vec![0f32; b * LATENT];
            fill_normal(&mut ctx.rng(NOISE, step as u64), &mut noise);
            let noise = rows(noise, LATENT)?;
            let (mu, logvar) = ae.moments(&x)?;
            let z = (&mu + (logvar.clone() * 0.5)?.exp()?.mul(&noise)?)?;
            let logits = ae.decode_raw_logits(&z)?;
            // BCE(x, σ(a)) = softplus(a) − x·a, softplus(a) = relu(a) + log(1 + e^{−|a|}).
            let softplus = (logits.relu()? + ((logits.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
            let bce = (softplus - (&x * &logits)?)?.sum(1)?.mean(0)?;
            let kl = ((((mu.sqr()? + logvar.exp()?)? - logvar)? - 1.0)? * 0.5)?.sum(1)?.mean(0)?;
            let loss = (bce + (kl * c.beta_kl)?)?;
            opt.set_learning_rate(lr_at(step, total, 0, c.lr, c.lr_min));
            opt.backward_step(&loss)?;
            last = finite("mini autoencoder", step, loss.to_scalar::<f32>()?)?;
            step += 1;
            bar.inc(1);
            if step % 20 == 0 {
                bar.set_message(format!("loss {last:.2}"));
            }
        }
    }
    bar.finish_and_clear();
    // Latent standardisation over P: m = mean of μ per dimension, s = one global std of μ − m.
    let mut t = snapshot(&vm)?;
    let frozen = Autoencoder::new(ctx.frozen(&t))?;
    let mu = super::map_rows(&p.all_pixels(ctx.data), PIXELS, 2048, &|x| Ok(frozen.moments(x)?.0))?;
    let n = mu.len() / LATENT;
    let mut m = vec![0f64; LATENT];
    for r in mu.chunks(LATENT) {
        for (a, &v) in m.iter_mut().zip(r) {
            *a += v as f64 / n as f64;
        }
    }
    let var: f64 = mu.chunks(LATENT).flat_map(|r| r.iter().zip(&m).map(|(&v, &a)| (v as f64 - a).powi(2))).sum::<f64>()
        / mu.len() as f64;
    let s = var.sqrt();
    t.insert("latent_mean".into(), Tensor::from_vec(m.iter().map(|&v| v as f32).collect(), LATENT, &dev)?);
    t.insert("latent_scale".into(), Tensor::from_vec(vec![s as f32], 1, &dev)?);
    let ae = Autoencoder::new(ctx.frozen(&t))?;
    // Held-out reconstruction D(E(x)) on E.
    let e = &ctx.splits.e;
    let xe = e.all_pixels(ctx.data);
    let rec = super::map_rows(&xe, PIXELS, 2048, &|x| ae.reconstruct(x))?;
    let mse = xe.iter().zip(&rec).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / xe.len() as f64;
    let ze = super::map_rows(&xe, PIXELS, 2048, &|x| ae.encode(x))?;
    let z_std = (ze.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / ze.len() as f64).sqrt();
    let metrics = BTreeMap::from([
        ("test_recon_mse".to_string(), mse),
        ("final_train_loss".to_string(), last as f64),
        ("latent_scale".to_string(), s),
        ("test_latent_rms".to_string(), z_std),
    ]);
    Ok((FILES[0], t, metrics))
}

// ---------------------------------------------------------------------------------------------------------------
// Latent DDPM
// ---------------------------------------------------------------------------------------------------------------

/// One batch of the ε-prediction objective: x_t = √ᾱ_t z + √(1−ᾱ_t) ε, t uniform, labels dropped to ∅ with `p_drop`.
struct DiffusionBatch {
    xt: Tensor,
    eps: Tensor,
    ts: Vec<usize>,
    labels: Vec<u32>,
}

fn diffusion_batch(
    z: &[f32],
    labels: &[u32],
    idx: &[usize],
    ab: &[f64],
    p_drop: f64,
    rng: &mut impl Rng,
) -> Result<DiffusionBatch> {
    let b = idx.len();
    let mut eps = vec![0f32; b * LATENT];
    fill_normal(rng, &mut eps);
    let ts: Vec<usize> = (0..b).map(|_| rng.random_range(0..T_TRAIN)).collect();
    let labels: Vec<u32> =
        idx.iter().map(|&i| if rng.random::<f64>() < p_drop { NULL_CLASS as u32 } else { labels[i] }).collect();
    let mut xt = vec![0f32; b * LATENT];
    for (r, &i) in idx.iter().enumerate() {
        let (sa, sb) = (ab[ts[r]].sqrt() as f32, (1.0 - ab[ts[r]]).sqrt() as f32);
        for k in 0..LATENT {
            xt[r * LATENT + k] = sa * z[i * LATENT + k] + sb * eps[r * LATENT + k];
        }
    }
    Ok(DiffusionBatch { xt: rows(xt, LATENT)?, eps: rows(eps, LATENT)?, ts, labels })
}

fn train_ddpm(ctx: &Ctx) -> Result<Output> {
    let c = &ctx.cfg.ddpm;
    let dev = Device::Cpu;
    let ae = ctx.assets().autoencoder(DType::F32, &dev)?;
    let p = &ctx.splits.p;
    let z = super::map_rows(&p.all_pixels(ctx.data), PIXELS, 2048, &|x| ae.encode(x))?;
    let labels = p.all_labels(ctx.data);
    let ab = BetaSchedule::ScaledLinear.alpha_bar();
    let (net, vm) =
        init_model(ctx.cfg.seed, ctx.stage.group() + INIT, DType::F32, &dev, &EpsMlp::ZERO_INIT, EpsMlp::new)?;
    let vars = vars_sorted(&vm)?;
    let mut ema = Ema::new(&vars, c.ema)?;
    let mut opt = adam(&vm, c.lr, c.weight_decay)?;
    let bar = ctx.bar(c.steps as u64);
    let (mut perm, mut epoch, mut pos) = (Vec::new(), 0u64, usize::MAX);
    let mut recent = Vec::new();
    let mut clipped = 0usize;
    for step in 0..c.steps {
        if pos >= perm.len() {
            perm = permutation(p.len(), &mut ctx.rng(ORDER, epoch));
            epoch += 1;
            pos = 0;
        }
        let idx = &perm[pos..(pos + c.batch).min(perm.len())];
        pos += c.batch;
        let batch = diffusion_batch(&z, &labels, idx, &ab, c.label_dropout, &mut ctx.rng(NOISE, step as u64))?;
        let pred = net.forward_t(&batch.xt, &batch.ts, &batch.labels)?;
        let loss = (pred - &batch.eps)?.sqr()?.mean_all()?;
        let mut grads = loss.backward()?;
        // Global gradient-norm clipping (sum in name order: deterministic).
        let mut sq = 0f64;
        for (_, v) in &vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let norm = sq.sqrt();
        if c.grad_clip > 0.0 && norm > c.grad_clip {
            clipped += 1;
            let scale = c.grad_clip / norm;
            for (_, v) in &vars {
                if let Some(g) = grads.remove(v.as_tensor()) {
                    grads.insert(v.as_tensor(), (g * scale)?);
                }
            }
        }
        opt.set_learning_rate(lr_at(step, c.steps, c.warmup, c.lr, c.lr_min));
        opt.step(&grads)?;
        ema.update(&vars)?;
        let l = finite("mini ddpm", step, loss.to_scalar::<f32>()?)?;
        recent.push(l as f64);
        if recent.len() > 200 {
            recent.remove(0);
        }
        bar.inc(1);
        if step % 50 == 0 {
            bar.set_message(format!("loss {:.4}", recent.iter().sum::<f64>() / recent.len() as f64));
        }
    }
    bar.finish_and_clear();
    let t = ema.tensors(&vars);
    // Held-out ε-MSE of the EMA network on test latents, fixed noise and timesteps, conditional and unconditional.
    let ema_net = EpsMlp::new(ctx.frozen(&t))?;
    let e = &ctx.splits.e;
    let n_eval = c.eval_rows.min(e.len());
    let ze = super::map_rows(&e.pixels(ctx.data, 0..n_eval), PIXELS, 2048, &|x| ae.encode(x))?;
    let le = e.labels(ctx.data, 0..n_eval);
    let mut metrics = BTreeMap::new();
    for (name, p_drop) in [("test_eps_mse_cond", 0.0), ("test_eps_mse_uncond", 1.0)] {
        let idx: Vec<usize> = (0..n_eval).collect();
        let mut sum = 0.0;
        for ch in idx.chunks(2048) {
            let b = diffusion_batch(&ze, &le, ch, &ab, p_drop, &mut ctx.rng(EVAL, ch[0] as u64))?;
            let pred = ema_net.forward_t(&b.xt, &b.ts, &b.labels)?;
            sum += (pred - &b.eps)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        metrics.insert(name.to_string(), sum / (n_eval * LATENT) as f64);
    }
    metrics.insert("final_train_loss".into(), recent.iter().sum::<f64>() / recent.len().max(1) as f64);
    metrics.insert("clipped_steps".into(), clipped as f64);
    Ok((FILES[1], t, metrics))
}

// ---------------------------------------------------------------------------------------------------------------
// Classifiers
// ---------------------------------------------------------------------------------------------------------------

/// Shift a 28×28 image by (dy, dx) pixels with zero fill.
fn shift_image(x: &[f32], dy: isize, dx: isize, out: &mut [f32]) {
    let s = SIDE as isize;
    for r in 0..s {
        for c in 0..s {
            let (sr, sc) = (r - dy, c - dx);
            out[(r * s + c) as usize] =
                if (0..s).contains(&sr) && (0..s).contains(&sc) { x[(sr * s + sc) as usize] } else { 0.0 };
        }
    }
}

/// Fraction of rows whose arg-max logit equals the label.
fn accuracy(logits: &[f32], labels: &[u32]) -> f64 {
    crate::numerics::accuracy(logits, &labels.iter().map(|&l| l as usize).collect::<Vec<_>>())
}

fn train_classifier(ctx: &Ctx, is_b: bool) -> Result<Output> {
    let (c, split, file) =
        if is_b { (&ctx.cfg.clf_b, &ctx.splits.b, FILES[3]) } else { (&ctx.cfg.clf_a, &ctx.splits.a, FILES[2]) };
    let dev = Device::Cpu;
    let seed = ctx.cfg.seed;
    let group = ctx.stage.group() + INIT;
    let (model_a, model_b, vm) = if is_b {
        let (m, vm) = init_model(seed, group, DType::F32, &dev, &[], ClassifierB::new)?;
        (None, Some(m), vm)
    } else {
        let (m, vm) = init_model(seed, group, DType::F32, &dev, &[], ClassifierA::new)?;
        (Some(m), None, vm)
    };
    let total = c.epochs * split.len().div_ceil(c.batch);
    let mut opt = adam(&vm, c.lr, 0.0)?;
    let bar = ctx.bar(total as u64);
    let mut step = 0;
    let mut last = f32::NAN;
    let keep = 1.0 - c.dropout;
    let vars = vars_sorted(&vm)?;
    let mut ema = if c.ema > 0.0 { Some(Ema::new(&vars, c.ema)?) } else { None };
    // Reconstructions D(E(x)) of the whole split, when some training rows are to be replaced by them.
    let recon = if c.recon > 0.0 {
        let ae = ctx.assets().autoencoder(DType::F32, &dev)?;
        Some(super::map_rows(&split.all_pixels(ctx.data), PIXELS, 2048, &|x| ae.reconstruct(x))?)
    } else {
        None
    };
    for epoch in 0..c.epochs {
        let perm = permutation(split.len(), &mut ctx.rng(ORDER, epoch as u64));
        for idx in perm.chunks(c.batch) {
            let b = idx.len();
            let mut x = split.pixels(ctx.data, idx.iter().copied());
            if let Some(rec) = &recon {
                let mut rr = ctx.rng(RECON, step as u64);
                for (row, &i) in x.chunks_mut(PIXELS).zip(idx) {
                    if rr.random::<f64>() < c.recon {
                        row.copy_from_slice(&rec[i * PIXELS..(i + 1) * PIXELS]);
                    }
                }
            }
            let mut rng = ctx.rng(AUG, step as u64);
            if c.shift > 0 {
                let s = c.shift as i32;
                let mut tmp = vec![0f32; PIXELS];
                for r in x.chunks_mut(PIXELS) {
                    let (dy, dx) = (rng.random_range(-s..=s), rng.random_range(-s..=s));
                    shift_image(r, dy as isize, dx as isize, &mut tmp);
                    r.copy_from_slice(&tmp);
                }
            }
            let x = rows(x, PIXELS)?;
            let y = Tensor::from_vec(split.labels(ctx.data, idx.iter().copied()), b, &dev)?;
            let logits = match (&model_a, &model_b) {
                (Some(a), _) => a.logits(&x)?,
                (_, Some(m)) => {
                    let mask = if c.dropout > 0.0 {
                        let v: Vec<f32> = (0..b * super::models::FEATURES)
                            .map(|_| if rng.random::<f64>() < keep { (1.0 / keep) as f32 } else { 0.0 })
                            .collect();
                        Some(rows(v, super::models::FEATURES)?)
                    } else {
                        None
                    };
                    m.logits_train(&x, mask.as_ref())?
                }
                _ => unreachable!(),
            };
            let loss = log_softmax(&logits)?.gather(&y.unsqueeze(1)?, 1)?.mean_all()?.neg()?;
            opt.set_learning_rate(lr_at(step, total, 0, c.lr, c.lr_min));
            opt.backward_step(&loss)?;
            if let Some(e) = ema.as_mut() {
                e.update(&vars)?;
            }
            last = finite(if is_b { "mini classifier B" } else { "mini classifier A" }, step, loss.to_scalar()?)?;
            step += 1;
            bar.inc(1);
            if step % 20 == 0 {
                bar.set_message(format!("loss {last:.3}"));
            }
        }
    }
    bar.finish_and_clear();
    let t = match ema {
        Some(e) => e.tensors(&vars),
        None => snapshot(&vm)?,
    };
    let frozen: Box<dyn Classifier> =
        if is_b { Box::new(ClassifierB::new(ctx.frozen(&t))?) } else { Box::new(ClassifierA::new(ctx.frozen(&t))?) };
    let e = &ctx.splits.e;
    let logits = super::map_rows(&e.all_pixels(ctx.data), PIXELS, 1000, &|x| frozen.logits(x))?;
    let train_sub = split.head(5000);
    let train_logits = super::map_rows(&train_sub.all_pixels(ctx.data), PIXELS, 1000, &|x| frozen.logits(x))?;
    let mut metrics = BTreeMap::from([
        ("test_accuracy".to_string(), accuracy(&logits, &e.all_labels(ctx.data))),
        ("train_accuracy_first5000".to_string(), accuracy(&train_logits, &train_sub.all_labels(ctx.data))),
        ("final_train_loss".to_string(), last as f64),
    ]);
    if recon.is_some() {
        let ae = ctx.assets().autoencoder(DType::F32, &dev)?;
        let lr = super::map_rows(&e.all_pixels(ctx.data), PIXELS, 1000, &|x| frozen.logits(&ae.reconstruct(x)?))?;
        metrics.insert("test_accuracy_reconstructions".to_string(), accuracy(&lr, &e.all_labels(ctx.data)));
    }
    Ok((file, t, metrics))
}

// ---------------------------------------------------------------------------------------------------------------
// Style heads
// ---------------------------------------------------------------------------------------------------------------

/// Ridge regression with an unpenalised intercept on rows `x` `[n, d]`: minimises (1/n)‖Xw + b − y‖² + λ‖w‖².
pub fn ridge(x: &[f64], y: &[f64], d: usize, lambda: f64) -> Result<(Vec<f64>, f64)> {
    let n = y.len();
    let xm: Vec<f64> = (0..d).map(|j| (0..n).map(|i| x[i * d + j]).sum::<f64>() / n as f64).collect();
    let ym = y.iter().sum::<f64>() / n as f64;
    let mut a = vec![0f64; d * d];
    let mut rhs = vec![0f64; d];
    for i in 0..n {
        let r: Vec<f64> = (0..d).map(|j| x[i * d + j] - xm[j]).collect();
        for j in 0..d {
            rhs[j] += r[j] * (y[i] - ym) / n as f64;
            for k in 0..d {
                a[j * d + k] += r[j] * r[k] / n as f64;
            }
        }
    }
    for j in 0..d {
        a[j * d + j] += lambda.max(1e-12);
    }
    let l = crate::numerics::linalg::cholesky(&a, d)
        .ok_or_else(|| Error::numeric("mini style ridge", "normal equations are not positive definite"))?;
    let w = crate::numerics::linalg::chol_solve(&l, d, &rhs);
    let b = ym - w.iter().zip(&xm).map(|(a, b)| a * b).sum::<f64>();
    Ok((w, b))
}

fn fit_style(ctx: &Ctx) -> Result<Vec<Output>> {
    let c = &ctx.cfg.style;
    let dev = Device::Cpu;
    let assets = ctx.assets();
    let a = assets.classifier_a(DType::F32, &dev)?;
    let b = assets.classifier_b(DType::F32, &dev)?;
    let attr =
        |s: &Subset| -> Vec<f64> { s.all_pixels(ctx.data).chunks(PIXELS).map(|r| c.attribute.value(r)).collect() };
    let gp = attr(&ctx.splits.p);
    let g_mean = gp.iter().sum::<f64>() / gp.len() as f64;
    let g_std = (gp.iter().map(|g| (g - g_mean).powi(2)).sum::<f64>() / gp.len() as f64).sqrt();
    let z = |g: &[f64]| -> Vec<f64> { g.iter().map(|v| (v - g_mean) / g_std).collect() };
    let ze = z(&attr(&ctx.splits.e));
    let xe = ctx.splits.e.all_pixels(ctx.data);
    let mut out = Vec::new();
    for (k, (clf, sub, file)) in
        [(&a as &dyn Classifier, &ctx.splits.a_r, FILES[4]), (&b as &dyn Classifier, &ctx.splits.b_r, FILES[5])]
            .into_iter()
            .enumerate()
    {
        let phi_hat = |x: &[f32]| -> Result<Vec<f64>> {
            Ok(super::map_rows(x, PIXELS, 1000, &|t| normalize_features(&clf.features(t)?))?
                .iter()
                .map(|&v| v as f64)
                .collect())
        };
        let mut noise = vec![0f32; sub.len()];
        fill_normal(&mut ctx.rng(NOISE, k as u64), &mut noise);
        let y: Vec<f64> = z(&attr(sub)).iter().zip(&noise).map(|(g, e)| g + c.label_noise * *e as f64).collect();
        let fx = phi_hat(&sub.all_pixels(ctx.data))?;
        let d = super::models::FEATURES;
        let (w, bias) = ridge(&fx, &y, d, c.ridge)?;
        let predict = |f: &[f64]| -> Vec<f64> {
            f.chunks(d).map(|r| r.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + bias).collect()
        };
        let fe = phi_hat(&xe)?;
        let pe = predict(&fe);
        let pr = predict(&fx);
        let t = HashMap::from([
            ("weight".to_string(), Tensor::from_vec(w.iter().map(|&v| v as f32).collect(), d, &dev)?),
            ("bias".to_string(), Tensor::from_vec(vec![bias as f32], 1, &dev)?),
            ("gold_mean".to_string(), Tensor::from_vec(vec![g_mean as f32], 1, &dev)?),
            ("gold_std".to_string(), Tensor::from_vec(vec![g_std as f32], 1, &dev)?),
        ]);
        let pm = pe.iter().sum::<f64>() / pe.len() as f64;
        let ps = (pe.iter().map(|v| (v - pm).powi(2)).sum::<f64>() / pe.len() as f64).sqrt();
        let metrics = BTreeMap::from([
            ("test_r2_vs_gold".to_string(), r_squared(&pe, &ze)),
            ("train_r2_vs_labels".to_string(), r_squared(&pr, &y)),
            ("train_r2_vs_gold".to_string(), r_squared(&pr, &z(&attr(sub)))),
            ("test_score_mean".to_string(), pm),
            ("test_score_std".to_string(), ps),
            ("gold_mean".to_string(), g_mean),
            ("gold_std".to_string(), g_std),
        ]);
        out.push((file, t, metrics));
    }
    Ok(out)
}

/// Arguments of `alignbench train mini`.
#[derive(Clone, Debug)]
pub struct CliArgs {
    /// Configuration file (default: built-in defaults = `experiments/mini/train.yaml`).
    pub config: Option<PathBuf>,
    /// Use `experiments/mini/train-smoke.yaml` (and `results/mini-smoke` as the default output).
    pub smoke: bool,
    /// Stage(s) to train.
    pub stage: Stage,
    /// Output folder (default `assets/mini`).
    pub out: Option<PathBuf>,
    /// Folder with the Fashion-MNIST IDX gz files.
    pub data_dir: Option<PathBuf>,
    /// Retrain up-to-date stages.
    pub fresh: bool,
    /// Progress bars.
    pub progress: bool,
    /// Tensor-backend threads (default 1; see [`run_cli`]).
    pub threads: Option<usize>,
    /// Independent stages trained at the same time (default: the number of cores, at most 3).
    pub jobs: Option<usize>,
}

/// Keep freed memory in the heap instead of returning it to the kernel (glibc only).
///
/// candle allocates a fresh buffer for every tensor of every step; with glibc's defaults the large ones are
/// `mmap`ed and unmapped each time, and the page faults and page clearing of re-mapping them cost about half of a
/// classifier-B backward pass (measured: 150 → 75 ms per batch of 128). Raising the mmap threshold to its maximum
/// (32 MiB) and the trim threshold lets the heap reuse those pages. Process-wide; numbers are unaffected.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_TOP_PAD: i32 = -2;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes glibc allocator tuning parameters; called before training allocates.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
            mallopt(M_TOP_PAD, 512 << 20);
        }
    }
}

/// `alignbench train mini`: resolve the configuration and data, train, and describe what happened.
///
/// Training uses one tensor-backend thread unless `threads` says otherwise: the models are small, and on the
/// project's shared 2-core machines two contended threads were 2–4× *slower* than one (DDPM 300 steps: 35.5 s
/// with 2 threads vs 8.3 s with 1). The thread count is recorded in the manifest (same binary + same thread count
/// ⇒ same weights). Independent stages run concurrently (`jobs`, default min(cores, 3)), one thread each: on 2 cores
/// the DDPM and classifier B train side by side after the autoencoder.
pub fn run_cli(a: &CliArgs) -> Result<String> {
    // candle reads RAYON_NUM_THREADS at every matmul.
    std::env::set_var("RAYON_NUM_THREADS", a.threads.unwrap_or(1).max(1).to_string());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = match (&a.config, a.smoke) {
        (Some(p), _) => MiniTrainConfig::from_file(p)?,
        (None, true) => {
            let local = PathBuf::from("experiments/mini/train-smoke.yaml");
            MiniTrainConfig::from_file(&if local.exists() { local } else { root.join(&local) })?
        }
        (None, false) => MiniTrainConfig::default(),
    };
    let out = a.out.clone().unwrap_or_else(|| {
        if a.smoke {
            PathBuf::from("results/mini-smoke")
        } else {
            super::assets::default_dir()
        }
    });
    tune_allocator();
    let t0 = Instant::now();
    let data = FashionMnist::load(a.data_dir.as_deref())?;
    let load_s = t0.elapsed().as_secs_f64();
    let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(3)).max(1);
    let opts = TrainOptions { out: out.clone(), stage: a.stage, fresh: a.fresh, progress: a.progress, jobs };
    let reports = train(&data, &cfg, &opts)?;
    let mut s = format!(
        "train mini → {} (data {load_s:.1} s, {} tensor thread(s) per stage, up to {jobs} stage(s) at once)\n",
        out.display(),
        candle_core::utils::get_num_threads()
    );
    for r in &reports {
        let what = if r.skipped { "up to date" } else { "trained" };
        s += &format!("  {:<6} {what:<10} {:>7.1} s", r.stage.name(), r.wall_s);
        for (f, m) in &r.metrics {
            let kv: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            s += &format!("\n         {f}: {}", kv.join(", "));
        }
        s += "\n";
    }
    s += &format!("  total {:.1} s", t0.elapsed().as_secs_f64());
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_matches_the_yaml_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let full = MiniTrainConfig::from_file(&root.join("experiments/mini/train.yaml")).unwrap();
        assert_eq!(full, MiniTrainConfig::default());
        let smoke = MiniTrainConfig::from_file(&root.join("experiments/mini/train-smoke.yaml")).unwrap();
        assert_eq!(smoke.data.n_train, Some(2000));
        let e = yaml_serde::from_str::<MiniTrainConfig>("version: 1\nae: {epochs: 1, bogus: 2}\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn independent_stages_share_a_wave() {
        let cfg = MiniTrainConfig::default();
        let w = waves(&Stage::All.expand(), &cfg);
        assert_eq!(w, vec![vec![Stage::Ae], vec![Stage::Ddpm, Stage::ClfA, Stage::ClfB], vec![Stage::Style]]);
        assert_eq!(waves(&[Stage::ClfB], &cfg), vec![vec![Stage::ClfB]]);
    }

    #[test]
    fn ridge_recovers_a_linear_map_and_schedules_are_sane() {
        let d = 3;
        let x: Vec<f64> = (0..300).map(|i| ((i * 7919) % 101) as f64 / 101.0 - 0.5).collect();
        let y: Vec<f64> = x.chunks(d).map(|r| 2.0 * r[0] - r[1] + 0.5 * r[2] + 0.25).collect();
        let (w, b) = ridge(&x, &y, d, 0.0).unwrap();
        for (a, t) in w.iter().zip([2.0, -1.0, 0.5]) {
            assert!((a - t).abs() < 1e-5, "{w:?}");
        }
        assert!((b - 0.25).abs() < 1e-5);
        assert!((lr_at(0, 100, 10, 1.0, 0.0) - 0.1).abs() < 1e-12);
        assert!((lr_at(10, 100, 10, 1.0, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(100, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
        let mut out = vec![0f32; PIXELS];
        let x: Vec<f32> = (0..PIXELS).map(|i| i as f32).collect();
        shift_image(&x, 1, -2, &mut out);
        assert_eq!(out[SIDE + 3], x[5]);
        assert_eq!(out[0], 0.0);
        assert_eq!(accuracy(&[0.0, 1.0, 2.0, 0.5], &[1, 0]), 1.0);
    }

    /// The smoke configuration trained twice (on the real data when installed, else on a synthetic stand-in)
    /// gives bit-identical weights; a second run over the same folder skips every stage.
    #[test]
    fn smoke_training_is_reproducible_and_resumable() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut cfg = MiniTrainConfig::from_file(&root.join("experiments/mini/train-smoke.yaml")).unwrap();
        let data = match FashionMnist::load(None) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("Fashion-MNIST not installed, training on synthetic images instead: {e}");
                FashionMnist::synthetic(2000, 500, 1)
            }
        };
        // Keep the test quick: fewer DDPM steps than the CI smoke config.
        cfg.ddpm.steps = 60;
        cfg.ddpm.eval_rows = 500;
        cfg.data.n_test = Some(500);
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut manifests = Vec::new();
        // One stage at a time, then the independent stages concurrently: the same weights.
        for (d, jobs) in dirs.iter().zip([1, 3]) {
            let opts =
                TrainOptions { out: d.path().to_path_buf(), stage: Stage::All, fresh: false, progress: false, jobs };
            let r = train(&data, &cfg, &opts).unwrap();
            assert!(r.iter().all(|s| !s.skipped));
            manifests.push(Manifest::read(d.path()).unwrap());
        }
        for f in FILES {
            assert_eq!(manifests[0].files[f].sha256, manifests[1].files[f].sha256, "{f}");
            assert_eq!(manifests[0].files[f].config_hash, manifests[1].files[f].config_hash, "{f}");
        }
        let opts = TrainOptions {
            out: dirs[0].path().to_path_buf(),
            stage: Stage::All,
            fresh: false,
            progress: false,
            jobs: 2,
        };
        assert!(train(&data, &cfg, &opts).unwrap().iter().all(|s| s.skipped));
        // A changed DDPM config retrains the DDPM only.
        cfg.ddpm.steps = 61;
        let r = train(&data, &cfg, &opts).unwrap();
        let ran: Vec<Stage> = r.iter().filter(|s| !s.skipped).map(|s| s.stage).collect();
        assert_eq!(ran, vec![Stage::Ddpm]);
        // Every artifact loads through the verified path.
        let a = MiniAssets::open(Some(dirs[0].path())).unwrap();
        let dev = Device::Cpu;
        a.autoencoder(DType::F32, &dev).unwrap();
        a.eps_mlp(DType::F32, &dev).unwrap();
        a.classifier_a(DType::F32, &dev).unwrap();
        a.classifier_b(DType::F32, &dev).unwrap();
        a.style_a(DType::F32, &dev).unwrap();
        a.style_b(DType::F32, &dev).unwrap();
        // A corrupted file is reported with the fix.
        std::fs::write(dirs[0].path().join(FILES[2]), b"junk").unwrap();
        let e = a.classifier_a(DType::F32, &dev).unwrap_err().to_string();
        assert!(e.contains("clf_a.safetensors") && e.contains("alignbench train mini"), "{e}");
    }
}
