//! FMNIST-align figures (mini-benchmark.md §7; criterion's model: one function per figure): the Figure-2
//! analogue — [`heldout`] rewards and [`diversity`] against the target reward, one line per method over its
//! strength grid — and the T3 multi-objective [`front`]. Intervals on a single seed are over outputs (±1.96·sd/√n
//! from the `r_*_sd` companions).

use std::collections::BTreeMap;

use super::draw::{self, LinePanel, ParetoPoint, Series};
use super::figure::{axis_label, Figure};
use crate::metrics::metric::direction;
use crate::report::analysis::Exp;
use crate::report::stats::Stat;

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
    ("kid_x1000", "KID ×1000 vs test images"),
];
/// Parameters that are a method's strength axis (a line runs along them).
const STRENGTH: [&str; 3] = ["alpha", "rho", "budget"];

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
                let x = match e.target_metric(s) {
                    Some(m) => e.mean(s, &m),
                    None => e.mean(s, "reward_mean"),
                };
                let (my, ci) = if y.starts_with("r_") { e.with_ci(s, y) } else { (e.mean(s, y), f64::NAN) };
                (x, my, ci)
            })
            .collect();
        pts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        series.push(Series { label, method, variant: *v, points: pts });
        *v += 1;
    }
    let y_label = axis_label(y_label, y);
    LinePanel {
        title: y_label.clone(),
        x_label: "target reward (mean over outputs)".into(),
        y_label,
        x_log: false,
        series,
        band: None,
        legend_lower_right: false,
    }
}

/// Figure-2 analogue (held-out): each held-out reward against the target reward.
pub fn heldout(e: &Exp) -> Figure {
    let held: Vec<LinePanel> = HELD_OUT.iter().map(|(m, l)| panel(e, m, l)).collect();
    Figure::from_result(
        format!("fig2-heldout-{}", e.name),
        "Figure-2 analogue (held-out): each held-out reward against the target reward, one line per method over its \
         strength grid (α, ρ or n), 95% intervals over outputs. Over-optimisation shows as a line that moves right \
         (target up) while it falls or flattens."
            .into(),
        draw::lines(&format!("{}: held-out rewards vs target", e.name), &held),
    )
}

/// Figure-2 analogue (diversity and fidelity): diversity and KID against the target reward.
pub fn diversity(e: &Exp) -> Figure {
    let div: Vec<LinePanel> = DIVERSITY.iter().map(|(m, l)| panel(e, m, l)).collect();
    Figure::from_result(
        format!("fig2-diversity-{}", e.name),
        "Figure-2 analogue (diversity and fidelity): diversity of the outputs on classifier-B features and KID against \
         the target reward; mode collapse shows as falling diversity and rising KID."
            .into(),
        draw::lines(&format!("{}: diversity vs target", e.name), &div),
    )
}

/// T3: the two objectives of a weighted-sum sweep (none when no configuration is guided by a weighted sum).
pub fn front(e: &Exp) -> Option<Figure> {
    if !e.configs().iter().any(|s| e.reward_label(s).contains('*')) {
        return None;
    }
    let (xm, ym) = ("r_style_a", "r_cls_a");
    let points: Vec<ParetoPoint> = e
        .configs()
        .into_iter()
        .filter_map(|s| {
            Some(ParetoPoint {
                label: format!("{} {}", e.label(&s.method, &s.params, &["alpha", "reward"]), e.reward_label(s)),
                method: s.method.clone(),
                x: e.get(s, xm)?.mean,
                y: e.get(s, ym)?.mean,
            })
        })
        .collect();
    let stem = format!("pareto-{}", e.name);
    let caption = "T3 multi-objective front: every (method, w) of multi_w = w·style_a + (1−w)·cls_a; non-dominated \
                   configurations are joined.";
    if points.len() < 3 {
        let why = format!("{} configuration(s) with both {xm} and {ym}; a front needs at least three", points.len());
        return Some(Figure::not_drawn(stem, caption.into(), why));
    }
    let drawn = draw::pareto(
        &format!("{}: style_a vs cls_a over the weight w", e.name),
        (&axis_label("style_a", xm), &axis_label("cls_a = log p_A(class)", ym)),
        &points,
        (direction(xm), direction(ym)),
    );
    Some(Figure::from_result(stem, caption.into(), drawn))
}
