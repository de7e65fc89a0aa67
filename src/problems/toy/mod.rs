//! The Gaussian-mixture toy problems with exact tilted targets (toy.md): mixtures and the analytic denoiser
//! (`gmm`), the exact soft value (`oracle`), the trainer of the reference's learned MLP denoiser (`train`), and the
//! objects of a toy cell built from its spec: the mixture, the quadratic reward, the exact tilt and the denoiser.

pub mod cell;
pub mod gmm;
pub mod oracle;
pub mod train;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::diffusion::schedule::BetaSchedule;
use crate::diffusion::Denoiser;
use crate::models::mlp::Mlp;
use crate::problems::setting::{DenoiserKind, Setting};
use crate::rewards::onnx::OnnxReward;
use crate::rewards::quadratic::Quadratic;
use crate::rewards::spec::RewardSpec;
use crate::rewards::weighted_sum::WeightedSum;
use crate::rewards::weights::shared;
use crate::rewards::Reward;
use crate::{Error, Result};
use gmm::{AnalyticDenoiser, Gmm, Tilted};

/// `problem: { kind: gmm, … }`: a preset (`gmm1`, `gmm2`, `rare10`) or explicit weights, means and covariances.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GmmSpec {
    /// `gmm1`, `gmm2` or `rare10`.
    #[serde(default)]
    pub preset: Option<String>,
    /// Component weights.
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    /// Component means.
    #[serde(default)]
    pub means: Option<Vec<Vec<f64>>>,
    /// Component covariances.
    #[serde(default)]
    pub covs: Option<Vec<Vec<Vec<f64>>>>,
}

impl GmmSpec {
    /// Path of the MLP weights of a cell.
    pub fn mlp_path(&self, s: &Setting) -> Result<PathBuf> {
        match (&s.mlp_weights, &self.preset) {
            (Some(p), _) => Ok(PathBuf::from(p)),
            (None, Some(p)) => Ok(assets_dir().join("toy").join(format!("{p}-mlp.safetensors"))),
            (None, None) => {
                Err(Error::config("mlp_weights: a custom problem with `denoiser: mlp` needs `mlp_weights: <path>`"))
            }
        }
    }

    /// The spec as written in a cell (`{ kind: gmm, … }`), for cache keys.
    fn tagged(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("json");
        v["kind"] = "gmm".into();
        v
    }
}

/// The toy problem of a cell.
pub struct ToyProblem {
    /// Data distribution.
    pub gmm: Gmm,
    /// The reward aligned to.
    pub reward: Box<dyn Reward>,
    /// Exact tilted target — available when the reward is quadratic (or a weighted sum of quadratics); other
    /// rewards (e.g. `onnx`) get reward and ledger metrics only.
    pub tilted: Option<Tilted>,
}

/// The reward of a spec as a quadratic, when it is one (a weighted sum of quadratics is one).
pub fn as_quadratic(spec: &RewardSpec) -> Result<Option<Quadratic>> {
    Ok(match spec {
        RewardSpec::Quadratic { preset: Some(p), a: None, b: None, c: None } => Some(preset_reward(p)?),
        RewardSpec::Quadratic { preset: None, a: Some(a), b: Some(b), c: cc } => {
            Some(Quadratic::new(a.clone(), b.clone(), cc.unwrap_or(0.0))?)
        }
        RewardSpec::Quadratic { .. } => {
            return Err(Error::config(format!(
                "reward: give either `preset: {}` or `a` and `b` (and optionally `c`), not both",
                gmm::PRESETS.join("|")
            )))
        }
        RewardSpec::WeightedSum { terms } => {
            let mut acc: Option<(Vec<Vec<f64>>, Vec<f64>, f64)> = None;
            for t in terms {
                let Some(q) = as_quadratic(&t.reward)? else { return Ok(None) };
                let (a, b, c) = q.parts();
                let w = t.weight;
                acc = Some(match acc {
                    None => (
                        a.iter().map(|r| r.iter().map(|v| w * v).collect()).collect(),
                        b.iter().map(|v| w * v).collect(),
                        w * c,
                    ),
                    Some((sa, sb, sc)) => {
                        if sb.len() != b.len() {
                            return Err(Error::config("reward.terms: quadratic terms of different dimensions"));
                        }
                        (
                            sa.iter().zip(&a).map(|(x, y)| x.iter().zip(y).map(|(p, q)| p + w * q).collect()).collect(),
                            sb.iter().zip(&b).map(|(p, q)| p + w * q).collect(),
                            sc + w * c,
                        )
                    }
                });
            }
            match acc {
                Some((a, b, c)) => Some(Quadratic::new(a, b, c)?),
                None => return Err(Error::config("reward.terms: a weighted_sum needs at least one term")),
            }
        }
        _ => None,
    })
}

