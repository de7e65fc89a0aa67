//! Figures of the toy and of any experiment with the shared axes (criterion's model: one function per figure, from
//! the analysed experiment to [`Figure`]s): [`samples`] (Figure-1-style panels over the exact target the run
//! stored in `targets/<key>.json`), [`sweeps`] (metric against particles, α or budget), [`pareto`] (mean reward
//! against EMD) and [`traces`] (ESS and λ over the steps).

use std::collections::{BTreeMap, BTreeSet};

use super::draw::{self, Density, LinePanel, ParetoPoint, ScatterPanel, Series};
use super::figure::{axis_label, Figure};
use crate::metrics::metric::direction;
use crate::report::analysis::{method_order, Exp};
use crate::report::load::StoredTrace;
use crate::report::stats::Stat;
use crate::report::table::fmt_num;

/// Why a sample figure has no exact target when the cells name none.
const NO_TARGET: &str = "the run stored no target density; re-run with this version to draw the exact target's \
                         density and samples";

/// Axis ranges of points, padded (none without a finite point).
fn point_range(points: &[(f64, f64)]) -> Option<((f64, f64), (f64, f64))> {
    let fin: Vec<&(f64, f64)> = points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    if fin.is_empty() {
        return None;
    }
    let span = |v: Vec<f64>| {
        let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let pad = 0.5 + 0.05 * (hi - lo);
        (lo - pad, hi + pad)
    };
    Some((span(fin.iter().map(|p| p.0).collect()), span(fin.iter().map(|p| p.1).collect())))
}

/// Samples of every method of each (problem, denoiser) group (one seed, α = 1 where run) over the exact tilted
/// target's density and a panel of its samples, both read from the stored target view.
pub fn samples(e: &Exp) -> Vec<Figure> {
    let mut out = Vec::new();
    for ((prob, den), cells) in e.panel_groups() {
        let stem = format!("samples-{}-{}-{}", e.name, prob, den);
        let caption = format!(
            "Samples of every method on {prob} ({den} denoiser, one seed) over the exact tilted target's density \
             (shaded) and contours; the first panel is drawn from the exact target."
        );
        let mut shown: Vec<_> = cells.iter().filter(|c| c.samples.d == 2).collect();
        let Some(first) = shown.first().copied() else {
            if e.is_toy() {
                let why = match cells.iter().map(|c| c.samples.d).find(|&d| d > 0 && d != 2) {
                    Some(d) => format!("the problem is {d}-dimensional; sample panels are drawn for 2-D problems"),
                    None => "the cells kept no 2-D samples (metrics.keep_samples)".into(),
                };
                out.push(Figure::not_drawn(stem, caption, why));
            }
            continue;
        };
        let view = match shown.iter().find_map(|c| c.target_view.as_ref()) {
            Some(key) => e.targets.get(key).cloned().unwrap_or_else(|| Err(format!("targets/{key}.json: not read"))),
            None => Err(NO_TARGET.to_string()),
        };
        let mut panels = Vec::new();
        let (density, note) = match view {
            Ok(v) => {
                let pts: Vec<(f64, f64)> = v.samples.chunks_exact(2).map(|p| (p[0], p[1])).collect();
                panels.push(ScatterPanel {
                    title: "exact target".into(),
                    subtitle: format!("{} samples", pts.len()),
                    method: "target".into(),
                    points: pts,
                });
                let d = Density { x: (v.x[0], v.x[1]), y: (v.y[0], v.y[1]), nx: v.nx, ny: v.ny, values: v.density };
                (d, None)
            }
            Err(why) => {
                let all: Vec<(f64, f64)> =
                    shown.iter().flat_map(|c| c.samples.x.chunks_exact(2).map(|p| (p[0], p[1]))).collect();
                let Some((x, y)) = point_range(&all) else {
                    out.push(Figure::not_drawn(stem, caption, format!("no finite samples; {why}")));
                    continue;
                };
                (Density { x, y, ..Default::default() }, Some(why))
            }
        };
        // Panels in the report's method order (unguided, best-of-N, SMC family, guidance, fine-tuning).
        shown.sort_by_key(|c| method_order(&c.method));
        for c in shown.into_iter().take(15) {
            let emd = c.metrics.get("emd").copied().unwrap_or(f64::NAN);
            let r = c.metrics.get("reward_mean").copied().unwrap_or(f64::NAN);
            panels.push(ScatterPanel {
                title: e.label(&c.method, &c.params, &[]),
                subtitle: format!("EMD {}, mean reward {}", fmt_num(emd), fmt_num(r)),
                method: c.method.clone(),
                points: c.samples.x.chunks_exact(2).map(|p| (p[0], p[1])).collect(),
            });
        }
        let title = format!("{}: {prob}, {den} denoiser (seed {})", e.name, first.seed);
        let mut fig = Figure::from_result(stem, caption, draw::scatter_panels(&title, &panels, &density));
        fig.note = note;
        out.push(fig);
    }
    out
}

