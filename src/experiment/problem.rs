//! Building the objects of a toy cell from its spec: the mixture, the quadratic reward, the exact tilt and the
//! denoiser.

use std::path::PathBuf;

use super::spec::{CellSpec, DenoiserKind, MethodSpec, ProblemSpec, RewardSpec};
use crate::diffusion::schedule::BetaSchedule;
use crate::diffusion::Denoiser;
use crate::rewards::quadratic::Quadratic;
use crate::toy::gmm::{AnalyticDenoiser, Gmm, Tilted};
use crate::toy::mlp::Mlp;
use crate::{Error, Result};

/// The toy problem of a cell.
pub struct ToyProblem {
    /// Data distribution.
    pub gmm: Gmm,
    /// Reward.
    pub reward: Quadratic,
    /// Exact tilted target.
    pub tilted: Tilted,
}

/// The quadratic rewards of the presets (toy.md §1).
pub fn preset_reward(name: &str) -> Result<Quadratic> {
    match name {
        "gmm1" => Quadratic::new(vec![vec![0.02, 0.0], vec![0.0, 2.0]], vec![0.0, 0.0], 0.0),
        "gmm2" => Quadratic::new(vec![vec![2.0, 0.0], vec![0.0, 0.2]], vec![0.0, 0.2], -0.1),
        other => Err(Error::config(format!("reward.preset: unknown preset `{other}`; use gmm1 or gmm2"))),
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
    pub fn build(c: &CellSpec) -> Result<Self> {
        let gmm = match &c.problem {
            ProblemSpec::Gmm { preset: Some(p), weights: None, means: None, covs: None } => Gmm::preset(p)?,
            ProblemSpec::Gmm { preset: None, weights: Some(w), means: Some(m), covs: Some(s) } => {
                Gmm::new(w.clone(), m.clone(), s.clone())?
            }
            _ => {
                return Err(Error::config(
                    "problem: give either `preset: gmm1|gmm2` or all of `weights`, `means` and `covs` (not both)",
                ))
            }
        };
        let reward = match &c.reward {
            RewardSpec::Quadratic { preset: Some(p), a: None, b: None, c: None } => preset_reward(p)?,
            RewardSpec::Quadratic { preset: None, a: Some(a), b: Some(b), c: cc } => {
                Quadratic::new(a.clone(), b.clone(), cc.unwrap_or(0.0))?
            }
            _ => {
                return Err(Error::config(
                    "reward: give either `preset: gmm1|gmm2` or `a` and `b` (and optionally `c`), not both",
                ))
            }
        };
        let tilted = gmm.tilt(&reward, c.alpha)?;
        Ok(ToyProblem { gmm, reward, tilted })
    }

    /// Path of the MLP weights for this cell.
    pub fn mlp_path(&self, c: &CellSpec) -> Result<PathBuf> {
        match (&c.mlp_weights, &c.problem) {
            (Some(p), _) => Ok(PathBuf::from(p)),
            (None, ProblemSpec::Gmm { preset: Some(p), .. }) => {
                Ok(assets_dir().join("toy").join(format!("{p}-mlp.safetensors")))
            }
            (None, _) => {
                Err(Error::config("mlp_weights: a custom problem with `denoiser: mlp` needs `mlp_weights: <path>`"))
            }
        }
    }

    /// The denoiser the cell samples with (the `oracle` method uses the exact ε of the tilted mixture).
    pub fn denoiser(&self, c: &CellSpec) -> Result<Box<dyn Denoiser>> {
        if matches!(c.method, MethodSpec::Oracle(_)) {
            return Ok(Box::new(AnalyticDenoiser::new(self.tilted.gmm.clone(), BetaSchedule::Linear)));
        }
        Ok(match c.denoiser {
            DenoiserKind::Analytic => Box::new(AnalyticDenoiser::new(self.gmm.clone(), BetaSchedule::Linear)),
            DenoiserKind::Mlp => {
                let m = Mlp::load(&self.mlp_path(c)?)?;
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

/// Hex sha256 of bytes (weights manifests and checksums).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
