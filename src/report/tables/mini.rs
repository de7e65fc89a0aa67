//! FMNIST-align tables (mini-benchmark.md §7; criterion's model: tables are built from the analysis): the
//! cross-reward [`table`] of every mini experiment (target, held-out rewards, fidelity, diversity, over-optimisation
//! gaps against unguided DDIM) and the [`sir`] reference table (hypothesis H4).
//!
//! Intervals on a single seed are over outputs: ±1.96·sd/√n with sd the spread of the metric over the cell's
//! outputs (`r_*_sd`) and n its outputs — common random numbers make methods' cells paired, so these intervals are
//! conservative for differences.

use crate::report::analysis::Exp;
use crate::report::stats::Stat;
use crate::report::table::{Cell, Table};

/// Unguided DDIM configuration with the same target reward (the Δ baseline).
fn ddim<'a>(e: &'a Exp, s: &Stat) -> Option<&'a Stat> {
    let r = e.reward_label(s);
    e.configs().into_iter().find(|c| c.method == "ddim" && e.reward_label(c) == r)
}

/// Over-optimisation gap: Δtarget/σ_target − Δheld/σ_held, Δ against unguided DDIM, σ its spread over outputs.
fn gap(e: &Exp, s: &Stat, target: &str, held: &str) -> f64 {
    let Some(base) = ddim(e, s) else { return f64::NAN };
    let val = |c: &Stat, m: &str| e.mean(c, m);
    let dt = (val(s, target) - val(base, target)) / val(base, &format!("{target}_sd"));
    let dh = (val(s, held) - val(base, held)) / val(base, &format!("{held}_sd"));
    dt - dh
}

/// The cross-reward table of one mini experiment.
pub fn table(e: &Exp) -> Table {
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
    for s in e.sorted_configs() {
        let tm = e.target_metric(s);
        let (tv, tci) = match &tm {
            Some(m) => e.with_ci(s, m),
            None => (e.mean(s, "reward_mean"), f64::NAN),
        };
        let v = |m: &str| Cell::Num(e.mean(s, m));
        let g = |held: &str| Cell::Num(tm.as_ref().map(|t| gap(e, s, t, held)).unwrap_or(f64::NAN));
        t.push(vec![
            Cell::Text(e.label(&s.method, &s.params, &["alpha"])),
            Cell::Text(s.p("alpha").to_string()),
            Cell::Text(e.reward_label(s)),
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
pub fn sir(e: &Exp) -> Option<Table> {
    let configs: Vec<&Stat> = e.sorted_configs().into_iter().filter(|s| e.get(s, "emd_sir").is_some()).collect();
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
