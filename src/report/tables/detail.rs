//! Per-experiment detail tables (criterion's model: tables are built from the analysis): the tidy [`summary`] of
//! every metric over seeds and the [`paired`] differences against DAS over shared seeds.

use crate::metrics::metric::{direction, Direction};
use crate::report::analysis::Exp;
use crate::report::stats::{self, param_columns};
use crate::report::table::{Cell, Table};
use crate::Result;

/// Mean, std and 95% interval over seeds of every configuration and metric.
pub fn summary(e: &Exp) -> Table {
    let params: Vec<String> = param_columns(&e.df);
    let mut cols: Vec<&str> = vec!["method"];
    cols.extend(params.iter().map(String::as_str));
    cols.extend(["metric", "mean", "std", "n", "ci95_lo", "ci95_hi"]);
    let mut t = Table::new(
        &format!("summary-{}", e.name),
        &format!("{}: every metric", e.name),
        "Mean, standard deviation and 95% interval over seeds for every configuration and metric (tidy rows of metrics.parquet).",
        &cols,
    );
    for s in &e.stats {
        let mut row: Vec<Cell> = vec![s.method.clone().into()];
        row.extend(params.iter().map(|p| Cell::Text(s.p(p).to_string())));
        let h = s.ci();
        row.extend([
            s.metric.clone().into(),
            s.mean.into(),
            s.std.into(),
            (s.n as f64).into(),
            (s.mean - h).into(),
            (s.mean + h).into(),
        ]);
        t.push(row);
    }
    t
}

/// Other configuration minus DAS per shared seed (none without DAS or without pairs).
pub fn paired(e: &Exp) -> Result<Option<Table>> {
    if !e.stats.iter().any(|s| s.method == "das") {
        return Ok(None);
    }
    let group = ["problem", "alpha", "steps", "reward", "budget"];
    let metrics = ["emd", "reward_mean", "mode_tv"];
    let pairs = stats::paired(&e.df, "das", &metrics, &group)?;
    if pairs.is_empty() {
        return Ok(None);
    }
    let better = metrics
        .iter()
        .map(|m| match direction(m) {
            Direction::LowerIsBetter => format!("{m}: negative"),
            Direction::HigherIsBetter => format!("{m}: positive"),
            Direction::Neither => format!("{m}: neither"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut t = Table::new(
        &format!("paired-{}", e.name),
        &format!("{}: paired differences against DAS", e.name),
        &format!(
            "Other configuration minus DAS, per shared seed (common random numbers), mean and 95% interval; a negative \
             EMD difference means the other configuration is closer to the target. The sign that favours the other \
             configuration: {better}."
        ),
        &["context", "das", "other", "metric", "diff_mean", "ci95_lo", "ci95_hi", "seeds"],
    );
    for p in pairs {
        let h = stats::ci_half(p.std, p.n);
        t.push(vec![
            p.shared.into(),
            p.baseline.into(),
            p.other.into(),
            p.metric.into(),
            p.mean.into(),
            (p.mean - h).into(),
            (p.mean + h).into(),
            (p.n as f64).into(),
        ]);
    }
    Ok(Some(t))
}
