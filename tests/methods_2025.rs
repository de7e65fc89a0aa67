//! The 2025 methods (issue #18): DTS / DTS★, the Ψ-sampler and the search-over-noises methods (zero-order, path and
//! beam search). Ledger = cost model, determinism (seeded streams only; results independent of the thread count),
//! exact reductions (zero-order search with one round is best-of-N; the Ψ-sampler without a chain is TDS), plan-time
//! errors, and exactness on the toy: DTS and the Ψ-sampler approach the exact tilted target as the budget grows; the
//! search methods do not (they search for high reward and ignore α), and the test says so.

use std::path::Path;

use alignbench::experiment::cost::per_group;
use alignbench::experiment::plan::plan_str;
use alignbench::experiment::runner::run_cell;
use alignbench::methods::{method_info, Needs, Provides};

/// A toy experiment over `methods` (one YAML list entry each) on `preset` with `steps` steps and `groups` groups.
fn yaml(preset: &str, steps: usize, groups: usize, methods: &[&str]) -> String {
    format!(
        "version: 1\nname: t2025\nseed: 3\nproblem: {{ kind: gmm, preset: {preset} }}\nsteps: {steps}\ngroups: {groups}\n\
         metrics: {{ target_pool: 4000, emd_n: 500, emd_repeats: 10, keep_samples: 10 }}\nmethods: [{}]\n",
        methods.join(", ")
    )
}

fn plan_err(y: &str) -> String {
    match plan_str(y, Path::new("<test>")) {
        Ok(_) => panic!("expected a plan error for:\n{y}"),
        Err(e) => e.to_string(),
    }
}

const NEW: [&str; 8] = [
    "{ method: dts, particles: 3, rows: 300 }",
    "{ method: dts, particles: 2, rows: 200, branch_every: 5 }",
    "{ method: dts, particles: 2, rows: 257, mode: search, branch_exp: 0.7 }",
    "{ method: psi, particles: 4, map_steps: 3 }",
    "{ method: psi, particles: 3, map_steps: 1, chain_share: 0.8, tempering: exp }",
    "{ method: zero_order, particles: 3, rounds: 3 }",
    "{ method: path_search, particles: 2, children: 3, back: 2, interval: 4 }",
    "{ method: beam_search, particles: 2, children: 3, lookahead: 2 }",
];

#[test]
fn ledger_matches_the_cost_model() {
    let plan = plan_str(&yaml("gmm2", 20, 5, &NEW), Path::new("<test>")).unwrap();
    for c in &plan.cells {
        let r = run_cell(c, &|_| {}).unwrap();
        let want = per_group(&c.spec);
        let name = c.spec.method.name();
        assert_eq!(r.metrics["nfe"], want.nfe, "{name} nfe");
        assert_eq!(r.metrics["vjp_denoiser"], want.vjp_denoiser, "{name} vjp_denoiser");
        assert_eq!(r.metrics["vjp_reward"], want.vjp_reward, "{name} vjp_reward");
        if name == "dts" {
            // One reward per completed rollout, whose number the tree's shape decides: the model is a bound.
            assert!(r.metrics["reward_calls"] <= want.reward_calls, "dts reward_calls");
            assert_eq!(r.metrics["reward_calls"], r.metrics["tree_rollouts"], "dts: one reward per rollout");
            assert!(r.metrics["tree_nodes"] > 20.0 && r.metrics["tree_mb"] > 0.0);
        } else {
            assert_eq!(r.metrics["reward_calls"], want.reward_calls, "{name} reward_calls");
        }
        assert!(r.metrics["emd"].is_finite() && r.metrics["reward_mean"].is_finite(), "{name}");
    }
}

