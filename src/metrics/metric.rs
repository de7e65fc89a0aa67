//! Typed metrics: every metric key a run writes (`metrics.csv` / `metrics.parquet`, a cell's `metrics`) with its
//! unit and its direction (higher or lower is better, or neither), so tables, Pareto fronts and any "best" marking
//! read the direction from one registry instead of literals.
//!
//! Most keys are fixed names ([`metric`] looks them up); two families are matched by rule: `r_<label>` (the mean
//! of an evaluation reward over a cell's outputs; higher is better) and `r_<label>_sd` (its spread over the
//! outputs).

use std::fmt;

/// Which way a metric improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Larger values are better (a reward, an effective sample size, a diversity).
    HigherIsBetter,
    /// Smaller values are better (a distance, a cost, a time).
    LowerIsBetter,
    /// Neither: a reference value, a spread, a count or an estimate that should match something else.
    Neither,
}

impl Direction {
    /// The phrase a figure axis or a caption shows: "higher is better", "lower is better" or "" for neither.
    pub fn phrase(self) -> &'static str {
        match self {
            Direction::HigherIsBetter => "higher is better",
            Direction::LowerIsBetter => "lower is better",
            Direction::Neither => "",
        }
    }

    /// Whether `a` is better than `b` (false for [`Direction::Neither`] and for non-finite values).
    pub fn better(self, a: f64, b: f64) -> bool {
        if !(a.is_finite() && b.is_finite()) {
            return false;
        }
        match self {
            Direction::HigherIsBetter => a > b,
            Direction::LowerIsBetter => a < b,
            Direction::Neither => false,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::HigherIsBetter => "higher",
            Direction::LowerIsBetter => "lower",
            Direction::Neither => "neither",
        })
    }
}

/// One metric a run writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// The key in `metrics.csv` (for a family, its pattern, e.g. `r_<label>`).
    pub name: &'static str,
    /// Unit of the value.
    pub unit: &'static str,
    /// Which way it improves.
    pub direction: Direction,
    /// What it measures, in a few words.
    pub about: &'static str,
}

const fn m(name: &'static str, unit: &'static str, direction: Direction, about: &'static str) -> Metric {
    Metric { name, unit, direction, about }
}

use Direction::{HigherIsBetter as Higher, LowerIsBetter as Lower, Neither};

/// Every fixed metric key.
pub const METRICS: &[Metric] = &[
    // Toy: distances to the exact tilted target.
    m("emd", "data units", Lower, "exact EMD to fresh exact target samples (mean over repeats)"),
    m("emd_std", "data units", Neither, "spread of the EMD over its repeats"),
    m("emd_floor", "data units", Neither, "target against target under the same EMD protocol (the noise floor)"),
    m("emd_floor_std", "data units", Neither, "spread of the noise floor over its repeats"),
    m("mode_tv", "probability", Lower, "total variation between mode occupancy and the target's mode weights"),
    m("reward_target", "reward", Neither, "exact E_tar[r] under the tilted target"),
    m("log_z", "nats", Neither, "exact log normalising constant of the tilted target"),
    m("log_z_hat", "nats", Neither, "SMC estimate of log Z (mean over prompt groups)"),
    // Every problem.
    m("reward_mean", "reward", Higher, "output-weighted mean of the guiding reward"),
    m("non_finite_frac", "fraction", Lower, "weight of the outputs with a non-finite coordinate"),
    m("non_finite_events", "count", Lower, "non-finite weight events over the sampling steps"),
    m("resamplings", "count", Neither, "resampling events over the sampling steps"),
    m("ess_mean", "fraction of K", Higher, "mean effective sample size before resampling"),
    m("wall_s", "s", Lower, "wall time of the cell"),
    // Method-specific figures (samplers' per-group stats, mean over groups).
    m("tree_nodes", "nodes per group", Neither, "DTS: nodes of a group's final tree"),
    m("tree_mb", "MB per group", Lower, "DTS: memory of a group's final tree"),
    m("tree_rollouts", "count per group", Neither, "DTS: completed rollouts (iterations) per group"),
    m("mcmc_accept", "fraction", Neither, "Ψ-sampler: acceptance rate of the pCNL chain on the initial noise"),
    // The compute ledger, per prompt group.
    m("nfe", "rows per group", Lower, "denoiser forward rows"),
    m("vjp_denoiser", "rows per group", Lower, "VJPs through reward∘decoder∘denoiser"),
    m("vjp_reward", "rows per group", Lower, "VJPs through reward∘decoder only"),
    m("decoder_calls", "rows per group", Lower, "decoder forwards"),
    m("reward_calls", "rows per group", Lower, "reward forwards"),
    // Fine-tuning methods.
    m("train_s", "s", Lower, "fine-tuning wall time"),
    m("train_nfe", "rows", Lower, "denoiser forward rows spent fine-tuning"),
    m("train_vjp_denoiser", "rows", Lower, "denoiser VJPs spent fine-tuning"),
    m("train_reward", "reward", Higher, "mean reward over the last fine-tuning updates"),
    m("train_kl", "nats", Neither, "KL regulariser over the last fine-tuning updates"),
    m("train_loss", "loss", Lower, "final fine-tuning loss"),
    // FMNIST-align.
    m("acc_b", "fraction", Higher, "classifier-B accuracy on the prompt class"),
    m("class_entropy_b", "nats", Neither, "entropy of classifier B's class histogram of the outputs"),
    m("tce_pooled", "nats", Higher, "truncated entropy of φ_B over every output"),
    m("tce_prompt", "nats", Higher, "truncated entropy of φ_B per prompt (K = 3)"),
    m("pairwise_cos", "cosine distance", Higher, "mean pairwise cosine distance of φ_B per prompt"),
    m("lpips_b", "distance", Higher, "LPIPS-style distance on classifier B's conv taps per prompt"),
    m("kid_x1000", "KID × 1000", Lower, "kernel inception distance to the test images (φ_B)"),
    m("sir_ess", "samples", Higher, "smallest per-class ESS of the SIR reference"),
    m("sir_valid", "0 or 1", Higher, "1 iff the SIR reference's ESS is at least 200"),
    m("sir_target", "reward", Neither, "SIR estimate of the tilted target's mean reward"),
    m("target_gap_sir", "reward", Neither, "mean target reward minus the SIR estimate (0 = on target)"),
    m("emd_sir", "φ_B units", Lower, "exact EMD in φ_B space to as many SIR draws"),
    m("emd_sir_floor", "φ_B units", Neither, "two SIR draws against each other (the noise floor)"),
    // Stable Diffusion.
    m("n_prompts", "count", Neither, "prompts of the cell's draw"),
    m("sample_side", "pixels", Neither, "side of the kept sample thumbnails"),
    m("peak_mem_gb", "GB", Lower, "peak accelerator memory"),
    m("sample_s", "s", Lower, "sampling wall time of the cell (models loaded, evaluation excluded)"),
    m("s_per_image", "s", Lower, "sampling seconds per output image (sample_s / groups)"),
    m("rows_per_eval", "rows", Neither, "denoiser rows per evaluation of one latent (2 with classifier-free guidance)"),
    m("random_weights", "0 or 1", Neither, "1: random-weight models, a cost figure only (no reward numbers)"),
    // FMNIST-align training manifests (`alignbench train mini`).
    m("final_train_loss", "loss", Lower, "mean loss over the last training steps"),
    m("clipped_steps", "count", Neither, "training steps whose gradient was clipped"),
    m("test_accuracy_reconstructions", "fraction", Higher, "classifier accuracy on autoencoder reconstructions"),
];

