//! The problem seam. A [`Problem`] is a problem's typed spec (its `problem:` entry): it labels its cells, checks
//! them at plan time and builds an [`Instance`] — the cell's denoiser, decoder, reward and prompt conditioning,
//! fine-tuned first when the method asks — which evaluates the sampled outputs into metrics, the samples kept for
//! figures, the per-prompt rows and the data of the report's own figures. The executor (`experiment::runner`) owns
//! the loop, the ledger and the store (argmin's Problem/Executor split); nothing outside `problems/` names a problem.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use super::cross_reward::PromptRow;
pub use super::setting::Setting;
use crate::diffusion::schedule::BetaSchedule;
use crate::diffusion::{Decoder, Denoiser};
use crate::finetune::backprop::BackpropSettings;
use crate::finetune::TrainStats;
use crate::numerics::{sha256_hex, write_atomic};
use crate::rewards::Reward;
use crate::samplers::run::Sampled;
use crate::{Error, Result};

/// A data distribution with its models.
pub trait Problem: Send + Sync {
    /// Short label of the `problem` column (`gmm1`, `mini-0_1`, `sd15`).
    fn label(&self) -> String;
    /// Label of the `denoiser` column of a cell.
    fn denoiser_label(&self, s: &Setting) -> String;
    /// β schedule of the problem's diffusion model.
    fn beta_schedule(&self) -> BetaSchedule;
    /// Declared seconds per row of (denoiser forward, denoiser VJP including its forward, reward VJP, reward
    /// forward): the time model of the `wall_s` budget axis (NaN where none is measured).
    fn row_seconds(&self, s: &Setting) -> [f64; 4];
    /// Numbers per particle of the sampler's state (the toy's d, the latent size): the plan's memory estimate.
    fn state_dim(&self, s: &Setting) -> usize;
    /// Whether the cell runs on a GPU (cluster jobs then ask the scheduler for one per task).
    fn wants_gpu(&self, _s: &Setting) -> bool {
        false
    }
    /// Plan-time checks of a cell: the problem's own settings, the reward, what the method needs.
    fn validate(&self, s: &Setting) -> Result<()>;
    /// Build the cell's models (fine-tuning them first when the method asks; `cache` holds fine-tuned weights).
    fn instance<'a>(&'a self, s: &'a Setting, cache: Option<&Path>) -> Result<Box<dyn Instance + 'a>>;
}

/// A cell's models, ready to sample, and the evaluation of what they sampled.
pub trait Instance: Sync {
    /// ε-prediction network the sampler uses.
    fn denoiser(&self) -> &dyn Denoiser;
    /// Latent → reward input.
    fn decoder(&self) -> &dyn Decoder;
    /// The reward aligned to.
    fn reward(&self) -> &dyn Reward;
    /// Prompt label of each group (group g gets `labels[g % len]`; empty = unconditional).
    fn labels(&self) -> &[usize] {
        &[]
    }
    /// Run the sampling (`run`) under the problem's constraints (e.g. one cell at a time on a GPU).
    fn sample(&self, run: &(dyn Fn() -> Result<Sampled> + Sync)) -> Result<Sampled> {
        run()
    }
    /// What the fine-tuning did, when the method trained the denoiser.
    fn training(&self) -> Option<&TrainStats> {
        None
    }
    /// Metrics of the sampled outputs, added to `m`, and what the cell file keeps besides.
    fn evaluate(&self, sampled: &Sampled, m: &mut BTreeMap<String, f64>) -> Result<Evaluation>;
}

/// What a cell keeps besides its metrics.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// A subset of the outputs, for figures.
    pub samples: SampleDump,
    /// Per-prompt cross-reward rows (image problems).
    pub prompts: Vec<PromptRow>,
    /// Parameters identifying the cell besides the plan's (e.g. SD file digests, the prompt draw).
    pub params: BTreeMap<String, String>,
    /// Data of a report figure shared by cells (e.g. the toy's exact target density): its key and document.
    pub view: Option<(String, serde_json::Value)>,
}

/// Samples kept for figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleDump {
    /// Dimension.
    pub d: usize,
    /// Row-major samples (a non-finite coordinate is written as `null` and read back as NaN).
    #[serde(deserialize_with = "nan_vec")]
    pub x: Vec<f32>,
}

fn nan_vec<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<f32>, D::Error> {
    Ok(Vec::<Option<f32>>::deserialize(d)?.into_iter().map(|v| v.unwrap_or(f32::NAN)).collect())
}

/// Every output of a cell pooled in group order, each group counting equally.
#[derive(Clone, Debug)]
pub struct Pooled {
    /// Output samples, row-major `[rows, d]`.
    pub x: Vec<f32>,
    /// Weight of each row: its group-normalised weight divided by the number of groups (sums to 1).
    pub w: Vec<f64>,
    /// The sampler's reward of each row.
    pub rewards: Vec<f64>,
    /// Group index of each row.
    pub group: Vec<usize>,
    /// Whether every coordinate of the row is finite (a diverged chain is not).
    pub finite: Vec<bool>,
    /// Weight of the non-finite rows.
    pub non_finite_frac: f64,
}

