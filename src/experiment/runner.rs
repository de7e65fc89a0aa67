//! The runner owns the sampling loop: it splits a cell's groups into chunks, runs each chunk's sampler step by step
//! in parallel (rayon), reports progress, fills the ledger and computes the cell's metrics. Fine-tuning methods
//! (`rl`, `backprop`) first train a copy of the learned MLP (cached per training configuration under the results
//! folder's `weights/`, [`cached_training`]) and then sample with it by plain DDIM/DDPM; on FMNIST-align,
//! `backprop` fine-tunes the ε-MLP (`mini_cell::fine_tune`, mini-benchmark.md §6.4).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::plan::Cell;
use super::spec::{CellSpec, MethodSpec};
use crate::diffusion::schedule::{BetaSchedule, Grid};
use crate::diffusion::{Cond, Identity};
use crate::finetune::backprop::{self, BackpropDefaults, BackpropSettings};
use crate::finetune::{rl, TrainStats};
use crate::ledger::{Ledger, LedgerSnapshot, Phase};
use crate::metrics::emd::emd_protocol;
use crate::metrics::mode_tv;
use crate::models::mlp::Mlp;
use crate::numerics::sha256_hex;
use crate::numerics::write_atomic;
use crate::problems::cross_reward::PromptRow;
use crate::problems::toy::ToyProblem;
use crate::rng::{Purpose, Streams};
use crate::samplers::{Batch, GroupOutput, Model, Sampler, StepTrace};
use crate::{Error, Result};

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

/// Samples kept for figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleDump {
    /// Dimension.
    pub d: usize,
    /// Row-major samples (a non-finite coordinate is written as `null` and read back as NaN).
    #[serde(deserialize_with = "non_finite::nan_vec")]
    pub x: Vec<f32>,
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
    #[serde(with = "non_finite")]
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
}

/// JSON has no ±∞ or NaN: metrics keep them as strings, sample coordinates as `null` (read back as NaN).
pub(crate) mod non_finite {
    use std::collections::BTreeMap;

    use serde::de::Error as _;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f64),
        S(String),
    }

    pub fn serialize<S: Serializer>(m: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            if v.is_finite() {
                map.serialize_entry(k, v)?;
            } else {
                map.serialize_entry(k, &format!("{v}"))?;
            }
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
        let raw = BTreeMap::<String, Num>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| match v {
                Num::F(x) => Ok((k, x)),
                Num::S(s) => s
                    .parse::<f64>()
                    .map(|x| (k, x))
                    .map_err(|_| D::Error::custom(format!("metric `{s}` is not a number"))),
            })
            .collect()
    }

    /// One number, non-finite values as strings (`#[serde(with = "non_finite::scalar")]`).
    pub mod scalar {
        use super::*;

        pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
            if v.is_finite() {
                s.serialize_f64(*v)
            } else {
                s.serialize_str(&format!("{v}"))
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
            match Num::deserialize(d)? {
                Num::F(x) => Ok(x),
                Num::S(s) => s.parse::<f64>().map_err(|_| D::Error::custom(format!("`{s}` is not a number"))),
            }
        }
    }

    pub fn nan_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        Ok(Vec::<Option<f32>>::deserialize(d)?.into_iter().map(|v| v.unwrap_or(f32::NAN)).collect())
    }
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
        }
    }
}

/// Every output of a cell pooled in group order, each group counting equally.
#[derive(Clone, Debug)]
pub struct Pooled {
    /// Output samples, row-major `[rows, d]`.
    pub x: Vec<f32>,
    /// Weight of each row: its group-normalised weight divided by the number of groups (sums to 1).
    pub w: Vec<f64>,
    /// The sampler's reward of each row.
    pub rewards: Vec<f64>,
    /// Group index of each row.
    pub group: Vec<usize>,
    /// Whether every coordinate of the row is finite (a diverged chain is not).
    pub finite: Vec<bool>,
    /// Weight of the non-finite rows.
    pub non_finite_frac: f64,
}

impl Pooled {
    /// Pool the outputs of `sampled` (rows of length `d`).
    pub fn new(sampled: &Sampled, d: usize) -> Self {
        let g = sampled.outputs.len() as f64;
        let (mut x, mut w, mut rewards, mut group) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (gi, o) in sampled.outputs.iter().enumerate() {
            x.extend_from_slice(&o.samples);
            w.extend(o.weights.iter().map(|v| v / g));
            rewards.extend_from_slice(&o.rewards);
            group.extend(std::iter::repeat_n(gi, o.weights.len()));
        }
        let finite: Vec<bool> = x.chunks_exact(d.max(1)).map(|r| r.iter().all(|v| v.is_finite())).collect();
        let wsum: f64 = w.iter().sum();
        // `+ 0.0` turns the −0.0 of an empty float sum into 0.
        let non_finite_frac = finite.iter().zip(&w).filter(|(f, _)| !**f).map(|(_, wi)| wi).sum::<f64>() / wsum + 0.0;
        Pooled { x, w, rewards, group, finite, non_finite_frac }
    }

