//! `alignbench slurm`: an experiment as a Slurm job array — one task per shard, each running
//! `alignbench run FILE --shard auto` (`super::shard`) — and a dependent job (`--dependency=afterok`) that merges
//! the shards' cell files into the tables and builds the report.
//!
//! Cells that run on a GPU (`Problem::wants_gpu`: Stable Diffusion on `cuda`) get one task each and one GPU per task
//! (`--gres=gpu:G`; Slurm sets `CUDA_VISIBLE_DEVICES`, so the task's `cuda:0` is its own GPU). CPU cells are packed
//! several per task by the plan's cost model: enough tasks that each holds about `task_minutes` of estimated
//! single-core work divided by its CPUs, at most one per cell.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::plan::Plan;
use super::shard::cell_cost;
use crate::{Error, Result};

/// Options of `alignbench slurm`.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// Results folder the tasks write (made absolute).
    pub out: PathBuf,
    /// `--partition`.
    pub partition: Option<String>,
    /// GPUs per task (`--gres=gpu:G`); default 1 for GPU cells, none for CPU cells.
    pub gpus_per_task: Option<usize>,
    /// CPUs per task (`--cpus-per-task`; the task runs that many threads).
    pub cpus_per_task: usize,
    /// `--time` of each task (Slurm's format, e.g. `2:00:00`); default: the partition's.
    pub time: Option<String>,
    /// At most this many tasks at once (`--array=…%M`).
    pub max_parallel: Option<usize>,
    /// Number of shards (tasks); default from the cost model.
    pub shards: Option<usize>,
    /// Estimated minutes of work per CPU task when packing CPU cells.
    pub task_minutes: f64,
}

/// The two batch scripts of a submission.
#[derive(Clone, Debug)]
pub struct Submission {
    /// Experiment name.
    pub name: String,
    /// Experiment folder (holds `slurm/` with the scripts and logs).
    pub dir: PathBuf,
    /// Number of array tasks (shards).
    pub shards: usize,
    /// Whether tasks ask for GPUs.
    pub gpu: bool,
    /// Estimated single-core minutes of the most loaded task (NaN without a time model).
    pub task_minutes: f64,
    /// The job array script.
    pub array: String,
    /// The merge + report script.
    pub merge: String,
}

fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn absolute(p: &Path, cwd: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// The scripts for `plan` (read from `file`), run by the binary `exe` from the working directory `cwd`.
pub fn scripts(plan: &Plan, file: &Path, opts: &SlurmOptions, exe: &Path, cwd: &Path) -> Result<Submission> {
    if plan.cells.is_empty() {
        return Err(Error::config(format!("{}: the plan has no cells", plan.name)));
    }
    if opts.cpus_per_task == 0 {
        return Err(Error::config("--cpus-per-task: must be at least 1"));
    }
    if let Some(0) = opts.max_parallel {
        return Err(Error::config("--max-parallel: must be at least 1"));
    }
    let gpu = plan.cells.iter().any(|c| c.spec.problem.problem().wants_gpu(&c.spec.setting));
    let costs: Vec<f64> = (0..plan.cells.len()).map(|i| cell_cost(plan, i)).collect();
    let seconds = costs.iter().all(|c| c.is_finite())
        && plan
            .cells
            .iter()
            .all(|c| c.spec.problem.problem().row_seconds(&c.spec.setting).iter().all(|s| s.is_finite()));
    let shards = match opts.shards {
        Some(0) => return Err(Error::config("--shards: must be at least 1")),
        Some(n) => n.min(plan.cells.len()),
        None if gpu || !seconds => plan.cells.len(),
        None => {
            let per_task = opts.task_minutes.max(0.1) * 60.0 * opts.cpus_per_task as f64;
            ((costs.iter().sum::<f64>() / per_task).ceil() as usize).clamp(1, plan.cells.len())
        }
    };
    let owner = super::shard::assign(plan, shards);
    let mut load = vec![0.0; shards];
    for (i, &o) in owner.iter().enumerate() {
        load[o] += costs[i];
    }
    let task_minutes = if seconds { load.iter().cloned().fold(0.0, f64::max) / 60.0 } else { f64::NAN };

    let out = absolute(&opts.out, cwd);
    let dir = out.join(&plan.name);
    let logs = dir.join("slurm");
    let file = absolute(file, cwd);
    let (exe, cwd_s) = (quote(&exe.display().to_string()), quote(&cwd.display().to_string()));
    let head = |job: &str, log: &str| {
        let mut s = String::from("#!/bin/bash\n");
        s += &format!("#SBATCH --job-name={}\n", quote(&format!("ab-{}{job}", plan.name)));
        s += &format!("#SBATCH --chdir={cwd_s}\n");
        s += &format!("#SBATCH --output={}\n", quote(&logs.join(log).display().to_string()));
        if let Some(p) = &opts.partition {
            s += &format!("#SBATCH --partition={}\n", quote(p));
        }
        s
    };
    let mut array = head("", "shard-%a.out");
    array += &format!(
        "#SBATCH --array=0-{}{}\n",
        shards - 1,
        opts.max_parallel.map(|m| format!("%{m}")).unwrap_or_default()
    );
    array += &format!("#SBATCH --ntasks=1\n#SBATCH --cpus-per-task={}\n", opts.cpus_per_task);
    match (gpu, opts.gpus_per_task) {
        (_, Some(0)) => {}
        (true, g) => array += &format!("#SBATCH --gres=gpu:{}\n", g.unwrap_or(1)),
        (false, Some(g)) => array += &format!("#SBATCH --gres=gpu:{g}\n"),
        (false, None) => {}
    }
    if let Some(t) = &opts.time {
        array += &format!("#SBATCH --time={}\n", quote(t));
    }
    array += &format!(
        "# {} cells of `{}` in {shards} shard(s) (cost-balanced; `alignbench run --shard auto` picks its share)\n",
        plan.cells.len(),
        plan.name
    );
    array += "set -euo pipefail\n";
    array += &format!(
        "exec {exe} --threads \"${{SLURM_CPUS_PER_TASK:-1}}\" run {} --out {} --shard auto --quiet\n",
        quote(&file.display().to_string()),
        quote(&out.display().to_string())
    );
    let mut merge = head("-merge", "merge.out");
    merge += "#SBATCH --ntasks=1\n#SBATCH --cpus-per-task=1\n";
    merge += "# runs after every shard succeeded (sbatch --dependency=afterok:<array job>)\nset -euo pipefail\n";
    merge += &format!("{exe} merge {}\n", quote(&dir.display().to_string()));
    merge += &format!("{exe} report --results {}\n", quote(&out.display().to_string()));
    Ok(Submission { name: plan.name.clone(), dir, shards, gpu, task_minutes, array, merge })
}

/// Write the scripts under `<experiment>/slurm/`, submit the array and the dependent merge job with `sbatch`;
/// returns (array job id, merge job id).
pub fn submit(sub: &Submission) -> Result<(String, String)> {
    let logs = sub.dir.join("slurm");
    let (a, m) = (logs.join("array.sbatch"), logs.join("merge.sbatch"));
    crate::numerics::write_atomic(&a, sub.array.as_bytes())?;
    crate::numerics::write_atomic(&m, sub.merge.as_bytes())?;
    let array_id = sbatch(&[a.display().to_string()])?;
    let merge_id = sbatch(&[format!("--dependency=afterok:{array_id}"), m.display().to_string()])?;
    Ok((array_id, merge_id))
}

/// Run `sbatch --parsable ARGS` and return the job id it prints.
fn sbatch(args: &[String]) -> Result<String> {
    let out = Command::new("sbatch").arg("--parsable").args(args).output().map_err(|e| {
        Error::config(format!(
            "sbatch: cannot run it ({e}); submit from a Slurm login node (with `sbatch` on PATH), or use --dry-run \
             to print the scripts"
        ))
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.trim().split(';').next().unwrap_or_default().trim().to_string();
    if !out.status.success() || id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::config(format!(
            "sbatch {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        )));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::plan::plan_str;

    fn opts() -> SlurmOptions {
        SlurmOptions {
            out: PathBuf::from("results"),
            partition: Some("debug".into()),
            gpus_per_task: None,
            cpus_per_task: 2,
            time: Some("1:00:00".into()),
            max_parallel: Some(3),
            shards: None,
            task_minutes: 20.0,
        }
    }

    #[test]
    fn cpu_plan_packs_cells_and_names_everything() {
        let y = "version: 1\nname: t\nproblem: { kind: gmm, preset: gmm1 }\nsteps: 10\ngroups: 3\nseeds: [0, 1, 2]\n\
                 methods: [{ method: das, particles: [4, 64] }]\n";
        let plan = plan_str(y, Path::new("exp.yaml")).unwrap();
        let s = scripts(&plan, Path::new("exp.yaml"), &opts(), Path::new("/bin/ab"), Path::new("/w")).unwrap();
        // Six tiny cells pack into one task.
        assert_eq!((s.shards, s.gpu), (1, false));
        assert!(s.array.contains("#SBATCH --array=0-0%3\n"), "{}", s.array);
        assert!(s.array.contains("#SBATCH --partition=debug\n#") && s.array.contains("--time=1:00:00"));
        assert!(s.array.contains("--cpus-per-task=2") && !s.array.contains("--gres"));
        assert!(s.array.contains("run /w/exp.yaml --out /w/results --shard auto"), "{}", s.array);
        assert!(s.merge.contains("/bin/ab merge /w/results/t\n/bin/ab report --results /w/results\n"));
        let mut o = opts();
        o.shards = Some(4);
        o.gpus_per_task = Some(1);
        let s = scripts(&plan, Path::new("exp.yaml"), &o, Path::new("/bin/ab"), Path::new("/w")).unwrap();
        assert_eq!(s.shards, 4);
        assert!(s.array.contains("--array=0-3%3") && s.array.contains("--gres=gpu:1"));
        o.shards = Some(0);
        assert!(scripts(&plan, Path::new("exp.yaml"), &o, Path::new("/b"), Path::new("/w")).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("/a/b-c.yaml"), "/a/b-c.yaml");
        assert_eq!(quote("my dir/x"), "'my dir/x'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
