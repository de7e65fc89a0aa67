//! Building an image reward from its YAML spec (`reward:` of an experiment, or `alignbench score --reward`): the
//! rewards of the DAS paper (rewards.md §1–§6) — `aesthetic`, `pickscore`, `hpsv2`, `clip_score`, `image_reward`,
//! `jpeg_compressibility` — plus `brightness` (a weight-free test/demo reward), `onnx` and `weighted_sum` of any of them, for images of a declared shape [c, h, w]
//! in [0, 1].
//!
//! Models are loaded once per process and shared (the constructors go through `weights::shared`), so building the
//! same reward for many cells costs one load. The models folder is, in order: the `weights` argument (e.g. the
//! command line's `--weights`), the spec's own `weights:` key, the env `ALIGNBENCH_MODELS`.

use candle_core::Device;

use super::brightness::Brightness;
use super::clip_rewards::{aesthetic, prompt_reward, PromptModel};
use super::image_reward;
use super::jpeg::JpegCompressibility;
use super::onnx::OnnxReward;
use super::weighted_sum::WeightedSum;
use super::weights::{models_dir, shared};
use super::Reward;
use crate::rewards::spec::RewardSpec;
use crate::{Error, Result};

/// Any image reward of `spec` for images of `shape` = [c, h, w]; `prompts[k]` is the prompt of `Cond::Labels`
/// value k (prompt-conditioned rewards need at least one). `weights` overrides the spec's `weights:` folder. The
/// model towers run on the CPU ([`image_reward_on`] puts them on another device).
pub fn image_reward(
    spec: &RewardSpec,
    shape: [usize; 3],
    prompts: &[String],
    weights: Option<&str>,
) -> Result<Box<dyn Reward>> {
    image_reward_on(spec, shape, prompts, weights, &Device::Cpu)
}

