//! Stable Diffusion experiments end to end on the tiny random-weight SD (no downloads): a YAML experiment with
//! `problem: { kind: sd15, path: <tiny folder> }` runs DAS and DPS on the CPU and writes the cross-reward metrics,
//! per cell and per prompt, and the report shows both; the paper experiments fail at plan time with a file error naming the missing folder, and `reproduce` lists them
//! as skipped with that path.

use std::path::Path;

use alignbench::experiment::plan::{plan_file, plan_str};
use alignbench::experiment::run::{run_plan, RunOptions};
use alignbench::problems::sd15::{tiny_config, write_random_folder, PromptManifest, Variant};
use alignbench::Error;
use polars::prelude::{ParquetReader, SerReader};

mod common;
use common::bin;

fn tiny_yaml(dir: &Path) -> String {
    format!(
        "version: 1
name: sd-tiny
seed: 3
problem:
  kind: sd15
  path: {}
  pinned: false
  latent_size: 8
  guidance_scale: 2.0
  prompts: eval_simple_animals
  n_prompts: 2
  eval_rewards:
    - {{ kind: jpeg_compressibility }}
    - {{ kind: weighted_sum, terms: [{{ weight: 2.0, reward: {{ kind: brightness }} }}] }}
reward: {{ kind: brightness }}
alpha: 0.05
steps: 3
grid: sd15
eta: 1.0
groups: 2
methods:
  - {{ method: das, particles: 2, selection: argmax_weight }}
  - {{ method: dps, step_size: variance_scaled }}
",
        dir.display()
    )
}

