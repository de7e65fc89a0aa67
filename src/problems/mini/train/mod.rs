//! Training of the FMNIST-align models (mini-benchmark.md §3, §8, §9): `alignbench train mini`.
//!
//! Stages `ae` → `ddpm` (on the autoencoder's latents), `clf_a`, `clf_b`, `style` (ridge heads on the classifiers'
//! features). Each stage is resumable: it is skipped when its output exists, its sha256 matches `manifest.json` and
//! the manifest records the same configuration hash (stage config, data selection, seed and the sha256 of the
//! artifacts it was trained from) — unless `fresh`. The manifest is rewritten after every stage.
//!
//! Determinism: every random number (initialisation, data order, reparameterisation and diffusion noise,
//! timesteps, label dropout, shifts, dropout masks, rater noise) comes from a named seeded stream
//! `(seed, train, group, step)` with one group range per stage; the same binary and thread count reproduce the
//! weights bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;

use super::assets::{FileEntry, Manifest};
use super::data::{FashionMnist, Splits};
use super::models::count_params;
use crate::numerics::sha256_hex;
use crate::rng::Streams;
use crate::{Error, Result};

mod config;
mod stages;

pub use config::*;
use stages::*;

/// What happened to one stage.
#[derive(Clone, Debug, PartialEq)]
pub struct StageReport {
    /// The stage.
    pub stage: Stage,
    /// Whether it was skipped as up to date.
    pub skipped: bool,
    /// Wall time of the training (as recorded in the manifest when skipped).
    pub wall_s: f64,
    /// Final metrics per output file.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Train the selected stages into `opts.out`, updating `manifest.json` after each.
///
/// Stages run in waves: a stage joins the current wave unless it reads a file that a stage of the wave writes, so
/// with the defaults the waves are `ae`, then `ddpm`, `clf_a`, `clf_b` (up to `opts.jobs` of them at once), then
/// `style`. Every stage draws from its own seeded streams, so the weights do not depend on `jobs`; a stage that
/// finishes is saved and recorded in the manifest at once (an interrupted wave keeps its finished stages).
pub fn train(data: &FashionMnist, cfg: &MiniTrainConfig, opts: &TrainOptions) -> Result<Vec<StageReport>> {
    cfg.validate()?;
    let splits = Splits::new(data, cfg.data.n_train, cfg.data.n_test, cfg.style.n_labels);
    let mut manifest = Manifest::read(&opts.out).unwrap_or_default();
    manifest.version = 1;
    manifest.code_version = code_version();
    manifest.dataset = data.info.clone();
    manifest.splits = splits.counts(data);
    let bars = indicatif::MultiProgress::new();
    let state = std::sync::Mutex::new((manifest, Vec::new()));
    for wave in waves(&opts.stage.expand(), cfg) {
        // Up-to-date check against the manifest as the earlier waves left it.
        let mut todo = Vec::new();
        {
            let (manifest, reports) = &mut *state.lock().expect("training state");
            for stage in wave {
                let mut inputs = BTreeMap::new();
                for f in stage.inputs(cfg) {
                    let p = opts.out.join(f);
                    let bytes = std::fs::read(&p).map_err(|e| {
                        Error::file(
                            &p,
                            format!("stage `{}` needs it ({e}); train it first (`--stage all`)", stage.name()),
                        )
                    })?;
                    inputs.insert(f.to_string(), sha256_hex(&bytes));
                }
                let stage_cfg = stage_config(cfg, stage);
                let hash = config_hash(stage, &stage_cfg, cfg, &inputs);
                let up_to_date = !opts.fresh
                    && stage.files().iter().all(|f| {
                        manifest.files.get(*f).is_some_and(|e| {
                            e.config_hash == hash
                                && std::fs::read(opts.out.join(f)).is_ok_and(|b| sha256_hex(&b) == e.sha256)
                        })
                    });
                if up_to_date {
                    let e = &manifest.files[stage.files()[0]];
                    reports.push(StageReport {
                        stage,
                        skipped: true,
                        wall_s: e.wall_s,
                        metrics: stage
                            .files()
                            .iter()
                            .map(|f| (f.to_string(), manifest.files[*f].metrics.clone()))
                            .collect(),
                    });
                } else {
                    todo.push((stage, stage_cfg, hash, inputs));
                }
            }
        }
        if todo.is_empty() {
            continue;
        }
        let before = state.lock().expect("training state").0.clone();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let errors = std::sync::Mutex::new(Vec::new());
        let run_one =
            |(stage, stage_cfg, hash, inputs): &(Stage, serde_json::Value, String, BTreeMap<String, String>)| {
                let t0 = Instant::now();
                let ctx = Ctx {
                    data,
                    splits: &splits,
                    cfg,
                    opts,
                    streams: Streams::new(cfg.seed),
                    manifest: &before,
                    stage: *stage,
                    bars: &bars,
                };
                let outputs = match stage {
                    Stage::Ae => vec![train_ae(&ctx)?],
                    Stage::Ddpm => vec![train_ddpm(&ctx)?],
                    Stage::ClfA => vec![train_classifier(&ctx, false)?],
                    Stage::ClfB => vec![train_classifier(&ctx, true)?],
                    Stage::Style => fit_style(&ctx)?,
                    Stage::All => unreachable!("expanded above"),
                };
                let wall_s = t0.elapsed().as_secs_f64();
                let mut entries = Vec::new();
                for (file, tensors, m) in outputs {
                    let path = opts.out.join(file);
                    save_tensors(&tensors, &path)?;
                    let bytes =
                        std::fs::read(&path).map_err(|e| Error::file(&path, format!("cannot read back: {e}")))?;
                    let entry = FileEntry {
                        sha256: sha256_hex(&bytes),
                        parameters: count_params(&tensors),
                        config: stage_cfg.clone(),
                        config_hash: hash.clone(),
                        seed: cfg.seed,
                        threads: candle_core::utils::get_num_threads(),
                        wall_s,
                        metrics: m,
                        inputs: inputs.clone(),
                    };
                    entries.push((file, entry));
                }
                let (manifest, reports) = &mut *state.lock().expect("training state");
                let metrics = entries.iter().map(|(f, e)| (f.to_string(), e.metrics.clone())).collect();
                for (f, e) in entries {
                    manifest.files.insert(f.to_string(), e);
                }
                manifest.write(&opts.out)?;
                reports.push(StageReport { stage: *stage, skipped: false, wall_s, metrics });
                Ok::<(), Error>(())
            };
        std::thread::scope(|s| {
            for _ in 0..opts.jobs.clamp(1, todo.len()) {
                s.spawn(|| loop {
                    // After a failure, stages not yet started are not started.
                    if !errors.lock().expect("training errors").is_empty() {
                        break;
                    }
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(job) = todo.get(i) else { break };
                    if let Err(e) = run_one(job) {
                        errors.lock().expect("training errors").push(e);
                    }
                });
            }
        });
        if let Some(e) = errors.into_inner().expect("training errors").into_iter().next() {
            return Err(e);
        }
    }
    let (mut manifest, mut reports) = state.into_inner().expect("training state");
    reports.sort_by_key(|r: &StageReport| r.stage.group());
    manifest.extra.insert("deviations".into(), serde_json::json!(DEVIATIONS));
    manifest.write(&opts.out)?;
    Ok(reports)
}

/// Split stages (in order) into waves whose members do not read each other's outputs.
fn waves(stages: &[Stage], cfg: &MiniTrainConfig) -> Vec<Vec<Stage>> {
    let mut out: Vec<Vec<Stage>> = Vec::new();
    for &s in stages {
        let reads_wave =
            out.last().is_some_and(|w| w.iter().any(|o| o.files().iter().any(|f| s.inputs(cfg).contains(f))));
        match out.last_mut() {
            Some(w) if !reads_wave => w.push(s),
            _ => out.push(vec![s]),
        }
    }
    out
}

/// Where the shipped configuration (`experiments/mini/train.yaml`, the defaults) departs from mini-benchmark.md, and
/// the measurement that made it necessary; written into `manifest.json` (`deviations`).
pub const DEVIATIONS: &[&str] = &[
    "ae: 24 epochs instead of 12: test reconstruction MSE 0.0123 → 0.0102, and classifier B (trained on the \
     12-epoch AE's reconstructions) read the sharper reconstructions at 0.861 instead of 0.850 (check: ≥ 0.85); \
     lr 2e-3 with β_KL 0.02 gave MSE 0.0094 but CFG samples at w = 1 scored 0.838 with the same B (check: ≥ 0.85)",
    "clf_b: random shifts ±1 px instead of ±2 and more epochs (spec 8): measured test accuracy 0.874 (±2 px, 8 \
     epochs), 0.878 (±1 px, 8 epochs), 0.864 (±2 px, cosine decay), all below the 0.89 check",
    "clf_b: each training row is replaced by its autoencoder reconstruction D(E(x)) with probability `recon` = 0.6, \
     24 epochs with cosine decay to 1e-5, saved as the EMA (0.999) of the iterates: B scores decoded samples, and a B \
     trained on real images only read AE reconstructions of the test set at 0.773 accuracy (check: ≥ 0.85); measured \
     on the 12-epoch AE: recon 0.5 / 12 epochs constant lr 0.884 / 0.842 (clean / reconstructions), 0.5 / 20 epochs \
     cosine 0.890 / 0.847, 0.6 / 24 epochs cosine 0.890 / 0.850; on the lr 2e-3 AE with the EMA 0.892 / 0.866",
    "ddpm: CFG scale w = 1 (the pilot's rule, the smallest w with B accuracy ≥ 0.85 on CFG samples of all ten \
     classes; the spec expected 2–4). At w = 1.5 the unguided per-class φ_B diversity was 0.63 of the real images' \
     (check: ∈ [0.8, 1.2]; AE reconstructions keep 0.86–1.10, tripling DDPM training moved it by 0.015)",
    "kid_x1000: φ_B divided by the reference set's RMS entry before the cubic kernel (raw ReLU features make xᵀy/128 ≫ 1 \
     and the kernel norm-dominated)",
];

/// `alignbench <version> (<git commit>)`.
pub fn code_version() -> String {
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown commit".into());
    format!("alignbench {} ({git})", env!("CARGO_PKG_VERSION"))
}

/// The resolved configuration recorded for a stage (its own section plus the data selection and seed).
fn stage_config(cfg: &MiniTrainConfig, stage: Stage) -> serde_json::Value {
    let section = match stage {
        Stage::Ae => serde_json::to_value(&cfg.ae),
        Stage::Ddpm => serde_json::to_value(&cfg.ddpm),
        Stage::ClfA => serde_json::to_value(&cfg.clf_a),
        Stage::ClfB => serde_json::to_value(&cfg.clf_b),
        Stage::Style => serde_json::to_value(&cfg.style),
        Stage::All => serde_json::to_value(cfg),
    }
    .expect("config serialises");
    let data = serde_json::to_value(&cfg.data).expect("config serialises");
    serde_json::json!({ "stage": stage.name(), "version": cfg.version, "seed": cfg.seed, "data": data, stage.name(): section })
}

fn config_hash(
    stage: Stage,
    stage_cfg: &serde_json::Value,
    cfg: &MiniTrainConfig,
    inputs: &BTreeMap<String, String>,
) -> String {
    let v = serde_json::json!({ "stage": stage.name(), "config": stage_cfg, "seed": cfg.seed, "inputs": inputs });
    sha256_hex(v.to_string().as_bytes())[..16].to_string()
}

fn save_tensors(t: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| Error::file(p, format!("cannot create folder: {e}")))?;
    }
    candle_core::safetensors::save(t, &tmp).map_err(|e| Error::file(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, format!("cannot rename into place: {e}")))?;
    Ok(())
}

