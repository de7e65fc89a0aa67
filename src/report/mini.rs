//! FMNIST-align in the report (mini-benchmark.md §7): the cross-reward table of every mini experiment (target,
//! held-out rewards, fidelity, diversity, over-optimisation gaps against unguided DDIM), the Figure-2 analogue
//! (held-out rewards and diversity against the target reward, one line per method over its strength grid), the T3
//! Pareto front and sample grids.
//!
//! Intervals on a single seed are over outputs (as in [`super::cross`], whose helpers and per-prompt table serve
//! FMNIST-align too): ±1.96·sd/√n with sd the spread of the metric over the cell's outputs (`r_*_sd`) and n its
//! outputs — common random numbers make methods' cells paired, so these intervals are conservative for differences.

use std::collections::BTreeMap;
use std::path::Path;

use super::build::Exp;
use super::cross::{reward_label, sorted_configs, target_metric, with_ci};
use super::figures::{self, LinePanel, ParetoPoint, Series};
use super::stats::Stat;
use super::table::{Cell, Table};
use crate::Result;

/// Held-out metrics of the Figure-2 analogue (metric, axis label).
const HELD_OUT: [(&str, &str); 4] = [
    ("r_style_b", "style_b (held-out preference)"),
    ("r_gold_ink", "gold_ink (ground truth)"),
    ("r_cls_b", "cls_b: log p_B(class) (held-out fidelity)"),
    ("acc_b", "classifier-B accuracy on the class"),
];
/// Diversity and distribution metrics of the Figure-2 analogue.
const DIVERSITY: [(&str, &str); 4] = [
    ("tce_prompt", "truncated entropy per prompt (φ_B, K = 3)"),
    ("pairwise_cos", "mean pairwise cosine distance (φ_B)"),
    ("lpips_b", "LPIPS-style distance (B's conv taps)"),
    ("kid_x1000", "KID ×1000 vs test images (lower is better)"),
];
/// Parameters that are a method's strength axis (a line runs along them).
const STRENGTH: [&str; 3] = ["alpha", "rho", "budget"];

/// Whether an experiment ran on the FMNIST-align problem.
pub(super) fn is_mini(e: &Exp) -> bool {
    e.cells.iter().any(|c| c.params.get("problem").is_some_and(|p| p.starts_with("mini")))
}

/// Unguided DDIM configuration with the same target reward (the Δ baseline).
fn ddim<'a>(e: &'a Exp, s: &Stat) -> Option<&'a Stat> {
    let r = reward_label(e, s);
    e.configs().into_iter().find(|c| c.method == "ddim" && reward_label(e, c) == r)
}

/// Over-optimisation gap: Δtarget/σ_target − Δheld/σ_held, Δ against unguided DDIM, σ its spread over outputs.
fn gap(e: &Exp, s: &Stat, target: &str, held: &str) -> f64 {
    let Some(base) = ddim(e, s) else { return f64::NAN };
    let val = |c: &Stat, m: &str| e.get(c, m).map(|x| x.mean).unwrap_or(f64::NAN);
    let dt = (val(s, target) - val(base, target)) / val(base, &format!("{target}_sd"));
    let dh = (val(s, held) - val(base, held)) / val(base, &format!("{held}_sd"));
    dt - dh
}

