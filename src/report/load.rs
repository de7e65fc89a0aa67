//! Load layer of the report (criterion's model: a report is rebuilt from what the measurements stored, never by
//! measuring again). It reads the store a run wrote under `<results>/<experiment>/` — `metrics.parquet` and
//! `prompts.parquet` through polars, `cells/*.json` into [`StoredCell`] (only the fields the report needs; unknown
//! fields are ignored, so newer cell files still load), `config.yaml`, and the exact target views
//! `targets/<key>.json` ([`TargetView`]) — and nothing else: no problem is rebuilt and nothing a run computes is
//! recomputed here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Deserializer};

use super::stats::{floats, strings};
use crate::experiment::store::PROMPT_COLUMNS;
use crate::{Error, Result};

/// A number that the store may write as a string (`inf`, `-inf`, `NaN`: JSON has no non-finite numbers).
#[derive(Deserialize)]
#[serde(untagged)]
enum Num {
    F(f64),
    S(String),
}

impl Num {
    fn value<E: serde::de::Error>(self) -> std::result::Result<f64, E> {
        match self {
            Num::F(x) => Ok(x),
            Num::S(s) => s.parse::<f64>().map_err(|_| E::custom(format!("`{s}` is not a number"))),
        }
    }
}

fn number_map<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<BTreeMap<String, f64>, D::Error> {
    BTreeMap::<String, Num>::deserialize(d)?.into_iter().map(|(k, v)| Ok((k, v.value()?))).collect()
}

/// Numbers where a non-finite one is written as `null` (read back as NaN).
fn nan_vec<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// One per-step diagnostic row of a cell (`traces`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StoredTrace {
    /// Loop index.
    pub step: usize,
    /// Mean ESS before resampling, as a fraction of the particles.
    pub ess_frac: f64,
    /// Mean tempering λ.
    pub lambda: f64,
}

/// The samples a cell kept for figures.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StoredSamples {
    /// Dimension of a row (2 on the toy).
    #[serde(default)]
    pub d: usize,
    /// Row-major samples (a non-finite coordinate is NaN).
    #[serde(default, deserialize_with = "nan_vec")]
    pub x: Vec<f64>,
}

/// A cell's compute ledger (totals).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StoredLedger {
    /// Denoiser forward rows.
    #[serde(default)]
    pub nfe: u64,
    /// VJPs through the denoiser.
    #[serde(default)]
    pub vjp_denoiser: u64,
    /// VJPs through reward∘decoder only.
    #[serde(default)]
    pub vjp_reward: u64,
}

/// One (prompt, evaluation reward) entry of a cell's cross-reward matrix.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StoredPrompt {
    /// Evaluation reward label.
    pub reward: String,
    /// The prompt's kept outputs.
    pub n: usize,
}

/// The parts of a cell's resolved configuration the report reads.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StoredSpec {
    /// The guiding reward (`reward: { kind: ... }`), kept as stored.
    #[serde(default)]
    pub reward: Option<serde_json::Value>,
    /// The problem (`problem: { kind: ... }`), kept as stored.
    #[serde(default)]
    pub problem: Option<serde_json::Value>,
    /// Prompt groups of the cell.
    #[serde(default)]
    pub groups: Option<f64>,
}

/// A cell file (`cells/<id>.json`) as the report reads it.
#[derive(Clone, Debug, Deserialize)]
pub struct StoredCell {
    /// Cell id.
    pub id: String,
    /// Experiment name.
    pub experiment: String,
    /// Method tag.
    pub method: String,
    /// Seed.
    pub seed: u64,
    /// Crate version that produced it.
    #[serde(default)]
    pub crate_version: String,
    /// Table parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Metric name → value.
    #[serde(default, deserialize_with = "number_map")]
    pub metrics: BTreeMap<String, f64>,
    /// Compute ledger.
    #[serde(default)]
    pub ledger: StoredLedger,
    /// Per-step diagnostics.
    #[serde(default)]
    pub traces: Vec<StoredTrace>,
    /// Kept samples.
    #[serde(default)]
    pub samples: StoredSamples,
    /// Per-prompt cross-reward rows (image problems).
    #[serde(default)]
    pub prompts: Vec<StoredPrompt>,
    /// The key of the exact target view the run stored (`targets/<key>.json`), if any.
    #[serde(default)]
    pub target_view: Option<String>,
    /// The parts of the resolved configuration the report reads.
    #[serde(default)]
    pub spec: StoredSpec,
}

impl StoredCell {
    /// The problem kind of the stored configuration (`gmm`, `mini`, `sd15`, …; "" when absent).
    pub fn problem_kind(&self) -> &str {
        self.spec.problem.as_ref().and_then(|p| p.get("kind")).and_then(|k| k.as_str()).unwrap_or("")
    }
}