#[test]
fn tiny_sd_experiment_writes_the_cross_reward_row() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny-sd");
    write_random_folder(&model, &tiny_config(), 7, Variant::Fp32, false).unwrap();
    let plan = plan_str(&tiny_yaml(&model), Path::new("sd-tiny.yaml")).unwrap();
    assert_eq!(plan.cells.len(), 2);
    let out = tmp.path().join("results");
    let s = run_plan(&plan, &RunOptions { out: out.clone(), fresh: false, progress: false, shard: None }).unwrap();
    assert_eq!(s.ran, 2);
    let csv = std::fs::read_to_string(out.join("sd-tiny/metrics.csv")).unwrap();
    let value = |method: &str, metric: &str| -> f64 {
        let l = csv
            .lines()
            .find(|l| l.contains(&format!(",{method},")) && l.contains(&format!(",{metric},")))
            .unwrap_or_else(|| panic!("no {metric} row for {method}:\n{csv}"));
        l.rsplit(',').next().unwrap().parse().unwrap()
    };
    for m in ["das", "dps"] {
        for metric in ["reward_mean", "r_brightness", "r_brightness_sd", "r_jpeg_compressibility", "nfe", "wall_s"] {
            assert!(value(m, metric).is_finite(), "{m} {metric}");
        }
        // The target re-scored on the decoded outputs is the sampler's own reward; 2·brightness is twice it.
        let (r, b) = (value(m, "reward_mean"), value(m, "r_brightness"));
        assert!((r - b).abs() < 1e-4, "{m}: reward_mean {r} vs r_brightness {b}");
        assert!((value(m, "r_2*brightness") - 2.0 * b).abs() < 1e-4);
        assert!((0.0..=1.0).contains(&b));
        assert!(value(m, "r_jpeg_compressibility") < 0.0);
        assert_eq!(value(m, "n_prompts"), 2.0);
    }
    // The cell files keep the prompt manifest's identity, the model files' digests and a few images.
    let cells: Vec<_> = std::fs::read_dir(out.join("sd-tiny/cells")).unwrap().flatten().collect();
    assert_eq!(cells.len(), 2);
    let cell: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cells[0].path()).unwrap()).unwrap();
    let params = &cell["params"];
    assert!(params["prompt_manifest"].as_str().unwrap().contains("das_eval_simple_animals"), "{params}");
    assert_eq!(params["prompt_sha256"].as_str().unwrap().len(), 64);
    assert!(params["sha256:unet/diffusion_pytorch_model.safetensors"].is_string(), "{params}");
    let d = cell["samples"]["d"].as_u64().unwrap() as usize;
    let x = cell["samples"]["x"].as_array().unwrap();
    assert!(d > 0 && x.len() % d == 0 && x.len() / d == 2, "d {d}, {} values", x.len());
    // The cross-reward matrix per prompt: 2 cells × 2 prompts × 3 rewards, consistent with the cell metrics; each
    // cell's prompts are its recorded draw (manifest index and text).
    let labels = ["brightness", "jpeg_compressibility", "2*brightness"];
    let rows = common::check_prompt_table(&out.join("sd-tiny"), 2, 2, &labels, "brightness");
    let manifest = PromptManifest::builtin("eval_simple_animals").unwrap();
    for entry in &cells {
        let cell: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap()).unwrap();
        let drawn: Vec<&str> = cell["params"]["prompt_indices"].as_str().unwrap().split(' ').collect();
        let id = cell["id"].as_str().unwrap();
        let mine: Vec<&common::PromptCsvRow> = rows.iter().filter(|r| r.cell == id).collect();
        for r in &mine {
            assert!(drawn.contains(&r.prompt.as_str()), "{r:?} not in {drawn:?}");
            assert_eq!(r.text, manifest.prompts[r.prompt.parse::<usize>().unwrap()]);
        }
        assert!(drawn.iter().all(|d| mine.iter().any(|r| r.prompt == *d)));
        // The same rows are kept in the cell file (the store rebuilds the tables from them).
        assert_eq!(cell["prompts"].as_array().unwrap().len(), 6);
    }
    // Resume: nothing left to run, and the tidy tables are rebuilt without duplicates.
    let again = run_plan(&plan, &RunOptions { out: out.clone(), fresh: false, progress: false, shard: None }).unwrap();
    assert_eq!((again.ran, again.skipped), (0, 2));
    common::check_prompt_table(&out.join("sd-tiny"), 2, 2, &labels, "brightness");
    // The report shows the SD cells: the cross-reward table per cell and per prompt, guide in bold, `*` escaped.
    let rep = tmp.path().join("report");
    let o = bin().args(["report", "--results"]).arg(&out).arg("--out").arg(&rep).output().unwrap();
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let cross = std::fs::read_to_string(rep.join("tables/cross-sd-tiny.md")).unwrap();
    assert!(cross.contains("| 2\\*brightness | 2\\*brightness ±95% |"), "{cross}");
    assert!(cross.lines().filter(|l| l.starts_with("| das") || l.starts_with("| dps")).count() == 2, "{cross}");
    let per_prompt = std::fs::read_to_string(rep.join("tables/prompts-sd-tiny.md")).unwrap();
    let body: Vec<&str> = per_prompt.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| prompt")).collect();
    assert_eq!(body.len(), 4, "2 prompts × 2 configurations:\n{per_prompt}");
    assert!(body.iter().all(|l| l.matches("**").count() == 2), "the guide is marked once per row:\n{per_prompt}");
    for r in &rows {
        assert!(per_prompt.contains(&format!("| {} | {} |", r.prompt, r.text)), "{r:?}\n{per_prompt}");
    }
    let f = std::fs::File::open(rep.join("tables/prompts-sd-tiny.parquet")).unwrap();
    let df = ParquetReader::new(f).finish().unwrap();
    assert!(df.column("2*brightness").unwrap().f64().is_ok() && df.height() == 4);
    let html = std::fs::read_to_string(rep.join("index.html")).unwrap();
    assert!(html.contains("sd-tiny: cross-reward matrix per prompt") && html.contains("td class=\"num mark\""));
}

