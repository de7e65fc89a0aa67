//! End-to-end checks of the method suite (issue #3): every method runs from YAML and lands `reward_mean` and `emd`
//! rows in `metrics.csv`; compute matching sizes methods to a budget; impossible combinations fail at plan time with
//! a message naming the method and the fix.

use std::path::Path;
use std::process::Command;

use alignbench::experiment::cost::per_group;
use alignbench::experiment::plan::plan_str;
use alignbench::experiment::spec::{BudgetAxis, MethodSpec};
use alignbench::methods::{catalogue, Needs, Provides};

const BASE: &str = "version: 1\nname: t\nproblem: { kind: gmm, preset: gmm1 }\nsteps: 100\ngroups: 2\n";

fn plan_err(yaml: &str) -> String {
    match plan_str(yaml, Path::new("<test>")) {
        Ok(_) => panic!("expected a plan error for:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_method_runs_from_yaml_and_reports_emd_and_reward() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_alignbench"))
        .args(["run", "experiments/smoke/methods.yaml", "--quiet", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(dir.path().join("smoke-methods/metrics.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|c| *c == name).unwrap();
    let (mc, kc, vc) = (col("method"), col("metric"), col("value"));
    for m in catalogue() {
        for metric in ["emd", "reward_mean", "nfe", "non_finite_frac"] {
            let found = csv
                .lines()
                .skip(1)
                .map(|l| l.split(',').collect::<Vec<_>>())
                .any(|f| f[mc] == m.name && f[kc] == metric && !f[vc].is_empty());
            assert!(found, "no {metric} row for {}", m.name);
        }
    }
    for m in ["rl", "backprop"] {
        assert!(
            csv.lines().any(|l| l.contains(&format!(",{m},")) && l.contains(",train_nfe,")),
            "{m}: no training ledger"
        );
    }
    for m in ["das", "tds", "smc", "fk"] {
        assert!(csv.lines().any(|l| l.contains(&format!(",{m},")) && l.contains(",log_z_hat,")), "{m}: no log_z_hat");
    }
    // The FK potentials and DPS step sizes are distinguishable columns.
    assert!(header.contains(&"potential") && header.contains(&"step_size"), "{header:?}");
    // Fine-tuned weights are cached next to the cells.
    let cached = std::fs::read_dir(dir.path().join("smoke-methods/weights")).unwrap().count();
    assert_eq!(cached, 4, "rl and backprop: weights + manifest each");
    // `list methods` shows every method with its needs.
    let o = Command::new(env!("CARGO_BIN_EXE_alignbench")).args(["list", "methods"]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    for m in catalogue() {
        assert!(out.lines().any(|l| l.starts_with(m.name)), "{} missing from `list methods`", m.name);
    }
}

#[test]
fn budget_sizes_every_method_to_the_largest_affordable_setting() {
    let y = format!(
        "{BASE}budget: {{ axis: nfe, value: [400, 1600] }}\nmethods:\n  - {{ method: das }}\n  - {{ method: best_of_n }}\n  \
         - {{ method: svdd }}\n  - {{ method: fk, interval: 5 }}\n  - {{ method: dps }}\n"
    );
    let plan = plan_str(&y, Path::new("<test>")).unwrap();
    assert_eq!(plan.cells.len(), 10);
    assert!(plan.param_columns.iter().any(|c| c == "budget") && plan.param_columns.iter().any(|c| c == "size"));
    for c in &plan.cells {
        let b = c.spec.budget.unwrap().value;
        let size: usize = c.params["size"].parse().unwrap();
        let (want, n) = match &c.spec.method {
            // DAS, best-of-N, FK, DPS: N·K rows; SVDD (one chain): 1 + M·(N−1) rows.
            MethodSpec::Svdd(s) => (((b - 1.0) / 99.0).floor() as usize, s.children),
            m => ((b / 100.0) as usize, m.particles()),
        };
        assert_eq!(size, want, "{} at {b}", c.spec.method.name());
        assert_eq!(n, want);
        // Largest within budget: one more would exceed it.
        assert!(per_group(&c.spec).nfe <= b);
        assert_eq!(c.params["budget"], b.to_string());
    }
    // The other axes.
    let y = format!(
        "{BASE}budget: {{ axis: reward_calls, value: 1010 }}\nmethods: [{{ method: das }}, {{ method: fk }}]\n"
    );
    let plan = plan_str(&y, Path::new("<test>")).unwrap();
    assert_eq!(plan.cells[0].spec.method.particles(), 10); // 101·K ≤ 1010
    assert_eq!(plan.cells[1].spec.method.particles(), 202); // FK evaluates the reward at |S| + 1 = 5 steps
    let y =
        format!("{BASE}budget: {{ axis: vjp_total, value: 1000 }}\nmethods: [{{ method: mpgd }}, {{ method: das }}]\n");
    let plan = plan_str(&y, Path::new("<test>")).unwrap();
    assert_eq!(plan.cells[0].spec.method.particles(), 25); // 40 x̂0-gradients per sample
    assert_eq!(plan.cells[1].spec.method.particles(), 10);
    let y =
        format!("{BASE}budget: {{ axis: wall_s, value: 0.001 }}\nmethods: [{{ method: das }}, {{ method: smc }}]\n");
    let plan = plan_str(&y, Path::new("<test>")).unwrap();
    assert_eq!(plan.cells[0].spec.budget.unwrap().axis, BudgetAxis::WallS);
    assert!(plan.cells[1].spec.method.particles() > plan.cells[0].spec.method.particles(), "SMC pays no VJPs");
}

#[test]
fn budget_errors_name_the_key_and_the_fix() {
    let e =
        plan_err(&format!("{BASE}budget: {{ axis: nfe, value: 400 }}\nmethods: [{{ method: das, particles: 4 }}]\n"));
    assert!(e.contains("particles") && e.contains("set by `budget`"), "{e}");
    let e =
        plan_err(&format!("{BASE}denoiser: mlp\nbudget: {{ axis: nfe, value: 400 }}\nmethods: [{{ method: rl }}]\n"));
    assert!(e.contains("rl") && e.contains("no size"), "{e}");
    let e = plan_err(&format!("{BASE}budget: {{ axis: nfe, value: 50 }}\nmethods: [{{ method: das }}]\n"));
    assert!(e.contains("budget") && e.contains("raise budget.value"), "{e}");
    let e = plan_err(&format!("{BASE}budget: {{ axis: flops, value: 50 }}\nmethods: [{{ method: das }}]\n"));
    assert!(e.contains("axis") && e.contains("nfe"), "{e}");
    let e = plan_err(&format!("{BASE}budget: {{ axis: nfe, value: -3 }}\nmethods: [{{ method: das }}]\n"));
    assert!(e.contains("budget.value") && e.contains("positive"), "{e}");
}

#[test]
fn impossible_combinations_fail_at_plan_time() {
    let e = plan_err(&format!("{BASE}methods: [{{ method: rl }}]\n"));
    assert!(e.contains("`rl`") && e.contains("denoiser: mlp"), "{e}");
    let e = plan_err(&format!("{BASE}methods: [{{ method: backprop }}]\n"));
    assert!(e.contains("`backprop`") && e.contains("denoiser: mlp"), "{e}");
    // … and the fix works: a method entry may set its own denoiser.
    let plan = plan_str(
        &format!(
            "{BASE}denoiser: analytic\nmethods: [{{ method: rl, denoiser: mlp }}, {{ method: das, particles: 2 }}]\n"
        ),
        Path::new("<t>"),
    )
    .unwrap();
    assert_eq!(plan.cells[0].params["denoiser"], "mlp");
    assert_eq!(plan.cells[1].params["denoiser"], "analytic");
    let e = plan_err(&format!("{BASE}eta: 0.0\nmethods: [{{ method: tds, particles: 4 }}]\n"));
    assert!(e.contains("eta") && e.contains("tds"), "{e}");
    let e = plan_err(&format!("{BASE}methods: [{{ method: fk, particles: 4, interval: 0 }}]\n"));
    assert!(e.contains("interval"), "{e}");
    let e = plan_err(&format!("{BASE}methods: [{{ method: freedom, window: {{ from: 0.8, to: 0.2 }} }}]\n"));
    assert!(e.contains("window") && e.contains("from"), "{e}");
    let e = plan_err(&format!("{BASE}methods: [{{ method: svdd, childs: 4 }}]\n"));
    assert!(e.contains("unknown field `childs`"), "{e}");
    // Needs against what a cell provides (a black-box reward or a denoiser without VJP, as on the SD side).
    let all = Provides { reward_grad: true, denoiser_vjp: true, trainable_denoiser: true, exact_tilt: true };
    let black_box = Provides { reward_grad: false, ..all };
    let no_vjp = Provides { denoiser_vjp: false, ..all };
    for m in catalogue() {
        let n: Needs = m.needs;
        assert!(n.check(m.name, all).is_ok(), "{}", m.name);
        assert_eq!(n.check(m.name, black_box).is_err(), n.reward_grad, "{}", m.name);
        assert_eq!(n.check(m.name, no_vjp).is_err(), n.denoiser_vjp, "{}", m.name);
    }
    let e = Needs { reward_grad: true, ..Default::default() }.check("dps", black_box).unwrap_err().to_string();
    assert!(e.contains("`dps`") && e.contains("differentiable reward") && e.contains("best_of_n"), "{e}");
    let e = Needs { denoiser_vjp: true, ..Default::default() }.check("das", no_vjp).unwrap_err().to_string();
    assert!(e.contains("`das`") && e.contains("mpgd"), "{e}");
}

#[test]
fn default_reward_follows_the_problem_preset_and_problems_sweep() {
    let y = "version: 1\nname: t\nproblem: [{ kind: gmm, preset: gmm1 }, { kind: gmm, preset: gmm2 }]\nmethods: [{ method: ddim }]\n";
    let plan = plan_str(y, Path::new("<t>")).unwrap();
    let presets: Vec<String> = plan.cells.iter().map(|c| c.params["problem"].clone()).collect();
    assert_eq!(presets, ["gmm1", "gmm2"]);
    for c in &plan.cells {
        assert_eq!(c.value["reward"]["preset"], c.value["problem"]["preset"]);
    }
    let e = plan_err("version: 1\nname: t\nproblem: { kind: gmm, weights: [1.0], means: [[0.0]], covs: [[[1.0]]] }\nmethods: [{ method: ddim }]\n");
    assert!(e.contains("reward: missing"), "{e}");
}
