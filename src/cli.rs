//! Command-line interface (clap derive). `main` calls [`run`] and prints the error chain.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};

use alignbench::experiment::plan::{plan_file, plan_file_with, PlanOptions};
use alignbench::experiment::run::{describe_plan, run_plan, RunOptions};
use alignbench::experiment::shard::Shard;
use alignbench::problems::toy::assets_dir;
use alignbench::problems::toy::gmm::Gmm;
use alignbench::problems::toy::train::{train, TrainConfig};
use alignbench::{rewards, Error, Result};

use crate::bench;

/// alignbench: reproduce and benchmark test-time reward alignment of diffusion models.
#[derive(Parser, Debug)]
#[command(name = "alignbench", version, about)]
pub struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Device of Stable Diffusion cells (`cpu`, `cuda`, `cuda:N`, `auto`), overriding every `problem.device`
    /// (the same as env `ALIGNBENCH_DEVICE`); the device used is recorded in each cell's parameters.
    #[arg(long, global = true)]
    pub device: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

impl Cli {
    /// Whether the command trains networks with large sequential batches (candle's own thread pool pays off there;
    /// everywhere else the runner parallelises over chunks and candle runs one thread per worker).
    pub fn trains(&self) -> bool {
        matches!(self.cmd, Cmd::Train { .. })
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show the expanded cells of experiment files, their estimated cost, and any validation error.
    Plan {
        /// Experiment YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Results folder (marks finished cells).
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Go ahead with a plan of more than 100,000 cells.
        #[arg(long)]
        yes: bool,
    },
    /// Run experiment files (finished cells are skipped: runs resume).
    Run {
        /// Experiment YAML files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Results folder.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Recompute every cell even if its result exists.
        #[arg(long)]
        fresh: bool,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
        /// Run only shard I of N (`I/N`, 0-based; cost-balanced split) or `auto` (from the Slurm job array or
        /// Kubernetes Indexed Job); shards write cell files only, `alignbench merge` builds the tables.
        #[arg(long)]
        shard: Option<String>,
        /// Go ahead with a plan of more than 100,000 cells.
        #[arg(long)]
        yes: bool,
    },
    /// Rebuild the tables from the cell files of shards (one results folder, or several copied back from nodes).
    Merge(crate::cluster::MergeArgs),
    /// Seconds per image and peak memory of every configuration of a Stable Diffusion experiment on this machine,
    /// on seeded random weights of the real architectures (no model files; no reward numbers).
    Cost(crate::cost_cmd::CostArgs),
    /// Submit an experiment to Slurm as a job array of shards plus a dependent merge + report job.
    Slurm(crate::cluster::SlurmArgs),
    /// List methods, rewards or shipped experiments.
    List {
        /// What to list.
        what: ListWhat,
    },
    /// Run a benchmark and print `name: value unit` lines.
    Bench {
        /// Benchmark name.
        name: BenchName,
        /// Groups of the toy workload (the reference uses 1000).
        #[arg(long, default_value_t = 1000)]
        groups: usize,
    },
    /// Train a model.
    Train {
        /// What to train.
        name: TrainName,
        /// Toy preset.
        #[arg(long, default_value = "gmm1")]
        preset: String,
        /// Epochs (reference: 1000).
        #[arg(long)]
        epochs: Option<usize>,
        /// Output file (default assets/toy/<preset>-mlp.safetensors; `mini`: folder, default assets/mini).
        #[arg(long)]
        out: Option<PathBuf>,
        /// `mini`: stage to train (resumable: up-to-date stages are skipped).
        #[arg(long, value_enum, default_value = "all")]
        stage: alignbench::problems::mini::train::Stage,
        /// `mini`: training configuration YAML (default: the spec's values, experiments/mini/train.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// `mini`: folder with the Fashion-MNIST IDX gz files (else $ALIGNBENCH_DATA, else the Debian package).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// `mini`: the CI smoke configuration (experiments/mini/train-smoke.yaml, output results/mini-smoke).
        #[arg(long)]
        smoke: bool,
        /// `mini`: retrain stages that are up to date.
        #[arg(long)]
        fresh: bool,
        /// `mini`: stages trained at the same time when they do not depend on each other (DDPM, classifiers A and
        /// B after the autoencoder), one tensor thread each (default: the number of cores, at most 3).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Run every experiment this machine can run, then build the report.
    Reproduce {
        /// Results folder (`--quick` defaults to `results/quick`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Experiments folder.
        #[arg(long, default_value = "experiments")]
        experiments: PathBuf,
        /// Recompute every cell.
        #[arg(long)]
        fresh: bool,
        /// A fast look: at most 100 prompt groups, 5 EMD repeats and the first seed of every experiment.
        #[arg(long)]
        quick: bool,
    },
    /// Score image files with a reward on its official evaluation path (docs/verify-rewards.md).
    Score(alignbench::score::ScoreArgs),
    /// FMNIST-align tools: verify the data, run the acceptance checks of the trained models.
    Mini {
        /// What to do.
        #[command(subcommand)]
        cmd: MiniCmd,
    },
    /// Build tables, figures and index.html from stored results (no sampling).
    Report {
        /// Results folder to read.
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Output folder (default `<results>/report`); replaced as a whole.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Reference numbers.
        #[arg(long, default_value = "baselines")]
        baselines: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum MiniCmd {
    /// Locate and verify the Fashion-MNIST IDX files; print the split counts.
    Data {
        /// Folder with the four IDX gz files (else $ALIGNBENCH_DATA, else the Debian package).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Acceptance checks of mini-benchmark.md §4 with the CFG, σ_r and over-optimisation pilots → check.json.
    Check {
        /// Assets folder (default assets/mini).
        #[arg(long)]
        assets: Option<PathBuf>,
        /// Folder with the Fashion-MNIST IDX gz files.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Output file (default <assets>/check.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Small sample sizes: a plumbing test, thresholds not meaningful.
        #[arg(long)]
        quick: bool,
    },
}

#[derive(ValueEnum, Clone, Debug)]
enum ListWhat {
    Methods,
    Rewards,
    Experiments,
}

#[derive(ValueEnum, Clone, Debug)]
enum BenchName {
    Toy,
}

#[derive(ValueEnum, Clone, Debug)]
enum TrainName {
    ToyMlp,
    /// The FMNIST-align models (mini-benchmark.md §3).
    Mini,
}

/// Experiment files under `dir` (recursively), sorted; `smoke/` is for tests and left out unless asked, and
/// `train*.yaml` files are model-training configurations (`alignbench train`), not experiments.
pub fn experiment_files(dir: &std::path::Path, include_smoke: bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::file(dir, format!("cannot list experiments: {e}")))?;
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if include_smoke || p.file_name().and_then(|s| s.to_str()) != Some("smoke") {
                out.extend(experiment_files(&p, include_smoke)?);
            }
        } else if p.extension().and_then(|s| s.to_str()).is_some_and(|x| x == "yaml" || x == "yml")
            && !p.file_stem().and_then(|s| s.to_str()).is_some_and(|s| s.starts_with("train"))
        {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Execute the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(d) = &cli.device {
        alignbench::problems::sd15::cell::open_device(d).map_err(|e| Error::config(format!("--device: {e}")))?;
        std::env::set_var(alignbench::problems::sd15::cell::DEVICE_ENV, d);
    }
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .map_err(|e| Error::config(format!("--threads: {e}")))?;
    }
    match cli.cmd {
        Cmd::Plan { files, out, yes } => {
            for f in files {
                let p = plan_file_with(&f, &PlanOptions::command(yes))?;
                print!("{}", describe_plan(&p, &out));
            }
        }
        Cmd::Run { files, out, fresh, quiet, shard, yes } => {
            let shard = shard.as_deref().map(Shard::parse).transpose()?;
            // Validate every file before running any.
            let plans =
                files.iter().map(|f| plan_file_with(f, &PlanOptions::command(yes))).collect::<Result<Vec<_>>>()?;
            for p in &plans {
                let s = run_plan(p, &RunOptions { out: out.clone(), fresh, progress: !quiet, shard })?;
                match s.shard {
                    None => println!(
                        "{}: {} cells run, {} already done, {:.1} s → {}",
                        s.name,
                        s.ran,
                        s.skipped,
                        s.wall_s,
                        s.dir.display()
                    ),
                    Some(sh) => println!(
                        "{} shard {sh}: {} of its {} cells run, {} already done, {:.1} s → {}/cells (tables: \
                         `alignbench merge {}` when every shard is done)",
                        s.name,
                        s.ran,
                        s.share,
                        s.skipped,
                        s.wall_s,
                        s.dir.display(),
                        s.dir.display()
                    ),
                }
            }
        }
        Cmd::Merge(a) => crate::cluster::merge_cmd(a)?,
        Cmd::Cost(a) => crate::cost_cmd::cost_cmd(a)?,
        Cmd::Slurm(a) => crate::cluster::slurm_cmd(a)?,
        Cmd::List { what } => match what {
            ListWhat::Methods => {
                for m in alignbench::methods::catalogue() {
                    println!(
                        "{:<12} reward gradient: {:<3} denoiser VJP: {:<3} {}",
                        m.name,
                        if m.needs.reward_grad { "yes" } else { "no" },
                        if m.needs.denoiser_vjp { "yes" } else { "no" },
                        m.about
                    );
                }
            }
            ListWhat::Rewards => {
                for r in rewards::catalogue() {
                    println!(
                        "{:<21} {:<14} input: {}; scale: {}. {}",
                        r.kind,
                        if r.differentiable { "differentiable" } else { "black-box" },
                        r.input,
                        r.scale,
                        r.about
                    );
                }
            }
            ListWhat::Experiments => {
                for f in experiment_files(std::path::Path::new("experiments"), true)? {
                    match plan_file(&f) {
                        Ok(p) => println!(
                            "{:<28} {:>4} cells  {}  {}",
                            p.name,
                            p.cells.len(),
                            f.display(),
                            p.description.trim()
                        ),
                        // Weights or data this machine does not have (as `reproduce` skips them).
                        Err(Error::File { path, message }) => {
                            println!("{}: needs inputs: {path}: {message}", f.display())
                        }
                        Err(e) => println!("{}: INVALID: {e}", f.display()),
                    }
                }
            }
        },
        Cmd::Bench { name: BenchName::Toy, groups } => bench::toy(groups)?,
        Cmd::Score(args) => print!("{}", alignbench::score::run_score(&args)?),
        Cmd::Mini { cmd: MiniCmd::Data { data_dir } } => {
            let data = alignbench::problems::mini::FashionMnist::load(data_dir.as_deref())?;
            let counts = alignbench::problems::mini::Splits::new(&data, None, None, 5000).counts(&data);
            println!("Fashion-MNIST verified ({} train, {} test images)", data.n_train(), data.n_test());
            println!("{}", serde_json::to_string_pretty(&counts).expect("json"));
        }
        Cmd::Mini { cmd: MiniCmd::Check { assets, data_dir, out, quick } } => {
            let r = alignbench::problems::mini::check::run_check(&alignbench::problems::mini::check::CheckOptions {
                assets,
                data_dir,
                out,
                quick,
            })?;
            print!("{}", r.render());
            if !r.pass {
                return Err(Error::config("mini check: some acceptance checks failed (see above and check.json)"));
            }
        }
        Cmd::Train { name: TrainName::Mini, out, stage, config, data_dir, smoke, fresh, jobs, .. } => {
            let threads = cli.threads;
            let args = alignbench::problems::mini::train::CliArgs {
                config,
                smoke,
                stage,
                out,
                data_dir,
                fresh,
                progress: true,
                threads,
                jobs,
            };
            println!("{}", alignbench::problems::mini::train::run_cli(&args)?);
        }
        Cmd::Train { name: TrainName::ToyMlp, preset, epochs, out, .. } => {
            let gmm = Gmm::preset(&preset)?;
            let mut cfg = TrainConfig::default();
            if let Some(e) = epochs {
                cfg.epochs = e;
            }
            let path = out.unwrap_or_else(|| assets_dir().join("toy").join(format!("{preset}-mlp.safetensors")));
            let bar = indicatif::ProgressBar::new(cfg.epochs as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("train toy-mlp [{bar:32}] {pos}/{len} epochs {msg} ETA {eta}")
                    .expect("template"),
            );
            let t0 = Instant::now();
            let (mlp, loss) = train(&gmm, &cfg, &mut |_, l| {
                bar.inc(1);
                bar.set_message(format!("loss {l:.4}"));
            })?;
            bar.finish_and_clear();
            mlp.save(&path)?;
            let bytes = std::fs::read(&path)?;
            let manifest = serde_json::json!({
                "model": "toy-mlp",
                "preset": preset,
                "file": path.file_name().and_then(|s| s.to_str()),
                "sha256": alignbench::numerics::sha256_hex(&bytes),
                "parameters": mlp.num_params(),
                "config": cfg,
                "final_loss": loss,
                "wall_s": t0.elapsed().as_secs_f64(),
                "crate_version": env!("CARGO_PKG_VERSION"),
            });
            let mpath = path.with_extension("json");
            alignbench::numerics::write_atomic(
                &mpath,
                serde_json::to_string_pretty(&manifest).expect("json").as_bytes(),
            )?;
            println!(
                "trained toy-mlp on {preset}: final loss {loss:.4}, {:.1} s → {}",
                t0.elapsed().as_secs_f64(),
                path.display()
            );
        }
        Cmd::Reproduce { out, experiments, fresh, quick } => {
            let out =
                out.unwrap_or_else(|| if quick { PathBuf::from("results/quick") } else { PathBuf::from("results") });
            let t0 = Instant::now();
            let files = experiment_files(&experiments, false)?;
            let mut lines = Vec::new();
            let mut skipped = Vec::new();
            let mut failed: Vec<String> = Vec::new();
            for f in &files {
                let plan = if quick { quick_plan(f) } else { plan_file(f) };
                let plan = match plan {
                    Ok(p) => p,
                    // Weights or data this machine does not have: skip with the message that says how to get them.
                    Err(Error::File { path, message }) => {
                        skipped.push(format!("  {}: needs {path}: {message}", f.display()));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                // One failing experiment does not stop the others; failures are listed and make the exit code ≠ 0.
                match run_plan(&plan, &RunOptions { out: out.clone(), fresh, progress: true, shard: None }) {
                    Ok(s) => {
                        eprintln!("{}: {} cells run, {} already done, {:.1} s", s.name, s.ran, s.skipped, s.wall_s);
                        lines.push(format!("  {:<24} {}", s.name, s.dir.join("metrics.csv").display()));
                    }
                    Err(e) => {
                        eprintln!("{}: FAILED: {e}", plan.name);
                        failed.push(format!("  {}: {e}", f.display()));
                    }
                }
            }
            // No report when nothing ran (every experiment skipped): the skip list below says what is missing.
            let report = if lines.is_empty() && failed.is_empty() {
                None
            } else {
                Some(alignbench::report::build(&alignbench::report::ReportOptions {
                    results: out.clone(),
                    out: out.join("report"),
                    baselines: PathBuf::from("baselines"),
                })?)
            };
            println!(
                "reproduce finished in {:.1} s{}.",
                t0.elapsed().as_secs_f64(),
                if quick { " (quick profile)" } else { "" }
            );
            println!("Tidy results:");
            for l in lines {
                println!("{l}");
            }
            if !skipped.is_empty() {
                println!("Skipped (missing inputs):");
                for l in skipped {
                    println!("{l}");
                }
            }
            match report {
                Some(r) => println!("Report: {} ({} tables, {} figures)", r.index.display(), r.tables, r.figures),
                None => println!("Report: none (no experiment ran)"),
            }
            if !failed.is_empty() {
                return Err(Error::config(format!(
                    "{} experiment(s) failed (their finished cells are in the report; re-run to resume):\n{}",
                    failed.len(),
                    failed.join("\n")
                )));
            }
        }
        Cmd::Report { results, out, baselines } => {
            let out = out.unwrap_or_else(|| results.join("report"));
            let r = alignbench::report::build(&alignbench::report::ReportOptions { results, out, baselines })?;
            println!(
                "report of {} experiment(s): {} tables, {} figures → {}",
                r.experiments.len(),
                r.tables,
                r.figures,
                r.index.display()
            );
        }
    }
    Ok(())
}

/// The `--quick` profile of an experiment file: at most 100 groups, 5 EMD repeats and its first seed. The
/// changed configuration hashes to different cell ids, so quick and full results never mix.
fn quick_plan(file: &std::path::Path) -> Result<alignbench::experiment::plan::Plan> {
    use serde_json::Value;
    let text = std::fs::read_to_string(file).map_err(|e| Error::file(file, format!("cannot read: {e}")))?;
    let mut v: Value = yaml_serde::from_str(&text).map_err(|e| Error::file(file, format!("not valid YAML: {e}")))?;
    fn cap(v: &mut Value, key: &str, max: u64) {
        if let Some(x) = v.get_mut(key) {
            match x {
                Value::Number(n) if n.as_u64().is_some_and(|n| n > max) => *x = Value::from(max),
                Value::Array(a) => a.iter_mut().for_each(|y| {
                    if y.as_u64().is_some_and(|n| n > max) {
                        *y = Value::from(max)
                    }
                }),
                _ => {}
            }
        }
    }
    cap(&mut v, "groups", 100);
    if let Some(o) = v.as_object_mut() {
        for k in ["seeds", "seed"] {
            if let Some(Value::Array(a)) = o.get_mut(k) {
                a.truncate(1);
            }
        }
        o.entry("groups").or_insert(Value::from(100u64));
        let m = o.entry("metrics").or_insert_with(|| serde_json::json!({}));
        if m.get("emd_repeats").is_none() {
            m["emd_repeats"] = Value::from(5u64);
        }
        cap(m, "emd_repeats", 5);
        if let Some(Value::Array(ms)) = o.get_mut("methods") {
            for me in ms {
                cap(me, "groups", 100);
            }
        }
    }
    let text = yaml_serde::to_string(&v).map_err(|e| Error::file(file, format!("cannot rewrite for --quick: {e}")))?;
    alignbench::experiment::plan::plan_str(&text, file)
}