#[test]
fn gradient_methods_refuse_black_box_targets_and_bad_keys_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny-sd");
    write_random_folder(&model, &tiny_config(), 7, Variant::Fp32, false).unwrap();
    let yaml = tiny_yaml(&model).replace("reward: { kind: brightness }", "reward: { kind: jpeg_compressibility }");
    let e = plan_str(&yaml, Path::new("x.yaml")).unwrap_err().to_string();
    assert!(e.contains("das") && e.contains("black-box"), "{e}");
    let e = plan_str(&tiny_yaml(&model).replace("n_prompts: 2", "n_prompts: 11"), Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("n_prompts") && e.contains("without replacement"), "{e}");
    let e = plan_str(&tiny_yaml(&model).replace("pinned: false", "pinned: false\n  colour: 1"), Path::new("x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("colour"), "{e}");
    // A file of the folder is missing: the error names it and the download command.
    std::fs::remove_file(model.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    match plan_str(&tiny_yaml(&model), Path::new("x.yaml")).unwrap_err() {
        Error::File { path, message } => {
            assert!(path.ends_with("vae/diffusion_pytorch_model.safetensors"), "{path}");
            assert!(message.contains("huggingface-cli download"), "{message}");
        }
        other => panic!("expected a file error, got {other}"),
    }
}

#[test]
fn paper_experiments_without_weights_fail_at_plan_time_naming_the_path() {
    let papers: Vec<_> = std::fs::read_dir("experiments/paper").unwrap().flatten().map(|e| e.path()).collect();
    assert!(papers.len() >= 5, "{papers:?}");
    let models = tempfile::tempdir().unwrap();
    for p in &papers {
        // Through the binary, with the env pointing at an empty models folder.
        let o = bin().arg("plan").arg(p).env("ALIGNBENCH_MODELS", models.path()).output().unwrap();
        assert!(!o.status.success(), "{} planned without weights", p.display());
        let err = String::from_utf8_lossy(&o.stderr);
        let want = models.path().join("stable-diffusion-v1-5");
        assert!(err.contains(&want.display().to_string()), "{}: {err}", p.display());
        assert!(err.contains("huggingface-cli download"), "{err}");
    }
    // Without the env, the error names `$ALIGNBENCH_MODELS/stable-diffusion-v1-5` (a file error: reproduce skips).
    let o = bin().arg("plan").arg(&papers[0]).env_remove("ALIGNBENCH_MODELS").output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("$ALIGNBENCH_MODELS/stable-diffusion-v1-5"));
    if std::env::var_os("ALIGNBENCH_MODELS").is_none() {
        assert!(matches!(plan_file(&papers[0]), Err(Error::File { .. })));
    }
}

#[test]
fn reproduce_lists_paper_experiments_as_skipped_with_the_paths_they_need() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("experiments/paper");
    std::fs::create_dir_all(&exp).unwrap();
    for name in ["aesthetic.yaml", "multi.yaml"] {
        std::fs::copy(Path::new("experiments/paper").join(name), exp.join(name)).unwrap();
    }
    let models = tmp.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let o = bin()
        .arg("reproduce")
        .arg("--experiments")
        .arg(tmp.path().join("experiments"))
        .arg("--out")
        .arg(tmp.path().join("results"))
        .env("ALIGNBENCH_MODELS", &models)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("Skipped (missing inputs):"), "{stdout}");
    let need = models.join("stable-diffusion-v1-5").display().to_string();
    for name in ["aesthetic.yaml", "multi.yaml"] {
        assert!(
            stdout.lines().any(|l| l.contains(name) && l.contains(&format!("needs {need}"))),
            "{name} not skipped with {need}:\n{stdout}"
        );
    }
}