/// One stored per-prompt row (`prompts.parquet`).
#[derive(Clone, Debug, PartialEq)]
pub struct PromptEntry {
    /// Method tag.
    pub method: String,
    /// Parameter columns.
    pub params: BTreeMap<String, String>,
    /// Seed.
    pub seed: String,
    /// Prompt id.
    pub prompt: String,
    /// Prompt text.
    pub text: String,
    /// Evaluation reward label.
    pub reward: String,
    /// Whether `reward` guided the cell.
    pub guide: bool,
    /// Output-weighted mean.
    pub mean: f64,
    /// Output-weighted standard deviation.
    pub sd: f64,
    /// Kept outputs.
    pub n: f64,
    /// Share of the cell's output weight.
    pub weight: f64,
}

/// The exact target a toy run stored for figures (`targets/<key>.json`): its density on a regular grid and
/// samples drawn from it. Format: `{"x": [lo, hi], "y": [lo, hi], "nx": N, "ny": M, "density": [M·N values,
/// row-major, rows = y], "samples": [x0, y0, x1, y1, …]}`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TargetView {
    /// x range of the grid.
    pub x: [f64; 2],
    /// y range of the grid.
    pub y: [f64; 2],
    /// Columns.
    pub nx: usize,
    /// Rows.
    pub ny: usize,
    /// Density values, row-major (`ny` rows of `nx`).
    #[serde(deserialize_with = "nan_vec")]
    pub density: Vec<f64>,
    /// Samples of the exact target, interleaved x, y.
    #[serde(default, deserialize_with = "nan_vec")]
    pub samples: Vec<f64>,
}

impl TargetView {
    /// Parse and check a target view.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let v: TargetView = serde_json::from_str(text).map_err(|e| format!("not a target view ({e})"))?;
        let range_ok = |r: [f64; 2]| r[0].is_finite() && r[1].is_finite() && r[0] < r[1];
        if !range_ok(v.x) || !range_ok(v.y) {
            return Err(format!("x {:?} and y {:?} must be finite ranges with lo < hi", v.x, v.y));
        }
        if v.nx < 2 || v.ny < 2 || v.density.len() != v.nx * v.ny {
            return Err(format!("density has {} values for a {}×{} grid (nx, ny ≥ 2)", v.density.len(), v.nx, v.ny));
        }
        if v.samples.len() % 2 != 0 {
            return Err(format!("samples has an odd length {} (x, y pairs expected)", v.samples.len()));
        }
        Ok(v)
    }
}

/// Everything one experiment folder stored.
pub struct StoredExperiment {
    /// Experiment name (the folder name).
    pub name: String,
    /// `metrics.parquet`: tidy rows (identity, parameters, metric, value).
    pub df: DataFrame,
    /// The cell files of the cells in `metrics.parquet` (a missing file is skipped).
    pub cells: Vec<StoredCell>,
    /// `config.yaml` ("" when absent).
    pub config: String,
    /// `prompts.parquet` rows (none for the toy).
    pub prompts: Vec<PromptEntry>,
    /// The target views the cells name: key → the view, or why it cannot be read.
    pub targets: BTreeMap<String, std::result::Result<TargetView, String>>,
}

impl StoredExperiment {
    /// Read one experiment folder.
    pub fn read(dir: &Path) -> Result<Self> {
        let name = dir.file_name().and_then(|s| s.to_str()).unwrap_or("?").to_string();
        let pq = dir.join("metrics.parquet");
        let f = fs::File::open(&pq).map_err(|e| Error::file(&pq, format!("cannot open: {e}")))?;
        let df = ParquetReader::new(f).finish().map_err(|e| {
            Error::file(&pq, format!("not a readable parquet file ({e}); re-run the experiment to rewrite it"))
        })?;
        let ids: BTreeSet<String> = strings(&df, "cell")?.into_iter().collect();
        let mut cells = Vec::new();
        for id in &ids {
            let p = dir.join("cells").join(format!("{id}.json"));
            if let Ok(text) = fs::read_to_string(&p) {
                let c: StoredCell = serde_json::from_str(&text).map_err(|e| {
                    Error::file(&p, format!("corrupt cell file ({e}); delete it and re-run to recompute"))
                })?;
                cells.push(c);
            }
        }
        let config = fs::read_to_string(dir.join("config.yaml")).unwrap_or_default();
        let prompts = read_prompts(dir)?;
        let keys: BTreeSet<&String> = cells.iter().filter_map(|c| c.target_view.as_ref()).collect();
        let targets = keys.into_iter().map(|k| (k.clone(), read_target(dir, k))).collect();
        Ok(StoredExperiment { name, df, cells, config, prompts, targets })
    }
}

/// `targets/<key>.json` of an experiment folder, or why it cannot be used.
pub fn read_target(dir: &Path, key: &str) -> std::result::Result<TargetView, String> {
    let rel = format!("targets/{key}.json");
    if key.is_empty() || key.contains(['/', '\\']) || key.starts_with('.') {
        return Err(format!("{rel}: not a plain file name"));
    }
    let text = fs::read_to_string(dir.join(&rel)).map_err(|e| format!("{rel}: cannot read ({e})"))?;
    TargetView::parse(&text).map_err(|e| format!("{rel}: {e}"))
}

