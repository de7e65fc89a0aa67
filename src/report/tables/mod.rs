//! Tables layer of the report (criterion's model: load → analysis → tables and figures → exporters → page). Each
//! function builds one [`Table`] from analysed experiments: [`toy`] (Figure 1, the α / particles / budget sweeps,
//! the compute ledger), [`reference`] (against `baselines/`), [`cross`] and [`mini`] (image problems), [`cost`]
//! (random-weight SD runs), [`rewards`]
//! (the scales of the rewards that ran) and [`detail`] (per-experiment summary and paired differences). A table
//! with nothing to show for the experiments at hand — no rows, or no experiment it applies to — is left out.

pub mod cost;
pub mod cross;
pub mod detail;
pub mod mini;
pub mod reference;
pub mod rewards;
pub mod toy;

use std::path::Path;

use super::analysis::Exp;
use super::table::Table;
use crate::Result;

/// Tables with rows only.
fn non_empty(ts: impl IntoIterator<Item = Option<Table>>) -> Vec<Table> {
    ts.into_iter().flatten().filter(|t| !t.rows.is_empty()).collect()
}

/// The headline tables across experiments, in page order.
pub fn headline(exps: &[Exp], baselines: &Path) -> Result<Vec<Table>> {
    let mut ts = vec![toy::figure1(exps), reference::table(exps, baselines)?, toy::alpha(exps), toy::particles(exps)];
    ts.push(toy::budget(exps));
    for e in exps {
        if e.is_mini() {
            ts.push(Some(mini::table(e)));
            ts.push(mini::sir(e));
        } else if !e.eval_labels().is_empty() {
            ts.push(Some(cross::cells(e)));
        }
        ts.push(cost::table(e));
    }
    ts.push(rewards::table(exps));
    ts.push(Some(toy::ledger(exps)));
    Ok(non_empty(ts))
}

/// One experiment's detail tables: summary, per-prompt cross-reward matrix, paired differences.
pub fn detail(e: &Exp) -> Result<Vec<Table>> {
    Ok(non_empty([Some(detail::summary(e)), cross::prompts(e), detail::paired(e)?]))
}
