//! Shards of a plan: which cells one of N workers runs (`alignbench run FILE --shard I/N`, or `--shard auto` inside
//! a Slurm job array or a Kubernetes Indexed Job).
//!
//! The split is **cost-balanced**: cells are taken from the most to the least expensive by the plan's cost model
//! (the problem's declared seconds per row times the method's ledger counts, [`cell_cost`]) and each goes to the
//! shard with the least estimated work so far (longest-processing-time-first; ties by plan position, then by
//! shard index). A sweep's cells differ in cost by orders of magnitude (particles 4 … 1000, a fine-tuning method
//! beside a sampler), so the round-robin split `position ≡ I (mod N)` would leave one shard with most of the work
//! whenever the expensive cells line up with N; the balanced split keeps every shard's estimate within one cell of
//! the others. The assignment depends on the plan only — never on which cells are finished, on the thread count or
//! on the order shards run — so every worker computes the same split, and a killed shard re-run with the same
//! `I/N` resumes exactly its own cells. Results do not depend on the sharding at all: a cell's numbers come from
//! its own seeded streams, and the tables are rebuilt from cell files in plan order (`alignbench merge`).

use std::fmt;

use super::cost::{per_group, row_seconds};
use super::plan::Plan;
use crate::ledger::BudgetAxis;
use crate::{Error, Result};

/// One shard of N: the worker's index `index` in `0..count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This worker's index, `0 ≤ index < count`.
    pub index: usize,
    /// Number of workers.
    pub count: usize,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The environment variables `--shard auto` reads, in order: the index (Slurm job array, Kubernetes Indexed Job)
/// and the count (Slurm; for Kubernetes set `ALIGNBENCH_SHARD_COUNT` to the Job's `completions`).
pub const AUTO_VARS: [&str; 5] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_COUNT",
    "JOB_COMPLETION_INDEX",
    "ALIGNBENCH_SHARD_COUNT",
];

impl Shard {
    /// Parse `I/N` (0-based I) or `auto` (from the environment, see [`Shard::from_env`]).
    pub fn parse(text: &str) -> Result<Shard> {
        if text.trim().eq_ignore_ascii_case("auto") {
            return Shard::from_env(&|k| std::env::var(k).ok());
        }
        let bad = || {
            Error::config(format!(
                "--shard `{text}`: expected I/N with 0 ≤ I < N (e.g. `--shard 0/8` … `--shard 7/8`) or `auto` \
                 (inside a Slurm job array or a Kubernetes Indexed Job)"
            ))
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) =
            (i.trim().parse::<usize>().map_err(|_| bad())?, n.trim().parse::<usize>().map_err(|_| bad())?);
        Shard::new(index, count).map_err(|_| bad())
    }

    /// A checked shard.
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 || index >= count {
            return Err(Error::config(format!("shard {index}/{count}: need 0 ≤ I < N and N ≥ 1")));
        }
        Ok(Shard { index, count })
    }

    /// The shard of a Slurm array task (`SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`)
    /// or of a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX` of `ALIGNBENCH_SHARD_COUNT`); `var` reads a variable.
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Shard> {
        let num = |k: &str| -> Result<Option<usize>> {
            match var(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map(Some)
                    .map_err(|_| Error::config(format!("--shard auto: {k}=`{v}` is not a non-negative integer"))),
            }
        };
        let (index, count) = if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let count = num("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                Error::config("--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (Slurm ≥ 20.11 sets both)")
            })?;
            (
                id.checked_sub(min)
                    .ok_or_else(|| Error::config("--shard auto: SLURM_ARRAY_TASK_ID < SLURM_ARRAY_TASK_MIN"))?,
                count,
            )
        } else if let Some(i) = num("JOB_COMPLETION_INDEX")? {
            let count = num("ALIGNBENCH_SHARD_COUNT")?.ok_or_else(|| {
                Error::config(
                    "--shard auto: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but ALIGNBENCH_SHARD_COUNT \
                     is not; set it to the Job's `completions`",
                )
            })?;
            (i, count)
        } else {
            return Err(Error::config(
                "--shard auto: not inside a Slurm job array (SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed Job \
                 (JOB_COMPLETION_INDEX); give the shard as I/N, e.g. `--shard 0/4`",
            ));
        };
        Shard::new(index, count).map_err(|e| Error::config(format!("--shard auto: {e}")))
    }

    /// Positions (in plan order) of the cells this shard runs.
    pub fn cells(&self, plan: &Plan) -> Vec<usize> {
        let owner = assign(plan, self.count);
        (0..plan.cells.len()).filter(|&i| owner[i] == self.index).collect()
    }
}

