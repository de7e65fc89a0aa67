//! The executor of a cell (argmin's Executor): it asks the cell's problem for its models ([`Problem::instance`],
//! which fine-tunes first when the method trains the denoiser, weights cached under the results folder's
//! `weights/`), runs the method's sampler over every group with the sampling loop (`samplers::run`), lets the
//! problem evaluate the outputs, and closes the books: the ledger per group, the SMC diagnostics, the training
//! statistics and `wall_s`. It never names a problem or a method.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::plan::Cell;
use super::spec::CellSpec;
use crate::diffusion::schedule::Grid;
use crate::finetune::TrainStats;
use crate::ledger::{Ledger, LedgerSnapshot, Phase};
pub use crate::problems::core::{Pooled, SampleDump};
use crate::problems::cross_reward::PromptRow;
use crate::rng::Streams;
pub use crate::samplers::run::{sample_groups, sample_groups_cond, sample_groups_with, Sampled};
use crate::samplers::Model;
use crate::Result;

/// Per-step diagnostics averaged over groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceRow {
    /// Loop index i.
    pub step: usize,
    /// Mean ESS before resampling, as a fraction of K.
    pub ess_frac: f64,
    /// Fraction of groups that resampled.
    pub resample_frac: f64,
    /// Mean λ_i.
    pub lambda: f64,
    /// Non-finite weight events.
    pub non_finite: u64,
}

/// Everything a cell produced; saved as `cells/<id>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// Cell id.
    pub id: String,
    /// Experiment name.
    pub experiment: String,
    /// Method tag.
    pub method: String,
    /// Seed.
    pub seed: u64,
    /// Crate version that produced it.
    pub crate_version: String,
    /// Table parameters.
    pub params: BTreeMap<String, String>,
    /// Metric name → value (non-finite values are written as the strings `inf`, `-inf`, `NaN`).
    #[serde(with = "crate::numerics::non_finite")]
    pub metrics: BTreeMap<String, f64>,
    /// Compute ledger (totals).
    pub ledger: LedgerSnapshot,
    /// Per-step diagnostics.
    pub traces: Vec<TraceRow>,
    /// A subset of output samples (for figures).
    pub samples: SampleDump,
    /// The resolved cell configuration.
    pub spec: serde_json::Value,
    /// Per-prompt cross-reward rows (image problems; absent from toy cell files and older cell files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<PromptRow>,
    /// Key of the figure data this cell shares with others (`targets/<key>.json`: the toy's exact target density).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_view: Option<String>,
    /// That figure data, written by the store once per key (not part of the cell file).
    #[serde(skip)]
    pub view_data: Option<serde_json::Value>,
}

impl CellResult {
    /// The result of `cell` with its identity (id, experiment, method, seed, version, parameters, resolved spec).
    pub fn new(
        cell: &Cell,
        metrics: BTreeMap<String, f64>,
        ledger: LedgerSnapshot,
        traces: Vec<TraceRow>,
        samples: SampleDump,
    ) -> Self {
        CellResult {
            id: cell.id.clone(),
            experiment: cell.spec.name.clone(),
            method: cell.spec.method.name().to_string(),
            seed: cell.spec.seed,
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            params: cell.params.clone(),
            metrics,
            ledger,
            traces,
            samples,
            spec: cell.value.clone(),
            prompts: Vec::new(),
            target_view: None,
            view_data: None,
        }
    }
}

/// Run one cell end to end (fine-tuned weights are not cached).
pub fn run_cell(cell: &Cell, tick: &(dyn Fn(u64) + Sync)) -> Result<CellResult> {
    run_cell_cached(cell, None, tick)
}

/// Run one cell end to end: the problem's models, the method's sampler over every group (`tick(n)` after each
/// chunk-step with the groups advanced), the problem's evaluation, the books. `cache` holds fine-tuned weights.
pub fn run_cell_cached(cell: &Cell, cache: Option<&Path>, tick: &(dyn Fn(u64) + Sync)) -> Result<CellResult> {
    let start = Instant::now();
    let spec = &cell.spec;
    let problem = spec.problem.problem();
    let inst = problem.instance(&spec.setting, cache)?;
    let grid = Grid::new(problem.beta_schedule(), spec.grid, spec.steps);
    let ledger = Ledger::default();
    let model = Model {
        denoiser: inst.denoiser(),
        decoder: inst.decoder(),
        reward: inst.reward(),
        grid: &grid,
        eta: spec.eta,
        ledger: &ledger,
        streams: Streams::new(spec.seed),
    };
    let method = spec.method.method();
    let make = || method.sampler(spec.alpha);
    let sampled =
        inst.sample(&|| sample_groups_cond(&model, method.particles(), spec.groups, inst.labels(), &make, tick))?;
    let t_metrics = Instant::now();
    let mut m = BTreeMap::new();
    let ev = inst.evaluate(&sampled, &mut m)?;
    let (snap, traces) = finish_cell(spec, &sampled, &ledger, t_metrics, inst.training(), start, &mut m);
    let mut r = CellResult::new(cell, m, snap, traces, ev.samples);
    r.params.extend(ev.params);
    r.prompts = ev.prompts;
    if let Some((key, data)) = ev.view {
        r.target_view = Some(key);
        r.view_data = Some(data);
    }
    Ok(r)
}