/// Arguments of `alignbench train mini`.
#[derive(Clone, Debug)]
pub struct CliArgs {
    /// Configuration file (default: built-in defaults = `experiments/mini/train.yaml`).
    pub config: Option<PathBuf>,
    /// Use `experiments/mini/train-smoke.yaml` (and `results/mini-smoke` as the default output).
    pub smoke: bool,
    /// Stage(s) to train.
    pub stage: Stage,
    /// Output folder (default `assets/mini`).
    pub out: Option<PathBuf>,
    /// Folder with the Fashion-MNIST IDX gz files.
    pub data_dir: Option<PathBuf>,
    /// Retrain up-to-date stages.
    pub fresh: bool,
    /// Progress bars.
    pub progress: bool,
    /// Tensor-backend threads (default 1; see [`run_cli`]).
    pub threads: Option<usize>,
    /// Independent stages trained at the same time (default: the number of cores, at most 3).
    pub jobs: Option<usize>,
}

/// Keep freed memory in the heap instead of returning it to the kernel (glibc only).
///
/// candle allocates a fresh buffer for every tensor of every step; with glibc's defaults the large ones are
/// `mmap`ed and unmapped each time, and the page faults and page clearing of re-mapping them cost about half of a
/// classifier-B backward pass (measured: 150 → 75 ms per batch of 128). Raising the mmap threshold to its maximum
/// (32 MiB) and the trim threshold lets the heap reuse those pages. Process-wide; numbers are unaffected.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_TOP_PAD: i32 = -2;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: mallopt only changes glibc allocator tuning parameters; called before training allocates.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
            mallopt(M_TOP_PAD, 512 << 20);
        }
    }
}