#[test]
fn the_2025_methods_run_on_tiny_sd_with_the_ledger_of_the_cost_model() {
    // Issue #18, item 4: DTS★, the Ψ-sampler and the search methods on Stable Diffusion (tiny random weights, CPU).
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny-sd");
    write_random_folder(&model, &tiny_config(), 7, Variant::Fp32, false).unwrap();
    let methods = "methods:
  - { method: das, particles: 2, selection: argmax_weight }
  - { method: dts, mode: search, particles: 1, rows: 14 }
  - { method: dts, particles: 2, rows: 10 }
  - { method: psi, particles: 2, map_steps: 2, selection: argmax_weight }
  - { method: zero_order, particles: 2, rounds: 2 }
  - { method: path_search, particles: 2, children: 2, back: 1, interval: 1 }
  - { method: beam_search, particles: 2, children: 2, lookahead: 1 }
";
    let y = tiny_yaml(&model);
    let y = format!("{}{methods}", &y[..y.find("methods:").unwrap()]).replace("steps: 3", "steps: 4");
    let plan = plan_str(&y, Path::new("sd-tiny-2025.yaml")).unwrap();
    assert_eq!(plan.cells.len(), 7);
    for c in &plan.cells {
        let r = alignbench::experiment::runner::run_cell(c, &|_| {}).unwrap();
        let want = alignbench::experiment::cost::per_group(&c.spec);
        let name = c.spec.method.name();
        // Classifier-free guidance (scale 2) runs the UNet on two rows per denoiser evaluation, for every method;
        // a VJP counts once per particle row.
        assert_eq!(r.metrics["nfe"], 2.0 * want.nfe, "{name} nfe");
        assert_eq!(r.metrics["vjp_denoiser"], want.vjp_denoiser, "{name} vjp_denoiser");
        if name == "dts" {
            assert!(r.metrics["reward_calls"] <= want.reward_calls, "dts reward_calls");
        } else {
            assert_eq!(r.metrics["reward_calls"], want.reward_calls, "{name} reward_calls");
        }
        assert!(r.metrics["reward_mean"].is_finite(), "{name}: {:?}", r.metrics);
    }
}

fn random_yaml(extra: &str) -> String {
    format!(
        "version: 1
name: sd-random
seed: 5
problem:
  kind: sd15
  random_weights: tiny
  latent_size: 8
  prompts: eval_simple_animals
{extra}reward: {{ kind: aesthetic }}
alpha: 0.05
steps: 3
grid: sd15
eta: 1.0
groups: 2
methods:
  - {{ method: das, particles: 2, selection: argmax_weight }}
  - {{ method: dps, step_size: variance_scaled }}
"
    )
}