    /// Indices of the finite rows.
    pub fn finite_rows(&self) -> Vec<usize> {
        (0..self.finite.len()).filter(|&i| self.finite[i]).collect()
    }
}

/// Weighted mean and (population) standard deviation of `v` with weights `w`.
pub fn weighted_mean_sd(v: &[f64], w: &[f64]) -> (f64, f64) {
    let ws: f64 = w.iter().sum();
    let m = v.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() / ws;
    let var = v.iter().zip(w).map(|(a, b)| b * (a - m).powi(2)).sum::<f64>() / ws;
    (m, var.sqrt())
}

/// The sampler of a method (a fine-tuning method's is the sampler it uses after training).
pub fn make_sampler(m: &MethodSpec, alpha: f64) -> Result<Box<dyn Sampler>> {
    m.method().sampler(alpha)
}

/// Output of sampling a whole cell.
pub struct Sampled {
    /// Per group, in group order.
    pub outputs: Vec<GroupOutput>,
    /// Per step, summed over groups.
    pub traces: Vec<StepTrace>,
}

/// Run the sampler of `method` over `groups` groups, in chunks of about `rows` rows, in parallel.
/// `tick(n)` is called after each chunk-step with the number of groups advanced.
pub fn sample_groups(
    model: &Model,
    method: &MethodSpec,
    alpha: f64,
    groups: usize,
    tick: &(dyn Fn(u64) + Sync),
) -> Result<Sampled> {
    make_sampler(method, alpha)?;
    sample_groups_with(model, method.particles(), groups, &|| make_sampler(method, alpha), tick)
}

/// Run samplers made by `make` (`k` particles per group) over `groups` unconditional groups, in chunks of about 2048
/// rows, in parallel. Chunking changes memory and speed, never results.
pub fn sample_groups_with(
    model: &Model,
    k: usize,
    groups: usize,
    make: &(dyn Fn() -> Result<Box<dyn Sampler>> + Sync),
    tick: &(dyn Fn(u64) + Sync),
) -> Result<Sampled> {
    sample_groups_cond(model, k, groups, &[], make, tick)
}

/// [`sample_groups_with`] with prompt labels: group g is conditioned on `labels[g % labels.len()]` (empty = ∅).
pub fn sample_groups_cond(
    model: &Model,
    k: usize,
    groups: usize,
    labels: &[usize],
    make: &(dyn Fn() -> Result<Box<dyn Sampler>> + Sync),
    tick: &(dyn Fn(u64) + Sync),
) -> Result<Sampled> {
    let k = k.max(1);
    // At most ~2048 rows per chunk, and at least two chunks per worker thread when there are enough groups.
    let per_worker = groups.div_ceil(2 * rayon::current_num_threads()).max(1);
    let chunk = (2048 / k).min(per_worker).clamp(1, groups.max(1));
    let chunks: Vec<Vec<u64>> = (0..groups as u64).collect::<Vec<_>>().chunks(chunk).map(|c| c.to_vec()).collect();
    let n = model.grid.len();
    let parts: Vec<Result<(Vec<GroupOutput>, Vec<StepTrace>)>> = chunks
        .into_par_iter()
        .map(|gs| {
            let mut s = make()?;
            let cond = if labels.is_empty() {
                Cond::None
            } else {
                Cond::Labels(gs.iter().map(|&g| labels[g as usize % labels.len()]).collect())
            };
            let b = Batch { groups: gs, cond };
            s.init(model, &b)?;
            let mut tr = Vec::with_capacity(n);
            for i in 0..n {
                tr.push(s.step(model, &b, i)?);
                tick(b.groups.len() as u64);
            }
            Ok((s.finish(model, &b)?, tr))
        })
        .collect();
    let mut outputs = Vec::with_capacity(groups);
    let mut traces = vec![StepTrace::default(); n];
    for p in parts {
        let (o, t) = p?;
        outputs.extend(o);
        for (a, b) in traces.iter_mut().zip(&t) {
            a.add(b);
        }
    }
    Ok(Sampled { outputs, traces })
}

