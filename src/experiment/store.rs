//! The results store: `DIR/<experiment>/` holds `config.yaml` (the file as run), `plan.json` (resolved cells),
//! `cells/<cell-id>.json` (one atomic file per finished cell — present cells are skipped on the next run) and the
//! tidy rows `metrics.csv` / `metrics.parquet`, rebuilt from the cell files after every cell.

use std::fs;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::plan::Plan;
use super::runner::CellResult;
use crate::{Error, Result};

/// Write `bytes` to `path` atomically (temporary file + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).map_err(|e| Error::file(p, format!("cannot create folder: {e}")))?;
    }
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().and_then(|s| s.to_str()).unwrap_or("out")));
    fs::write(&tmp, bytes).map_err(|e| Error::file(&tmp, format!("cannot write: {e}")))?;
    fs::rename(&tmp, path).map_err(|e| Error::file(path, format!("cannot move into place: {e}")))?;
    Ok(())
}

/// The store of one experiment.
pub struct Store {
    dir: PathBuf,
}

/// One tidy row.
#[derive(Clone, Debug, PartialEq)]
pub struct TidyRow {
    /// Experiment.
    pub experiment: String,
    /// Cell id.
    pub cell: String,
    /// Method.
    pub method: String,
    /// Seed.
    pub seed: u64,
    /// Parameter values, in the plan's column order.
    pub params: Vec<String>,
    /// Metric name.
    pub metric: String,
    /// Value.
    pub value: f64,
}

impl Store {
    /// Open (create) `out/<plan.name>` and save the configuration as run.
    pub fn open(out: &Path, plan: &Plan) -> Result<Self> {
        let dir = out.join(&plan.name);
        fs::create_dir_all(dir.join("cells"))
            .map_err(|e| Error::file(&dir, format!("cannot create results folder: {e}")))?;
        write_atomic(&dir.join("config.yaml"), plan.source.as_bytes())?;
        let cells: Vec<serde_json::Value> =
            plan.cells.iter().map(|c| serde_json::json!({ "id": c.id, "params": c.params, "spec": c.value })).collect();
        let doc = serde_json::json!({
            "experiment": plan.name,
            "description": plan.description,
            "file": plan.file.display().to_string(),
            "crate_version": env!("CARGO_PKG_VERSION"),
            "param_columns": plan.param_columns,
            "cells": cells,
        });
        write_atomic(&dir.join("plan.json"), serde_json::to_string_pretty(&doc).expect("json").as_bytes())?;
        Ok(Store { dir })
    }

    /// The experiment folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn cell_path(&self, id: &str) -> PathBuf {
        self.dir.join("cells").join(format!("{id}.json"))
    }

    /// Whether a finished cell file exists (and parses).
    pub fn has(&self, id: &str) -> bool {
        self.load(id).is_ok()
    }

    /// Remove a cell's file (for `--fresh`).
    pub fn remove(&self, id: &str) -> Result<()> {
        let p = self.cell_path(id);
        if p.exists() {
            fs::remove_file(&p).map_err(|e| Error::file(&p, format!("cannot remove: {e}")))?;
        }
        Ok(())
    }

    /// Save a finished cell atomically.
    pub fn save(&self, r: &CellResult) -> Result<()> {
        write_atomic(&self.cell_path(&r.id), serde_json::to_string(r).expect("json").as_bytes())
    }

    /// Load a cell file.
    pub fn load(&self, id: &str) -> Result<CellResult> {
        let p = self.cell_path(id);
        let text = fs::read_to_string(&p).map_err(|e| Error::file(&p, format!("cannot read: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::file(&p, format!("corrupt cell file ({e}); delete it to recompute")))
    }

    /// Tidy rows of every finished cell of the plan, in plan order.
    pub fn rows(&self, plan: &Plan) -> Vec<TidyRow> {
        let mut rows = Vec::new();
        for c in &plan.cells {
            let Ok(r) = self.load(&c.id) else { continue };
            let params: Vec<String> =
                plan.param_columns.iter().map(|k| r.params.get(k).cloned().unwrap_or_default()).collect();
            for (metric, value) in &r.metrics {
                rows.push(TidyRow {
                    experiment: r.experiment.clone(),
                    cell: r.id.clone(),
                    method: r.method.clone(),
                    seed: r.seed,
                    params: params.clone(),
                    metric: metric.clone(),
                    value: *value,
                });
            }
        }
        rows
    }

    /// Rewrite `metrics.csv` and `metrics.parquet` from the cell files.
    pub fn write_tidy(&self, plan: &Plan) -> Result<()> {
        let rows = self.rows(plan);
        write_atomic(&self.dir.join("metrics.csv"), &tidy_csv(&rows, &plan.param_columns)?)?;
        let mut df = tidy_frame(&rows, &plan.param_columns)?;
        let tmp = self.dir.join(".metrics.parquet.tmp");
        let f = fs::File::create(&tmp).map_err(|e| Error::file(&tmp, e.to_string()))?;
        ParquetWriter::new(f).finish(&mut df).map_err(|e| Error::file(&tmp, format!("parquet: {e}")))?;
        fs::rename(&tmp, self.dir.join("metrics.parquet"))?;
        Ok(())
    }
}

/// Tidy rows as CSV bytes (header: experiment, cell, method, seed, params…, metric, value).
pub fn tidy_csv(rows: &[TidyRow], param_columns: &[String]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["experiment", "cell", "method", "seed"];
    header.extend(param_columns.iter().map(|s| s.as_str()));
    header.extend(["metric", "value"]);
    let io = |e: csv::Error| Error::numeric("csv", e.to_string());
    w.write_record(&header).map_err(io)?;
    for r in rows {
        let mut rec = vec![r.experiment.clone(), r.cell.clone(), r.method.clone(), r.seed.to_string()];
        rec.extend(r.params.iter().cloned());
        rec.push(r.metric.clone());
        rec.push(format!("{}", r.value));
        w.write_record(&rec).map_err(io)?;
    }
    w.into_inner().map_err(|e| Error::numeric("csv", e.to_string()))
}

/// Tidy rows as a polars frame (parameters as strings, value as f64).
pub fn tidy_frame(rows: &[TidyRow], param_columns: &[String]) -> Result<DataFrame> {
    let s = |f: &dyn Fn(&TidyRow) -> String| rows.iter().map(f).collect::<Vec<String>>();
    let mut cols = vec![
        Column::new("experiment".into(), s(&|r| r.experiment.clone())),
        Column::new("cell".into(), s(&|r| r.cell.clone())),
        Column::new("method".into(), s(&|r| r.method.clone())),
        Column::new("seed".into(), rows.iter().map(|r| r.seed).collect::<Vec<u64>>()),
    ];
    for (i, k) in param_columns.iter().enumerate() {
        cols.push(Column::new(k.as_str().into(), s(&|r| r.params[i].clone())));
    }
    cols.push(Column::new("metric".into(), s(&|r| r.metric.clone())));
    cols.push(Column::new("value".into(), rows.iter().map(|r| r.value).collect::<Vec<f64>>()));
    DataFrame::new(rows.len(), cols).map_err(|e| Error::numeric("polars", e.to_string()))
}
