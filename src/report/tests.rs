//! The report end to end on a small synthetic store: the toy sample figure reads the exact target from
//! `targets/<key>.json` (and says why when the run stored none), tables with nothing to show are left out, and no
//! figure is skipped silently.

use std::fs;
use std::path::Path;

use polars::prelude::*;

use super::{build, ReportOptions};

/// A toy experiment `e` of three methods × two seeds on gmm1, its cells naming target view `key` (if any).
fn store(dir: &Path, key: Option<&str>) {
    let exp = dir.join("e");
    fs::create_dir_all(exp.join("cells")).unwrap();
    let methods = ["ddim", "das", "oracle"];
    let (mut cell, mut method, mut seed, mut metric, mut value) = (vec![], vec![], vec![], vec![], vec![]);
    for (i, m) in methods.iter().enumerate() {
        for s in 0..2u64 {
            let id = format!("c{i}{s}");
            let metrics =
                [("emd", 1.0 / (i + 1) as f64 + 0.01 * s as f64), ("reward_mean", -(i as f64)), ("wall_s", 0.5)];
            for (k, v) in metrics {
                cell.push(id.clone());
                method.push(m.to_string());
                seed.push(s);
                metric.push(k.to_string());
                value.push(v);
            }
            let c = serde_json::json!({
                "id": id, "experiment": "e", "method": m, "seed": s, "crate_version": "0.1.0",
                "params": {"problem": "gmm1", "denoiser": "analytic", "alpha": "1"},
                "metrics": metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
                "samples": {"d": 2, "x": [0.0, 0.0, 1.0, -1.0, 2.0, 0.5]},
                "spec": {"groups": 3, "problem": {"kind": "gmm", "preset": "gmm1"}, "reward": {"kind": "quadratic", "preset": "gmm1"}},
                "target_view": key,
                "a_field_from_the_future": true,
            });
            fs::write(exp.join("cells").join(format!("{id}.json")), c.to_string()).unwrap();
        }
    }
    let n = cell.len();
    let mut df = df!(
        "experiment" => vec!["e"; n],
        "cell" => cell,
        "method" => method,
        "seed" => seed,
        "problem" => vec!["gmm1"; n],
        "denoiser" => vec!["analytic"; n],
        "alpha" => vec!["1"; n],
        "metric" => metric,
        "value" => value,
    )
    .unwrap();
    ParquetWriter::new(fs::File::create(exp.join("metrics.parquet")).unwrap()).finish(&mut df).unwrap();
}

fn report(results: &Path) -> (String, Vec<String>) {
    let out = results.join("report");
    let s = build(&ReportOptions { results: results.into(), out: out.clone(), baselines: "baselines".into() }).unwrap();
    let mut tables: Vec<String> =
        fs::read_dir(out.join("tables")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    tables.sort();
    assert_eq!(s.tables * 3, tables.len());
    (fs::read_to_string(out.join("index.html")).unwrap(), tables)
}

#[test]
fn the_sample_figure_draws_the_stored_target_view() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path(), Some("gmm1-alpha1"));
    fs::create_dir_all(dir.path().join("e/targets")).unwrap();
    let (nx, ny) = (4, 3);
    let density: Vec<f64> = (0..nx * ny).map(|i| i as f64).collect();
    let view = serde_json::json!({"x": [-6, 6], "y": [-5, 5], "nx": nx, "ny": ny, "density": density,
                                  "samples": [0.0, 0.1, 0.2, 0.3, 4.0, 0.0]});
    fs::write(dir.path().join("e/targets/gmm1-alpha1.json"), view.to_string()).unwrap();
    let (html, tables) = report(dir.path());
    assert!(html.contains("<img src=\"figures/samples-e-gmm1-analytic.png\""), "{html}");
    assert!(!html.contains("stored no target density") && !html.contains("samples-e-gmm1-analytic is not drawn"));
    let svg = fs::read_to_string(dir.path().join("report/figures/samples-e-gmm1-analytic.svg")).unwrap();
    assert!(svg.contains("exact target") && svg.contains("3 samples"), "the target panel comes from the file");
    // Nothing to show: no toy-* experiment for the reference table, no sweep, no image reward.
    for absent in ["reference", "alpha", "particles", "budget", "figure1", "cross-e", "mini-e"] {
        assert!(!tables.iter().any(|t| t == &format!("{absent}.csv")), "{absent}: {tables:?}");
    }
    for present in ["ledger.csv", "summary-e.csv", "paired-e.csv", "rewards.csv"] {
        assert!(tables.iter().any(|t| t == present), "{present}: {tables:?}");
    }
}

#[test]
fn figures_that_cannot_be_drawn_say_why() {
    let dir = tempfile::tempdir().unwrap();
    // No target view named: the samples are drawn without the target and the page says why.
    store(dir.path(), None);
    let (html, _) = report(dir.path());
    assert!(html.contains("figures/samples-e-gmm1-analytic.png"), "{html}");
    assert!(html.contains("the run stored no target density; re-run with this version"), "{html}");
    // A named but corrupt view: the reason names the file.
    let dir = tempfile::tempdir().unwrap();
    store(dir.path(), Some("k"));
    fs::create_dir_all(dir.path().join("e/targets")).unwrap();
    fs::write(dir.path().join("e/targets/k.json"), "{\"x\": [0, 1]}").unwrap();
    let (html, _) = report(dir.path());
    assert!(html.contains("Not shown: targets/k.json: not a target view"), "{html}");
    // A Pareto front over three configurations is drawn; the traces figure says why it is not (no particle method
    // resampled or tempered).
    assert!(html.contains("figures/pareto-e-gmm1-analytic-alpha1.png"), "{html}");
    assert!(html.contains("Figure traces-e-gmm1-analytic is not drawn: no cell"), "{html}");
}
