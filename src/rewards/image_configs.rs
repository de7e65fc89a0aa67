//! YAML configurations of the image rewards of the DAS paper (rewards.md §1–§6). Each names its local weights
//! folder (`weights:`, default env `ALIGNBENCH_MODELS`), its variant and which preprocessing path it uses: the
//! official one (uint8, bicubic resize, centre crop) for evaluation or the differentiable tensor one for guidance.

use serde::{Deserialize, Serialize};

/// Which preprocessing path a reward uses (rewards.md §0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preprocess {
    /// Float tensor → bilinear resize → normalise; differentiable (guidance, as DAS/DDPO/AlignProp).
    #[default]
    Differentiable,
    /// uint8 → bicubic shortest-side resize → centre crop → normalise; the models' own evaluation path.
    Official,
}

/// `aesthetic`: CLIP ViT-L/14 image embedding, L2-normalised, LAION head (AVA 1–10 scale).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AestheticConfig {
    /// Folder with `clip-vit-large-patch14/` and the head file (default: env ALIGNBENCH_MODELS).
    #[serde(default)]
    pub weights: Option<String>,
    /// `improved_mlp` (the paper's, default) or `linear`.
    #[serde(default)]
    pub head: AestheticHeadChoice,
    /// Preprocessing path.
    #[serde(default)]
    pub preprocess: Preprocess,
}

/// The LAION head of an `aesthetic` reward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AestheticHeadChoice {
    /// `sac+logos+ava1-l14-linearMSE.pth`.
    #[default]
    ImprovedMlp,
    /// `sa_0_4_vit_l_14_linear.pth`.
    Linear,
}

/// Output of PickScore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PickOutput {
    /// Raw cosine ⟨ê_img, ê_txt⟩ ≈ 0.20–0.23, as DAS guides with.
    #[default]
    Cosine,
    /// The official exp(logit_scale)·cosine ≈ 18–23.
    Logit,
}

/// `pickscore`: PickScore v1 (CLIP ViT-H/14), prompt-conditioned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PickScoreConfig {
    /// Folder with `PickScore_v1/` (default: env ALIGNBENCH_MODELS).
    #[serde(default)]
    pub weights: Option<String>,
    /// Cosine (DAS) or logit-scaled (official).
    #[serde(default)]
    pub output: PickOutput,
    /// Preprocessing path.
    #[serde(default)]
    pub preprocess: Preprocess,
}

/// HPS version (scores of the two are not comparable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HpsVersion {
    /// `HPS_v2_compressed.pt` (what DAS evaluates with).
    #[default]
    #[serde(rename = "v2.0")]
    V2_0,
    /// `HPS_v2.1_compressed.pt`.
    #[serde(rename = "v2.1")]
    V2_1,
}

/// `hpsv2`: HPS v2.0 / v2.1 (open_clip ViT-H-14), prompt-conditioned cosine ≈ 0.24–0.31.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HpsConfig {
    /// Folder with the HPS checkpoint and the open_clip tokenizer files (default: env ALIGNBENCH_MODELS).
    #[serde(default)]
    pub weights: Option<String>,
    /// `v2.0` (default) or `v2.1`.
    #[serde(default)]
    pub version: HpsVersion,
    /// Preprocessing path.
    #[serde(default)]
    pub preprocess: Preprocess,
}

/// Output of ImageReward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageRewardOutput {
    /// Raw MLP output (what DAS reports): 1.0333394966·z + 0.1671736283.
    #[default]
    Raw,
    /// The official z-normalised score (r − 0.16717362830052426)/1.0333394966054072.
    Normalized,
}

/// `image_reward`: ImageReward v1.0 (BLIP ViT-L/16 + BERT cross-attention + MLP), prompt-conditioned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRewardConfig {
    /// Folder with `ImageReward.pt` (or its safetensors conversion), `med_config.json` and the BERT vocabulary.
    #[serde(default)]
    pub weights: Option<String>,
    /// Raw (DAS) or z-normalised (official).
    #[serde(default)]
    pub output: ImageRewardOutput,
    /// Preprocessing path.
    #[serde(default)]
    pub preprocess: Preprocess,
}

/// `clip_score`: cosine of CLIP ViT-L/14 image and prompt embeddings, times `scale` (DAS uses 20 as a target).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipScoreConfig {
    /// Folder with `clip-vit-large-patch14/` (default: env ALIGNBENCH_MODELS).
    #[serde(default)]
    pub weights: Option<String>,
    /// Multiplier of the cosine (1 for evaluation, 20 as the paper's target).
    #[serde(default = "one")]
    pub scale: f64,
    /// Preprocessing path.
    #[serde(default)]
    pub preprocess: Preprocess,
}

fn one() -> f64 {
    1.0
}