/// The cross-reward table of one mini experiment.
pub(super) fn table(e: &Exp) -> Table {
    let mut t = Table::new(
        &format!("mini-{}", e.name),
        &format!("{}: target vs held-out rewards, fidelity and diversity", e.name),
        "Every FMNIST-align reward evaluated on every configuration's outputs (guide with one, evaluate with all). \
         ± = 95% interval over outputs (one seed). gap = Δtarget/σ − Δheld-out/σ against unguided DDIM (σ = DDIM's \
         spread over outputs): positive means the target rose more than the held-out reward (over-optimisation).",
        &[
            "method",
            "alpha",
            "reward",
            "target",
            "target ±95%",
            "style_a",
            "style_b",
            "gold_ink",
            "cls_a",
            "cls_b",
            "acc_b",
            "gap style_b",
            "gap gold_ink",
            "tce_prompt",
            "pairwise_cos",
            "lpips_b",
            "kid_x1000",
            "nfe",
            "wall_s",
        ],
    );
    for s in sorted_configs(e) {
        let tm = target_metric(e, s);
        let (tv, tci) = match &tm {
            Some(m) => with_ci(e, s, m),
            None => (e.get(s, "reward_mean").map(|x| x.mean).unwrap_or(f64::NAN), f64::NAN),
        };
        let v = |m: &str| Cell::Num(e.get(s, m).map(|x| x.mean).unwrap_or(f64::NAN));
        let g = |held: &str| Cell::Num(tm.as_ref().map(|t| gap(e, s, t, held)).unwrap_or(f64::NAN));
        t.push(vec![
            Cell::Text(e.label(&s.method, &s.params, &["alpha"])),
            Cell::Text(s.p("alpha").to_string()),
            Cell::Text(reward_label(e, s)),
            Cell::Num(tv),
            Cell::Num(tci),
            v("r_style_a"),
            v("r_style_b"),
            v("r_gold_ink"),
            v("r_cls_a"),
            v("r_cls_b"),
            v("acc_b"),
            g("r_style_b"),
            g("r_gold_ink"),
            v("tce_prompt"),
            v("pairwise_cos"),
            v("lpips_b"),
            v("kid_x1000"),
            v("nfe"),
            v("wall_s"),
        ]);
    }
    t
}

/// The SIR-reference table (hypothesis H4) of a mini experiment run with `metrics: { sir: N }`, if any.
pub(super) fn sir_table(e: &Exp) -> Option<Table> {
    let configs: Vec<&Stat> = sorted_configs(e).into_iter().filter(|s| e.get(s, "emd_sir").is_some()).collect();
    if configs.is_empty() {
        return None;
    }
    let mut t = Table::new(
        &format!("sir-{}", e.name),
        &format!("{}: outputs against the SIR reference of the tilted target", e.name),
        "SIR reference (mini-benchmark.md §7): N unguided samples per prompt class weighted by exp(r/α) within the \
         class. target = the configuration's mean target reward, sir_target = the SIR estimate of the tilted mean, \
         gap = target − sir_target; emd_sir = exact EMD in φ_B space between the outputs and as many SIR draws, \
         emd_floor = two SIR draws against each other; sir_ess = the smallest per-class ESS (the reference is valid \
         only where it is ≥ 200). Means over seeds, ± = 95% interval over seeds.",
        &[
            "method",
            "alpha",
            "target",
            "sir_target",
            "gap",
            "gap ±95%",
            "emd_sir",
            "emd_sir ±95%",
            "emd_floor",
            "sir_ess",
            "valid",
            "seeds",
        ],
    );
    for s in configs {
        let st = |m: &str| e.get(s, m);
        let v = |m: &str| Cell::Num(st(m).map(|x| x.mean).unwrap_or(f64::NAN));
        let ci = |m: &str| Cell::Num(st(m).map(|x| x.ci()).unwrap_or(f64::NAN));
        let valid = st("sir_valid").map(|x| if x.mean >= 1.0 { "yes" } else { "no" }).unwrap_or("");
        t.push(vec![
            Cell::Text(e.label(&s.method, &s.params, &["alpha"])),
            Cell::Text(s.p("alpha").to_string()),
            v("reward_mean"),
            v("sir_target"),
            v("target_gap_sir"),
            ci("target_gap_sir"),
            v("emd_sir"),
            ci("emd_sir"),
            v("emd_sir_floor"),
            v("sir_ess"),
            Cell::Text(valid.to_string()),
            Cell::Text(st("emd_sir").map(|x| x.n.to_string()).unwrap_or_default()),
        ]);
    }
    Some(t)
}

