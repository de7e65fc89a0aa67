//! The results store: `DIR/<experiment>/` holds `config.yaml` (the file as run), `plan.json` (resolved cells),
//! `cells/<cell-id>.json` (one atomic file per finished cell — present cells are skipped on the next run) and the
//! tidy tables, rebuilt from the cell files after every run (so a resumed run never duplicates a row):
//! `metrics.csv` / `metrics.parquet` (one row per cell and metric) and, for image problems, `prompts.csv` /
//! `prompts.parquet` (one row per cell, prompt and evaluation reward: the cross-reward matrix per prompt).

use std::fs;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::plan::Plan;
use super::runner::CellResult;
use crate::problems::cross_reward::PromptRow;
use crate::{Error, Result};

use crate::numerics::write_atomic;

/// The store of one experiment.
pub struct Store {
    dir: PathBuf,
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
            "plan_id": plan_id(plan.cells.iter().map(|c| c.id.as_str()), env!("CARGO_PKG_VERSION")),
            "description": plan.description,
            "file": plan.file.display().to_string(),
            "crate_version": env!("CARGO_PKG_VERSION"),
            "param_columns": plan.param_columns,
            "cells": cells,
        });
        write_atomic(&dir.join("plan.json"), serde_json::to_string_pretty(&doc).expect("json").as_bytes())?;
        Ok(Store { dir })
    }

    /// The store of an existing experiment folder (nothing is written).
    pub fn at(dir: &Path) -> Self {
        Store { dir: dir.to_path_buf() }
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
        // Figure data shared by cells (the toy's exact target density) first, once per key, so a cell file never
        // names a view that is not there.
        if let (Some(key), Some(data)) = (&r.target_view, &r.view_data) {
            let p = self.dir.join("targets").join(format!("{key}.json"));
            if !p.exists() {
                write_atomic(&p, serde_json::to_string(data).expect("json").as_bytes())?;
            }
        }
        write_atomic(&self.cell_path(&r.id), serde_json::to_string(r).expect("json").as_bytes())
    }

    /// Load a cell file.
    pub fn load(&self, id: &str) -> Result<CellResult> {
        let p = self.cell_path(id);
        let text = fs::read_to_string(&p).map_err(|e| Error::file(&p, format!("cannot read: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::file(&p, format!("corrupt cell file ({e}); delete it to recompute")))
    }

    /// Rewrite the tidy tables from the cell files: `metrics.csv` / `metrics.parquet`, and `prompts.csv` /
    /// `prompts.parquet` when a cell has per-prompt cross-reward rows (removed when none has: they are derived).
    pub fn write_tidy(&self, plan: &Plan) -> Result<()> {
        let ids: Vec<&str> = plan.cells.iter().map(|c| c.id.as_str()).collect();
        self.write_tables(&ids, &plan.param_columns)
    }

    /// Rewrite the tidy tables from the files of the cells `ids` that are finished, in that order (the plan's) —
    /// the same bytes whichever process ran which cell, and in whatever order.
    pub fn write_tables(&self, ids: &[&str], param_columns: &[String]) -> Result<()> {
        let cells: Vec<CellResult> = ids.iter().filter_map(|id| self.load(id).ok()).collect();
        metrics_table(&cells, param_columns).write(&self.dir, "metrics")?;
        let prompts = prompts_table(&cells, param_columns);
        if !prompts.is_empty() {
            prompts.write(&self.dir, "prompts")?;
        } else {
            for ext in ["csv", "parquet"] {
                let p = self.dir.join(format!("prompts.{ext}"));
                if p.exists() {
                    fs::remove_file(&p).map_err(|e| Error::file(&p, format!("cannot remove a stale table: {e}")))?;
                }
            }
        }
        Ok(())
    }
}

/// A plan's identity: its cells (ids, in order) and the crate version (12 hex digits of their sha256).
pub fn plan_id<'a>(ids: impl Iterator<Item = &'a str>, version: &str) -> String {
    let mut text = String::new();
    for id in ids {
        text.push_str(id);
        text.push('\n');
    }
    text.push_str(version);
    crate::numerics::sha256_hex(text.as_bytes())[..12].to_string()
}

/// A column of a tidy table.
#[derive(Clone, Debug, PartialEq)]
pub enum TidyCol {
    /// Text.
    Str(Vec<String>),
    /// Unsigned integers.
    U64(Vec<u64>),
    /// Numbers (CSV spells non-finite values `NaN`, `inf`, `-inf`).
    F64(Vec<f64>),
    /// Booleans.
    Bool(Vec<bool>),
}

/// A tidy table: named columns of equal length, written as CSV and parquet with the same columns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tidy {
    /// (name, column), in order.
    pub cols: Vec<(String, TidyCol)>,
}

