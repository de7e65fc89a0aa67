//! Statistical acceptance on the exact toy (issue: foundation, item 10) and the constant-reward property.

use std::path::Path;

use alignbench::diffusion::schedule::{BetaSchedule, Grid, Spacing};
use alignbench::diffusion::{Cond, Identity};
use alignbench::experiment::plan::plan_str;
use alignbench::experiment::runner::{run_cell, sample_groups, CellResult};
use alignbench::experiment::spec::MethodSpec;
use alignbench::ledger::Ledger;
use alignbench::problems::toy::gmm::{AnalyticDenoiser, Gmm};
use alignbench::rewards::quadratic::Quadratic;
use alignbench::rng::Streams;
use alignbench::samplers::das::DasConfig;
use alignbench::samplers::ddim::DdimConfig;
use alignbench::samplers::Model;

fn run(preset: &str, seed: u64) -> Vec<CellResult> {
    let yaml = format!(
        "version: 1\nname: acc\nseed: {seed}\nproblem: {{ kind: gmm, preset: {preset} }}\nreward: {{ kind: quadratic, preset: {preset} }}\n\
         alpha: 1.0\nsteps: 100\ngroups: 1000\nmetrics: {{ target_pool: 10000, emd_n: 500, emd_repeats: 12 }}\n\
         methods:\n  - method: das\n    particles: 100\n    n_out: 10\n    gamma: 0.008\n  - method: oracle\n    particles: 10\n  - method: ddim\n    particles: 10\n"
    );
    let plan = plan_str(&yaml, Path::new("<test>")).unwrap();
    plan.cells.iter().map(|c| run_cell(c, &|_| {}).unwrap()).collect()
}

fn acceptance(preset: &str) {
    let r = run(preset, 7);
    let (das, oracle, ddim) = (&r[0].metrics, &r[1].metrics, &r[2].metrics);
    let n = 12f64;
    let se_diff = ((das["emd_std"].powi(2) + oracle["emd_std"].powi(2)) / n).sqrt();
    println!(
        "{preset}: DAS emd {:.4} ± {:.4}, oracle {:.4} ± {:.4}, ddim {:.4}, floor {:.4}; reward {:.4} vs exact {:.4}",
        das["emd"],
        das["emd_std"],
        oracle["emd"],
        oracle["emd_std"],
        ddim["emd"],
        das["emd_floor"],
        das["reward_mean"],
        das["reward_target"]
    );
    assert!(
        das["emd"] <= 1.10 * oracle["emd"] + 2.0 * se_diff,
        "{preset}: DAS EMD {} vs oracle {}",
        das["emd"],
        oracle["emd"]
    );
    assert!(
        (das["reward_mean"] - das["reward_target"]).abs() <= 0.05,
        "{preset}: reward {} vs {}",
        das["reward_mean"],
        das["reward_target"]
    );
    assert!(das["emd"] < 0.5 * ddim["emd"], "DAS must beat unguided sampling by a wide margin");
    assert!(das["mode_tv"] < 0.05, "mode TV {}", das["mode_tv"]);
}

#[test]
fn das_matches_the_oracle_on_gmm1() {
    acceptance("gmm1");
}

#[test]
fn das_matches_the_oracle_on_gmm2() {
    acceptance("gmm2");
}

#[test]
fn constant_reward_das_equals_unguided_sample_for_sample() {
    let gmm = Gmm::preset("gmm2").unwrap();
    let den = AnalyticDenoiser::new(gmm, BetaSchedule::Linear);
    let reward = Quadratic::new(vec![vec![0.0, 0.0], vec![0.0, 0.0]], vec![0.0, 0.0], 1.5).unwrap();
    let grid = Grid::new(BetaSchedule::Linear, Spacing::ToyClean, 50);
    let ledger = Ledger::default();
    let model = Model {
        denoiser: &den,
        decoder: &Identity,
        reward: &reward,
        grid: &grid,
        eta: 1.0,
        ledger: &ledger,
        streams: Streams::new(3),
    };
    let das: DasConfig = yaml_serde::from_str("particles: 16\nselection: weighted").unwrap();
    let a = sample_groups(&model, &MethodSpec::Das(das), 0.5, 5, &|_| {}).unwrap();
    let b = sample_groups(&model, &MethodSpec::Ddim(DdimConfig { particles: 16 }), 0.5, 5, &|_| {}).unwrap();
    assert_eq!(a.traces.iter().map(|t| t.resampled).sum::<u64>(), 0);
    for (x, y) in a.outputs.iter().zip(&b.outputs) {
        assert_eq!(x.samples, y.samples);
        for w in &x.weights {
            assert!((w - 1.0 / 16.0).abs() < 1e-12);
        }
    }
    let _ = Cond::None;
}