/// [`image_reward`] with the model towers (CLIP of aesthetic, PickScore, HPSv2, CLIPScore; BLIP of ImageReward) on
/// `device` — the Stable Diffusion device, so a guided step on a GPU runs the reward's forward and VJP there too
/// (issue 16).
pub fn image_reward_on(
    spec: &RewardSpec,
    shape: [usize; 3],
    prompts: &[String],
    weights: Option<&str>,
    device: &Device,
) -> Result<Box<dyn Reward>> {
    if shape.contains(&0) {
        return Err(Error::config(format!("reward: image shape {shape:?} has a zero dimension")));
    }
    let dir = |own: &Option<String>| models_dir(weights.or(own.as_deref()));
    let need_prompts = |kind: &str| -> Result<()> {
        if prompts.is_empty() {
            return Err(Error::config(format!(
                "reward `{kind}` is prompt-conditioned: give the prompt(s) (`--prompt` or the problem's prompts)"
            )));
        }
        Ok(())
    };
    Ok(match spec {
        RewardSpec::JpegCompressibility(cfg) => Box::new(JpegCompressibility::new(cfg, shape)?),
        RewardSpec::Brightness {} => Box::new(Brightness::new(shape)?),
        RewardSpec::Aesthetic(cfg) => {
            Box::new(aesthetic(&dir(&cfg.weights)?, cfg.head, cfg.preprocess, shape, device)?)
        }
        RewardSpec::Pickscore(cfg) => {
            need_prompts("pickscore")?;
            let which = PromptModel::PickScore(cfg.output);
            Box::new(prompt_reward(&dir(&cfg.weights)?, which, prompts, cfg.preprocess, shape, device)?)
        }
        RewardSpec::Hpsv2(cfg) => {
            need_prompts("hpsv2")?;
            let which = PromptModel::Hps(cfg.version);
            Box::new(prompt_reward(&dir(&cfg.weights)?, which, prompts, cfg.preprocess, shape, device)?)
        }
        RewardSpec::ClipScore(cfg) => {
            need_prompts("clip_score")?;
            let which = PromptModel::ClipScore(cfg.scale);
            Box::new(prompt_reward(&dir(&cfg.weights)?, which, prompts, cfg.preprocess, shape, device)?)
        }
        RewardSpec::ImageReward(cfg) => {
            need_prompts("image_reward")?;
            Box::new(image_reward::image_reward(&dir(&cfg.weights)?, cfg, prompts, shape, device)?)
        }
        RewardSpec::Onnx(cfg) => {
            let dim = shape.iter().product();
            let key = format!("onnx:{}:{dim}:{:?}", cfg.path, cfg);
            Box::new(shared(&key, || OnnxReward::load(cfg, dim))?)
        }
        RewardSpec::WeightedSum { terms } => Box::new(WeightedSum::new(
            terms
                .iter()
                .map(|t| Ok((t.weight, image_reward_on(&t.reward, shape, prompts, weights, device)?)))
                .collect::<Result<Vec<_>>>()?,
        )?),
        RewardSpec::Quadratic { .. } => {
            return Err(Error::config(
                "reward `quadratic` scores points in ℝ^d (the toy), not images; use an image reward (aesthetic, \
                 pickscore, hpsv2, clip_score, image_reward, jpeg_compressibility, onnx or a weighted_sum of them)",
            ))
        }
        // The FMNIST-align rewards score 28×28 decoded images with the project's own classifiers.
        other @ (RewardSpec::StyleA {}
        | RewardSpec::StyleB {}
        | RewardSpec::GoldInk {}
        | RewardSpec::ClsA { .. }
        | RewardSpec::ClsB { .. }) => {
            return Err(Error::config(format!(
                "reward `{}` belongs to problem `mini` (FMNIST-align); for images use aesthetic, pickscore, hpsv2, \
                 clip_score, image_reward, jpeg_compressibility, onnx or a weighted_sum of them",
                other.kind()
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::Cond;
    use crate::rewards::image_configs::{AestheticConfig, ImageRewardConfig};
    use crate::rewards::jpeg::JpegConfig;
    use crate::rewards::spec::WeightedTerm;

    fn jpeg() -> RewardSpec {
        RewardSpec::JpegCompressibility(JpegConfig::default())
    }

    #[test]
    fn builds_jpeg_and_weighted_sums_of_it() {
        let r = image_reward(&jpeg(), [3, 16, 16], &[], None).unwrap();
        assert_eq!(r.input_dim(), 3 * 16 * 16);
        let spec = RewardSpec::WeightedSum {
            terms: vec![WeightedTerm { weight: 2.0, reward: jpeg() }, WeightedTerm { weight: -1.0, reward: jpeg() }],
        };
        let s = image_reward(&spec, [3, 16, 16], &[], None).unwrap();
        let y = vec![0.5f32; 2 * 3 * 16 * 16];
        let (mut a, mut b) = ([0f64; 2], [0f64; 2]);
        r.score(&y, &Cond::None, &mut a).unwrap();
        s.score(&y, &Cond::None, &mut b).unwrap();
        assert!((b[0] - a[0]).abs() < 1e-12, "2r − r = r: {b:?} vs {a:?}");
        assert!(!s.differentiable());
    }

    #[test]
    fn clear_errors_for_points_rewards_prompts_and_weights() {
        let q = RewardSpec::Quadratic { preset: Some("gmm1".into()), a: None, b: None, c: None };
        let e = image_reward(&q, [3, 8, 8], &[], None).err().unwrap().to_string();
        assert!(e.contains("quadratic") && e.contains("points"), "{e}");
        let ir = RewardSpec::ImageReward(ImageRewardConfig::default());
        let e = image_reward(&ir, [3, 8, 8], &[], Some("/nonexistent")).err().unwrap().to_string();
        assert!(e.contains("prompt"), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_str().unwrap();
        let e = image_reward(&ir, [3, 8, 8], &["a cat".into()], Some(dir)).err().unwrap().to_string();
        assert!(e.contains("med_config.json"), "{e}");
        // The `weights` argument wins over the spec's own folder.
        let aes = RewardSpec::Aesthetic(AestheticConfig { weights: Some("/elsewhere".into()), ..Default::default() });
        let e = image_reward(&aes, [3, 8, 8], &[], Some(dir)).err().unwrap().to_string();
        assert!(e.contains(dir) && e.contains("model.safetensors"), "{e}");
        assert!(image_reward(&jpeg(), [3, 0, 8], &[], None).is_err());
    }
}
