//! The configuration of `alignbench train mini` (defaults = mini-benchmark.md §3; YAML `experiments/mini/train.yaml`)
//! and its stages.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::problems::mini::assets::FILES;
use crate::problems::mini::data::SIDE;
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

pub(super) fn is_zero(v: &f64) -> bool {
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
    pub(super) fn inputs(self, cfg: &MiniTrainConfig) -> Vec<&'static str> {
        match self {
            Stage::Ddpm => vec![FILES[0]],
            Stage::ClfA if cfg.clf_a.recon > 0.0 => vec![FILES[0]],
            Stage::ClfB if cfg.clf_b.recon > 0.0 => vec![FILES[0]],
            Stage::Style => vec![FILES[2], FILES[3]],
            _ => vec![],
        }
    }
    /// Stream group base of the stage.
    pub(super) fn group(self) -> u64 {
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

pub(super) type Output = (&'static str, HashMap<String, Tensor>, BTreeMap<String, f64>);
