//! The cluster commands of the binary: `alignbench merge` and `alignbench slurm` (see README "Running on a
//! cluster"); `run --shard` is in `cli.rs`.

use std::path::PathBuf;

use clap::Args;

use alignbench::experiment::merge::{merge, MergeOptions};
use alignbench::experiment::plan::{plan_file_with, PlanOptions};
use alignbench::experiment::slurm::{scripts, submit, SlurmOptions};
use alignbench::{Error, Result};

/// `alignbench merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Results folders (or experiment folders) holding the shards' cell files; several when copied back from nodes.
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// Results folder to write (default: the first one given).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the tables of the cells present even when some are missing.
    #[arg(long)]
    pub partial: bool,
}

/// `alignbench slurm`.
#[derive(Args, Debug)]
pub struct SlurmArgs {
    /// Experiment YAML file.
    pub file: PathBuf,
    /// Results folder the tasks write (on a file system every node sees).
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// GPUs per task (default: 1 when the cells run on a GPU, none otherwise).
    #[arg(long)]
    pub gpus_per_task: Option<usize>,
    /// CPUs per task (the task runs that many threads).
    #[arg(long, default_value_t = 1)]
    pub cpus_per_task: usize,
    /// Time limit of each task, in Slurm's format (e.g. `2:00:00`); default: the partition's.
    #[arg(long)]
    pub time: Option<String>,
    /// Run at most this many tasks at once.
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Number of shards (array tasks); default: one per GPU cell, CPU cells packed by the cost model.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Estimated minutes of single-core work per CPU when packing CPU cells into tasks.
    #[arg(long, default_value_t = 20.0)]
    pub task_minutes: f64,
    /// Print the scripts and the sbatch commands; submit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Go ahead with a plan of more than 100,000 cells.
    #[arg(long)]
    pub yes: bool,
}

/// Run `alignbench merge`.
pub fn merge_cmd(a: MergeArgs) -> Result<()> {
    let merged = merge(&MergeOptions { inputs: a.results, out: a.out, partial: a.partial })?;
    for m in merged {
        println!(
            "{}: {}/{} cells from {} folder(s) ({} copied in) → {}",
            m.name,
            m.found,
            m.planned,
            m.sources,
            m.copied,
            m.dir.join("metrics.csv").display()
        );
        if !m.missing.is_empty() {
            println!("  missing {} cell(s) (tables are partial):", m.missing.len());
            for l in m.missing.iter().take(10) {
                println!("    {l}");
            }
        }
    }
    Ok(())
}

/// Run `alignbench slurm`.
pub fn slurm_cmd(a: SlurmArgs) -> Result<()> {
    let plan = plan_file_with(&a.file, &PlanOptions::command(a.yes))?;
    let cwd = std::env::current_dir().map_err(|e| Error::config(format!("cannot read the working directory: {e}")))?;
    let exe = std::env::current_exe().map_err(|e| Error::config(format!("cannot locate this binary: {e}")))?;
    let opts = SlurmOptions {
        out: a.out,
        partition: a.partition,
        gpus_per_task: a.gpus_per_task,
        cpus_per_task: a.cpus_per_task,
        time: a.time,
        max_parallel: a.max_parallel,
        shards: a.shards,
        task_minutes: a.task_minutes,
    };
    let sub = scripts(&plan, &a.file, &opts, &exe, &cwd)?;
    let est = if sub.task_minutes.is_finite() {
        format!(", ≈ {:.1} single-core minutes in the largest task (cost model)", sub.task_minutes)
    } else {
        String::new()
    };
    let what = format!(
        "{}: {} cells in {} shard(s){}{est}",
        sub.name,
        plan.cells.len(),
        sub.shards,
        if sub.gpu { ", one GPU per task" } else { "" }
    );
    if a.dry_run {
        println!("# {what}\n# sbatch --parsable {0}/slurm/array.sbatch\n# sbatch --parsable --dependency=afterok:<array job> {0}/slurm/merge.sbatch", sub.dir.display());
        println!("# ---- array.sbatch ----\n{}# ---- merge.sbatch ----\n{}", sub.array, sub.merge);
        return Ok(());
    }
    let (array, merge) = submit(&sub)?;
    println!("submitted {what}");
    println!("  job array {array} ({} task(s)); merge + report job {merge} (after every task succeeds)", sub.shards);
    println!("  follow:  squeue -j {array},{merge}    logs: {}/slurm/", sub.dir.display());
    println!(
        "  results: {}/metrics.csv and the report under {}/report/",
        sub.dir.display(),
        sub.dir.parent().map(|p| p.display().to_string()).unwrap_or_default()
    );
    println!(
        "  a failed or killed task: submit again (finished cells are skipped), or `alignbench run FILE --shard I/{}`",
        sub.shards
    );
    Ok(())
}