/// One line panel of `m` against `axis` over the configurations `cfgs` (none when nothing is finite).
fn sweep_panel(e: &Exp, prob: &str, cfgs: &[&Stat], axis: &str, m: &str, log: bool) -> Option<LinePanel> {
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    let mut variants: BTreeMap<String, usize> = BTreeMap::new();
    for s in cfgs {
        // Along a budget the sized parameter changes with the budget: one line per method and setting.
        let label = if axis == "budget" {
            e.label(&s.method, &s.params, &SIZES)
        } else {
            e.label(&s.method, &s.params, &[axis, "size"])
        };
        let Some(v) = e.get(s, m) else { continue };
        let Ok(x) = s.p(axis).parse::<f64>() else { continue };
        let n_var = variants.iter().filter(|(l, _)| l.split(" (").next() == Some(s.method.as_str())).count();
        let k = *variants.entry(label.clone()).or_insert(n_var);
        let ser = series.entry(label.clone()).or_insert_with(|| Series {
            label: label.clone(),
            method: s.method.clone(),
            variant: k,
            points: vec![],
        });
        ser.points.push((x, v.mean, v.ci()));
    }
    let mut series: Vec<Series> = series.into_values().collect();
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    if m == "reward_mean" {
        let targets = e.stats.iter().filter(|s| s.metric == "reward_target" && s.p("problem") == prob);
        let mut pts: Vec<(f64, f64, f64)> = if axis == "alpha" {
            targets.filter_map(|s| s.p("alpha").parse::<f64>().ok().map(|a| (a, s.mean, f64::NAN))).collect()
        } else {
            // E_tar[r] does not depend on this axis: a level line over the plotted range, when it is one value.
            let values: BTreeSet<u64> = targets.map(|s| s.mean.to_bits()).collect();
            let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
            let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| (l.min(x), h.max(x)));
            match (values.len(), lo < hi) {
                (1, true) => {
                    let v = f64::from_bits(*values.first().expect("one value"));
                    vec![(lo, v, f64::NAN), (hi, v, f64::NAN)]
                }
                _ => vec![],
            }
        };
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts.dedup_by(|a, b| a.0 == b.0);
        if !pts.is_empty() {
            series.push(Series { label: "exact E_tar[r]".into(), method: "target".into(), variant: 0, points: pts });
        }
    }
    let band = if m == "emd" {
        let f: Vec<&Stat> = e.stats.iter().filter(|s| s.metric == "emd_floor" && s.p("problem") == prob).collect();
        f.first().map(|s| {
            let h = if s.ci().is_finite() { s.ci() } else { 0.0 };
            (s.mean - h, s.mean + h, "noise floor".to_string())
        })
    } else {
        None
    };
    series.iter().any(|s| !s.points.is_empty()).then(|| LinePanel {
        title: format!("{m} vs {axis}"),
        x_label: axis.into(),
        y_label: m.into(),
        x_log: log,
        series,
        band,
        legend_lower_right: false,
    })
}

