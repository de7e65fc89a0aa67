//! Running whole experiment files: skip finished cells (resume), run the rest in parallel with a progress bar,
//! save each cell as soon as it finishes and rebuild the tidy rows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::plan::{estimate, Cell, Plan};
use super::runner::run_cell_cached;
use super::shard::Shard;
use super::store::Store;
use crate::{Error, Result};

/// Options of `alignbench run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Results folder (default `results/`).
    pub out: PathBuf,
    /// Recompute cells even if their files exist.
    pub fresh: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Run only this shard's cells and leave the tables to `alignbench merge` (`--shard I/N`).
    pub shard: Option<Shard>,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Experiment name.
    pub name: String,
    /// Folder written.
    pub dir: PathBuf,
    /// Cells run now.
    pub ran: usize,
    /// Cells found finished.
    pub skipped: usize,
    /// Cells of this run's share of the plan (all cells unless sharded).
    pub share: usize,
    /// The shard run, if any (its tables are left to `alignbench merge`).
    pub shard: Option<Shard>,
    /// Seconds.
    pub wall_s: f64,
}

/// Run every cell of a plan that is not finished yet.
pub fn run_plan(plan: &Plan, opts: &RunOptions) -> Result<RunSummary> {
    let start = Instant::now();
    let store = Store::open(&opts.out, plan)?;
    let share: Vec<&Cell> = match &opts.shard {
        None => plan.cells.iter().collect(),
        Some(s) => s.cells(plan).into_iter().map(|i| &plan.cells[i]).collect(),
    };
    if opts.fresh {
        for c in &share {
            store.remove(&c.id)?;
        }
    }
    let todo: Vec<&Cell> = share.iter().copied().filter(|c| !store.has(&c.id)).collect();
    let skipped = share.len() - todo.len();
    let work: u64 = todo.iter().map(|c| (c.spec.groups * c.spec.steps) as u64).sum();
    let bar = if opts.progress { ProgressBar::new(work) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>16} [{bar:32}] {percent:>3}% {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(match &opts.shard {
        None => plan.name.clone(),
        Some(s) => format!("{} [{s}]", plan.name),
    });
    let done_cells = AtomicU64::new(0);
    bar.set_message(format!("0/{} cells", todo.len()));
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    todo.par_iter().for_each(|c| {
        if first_err.lock().map(|e| e.is_some()).unwrap_or(true) {
            return;
        }
        let tick = |n: u64| bar.inc(n);
        // Only the atomic per-cell JSON is written inside the parallel loop: the tidy tables are rebuilt once
        // afterwards (holding a lock across polars' own rayon work here can deadlock by work stealing).
        let res = run_cell_cached(c, Some(&store.dir().join("weights")), &tick).and_then(|r| store.save(&r));
        match res {
            Ok(()) => {
                let d = done_cells.fetch_add(1, Ordering::Relaxed) + 1;
                bar.set_message(format!("{d}/{} cells", todo.len()));
            }
            Err(e) => {
                let mut slot = first_err.lock().expect("lock");
                if slot.is_none() {
                    *slot = Some(Error::config(format!("{} cell {} ({}): {e}", plan.name, c.id, c.spec.method.name())));
                }
            }
        }
    });
    bar.finish_and_clear();
    // Finished cells are tabulated even when another cell failed, so nothing computed is lost. A shard writes its
    // cell files only: the tables of the whole plan are `alignbench merge`'s (shards on other nodes would race).
    let tidy = if opts.shard.is_some() { Ok(()) } else { store.write_tidy(plan) };
    if let Some(e) = first_err.into_inner().expect("lock") {
        return Err(e);
    }
    tidy?;
    Ok(RunSummary {
        name: plan.name.clone(),
        dir: store.dir().to_path_buf(),
        ran: todo.len(),
        skipped,
        share: share.len(),
        shard: opts.shard,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// Human-readable plan: one line per cell with its estimated cost.
pub fn describe_plan(plan: &Plan, out: &Path) -> String {
    let mut s = format!("{} ({} cells) from {}\n", plan.name, plan.cells.len(), plan.file.display());
    if !plan.description.is_empty() {
        s += &format!("  {}\n", plan.description.trim());
    }
    let store_dir = out.join(&plan.name).join("cells");
    let (mut tf, mut tv) = (0u64, 0u64);
    for c in &plan.cells {
        let (f, v, r) = estimate(&c.spec);
        tf += f;
        tv += v;
        let done = store_dir.join(format!("{}.json", c.id)).exists();
        let params: Vec<String> = c.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s += &format!(
            "  {} {:<10} seed={} {}  est. denoiser rows {f}, denoiser VJPs {v}, reward calls {r}{}\n",
            c.id,
            c.spec.method.name(),
            c.spec.seed,
            params.join(" "),
            if done { "  [done]" } else { "" }
        );
    }
    s += &format!("  total: denoiser rows {tf}, denoiser VJPs {tv}\n");
    s
}