/// The per-prompt rows of an experiment folder (none without `prompts.parquet`).
pub fn read_prompts(dir: &Path) -> Result<Vec<PromptEntry>> {
    let pq = dir.join("prompts.parquet");
    if !pq.is_file() {
        return Ok(Vec::new());
    }
    let bad = |e: &dyn std::fmt::Display| {
        Error::file(&pq, format!("not a readable per-prompt table ({e}); re-run the experiment to rewrite it"))
    };
    let f = fs::File::open(&pq).map_err(|e| Error::file(&pq, format!("cannot open: {e}")))?;
    let df = ParquetReader::new(f).finish().map_err(|e| bad(&e))?;
    let identity = ["experiment", "cell", "method", "seed"];
    let params: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .filter(|c| !identity.contains(&c.as_str()) && !PROMPT_COLUMNS.contains(&c.as_str()))
        .collect();
    let pv: Vec<Vec<String>> = params.iter().map(|p| strings(&df, p)).collect::<Result<_>>()?;
    let [method, seed, prompt, text, reward, guide] =
        ["method", "seed", "prompt", "prompt_text", "eval_reward", "guide"].map(|c| strings(&df, c));
    let [mean, sd, n, weight] = ["mean", "sd", "n", "weight"].map(|c| floats(&df, c));
    let (method, seed, prompt, text, reward, guide) = (method?, seed?, prompt?, text?, reward?, guide?);
    let (mean, sd, n, weight) = (mean?, sd?, n?, weight?);
    Ok((0..df.height())
        .map(|i| PromptEntry {
            method: method[i].clone(),
            params: params.iter().zip(&pv).map(|(k, v)| (k.clone(), v[i].clone())).collect(),
            seed: seed[i].clone(),
            prompt: prompt[i].clone(),
            text: text[i].clone(),
            reward: reward[i].clone(),
            guide: guide[i] == "true",
            mean: mean[i],
            sd: sd[i],
            n: n[i],
            weight: weight[i],
        })
        .collect())
}

/// Every `<results>/<name>/metrics.parquet` folder, sorted by name, skipping the report folder `out` itself.
pub fn discover(results: &Path, out: &Path) -> Result<Vec<StoredExperiment>> {
    let rd = fs::read_dir(results)
        .map_err(|e| Error::file(results, format!("cannot list results ({e}); run an experiment first")))?;
    let mut dirs: Vec<PathBuf> =
        rd.flatten().map(|e| e.path()).filter(|p| p.join("metrics.parquet").is_file()).collect();
    dirs.retain(|d| d.canonicalize().ok() != out.canonicalize().ok());
    dirs.sort();
    dirs.iter().map(|d| StoredExperiment::read(d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_files_load_with_unknown_fields_and_non_finite_metrics() {
        let text = r#"{"id": "a", "experiment": "e", "method": "das", "seed": 3, "crate_version": "0.1.0",
            "params": {"problem": "gmm1"}, "metrics": {"emd": 0.5, "reward_mean": "-inf"},
            "ledger": {"nfe": 10, "vjp_denoiser": 2, "vjp_reward": 0, "denoise_s": 0.1, "new_axis": 1},
            "traces": [{"step": 0, "ess_frac": 0.5, "resample_frac": 0.0, "lambda": 0.1, "non_finite": 0}],
            "samples": {"d": 2, "x": [1.0, null]}, "spec": {"groups": 4, "problem": {"kind": "gmm"}},
            "something_new": [1, 2, 3], "target_view": "gmm1-a1"}"#;
        let c: StoredCell = serde_json::from_str(text).unwrap();
        assert_eq!((c.id.as_str(), c.seed, c.ledger.nfe), ("a", 3, 10));
        assert_eq!(c.metrics["reward_mean"], f64::NEG_INFINITY);
        assert!(c.samples.x[1].is_nan());
        assert_eq!(c.target_view.as_deref(), Some("gmm1-a1"));
        assert_eq!((c.problem_kind(), c.spec.groups), ("gmm", Some(4.0)));
        // Older cell files: no target view, no prompts.
        let old: StoredCell =
            serde_json::from_str(r#"{"id": "b", "experiment": "e", "method": "ddim", "seed": 0}"#).unwrap();
        assert!(old.target_view.is_none() && old.prompts.is_empty() && old.samples.d == 0);
    }

    #[test]
    fn target_views_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("targets")).unwrap();
        let good = r#"{"x": [-1, 1], "y": [-2, 2], "nx": 2, "ny": 3, "density": [0, 1, 2, 3, 4, 5],
            "samples": [0.1, 0.2, -0.3, 0.4]}"#;
        fs::write(dir.path().join("targets/k.json"), good).unwrap();
        let v = read_target(dir.path(), "k").unwrap();
        assert_eq!((v.x, v.y, v.nx, v.ny), ([-1.0, 1.0], [-2.0, 2.0], 2, 3));
        assert_eq!(v.density[5], 5.0);
        assert_eq!(v.samples.len(), 4);
        let short = good.replace("4, 5]", "4]");
        fs::write(dir.path().join("targets/bad.json"), short).unwrap();
        assert!(read_target(dir.path(), "bad").unwrap_err().contains("5 values for a 2×3 grid"));
        assert!(read_target(dir.path(), "missing").unwrap_err().starts_with("targets/missing.json: cannot read"));
        assert!(read_target(dir.path(), "../k").is_err());
    }
}