impl Pooled {
    /// Pool the outputs of `sampled` (rows of length `d`).
    pub fn new(sampled: &Sampled, d: usize) -> Self {
        let g = sampled.outputs.len() as f64;
        let (mut x, mut w, mut rewards, mut group) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (gi, o) in sampled.outputs.iter().enumerate() {
            x.extend_from_slice(&o.samples);
            w.extend(o.weights.iter().map(|v| v / g));
            rewards.extend_from_slice(&o.rewards);
            group.extend(std::iter::repeat_n(gi, o.weights.len()));
        }
        let finite: Vec<bool> = x.chunks_exact(d.max(1)).map(|r| r.iter().all(|v| v.is_finite())).collect();
        let wsum: f64 = w.iter().sum();
        // `+ 0.0` turns the −0.0 of an empty float sum into 0.
        let non_finite_frac = finite.iter().zip(&w).filter(|(f, _)| !**f).map(|(_, wi)| wi).sum::<f64>() / wsum + 0.0;
        Pooled { x, w, rewards, group, finite, non_finite_frac }
    }

    /// Indices of the finite rows.
    pub fn finite_rows(&self) -> Vec<usize> {
        (0..self.finite.len()).filter(|&i| self.finite[i]).collect()
    }
}

pub use crate::numerics::weighted_mean_sd;

/// The document a fine-tuning run's cache key hashes: everything the training depends on — the method's resolved
/// settings `method`, problem, reward, α, chain (steps, η, grid), seed, the pretrained weights' sha256 and the crate
/// version.
/// `problem` is the problem's spec as written in the cell (`{ kind: …, … }`).
pub fn training_key(
    problem: serde_json::Value,
    spec: &Setting,
    method: serde_json::Value,
    pretrained_sha256: &str,
) -> serde_json::Value {
    serde_json::json!({
        "method": method,
        "problem": problem,
        "reward": serde_json::to_value(&spec.reward).expect("json"),
        "alpha": spec.alpha, "steps": spec.steps, "eta": spec.eta, "grid": serde_json::to_value(spec.grid).expect("json"),
        "seed": spec.seed, "pretrained_sha256": pretrained_sha256, "crate_version": env!("CARGO_PKG_VERSION"),
    })
}

/// The resolved `backprop` settings of a cell as the method's key value (`method: backprop` plus every setting).
pub fn backprop_key(settings: &BackpropSettings) -> serde_json::Value {
    let mut v = serde_json::to_value(settings).expect("json");
    v["method"] = serde_json::Value::from("backprop");
    v
}

/// Fine-tuned weights cached under `cache` (a results folder's `weights/`) as `<method>-<key>.safetensors` plus a
/// manifest `<method>-<key>.json` (the key document, the training stats and the weights' sha256), keyed by the
/// sha256 of `key_doc`: a cached run is loaded, otherwise `train` runs and its result is saved.
pub fn cached_training<T>(
    cache: Option<&Path>,
    method: &str,
    key_doc: &serde_json::Value,
    load: impl Fn(&Path) -> Result<T>,
    save: impl Fn(&T, &Path) -> Result<()>,
    train: impl FnOnce() -> Result<(T, TrainStats)>,
) -> Result<(T, TrainStats)> {
    let key = sha256_hex(&serde_json::to_vec(key_doc).expect("json"));
    let stem = format!("{method}-{}", &key[..16]);
    if let Some(dir) = cache {
        let (w, m) = (dir.join(format!("{stem}.safetensors")), dir.join(format!("{stem}.json")));
        if w.exists() && m.exists() {
            let text = std::fs::read_to_string(&m).map_err(|e| Error::file(&m, e.to_string()))?;
            let doc: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::file(&m, format!("corrupt manifest ({e}); delete it to retrain")))?;
            let stats: TrainStats = serde_json::from_value(doc["stats"].clone())
                .map_err(|e| Error::file(&m, format!("corrupt manifest ({e}); delete it to retrain")))?;
            return Ok((load(&w)?, stats));
        }
    }
    let (model, stats) = train()?;
    if let Some(dir) = cache {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create folder: {e}")))?;
        let w = dir.join(format!("{stem}.safetensors"));
        save(&model, &w)?;
        let doc =
            serde_json::json!({ "key": key_doc, "stats": stats, "weights_sha256": sha256_hex(&std::fs::read(&w)?) });
        write_atomic(&dir.join(format!("{stem}.json")), serde_json::to_string_pretty(&doc).expect("json").as_bytes())?;
    }
    Ok((model, stats))
}