#[test]
fn the_new_methods_run_on_the_mlp_denoiser_with_the_ledger_of_the_cost_model() {
    // Item 4: the learned toy denoiser (assets/toy/gmm1-mlp.safetensors) with its VJP through the network.
    let y = yaml("gmm1", 10, 3, &NEW).replace("steps: 10", "steps: 10\ndenoiser: mlp");
    let plan = plan_str(&y, Path::new("<test>")).unwrap();
    assert_eq!(plan.cells.len(), NEW.len());
    for c in &plan.cells {
        assert_eq!(c.params.get("denoiser").map(String::as_str), Some("mlp"), "{:?}", c.params);
        let r = run_cell(c, &|_| {}).unwrap();
        let want = per_group(&c.spec);
        let name = c.spec.method.name();
        assert_eq!(r.metrics["nfe"], want.nfe, "{name} nfe");
        assert_eq!(r.metrics["vjp_denoiser"], want.vjp_denoiser, "{name} vjp_denoiser");
        assert!(r.metrics["emd"].is_finite() && r.metrics["reward_mean"].is_finite(), "{name}");
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let plan = plan_str(&yaml("gmm1", 12, 9, &NEW), Path::new("<test>")).unwrap();
    let run = |threads: usize| -> Vec<Vec<f32>> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| plan.cells.iter().map(|c| run_cell(c, &|_| {}).unwrap().samples.x).collect())
    };
    let (one, three) = (run(1), run(3));
    assert_eq!(one, three);
    // And the same seed gives the same samples again.
    assert_eq!(one, run(2));
}

#[test]
fn one_round_of_zero_order_search_is_best_of_n_and_psi_without_chain_is_tds() {
    let plan = plan_str(
        &yaml(
            "gmm2",
            15,
            6,
            &[
                "{ method: zero_order, particles: 5, rounds: 1 }",
                "{ method: best_of_n, particles: 5 }",
                "{ method: psi, particles: 6, chain_share: 0.0, resampler: systematic, selection: weighted }",
                "{ method: tds, particles: 6, selection: weighted }",
            ],
        ),
        Path::new("<test>"),
    )
    .unwrap();
    let r: Vec<_> = plan.cells.iter().map(|c| run_cell(c, &|_| {}).unwrap()).collect();
    assert_eq!(r[0].samples.x, r[1].samples.x);
    assert_eq!(r[0].metrics["reward_mean"], r[1].metrics["reward_mean"]);
    assert_eq!(r[2].samples.x, r[3].samples.x);
    assert_eq!(r[2].metrics["nfe"], r[3].metrics["nfe"]);
    // More rounds only improve on the pivot.
    let more = plan_str(&yaml("gmm2", 15, 6, &["{ method: zero_order, particles: 5, rounds: 4 }"]), Path::new("<t>"));
    let more = run_cell(&more.unwrap().cells[0], &|_| {}).unwrap();
    assert!(more.metrics["reward_mean"] >= r[0].metrics["reward_mean"]);
}

#[test]
fn plan_time_errors_name_the_key() {
    let e = plan_err(&yaml("gmm1", 50, 2, &["{ method: dts, rows: 20 }"]));
    assert!(e.contains("rows") && e.contains("50"), "{e}");
    let e = plan_err(&yaml("gmm1", 50, 2, &["{ method: dts, branch_exp: 0.0 }"]));
    assert!(e.contains("branch_exp"), "{e}");
    for m in [0, 50] {
        let e = plan_err(&yaml("gmm1", 50, 2, &[&format!("{{ method: dts, branch_every: {m} }}")]));
        assert!(e.contains("branch_every") && e.contains("1..50"), "{e}");
    }
    let e = plan_err(&yaml("gmm1", 50, 2, &["{ method: dts, rows: 1000000000000 }"]));
    assert!(e.contains("rows") && e.contains("memory"), "{e}");
    let e = plan_err(&yaml("gmm1", 50, 2, &["{ method: psi, particles: 4, chain_share: 1.0 }"]));
    assert!(e.contains("chain_share"), "{e}");
    let e = plan_err(&yaml("gmm1", 50, 2, &["{ method: psi, particles: 4, map_steps: 60 }"]));
    assert!(e.contains("map_steps"), "{e}");
    let e = plan_err(&yaml("gmm1", 50, 2, &["{ method: zero_order, rounds: 0 }"]));
    assert!(e.contains("rounds"), "{e}");
    let e = plan_err(&yaml("gmm1", 50, 2, &["{ method: path_search, back: 50 }"]));
    assert!(e.contains("back"), "{e}");
    let e = plan_err(&yaml("gmm1", 50, 2, &["{ method: beam_search, children: 0 }"]));
    assert!(e.contains("children"), "{e}");
    let e = plan_err(&yaml("gmm1", 50, 2, &["{ method: dts, childs: 3 }"]));
    assert!(e.contains("unknown field `childs`"), "{e}");
    // The Ψ-sampler follows ∇r (pCNL and the locally optimal proposal): a black-box reward is refused, naming it;
    // DTS and the search methods only evaluate r.
    let black_box = Provides { reward_grad: false, denoiser_vjp: true, trainable_denoiser: false, exact_tilt: true };
    let psi: Needs = method_info("psi").unwrap().needs;
    let e = psi.check("psi", black_box).unwrap_err().to_string();
    assert!(e.contains("`psi`") && e.contains("differentiable reward"), "{e}");
    for m in ["dts", "zero_order", "path_search", "beam_search"] {
        assert!(method_info(m).unwrap().needs.check(m, black_box).is_ok(), "{m}");
    }
    let e =
        plan_err(&yaml("gmm1", 50, 2, &["{ method: psi, particles: 4 }"]).replace("steps: 50", "steps: 50\neta: 0.0"));
    assert!(e.contains("eta") && e.contains("psi"), "{e}");
}

