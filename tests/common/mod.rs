//! Helpers shared by the end-to-end tests of the binary (each test crate uses a subset).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use polars::prelude::*;

/// The `alignbench` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_alignbench"))
}

/// `alignbench plan` on `yaml` must fail with nothing on stdout; returns its stderr.
pub fn plan_error(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, yaml).unwrap();
    let o = bin().arg("plan").arg(&p).output().unwrap();
    assert!(!o.status.success(), "expected failure for:\n{yaml}");
    assert!(o.stdout.is_empty());
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// One row of `prompts.csv`.
#[derive(Clone, Debug)]
pub struct PromptCsvRow {
    pub cell: String,
    pub prompt: String,
    pub text: String,
    pub reward: String,
    pub guide: bool,
    pub mean: f64,
    pub n: usize,
}

fn records(path: &Path) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = r.headers().unwrap().iter().map(String::from).collect();
    (header, r.records().map(|x| x.unwrap()).collect())
}

/// Check the per-prompt table of a finished experiment folder against its cell metrics and return its rows:
/// `cells × prompts × labels` rows with unique keys, the guide flag on `guide` only, Σ weight·mean = `r_<label>`
/// and (equal outputs per prompt) the output-count average too, both to 1e-9; the parquet holds the same rows.
pub fn check_prompt_table(exp: &Path, cells: usize, prompts: usize, labels: &[&str], guide: &str) -> Vec<PromptCsvRow> {
    let (mh, mrows) = records(&exp.join("metrics.csv"));
    let col = |h: &[String], name: &str| h.iter().position(|c| c == name).unwrap_or_else(|| panic!("no column {name}"));
    let (mc, mm, mv) = (col(&mh, "cell"), col(&mh, "metric"), col(&mh, "value"));
    let metric: BTreeMap<(String, String), f64> =
        mrows.iter().map(|r| ((r[mc].to_string(), r[mm].to_string()), r[mv].parse().unwrap())).collect();

    let (h, rows) = records(&exp.join("prompts.csv"));
    assert_eq!(&h[h.len() - 8..], ["prompt", "prompt_text", "eval_reward", "guide", "mean", "sd", "n", "weight"]);
    assert_eq!(&h[..4], ["experiment", "cell", "method", "seed"]);
    assert_eq!(rows.len(), cells * prompts * labels.len(), "cells × prompts × rewards");
    let c = |name: &str| col(&h, name);
    let out: Vec<(PromptCsvRow, f64, f64)> = rows
        .iter()
        .map(|r| {
            let row = PromptCsvRow {
                cell: r[c("cell")].into(),
                prompt: r[c("prompt")].into(),
                text: r[c("prompt_text")].into(),
                reward: r[c("eval_reward")].into(),
                guide: r[c("guide")].parse().unwrap(),
                mean: r[c("mean")].parse().unwrap(),
                n: r[c("n")].parse().unwrap(),
            };
            (row, r[c("weight")].parse().unwrap(), r[c("sd")].parse().unwrap())
        })
        .collect();
    let keys: BTreeSet<(&str, &str, &str)> =
        out.iter().map(|(r, _, _)| (r.cell.as_str(), r.prompt.as_str(), r.reward.as_str())).collect();
    assert_eq!(keys.len(), rows.len(), "duplicate (cell, prompt, reward) rows");
    let ids: BTreeSet<&str> = out.iter().map(|(r, _, _)| r.cell.as_str()).collect();
    assert_eq!(ids.len(), cells);
    for (r, w, sd) in &out {
        assert!(labels.contains(&r.reward.as_str()), "unexpected reward {}", r.reward);
        assert_eq!(r.guide, r.reward == guide, "{r:?}");
        assert!(r.mean.is_finite() && sd.is_finite() && *sd >= 0.0 && *w > 0.0 && r.n > 0, "{r:?}");
    }
    for cell in &ids {
        for l in labels {
            let mine: Vec<&(PromptCsvRow, f64, f64)> =
                out.iter().filter(|(r, _, _)| r.cell == *cell && r.reward == *l).collect();
            assert_eq!(mine.len(), prompts, "{cell} {l}");
            let want = metric[&(cell.to_string(), format!("r_{l}"))];
            let by_weight: f64 = mine.iter().map(|(r, w, _)| w * r.mean).sum();
            let total: usize = mine.iter().map(|(r, _, _)| r.n).sum();
            let by_count: f64 = mine.iter().map(|(r, _, _)| r.n as f64 * r.mean).sum::<f64>() / total as f64;
            let tol = 1e-9 * want.abs().max(1.0);
            assert!((by_weight - want).abs() <= tol, "{cell} {l}: Σ weight·mean {by_weight} vs r_{l} {want}");
            assert!((by_count - want).abs() <= tol, "{cell} {l}: count-weighted {by_count} vs r_{l} {want}");
            assert!((mine.iter().map(|(_, w, _)| w).sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }
    // The parquet twin: same rows, same numbers.
    let f = std::fs::File::open(exp.join("prompts.parquet")).unwrap();
    let df = ParquetReader::new(f).finish().unwrap();
    assert_eq!(df.height(), rows.len());
    let means = df.column("mean").unwrap().f64().unwrap();
    for (i, (r, _, _)) in out.iter().enumerate() {
        assert_eq!(means.get(i), Some(r.mean));
    }
    assert_eq!(df.column("guide").unwrap().bool().unwrap().num_trues(), cells * prompts);
    out.into_iter().map(|(r, _, _)| r).collect()
}
