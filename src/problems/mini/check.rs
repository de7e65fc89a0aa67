//! `alignbench mini check`: the acceptance checks of mini-benchmark.md §4 on a trained FMNIST-align assets folder,
//! plus the pilots that fix the benchmark's free constants — the CFG scale (smallest w whose samples classifier B
//! recognises as the prompt class at ≥ 0.85) and the target spreads σ_r of the tasks (std of the target reward over
//! 1,024 unguided samples) from which the sweeps' α = σ_r/τ grids are derived. Results go to `check.json`.
//!
//! | check | threshold |
//! |---|---|
//! | AE test reconstruction MSE per pixel | ≤ 0.015 |
//! | classifier B accuracy on E / on AE reconstructions of E | ≥ 0.89 / ≥ 0.85 |
//! | classifier A accuracy on E | ≥ 0.86 |
//! | style head R² vs gold on E (A and B) | ∈ [0.5, 0.9] |
//! | CFG samples at the frozen w: B accuracy on the prompt class | ≥ 0.85 |
//! | unguided per-class pairwise φ_B cosine distance / real per-class value (mean over T1 classes) | ∈ [0.8, 1.2] |
//! | over-optimisation pilot (DPS `constant`, target `style_a`, some ρ of the grid) | Δstyle_a ≥ 2σ_r and (Δgold_ink/σ_gold < ½·Δstyle_a/σ_r or Δcls_b ≤ −0.5 nats) |

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::spec::MINI_CFG;
use crate::diffusion::schedule::{BetaSchedule, Grid, Spacing};
use crate::diffusion::Decoder;
use crate::ledger::Ledger;
use crate::methods::MethodSpec;
use crate::metrics::diversity::mean_pairwise_cosine_distance;
use crate::numerics::{accuracy, mean_sd, r_squared};
use crate::problems::mini::data::{CLASSES, PIXELS};
use crate::problems::mini::models::{Classifier, FEATURES};
use crate::problems::mini::rewards::{MiniNets, MiniRewardKind};
use crate::problems::mini::{map_rows, FashionMnist, MiniDecoder, MiniDenoiser, Splits};
use crate::rewards::Reward;
use crate::rng::Streams;
use crate::samplers::run::sample_groups_cond;
use crate::{Error, Result};

/// T1 prompt classes (mini-benchmark.md §5).
pub const T1_CLASSES: [usize; 5] = [0, 1, 5, 8, 9];
/// T2 target classes.
pub const T2_TARGETS: [usize; 2] = [0, 7];

/// Options of `alignbench mini check`.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Assets folder (default `assets/mini`).
    pub assets: Option<PathBuf>,
    /// Fashion-MNIST folder (default: `$ALIGNBENCH_DATA`, then the Debian package).
    pub data_dir: Option<PathBuf>,
    /// Where to write `check.json` (default `<assets>/check.json`).
    pub out: Option<PathBuf>,
    /// Small sample sizes (plumbing test; thresholds are then not meaningful).
    pub quick: bool,
}

/// One acceptance check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Measured value.
    pub value: f64,
    /// The rule, in words.
    pub threshold: String,
    /// Whether it passed.
    pub pass: bool,
}

/// One row of the CFG pilot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CfgRow {
    /// Guidance scale.
    pub w: f64,
    /// Classifier-B accuracy on the prompt class.
    pub acc_b: f64,
    /// Mean pairwise φ_B cosine distance per class.
    pub pairwise_cos: f64,
}

/// One row of the over-optimisation pilot (DPS `constant` with step ρ).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverOptRow {
    /// ρ.
    pub rho: f64,
    /// Δstyle_a in units of σ_r.
    pub d_style_a_sigma: f64,
    /// Δgold_ink in units of its unguided std.
    pub d_gold_ink_sigma: f64,
    /// Δstyle_b in units of its unguided std.
    pub d_style_b_sigma: f64,
    /// Δcls_b in nats.
    pub d_cls_b: f64,
}

