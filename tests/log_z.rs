//! log Ẑ unbiasedness on the Gaussian case G0 of toy.md (issue #3 item 5; methods.md §15 test 8): data N(1, 0.5)
//! in 1-D with its exact ε*, r = −(x−2)², α = 0.5, linear β, `toy_clean`, N = 20, η = 1. The unguided chain is
//! affine-Gaussian, so its output law — and Z_chain = E_chain[exp(r/α)], which every SMC sampler's Ẑ estimates
//! without bias — is exact. Requirement: the mean of Ẑ/Z_chain over independent groups is 1 within its 99%
//! interval (z = 2.576).

use std::path::Path;

use alignbench::diffusion::schedule::{BetaSchedule, Grid, Spacing};
use alignbench::diffusion::step::StepCoef;
use alignbench::experiment::plan::plan_str;
use alignbench::experiment::runner::sample_groups;
use alignbench::experiment::spec::MethodSpec;
use alignbench::ledger::Ledger;
use alignbench::problems::toy::gmm::{AnalyticDenoiser, Gmm};
use alignbench::rewards::quadratic::Quadratic;
use alignbench::rng::Streams;
use alignbench::samplers::Model;

const M: f64 = 1.0;
const S: f64 = 0.5;
const ALPHA: f64 = 0.5;
const N: usize = 20;

/// Exact (mean, variance) of the unguided chain's output: x' = F·x + f + σz with ε* affine in x.
fn chain_law(grid: &Grid) -> (f64, f64) {
    let (mut mean, mut var) = (0.0, 1.0);
    for i in 0..grid.len() {
        let (a, ap) = (grid.a[i], grid.a_prev[i]);
        let c = StepCoef::new(a, ap, 1.0);
        // ε*(x) = √(1−a)·(x − √a·m)/(a·S + 1 − a);  x̂0 = (x − √(1−a)ε*)/√a;  μ = √a'·x̂0 + c_ε·ε*.
        let v = a * S + 1.0 - a;
        let (e1, e0) = (c.sqrt_1ma / v, -c.sqrt_1ma * a.sqrt() * M / v);
        let (x1, x0) = ((1.0 - c.sqrt_1ma * e1) / c.sqrt_a, -c.sqrt_1ma * e0 / c.sqrt_a);
        let (f1, f0) = (c.c_x0 * x1 + c.c_eps * e1, c.c_x0 * x0 + c.c_eps * e0);
        mean = f1 * mean + f0;
        var = f1 * f1 * var + c.sigma * c.sigma;
    }
    (mean, var)
}

/// log E_{N(m,v)}[exp(−(x−2)²/α)].
fn log_z_gaussian(m: f64, v: f64) -> f64 {
    -0.5 * (1.0 + 2.0 * v / ALPHA).ln() - (m - 2.0).powi(2) / (ALPHA + 2.0 * v)
}

fn ratio_stats(yaml_method: &str, groups: usize, seed: u64) -> (f64, f64) {
    let gmm = Gmm::new(vec![1.0], vec![vec![M]], vec![vec![vec![S]]]).unwrap();
    let den = AnalyticDenoiser::new(gmm, BetaSchedule::Linear);
    let reward = Quadratic::new(vec![vec![2.0]], vec![4.0], -4.0).unwrap();
    let grid = Grid::new(BetaSchedule::Linear, Spacing::ToyClean, N);
    let (m, v) = chain_law(&grid);
    let log_z = log_z_gaussian(m, v);
    let ledger = Ledger::default();
    let model = Model {
        denoiser: &den,
        decoder: &alignbench::diffusion::Identity,
        reward: &reward,
        grid: &grid,
        eta: 1.0,
        ledger: &ledger,
        streams: Streams::new(seed),
    };
    let method: MethodSpec = yaml_serde::from_str(yaml_method).unwrap();
    let out = sample_groups(&model, &method, ALPHA, groups, &|_| {}).unwrap();
    let ratios: Vec<f64> = out.outputs.iter().map(|o| (o.log_z_hat.unwrap() - log_z).exp()).collect();
    let n = ratios.len() as f64;
    let mean = ratios.iter().sum::<f64>() / n;
    let se = (ratios.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt();
    (mean, se)
}

#[test]
fn chain_law_and_log_z_match_methods_md() {
    let grid = Grid::new(BetaSchedule::Linear, Spacing::ToyClean, N);
    let (m, v) = chain_law(&grid);
    assert!((m - 0.9999).abs() < 1e-4 && (v - 0.3340).abs() < 1e-4, "N({m}, {v})");
    assert!((log_z_gaussian(m, v) - (-1.28045)).abs() < 1e-4, "{}", log_z_gaussian(m, v));
    // The plan accepts the same problem from YAML (1-D custom mixture and reward).
    let y = "version: 1\nname: g0\nproblem: { kind: gmm, weights: [1.0], means: [[1.0]], covs: [[[0.5]]] }\n\
             reward: { kind: quadratic, a: [[2.0]], b: [4.0], c: -4.0 }\nalpha: 0.5\nsteps: 20\nmethods: [{ method: das, particles: 8 }]\n";
    assert_eq!(plan_str(y, Path::new("<t>")).unwrap().cells.len(), 1);
}

#[test]
fn das_log_z_hat_is_unbiased_on_g0() {
    let (mean, se) = ratio_stats("{ method: das, particles: 8, gamma: 0.15, resampler: systematic }", 20_000, 1);
    println!("DAS K=8: mean Ẑ/Z_chain = {mean:.4} ± {se:.4}");
    assert!((mean - 1.0).abs() < 2.576 * se, "mean Ẑ/Z = {mean} ± {se}");
}

#[test]
fn smc_tds_and_fk_log_z_hat_are_unbiased_on_g0() {
    for (y, seed) in [
        ("{ method: tds, particles: 8, resampler: systematic, resample: ess }", 2),
        ("{ method: smc, particles: 8, resampler: systematic }", 3),
        ("{ method: fk, particles: 8, potential: diff, interval: 4, start: 0.0, end: 1.0, resampler: systematic }", 4),
    ] {
        let (mean, se) = ratio_stats(y, 10_000, seed);
        println!("{y}: mean Ẑ/Z_chain = {mean:.4} ± {se:.4}");
        assert!((mean - 1.0).abs() < 2.576 * se, "{y}: mean Ẑ/Z = {mean} ± {se}");
    }
}