/// The document a fine-tuning run's cache key hashes: everything the training depends on — the method's resolved
/// settings `method`, problem, reward, α, chain (steps, η, grid), seed, the pretrained weights' sha256 and the crate
/// version.
pub fn training_key(spec: &CellSpec, method: serde_json::Value, pretrained_sha256: &str) -> serde_json::Value {
    serde_json::json!({
        "method": method,
        "problem": serde_json::to_value(&spec.problem).expect("json"),
        "reward": serde_json::to_value(&spec.reward).expect("json"),
        "alpha": spec.alpha, "steps": spec.steps, "eta": spec.eta, "grid": serde_json::to_value(spec.grid).expect("json"),
        "seed": spec.seed, "pretrained_sha256": pretrained_sha256, "crate_version": env!("CARGO_PKG_VERSION"),
    })
}

/// The resolved `backprop` settings of a cell as the method's key value (`method: backprop` plus every setting).
pub fn backprop_key(settings: &BackpropSettings) -> serde_json::Value {
    let mut v = serde_json::to_value(settings).expect("json");
    v["method"] = serde_json::Value::from("backprop");
    v
}

/// Fine-tuned weights cached under `cache` (a results folder's `weights/`) as `<method>-<key>.safetensors` plus a
/// manifest `<method>-<key>.json` (the key document, the training stats and the weights' sha256), keyed by the
/// sha256 of `key_doc`: a cached run is loaded, otherwise `train` runs and its result is saved.
pub fn cached_training<T>(
    cache: Option<&Path>,
    method: &str,
    key_doc: &serde_json::Value,
    load: impl Fn(&Path) -> Result<T>,
    save: impl Fn(&T, &Path) -> Result<()>,
    train: impl FnOnce() -> Result<(T, TrainStats)>,
) -> Result<(T, TrainStats)> {
    let key = sha256_hex(&serde_json::to_vec(key_doc).expect("json"));
    let stem = format!("{method}-{}", &key[..16]);
    if let Some(dir) = cache {
        let (w, m) = (dir.join(format!("{stem}.safetensors")), dir.join(format!("{stem}.json")));
        if w.exists() && m.exists() {
            let text = std::fs::read_to_string(&m).map_err(|e| Error::file(&m, e.to_string()))?;
            let doc: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::file(&m, format!("corrupt manifest ({e}); delete it to retrain")))?;
            let stats: TrainStats = serde_json::from_value(doc["stats"].clone())
                .map_err(|e| Error::file(&m, format!("corrupt manifest ({e}); delete it to retrain")))?;
            return Ok((load(&w)?, stats));
        }
    }
    let (model, stats) = train()?;
    if let Some(dir) = cache {
        std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create folder: {e}")))?;
        let w = dir.join(format!("{stem}.safetensors"));
        save(&model, &w)?;
        let doc =
            serde_json::json!({ "key": key_doc, "stats": stats, "weights_sha256": sha256_hex(&std::fs::read(&w)?) });
        write_atomic(&dir.join(format!("{stem}.json")), serde_json::to_string_pretty(&doc).expect("json").as_bytes())?;
    }
    Ok((model, stats))
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

/// Train the fine-tuning method of a cell on a copy of its learned MLP, or load the weights a previous run cached
/// under `cache` ([`cached_training`], keyed by [`training_key`]).
pub fn fine_tune(spec: &CellSpec, prob: &ToyProblem, cache: Option<&Path>) -> Result<(Mlp, TrainStats)> {
    let path = prob.mlp_path(spec)?;
    let bytes = std::fs::read(&path).map_err(|e| Error::file(&path, format!("cannot read the pretrained MLP: {e}")))?;
    let pre = Mlp::load(&path)?;
    let method = match &spec.method {
        MethodSpec::Backprop(c) => backprop_key(&c.resolve(&BackpropDefaults::TOY)),
        other => serde_json::to_value(other).expect("json"),
    };
    let key_doc = training_key(spec, method, &sha256_hex(&bytes));
    let train = || {
        let grid = Grid::new(BetaSchedule::Linear, spec.grid, spec.steps);
        let streams = Streams::new(spec.seed);
        match &spec.method {
            MethodSpec::Rl(c) => rl::train(&pre, prob.reward.as_ref(), &grid, spec.eta, spec.alpha, c, streams),
            MethodSpec::Backprop(c) => {
                let s = c.resolve(&BackpropDefaults::TOY);
                backprop::train(&pre, prob.reward.as_ref(), &grid, spec.eta, spec.alpha, &s, streams)
            }
            other => Err(Error::config(format!("{}: not a fine-tuning method", other.name()))),
        }
    };
    cached_training(cache, spec.method.name(), &key_doc, Mlp::load, |m: &Mlp, w| m.save(w), train)
}