/// Everything `mini check` measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Assets folder checked.
    pub assets: String,
    /// Code version.
    pub code_version: String,
    /// Whether the quick (plumbing) sizes were used.
    pub quick: bool,
    /// The checks of §4.
    pub checks: Vec<Check>,
    /// CFG pilot over w.
    pub cfg_pilot: Vec<CfgRow>,
    /// Smallest w of the pilot reaching B accuracy 0.85 (None if none did).
    pub cfg_chosen: Option<f64>,
    /// The frozen CFG scale the experiments use.
    pub cfg_frozen: f64,
    /// σ_r of T1 (`style_a`, classes 0 1 5 8 9, CFG at the frozen w).
    pub sigma_r_t1: f64,
    /// σ_r of T2 per target class (`cls_a[c]`, ∅ prompts).
    pub sigma_r_t2: Vec<(usize, f64)>,
    /// Unguided means and stds of every reward on T1 (the over-optimisation baseline).
    pub t1_unguided: Vec<(String, f64, f64)>,
    /// Over-optimisation pilot.
    pub over_opt: Vec<OverOptRow>,
    /// Per-class pairwise φ_B cosine distance ratio (unguided / real) on the T1 classes.
    pub diversity_ratio: Vec<(usize, f64)>,
    /// The decoder's ceiling on that ratio: per-class pairwise φ_B cosine distance of the AE reconstructions D(E(x))
    /// of the same real images / of the real images (diagnostic, no threshold).
    pub recon_diversity_ratio: Vec<(usize, f64)>,
    /// Seconds.
    pub wall_s: f64,
    /// Whether every check passed.
    pub pass: bool,
}

/// Samples of one method on FMNIST-align: decoded images and prompt labels per output.
struct Draw {
    images: Vec<f32>,
    labels: Vec<usize>,
}

/// Sample `groups` outputs of the method in `method_yaml` (one per group) with guidance scale `w`, prompt labels
/// `classes` (empty = ∅) and target reward `reward`, N = 50 on SD's grid, η = 1.
fn draw(
    nets: &MiniNets,
    w: f64,
    classes: &[usize],
    reward: &dyn Reward,
    method_yaml: &str,
    groups: usize,
    seed: u64,
) -> Result<Draw> {
    let method: MethodSpec = yaml_serde::from_str(method_yaml)
        .map_err(|e| Error::config(format!("mini check: bad method `{method_yaml}`: {e}")))?;
    let den = MiniDenoiser::new(nets.eps.clone(), if classes.is_empty() { 0.0 } else { w }, DType::F32, Device::Cpu);
    let dec = MiniDecoder::new(nets.ae.clone(), DType::F32, Device::Cpu);
    let grid = Grid::new(BetaSchedule::ScaledLinear, Spacing::Sd15, 50);
    let ledger = Ledger::default();
    let model = crate::samplers::Model {
        denoiser: &den,
        decoder: &dec,
        reward,
        grid: &grid,
        eta: 1.0,
        ledger: &ledger,
        streams: Streams::new(seed),
    };
    let make = || method.method().sampler(1.0);
    let s = sample_groups_cond(&model, method.particles(), groups, classes, &make, &|_| {})?;
    let mut z = Vec::new();
    let mut labels = Vec::new();
    for (g, o) in s.outputs.iter().enumerate() {
        z.extend_from_slice(&o.samples);
        let n = o.weights.len();
        labels.extend(std::iter::repeat_n(if classes.is_empty() { 0 } else { classes[g % classes.len()] }, n));
    }
    let mut images = Vec::new();
    dec.decode(&z, &mut images)?;
    Ok(Draw { images, labels })
}

/// Every reward's per-output values on a draw (class rewards scored against the prompt labels).
fn all_rewards(nets: &MiniNets, d: &Draw) -> Result<Vec<(MiniRewardKind, Vec<f64>)>> {
    let x = Tensor::from_slice(&d.images, (d.labels.len(), PIXELS), &Device::Cpu)?;
    MiniRewardKind::all()
        .into_iter()
        .map(|k| {
            let v = nets.reward_tensor(k, &x, Some(&d.labels))?.to_vec1::<f32>()?;
            Ok((k, v.into_iter().map(f64::from).collect()))
        })
        .collect()
}

fn per_class_cos(nets: &MiniNets, images: &[f32], labels: &[usize], class: usize, cap: usize) -> Result<f64> {
    let idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).take(cap).collect();
    let x: Vec<f32> = idx.iter().flat_map(|&i| images[i * PIXELS..(i + 1) * PIXELS].iter().copied()).collect();
    let phi = map_rows(&x, PIXELS, 1024, &|t| nets.clf_b.features(t))?;
    mean_pairwise_cosine_distance(&phi, idx.len(), FEATURES)
}

