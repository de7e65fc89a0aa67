//! End-to-end tests of the `alignbench` binary: run a smoke experiment into a temp dir, resume, determinism,
//! and YAML errors that name the key and the fix.

use std::path::Path;

mod common;
use common::{bin, plan_error};

fn run_smoke(out: &Path, extra: &[&str]) -> std::process::Output {
    let o = bin()
        .args(["run", "experiments/smoke/toy.yaml", "--quiet", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .expect("binary runs");
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn read_csv_without_wall(p: &Path) -> Vec<String> {
    let timing = |l: &str| l.contains(",wall_s,") || l.contains(",train_s,");
    std::fs::read_to_string(p).unwrap().lines().filter(|l| !timing(l)).map(String::from).collect()
}

#[test]
fn smoke_run_writes_tidy_rows_resumes_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a");
    run_smoke(&out, &[]);
    let exp = out.join("smoke-toy");
    for f in ["config.yaml", "plan.json", "metrics.csv", "metrics.parquet"] {
        assert!(exp.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(exp.join("metrics.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    for col in ["experiment", "cell", "method", "seed", "alpha", "particles", "metric", "value"] {
        assert!(header.split(',').any(|c| c == col), "column {col} missing in {header}");
    }
    for method in ["ddim", "best_of_n", "das", "oracle"] {
        for metric in [
            "emd",
            "emd_std",
            "emd_floor",
            "reward_mean",
            "reward_target",
            "mode_tv",
            "log_z",
            "nfe",
            "vjp_denoiser",
            "vjp_reward",
            "decoder_calls",
            "reward_calls",
            "wall_s",
        ] {
            assert!(
                csv.lines().any(|l| l.contains(&format!(",{method},")) && l.contains(&format!(",{metric},"))),
                "no {metric} row for {method}"
            );
        }
    }
    assert!(csv.lines().any(|l| l.contains(",das,") && l.contains(",log_z_hat,")));
    // Parquet parses with polars and has as many rows as the CSV.
    let f = std::fs::File::open(exp.join("metrics.parquet")).unwrap();
    use polars::prelude::*;
    let df = ParquetReader::new(f).finish().unwrap();
    assert_eq!(df.height(), csv.lines().count() - 1);
    // Resume: nothing to do on the second run.
    let o = run_smoke(&out, &[]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("0 cells run, 5 already done"), "{s}");
    // Determinism: a fresh run into another folder gives the same bytes (wall time aside).
    let out2 = dir.path().join("b");
    run_smoke(&out2, &[]);
    assert_eq!(
        read_csv_without_wall(&exp.join("metrics.csv")),
        read_csv_without_wall(&out2.join("smoke-toy/metrics.csv"))
    );
    // --fresh recomputes.
    let o = run_smoke(&out, &["--fresh"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("5 cells run"));
}

const BASE: &str =
    "version: 1\nname: t\nproblem: { kind: gmm, preset: gmm1 }\nreward: { kind: quadratic, preset: gmm1 }\n";

#[test]
fn yaml_errors_name_the_key_and_the_fix() {
    let e = plan_error(&format!("{BASE}alpah: 1.0\nmethods: [{{ method: das, particles: 4 }}]\n"));
    assert!(e.contains("unknown field `alpah`") && e.contains("remove or correct"), "{e}");
    let e = plan_error(&format!("{BASE}methods: [{{ method: dass, particles: 4 }}]\n"));
    assert!(e.contains("unknown method") && e.contains("das"), "{e}");
    let e = plan_error(&format!("{BASE}alpha: 0\nmethods: [{{ method: das, particles: 4 }}]\n"));
    assert!(e.contains("alpha") && e.contains("positive"), "{e}");
    let e = plan_error(&format!("{BASE}alpha: -1\nmethods: [{{ method: das, particles: 4 }}]\n"));
    assert!(e.contains("alpha"), "{e}");
    let e = plan_error(&format!("{BASE}methods: [{{ method: das, particles: 0 }}]\n"));
    assert!(e.contains("particles") && e.contains("at least 1"), "{e}");
    let e = plan_error(&format!("{BASE}methods: [{{ method: das, particles: 4, gama: 0.1 }}]\n"));
    assert!(e.contains("unknown field `gama`"), "{e}");
    let e = plan_error("name: t\nmethods: []\n");
    assert!(e.contains("version"), "{e}");
    let bad =
        BASE.replace("{ kind: quadratic, preset: gmm1 }", "{ kind: quadratic, a: [[-10, 0], [0, 1]], b: [0, 0] }");
    let e = plan_error(&format!("{bad}methods: [{{ method: das, particles: 4 }}]\n"));
    assert!(e.contains("not normalisable"), "{e}");
}

#[test]
fn tables_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut tables = Vec::new();
    for t in ["1", "2", "3"] {
        let out = dir.path().join(format!("t{t}"));
        let o = bin()
            .args(["--threads", t, "run", "experiments/smoke/methods.yaml", "--quiet", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        tables.push(read_csv_without_wall(&out.join("smoke-methods/metrics.csv")));
    }
    assert!(tables[0].iter().any(|l| l.contains(",ess_mean,")), "the smoke run reports SMC diagnostics");
    assert_eq!(tables[0], tables[1], "--threads 1 vs 2");
    assert_eq!(tables[0], tables[2], "--threads 1 vs 3");
}

#[test]
fn unknown_keys_are_reported_at_their_real_paths_all_at_once() {
    // A top-level typo is a top-level error, not the first method's.
    let e = plan_error(&format!("{BASE}bogus_key: 1\nmethods: [{{ method: das, particles: 4 }}]\n"));
    assert!(e.contains("\n  bogus_key: unknown field `bogus_key`"), "{e}");
    assert!(!e.contains("methods[0]"), "{e}");
    // Without `methods:` the typo is still reported.
    let e = plan_error(&format!("{BASE}bogus_key: 1\n"));
    assert!(e.contains("bogus_key: unknown field `bogus_key`"), "{e}");
    // Every unknown key at once, each at its path, with the nearest known key.
    let e = plan_error(&format!(
        "{BASE}stpes: 10\nmethods:\n  - {{ method: ddim }}\n  - {{ method: dps }}\n  - {{ method: das, partcles: 4 }}\n"
    ));
    assert!(e.starts_with("Error:") || e.contains("2 unknown keys"), "{e}");
    assert!(e.contains("stpes: unknown field `stpes`; did you mean `steps`?"), "{e}");
    assert!(e.contains("methods[2].partcles: unknown field `partcles`; did you mean `particles`?"), "{e}");
    // Nested keys of the top-level sections.
    let e = plan_error(
        "version: 1\nname: t\nproblem: { kind: gmm, presett: gmm1 }\nmethods: [{ method: das, particles: 4 }]\n",
    );
    assert!(e.contains("problem.presett: unknown field `presett`; did you mean `preset`?"), "{e}");
    let e = plan_error(&format!("{BASE}metrics: {{ emd_repeat: 2 }}\nmethods: [{{ method: ddim }}]\n"));
    assert!(e.contains("metrics.emd_repeat: unknown field `emd_repeat`; did you mean `emd_repeats`?"), "{e}");
    // A key of another method is unknown to this one, with the list of what is known.
    let e = plan_error(&format!("{BASE}methods: [{{ method: ddim, children: 4 }}]\n"));
    assert!(e.contains("methods[0].children: unknown field `children`; known keys here:"), "{e}");
}

#[test]
fn custom_problem_in_three_dimensions_plans_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(
        &p,
        "version: 1\nname: custom3d\nseed: 0\nsteps: 10\ngroups: 4\n\
         problem: { kind: gmm, weights: [0.3, 0.7], means: [[0, 0, 0], [2, 1, 0]], covs: [[[1,0,0],[0,1,0],[0,0,1]], [[0.5,0.1,0],[0.1,0.5,0],[0,0,0.5]]] }\n\
         reward: { kind: quadratic, a: [[1,0,0],[0,1,0],[0,0,1]], b: [0.5, 0, 0], c: 0.1 }\n\
         metrics: { target_pool: 200, emd_n: 50, emd_repeats: 2, keep_samples: 10 }\n\
         methods: [{ method: das, particles: 8 }, { method: oracle, particles: 2 }]\n",
    )
    .unwrap();
    let o = bin().args(["run", "--quiet", "--out"]).arg(dir.path().join("out")).arg(&p).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(dir.path().join("out/custom3d/metrics.csv")).unwrap();
    assert!(csv.contains(",custom,"));
}

#[test]
fn list_commands() {
    for what in ["methods", "rewards", "experiments"] {
        let o = bin().args(["list", what]).output().unwrap();
        assert!(o.status.success());
        assert!(!o.stdout.is_empty());
        assert!(!String::from_utf8_lossy(&o.stdout).contains("INVALID"), "{}", String::from_utf8_lossy(&o.stdout));
    }
}

#[test]
fn report_from_a_smoke_run_has_parseable_tables_and_valid_images() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let o = bin().args(["run", "--quiet", "--out"]).arg(&out).arg("experiments/smoke/toy.yaml").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = bin().args(["report", "--results"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep = out.join("report");
    let html = std::fs::read_to_string(rep.join("index.html")).unwrap();
    assert!(html.contains("<h2") && html.contains("Compute ledger"), "{html}");
    // Every referenced file exists and is what its extension says.
    let mut refs = 0;
    for part in html.split(['"']).filter(|s| s.starts_with("figures/") || s.starts_with("tables/")) {
        let p = rep.join(part);
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        refs += 1;
        match p.extension().and_then(|s| s.to_str()).unwrap() {
            "png" => assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{part}"),
            "svg" => {
                let s = String::from_utf8(bytes).unwrap();
                assert!(s.contains("<svg") && s.trim_end().ends_with("</svg>"), "{part}");
            }
            "csv" => {
                let mut r = csv::Reader::from_reader(bytes.as_slice());
                let width = r.headers().unwrap().len();
                assert!(width > 1);
                for rec in r.records() {
                    assert_eq!(rec.unwrap().len(), width, "{part}");
                }
            }
            "parquet" => {
                use polars::prelude::*;
                let df = ParquetReader::new(std::io::Cursor::new(bytes)).finish().unwrap();
                assert!(df.width() > 1, "{part}");
            }
            "md" => assert!(String::from_utf8(bytes).unwrap().contains("|---"), "{part}"),
            other => panic!("unexpected file type {other}"),
        }
    }
    assert!(html.contains("figures/samples-smoke-toy-gmm1-analytic.png"), "the sample panels are in the report");
    // The exact target comes from what the run stored (targets/<key>.json); without it the page says why.
    let stored_target = out.join("smoke-toy/targets").is_dir();
    assert_eq!(html.contains("the run stored no target density"), !stored_target, "{html}");
    // Tables with nothing to show are left out: no toy-* experiment ran, so nothing matches the reference numbers.
    assert!(!rep.join("tables/reference.csv").exists());
    assert!(rep.join("tables/particles.csv").exists() && rep.join("tables/rewards.csv").exists());
    assert!(refs >= 12, "only {refs} referenced files");
    // Rebuilding replaces the report in place.
    let o = bin().args(["report", "--results"]).arg(&out).output().unwrap();
    assert!(o.status.success());
    assert!(!out.join(".report.partial").exists());
}

#[test]
fn report_without_results_says_what_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin().args(["report", "--results"]).arg(dir.path()).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("make reproduce"));
}
