//! Statistical acceptance of the method suite on the exact toy (issue #3 item 7). Fast versions run in `make test`;
//! the full Figure-1 grid is `#[ignore]`d and runs with `make test-slow`.
//!
//! On the analytic toy every consistent particle method (DAS, TDS, plain SMC, FK) reaches the discretisation floor,
//! so "DAS's EMD is the lowest" is tested as "no method is lower than DAS by more than the noise": the tolerance is
//! 2·√2·sd with sd the seed-to-seed standard deviation of one cell's EMD, measured once with six seeds at the fast
//! scale (300 groups, 10 repeats: DAS 0.023 / 0.045, TDS 0.048 / 0.061, SMC 0.006 / 0.053, FK 0.018 / 0.035 on
//! GMM1 / GMM2; the bound below is their maximum, rounded up). The full grid uses the spread over its own seeds.

use std::collections::BTreeMap;
use std::path::Path;

use alignbench::experiment::plan::{plan_file, plan_str, Cell};
use alignbench::experiment::runner::run_cell;

/// Seed-to-seed sd of one fast cell's EMD (measured; see the module docs).
const SD_FAST: f64 = 0.065;

/// Exact mean reward of the untilted data (toy.md §3).
fn data_reward(preset: &str) -> f64 {
    if preset == "gmm1" {
        -11.076333
    } else {
        -9.23
    }
}

/// A label that tells apart the cells of one method (method plus the keys that differ between its cells).
fn label(c: &Cell) -> String {
    let m = &c.value["method"];
    let mut s = c.spec.method.name().to_string();
    for k in ["step_size", "selection", "potential", "reference_bugs"] {
        if let Some(v) = m.get(k) {
            s += &format!("[{}]", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
        }
    }
    s
}

fn run_fast(preset: &str) -> BTreeMap<String, BTreeMap<String, f64>> {
    let yaml = format!(
        "version: 1\nname: acceptance\nseed: 21\nproblem: {{ kind: gmm, preset: {preset} }}\nalpha: 1.0\nsteps: 100\ngroups: 300\n\
         metrics: {{ target_pool: 10000, emd_n: 500, emd_repeats: 10 }}\nmethods:\n\
         - {{ method: oracle, particles: 10 }}\n- {{ method: ddim, particles: 10 }}\n\
         - {{ method: das, particles: 100, gamma: 0.008, selection: weighted }}\n\
         - {{ method: tds, particles: 100, selection: weighted }}\n- {{ method: smc, particles: 100, selection: weighted }}\n\
         - {{ method: fk, particles: 100, selection: weighted, potential: diff }}\n\
         - {{ method: svdd, particles: 10, children: 20, selection: [argmax, softmax] }}\n\
         - {{ method: dps, particles: 10, step_size: [constant, variance_scaled] }}\n\
         - {{ method: freedom, particles: 10 }}\n- {{ method: mpgd, particles: 10 }}\n\
         - {{ method: best_of_n, particles: 100, top_m: 10 }}\n"
    );
    let plan = plan_str(&yaml, Path::new("<test>")).unwrap();
    plan.cells.iter().map(|c| (label(c), run_cell(c, &|_| {}).unwrap().metrics)).collect()
}

fn check_fast(preset: &str) {
    let r = run_fast(preset);
    let das = r["das[weighted]"]["emd"];
    let tol = 2.0 * 2f64.sqrt() * SD_FAST;
    for (name, m) in &r {
        println!(
            "{preset} {name:<28} emd {:.3} ± {:.3}  reward {:.3} (target {:.3})  mode TV {:.3}",
            m["emd"], m["emd_std"], m["reward_mean"], m["reward_target"], m["mode_tv"]
        );
        assert!(m["emd"].is_finite() && m["reward_mean"].is_finite(), "{name}: non-finite metrics on the analytic toy");
    }
    for (name, m) in &r {
        if name != "oracle" && !name.starts_with("das") {
            assert!(das <= m["emd"] + tol, "{preset}: {name} has EMD {} < DAS {das} − {tol}", m["emd"]);
        }
    }
    let oracle = r["oracle"]["emd"];
    assert!(das <= 1.10 * oracle + tol, "{preset}: DAS {das} vs 1.1 × oracle {oracle}");
    // Methods that do not target p_tar lose by a wide margin.
    for name in ["ddim", "best_of_n", "freedom", "svdd[argmax]"] {
        assert!(das < 0.5 * r[name]["emd"], "{preset}: DAS {das} vs {name} {}", r[name]["emd"]);
    }
    assert!((r["das[weighted]"]["reward_mean"] - r["das[weighted]"]["reward_target"]).abs() < 0.1);
}

#[test]
fn das_is_lowest_within_noise_and_near_the_oracle_on_gmm1() {
    check_fast("gmm1");
}

#[test]
fn das_is_lowest_within_noise_and_near_the_oracle_on_gmm2() {
    check_fast("gmm2");
}

#[test]
fn unscaled_dps_diverges_on_the_learned_mlp_as_the_reference_reports() {
    // The reference toy's "approximate guidance" (ρ = 1, no σ² scaling) with the learned MLP: its x̂0-Jacobian
    // at high noise is ~20 (the exact one is ~0.1), so the unscaled step blows up; toy.md §9 reports mean
    // rewards of −243 / −426 against the data's −11.1 / −9.2. DAS, tempered, stays on target.
    for preset in ["gmm1", "gmm2"] {
        let yaml = format!(
            "version: 1\nname: dps-diverges\nseed: 5\nproblem: {{ kind: gmm, preset: {preset} }}\ndenoiser: mlp\nsteps: 100\ngroups: 100\n\
             metrics: {{ target_pool: 2000, emd_n: 200, emd_repeats: 3 }}\nmethods:\n\
             - {{ method: dps, particles: 10 }}\n- {{ method: das, particles: 50, n_out: 10 }}\n"
        );
        let plan = plan_str(&yaml, Path::new("<test>")).unwrap();
        let dps = run_cell(&plan.cells[0], &|_| {}).unwrap().metrics;
        let das = run_cell(&plan.cells[1], &|_| {}).unwrap().metrics;
        println!(
            "{preset}: DPS reward {} (non-finite {:.2}), EMD {}; DAS reward {:.3}, EMD {:.3}",
            dps["reward_mean"], dps["non_finite_frac"], dps["emd"], das["reward_mean"], das["emd"]
        );
        assert!(dps["reward_mean"] < data_reward(preset) - 100.0, "{preset}: DPS reward {}", dps["reward_mean"]);
        assert!(dps["emd"] > 10.0, "{preset}: DPS EMD {}", dps["emd"]);
        assert!((das["reward_mean"] - das["reward_target"]).abs() < 0.2 && das["emd"] < 1.0, "{preset}: DAS {das:?}");
    }
}

/// Mean and sample sd over seeds of one metric for every (problem, denoiser, method label).
type Table = BTreeMap<(String, String, String), Vec<f64>>;

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt())
}