/// Line figures for the swept axes (particles, steps, α, budget), one per (problem, denoiser).
pub fn sweeps(e: &Exp) -> Vec<Figure> {
    let mut out = Vec::new();
    let axes: [(&str, &[&str], bool, &str); 4] = [
        ("particles", &["emd", "reward_mean"], true, "EMD and mean reward against particles per prompt (log axis), 95% intervals over seeds; the grey band is the target-vs-target noise floor, the level line the exact E_tar[r]."),
        ("steps", &["reward_mean", "emd"], true, "Mean reward and EMD against the number of sampling steps N (log axis), 95% intervals over seeds; the level line is the exact E_tar[r] (the N-step sampler's own tilted law differs from it by the discretisation)."),
        ("alpha", &["reward_mean", "emd"], true, "Mean reward and EMD against α (log axis); the target line is the exact E_tar[r]."),
        ("budget", &["emd", "reward_mean"], true, "EMD and mean reward against the compute budget per prompt (log axis)."),
    ];
    for (axis, metrics, log, caption) in axes {
        // Not applicable: the axis does not vary, or none of the metrics was measured (e.g. no EMD off the toy).
        let measured = metrics.iter().any(|m| e.stats.iter().any(|s| s.metric == *m));
        if !e.has(axis) || (axis != "budget" && e.has("budget")) || !measured {
            continue;
        }
        let mut groups: BTreeMap<(String, String), Vec<&Stat>> = BTreeMap::new();
        for s in e.configs() {
            groups.entry((s.p("problem").to_string(), s.p("denoiser").to_string())).or_default().push(s);
        }
        // Oracle rows (exact_tilted) join every denoiser group of their problem.
        let problems: BTreeSet<String> = groups.keys().map(|k| k.0.clone()).collect();
        for prob in problems {
            let shared: Vec<&Stat> = groups.get(&(prob.clone(), "exact_tilted".into())).cloned().unwrap_or_default();
            let dens: Vec<String> =
                groups.keys().filter(|k| k.0 == prob && k.1 != "exact_tilted").map(|k| k.1.clone()).collect();
            let dens = if dens.is_empty() { vec!["exact_tilted".to_string()] } else { dens };
            for den in dens {
                let mut cfgs = groups.get(&(prob.clone(), den.clone())).cloned().unwrap_or_default();
                if den != "exact_tilted" {
                    cfgs.extend(shared.iter().copied());
                }
                let panels: Vec<LinePanel> =
                    metrics.iter().filter_map(|m| sweep_panel(e, &prob, &cfgs, axis, m, log)).collect();
                let stem = format!("{axis}-{}-{prob}-{den}", e.name);
                // The axis only differs between methods (e.g. the oracle's sample count beside K = 100): no line.
                let swept = panels
                    .iter()
                    .flat_map(|p| &p.series)
                    .any(|s| s.method != "target" && s.points.iter().any(|q| q.0 != s.points[0].0));
                if !panels.is_empty() && !swept {
                    continue;
                }
                if panels.is_empty() {
                    let why = format!("no configuration has a finite {} at a numeric {axis}", metrics.join(" or "));
                    out.push(Figure::not_drawn(stem, caption.to_string(), why));
                    continue;
                }
                let drawn = draw::lines(&format!("{}: {prob}, {den}", e.name), &panels);
                out.push(Figure::from_result(stem, caption.to_string(), drawn));
            }
        }
    }
    out
}

