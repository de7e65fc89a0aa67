//! The toy as a [`Problem`]: a Gaussian mixture (a preset or explicit weights, means and covariances, toy.md §1)
//! with a point reward. Its cells sample in ℝ^d with the analytic ε (or the learned MLP, or — for `oracle` — the
//! exact ε of the tilted mixture) and are judged against the exact tilted target (toy.md §7): EMD to target
//! samples with its noise floor, mode TV, the exact E_tar[r] and log Z. The target's density on a grid is stored
//! once per (problem, reward, α) for the report's sample panels.

use std::collections::BTreeMap;
use std::path::Path;

use super::{GmmSpec, ToyProblem};
use crate::diffusion::schedule::{BetaSchedule, Grid};
use crate::diffusion::{Decoder, Denoiser, Identity};
use crate::finetune::backprop::{self, BackpropDefaults};
use crate::finetune::{rl, TrainStats};
use crate::methods::{MethodSpec, Provides};
use crate::metrics::emd::emd_protocol;
use crate::metrics::mode_tv;
use crate::models::mlp::Mlp;
use crate::numerics::sha256_hex;
use crate::problems::core::{backprop_key, cached_training, training_key, Evaluation, Instance, Pooled, SampleDump};
use crate::problems::setting::{DenoiserKind, Setting};
use crate::problems::Problem;
use crate::rewards::Reward;
use crate::rng::{Purpose, Streams};
use crate::samplers::run::Sampled;
use crate::{Error, Result};

/// Seconds per row of (denoiser forward, denoiser VJP incl. its forward, reward VJP, reward forward), measured
/// with `--release --threads 1` on the project's 2-core machine (GMM1, 300 groups × 100 particles × 100 steps:
/// DDIM, TDS and MPGD cells; the analytic 9-component ε and the AVX2 MLP cost the same to within 5 %).
pub const TOY_ROW_SECONDS: [f64; 4] = [1.7e-7, 3.9e-7, 1.5e-8, 1.2e-8];

impl Problem for GmmSpec {
    fn label(&self) -> String {
        self.preset.clone().unwrap_or_else(|| "custom".into())
    }

    fn denoiser_label(&self, s: &Setting) -> String {
        if s.method.method().info().needs.exact_tilt {
            "exact_tilted".into()
        } else {
            format!("{:?}", s.denoiser).to_lowercase()
        }
    }

    fn beta_schedule(&self) -> BetaSchedule {
        BetaSchedule::Linear
    }

    fn row_seconds(&self, _s: &Setting) -> [f64; 4] {
        TOY_ROW_SECONDS
    }

    fn state_dim(&self, _s: &Setting) -> usize {
        match (&self.preset, &self.means) {
            (Some(p), _) => crate::problems::toy::gmm::Gmm::preset(p).map_or(1, |g| g.d),
            (None, Some(m)) => m.first().map_or(1, Vec::len),
            (None, None) => 1,
        }
    }

    fn validate(&self, c: &Setting) -> Result<()> {
        if c.metrics.sir.is_some() {
            return Err(Error::config(
                "metrics.sir: the SIR reference is for `problem: { kind: mini }` (the toy has the exact target); \
                 remove it",
            ));
        }
        // Builds the mixture, the reward and the exact tilt: shape errors and non-normalisable tilts surface here.
        let p = ToyProblem::build(self, c)?;
        let info = c.method.method().info();
        // Both toy denoisers have VJPs; the learned MLP is the trainable one.
        let provides = Provides {
            reward_grad: p.reward.differentiable(),
            denoiser_vjp: true,
            trainable_denoiser: c.denoiser == DenoiserKind::Mlp,
            exact_tilt: true,
        };
        info.needs
            .check(info.name, provides)
            .map_err(|e| Error::config(format!("{e} (reward: `{}`, {})", c.reward.kind(), p.reward.name())))?;
        if info.needs.exact_tilt {
            p.exact()?;
        }
        if c.denoiser == DenoiserKind::Mlp && !info.needs.exact_tilt {
            let path = self.mlp_path(c)?;
            if !path.exists() {
                return Err(Error::config(format!(
                    "denoiser: mlp needs weights at {}; train them with `alignbench train toy-mlp --preset {}` or set `mlp_weights:`",
                    path.display(),
                    self.label()
                )));
            }
        }
        Ok(())
    }

    fn instance<'a>(&'a self, s: &'a Setting, cache: Option<&Path>) -> Result<Box<dyn Instance + 'a>> {
        let prob = ToyProblem::build(self, s)?;
        let tuned = if s.method.is_fine_tuning() { Some(fine_tune(self, s, &prob, cache)?) } else { None };
        let den = match &tuned {
            Some(_) => None,
            None => Some(prob.denoiser(self, s)?),
        };
        Ok(Box::new(ToyInstance { spec: self, s, prob, den, tuned }))
    }
}

