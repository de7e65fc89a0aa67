//! The optional **SIR reference** of the tilted target on the FMNIST-align problem (mini-benchmark.md §7, hypothesis
//! H4: at fixed α, more particles should move DAS toward p_tar(x|c) ∝ p(x|c)·exp(r(x)/α)).
//!
//! With `metrics: { sir: N }` a mini cell draws N unguided samples per prompt class with the cell's own denoiser,
//! CFG scale, grid, η and steps (DDIM, one particle per group; the stream seed is the cell's seed plus
//! [`SIR_SEED_OFFSET`], so the reference never shares noise with a DDIM cell of the same seed), decodes them and keeps
//! their φ_B features and target rewards. For a cell of strength α the reference weights are
//! w_i ∝ exp(r_i/α) within each prompt (self-normalised importance sampling with the unguided model as proposal), and
//! the cell reports:
//!
//! - `sir_ess`: the smallest per-prompt ESS = 1/Σw_i²; the reference is **valid only if `sir_ess` ≥ 200**
//!   (`sir_valid` = 1, else 0 and the other `sir_*` values are reported but should not be read as a target);
//! - `sir_target`: the SIR estimate of E_tar[r] (per prompt Σ w_i r_i, averaged with the cell's prompt counts), and
//!   `target_gap_sir` = the cell's `reward_mean` − `sir_target` (negative: the cell under-tilts);
//! - `emd_sir`: exact EMD (assignment) in φ_B space between the cell's outputs and as many SIR draws (multinomial
//!   resampling, the same count per prompt as the cell), pooled over prompts; `emd_sir_floor`: the same between two
//!   independent SIR resamples — the noise floor a perfect sampler would reach at this output count.
//!
//! The reference of a (problem, reward, grid, seed, N) is computed once per process and shared by every cell.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::spec::{MiniProblem, MiniSpec};
use crate::diffusion::schedule::Grid;
use crate::diffusion::Decoder;
use crate::ledger::Ledger;
use crate::metrics::emd::emd;
use crate::problems::core::Pooled;
use crate::problems::mini::data::PIXELS;
use crate::problems::mini::map_rows;
use crate::problems::mini::models::{Classifier, FEATURES};
use crate::problems::setting::Setting;
use crate::problems::Problem;
use crate::rewards::weights::shared;
use crate::rng::{Purpose, Streams};
use crate::samplers::logspace::{ess, normalized};
use crate::samplers::method::Method;
use crate::samplers::resampling::Resampler;
use crate::samplers::run::sample_groups_cond;
use crate::{Error, Result};

/// Offset added to the cell's seed for the reference's sampling streams.
pub const SIR_SEED_OFFSET: u64 = 1_000_003;
/// Smallest per-prompt ESS at which the reference counts as valid (spec §7).
pub const SIR_MIN_ESS: f64 = 200.0;

/// Unguided draws of one prompt: φ_B rows and target rewards.
struct PromptDraw {
    label: Option<usize>,
    phi: Vec<f32>,
    r: Vec<f64>,
}

/// The unguided reference draws of every prompt of a problem.
pub struct SirReference {
    prompts: Vec<PromptDraw>,
}

impl SirReference {
    /// Draw `n` unguided samples per prompt of the cell's problem (or reuse the process-wide copy).
    pub fn shared(p: &MiniProblem, problem: &MiniSpec, spec: &Setting, n: usize) -> Result<Arc<SirReference>> {
        let key_doc = serde_json::json!({
            "problem": problem.tagged(),
            "reward": serde_json::to_value(&spec.reward).expect("json"),
            "steps": spec.steps, "eta": spec.eta, "grid": serde_json::to_value(spec.grid).expect("json"),
            "seed": spec.seed, "n": n,
        });
        let key = format!("mini-sir:{:p}:{key_doc}", Arc::as_ptr(&p.nets));
        shared(&key, || Self::draw(p, problem, spec, n))
    }

    fn draw(p: &MiniProblem, problem: &MiniSpec, spec: &Setting, n: usize) -> Result<SirReference> {
        let grid = Grid::new(problem.beta_schedule(), spec.grid, spec.steps);
        let ledger = Ledger::default();
        let model = crate::samplers::Model {
            denoiser: &p.denoiser,
            decoder: &p.decoder,
            reward: p.reward.as_ref(),
            grid: &grid,
            eta: spec.eta,
            ledger: &ledger,
            streams: Streams::new(spec.seed.wrapping_add(SIR_SEED_OFFSET)),
        };
        let ddim = crate::samplers::ddim::DdimConfig { particles: 1 };
        let make = || ddim.sampler(1.0);
        let n_prompts = p.classes.len().max(1);
        eprintln!("SIR reference: {} unguided samples per prompt × {n_prompts} prompt(s) …", n);
        let sampled = sample_groups_cond(&model, 1, n * n_prompts, &p.classes, &make, &|_| {})?;
        let d = crate::problems::mini::LATENT;
        let pooled = Pooled::new(&sampled, d);
        let keep = pooled.finite_rows();
        let z: Vec<f32> = keep.iter().flat_map(|&i| pooled.x[i * d..(i + 1) * d].iter().copied()).collect();
        let mut images = Vec::new();
        p.decoder.decode(&z, &mut images)?;
        let phi = map_rows(&images, PIXELS, 1024, &|t| p.nets.clf_b.features(t))?;
        let mut prompts: Vec<PromptDraw> = (0..n_prompts)
            .map(|k| PromptDraw { label: p.classes.get(k).copied(), phi: Vec::new(), r: Vec::new() })
            .collect();
        for (j, &i) in keep.iter().enumerate() {
            let k = pooled.group[i] % n_prompts;
            prompts[k].phi.extend_from_slice(&phi[j * FEATURES..(j + 1) * FEATURES]);
            prompts[k].r.push(pooled.rewards[i]);
        }
        if prompts.iter().any(|q| q.r.is_empty()) {
            return Err(Error::numeric("SIR reference", "every unguided draw of a prompt diverged"));
        }
        for q in &prompts {
            let (m, sd) = crate::finetune::mean_std(&q.r);
            eprintln!("  prompt {:?}: {} draws, target reward {m:.4} ± {sd:.4} (sd)", q.label, q.r.len());
        }
        Ok(SirReference { prompts })
    }