/// A fine-tuning run's cost in the cell's metrics: `train_s`, `train_nfe` (denoiser forward rows),
/// `train_vjp_denoiser` (rows backpropagated through), `train_reward`, `train_kl`, `train_loss`.
pub fn training_metrics(st: &TrainStats, m: &mut BTreeMap<String, f64>) {
    m.insert("train_s".into(), st.wall_s);
    m.insert("train_nfe".into(), st.nfe as f64);
    m.insert("train_vjp_denoiser".into(), st.vjp as f64);
    m.insert("train_reward".into(), st.reward_mean);
    m.insert("train_kl".into(), st.kl_mean);
    m.insert("train_loss".into(), st.final_loss);
}

/// Close a cell's books: book the metrics phase (started at `t_metrics`), add the shared ledger metrics and SMC
/// diagnostics ([`ledger_and_traces`]), the fine-tuning statistics when the method trained, and `wall_s` since
/// `start`. Returns the ledger snapshot and the per-step traces for [`CellResult::new`].
pub fn finish_cell(
    spec: &CellSpec,
    sampled: &Sampled,
    ledger: &Ledger,
    t_metrics: Instant,
    training: Option<&TrainStats>,
    start: Instant,
    m: &mut BTreeMap<String, f64>,
) -> (LedgerSnapshot, Vec<TraceRow>) {
    ledger.add_time(Phase::Metrics, t_metrics);
    let snap = ledger.snapshot();
    let traces = ledger_and_traces(spec, sampled, &snap, m);
    if m.get("random_weights") == Some(&1.0) {
        // Random-weight models give cost figures only; log Ẑ is a reward number.
        m.remove("log_z_hat");
    }
    if let Some(st) = training {
        training_metrics(st, m);
    }
    m.insert("wall_s".into(), start.elapsed().as_secs_f64());
    (snap, traces)
}

/// The metrics every problem shares — mean log Ẑ (SMC methods), the ledger per group, SMC diagnostics — added to
/// `m`; returns the per-step traces.
pub fn ledger_and_traces(
    spec: &CellSpec,
    sampled: &Sampled,
    snap: &LedgerSnapshot,
    m: &mut BTreeMap<String, f64>,
) -> Vec<TraceRow> {
    let log_z_hat: Vec<f64> = sampled.outputs.iter().filter_map(|o| o.log_z_hat).collect();
    if !log_z_hat.is_empty() {
        m.insert("log_z_hat".into(), log_z_hat.iter().sum::<f64>() / log_z_hat.len() as f64);
    }
    // Method-specific per-group figures (e.g. DTS's tree size), averaged over the groups.
    let mut stats: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for (k, v) in sampled.outputs.iter().flat_map(|o| o.stats.iter()) {
        let e = stats.entry(k).or_insert((0.0, 0));
        e.0 += v;
        e.1 += 1;
    }
    for (k, (s, n)) in stats {
        m.insert(k.to_string(), s / n as f64);
    }
    let per = 1.0 / spec.groups as f64;
    m.insert("nfe".into(), snap.nfe as f64 * per);
    m.insert("vjp_denoiser".into(), snap.vjp_denoiser as f64 * per);
    m.insert("vjp_reward".into(), snap.vjp_reward as f64 * per);
    m.insert("decoder_calls".into(), snap.decoder_calls as f64 * per);
    m.insert("reward_calls".into(), snap.reward_calls as f64 * per);
    let k = spec.method.particles() as f64;
    let traces: Vec<TraceRow> = sampled
        .traces
        .iter()
        .enumerate()
        .map(|(i, t)| TraceRow {
            step: i,
            ess_frac: if t.ess_sum > 0.0 { t.ess_sum / t.groups.max(1) as f64 / k } else { 1.0 },
            resample_frac: t.resampled as f64 / t.groups.max(1) as f64,
            lambda: t.lambda_sum / t.groups.max(1) as f64,
            non_finite: t.non_finite,
        })
        .collect();
    if spec.method.is_smc() {
        m.insert("non_finite_events".into(), sampled.traces.iter().map(|t| t.non_finite as f64).sum());
        m.insert("resamplings".into(), sampled.traces.iter().map(|t| t.resampled as f64).sum());
        m.insert("ess_mean".into(), traces.iter().map(|t| t.ess_frac).sum::<f64>() / traces.len().max(1) as f64);
    }
    traces
}