/// Reward against EMD for every configuration of a (problem, denoiser, α) group, the front by the metrics'
/// directions; experiments without an EMD (no exact target) have none.
pub fn pareto(e: &Exp) -> Vec<Figure> {
    let mut out = Vec::new();
    let (xm, ym) = ("emd", "reward_mean");
    if !e.stats.iter().any(|s| s.metric == xm) || (e.has("particles") && !e.is_figure1()) {
        return out;
    }
    let caption = "Pareto front of mean target reward against EMD: configurations not beaten on both by another are \
                   joined and outlined. A method that gains reward by leaving the target (over-optimisation) moves right.";
    let mut groups: BTreeMap<(String, String, String), Vec<&Stat>> = BTreeMap::new();
    for s in e.configs() {
        let den = if s.p("denoiser") == "exact_tilted" { "*".to_string() } else { s.p("denoiser").to_string() };
        groups.entry((s.p("problem").to_string(), den, s.p("alpha").to_string())).or_default().push(s);
    }
    let shared: Vec<((String, String), Vec<&Stat>)> =
        groups.iter().filter(|(k, _)| k.1 == "*").map(|(k, v)| ((k.0.clone(), k.2.clone()), v.clone())).collect();
    for ((prob, den, alpha), mut cfgs) in groups.clone() {
        if den == "*" && groups.keys().any(|k| k.0 == prob && k.2 == alpha && k.1 != "*") {
            continue;
        }
        for ((p, a), v) in &shared {
            if *p == prob && *a == alpha && den != "*" {
                cfgs.extend(v.iter().copied());
            }
        }
        let points: Vec<ParetoPoint> = cfgs
            .iter()
            .filter_map(|s| {
                Some(ParetoPoint {
                    label: e.label(&s.method, &s.params, &[]),
                    method: s.method.clone(),
                    x: e.get(s, xm)?.mean,
                    y: e.get(s, ym)?.mean,
                })
            })
            .collect();
        let stem = format!("pareto-{}-{prob}-{den}-alpha{alpha}", e.name).replace('*', "all");
        if points.len() < 3 {
            let why =
                format!("{} configuration(s) with both {xm} and {ym}; a front needs at least three", points.len());
            out.push(Figure::not_drawn(stem, caption.into(), why));
            continue;
        }
        let drawn = draw::pareto(
            &format!("{}: {prob}, {den}, α = {alpha}", e.name),
            (&axis_label("EMD to the exact target", xm), &axis_label("mean reward", ym)),
            &points,
            (direction(xm), direction(ym)),
        );
        out.push(Figure::from_result(stem, caption.into(), drawn));
    }
    out
}

/// ESS and λ over steps for the SMC-family cells of the first (problem, denoiser) group.
pub fn traces(e: &Exp) -> Option<Figure> {
    let groups = e.panel_groups();
    let ((prob, den), cells) = groups.into_iter().next()?;
    let stem = format!("traces-{}-{prob}-{den}", e.name);
    let caption = "Effective sample size (as a fraction of the particles, averaged over prompts) and the tempering \
                   schedule λ over the sampling steps, for the particle methods of one seed.";
    let smc: Vec<_> = cells
        .iter()
        .filter(|c| !c.traces.is_empty() && c.traces.iter().any(|t| t.lambda > 0.0 || t.ess_frac < 0.999))
        .take(8)
        .collect();
    if smc.is_empty() {
        let why = format!("no cell of {prob}, {den} (first seed) resampled or tempered: no particle method ran there");
        return Some(Figure::not_drawn(stem, caption.into(), why));
    }
    let mk = |f: &dyn Fn(&StoredTrace) -> f64| -> Vec<Series> {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        smc.iter()
            .map(|c| {
                let k = counts.entry(c.method.clone()).or_insert(0);
                *k += 1;
                Series {
                    label: e.label(&c.method, &c.params, &[]),
                    method: c.method.clone(),
                    variant: *k - 1,
                    points: c.traces.iter().map(|t| (t.step as f64, f(t), f64::NAN)).collect(),
                }
            })
            .collect()
    };
    let panel = |title: &str, y: &str, series| LinePanel {
        title: title.into(),
        x_label: "step".into(),
        y_label: y.into(),
        x_log: false,
        series,
        band: None,
        legend_lower_right: true,
    };
    let panels = vec![
        panel("ESS / K before resampling", "ESS / K", mk(&|t| t.ess_frac)),
        panel("tempering λ", "λ", mk(&|t| t.lambda)),
    ];
    let drawn = draw::lines(&format!("{}: {prob}, {den}", e.name), &panels);
    Some(Figure::from_result(stem, caption.into(), drawn))
}

/// Parameters a budget sizes (one line per method and setting, not per size).
const SIZES: [&str; 6] = ["budget", "size", "particles", "rows", "rounds", "children"];