    /// The `sir_*` metrics of a cell of strength `alpha` whose finite outputs have φ_B rows `phi`, prompt labels
    /// `labels`, and output-weighted target mean `reward_mean`. `seed` keys the resampling stream.
    pub fn metrics(
        &self,
        alpha: f64,
        phi: &[f32],
        labels: &[Option<usize>],
        reward_mean: f64,
        seed: u64,
    ) -> Result<BTreeMap<String, f64>> {
        if !(alpha > 0.0) {
            return Err(Error::config("metrics.sir: the SIR reference needs α > 0 (the tilt exp(r/α))"));
        }
        let streams = Streams::new(seed);
        let mut rng = streams.rng(Purpose::Metric, 0x5152, 0);
        let (mut ess_min, mut target, mut total) = (f64::INFINITY, 0.0, 0usize);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for q in &self.prompts {
            let count = labels.iter().filter(|l| **l == q.label).count();
            let logw: Vec<f64> = q.r.iter().map(|r| r / alpha).collect();
            ess_min = ess_min.min(ess(&logw));
            if count == 0 {
                continue;
            }
            let w = normalized(&logw);
            target += count as f64 * w.iter().zip(&q.r).map(|(w, r)| w * r).sum::<f64>();
            total += count;
            for out in [&mut a, &mut b] {
                for i in Resampler::Multinomial.ancestors(&w, count, &mut rng) {
                    out.extend_from_slice(&q.phi[i * FEATURES..(i + 1) * FEATURES]);
                }
            }
        }
        if total != labels.len() {
            return Err(Error::config("metrics.sir: some outputs carry a prompt the SIR reference has not drawn"));
        }
        let mut m = BTreeMap::new();
        m.insert("sir_ess".into(), ess_min);
        m.insert("sir_valid".into(), if ess_min >= SIR_MIN_ESS { 1.0 } else { 0.0 });
        if total > 0 {
            let target = target / total as f64;
            m.insert("sir_target".into(), target);
            m.insert("target_gap_sir".into(), reward_mean - target);
            m.insert("emd_sir".into(), emd(phi, &a, FEATURES)?);
            m.insert("emd_sir_floor".into(), emd(&b, &a, FEATURES)?);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(r: Vec<f64>) -> SirReference {
        let phi = r.iter().flat_map(|&v| std::iter::repeat_n(v as f32, FEATURES)).collect();
        SirReference { prompts: vec![PromptDraw { label: Some(3), phi, r }] }
    }

    #[test]
    fn weights_ess_and_target_follow_the_tilt() {
        // Two reward values, equal counts: weights ∝ exp(r/α) give E_tar[r] = (0·1 + 1·e)/(1 + e) at α = 1.
        let r: Vec<f64> = (0..400).map(|i| (i % 2) as f64).collect();
        let sir = reference(r);
        let out: Vec<f32> = vec![1.0; 10 * FEATURES];
        let labels = vec![Some(3); 10];
        let m = sir.metrics(1.0, &out, &labels, 1.0, 0).unwrap();
        let e = std::f64::consts::E;
        assert!((m["sir_target"] - e / (1.0 + e)).abs() < 1e-12);
        // ESS of 200 weights ∝ 1 and 200 ∝ e: (Σw)²/Σw² = (200(1+e))²/(200(1+e²)).
        let ess = (200.0 * (1.0 + e)).powi(2) / (200.0 * (1.0 + e * e));
        assert!((m["sir_ess"] - ess).abs() < 1e-9, "{}", m["sir_ess"]);
        assert_eq!(m["sir_valid"], 1.0);
        assert!((m["target_gap_sir"] - (1.0 - e / (1.0 + e))).abs() < 1e-12);
        // Points at 1 vs resampled points at 0 or 1 (distance √128 per mismatched point): EMD = √128·(share of 0s).
        assert!(m["emd_sir"] >= 0.0 && m["emd_sir"] <= (FEATURES as f64).sqrt());
        // Deterministic in the seed.
        assert_eq!(m, sir.metrics(1.0, &out, &labels, 1.0, 0).unwrap());
    }

    #[test]
    fn a_strong_tilt_collapses_the_ess_and_is_flagged() {
        let r: Vec<f64> = (0..1000).map(|i| i as f64 / 1000.0).collect();
        let m = reference(r).metrics(0.0002, &[0.0; FEATURES], &[Some(3)], 0.0, 1).unwrap();
        assert!(m["sir_ess"] < 2.0);
        assert_eq!(m["sir_valid"], 0.0);
        // The tilted mean sits at the top of the draws.
        assert!(m["sir_target"] > 0.99);
    }

    #[test]
    fn outputs_of_an_undrawn_prompt_are_an_error() {
        let sir = reference(vec![0.0; 10]);
        let e = sir.metrics(1.0, &[0.0; FEATURES], &[Some(4)], 0.0, 0).unwrap_err();
        assert!(e.to_string().contains("metrics.sir"), "{e}");
    }
}
