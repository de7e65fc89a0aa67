//! The YAML form of a reward (`reward: { kind: ... }`): one variant per reward file, `kind:` = the file name
//! (`alignbench list rewards`). Problems build their rewards from it (`problems::toy` for points,
//! `rewards::build` for images, `problems::mini::spec` for FMNIST-align).

use serde::{Deserialize, Serialize};

use crate::rewards::image_configs::{AestheticConfig, ClipScoreConfig, HpsConfig, ImageRewardConfig, PickScoreConfig};
use crate::rewards::jpeg::JpegConfig;
use crate::rewards::onnx::OnnxConfig;

/// A reward; the YAML `kind:` equals the reward's file name (`alignbench list rewards`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RewardSpec {
    /// r(x) = −½xᵀAx + bᵀx + c: a preset or explicit a, b, c.
    Quadratic {
        /// `gmm1` or `gmm2`.
        #[serde(default)]
        preset: Option<String>,
        /// A (symmetric).
        #[serde(default)]
        a: Option<Vec<Vec<f64>>>,
        /// b.
        #[serde(default)]
        b: Option<Vec<f64>>,
        /// c.
        #[serde(default)]
        c: Option<f64>,
    },
    /// Any ONNX model as a black-box scorer.
    Onnx(OnnxConfig),
    /// Σ_k w_k r_k over other rewards.
    WeightedSum {
        /// The terms.
        terms: Vec<WeightedTerm>,
    },
    /// −kB of the JPEG encoding (black-box; images only).
    JpegCompressibility(JpegConfig),
    /// Mean pixel value in [0, 1]: a differentiable test/demo reward that needs no weights (images only).
    Brightness {},
    /// LAION aesthetic predictor on CLIP ViT-L/14 (images only).
    Aesthetic(AestheticConfig),
    /// PickScore v1 (images + prompts).
    Pickscore(PickScoreConfig),
    /// HPS v2.0 / v2.1 (images + prompts).
    Hpsv2(HpsConfig),
    /// ImageReward v1.0 (images + prompts).
    ImageReward(ImageRewardConfig),
    /// CLIPScore with CLIP ViT-L/14 (images + prompts).
    ClipScore(ClipScoreConfig),
    /// FMNIST-align: style head A on classifier A's features (target).
    StyleA {},
    /// FMNIST-align: style head B on classifier B's features (held-out).
    StyleB {},
    /// FMNIST-align: the gold ink statistic (ground truth behind the style labels).
    GoldInk {},
    /// FMNIST-align: log p_A(c | x) — `class:` fixed, else each group's prompt class.
    ClsA {
        /// Fixed class 0..9 (default: the prompt class).
        #[serde(default)]
        class: Option<usize>,
    },
    /// FMNIST-align: log p_B(c | x) (held-out).
    ClsB {
        /// Fixed class 0..9 (default: the prompt class).
        #[serde(default)]
        class: Option<usize>,
    },
}

/// One term of a `weighted_sum` reward.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightedTerm {
    /// Weight w_k.
    pub weight: f64,
    /// The reward r_k.
    pub reward: RewardSpec,
}

impl RewardSpec {
    /// The YAML kind.
    pub fn kind(&self) -> &'static str {
        match self {
            RewardSpec::Quadratic { .. } => "quadratic",
            RewardSpec::Onnx(_) => "onnx",
            RewardSpec::WeightedSum { .. } => "weighted_sum",
            RewardSpec::JpegCompressibility(_) => "jpeg_compressibility",
            RewardSpec::Brightness {} => "brightness",
            RewardSpec::Aesthetic(_) => "aesthetic",
            RewardSpec::Pickscore(_) => "pickscore",
            RewardSpec::Hpsv2(_) => "hpsv2",
            RewardSpec::ImageReward(_) => "image_reward",
            RewardSpec::ClipScore(_) => "clip_score",
            RewardSpec::StyleA {} => "style_a",
            RewardSpec::StyleB {} => "style_b",
            RewardSpec::GoldInk {} => "gold_ink",
            RewardSpec::ClsA { .. } => "cls_a",
            RewardSpec::ClsB { .. } => "cls_b",
        }
    }
    /// Short label for tables: the preset, the kind (with its class) or the weighted terms.
    pub fn label(&self) -> String {
        match self {
            RewardSpec::Quadratic { preset: Some(p), .. } => p.clone(),
            RewardSpec::Quadratic { .. } => "custom".into(),
            RewardSpec::ClsA { class: Some(c) } | RewardSpec::ClsB { class: Some(c) } => {
                format!("{}[{c}]", self.kind())
            }
            RewardSpec::WeightedSum { terms } => {
                terms.iter().map(|t| format!("{}*{}", t.weight, t.reward.label())).collect::<Vec<_>>().join("+")
            }
            other => other.kind().to_string(),
        }
    }
}
