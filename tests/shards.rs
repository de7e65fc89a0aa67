//! Sharding cannot change results (issue 17): the merged tables of any sharding — N = 1, 2, 3, 7, shards run in
//! reverse order, a shard killed mid-run and resumed, shards written to separate folders copied back from nodes —
//! are byte-identical to an unsharded run, `wall_s` rows aside. Also the merge's refusals (a foreign cell, a cell
//! of another alignbench version, missing cells) and the plan-time guards (more than 100,000 cells without
//! `--yes`, a size that cannot fit in memory).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

mod common;
use common::{bin, plan_error};

/// Ten cells (two seeds × ddim, best-of-N, DAS at 4 and 8 particles, oracle), a few seconds each at most.
const SWEEP: &str = "version: 1
name: shard-sweep
description: The sharding tests' sweep.
seeds: [1, 2]
problem: { kind: gmm, preset: gmm1 }
reward: { kind: quadratic, preset: gmm1 }
alpha: 1.0
steps: 20
groups: 24
metrics: { target_pool: 1000, emd_n: 100, emd_repeats: 3, keep_samples: 200 }
methods:
  - method: ddim
    particles: 4
  - method: best_of_n
    particles: 4
  - method: das
    particles: [4, 8]
  - method: oracle
    particles: 4
";
const CELLS: usize = 10;
const NAME: &str = "shard-sweep";

fn ok(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn run(yaml: &Path, out: &Path, extra: &[&str]) -> String {
    let o = bin().arg("run").arg(yaml).arg("--quiet").arg("--out").arg(out).args(extra).output().unwrap();
    ok(o, &format!("run {extra:?}"))
}

fn merge(args: &[&Path], extra: &[&str]) -> Output {
    bin().arg("merge").args(args).args(extra).output().unwrap()
}

/// The table files without their timing rows (the only column allowed to differ).
fn tables(exp: &Path) -> Vec<(String, String)> {
    ["metrics.csv", "prompts.csv"]
        .iter()
        .filter(|f| exp.join(f).exists() || **f == "metrics.csv")
        .map(|f| {
            let text =
                std::fs::read_to_string(exp.join(f)).unwrap_or_else(|e| panic!("{}: {e}", exp.join(f).display()));
            let kept: Vec<&str> =
                text.lines().filter(|l| !l.contains(",wall_s,") && !l.contains(",train_s,")).collect();
            (f.to_string(), kept.join("\n"))
        })
        .collect()
}

fn cell_files(exp: &Path) -> usize {
    std::fs::read_dir(exp.join("cells"))
        .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "json")).count())
        .unwrap_or(0)
}

fn setup() -> (tempfile::TempDir, PathBuf, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("sweep.yaml");
    std::fs::write(&yaml, SWEEP).unwrap();
    let reference = dir.path().join("unsharded");
    run(&yaml, &reference, &[]);
    let t = tables(&reference.join(NAME));
    assert!(t[0].1.lines().count() > CELLS * 5, "the reference run wrote its tables");
    (dir, yaml, t)
}

