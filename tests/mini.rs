//! FMNIST-align end to end through the binary: the smoke sweep (every inference-time method on the committed
//! weights) writes every metric and the cross-reward matrix per prompt class, runs deterministically, and the report
//! shows the cross-reward tables (per cell and per prompt) and the Figure-2 analogue; plan-time errors of the mini problem name the key and the fix. Skips when the committed
//! assets are absent.

use std::path::Path;

mod common;
use common::{bin, plan_error};

fn have_assets() -> bool {
    if Path::new("assets/mini/manifest.json").exists() {
        return true;
    }
    alignbench::testing::missing("no assets/mini (train them with `make train-mini`)");
    false
}

const BASE: &str = "version: 1\nname: t\nsteps: 10\ngrid: sd15\ngroups: 4\n";

#[test]
fn mini_smoke_sweep_writes_every_metric_and_reports() {
    if !have_assets() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &Path| {
        let o = bin().args(["run", "experiments/smoke/mini.yaml", "--quiet", "--out"]).arg(out).output().unwrap();
        assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(out.join("mini-smoke/metrics.csv")).unwrap()
    };
    let csv = run(&dir.path().join("a"));
    let methods = ["ddim", "best_of_n", "das", "tds", "smc", "fk", "svdd", "dps", "freedom", "mpgd", "backprop"];
    let mut metrics: Vec<String> = [
        "reward_mean",
        "acc_b",
        "class_entropy_b",
        "tce_prompt",
        "pairwise_cos",
        "lpips_b",
        "non_finite_frac",
        "nfe",
        "reward_calls",
        "wall_s",
    ]
    .map(String::from)
    .to_vec();
    for k in ["style_a", "cls_a", "style_b", "cls_b", "gold_ink"] {
        metrics.push(format!("r_{k}"));
        metrics.push(format!("r_{k}_sd"));
    }
    if Path::new("/usr/share/datasets/fashion-mnist").exists() || std::env::var_os("ALIGNBENCH_DATA").is_some() {
        metrics.push("kid_x1000".into());
    }
    for m in methods {
        for metric in &metrics {
            assert!(
                csv.lines().any(|l| l.contains(&format!(",{m},")) && l.contains(&format!(",{metric},"))),
                "no {metric} row for {m}"
            );
        }
    }
    // ft_backprop records its training cost.
    for metric in ["train_s", "train_nfe", "train_vjp_denoiser", "train_reward", "train_kl", "train_loss"] {
        assert!(
            csv.lines().any(|l| l.contains(",backprop,") && l.contains(&format!(",{metric},"))),
            "no {metric} row for backprop"
        );
    }
    // Every value is a number (no NaN from an empty set), and the target's mean equals r_style_a.
    for l in csv.lines().skip(1) {
        let v: f64 = l.rsplit(',').next().unwrap().parse().unwrap();
        assert!(v.is_finite(), "non-finite metric row: {l}");
    }
    // The cross-reward matrix per prompt: 10 cells × 2 classes × 5 rewards, consistent with the cell metrics.
    let labels = ["style_a", "cls_a", "style_b", "cls_b", "gold_ink"];
    let rows = common::check_prompt_table(&dir.path().join("a/mini-smoke"), methods.len(), 2, &labels, "style_a");
    for r in &rows {
        let want = match r.prompt.as_str() {
            "0" => "T-shirt/top",
            "9" => "Ankle boot",
            other => panic!("prompt {other} is not one of the classes [0, 9]"),
        };
        assert_eq!((r.text.as_str(), r.n), (want, 4), "{r:?}");
    }
    // Same YAML and seed ⇒ same bytes (wall times aside; ft_backprop trains afresh in each results folder).
    let strip = |s: &str| {
        s.lines().filter(|l| !l.contains(",wall_s,") && !l.contains(",train_s,")).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(strip(&csv), strip(&run(&dir.path().join("b"))), "mini smoke run is not deterministic");
    // The report has the cross-reward table and both Figure-2 panels.
    let rep = dir.path().join("a/report");
    let o = bin().args(["report", "--results"]).arg(dir.path().join("a")).arg("--out").arg(&rep).output().unwrap();
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let table = std::fs::read_to_string(rep.join("tables/mini-mini-smoke.md")).unwrap();
    assert!(table.contains("| das") && table.contains("gap style_b"), "{table}");
    for f in ["fig2-heldout-mini-smoke.png", "fig2-diversity-mini-smoke.png", "fig2-heldout-mini-smoke.svg"] {
        assert!(rep.join("figures").join(f).exists(), "{f} missing");
    }
    let per_prompt = std::fs::read_to_string(rep.join("tables/prompts-mini-smoke.md")).unwrap();
    let body: Vec<&str> = per_prompt.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| prompt")).collect();
    assert_eq!(body.len(), 2 * methods.len(), "{per_prompt}");
    assert!(body.iter().all(|l| l.matches("**").count() == 2), "style_a marked in every row:\n{per_prompt}");
    assert!(body[0].starts_with("| 0 | T-shirt/top | ddim"), "{per_prompt}");
    let html = std::fs::read_to_string(rep.join("index.html")).unwrap();
    assert!(html.contains("Figure-2 analogue") && html.contains("mini-smoke: cross-reward matrix per prompt"));
}

#[test]
fn mini_plan_errors_name_the_key_and_the_fix() {
    if !have_assets() {
        return;
    }
    let e = plan_error(&format!(
        "{BASE}problem: {{ kind: mini, classes: [] }}\nreward: {{ kind: cls_a }}\nmethods: [{{ method: ddim }}]\n"
    ));
    assert!(e.contains("class:") && e.contains("unconditional"), "{e}");
    let e = plan_error(&format!(
        "{BASE}problem: {{ kind: mini, classes: [0, 12] }}\nreward: {{ kind: style_a }}\nmethods: [{{ method: ddim }}]\n"
    ));
    assert!(e.contains("problem.classes") && e.contains("12"), "{e}");
    let e = plan_error(&format!(
        "{BASE}problem: {{ kind: mini, classes: [0] }}\nreward: {{ kind: style_a }}\nmethods: [{{ method: rl }}]\n"
    ));
    assert!(e.contains("toy"), "{e}");
    let e = plan_error(&format!(
        "{BASE}problem: {{ kind: mini, classes: [0] }}\nreward: {{ kind: style_a }}\nmethods: [{{ method: backprop, last_k: 20 }}]\n"
    ));
    assert!(e.contains("last_k") && e.contains("steps (10)"), "{e}");
    let e = plan_error(&format!(
        "{BASE}problem: {{ kind: mini, classes: [0] }}\nreward: {{ kind: aesthetic }}\nmethods: [{{ method: ddim }}]\n"
    ));
    assert!(e.contains("not available on problem `mini`"), "{e}");
    let e = plan_error(&format!(
        "{BASE}problem: {{ kind: mini, classes: [0] }}\nreward: {{ kind: style_a, class: 3 }}\nmethods: [{{ method: ddim }}]\n"
    ));
    assert!(e.contains("class"), "{e}");
    let e = plan_error(&format!(
        "{BASE}problem: {{ kind: mini, classes: [0] }}\nreward: {{ kind: style_a }}\nmethods: [{{ method: das, particles: 4, selection: weighted }}]\n"
    ));
    assert!(e.contains("argmax_weight"), "{e}");
    // The toy refuses the FMNIST-align rewards.
    let e = plan_error(&format!(
        "{BASE}problem: {{ kind: gmm, preset: gmm1 }}\nreward: {{ kind: style_a }}\nmethods: [{{ method: ddim }}]\n"
    ));
    assert!(e.contains("style_a"), "{e}");
}

/// `metrics.sir`: the SIR reference metrics are written per cell (valid flag, ESS within the draw count, the EMD
/// noise floor shared by every cell of a seed), the same for DDIM and DAS, and the report adds the SIR table; the
/// option is refused on the toy.
#[test]
fn mini_sir_reference_metrics_and_table() {
    if !have_assets() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{BASE}seed: 0\nproblem: {{ kind: mini, classes: [0, 9], guidance_scale: 1.0 }}\nreward: {{ kind: style_a }}\n\
         alpha: 0.571\neta: 1.0\nmetrics: {{ sir: 48 }}\nmethods:\n  - {{ method: ddim }}\n  - {{ method: das, \
         particles: 2, selection: resample, n_out: 1 }}\n"
    );
    let p = dir.path().join("sir.yaml");
    std::fs::write(&p, yaml).unwrap();
    let out = dir.path().join("r");
    let o = bin().arg("run").arg(&p).args(["--quiet", "--out"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("t/metrics.csv")).unwrap();
    let value = |method: &str, metric: &str| -> f64 {
        let line = csv
            .lines()
            .find(|l| l.contains(&format!(",{method},")) && l.contains(&format!(",{metric},")))
            .unwrap_or_else(|| panic!("{method}/{metric} missing:\n{csv}"));
        line.rsplit(',').next().unwrap().parse().unwrap()
    };
    for m in ["ddim", "das"] {
        let ess = value(m, "sir_ess");
        assert!(ess > 1.0 && ess <= 48.0 + 1e-9, "{m}: ESS {ess} of 48 draws");
        assert!(value(m, "emd_sir") > 0.0 && value(m, "emd_sir_floor") > 0.0);
        assert!((value(m, "target_gap_sir") - (value(m, "reward_mean") - value(m, "sir_target"))).abs() < 1e-9);
        assert_eq!(value(m, "sir_valid"), 0.0, "ESS ≤ 48 < 200 is never a valid reference");
    }
    // One reference per process: both cells see the same tilted mean and the same floor.
    assert_eq!(value("ddim", "sir_target"), value("das", "sir_target"));
    assert_eq!(value("ddim", "emd_sir_floor"), value("das", "emd_sir_floor"));
    let o = bin().args(["report", "--results"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let table = std::fs::read_to_string(out.join("report/tables/sir-t.md")).unwrap();
    assert!(table.contains("| ddim") && table.contains("| das") && table.contains("| no |"), "{table}");
    let e = plan_error(&format!(
        "{BASE}problem: {{ kind: gmm, preset: gmm1 }}\nreward: {{ kind: quadratic }}\nalpha: 1.0\nmetrics: {{ sir: 8 }}\n\
         methods:\n  - {{ method: ddim }}\n"
    ));
    assert!(e.contains("metrics.sir"), "{e}");
}