/// Run every check and pilot; write `check.json`; return the report.
pub fn run_check(opts: &CheckOptions) -> Result<CheckReport> {
    let start = std::time::Instant::now();
    let assets = crate::problems::mini::MiniAssets::open(opts.assets.as_deref())?;
    let nets = MiniNets::shared(Some(&assets.dir))?;
    let data = FashionMnist::load(opts.data_dir.as_deref())?;
    let splits = Splits::new(&data, None, None, 5000);
    let e = if opts.quick { splits.e.head(500) } else { splits.e.clone() };
    let (x, labels): (Vec<f32>, Vec<usize>) =
        (e.all_pixels(&data), e.all_labels(&data).into_iter().map(|l| l as usize).collect());
    let mut checks = Vec::new();
    let mut add = |name: &str, value: f64, threshold: &str, pass: bool| {
        checks.push(Check { name: name.into(), value, threshold: threshold.into(), pass })
    };
    // Reconstruction and accuracies on E.
    let recon = map_rows(&x, PIXELS, 1024, &|t| nets.ae.reconstruct(t))?;
    let mse = recon.iter().zip(&x).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / x.len() as f64;
    add("ae_test_mse_per_pixel", mse, "≤ 0.015", mse <= 0.015);
    let lb = map_rows(&x, PIXELS, 1024, &|t| nets.clf_b.logits(t))?;
    let acc_b = accuracy(&lb, &labels);
    add("clf_b_accuracy_test", acc_b, "≥ 0.89", acc_b >= 0.89);
    let lbr = map_rows(&recon, PIXELS, 1024, &|t| nets.clf_b.logits(t))?;
    let acc_br = accuracy(&lbr, &labels);
    add("clf_b_accuracy_reconstructions", acc_br, "≥ 0.85", acc_br >= 0.85);
    let la = map_rows(&x, PIXELS, 1024, &|t| nets.clf_a.logits(t))?;
    let acc_a = accuracy(&la, &labels);
    add("clf_a_accuracy_test", acc_a, "≥ 0.86", acc_a >= 0.86);
    let gold = map_rows(&x, PIXELS, 1024, &|t| nets.style_a.gold_ink(t))?;
    for (name, head) in [("style_a_r2_vs_gold", &nets.style_a), ("style_b_r2_vs_gold", &nets.style_b)] {
        let clf: &dyn Classifier = if name.starts_with("style_a") { &nets.clf_a } else { &nets.clf_b };
        let pred = map_rows(&x, PIXELS, 1024, &|t| head.score(clf, t))?;
        let r2 = r_squared(&pred, &gold);
        add(name, r2, "∈ [0.5, 0.9]", (0.5..=0.9).contains(&r2));
    }

    // CFG pilot: DDIM samples of all ten classes per w.
    let per = if opts.quick { 4 } else { 32 };
    let style_a = crate::problems::mini::rewards::MiniReward::new(MiniRewardKind::StyleA, None, nets.clone())?;
    let all: Vec<usize> = (0..CLASSES).collect();
    let mut cfg_pilot = Vec::new();
    for (i, w) in [1.0, 1.5, 2.0, 3.0, 4.0].into_iter().enumerate() {
        let d = draw(&nets, w, &all, &style_a, "{ method: ddim }", CLASSES * per, 100 + i as u64)?;
        let lb = map_rows(&d.images, PIXELS, 1024, &|t| nets.clf_b.logits(t))?;
        let cos: f64 = (0..CLASSES)
            .map(|c| per_class_cos(&nets, &d.images, &d.labels, c, usize::MAX))
            .collect::<Result<Vec<_>>>()?
            .iter()
            .sum::<f64>()
            / CLASSES as f64;
        cfg_pilot.push(CfgRow { w, acc_b: accuracy(&lb, &d.labels), pairwise_cos: cos });
    }
    let cfg_chosen = cfg_pilot.iter().find(|r| r.acc_b >= 0.85).map(|r| r.w);
    let frozen = cfg_pilot.iter().find(|r| r.w == MINI_CFG).map(|r| r.acc_b).unwrap_or(f64::NAN);
    add("cfg_samples_b_accuracy_at_frozen_w", frozen, "≥ 0.85", frozen >= 0.85);

    // σ_r of T1 and the unguided baseline of every reward (1,024 samples).
    let n_sigma = if opts.quick { 40 } else { 1024 };
    let t1 = draw(&nets, MINI_CFG, &T1_CLASSES, &style_a, "{ method: ddim }", n_sigma, 1)?;
    let base = all_rewards(&nets, &t1)?;
    let t1_unguided: Vec<(String, f64, f64)> = base
        .iter()
        .map(|(k, v)| {
            let (m, s) = mean_sd(v);
            (k.name().to_string(), m, s)
        })
        .collect();
    let stat = |name: &str| t1_unguided.iter().find(|r| r.0 == name).map(|r| (r.1, r.2)).expect("every reward");
    let sigma_r_t1 = stat("style_a").1;
    // Diversity ratio per T1 class (unguided vs real E images of the class).
    let mut diversity_ratio = Vec::new();
    let mut recon_diversity_ratio = Vec::new();
    for c in T1_CLASSES {
        let gen = per_class_cos(&nets, &t1.images, &t1.labels, c, usize::MAX)?;
        let real = per_class_cos(&nets, &x, &labels, c, n_sigma / T1_CLASSES.len())?;
        diversity_ratio.push((c, gen / real));
        let rec = per_class_cos(&nets, &recon, &labels, c, n_sigma / T1_CLASSES.len())?;
        recon_diversity_ratio.push((c, rec / real));
    }
    let ratio = diversity_ratio.iter().map(|r| r.1).sum::<f64>() / diversity_ratio.len() as f64;
    add("unguided_vs_real_pairwise_cos_ratio", ratio, "∈ [0.8, 1.2]", (0.8..=1.2).contains(&ratio));
    // σ_r of T2 (∅ prompts, target cls_a[c*]).
    let mut sigma_r_t2 = Vec::new();
    for c in T2_TARGETS {
        let r = crate::problems::mini::rewards::MiniReward::new(MiniRewardKind::ClsA, Some(c), nets.clone())?;
        let d = draw(&nets, 0.0, &[], &r, "{ method: ddim }", n_sigma, 2)?;
        let xt = Tensor::from_slice(&d.images, (d.labels.len(), PIXELS), &Device::Cpu)?;
        let v: Vec<f64> = nets
            .reward_tensor(MiniRewardKind::ClsA, &xt, Some(&vec![c; d.labels.len()]))?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect();
        sigma_r_t2.push((c, mean_sd(&v).1));
    }

    // Over-optimisation pilot: DPS with a constant step on style_a, on the T1 prompts.
    let n_oo = if opts.quick { 10 } else { 160 };
    let b0 = draw(&nets, MINI_CFG, &T1_CLASSES, &style_a, "{ method: ddim }", n_oo, 3)?;
    let base0 = all_rewards(&nets, &b0)?;
    let mean_of = |v: &[(MiniRewardKind, Vec<f64>)], k: MiniRewardKind| {
        mean_sd(&v.iter().find(|r| r.0 == k).expect("every reward").1).0
    };
    let mut over_opt = Vec::new();
    for rho in [1.0, 3.0, 10.0, 30.0] {
        let d = draw(
            &nets,
            MINI_CFG,
            &T1_CLASSES,
            &style_a,
            &format!("{{ method: dps, step_size: constant, rho: {rho} }}"),
            n_oo,
            3,
        )?;
        let r = all_rewards(&nets, &d)?;
        let delta = |k| mean_of(&r, k) - mean_of(&base0, k);
        over_opt.push(OverOptRow {
            rho,
            d_style_a_sigma: delta(MiniRewardKind::StyleA) / sigma_r_t1,
            d_gold_ink_sigma: delta(MiniRewardKind::GoldInk) / stat("gold_ink").1,
            d_style_b_sigma: delta(MiniRewardKind::StyleB) / stat("style_b").1,
            d_cls_b: delta(MiniRewardKind::ClsB),
        });
    }
    let oo = over_opt
        .iter()
        .filter(|r| r.d_style_a_sigma >= 2.0)
        .find(|r| r.d_gold_ink_sigma < 0.5 * r.d_style_a_sigma || r.d_cls_b <= -0.5);
    add(
        "over_optimisation_pilot",
        oo.map(|r| r.rho).unwrap_or(f64::NAN),
        "some ρ: Δstyle_a ≥ 2σ_r and (Δgold < ½Δstyle_a in σ units or Δcls_b ≤ −0.5 nats); value = that ρ",
        oo.is_some(),
    );
    let pass = checks.iter().all(|c| c.pass);
    let report = CheckReport {
        assets: assets.dir.display().to_string(),
        code_version: crate::problems::mini::train::code_version(),
        quick: opts.quick,
        checks,
        cfg_pilot,
        cfg_chosen,
        cfg_frozen: MINI_CFG,
        sigma_r_t1,
        sigma_r_t2,
        t1_unguided,
        over_opt,
        diversity_ratio,
        recon_diversity_ratio,
        wall_s: start.elapsed().as_secs_f64(),
        pass,
    };
    let out = opts.out.clone().unwrap_or_else(|| assets.dir.join("check.json"));
    crate::numerics::write_atomic(&out, serde_json::to_string_pretty(&report).expect("json").as_bytes())?;
    Ok(report)
}

