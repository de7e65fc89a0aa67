//! The cost table of random-weight Stable Diffusion experiments (`problem.random_weights`, issue 16): per
//! configuration, seconds per image, the compute ledger per prompt group and the peak memory — the figures such a
//! run is for. Reward numbers are never shown: random towers' scores are not rewards.

use crate::report::analysis::Exp;
use crate::report::table::{Cell, Table};

/// Metrics of the table, after the configuration.
const COLUMNS: [&str; 7] =
    ["s_per_image", "sample_s", "nfe", "vjp_denoiser", "vjp_reward", "reward_calls", "peak_mem_gb"];

/// `cost-<experiment>` for an experiment whose cells ran on random weights (`None` otherwise).
pub fn table(e: &Exp) -> Option<Table> {
    let configs = e.sorted_configs();
    if !configs.iter().any(|s| e.mean(s, "random_weights") == 1.0) {
        return None;
    }
    let mut cols = vec!["method", "alpha"];
    cols.extend(COLUMNS);
    let mut t = Table::new(
        &format!("cost-{}", e.name),
        &format!("{}: cost on random weights", e.name),
        "Seeded random weights of the real architectures (problem.random_weights): seconds per output image \
         (sampling only, models loaded), the ledger per prompt group and the peak memory. Means over seeds; no \
         reward numbers (random towers' scores are not rewards).",
        &cols,
    );
    for s in configs {
        let mut row = vec![Cell::Text(e.label(&s.method, &s.params, &["alpha"])), Cell::Text(s.p("alpha").to_string())];
        row.extend(COLUMNS.map(|m| Cell::Num(e.mean(s, m))));
        t.push(row);
    }
    Some(t)
}