/// Run shard `i/n` and kill it (SIGKILL) as soon as it has written `after` new cell files.
fn run_and_kill(yaml: &Path, out: &Path, i: usize, n: usize, after: usize) -> bool {
    let exp = out.join(NAME);
    let before = cell_files(&exp);
    let mut child = bin()
        .arg("--threads")
        .arg("1")
        .arg("run")
        .arg(yaml)
        .args(["--quiet", "--shard", &format!("{i}/{n}"), "--out"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "shard {i}/{n} failed before it could be killed");
            return false;
        }
        if cell_files(&exp) >= before + after {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "shard {i}/{n} wrote no cell in 300 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn any_sharding_merges_to_the_unsharded_tables() {
    let (dir, yaml, reference) = setup();
    for n in [1usize, 2, 3, 7] {
        let out = dir.path().join(format!("n{n}"));
        let exp = out.join(NAME);
        let mut owned = 0;
        // Shards in reverse order; with N = 3, shard 1 is killed after its first cell and then resumed.
        for i in (0..n).rev() {
            if n == 3 && i == 1 {
                let killed = run_and_kill(&yaml, &out, i, n, 1);
                eprintln!("N = {n}: shard {i} killed mid-run: {killed}");
                let partial = cell_files(&exp);
                let stdout = run(&yaml, &out, &["--shard", &format!("{i}/{n}")]);
                if killed {
                    assert!(
                        stdout.contains("already done") && !stdout.contains(" 0 already done"),
                        "resumed shard reports its finished cells: {stdout}"
                    );
                }
                assert!(cell_files(&exp) >= partial);
            } else {
                run(&yaml, &out, &["--shard", &format!("{i}/{n}")]);
            }
            assert!(!exp.join("metrics.csv").exists(), "shards never write the tables (N = {n}, shard {i})");
            owned = cell_files(&exp);
        }
        assert_eq!(owned, CELLS, "N = {n}: every cell ran in exactly one shard");
        let stdout = ok(merge(&[&out], &[]), "merge");
        assert!(stdout.contains(&format!("{CELLS}/{CELLS} cells")), "{stdout}");
        assert_eq!(tables(&exp), reference, "N = {n}: merged tables differ from the unsharded run");
        assert!(exp.join("metrics.parquet").exists());
    }
}

#[test]
fn shards_in_separate_folders_merge_into_one() {
    let (dir, yaml, reference) = setup();
    let nodes: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("node{i}"))).collect();
    for (i, node) in nodes.iter().enumerate() {
        run(&yaml, node, &["--shard", &format!("{i}/3")]);
    }
    let merged = dir.path().join("merged");
    let refs: Vec<&Path> = nodes.iter().map(PathBuf::as_path).collect();
    let o = bin().arg("merge").args(&refs).arg("--out").arg(&merged).output().unwrap();
    ok(o, "merge of three node folders");
    assert_eq!(cell_files(&merged.join(NAME)), CELLS, "the cells are copied in");
    assert_eq!(tables(&merged.join(NAME)), reference);
    // Merging again is a no-op with the same result.
    ok(bin().arg("merge").args(&refs).arg("--out").arg(&merged).output().unwrap(), "second merge");
    assert_eq!(tables(&merged.join(NAME)), reference);
}

