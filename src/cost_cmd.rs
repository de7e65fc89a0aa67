//! `alignbench cost FILE`: seconds per image and memory of every configuration of a Stable Diffusion experiment on
//! this machine, on random weights of the real architectures (`alignbench::experiment::costing`).

use std::path::PathBuf;

use clap::Args;

use alignbench::experiment::costing::{cost_lines, cost_plan, cost_rows, parse_row_seconds, CostOptions};
use alignbench::experiment::run::{run_plan, RunOptions};
use alignbench::{Error, Result};

/// `alignbench cost`.
#[derive(Args, Debug)]
pub struct CostArgs {
    /// Experiment YAML file (problem.kind: sd15), e.g. experiments/paper/aesthetic.yaml.
    pub file: PathBuf,
    /// Images (prompt groups) timed per configuration.
    #[arg(long, default_value_t = 2)]
    pub prompts: usize,
    /// Only these methods (comma-separated names of the file's `methods:`).
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// The tiny test architectures (a check of the command; its seconds say nothing about SD 1.5).
    #[arg(long)]
    pub tiny: bool,
    /// Price each configuration's ledger per image with a per-row time model: seconds per UNet row forward, per
    /// guided step of one latent (UNet forward + VJP with CFG, decoder + reward VJP), per decoder + reward VJP, per
    /// decoder + reward forward (e.g. from the PyTorch anchor: scripts/gpu-check.sh).
    #[arg(long)]
    pub row_seconds: Option<String>,
    /// Results folder of the cost runs (resumable; delete it to time again).
    #[arg(long, default_value = "results/cost")]
    pub out: PathBuf,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Run the cost run of `a.file` and print `name: value unit` lines.
pub fn cost_cmd(a: CostArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .map_err(|e| Error::file(&a.file, format!("cannot read experiment file: {e}")))?;
    let row_seconds = a.row_seconds.as_deref().map(parse_row_seconds).transpose()?;
    let opts = CostOptions { prompts: a.prompts, methods: a.methods, tiny: a.tiny, row_seconds };
    let cp = cost_plan(&text, &a.file, &opts)?;
    eprintln!(
        "{}: {} configuration(s) × {} image(s) on random weights{} (the file runs {} group(s) × {} seed(s))",
        cp.plan.name,
        cp.plan.cells.len(),
        a.prompts,
        if a.tiny { " (tiny architectures)" } else { "" },
        cp.groups,
        cp.seeds
    );
    run_plan(&cp.plan, &RunOptions { out: a.out.clone(), fresh: false, progress: !a.quiet, shard: None })?;
    let rows = cost_rows(&cp, &a.out, row_seconds)?;
    for l in cost_lines(&cp.plan.name, &rows) {
        println!("{l}");
    }
    Ok(())
}