/// Train the fine-tuning method of a cell on a copy of its learned MLP, or load the weights a previous run cached
/// under `cache` ([`cached_training`], keyed by [`training_key`]).
pub fn fine_tune(spec: &GmmSpec, s: &Setting, prob: &ToyProblem, cache: Option<&Path>) -> Result<(Mlp, TrainStats)> {
    let path = spec.mlp_path(s)?;
    let bytes = std::fs::read(&path).map_err(|e| Error::file(&path, format!("cannot read the pretrained MLP: {e}")))?;
    let pre = Mlp::load(&path)?;
    let method = match &s.method {
        MethodSpec::Backprop(c) => backprop_key(&c.resolve(&BackpropDefaults::TOY)),
        other => serde_json::to_value(other).expect("json"),
    };
    let key_doc = training_key(spec.tagged(), s, method, &sha256_hex(&bytes));
    let train = || {
        let grid = Grid::new(BetaSchedule::Linear, s.grid, s.steps);
        let streams = Streams::new(s.seed);
        match &s.method {
            MethodSpec::Rl(c) => rl::train(&pre, prob.reward.as_ref(), &grid, s.eta, s.alpha, c, streams),
            MethodSpec::Backprop(c) => {
                let r = c.resolve(&BackpropDefaults::TOY);
                backprop::train(&pre, prob.reward.as_ref(), &grid, s.eta, s.alpha, &r, streams)
            }
            other => Err(Error::config(format!("{}: not a fine-tuning method", other.name()))),
        }
    };
    cached_training(cache, s.method.name(), &key_doc, Mlp::load, |m: &Mlp, w| m.save(w), train)
}

/// A toy cell's models.
struct ToyInstance<'a> {
    spec: &'a GmmSpec,
    s: &'a Setting,
    prob: ToyProblem,
    den: Option<Box<dyn Denoiser>>,
    tuned: Option<(Mlp, TrainStats)>,
}

impl Instance for ToyInstance<'_> {
    fn denoiser(&self) -> &dyn Denoiser {
        match (&self.tuned, &self.den) {
            (Some((mlp, _)), _) => mlp,
            (None, Some(d)) => d.as_ref(),
            (None, None) => unreachable!("a toy instance has a denoiser or fine-tuned weights"),
        }
    }

    fn decoder(&self) -> &dyn Decoder {
        &Identity
    }

    fn reward(&self) -> &dyn Reward {
        self.prob.reward.as_ref()
    }

    fn training(&self) -> Option<&TrainStats> {
        self.tuned.as_ref().map(|t| &t.1)
    }

    fn evaluate(&self, sampled: &Sampled, m: &mut BTreeMap<String, f64>) -> Result<Evaluation> {
        let (spec, prob) = (self.s, &self.prob);
        let streams = Streams::new(spec.seed);
        let d = prob.gmm.d;
        let Pooled { x: pool, w, rewards, finite, non_finite_frac, .. } = Pooled::new(sampled, d);
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
        m.insert("reward_mean".into(), reward_mean);
        m.insert("non_finite_frac".into(), non_finite_frac);
        let mut view = None;
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
            if d == 2 {
                view = Some(self.target_view());
            }
        }
        let keep = spec.metrics.keep_samples.min(pool.len() / d);
        Ok(Evaluation { samples: SampleDump { d, x: pool[..keep * d].to_vec() }, view, ..Default::default() })
    }
}

impl ToyInstance<'_> {
    /// The exact tilted target of a 2-D cell for the report's sample panels: its density on a 120 × 120 grid over
    /// the data and the target (±3 sd, padded) and a draw of exact target samples, keyed by (problem, reward, α).
    fn target_view(&self) -> (String, serde_json::Value) {
        let tilted = self.prob.tilted.as_ref().expect("a tilted target");
        let mut lo = [f64::INFINITY; 2];
        let mut hi = [f64::NEG_INFINITY; 2];
        for g in [&self.prob.gmm, &tilted.gmm] {
            for (m, c) in g.means.iter().zip(&g.covs) {
                for k in 0..2 {
                    let sd = c[k * 2 + k].sqrt();
                    lo[k] = lo[k].min(m[k] - 3.0 * sd - 0.5);
                    hi[k] = hi[k].max(m[k] + 3.0 * sd + 0.5);
                }
            }
        }
        let (nx, ny) = (120usize, 120usize);
        let mut density = Vec::with_capacity(nx * ny);
        for j in 0..ny {
            for i in 0..nx {
                let x = lo[0] + (i as f64 + 0.5) * (hi[0] - lo[0]) / nx as f64;
                let y = lo[1] + (j as f64 + 0.5) * (hi[1] - lo[1]) / ny as f64;
                density.push(tilted.gmm.log_density(&[x, y]).exp());
            }
        }
        let n_pts = self.s.metrics.keep_samples.max(200);
        let samples = tilted.gmm.sample(&mut Streams::new(0).rng(Purpose::Target, 9_999, 0), n_pts);
        let key_doc = serde_json::json!({
            "problem": self.spec.tagged(),
            "reward": serde_json::to_value(&self.s.reward).expect("json"),
            "alpha": self.s.alpha,
        });
        let key = sha256_hex(&serde_json::to_vec(&key_doc).expect("json"))[..16].to_string();
        let doc = serde_json::json!({
            "x": [lo[0], hi[0]], "y": [lo[1], hi[1]], "nx": nx, "ny": ny, "density": density, "samples": samples,
        });
        (key, doc)
    }
}