/// Run one toy cell end to end: sampling, then metrics against the exact target (fine-tuned weights are not cached).
pub fn run_cell(cell: &Cell, tick: &(dyn Fn(u64) + Sync)) -> Result<CellResult> {
    run_cell_cached(cell, None, tick)
}

/// [`run_cell`] with a folder caching the weights of fine-tuning methods.
pub fn run_cell_cached(cell: &Cell, cache: Option<&Path>, tick: &(dyn Fn(u64) + Sync)) -> Result<CellResult> {
    if matches!(cell.spec.problem, super::spec::ProblemSpec::Sd15 { .. }) {
        return crate::problems::sd15::cell::run_sd_cell(cell, tick);
    }
    if !cell.spec.problem.is_toy() {
        return crate::problems::mini::cell::run_mini_cell(cell, cache, tick);
    }
    let start = Instant::now();
    let spec = &cell.spec;
    let prob = ToyProblem::build(spec)?;
    let tuned = if spec.method.is_fine_tuning() { Some(fine_tune(spec, &prob, cache)?) } else { None };
    let den: Box<dyn crate::diffusion::Denoiser> = match &tuned {
        Some((mlp, _)) => Box::new(mlp.clone()),
        None => prob.denoiser(spec)?,
    };
    let grid = Grid::new(spec.problem.beta_schedule(), spec.grid, spec.steps);
    let ledger = Ledger::default();
    let streams = Streams::new(spec.seed);
    let model = Model {
        denoiser: den.as_ref(),
        decoder: &Identity,
        reward: prob.reward.as_ref(),
        grid: &grid,
        eta: spec.eta,
        ledger: &ledger,
        streams,
    };
    let sampled = sample_groups(&model, &spec.method, spec.alpha, spec.groups, tick)?;
    let t_metrics = Instant::now();
    let d = prob.gmm.d;
    let Pooled { x: pool, w, rewards, finite, non_finite_frac, .. } = Pooled::new(&sampled, d);
    let uniform = w.windows(2).all(|p| p[0] == p[1]);
    let wopt = if uniform { None } else { Some(w.as_slice()) };
    let wsum: f64 = w.iter().sum();
    // A sample that left the floating-point range (a diverging guided chain) is a counted event, never dropped:
    // its mass is at infinity, so W1 = +∞ and the mean reward is −∞ (every reward here is bounded above), and it
    // falls in no mode.
    let reward_mean = if non_finite_frac > 0.0 {
        f64::NEG_INFINITY
    } else {
        rewards.iter().zip(&w).map(|(r, wi)| r * wi).sum::<f64>() / wsum
    };
    let mut m = BTreeMap::new();
    m.insert("reward_mean".into(), reward_mean);
    m.insert("non_finite_frac".into(), non_finite_frac);
    if let Some(tilted) = &prob.tilted {
        let target = tilted.gmm.sample(&mut streams.rng(Purpose::Target, 0, 0), spec.metrics.target_pool);
        let target2 = tilted.gmm.sample(&mut streams.rng(Purpose::Target, 1, 0), spec.metrics.target_pool);
        let (n, r) = (spec.metrics.emd_n, spec.metrics.emd_repeats);
        let (emd, emd_std) = if non_finite_frac > 0.0 {
            (f64::INFINITY, 0.0)
        } else {
            emd_protocol(&pool, wopt, &target, d, n, r, &mut streams.rng(Purpose::Metric, 0, 0))?
        };
        let (floor, floor_std) =
            emd_protocol(&target2, None, &target, d, n, r, &mut streams.rng(Purpose::Metric, 1, 0))?;
        let n_modes = tilted.gmm.len();
        let assign: Vec<usize> = tilted
            .gmm
            .nearest_mode(&pool)
            .into_iter()
            .zip(&finite)
            .map(|(a, &f)| if f { a } else { n_modes })
            .collect();
        let mut mode_w = tilted.gmm.weights.clone();
        mode_w.push(0.0);
        let tv = mode_tv(&assign, wopt, &mode_w);
        m.insert("emd".into(), emd);
        m.insert("emd_std".into(), emd_std);
        m.insert("emd_floor".into(), floor);
        m.insert("emd_floor_std".into(), floor_std);
        m.insert("reward_target".into(), tilted.reward_mean);
        m.insert("mode_tv".into(), tv);
        m.insert("log_z".into(), tilted.log_z);
    }
    let (snap, traces) = finish_cell(spec, &sampled, &ledger, t_metrics, tuned.as_ref().map(|t| &t.1), start, &mut m);
    let keep = spec.metrics.keep_samples.min(pool.len() / d);
    Ok(CellResult::new(cell, m, snap, traces, SampleDump { d, x: pool[..keep * d].to_vec() }))
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
