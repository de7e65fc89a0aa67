//! The trained FMNIST-align artifacts (mini-benchmark.md §9): `manifest.json` and the six safetensors files it
//! describes, loaded with sha256 verification.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::data::{DatasetInfo, SplitCounts};
use super::models::{Autoencoder, ClassifierA, ClassifierB, EpsMlp, StyleHead};
use crate::numerics::sha256_hex;
use crate::{Error, Result};

/// Manifest file name inside the assets folder.
pub const MANIFEST: &str = "manifest.json";
/// Default assets folder (relative to the repository root).
pub const DEFAULT_DIR: &str = "assets/mini";
/// How to produce the artifacts: appended to "missing" errors.
pub const TRAIN_HINT: &str =
    "train the FMNIST-align models with `alignbench train mini` (needs the Fashion-MNIST data: `apt-get install dataset-fashion-mnist`)";

/// The artifact files, in training order.
pub const FILES: [&str; 6] = [
    "ae.safetensors",
    "ddpm.safetensors",
    "clf_a.safetensors",
    "clf_b.safetensors",
    "style_a.safetensors",
    "style_b.safetensors",
];

/// The default assets folder: `assets/mini` under the working directory if it exists, else under the crate root.
pub fn default_dir() -> PathBuf {
    let local = PathBuf::from(DEFAULT_DIR);
    if local.exists() {
        local
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_DIR)
    }
}

/// One artifact's record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// sha256 of the file.
    pub sha256: String,
    /// Scalars stored (buffers included).
    pub parameters: usize,
    /// The resolved training configuration of the stage.
    pub config: serde_json::Value,
    /// Hash of (stage config, data selection, seed, input artifacts): a stage is skipped when it matches.
    pub config_hash: String,
    /// Root seed.
    pub seed: u64,
    /// Threads used by the tensor backend.
    pub threads: usize,
    /// Training wall time in seconds.
    pub wall_s: f64,
    /// Final metrics (test reconstruction MSE, accuracies, R², …).
    pub metrics: BTreeMap<String, f64>,
    /// sha256 of the artifacts this one was trained from.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
}

/// `manifest.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// Crate version and git commit of the training binary.
    pub code_version: String,
    /// Dataset files and hashes.
    pub dataset: DatasetInfo,
    /// Split sizes and class counts.
    pub splits: SplitCounts,
    /// Per artifact file name.
    pub files: BTreeMap<String, FileEntry>,
    /// Keys added by later stages of the project (σ_r per task, chosen CFG scale, …), kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Manifest {
    /// Read `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join(MANIFEST);
        let text =
            std::fs::read_to_string(&p).map_err(|e| Error::file(&p, format!("cannot read ({e}); {TRAIN_HINT}")))?;
        serde_json::from_str(&text).map_err(|e| Error::file(&p, format!("not a valid manifest: {e}; {TRAIN_HINT}")))
    }

    /// Write `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::config(format!("manifest: {e}")))?;
        write_atomic(&dir.join(MANIFEST), text.as_bytes())
    }
}

use crate::numerics::write_atomic;

/// An opened assets folder: the manifest plus verified loading of each file.
#[derive(Clone, Debug)]
pub struct MiniAssets {
    /// The folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl MiniAssets {
    /// Open `dir` (default [`default_dir`]) and read its manifest.
    pub fn open(dir: Option<&Path>) -> Result<Self> {
        let dir = dir.map(Path::to_path_buf).unwrap_or_else(default_dir);
        Ok(MiniAssets { manifest: Manifest::read(&dir)?, dir })
    }

    /// The named tensors of `file` (one of [`FILES`]) after checking its sha256 against the manifest, as `dtype`.
    pub fn tensors(&self, file: &str, dtype: DType, dev: &Device) -> Result<HashMap<String, Tensor>> {
        let p = self.dir.join(file);
        let entry = self
            .manifest
            .files
            .get(file)
            .ok_or_else(|| Error::file(&p, format!("not listed in {MANIFEST}; {TRAIN_HINT}")))?;
        let bytes = std::fs::read(&p).map_err(|e| Error::file(&p, format!("cannot read ({e}); {TRAIN_HINT}")))?;
        let sha = sha256_hex(&bytes);
        if sha != entry.sha256 {
            return Err(Error::file(
                &p,
                format!(
                    "sha256 {sha} differs from {MANIFEST} ({}): stale or corrupt; {TRAIN_HINT} --fresh",
                    entry.sha256
                ),
            ));
        }
        let t = candle_core::safetensors::load_buffer(&bytes, dev)
            .map_err(|e| Error::file(&p, format!("not a valid safetensors file: {e}")))?;
        t.into_iter().map(|(k, v)| Ok((k, v.to_dtype(dtype)?))).collect()
    }

    fn vb(&self, file: &str, dtype: DType, dev: &Device) -> Result<VarBuilder<'static>> {
        Ok(VarBuilder::from_tensors(self.tensors(file, dtype, dev)?, dtype, dev))
    }

    fn named<M>(&self, file: &str, r: Result<M>) -> Result<M> {
        r.map_err(|e| Error::file(self.dir.join(file), format!("does not match the model: {e}; {TRAIN_HINT} --fresh")))
    }

    /// The autoencoder (`ae.safetensors`).
    pub fn autoencoder(&self, dtype: DType, dev: &Device) -> Result<Autoencoder> {
        let f = FILES[0];
        self.named(f, Autoencoder::new(self.vb(f, dtype, dev)?))
    }
    /// The EMA ε-MLP (`ddpm.safetensors`).
    pub fn eps_mlp(&self, dtype: DType, dev: &Device) -> Result<EpsMlp> {
        let f = FILES[1];
        self.named(f, EpsMlp::new(self.vb(f, dtype, dev)?))
    }
    /// Classifier A (`clf_a.safetensors`).
    pub fn classifier_a(&self, dtype: DType, dev: &Device) -> Result<ClassifierA> {
        let f = FILES[2];
        self.named(f, ClassifierA::new(self.vb(f, dtype, dev)?))
    }
    /// Classifier B (`clf_b.safetensors`).
    pub fn classifier_b(&self, dtype: DType, dev: &Device) -> Result<ClassifierB> {
        let f = FILES[3];
        self.named(f, ClassifierB::new(self.vb(f, dtype, dev)?))
    }
    /// Style head A (on classifier A's features, `style_a.safetensors`).
    pub fn style_a(&self, dtype: DType, dev: &Device) -> Result<StyleHead> {
        let f = FILES[4];
        self.named(f, StyleHead::new(self.vb(f, dtype, dev)?))
    }
    /// Style head B (on classifier B's features, `style_b.safetensors`).
    pub fn style_b(&self, dtype: DType, dev: &Device) -> Result<StyleHead> {
        let f = FILES[5];
        self.named(f, StyleHead::new(self.vb(f, dtype, dev)?))
    }
}