/// One line per configuration of `cfgs` (sizes merged) of `y(stat)` against the budget.
fn budget_lines(e: &Exp, cfgs: &[&Stat], y: &dyn Fn(&Stat) -> Option<(f64, f64)>) -> Vec<Series> {
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    for s in cfgs {
        let (Some((v, ci)), Ok(x)) = (y(s), s.p("budget").parse::<f64>()) else { continue };
        let label = e.label(&s.method, &s.params, &SIZES);
        let n_var = series.values().filter(|v| v.method == s.method).count();
        let ser = series.entry(label.clone()).or_insert_with(|| Series {
            label,
            method: s.method.clone(),
            variant: n_var,
            points: vec![],
        });
        ser.points.push((x, v, ci));
    }
    let mut series: Vec<Series> = series.into_values().collect();
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series
}

/// The anytime figure of a budget sweep (issue #18): EMD to the exact target (with the noise-floor band) and the
/// error of the normalising-constant estimate |log Ẑ − log Z| (methods that estimate it) against the denoiser rows
/// per prompt, one line per method and setting, one figure per (problem, denoiser); the exact-ε oracle joins every
/// denoiser group of its problem.
pub fn anytime(e: &Exp) -> Vec<Figure> {
    let mut out = Vec::new();
    if !e.has("budget") || !e.stats.iter().any(|s| s.metric == "log_z_hat") {
        return out;
    }
    let caption = "Anytime: EMD to the exact tilted target (left; the grey band is the target-vs-target noise floor) \
                   and |log Ẑ − log Z| (right; methods that estimate Z) against the compute budget per prompt (log \
                   axis), 95% intervals over seeds.";
    let mut groups: BTreeMap<(String, String), Vec<&Stat>> = BTreeMap::new();
    for s in e.configs() {
        groups.entry((s.p("problem").to_string(), s.p("denoiser").to_string())).or_default().push(s);
    }
    let problems: BTreeSet<String> = groups.keys().map(|k| k.0.clone()).collect();
    for prob in problems {
        let shared: Vec<&Stat> = groups.get(&(prob.clone(), "exact_tilted".into())).cloned().unwrap_or_default();
        let dens: Vec<String> =
            groups.keys().filter(|k| k.0 == prob && k.1 != "exact_tilted").map(|k| k.1.clone()).collect();
        for den in dens {
            let mut cfgs = groups.get(&(prob.clone(), den.clone())).cloned().unwrap_or_default();
            cfgs.extend(shared.iter().copied());
            let floor = e.stats.iter().find(|s| s.metric == "emd_floor" && s.p("problem") == prob).map(|s| {
                let h = if s.ci().is_finite() { s.ci() } else { 0.0 };
                (s.mean - h, s.mean + h, "noise floor".to_string())
            });
            let emd = budget_lines(e, &cfgs, &|s| e.get(s, "emd").map(|v| (v.mean, v.ci())));
            let log_z = budget_lines(e, &cfgs, &|s| {
                let (hat, exact) = (e.get(s, "log_z_hat")?, e.get(s, "log_z")?);
                Some(((hat.mean - exact.mean).abs(), hat.ci()))
            });
            let panel = |title: &str, y: &str, series: Vec<Series>, band| LinePanel {
                title: title.into(),
                x_label: "denoiser rows per prompt (budget)".into(),
                y_label: y.into(),
                x_log: true,
                series,
                band,
                legend_lower_right: false,
            };
            let mut panels = vec![];
            if emd.iter().any(|s| !s.points.is_empty()) {
                panels.push(panel("EMD vs budget", &axis_label("EMD to the exact target", "emd"), emd, floor));
            }
            if log_z.iter().any(|s| !s.points.is_empty()) {
                panels.push(panel("|log Ẑ − log Z| vs budget", "|log Ẑ − log Z| (lower is better)", log_z, None));
            }
            let stem = format!("anytime-{}-{prob}-{den}", e.name);
            if panels.is_empty() {
                out.push(Figure::not_drawn(stem, caption.into(), "no finite EMD or log Ẑ at a numeric budget".into()));
                continue;
            }
            let drawn = draw::lines(&format!("{}: {prob}, {den}", e.name), &panels);
            out.push(Figure::from_result(stem, caption.into(), drawn));
        }
    }
    out
}
