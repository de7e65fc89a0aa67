//! The FMNIST-align problem's spec ([`MiniSpec`]) and the models of its cells ([`MiniProblem`]): the shared trained
//! networks, the ε-MLP with classifier-free guidance, the autoencoder's decoder and the reward (mini-benchmark.md
//! §4–§6).

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::data::PIXELS;
use super::rewards::{MiniNets, MiniReward, MiniRewardKind};
use super::{MiniDecoder, MiniDenoiser};
use crate::problems::setting::Setting;
use crate::rewards::onnx::OnnxReward;
use crate::rewards::spec::RewardSpec;
use crate::rewards::weighted_sum::WeightedSum;
use crate::rewards::weights::shared;
use crate::rewards::Reward;
use crate::{Error, Result};

/// The CFG scale chosen by the pilot of `alignbench mini check` (smallest w with B accuracy ≥ 0.85).
pub const MINI_CFG: f64 = 1.0;

fn mini_cfg() -> f64 {
    MINI_CFG
}

/// `problem: { kind: mini, … }` — FMNIST-align (mini-benchmark.md): the trained class-conditional latent DDPM, its
/// decoder and reward models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MiniSpec {
    /// Assets folder (default `assets/mini`).
    #[serde(default)]
    pub assets: Option<String>,
    /// Classifier-free guidance scale w (ε̂ = ε_u + w(ε_c − ε_u)); ignored for unconditional prompts.
    #[serde(default = "mini_cfg")]
    pub guidance_scale: f64,
    /// Prompt classes, cycled over the groups (group g gets `classes[g % len]`); empty = ∅ (unconditional).
    #[serde(default)]
    pub classes: Vec<usize>,
}

/// Seconds per row on FMNIST-align: (ε-MLP forward with CFG, its VJP, reward∘decoder VJP, reward∘decoder forward),
/// measured from the ledger's phase times of T1 cells (160 groups × 4 particles × 50 steps, CFG w = 1.5,
/// `--release --threads 1` on the project's 2-core machine: DDIM, SMC, DAS, MPGD).
pub const MINI_ROW_SECONDS: [f64; 4] = [6.6e-5, 2.3e-4, 1.4e-4, 3.7e-5];

impl MiniSpec {
    /// Assets folder, guidance scale and prompt classes.
    pub fn parts(&self) -> (Option<PathBuf>, f64, Vec<usize>) {
        (self.assets.as_ref().map(PathBuf::from), self.guidance_scale, self.classes.clone())
    }

    /// The spec as written in a cell (`{ kind: mini, … }`), for cache keys.
    pub fn tagged(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("json");
        v["kind"] = "mini".into();
        v
    }
}

/// The models of a mini cell.
pub struct MiniProblem {
    /// Shared trained networks.
    pub nets: Arc<MiniNets>,
    /// ε-MLP with CFG.
    pub denoiser: MiniDenoiser,
    /// Autoencoder decoder.
    pub decoder: MiniDecoder,
    /// The reward aligned to.
    pub reward: Box<dyn Reward>,
    /// Prompt classes cycled over groups (empty = ∅).
    pub classes: Vec<usize>,
}

/// Build a reward on decoded FMNIST-align images from its spec.
pub fn mini_reward(spec: &RewardSpec, nets: &Arc<MiniNets>) -> Result<Box<dyn Reward>> {
    let kind = |k| -> Result<Box<dyn Reward>> { Ok(Box::new(MiniReward::new(k, None, nets.clone())?)) };
    match spec {
        RewardSpec::StyleA {} => kind(MiniRewardKind::StyleA),
        RewardSpec::StyleB {} => kind(MiniRewardKind::StyleB),
        RewardSpec::GoldInk {} => kind(MiniRewardKind::GoldInk),
        RewardSpec::ClsA { class } => Ok(Box::new(MiniReward::new(MiniRewardKind::ClsA, *class, nets.clone())?)),
        RewardSpec::ClsB { class } => Ok(Box::new(MiniReward::new(MiniRewardKind::ClsB, *class, nets.clone())?)),
        RewardSpec::WeightedSum { terms } => Ok(Box::new(WeightedSum::new(
            terms.iter().map(|t| Ok((t.weight, mini_reward(&t.reward, nets)?))).collect::<Result<Vec<_>>>()?,
        )?)),
        RewardSpec::Onnx(cfg) => {
            let key = format!("onnx:{}:{PIXELS}:{:?}", cfg.path, cfg);
            Ok(Box::new(shared(&key, || OnnxReward::load(cfg, PIXELS))?))
        }
        other => Err(Error::config(format!(
            "reward: `{}` is not available on problem `mini`; use style_a, cls_a, style_b, cls_b, gold_ink, a \
             weighted_sum of them (e.g. multi_w = w·style_a + (1−w)·cls_a), or onnx on the 784 pixels",
            other.kind()
        ))),
    }
}

/// The fixed class a reward scores (a `cls_*` with `class:`, also inside a weighted sum), if any.
pub fn fixed_class(spec: &RewardSpec) -> Option<usize> {
    match spec {
        RewardSpec::ClsA { class } | RewardSpec::ClsB { class } => *class,
        RewardSpec::WeightedSum { terms } => terms.iter().find_map(|t| fixed_class(&t.reward)),
        _ => None,
    }
}

/// The FMNIST-align reward a cell is guided by, when its target is one of them (`cls_a[3]` → `cls_a`; a weighted
/// sum or `onnx` target is none).
pub fn guide_kind(spec: &RewardSpec) -> Option<&'static str> {
    MiniRewardKind::all().into_iter().map(MiniRewardKind::name).find(|k| *k == spec.kind())
}

/// Whether a reward needs a class it has not got (a `cls_*` without `class:`, also inside a weighted sum).
pub fn needs_prompt_class(spec: &RewardSpec) -> bool {
    match spec {
        RewardSpec::ClsA { class: None } | RewardSpec::ClsB { class: None } => true,
        RewardSpec::WeightedSum { terms } => terms.iter().any(|t| needs_prompt_class(&t.reward)),
        _ => false,
    }
}

impl MiniProblem {
    /// Load (once per process) the networks and build the cell's models.
    pub fn build(spec: &MiniSpec, c: &Setting) -> Result<Self> {
        let (dir, w, classes) = spec.parts();
        // ∅ prompts: the unconditional model alone (one row per evaluation; CFG has no conditional branch).
        let w = if classes.is_empty() { 0.0 } else { w };
        let nets = MiniNets::shared(dir.as_deref())?;
        let denoiser = MiniDenoiser::new(nets.eps.clone(), w, candle_core::DType::F32, Device::Cpu);
        let decoder = MiniDecoder::new(nets.ae.clone(), candle_core::DType::F32, Device::Cpu);
        let reward = mini_reward(&c.reward, &nets)?;
        Ok(MiniProblem { nets, denoiser, decoder, reward, classes })
    }
}
