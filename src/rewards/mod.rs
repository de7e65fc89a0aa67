//! Rewards: differentiable or black-box scorers of decoded samples, each declaring its scale.

pub mod aesthetic_head;
pub mod brightness;
pub mod build;
pub mod clip_rewards;
pub mod image_configs;
pub mod image_reward;
pub mod jpeg;
pub mod onnx;
pub mod quadratic;
pub mod spec;
pub mod weighted_sum;
pub mod weights;

use crate::diffusion::Cond;
use crate::Result;

/// A reward model r(y) over rows of the decoder's output.
pub trait Reward: Send + Sync {
    /// Name including parameters.
    fn name(&self) -> String;
    /// Whether [`Reward::score_grad`] is available.
    fn differentiable(&self) -> bool;
    /// Human-readable scale (range / units) of the score.
    fn scale(&self) -> String;
    /// Input length per row.
    fn input_dim(&self) -> usize;
    /// r(y | c) for every row of `y`; `cond` gives each row's prompt/class (`Cond::None` when unconditional).
    fn score(&self, y: &[f32], cond: &Cond, out: &mut [f64]) -> Result<()>;
    /// r(y | c) and ∇_y r(y | c) for every row.
    fn score_grad(&self, y: &[f32], cond: &Cond, out: &mut [f64], grad: &mut [f32]) -> Result<()>;
}

impl<T: Reward + ?Sized> Reward for std::sync::Arc<T> {
    fn name(&self) -> String {
        (**self).name()
    }
    fn differentiable(&self) -> bool {
        (**self).differentiable()
    }
    fn scale(&self) -> String {
        (**self).scale()
    }
    fn input_dim(&self) -> usize {
        (**self).input_dim()
    }
    fn score(&self, y: &[f32], cond: &Cond, out: &mut [f64]) -> Result<()> {
        (**self).score(y, cond, out)
    }
    fn score_grad(&self, y: &[f32], cond: &Cond, out: &mut [f64], grad: &mut [f32]) -> Result<()> {
        (**self).score_grad(y, cond, out, grad)
    }
}

/// Description of a reward kind for `alignbench list rewards`.
#[derive(Clone, Debug)]
pub struct RewardInfo {
    /// YAML `kind:`.
    pub kind: &'static str,
    /// Differentiable (`true`) or black-box.
    pub differentiable: bool,
    /// What it scores.
    pub input: &'static str,
    /// Scale.
    pub scale: &'static str,
    /// One line of description.
    pub about: &'static str,
}

/// Every reward kind this build knows.
pub fn catalogue() -> Vec<RewardInfo> {
    let r = |kind, differentiable, input, scale, about| RewardInfo { kind, differentiable, input, scale, about };
    vec![
        r(
            "quadratic",
            true,
            "points in ℝ^d",
            "r(x) = −½xᵀAx + bᵀx + c, unbounded below, max at A⁻¹b",
            "the toy's quadratic reward (presets gmm1, gmm2); exact gradient and exact tilted target",
        ),
        r(
            "onnx",
            false,
            "rows of any shape",
            "as defined by the model (declare it with `scale:`)",
            "any ONNX model as a black-box scorer (ONNX Runtime via ORT_DYLIB_PATH)",
        ),
        r(
            "weighted_sum",
            true,
            "as its terms",
            "Σ_k w_k·scale_k",
            "multi-objective Σ_k w_k r_k; differentiable iff every term is; exact tilt when every term is quadratic",
        ),
        r(
            "jpeg_compressibility",
            false,
            "images [c, h, w] in [0, 1]",
            "−kB of the JPEG at quality 95 (≈ −10…−100 for 512² images)",
            "JPEG compressibility (DDPO's black-box reward)",
        ),
        r(
            "brightness",
            true,
            "images in [0, 1]",
            "mean pixel value in [0, 1]",
            "test/demo reward: the mean pixel, differentiable and weight-free (never an alignment result)",
        ),
        r(
            "aesthetic",
            true,
            "images in [0, 1]",
            "AVA rating 1–10 (SD 1.x animals ≈ 5–5.5)",
            "LAION improved aesthetic predictor on L2-normalised CLIP ViT-L/14 embeddings (DAS target, α = 0.005)",
        ),
        r(
            "pickscore",
            true,
            "images in [0, 1] + prompt",
            "cosine ≈ 0.20–0.23 (DAS) or exp(logit_scale)·cosine ≈ 18–23 (official)",
            "PickScore v1, CLIP ViT-H/14 (DAS target, α = 1e-4)",
        ),
        r(
            "hpsv2",
            true,
            "images in [0, 1] + prompt",
            "cosine ≈ 0.24–0.31 (tables ×100); v2.0 and v2.1 not comparable",
            "Human Preference Score v2.0 / v2.1, open_clip ViT-H-14 (cross-reward)",
        ),
        r(
            "image_reward",
            true,
            "images in [0, 1] + prompt",
            "raw ≈ −2…2 (DAS) or z-normalised (official)",
            "ImageReward v1.0, BLIP ViT-L/16 + BERT cross-attention + MLP (cross-reward)",
        ),
        r(
            "clip_score",
            true,
            "images in [0, 1] + prompt",
            "scale × cosine ≈ 0.25–0.30 (×20 as the paper's target)",
            "CLIPScore with openai/clip-vit-large-patch14 (cross-reward; target in the multi-objective task)",
        ),
    ]
}