/// The family `r_<label>`: an evaluation reward's output-weighted mean.
pub const REWARD_FAMILY: Metric = m(
    "r_<label>",
    "the reward's own scale",
    Higher,
    "output-weighted mean of evaluation reward <label> (guide with one, evaluate with all)",
);

/// The family `r_<label>_sd`: an evaluation reward's spread over the outputs.
pub const REWARD_SD_FAMILY: Metric = m(
    "r_<label>_sd",
    "the reward's own scale",
    Neither,
    "output-weighted standard deviation of evaluation reward <label>",
);

/// The metric behind a key of `metrics.csv`; families by rule (`r_<label>_sd` before `r_<label>`). None for a key
/// this build does not know.
pub fn metric(name: &str) -> Option<&'static Metric> {
    if let Some(found) = METRICS.iter().find(|x| x.name == name) {
        return Some(found);
    }
    let label = name.strip_prefix("r_").filter(|l| !l.is_empty())?;
    match label.strip_suffix("_sd") {
        Some(l) if !l.is_empty() => Some(&REWARD_SD_FAMILY),
        _ => Some(&REWARD_FAMILY),
    }
}

/// The direction of `name` ([`Direction::Neither`] for an unknown key).
pub fn direction(name: &str) -> Direction {
    metric(name).map_or(Direction::Neither, |x| x.direction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_families_match() {
        for (i, a) in METRICS.iter().enumerate() {
            assert!(METRICS[i + 1..].iter().all(|b| b.name != a.name), "{} twice", a.name);
        }
        assert_eq!(metric("emd").unwrap().direction, Direction::LowerIsBetter);
        assert_eq!(metric("r_style_a"), Some(&REWARD_FAMILY));
        assert_eq!(metric("r_0.5*a+0.5*b"), Some(&REWARD_FAMILY));
        assert_eq!(metric("r_cls_a_sd"), Some(&REWARD_SD_FAMILY));
        assert_eq!(metric("r_"), None);
        assert_eq!(metric("nonsense"), None);
        assert_eq!(direction("nonsense"), Direction::Neither);
        assert!(Direction::LowerIsBetter.better(1.0, 2.0) && !Direction::LowerIsBetter.better(f64::NAN, 2.0));
        assert!(!Direction::Neither.better(1.0, 2.0));
    }

    /// Every metric key of the recorded smoke runs (toy, methods, mini: tests/golden/same-numbers/smoke) is known.
    #[test]
    fn every_smoke_metric_is_known() {
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/same-numbers/smoke");
        let mut seen = std::collections::BTreeSet::new();
        for exp in ["smoke-toy", "smoke-methods", "mini-smoke"] {
            let p = golden.join(exp).join("metrics.csv");
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let mut r = csv::Reader::from_reader(text.as_bytes());
            let col = r.headers().unwrap().iter().position(|h| h == "metric").expect("a metric column");
            for rec in r.records() {
                seen.insert(rec.unwrap()[col].to_string());
            }
        }
        // The timing rows are stripped from the recorded copies.
        seen.extend(["wall_s".to_string(), "train_s".to_string()]);
        let unknown: Vec<&String> = seen.iter().filter(|k| metric(k).is_none()).collect();
        assert!(unknown.is_empty(), "metric keys without a Metric: {unknown:?}");
        assert!(seen.len() > 30, "only {} keys", seen.len());
    }
}