#[test]
fn merge_refuses_foreign_cells_other_versions_and_reports_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("sweep.yaml");
    std::fs::write(&yaml, SWEEP).unwrap();
    let out = dir.path().join("r");
    run(&yaml, &out, &["--shard", "0/2"]);
    let exp = out.join(NAME);
    let have = cell_files(&exp);
    assert!(have > 0 && have < CELLS);

    // Missing cells: one error that counts them and says how to finish; --partial tabulates what is there.
    let o = merge(&[&out], &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{} of {CELLS} cells", CELLS - have)) && err.contains("--partial"), "{err}");
    assert!(err.contains("--shard"), "says how to run the missing shard: {err}");
    assert!(!exp.join("metrics.csv").exists(), "nothing written on error");
    let stdout = ok(merge(&[&out], &["--partial"]), "merge --partial");
    assert!(stdout.contains("missing"), "{stdout}");
    assert!(exp.join("metrics.csv").exists());

    // A cell of another plan (another seed) dropped into the folder.
    let other = dir.path().join("other.yaml");
    std::fs::write(&other, SWEEP.replace("seeds: [1, 2]", "seeds: [3]")).unwrap();
    let o2 = dir.path().join("o");
    run(&other, &o2, &["--shard", "0/5"]);
    let foreign = std::fs::read_dir(o2.join(NAME).join("cells")).unwrap().next().unwrap().unwrap().path();
    let fname = foreign.file_name().unwrap().to_owned();
    std::fs::copy(&foreign, exp.join("cells").join(&fname)).unwrap();
    let o = merge(&[&out], &["--partial"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let id = fname.to_string_lossy().trim_end_matches(".json").to_string();
    assert!(err.contains(&id) && err.contains("different plan"), "{err}");
    std::fs::remove_file(exp.join("cells").join(&fname)).unwrap();

    // A cell written by another crate version.
    let cell = std::fs::read_dir(exp.join("cells")).unwrap().next().unwrap().unwrap().path();
    let text = std::fs::read_to_string(&cell).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ours = v["crate_version"].as_str().unwrap().to_string();
    v["crate_version"] = serde_json::Value::String("0.0.0-elsewhere".into());
    std::fs::write(&cell, serde_json::to_string(&v).unwrap()).unwrap();
    let o = merge(&[&out], &["--partial"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("0.0.0-elsewhere") && err.contains(&ours), "names both versions: {err}");
    assert!(err.contains(cell.file_stem().unwrap().to_str().unwrap()), "names the cell: {err}");

    // Two folders of different plans under one experiment name.
    let o = merge(&[&out, &o2], &["--out", dir.path().join("m").to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("different plans"), "{err}");
}

#[test]
fn shard_arguments_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (arg, needle) in [("3/3", "0 ≤ I < N"), ("x", "expected I/N"), ("1/0", "0 ≤ I < N")] {
        let o = bin()
            .args(["run", "experiments/smoke/toy.yaml", "--quiet", "--shard", arg, "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!o.status.success(), "--shard {arg} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "--shard {arg}: {err}");
    }
    let o = bin()
        .args(["run", "experiments/smoke/toy.yaml", "--quiet", "--shard", "auto", "--out"])
        .arg(dir.path())
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("SLURM_ARRAY_TASK_ID"));
    // Slurm's variables pick the shard.
    let o = bin()
        .args(["run", "experiments/smoke/toy.yaml", "--quiet", "--shard", "auto", "--out"])
        .arg(dir.path())
        .env("SLURM_ARRAY_TASK_ID", "5")
        .env("SLURM_ARRAY_TASK_MIN", "4")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .output()
        .unwrap();
    let stdout = ok(o, "run --shard auto");
    assert!(stdout.contains("shard 1/3"), "{stdout}");
    assert!(!dir.path().join("smoke-toy").join("metrics.csv").exists());
}

#[test]
fn plans_over_100000_cells_ask_for_yes() {
    let seeds: Vec<String> = (0..400).map(|s| s.to_string()).collect();
    let alphas: Vec<String> = (1..=300).map(|a| format!("{}", a as f64 / 10.0)).collect();
    let yaml = format!(
        "version: 1\nname: huge\nseeds: [{}]\nproblem: {{ kind: gmm, preset: gmm1 }}\nreward: {{ kind: quadratic, preset: \
         gmm1 }}\nalpha: [{}]\nsteps: 20\ngroups: 10\nmethods:\n  - method: ddim\n    particles: 4\n",
        seeds.join(", "),
        alphas.join(", ")
    );
    let t0 = Instant::now();
    let err = plan_error(&yaml);
    assert!(err.contains("120000") || err.contains("120,000"), "counts the cells: {err}");
    assert!(err.contains("--yes"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(20), "refused before expanding ({:?})", t0.elapsed());
}

#[test]
fn sizes_that_cannot_fit_in_memory_are_refused_at_plan_time() {
    for (key, yaml) in [
        ("groups", "groups: 1000000000000\nmethods:\n  - method: das\n    particles: 4\n"),
        ("particles", "groups: 10\nmethods:\n  - method: das\n    particles: 1000000000000\n"),
    ] {
        let err = plan_error(&format!(
            "version: 1\nname: big\nseed: 1\nproblem: {{ kind: gmm, preset: gmm1 }}\nreward: {{ kind: quadratic, preset: \
             gmm1 }}\nalpha: 1.0\nsteps: 20\n{yaml}"
        ));
        assert!(err.contains("memory") && err.contains("B"), "{key}: {err}");
        assert!(!err.contains("panicked"), "{key}: {err}");
    }
}

#[test]
fn slurm_dry_run_prints_the_array_and_the_dependent_merge() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["slurm", "experiments/smoke/toy.yaml", "--shards", "4", "--dry-run", "--partition", "debug"])
        .args(["--time", "0:10:00", "--max-parallel", "2", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = ok(o, "slurm --dry-run");
    for needle in [
        "#SBATCH --array=0-3%2",
        "#SBATCH --partition=debug",
        "#SBATCH --time=0:10:00",
        "--shard auto",
        "merge",
        "report",
        "--dependency=afterok",
    ] {
        assert!(stdout.contains(needle), "`{needle}` missing from:\n{stdout}");
    }
    assert!(!stdout.contains("--gres"), "CPU cells ask for no GPU:\n{stdout}");
    assert!(!dir.path().join("smoke-toy").join("slurm").exists(), "a dry run writes nothing");
}