/// Lines of `y` against the target, one per method variant over its strength grid.
fn panel(e: &Exp, y: &str, y_label: &str) -> LinePanel {
    let mut groups: BTreeMap<String, (String, Vec<&Stat>)> = BTreeMap::new();
    let cfgs = e.configs();
    for s in &cfgs {
        // The legend names a method plus what varies between its own configurations (not the strength axis).
        let mut exclude: Vec<&str> = STRENGTH.to_vec();
        if s.method == "best_of_n" {
            exclude.push("particles");
        }
        for k in s.params.keys() {
            let same = cfgs.iter().filter(|o| o.method == s.method).all(|o| o.params.get(k) == s.params.get(k));
            if same {
                exclude.push(k.as_str());
            }
        }
        let label = e.label(&s.method, &s.params, &exclude);
        groups.entry(label).or_insert_with(|| (s.method.clone(), vec![])).1.push(*s);
    }
    let mut variants: BTreeMap<String, usize> = BTreeMap::new();
    let mut series = Vec::new();
    for (label, (method, cfgs)) in groups {
        let v = variants.entry(method.clone()).or_insert(0);
        let mut pts: Vec<(f64, f64, f64)> = cfgs
            .iter()
            .map(|s| {
                let x = match target_metric(e, s) {
                    Some(m) => e.get(s, &m).map(|x| x.mean).unwrap_or(f64::NAN),
                    None => e.get(s, "reward_mean").map(|x| x.mean).unwrap_or(f64::NAN),
                };
                let (my, ci) = if y.starts_with("r_") {
                    with_ci(e, s, y)
                } else {
                    (e.get(s, y).map(|x| x.mean).unwrap_or(f64::NAN), f64::NAN)
                };
                (x, my, ci)
            })
            .collect();
        pts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        series.push(Series { label, method, variant: *v, points: pts });
        *v += 1;
    }
    LinePanel {
        title: y_label.to_string(),
        x_label: "target reward (mean over outputs)".into(),
        y_label: y_label.to_string(),
        x_log: false,
        series,
        band: None,
        legend_lower_right: false,
    }
}

/// Figure-2 analogue, T3 front and sample grids of one mini experiment.
pub(super) fn figures(e: &Exp, dir: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let mut out = Vec::new();
    let held: Vec<LinePanel> = HELD_OUT.iter().map(|(m, l)| panel(e, m, l)).collect();
    let files = figures::lines(
        dir,
        &format!("fig2-heldout-{}", e.name),
        &format!("{}: held-out rewards vs target", e.name),
        &held,
    )?;
    out.push((
        "Figure-2 analogue (held-out): each held-out reward against the target reward, one line per method over its \
         strength grid (α, ρ or n), 95% intervals over outputs. Over-optimisation shows as a line that moves right \
         (target up) while it falls or flattens."
            .to_string(),
        files,
    ));
    let div: Vec<LinePanel> = DIVERSITY.iter().map(|(m, l)| panel(e, m, l)).collect();
    let files =
        figures::lines(dir, &format!("fig2-diversity-{}", e.name), &format!("{}: diversity vs target", e.name), &div)?;
    out.push((
        "Figure-2 analogue (diversity and fidelity): diversity of the outputs on classifier-B features and KID against \
         the target reward; mode collapse shows as falling diversity and rising KID."
            .to_string(),
        files,
    ));
    // T3: the two objectives of a weighted-sum sweep.
    if e.configs().iter().any(|s| reward_label(e, s).contains('*')) {
        let points: Vec<ParetoPoint> = e
            .configs()
            .into_iter()
            .filter_map(|s| {
                Some(ParetoPoint {
                    label: format!("{} {}", e.label(&s.method, &s.params, &["alpha", "reward"]), reward_label(e, s)),
                    method: s.method.clone(),
                    x: e.get(s, "r_style_a")?.mean,
                    y: e.get(s, "r_cls_a")?.mean,
                })
            })
            .collect();
        if points.len() >= 3 {
            let files = figures::pareto(
                dir,
                &format!("pareto-{}", e.name),
                &format!("{}: style_a vs cls_a over the weight w", e.name),
                ("style_a (higher is better)", "cls_a = log p_A(class) (higher is better)"),
                &points,
                (false, true),
            )?;
            out.push((
                "T3 multi-objective front: every (method, w) of multi_w = w·style_a + (1−w)·cls_a; non-dominated \
                 configurations are joined."
                    .to_string(),
                files,
            ));
        }
    }
    Ok(out)
}
