//! Rewards with seeded random weights, for cost figures only (`problem.random_weights` of Stable Diffusion, issue
//! 16: "weights do not change the cost"). Each model reward keeps the architecture of the paper's checkpoint
//! (rewards.md §1–§6) — CLIP ViT-L/14 for `aesthetic` and `clip_score`, ViT-H/14 for `pickscore` and `hpsv2`, BLIP
//! ViT-L/16 + BERT-base for `image_reward` — with the same preprocessing and input size, so a guided step costs
//! what it costs with the real weights; the values are meaningless and must never be reported as rewards.
//!
//! What differs from the real rewards, none of it on the per-step path: prompts are turned into token ids by
//! hashing their bytes (the text towers run once per prompt), the aesthetic head is one affine layer (the real
//! head collapses to one, `AestheticHead::from_layers`), and the prompt scale is 1.
//! Weight-free rewards (`brightness`, `jpeg_compressibility`) are the real ones; `onnx` is refused.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::aesthetic_head::AestheticHead;
use super::build::image_reward;
use super::clip_rewards::{ClipReward, Head};
use super::image_configs::Preprocess;
use super::image_reward::{random_weights as blip_weights, ImageReward, ImageRewardArch, ImageRewardModel};
use super::weighted_sum::WeightedSum;
use super::weights::shared;
use super::Reward;
use crate::models::clip::{l2_normalize, random_weights as clip_weights, ClipConfig, ClipModel};
use crate::models::wordpiece::WordPieceTokenizer;
use crate::rewards::spec::RewardSpec;
use crate::rng::{fill_normal, Purpose, Streams};
use crate::{Error, Result};

/// Seed of every random reward tower (any seed costs the same).
pub const RANDOM_REWARD_SEED: u64 = 0x7E3A;

/// Which size of towers: the paper's, or the tiny test ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TowerSize {
    /// The released checkpoints' architectures.
    Full,
    /// The tiny test architectures (`ClipConfig::tiny`, `ImageRewardArch::tiny`).
    Tiny,
}

fn clip_config(size: TowerSize, huge: bool) -> ClipConfig {
    match (size, huge) {
        (TowerSize::Tiny, _) => ClipConfig::tiny(),
        (TowerSize::Full, false) => ClipConfig::vit_l_14(),
        (TowerSize::Full, true) => ClipConfig::vit_h_14(),
    }
}

/// A random CLIP model (ViT-H/14 when `huge`, else ViT-L/14), built once per process, size and device.
fn clip_model(size: TowerSize, huge: bool, device: &Device) -> Result<Arc<ClipModel>> {
    let key = format!("random-clip:{size:?}:{huge}:{:?}", device.location());
    shared(&key, || {
        let cfg = clip_config(size, huge);
        let vb =
            VarBuilder::from_tensors(clip_weights(&cfg, RANDOM_REWARD_SEED, DType::F32, device)?, DType::F32, device);
        ClipModel::new(vb, &cfg)
    })
}

/// Token rows of `prompts` for a CLIP text tower of `vocab` ids and `context` positions: start, the prompt's bytes
/// folded into the vocabulary, end-of-text (the largest id, where the tower pools), end-of-text padding.
pub fn hashed_clip_ids(prompts: &[String], vocab: usize, context: usize) -> Vec<Vec<u32>> {
    let (sot, eot) = ((vocab - 2) as u32, (vocab - 1) as u32);
    prompts
        .iter()
        .map(|p| {
            let mut row = vec![sot];
            row.extend(p.bytes().take(context.saturating_sub(2)).map(|b| b as u32 % sot));
            row.resize(context, eot);
            row
        })
        .collect()
}

/// Normalised text embeddings [prompts, d] of a random CLIP model ([`hashed_clip_ids`]).
fn prompt_embeddings(model: &ClipModel, prompts: &[String]) -> Result<Tensor> {
    let t = model.text().config();
    let rows = hashed_clip_ids(prompts, t.vocab_size, t.context_length);
    let flat: Vec<u32> = rows.concat();
    let ids = Tensor::from_vec(flat, (rows.len(), t.context_length), model.device())?;
    l2_normalize(&model.text_features(&ids)?)
}

/// A random one-layer aesthetic head on embeddings of `dim`.
fn random_head(dim: usize) -> Result<AestheticHead> {
    let mut w = vec![0f32; dim];
    fill_normal(&mut Streams::new(RANDOM_REWARD_SEED).rng(Purpose::Train, 0xAE5, 0), &mut w);
    w.iter_mut().for_each(|v| *v /= (dim as f32).sqrt());
    AestheticHead::from_layers(vec![(w, vec![0.0], dim, 1)])
}

/// A BERT-layout vocabulary of `n` tokens: the five specials first, then placeholders (every word of a prompt
/// becomes `[UNK]`; the sequence length is the prompt's word count, close to the real one).
fn placeholder_wordpiece(n: usize) -> Result<WordPieceTokenizer> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| s.to_string()).collect();
    v.extend((v.len()..n).map(|i| format!("[unused{i}]")));
    Ok(WordPieceTokenizer::new(v, true)?.with_added_specials(&["[DEC]", "[ENC]"]))
}