/// Estimated cost of a plan's cell (all groups): single-core seconds from the problem's declared time model when
/// it has one, else denoiser rows with a VJP row counted as three (the ratio the declared models share).
pub fn cell_cost(plan: &Plan, i: usize) -> f64 {
    let c = &plan.cells[i].spec;
    let cost = per_group(c);
    let s = cost.on(BudgetAxis::WallS, row_seconds(c));
    let per = if s.is_finite() { s } else { cost.nfe + 2.0 * cost.vjp_denoiser + cost.reward_calls * 1e-3 };
    per * c.groups as f64
}

/// The owner shard of every cell (index by plan position) of a `count`-way cost-balanced split.
pub fn assign(plan: &Plan, count: usize) -> Vec<usize> {
    let count = count.max(1);
    let costs: Vec<f64> = (0..plan.cells.len()).map(|i| cell_cost(plan, i)).collect();
    // Time models are per problem; when some cell has none, every cell is weighed in rows instead, so one plan
    // never mixes the two units.
    let costs = if costs.iter().all(|c| c.is_finite()) {
        costs
    } else {
        (0..plan.cells.len())
            .map(|i| {
                let c = per_group(&plan.cells[i].spec);
                (c.nfe + 2.0 * c.vjp_denoiser + c.reward_calls * 1e-3) * plan.cells[i].spec.groups as f64
            })
            .collect()
    };
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]).then(a.cmp(&b)));
    let mut load = vec![0.0f64; count];
    let mut owner = vec![0usize; costs.len()];
    for i in order {
        // Least-loaded shard; ties go to the lowest index (deterministic on every worker).
        let s = (0..count).min_by(|&x, &y| load[x].total_cmp(&load[y]).then(x.cmp(&y))).expect("count ≥ 1");
        owner[i] = s;
        load[s] += costs[i].max(0.0);
    }
    owner
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::plan::plan_str;
    use std::path::Path;

    fn plan() -> Plan {
        let y = "version: 1\nname: t\nproblem: { kind: gmm, preset: gmm1 }\nsteps: 10\ngroups: 3\nseeds: [0, 1, 2]\n\
                 methods: [{ method: das, particles: [4, 64, 512] }, { method: ddim, particles: 1 }]\n";
        plan_str(y, Path::new("<t>")).unwrap()
    }

    #[test]
    fn parse_and_env() {
        assert_eq!(Shard::parse("2/8").unwrap(), Shard { index: 2, count: 8 });
        for bad in ["8/8", "1/0", "x", "1/", "-1/4"] {
            assert!(Shard::parse(bad).unwrap_err().to_string().contains("--shard"), "{bad}");
        }
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(a, _)| *a == k).map(|(_, v)| v.to_string())
        };
        let s = Shard::from_env(&env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]));
        assert_eq!(s.unwrap(), Shard { index: 4, count: 8 });
        let k = Shard::from_env(&env(&[("JOB_COMPLETION_INDEX", "3"), ("ALIGNBENCH_SHARD_COUNT", "4")]));
        assert_eq!(k.unwrap(), Shard { index: 3, count: 4 });
        let e = Shard::from_env(&env(&[("JOB_COMPLETION_INDEX", "3")])).unwrap_err().to_string();
        assert!(e.contains("ALIGNBENCH_SHARD_COUNT"), "{e}");
        let e = Shard::from_env(&env(&[])).unwrap_err().to_string();
        assert!(e.contains("not inside a Slurm job array"), "{e}");
    }

    #[test]
    fn every_cell_in_exactly_one_shard_and_balanced() {
        let p = plan();
        for n in [1, 2, 3, 7, 20] {
            let mut seen = vec![0; p.cells.len()];
            for i in 0..n {
                for c in (Shard { index: i, count: n }).cells(&p) {
                    seen[c] += 1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "N = {n}: {seen:?}");
        }
        // Balance: no shard's estimate exceeds the mean by more than the largest cell.
        let owner = assign(&p, 3);
        let costs: Vec<f64> = (0..p.cells.len()).map(|i| cell_cost(&p, i)).collect();
        let mut load = [0.0; 3];
        for (i, &o) in owner.iter().enumerate() {
            load[o] += costs[i];
        }
        let mean = costs.iter().sum::<f64>() / 3.0;
        let big = costs.iter().cloned().fold(0.0, f64::max);
        assert!(load.iter().all(|&l| l <= mean + big), "{load:?}");
        // The split is a function of the plan: the same on every call.
        assert_eq!(owner, assign(&p, 3));
    }
}
