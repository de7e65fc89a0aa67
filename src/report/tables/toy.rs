//! Headline tables of the toy and of the shared axes (criterion's model: tables are built from the analysis, never
//! from raw files): [`figure1`] (distance to the exact tilted target per method and preset, with the noise floor),
//! the sweeps [`alpha`], [`particles`] and [`budget`], and the compute [`ledger`]. The best EMD (and mode TV) of
//! each comparable group is marked, the direction taken from the metric registry.

use std::collections::BTreeSet;

use crate::metrics::metric::direction;
use crate::report::analysis::{sort_key, Exp, CONTEXT};
use crate::report::stats::Stat;
use crate::report::table::{Cell, Table};

/// Text of a cell ("" for numbers).
fn text(c: &Cell) -> String {
    match c {
        Cell::Text(s) => s.clone(),
        _ => String::new(),
    }
}

/// Figure 1: EMD, reward and mode TV per method for the Figure-1 family (none when no such experiment ran).
pub fn figure1(exps: &[Exp]) -> Option<Table> {
    let fam: Vec<&Exp> = exps.iter().filter(|e| e.is_figure1()).collect();
    if fam.is_empty() {
        return None;
    }
    let mut t = Table::new(
        "figure1",
        "Figure 1: distance to the exact tilted target",
        "Exact EMD to fresh exact target samples (500 vs 500, mean over repeats, then over seeds), mean reward against the \
         exact E_tar[r], and mode-occupancy total variation; the noise-floor row is target against target under the same \
         protocol, the best any sampler can score. Bold: the best EMD and mode TV per problem and denoiser.",
        &["experiment", "problem", "denoiser", "method", "seeds", "emd", "emd ±95%", "reward_mean", "reward ±95%", "mode_tv"],
    );
    const FLOOR: &str = "noise floor (target vs target)";
    for e in fam {
        let problems: BTreeSet<String> = e.stats.iter().map(|s| s.p("problem").to_string()).collect();
        for prob in &problems {
            for s in e.configs().into_iter().filter(|s| s.p("problem") == prob) {
                let emd = e.get(s, "emd");
                t.push(vec![
                    e.name.clone().into(),
                    prob.clone().into(),
                    s.p("denoiser").to_string().into(),
                    e.label(&s.method, &s.params, &[]).into(),
                    (emd.map(|s| s.n).unwrap_or(0) as f64).into(),
                    Cell::mean(emd),
                    Cell::ci(emd),
                    Cell::mean(e.get(s, "reward_mean")),
                    Cell::ci(e.get(s, "reward_mean")),
                    Cell::mean(e.get(s, "mode_tv")),
                ]);
            }
            let floor: Vec<&Stat> =
                e.stats.iter().filter(|s| s.p("problem") == prob && s.metric == "emd_floor").collect();
            let target = e.stats.iter().find(|s| s.p("problem") == prob && s.metric == "reward_target");
            if let Some(f) = floor.first() {
                t.push(vec![
                    e.name.clone().into(),
                    prob.clone().into(),
                    "".into(),
                    FLOOR.into(),
                    (f.n as f64).into(),
                    f.mean.into(),
                    f.ci().into(),
                    Cell::mean(target),
                    f64::NAN.into(),
                    0.0.into(),
                ]);
            }
        }
    }
    let group = |r: &[Cell]| (text(&r[0]), text(&r[1]), text(&r[2]));
    for m in ["emd", "mode_tv"] {
        t.mark_best(m, direction(m), group, |r| text(&r[3]) != FLOOR);
    }
    Some(t)
}

fn sweep(exps: &[Exp], axis: &str, name: &str, title: &str, caption: &str, metrics: &[&str]) -> Option<Table> {
    let fam: Vec<&Exp> = exps.iter().filter(|e| e.has(axis) && (axis == "budget" || !e.has("budget"))).collect();
    if fam.is_empty() {
        return None;
    }
    let mut cols = vec!["experiment", "problem", "denoiser", "method", axis];
    let headers: Vec<String> = metrics.iter().flat_map(|m| [m.to_string(), format!("{m} ±95%")]).collect();
    cols.extend(headers.iter().map(String::as_str));
    let caption = format!("{caption} Bold: the best EMD per problem, denoiser and {axis} value.");
    let mut t = Table::new(name, title, &caption, &cols);
    for e in fam {
        let mut cs = e.configs();
        let key = |s: &Stat| {
            (
                s.p("problem").to_string(),
                s.p("denoiser").to_string(),
                e.label(&s.method, &s.params, &[axis]),
                sort_key(s.p(axis)),
            )
        };
        cs.sort_by(|a, b| key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal));
        for s in cs {
            let mut row: Vec<Cell> = vec![
                e.name.clone().into(),
                s.p("problem").to_string().into(),
                s.p("denoiser").to_string().into(),
                e.label(&s.method, &s.params, &[axis, "size"]).into(),
                s.p(axis).to_string().into(),
            ];
            for m in metrics {
                row.push(Cell::mean(e.get(s, m)));
                row.push(Cell::ci(e.get(s, m)));
            }
            t.push(row);
        }
    }
    let group = |r: &[Cell]| (text(&r[0]), text(&r[1]), text(&r[2]), text(&r[4]));
    t.mark_best("emd", direction("emd"), group, |_| true);
    Some(t)
}

/// EMD and reward against α.
pub fn alpha(exps: &[Exp]) -> Option<Table> {
    sweep(
        exps,
        "alpha",
        "alpha",
        "Temperature α",
        "EMD and mean reward against α (smaller α = stronger tilt); reward_target is the exact E_tar[r] at that α.",
        &["emd", "reward_mean", "reward_target"],
    )
}

/// EMD against the particles per prompt.
pub fn particles(exps: &[Exp]) -> Option<Table> {
    sweep(
        exps,
        "particles",
        "particles",
        "Particles",
        "EMD against the number of particles (samples, candidates) per prompt, with the noise floor for reference.",
        &["emd", "emd_floor", "reward_mean"],
    )
}

/// EMD and reward at equal compute.
pub fn budget(exps: &[Exp]) -> Option<Table> {
    sweep(
        exps,
        "budget",
        "budget",
        "Equal compute",
        "Each method sized to the largest setting within the budget (column size) and its EMD and reward there.",
        &["emd", "reward_mean", "nfe"],
    )
}

/// Compute per prompt group and configuration.
pub fn ledger(exps: &[Exp]) -> Table {
    let metrics = ["nfe", "vjp_denoiser", "vjp_reward", "decoder_calls", "reward_calls", "wall_s"];
    let mut cols = vec!["experiment", "configuration"];
    cols.extend(metrics);
    let mut t = Table::new(
        "ledger",
        "Compute ledger",
        "Per prompt group and configuration (mean over seeds): denoiser rows, VJPs through the denoiser, VJPs through \
         reward∘decoder only, decoder and reward calls; wall_s is the cell's wall time in seconds.",
        &cols,
    );
    for e in exps {
        for s in e.configs() {
            let ctx: Vec<String> = CONTEXT
                .iter()
                .filter(|k| e.has(k))
                .map(|k| format!("{k}={}", s.p(k)))
                .filter(|x| !x.ends_with('='))
                .collect();
            let mut label = e.label(&s.method, &s.params, &[]);
            if !ctx.is_empty() {
                label = format!("{label} [{}]", ctx.join(", "));
            }
            let mut row: Vec<Cell> = vec![e.name.clone().into(), label.into()];
            row.extend(metrics.iter().map(|m| Cell::mean(e.get(s, m))));
            t.push(row);
        }
    }
    t
}