impl CheckReport {
    /// Human-readable summary.
    pub fn render(&self) -> String {
        let mut s =
            format!("FMNIST-align acceptance checks ({}{})\n", self.assets, if self.quick { ", quick" } else { "" });
        for c in &self.checks {
            s += &format!(
                "  [{}] {:<38} {:>9.4}  {}\n",
                if c.pass { "pass" } else { "FAIL" },
                c.name,
                c.value,
                c.threshold
            );
        }
        s += "  CFG pilot (w: B accuracy, pairwise φ_B cosine):";
        for r in &self.cfg_pilot {
            s += &format!("  {}: {:.3}, {:.3}", r.w, r.acc_b, r.pairwise_cos);
        }
        s += &format!(
            "\n  chosen w = {} (frozen {}); σ_r T1 (style_a) = {:.4}; σ_r T2 (cls_a[c]) = {}\n",
            self.cfg_chosen.map(|w| w.to_string()).unwrap_or_else(|| "none".into()),
            self.cfg_frozen,
            self.sigma_r_t1,
            self.sigma_r_t2.iter().map(|(c, v)| format!("[{c}] {v:.3}")).collect::<Vec<_>>().join(", ")
        );
        let per = |v: &[(usize, f64)]| v.iter().map(|(c, r)| format!("[{c}] {r:.2}")).collect::<Vec<_>>().join(" ");
        s += &format!(
            "  per-class diversity ratio vs real: unguided {}; AE reconstructions {}\n",
            per(&self.diversity_ratio),
            per(&self.recon_diversity_ratio)
        );
        s += "  over-optimisation pilot (DPS constant ρ: Δstyle_a/σ, Δgold/σ, Δstyle_b/σ, Δcls_b nats):\n";
        for r in &self.over_opt {
            s += &format!(
                "    ρ = {:<5} {:+.2} {:+.2} {:+.2} {:+.3}\n",
                r.rho, r.d_style_a_sigma, r.d_gold_ink_sigma, r.d_style_b_sigma, r.d_cls_b
            );
        }
        s += &format!(
            "  {} in {:.0} s\n",
            if self.pass { "all checks passed" } else { "SOME CHECKS FAILED" },
            self.wall_s
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quick check runs every stage and writes a complete `check.json` (sizes too small for the thresholds to
    /// mean anything; `alignbench mini check` runs the full sizes). Skips without assets or data.
    #[test]
    fn quick_check_writes_every_section() {
        if crate::problems::mini::MiniAssets::open(None).is_err() || FashionMnist::load(None).is_err() {
            crate::testing::missing(
                "needs assets/mini and the Fashion-MNIST package (apt-get install dataset-fashion-mnist)",
            );
            return;
        }
        let dir = std::env::temp_dir().join(format!("alignbench-check-{}", std::process::id()));
        let out = dir.join("check.json");
        let r = run_check(&CheckOptions { out: Some(out.clone()), quick: true, ..Default::default() }).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let back: CheckReport = serde_json::from_str(&text).unwrap();
        assert_eq!(text, serde_json::to_string_pretty(&r).unwrap());
        assert_eq!((back.checks.len(), back.pass), (r.checks.len(), r.pass));
        assert_eq!(r.checks.len(), 9);
        assert_eq!(r.cfg_pilot.len(), 5);
        assert_eq!(r.over_opt.len(), 4);
        assert!(r.sigma_r_t1 > 0.0 && r.sigma_r_t2.len() == 2);
        // Trained weights on the first 500 test images: reconstruction passes, accuracies are those of trained nets.
        let value = |name: &str| r.checks.iter().find(|c| c.name == name).map(|c| c.value).unwrap();
        assert!(r.checks.iter().any(|c| c.name == "ae_test_mse_per_pixel" && c.pass), "{r:?}");
        for name in ["clf_b_accuracy_test", "clf_a_accuracy_test"] {
            assert!(value(name) > 0.8, "{name}: {}", value(name));
        }
        assert!(r.render().contains("σ_r T1"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
