//! The ledger cost model (methods.md §17): what one prompt group of a cell costs, per method, in the ledger's own
//! units — denoiser forward rows (F), VJPs through the denoiser (V_full), VJPs through reward∘decoder only (V_dec),
//! reward forwards (Rew). The formulas are the samplers' exact counts (a test runs every method and compares with
//! the ledger), so the plan can size methods to a compute budget before anything runs.
//!
//! The `wall_s` axis uses a declared per-row time model ([`row_seconds`], each problem's own, measured once on the
//! project's 2-core machine) — an estimate for matching, not a measurement; measured wall time is always
//! reported separately as `wall_s` in `metrics.csv`.

use super::spec::CellSpec;
pub use crate::ledger::Cost;
use crate::numerics::{human_bytes, total_memory_bytes};
use crate::samplers::run::memory_bytes;
use crate::{Error, Result};

/// Seconds per row of (denoiser forward, denoiser VJP incl. its forward, reward VJP, reward forward) — the
/// declared single-core time model of the `wall_s` budget axis, declared by each problem
/// ([`crate::problems::Problem::row_seconds`]).
pub fn row_seconds(c: &CellSpec) -> [f64; 4] {
    c.problem.problem().row_seconds(&c.setting)
}

/// Ledger cost of one group of a cell (sampling only; fine-tuning reports its training cost separately): the
/// method's own formula ([`crate::samplers::method::Method::cost`]).
pub fn per_group(c: &CellSpec) -> Cost {
    c.method.method().cost(c.steps)
}

/// Refuse a cell whose particle state cannot fit in this machine's memory (the sampling loop's f64 model,
/// [`memory_bytes`]), with the estimated size: one clear error at plan time instead of a failed allocation.
pub fn check_memory(c: &CellSpec) -> Result<()> {
    let (k, dim) = (c.method.particles(), c.problem.problem().state_dim(&c.setting));
    let bytes = memory_bytes(k, c.groups, dim);
    let (limit, whose) = match machine_memory() {
        Some(m) => (m, "this machine's memory"),
        None => (MEMORY_CAP, "the limit of any machine"),
    };
    if bytes > limit {
        return Err(Error::config(format!(
            "groups/particles: this cell would need ≈ {} of memory ({} groups × {k} particles × {dim} numbers), more \
             than {whose} ({}); lower `groups` (split them over seeds or cells) or `particles`",
            human_bytes(bytes),
            c.groups,
            human_bytes(limit)
        )));
    }
    Ok(())
}

/// A bound no machine reaches (1 PiB), where the system does not say how much memory it has.
const MEMORY_CAP: f64 = 1125899906842624.0;

/// Physical memory, read once.
fn machine_memory() -> Option<f64> {
    static MEM: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *MEM.get_or_init(total_memory_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::plan::plan_str;
    use std::path::Path;

    fn cell(method: &str) -> CellSpec {
        let y = format!(
            "version: 1\nname: t\nproblem: {{ kind: gmm, preset: gmm1 }}\nsteps: 100\ngroups: 1\nmethods: [{method}]\n"
        );
        plan_str(&y, Path::new("<t>")).unwrap().cells[0].spec.clone()
    }

    #[test]
    fn methods_md_table_values() {
        // methods.md §17 with c = 1 (no CFG), N = 100.
        let c = per_group(&cell("{ method: das, particles: 4 }"));
        assert_eq!((c.nfe, c.vjp_denoiser, c.reward_calls), (400.0, 400.0, 404.0));
        let c = per_group(&cell("{ method: smc, particles: 4 }"));
        assert_eq!((c.nfe, c.vjp_denoiser, c.reward_calls), (400.0, 0.0, 404.0));
        let c = per_group(&cell("{ method: fk, particles: 4, interval: 20, start: 0.2, end: 0.8 }"));
        assert_eq!((c.nfe, c.reward_calls), (400.0, 20.0));
        let c = per_group(&cell("{ method: freedom }"));
        assert_eq!((c.nfe, c.vjp_denoiser, c.reward_calls), (160.0, 100.0, 101.0));
        let c = per_group(&cell("{ method: mpgd }"));
        assert_eq!((c.nfe, c.vjp_reward, c.reward_calls), (100.0, 40.0, 41.0));
        let c = per_group(&cell("{ method: dps }"));
        assert_eq!((c.nfe, c.vjp_denoiser, c.reward_calls), (100.0, 100.0, 101.0));
        let c = per_group(&cell("{ method: best_of_n, particles: 4 }"));
        assert_eq!((c.nfe, c.reward_calls), (400.0, 4.0));
    }

    #[test]
    fn svdd_matches_the_table_at_n_50() {
        let y = "version: 1\nname: t\nproblem: { kind: gmm, preset: gmm1 }\nsteps: 50\ngroups: 1\nmethods: [{ method: svdd, children: 20 }]\n";
        let c = per_group(&plan_str(y, Path::new("<t>")).unwrap().cells[0].spec);
        // methods.md §17: K = 1, M = 20, N = 50 ⇒ F = 1 + 20·49 = 981 rows (1962 with CFG), Rew = 1000.
        assert_eq!((c.nfe, c.reward_calls), (981.0, 1000.0));
    }
}