#[test]
#[ignore = "the full Figure-1 grid (174 cells, ≈ 30 min on 2 cores): make test-slow"]
fn figure1_full_grid() {
    let plan = plan_file(Path::new("experiments/toy/figure1.yaml")).unwrap();
    let results: Vec<_> = plan.cells.iter().map(|c| (c, run_cell(c, &|_| {}).unwrap())).collect();
    let mut emd: Table = BTreeMap::new();
    let mut tv: Table = BTreeMap::new();
    let mut reward: Table = BTreeMap::new();
    for (c, r) in &results {
        let key = (c.params["problem"].clone(), c.params["denoiser"].clone(), label(c));
        for metric in ["emd", "reward_mean"] {
            assert!(r.metrics.contains_key(metric), "{key:?}: no {metric}");
        }
        emd.entry(key.clone()).or_default().push(r.metrics["emd"]);
        tv.entry(key.clone()).or_default().push(r.metrics["mode_tv"]);
        reward.entry(key).or_default().push(r.metrics["reward_mean"]);
    }
    for ((p, d, m), v) in &emd {
        let (mu, sd) = mean_sd(v);
        println!(
            "{p} {d:<12} {m:<28} emd {mu:.3} ± {sd:.3}  reward {:.3}",
            mean_sd(&reward[&(p.clone(), d.clone(), m.clone())]).0
        );
    }
    let inference = |m: &str| !matches!(m.split('[').next().unwrap(), "rl" | "backprop" | "oracle" | "das");
    for p in ["gmm1", "gmm2"] {
        for d in ["analytic", "mlp"] {
            let (das, das_sd) = mean_sd(&emd[&(p.into(), d.into(), "das".into())]);
            for ((pp, dd, m), v) in &emd {
                if pp == p && dd == d && inference(m) {
                    let (mu, sd) = mean_sd(v);
                    if !mu.is_finite() {
                        // A diverged method (emd = inf, e.g. unscaled DPS or TDS on the learned MLP) is beaten.
                        continue;
                    }
                    let tol = 2.0 * ((das_sd * das_sd + sd * sd) / v.len() as f64).sqrt();
                    assert!(das <= mu + tol, "{p} {d}: {m} has EMD {mu} < DAS {das} − {tol}");
                }
            }
            // Fine-tuning over-optimises (collapses modes) where DAS does not.
            if d == "mlp" {
                let das_tv = mean_sd(&tv[&(p.into(), d.into(), "das".into())]).0;
                for m in ["rl[true]", "backprop"] {
                    let t = mean_sd(&tv[&(p.into(), d.into(), m.into())]).0;
                    assert!(t > das_tv + 0.1, "{p}: {m} mode TV {t} vs DAS {das_tv}");
                }
                let dps = mean_sd(&reward[&(p.into(), d.into(), "dps[constant]".into())]).0;
                assert!(dps < data_reward(p) - 100.0, "{p}: unscaled DPS reward {dps}");
            }
        }
        let (das, das_sd) = mean_sd(&emd[&(p.into(), "analytic".into(), "das".into())]);
        let (oracle, oracle_sd) = mean_sd(&emd[&(p.into(), "exact_tilted".into(), "oracle".into())]);
        let tol = 2.0 * ((das_sd * das_sd + oracle_sd * oracle_sd) / 3.0).sqrt();
        assert!(das <= 1.10 * oracle + tol, "{p}: DAS {das} vs oracle {oracle}");
    }
}