/// `alignbench train mini`: resolve the configuration and data, train, and describe what happened.
///
/// Training uses one tensor-backend thread unless `threads` says otherwise: the models are small, and on the
/// project's shared 2-core machines two contended threads were 2–4× *slower* than one (DDPM 300 steps: 35.5 s
/// with 2 threads vs 8.3 s with 1). The thread count is recorded in the manifest (same binary + same thread count
/// ⇒ same weights). Independent stages run concurrently (`jobs`, default min(cores, 3)), one thread each: on 2 cores
/// the DDPM and classifier B train side by side after the autoencoder.
pub fn run_cli(a: &CliArgs) -> Result<String> {
    // candle reads RAYON_NUM_THREADS at every matmul.
    std::env::set_var("RAYON_NUM_THREADS", a.threads.unwrap_or(1).max(1).to_string());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = match (&a.config, a.smoke) {
        (Some(p), _) => MiniTrainConfig::from_file(p)?,
        (None, true) => {
            let local = PathBuf::from("experiments/mini/train-smoke.yaml");
            MiniTrainConfig::from_file(&if local.exists() { local } else { root.join(&local) })?
        }
        (None, false) => MiniTrainConfig::default(),
    };
    let out = a.out.clone().unwrap_or_else(|| {
        if a.smoke {
            PathBuf::from("results/mini-smoke")
        } else {
            super::assets::default_dir()
        }
    });
    tune_allocator();
    let t0 = Instant::now();
    let data = FashionMnist::load(a.data_dir.as_deref())?;
    let load_s = t0.elapsed().as_secs_f64();
    let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(3)).max(1);
    let opts = TrainOptions { out: out.clone(), stage: a.stage, fresh: a.fresh, progress: a.progress, jobs };
    let reports = train(&data, &cfg, &opts)?;
    let mut s = format!(
        "train mini → {} (data {load_s:.1} s, {} tensor thread(s) per stage, up to {jobs} stage(s) at once)\n",
        out.display(),
        candle_core::utils::get_num_threads()
    );
    for r in &reports {
        let what = if r.skipped { "up to date" } else { "trained" };
        s += &format!("  {:<6} {what:<10} {:>7.1} s", r.stage.name(), r.wall_s);
        for (f, m) in &r.metrics {
            let kv: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            s += &format!("\n         {f}: {}", kv.join(", "));
        }
        s += "\n";
    }
    s += &format!("  total {:.1} s", t0.elapsed().as_secs_f64());
    Ok(s)
}

#[cfg(test)]
mod tests;