/// `random_weights: tiny` runs the paper's reward architecture (aesthetic: CLIP + head) without any file or
/// ALIGNBENCH_MODELS, and the cells report cost figures only — the ledger, seconds per image, peak memory — never
/// a reward number; the report shows the cost table. Reward numbers are refused at plan time.
#[test]
fn random_weights_report_cost_and_no_reward_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = plan_str(&random_yaml(""), Path::new("sd-random.yaml")).unwrap();
    let out = tmp.path().join("results");
    let s = run_plan(&plan, &RunOptions { out: out.clone(), fresh: false, progress: false, shard: None }).unwrap();
    assert_eq!(s.ran, 2);
    let csv = std::fs::read_to_string(out.join("sd-random/metrics.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let metric_col = header.iter().position(|h| *h == "metric").unwrap();
    let metrics: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').nth(metric_col).unwrap()).collect();
    for m in ["s_per_image", "sample_s", "nfe", "vjp_denoiser", "random_weights", "wall_s"] {
        assert!(metrics.contains(&m), "{m} missing: {metrics:?}");
    }
    for m in &metrics {
        assert!(!m.starts_with("r_") && *m != "reward_mean" && *m != "log_z_hat", "reward number `{m}` reported");
    }
    let value = |method: &str, metric: &str| -> f64 {
        let l = csv.lines().find(|l| l.contains(&format!(",{method},")) && l.contains(&format!(",{metric},"))).unwrap();
        l.rsplit(',').next().unwrap().parse().unwrap()
    };
    for m in ["das", "dps"] {
        let (sp, st) = (value(m, "s_per_image"), value(m, "sample_s"));
        assert!(sp > 0.0 && (sp * 2.0 - st).abs() < 1e-9, "{m}: {sp} s/image, {st} s");
    }
    // CFG doubles the UNet rows: 3 steps × 2 particles × 2 rows for DAS per prompt group.
    assert_eq!(value("das", "nfe"), 12.0);
    let rep = tmp.path().join("report");
    let o = bin().args(["report", "--results"]).arg(&out).arg("--out").arg(&rep).output().unwrap();
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let cost = std::fs::read_to_string(rep.join("tables/cost-sd-random.md")).unwrap();
    assert!(cost.contains("s_per_image") && cost.lines().filter(|l| l.starts_with("| d")).count() == 2, "{cost}");
    // Reward numbers are refused; so is a value other than true / false / tiny.
    let e = plan_str(&random_yaml("  eval_rewards: [{ kind: pickscore }]\n"), Path::new("x.yaml")).unwrap_err();
    assert!(e.to_string().contains("problem.eval_rewards") && e.to_string().contains("never reward numbers"), "{e}");
    let e = plan_str(&random_yaml("").replace("random_weights: tiny", "random_weights: huge"), Path::new("x.yaml"))
        .unwrap_err();
    assert!(e.to_string().contains("random_weights") && e.to_string().contains("tiny"), "{e}");
    let onnx = random_yaml("").replace("{ kind: aesthetic }", "{ kind: onnx, path: x.onnx }");
    let e = plan_str(&onnx, Path::new("x.yaml")).unwrap_err();
    assert!(e.to_string().contains("reward: ") && e.to_string().contains("onnx"), "{e}");
}

/// `alignbench cost FILE --tiny`: the experiment as written (reward numbers dropped) runs on random weights and
/// prints per-method seconds per image, the ledger per image, the row-model price and the whole-experiment hours;
/// a toy experiment and a wrong `--methods` name get one clear error each.
#[test]
fn cost_command_prints_seconds_per_image_per_method() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("paper-like.yaml");
    let yaml = random_yaml("  eval_rewards: [{ kind: pickscore }]\n  path: /nowhere\n")
        .replace("random_weights: tiny", "random_weights: false")
        .replace("groups: 2", "groups: 40");
    std::fs::write(&file, yaml).unwrap();
    let out = tmp.path().join("cost");
    let o = bin()
        .args(["cost", "--tiny", "--prompts", "1", "--quiet", "--row-seconds", "0.01,0.1,0.05,0.02", "--out"])
        .arg(&out)
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "stderr: {}", String::from_utf8_lossy(&o.stderr));
    let line = |k: &str| -> f64 {
        let l = stdout.lines().find(|l| l.starts_with(k)).unwrap_or_else(|| panic!("{k} missing:\n{stdout}"));
        l.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert!(line("cost_sd-random_das_s_per_image:") > 0.0 && line("cost_sd-random_dps_s_per_image:") > 0.0);
    // DAS: 3 steps × 2 particles × 2 CFG rows; its guided steps priced once each (3 × 2 × 0.1) + 2 final rewards.
    assert_eq!(line("cost_sd-random_das_nfe_per_image:"), 12.0);
    assert!((line("cost_sd-random_das_row_model_s_per_image:") - (0.6 + 2.0 * 0.02)).abs() < 1e-3, "{stdout}");
    assert!(line("cost_sd-random_whole_experiment:") > 0.0, "{stdout}");
    let toy = tmp.path().join("toy.yaml");
    std::fs::write(&toy, "version: 1\nname: t\nproblem: { kind: gmm, preset: gmm1 }\nreward: { kind: quadratic }\nmethods: [{ method: ddim }]\n").unwrap();
    let o = bin().args(["cost", "--tiny"]).arg(&toy).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("sd15") && !e.contains("panicked"), "{e}");
    let o = bin().args(["cost", "--tiny", "--methods", "fk"]).arg(&file).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("--methods") && e.contains("das, dps"), "{e}");
}