/// The reward of `spec` for images of `shape` with seeded random towers of `size` on `device`; `prompts[k]` is
/// the prompt of `Cond::Labels` value k.
pub fn random_image_reward(
    spec: &RewardSpec,
    shape: [usize; 3],
    prompts: &[String],
    device: &Device,
    size: TowerSize,
) -> Result<Box<dyn Reward>> {
    let need_prompts = |kind: &str| -> Result<()> {
        if prompts.is_empty() {
            return Err(Error::config(format!("reward `{kind}` is prompt-conditioned: give the prompt(s)")));
        }
        Ok(())
    };
    let cos = |huge: bool, name: &str, pre: Preprocess| -> Result<Box<dyn Reward>> {
        need_prompts(name)?;
        let model = clip_model(size, huge, device)?;
        let text = prompt_embeddings(&model, prompts)?;
        let px = model.vision().config().image_size;
        let head = Head::PromptCosine { text, scale: 1.0 };
        Ok(Box::new(ClipReward::from_parts(format!("{name}(random)"), "random weights", model, head, pre, px, shape)?))
    };
    Ok(match spec {
        RewardSpec::Aesthetic(cfg) => {
            let model = clip_model(size, false, device)?;
            let dim = clip_config(size, false).projection_dim;
            let head = Head::Aesthetic(Arc::new(random_head(dim)?));
            let px = model.vision().config().image_size;
            let name = "aesthetic(random)";
            Box::new(ClipReward::from_parts(name, "random weights", model, head, cfg.preprocess, px, shape)?)
        }
        RewardSpec::Pickscore(cfg) => cos(true, "pickscore", cfg.preprocess)?,
        RewardSpec::Hpsv2(cfg) => cos(true, "hpsv2", cfg.preprocess)?,
        RewardSpec::ClipScore(cfg) => cos(false, "clip_score", cfg.preprocess)?,
        RewardSpec::ImageReward(cfg) => {
            need_prompts("image_reward")?;
            let arch = match size {
                TowerSize::Full => ImageRewardArch::v1(),
                TowerSize::Tiny => ImageRewardArch::tiny(),
            };
            let key = format!("random-image-reward:{size:?}:{:?}", device.location());
            let model = shared(&key, || {
                let w = blip_weights(&arch, RANDOM_REWARD_SEED, DType::F32)?;
                ImageRewardModel::load(VarBuilder::from_tensors(w, DType::F32, device), &arch)
            })?;
            let tok = placeholder_wordpiece(arch.bert.vocab_size - 2)?;
            Box::new(ImageReward::new(model, &tok, prompts, cfg.output, cfg.preprocess, shape)?)
        }
        RewardSpec::WeightedSum { terms } => Box::new(WeightedSum::new(
            terms
                .iter()
                .map(|t| Ok((t.weight, random_image_reward(&t.reward, shape, prompts, device, size)?)))
                .collect::<Result<Vec<_>>>()?,
        )?),
        RewardSpec::Onnx(_) => {
            return Err(Error::config(
                "reward `onnx` has no random-weight stand-in (its cost is the file's own): run with \
                 random_weights: false, or time a CLIP reward",
            ))
        }
        // Weight-free rewards, and the refusals of the real builder (points rewards, FMNIST-align rewards).
        other => image_reward(other, shape, prompts, Some("/nonexistent"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::Cond;
    use crate::rewards::image_configs::{AestheticConfig, HpsConfig, ImageRewardConfig, PickScoreConfig};
    use crate::rewards::spec::WeightedTerm;

    fn prompts() -> Vec<String> {
        vec!["a cat".into(), "a dog in the snow".into()]
    }

    #[test]
    fn hashed_ids_start_end_and_pad_within_the_vocabulary() {
        let rows = hashed_clip_ids(&["ab".into(), "x".repeat(100)], 64, 8);
        assert_eq!(rows[0], vec![62, 97 % 62, 98 % 62, 63, 63, 63, 63, 63]);
        assert_eq!(rows[1].len(), 8);
        assert_eq!(crate::models::clip::eos_positions(&rows), vec![3, 7]);
        assert!(rows.iter().flatten().all(|&i| i < 64));
    }

    /// Every model reward builds with tiny random towers, scores finite values, differentiates (gradient of the
    /// right length, finite, non-zero) and keeps its prompt conditioning; onnx is refused.
    #[test]
    fn tiny_random_rewards_score_and_differentiate() {
        let shape = [3, 16, 16];
        let specs = [
            RewardSpec::Aesthetic(AestheticConfig::default()),
            RewardSpec::Pickscore(PickScoreConfig::default()),
            RewardSpec::Hpsv2(HpsConfig::default()),
            RewardSpec::ImageReward(ImageRewardConfig::default()),
            RewardSpec::WeightedSum {
                terms: vec![WeightedTerm { weight: 0.5, reward: RewardSpec::Aesthetic(AestheticConfig::default()) }],
            },
        ];
        let y: Vec<f32> = (0..2 * 3 * 16 * 16).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
        let cond = Cond::Labels(vec![0, 1]);
        for spec in &specs {
            let r = random_image_reward(spec, shape, &prompts(), &Device::Cpu, TowerSize::Tiny).unwrap();
            assert!(r.differentiable(), "{}", r.name());
            let (mut s, mut g) = ([0f64; 2], vec![0f32; y.len()]);
            r.score_grad(&y, &cond, &mut s, &mut g).unwrap();
            assert!(s.iter().all(|v| v.is_finite()), "{}: {s:?}", r.name());
            assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0), "{}", r.name());
            let mut again = [0f64; 2];
            r.score(&y, &cond, &mut again).unwrap();
            assert!((again[0] - s[0]).abs() < 1e-5 * (1.0 + s[0].abs()), "{}", r.name());
        }
        let onnx: RewardSpec = yaml_serde::from_str("{ kind: onnx, path: x.onnx }").unwrap();
        let e = random_image_reward(&onnx, shape, &prompts(), &Device::Cpu, TowerSize::Tiny).err().unwrap();
        assert!(e.to_string().contains("random_weights: false"), "{e}");
        let e = random_image_reward(&specs[1], shape, &[], &Device::Cpu, TowerSize::Tiny).err().unwrap();
        assert!(e.to_string().contains("prompt"), "{e}");
    }
}