/// Budget sizing reaches the new methods through their size keys.
#[test]
fn budget_sizes_the_new_methods() {
    let y = yaml(
        "gmm1",
        50,
        2,
        &[
            "{ method: dts }",
            "{ method: psi, chain_share: 0.3, map_steps: 5 }",
            "{ method: zero_order, particles: 2 }",
            "{ method: path_search, children: 2, back: 2 }",
            "{ method: beam_search, children: 2 }",
        ],
    )
    .replace("metrics:", "budget: { axis: nfe, value: [100, 10000] }\nmetrics:");
    let plan = plan_str(&y, Path::new("<t>")).unwrap();
    for c in &plan.cells {
        let b = c.spec.budget.unwrap().value;
        let cost = per_group(&c.spec).nfe;
        assert!(cost <= b && cost > 0.4 * b, "{}: {cost} rows for a budget of {b}", c.spec.method.name());
    }
}

/// EMD and its floor for `method` on `preset` (50 steps, α = 1, `groups` groups).
fn emd(preset: &str, groups: usize, method: &str) -> (f64, f64, f64, f64) {
    let plan = plan_str(&yaml(preset, 50, groups, &[method]), Path::new("<t>")).unwrap();
    let r = run_cell(&plan.cells[0], &|_| {}).unwrap();
    let m = &r.metrics;
    println!(
        "{preset} {method}: EMD {:.3} ± {:.3} (floor {:.3}), reward {:.3} (target {:.3}), log Ẑ {:?} (log Z {:.3})",
        m["emd"],
        m["emd_std"],
        m["emd_floor"],
        m["reward_mean"],
        m["reward_target"],
        m.get("log_z_hat"),
        m["log_z"]
    );
    (m["emd"], m["emd_floor"], m["reward_mean"], m["reward_target"])
}