/// Build any reward that scores points in ℝ^`dim` (the toy's samples).
pub fn point_reward(spec: &RewardSpec, dim: usize) -> Result<Box<dyn Reward>> {
    if let Some(q) = as_quadratic(spec)? {
        if q.dim() != dim {
            return Err(Error::config(format!("reward: the quadratic has dimension {}, the problem {dim}", q.dim())));
        }
        return Ok(Box::new(q));
    }
    match spec {
        RewardSpec::Onnx(cfg) => {
            let key = format!("onnx:{}:{dim}:{:?}", cfg.path, cfg);
            Ok(Box::new(shared(&key, || OnnxReward::load(cfg, dim))?))
        }
        RewardSpec::WeightedSum { terms } => Ok(Box::new(WeightedSum::new(
            terms.iter().map(|t| Ok((t.weight, point_reward(&t.reward, dim)?))).collect::<Result<Vec<_>>>()?,
        )?)),
        other => Err(Error::config(format!(
            "reward: `{}` scores images, but problem `gmm` samples points in ℝ^{dim}; on the toy use `quadratic`, \
             `onnx` or a `weighted_sum` of them (image rewards need an image problem)",
            other.kind()
        ))),
    }
}

/// The quadratic rewards of the presets (toy.md §1).
pub fn preset_reward(name: &str) -> Result<Quadratic> {
    match name {
        "gmm1" => Quadratic::new(vec![vec![0.02, 0.0], vec![0.0, 2.0]], vec![0.0, 0.0], 0.0),
        "gmm2" => Quadratic::new(vec![vec![2.0, 0.0], vec![0.0, 0.2]], vec![0.0, 0.2], -0.1),
        // r(x) = −¼‖x − 4e₂‖²: A = ½I, b = A·4e₂, c = −½·bᵀ4e₂ (maximum 0 at the rare mode's mean).
        "rare10" => {
            let d = gmm::RARE10_DIM;
            let a = (0..d).map(|i| (0..d).map(|j| if i == j { 0.5 } else { 0.0 }).collect()).collect();
            let b = (0..d).map(|i| if i == 1 { 2.0 } else { 0.0 }).collect();
            Quadratic::new(a, b, -4.0)
        }
        other => {
            Err(Error::config(format!("reward.preset: unknown preset `{other}`; use {}", gmm::PRESETS.join(", "))))
        }
    }
}

/// Where the repository's assets live: `./assets` if present, else the crate's own folder.
pub fn assets_dir() -> PathBuf {
    let local = PathBuf::from("assets");
    if local.exists() {
        local
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets")
    }
}

impl ToyProblem {
    /// Build the mixture, reward and tilt of a cell.
    pub fn build(spec: &GmmSpec, c: &Setting) -> Result<Self> {
        let gmm = match spec {
            GmmSpec { preset: Some(p), weights: None, means: None, covs: None } => Gmm::preset(p)?,
            GmmSpec { preset: None, weights: Some(w), means: Some(m), covs: Some(s) } => {
                Gmm::new(w.clone(), m.clone(), s.clone())?
            }
            _ => {
                return Err(Error::config(format!(
                    "problem: give either `preset: {}` or all of `weights`, `means` and `covs` (not both)",
                    gmm::PRESETS.join("|")
                )))
            }
        };
        let tilted = match as_quadratic(&c.reward)? {
            Some(q) => Some(gmm.tilt(&q, c.alpha)?),
            None => None,
        };
        let reward = point_reward(&c.reward, gmm.d)?;
        Ok(ToyProblem { gmm, reward, tilted })
    }

    /// The exact tilted target, or an error saying why there is none.
    pub fn exact(&self) -> Result<&Tilted> {
        self.tilted.as_ref().ok_or_else(|| {
            Error::config(format!(
                "reward `{}` has no closed-form tilted target (only quadratic rewards do): the `oracle` method and \
                 target metrics need one",
                self.reward.name()
            ))
        })
    }

    /// The denoiser the cell samples with (the `oracle` method uses the exact ε of the tilted mixture).
    pub fn denoiser(&self, spec: &GmmSpec, c: &Setting) -> Result<Box<dyn Denoiser>> {
        if c.method.method().info().needs.exact_tilt {
            let t = self.exact()?;
            return Ok(Box::new(AnalyticDenoiser::new(t.gmm.clone(), BetaSchedule::Linear)));
        }
        Ok(match c.denoiser {
            DenoiserKind::Analytic => Box::new(AnalyticDenoiser::new(self.gmm.clone(), BetaSchedule::Linear)),
            DenoiserKind::Mlp => {
                let m = Mlp::load(&spec.mlp_path(c)?)?;
                if m.d != self.gmm.d {
                    return Err(Error::config(format!(
                        "mlp_weights: the network has dimension {}, the problem {}",
                        m.d, self.gmm.d
                    )));
                }
                Box::new(m)
            }
        })
    }
}