impl Tidy {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self.cols.first().map(|c| &c.1) {
            Some(TidyCol::Str(v)) => v.len(),
            Some(TidyCol::U64(v)) => v.len(),
            Some(TidyCol::F64(v)) => v.len(),
            Some(TidyCol::Bool(v)) => v.len(),
            None => 0,
        }
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// CSV bytes with a header.
    pub fn csv(&self) -> Result<Vec<u8>> {
        let io = |e: csv::Error| Error::numeric("csv", e.to_string());
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(self.cols.iter().map(|c| c.0.as_str())).map_err(io)?;
        for i in 0..self.len() {
            let rec: Vec<String> = self
                .cols
                .iter()
                .map(|(_, c)| match c {
                    TidyCol::Str(v) => v[i].clone(),
                    TidyCol::U64(v) => v[i].to_string(),
                    TidyCol::F64(v) => format!("{}", v[i]),
                    TidyCol::Bool(v) => v[i].to_string(),
                })
                .collect();
            w.write_record(&rec).map_err(io)?;
        }
        w.into_inner().map_err(|e| Error::numeric("csv", e.to_string()))
    }

    /// A polars frame with the same columns.
    pub fn frame(&self) -> Result<DataFrame> {
        let cols: Vec<Column> = self
            .cols
            .iter()
            .map(|(name, c)| {
                let name = name.as_str().into();
                match c {
                    TidyCol::Str(v) => Column::new(name, v),
                    TidyCol::U64(v) => Column::new(name, v),
                    TidyCol::F64(v) => Column::new(name, v),
                    TidyCol::Bool(v) => Column::new(name, v),
                }
            })
            .collect();
        DataFrame::new(self.len(), cols).map_err(|e| Error::numeric("polars", e.to_string()))
    }

    /// Write `dir/<stem>.csv` and `dir/<stem>.parquet` atomically.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        write_atomic(&dir.join(format!("{stem}.csv")), &self.csv()?)?;
        let mut df = self.frame()?;
        let mut buf = Vec::new();
        ParquetWriter::new(&mut buf)
            .finish(&mut df)
            .map_err(|e| Error::file(dir.join(format!("{stem}.parquet")), format!("parquet: {e}")))?;
        write_atomic(&dir.join(format!("{stem}.parquet")), &buf)
    }
}

/// The identity columns of a tidy table (experiment, cell, method, seed, params…), one row per entry of `of`
/// (an index into `cells`).
fn identity(cells: &[CellResult], of: &[usize], param_columns: &[String]) -> Tidy {
    let s = |f: &dyn Fn(&CellResult) -> String| TidyCol::Str(of.iter().map(|&i| f(&cells[i])).collect());
    let mut cols = vec![
        ("experiment".to_string(), s(&|r| r.experiment.clone())),
        ("cell".to_string(), s(&|r| r.id.clone())),
        ("method".to_string(), s(&|r| r.method.clone())),
        ("seed".to_string(), TidyCol::U64(of.iter().map(|&i| cells[i].seed).collect())),
    ];
    for k in param_columns {
        cols.push((k.clone(), s(&|r| r.params.get(k).cloned().unwrap_or_default())));
    }
    Tidy { cols }
}

/// The metric rows: identity, `metric`, `value` (one row per cell and metric).
pub fn metrics_table(cells: &[CellResult], param_columns: &[String]) -> Tidy {
    let of: Vec<usize> = cells.iter().enumerate().flat_map(|(i, c)| std::iter::repeat_n(i, c.metrics.len())).collect();
    let mut t = identity(cells, &of, param_columns);
    let metrics = cells.iter().flat_map(|c| c.metrics.iter());
    let (names, values): (Vec<String>, Vec<f64>) = metrics.map(|(k, v)| (k.clone(), *v)).unzip();
    t.cols.push(("metric".into(), TidyCol::Str(names)));
    t.cols.push(("value".into(), TidyCol::F64(values)));
    t
}

/// Columns of the per-prompt table after the identity columns.
pub const PROMPT_COLUMNS: [&str; 8] = ["prompt", "prompt_text", "eval_reward", "guide", "mean", "sd", "n", "weight"];

/// The per-prompt cross-reward rows: identity, then [`PROMPT_COLUMNS`] (one row per cell, prompt and evaluation
/// reward; `crate::problems::cross_reward`).
pub fn prompts_table(cells: &[CellResult], param_columns: &[String]) -> Tidy {
    let of: Vec<usize> = cells.iter().enumerate().flat_map(|(i, c)| std::iter::repeat_n(i, c.prompts.len())).collect();
    let mut t = identity(cells, &of, param_columns);
    let rows: Vec<&PromptRow> = cells.iter().flat_map(|c| c.prompts.iter()).collect();
    let s = |f: &dyn Fn(&PromptRow) -> String| TidyCol::Str(rows.iter().map(|r| f(r)).collect());
    let x = |f: &dyn Fn(&PromptRow) -> f64| TidyCol::F64(rows.iter().map(|r| f(r)).collect());
    let [p, text, reward, guide, mean, sd, n, weight] = PROMPT_COLUMNS.map(String::from);
    t.cols.extend([
        (p, s(&|r| r.prompt.clone())),
        (text, s(&|r| r.text.clone())),
        (reward, s(&|r| r.reward.clone())),
        (guide, TidyCol::Bool(rows.iter().map(|r| r.guide).collect())),
        (mean, x(&|r| r.mean)),
        (sd, x(&|r| r.sd)),
        (n, TidyCol::U64(rows.iter().map(|r| r.n as u64).collect())),
        (weight, x(&|r| r.weight)),
    ]);
    t
}