#[test]
fn dts_and_psi_approach_the_target_and_the_search_methods_do_not() {
    for preset in ["gmm1", "gmm2"] {
        let (ddim, floor, _, _) = emd(preset, 200, "{ method: ddim, particles: 10 }");
        // The Ψ-sampler (K = 100) and DTS in its importance-resampling limit (the root always widens: every
        // iteration is a fresh rollout, outputs drawn ∝ exp(r/α)) reach the floor on both toys.
        for m in [
            "{ method: psi, particles: 100, n_out: 10 }",
            "{ method: dts, particles: 10, rows: 20000, branch_c: 1.0e9, branch_exp: 1.0 }",
        ] {
            let (e, _, _, _) = emd(preset, 200, m);
            assert!(e < floor + 0.1, "{preset} {m}: EMD {e} (floor {floor}, DDIM {ddim})");
        }
        // DTS with its default widening (⌈2·visits^0.8⌉ children, the paper's): on GMM1 near the floor with 5000
        // rows; on GMM2 its soft values are biased at this budget (estimates from few rollouts that came out low are
        // rarely revisited), so it only has to be far better than unguided sampling here — the anytime experiment
        // records the bias.
        let (e, _, _, _) = emd(preset, 200, "{ method: dts, particles: 10, rows: 5000 }");
        let bound = if preset == "gmm1" { floor + 0.1 } else { 0.6 * ddim };
        assert!(e < bound, "{preset} dts: EMD {e} (floor {floor}, DDIM {ddim})");
        // The search methods maximise r: their outputs pile up at the reward's peak instead of spreading over the
        // tilted target — mean reward above E_tar[r] and an EMD well above the floor.
        for m in [
            "{ method: dts, particles: 1, rows: 5000, mode: search }",
            "{ method: zero_order, particles: 10, rounds: 10 }",
            "{ method: beam_search, particles: 10, children: 10 }",
            "{ method: path_search, particles: 10, children: 10 }",
        ] {
            let (e, floor, r, target) = emd(preset, 300, m);
            assert!(r > target, "{preset} {m}: mean reward {r} ≤ E_tar[r] {target}");
            assert!(e > 1.5 * floor, "{preset} {m}: EMD {e} within 1.5 × floor {floor}: the search found the target?");
        }
    }
}

/// Under a constant reward c every soft value is c: DTS's log Ẑ = v̂(root)/α is exactly c/α, and the pCNL chain of
/// the Ψ-sampler is the prior-reversible pCN walk, whose proposals are all accepted (the Metropolis–Hastings ratio
/// is exactly 1 up to rounding).
#[test]
fn constant_reward_gives_exact_soft_values_and_an_always_accepting_chain() {
    let y = yaml(
        "gmm2",
        20,
        4,
        &["{ method: dts, particles: 3, rows: 400 }", "{ method: psi, particles: 6, map_steps: 2, chain_share: 0.7 }"],
    )
    .replace(
        "steps: 20",
        "steps: 20\nalpha: 0.5\nreward: { kind: quadratic, a: [[0.0, 0.0], [0.0, 0.0]], b: [0.0, 0.0], c: 1.5 }",
    );
    let plan = plan_str(&y, Path::new("<t>")).unwrap();
    let dts = run_cell(&plan.cells[0], &|_| {}).unwrap();
    assert!((dts.metrics["log_z_hat"] - 3.0).abs() < 1e-12, "{}", dts.metrics["log_z_hat"]);
    let psi = run_cell(&plan.cells[1], &|_| {}).unwrap();
    assert!(psi.metrics["mcmc_accept"] > 0.99, "{}", psi.metrics["mcmc_accept"]);
}

/// The exactness check at the anytime experiment's largest budget (10⁵ denoiser rows per prompt, 50 steps, 200
/// prompts; `make test-slow`): the Ψ-sampler within 10 % of the noise floor on both toys. DTS with its default tree
/// is not there at this budget: its low single-rollout value estimates are never revisited, which biases v̂ down
/// (measured in `toy-anytime`, seed 0: EMD 0.319 on GMM1 and 1.460 on GMM2 against floors of 0.269 and 0.278, and
/// |log Ẑ − log Z| of 2.8 and 3.1; see NOTES-18.md). The test records DTS's EMD and asserts only that it beats
/// unguided sampling by a wide margin.
#[test]
#[ignore]
fn at_the_largest_budget_psi_reaches_the_floor_and_dts_is_recorded() {
    for preset in ["gmm1", "gmm2"] {
        let (ddim, _, _, _) = emd(preset, 200, "{ method: ddim, particles: 10 }");
        let (e, floor, _, _) =
            emd(preset, 200, "{ method: psi, particles: 1298, n_out: 10, chain_share: 0.3, map_steps: 5 }");
        assert!(e <= 1.1 * floor, "{preset} psi: EMD {e} vs floor {floor}");
        let (e, floor, _, _) = emd(preset, 200, "{ method: dts, particles: 10, rows: 100000 }");
        println!("{preset} dts at 10⁵ rows: EMD {e:.3} against the floor {floor:.3} (recorded, not asserted)");
        assert!(e < 0.5 * ddim, "{preset} dts: EMD {e} vs DDIM {ddim}");
    }
}
