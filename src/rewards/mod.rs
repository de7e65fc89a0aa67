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
pub mod random;
pub mod spec;
pub mod weighted_sum;
pub mod weights;

use crate::diffusion::{Cond, Decoder};
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

/// The scale of a reward kind's score, as data: its unit, hard bounds, the values it typically takes on this
/// benchmark's outputs, and a note for what does not fit those fields. Shown by `alignbench list rewards` (through
/// [`std::fmt::Display`]) and by the report's reward table.
#[derive(Clone, Debug, PartialEq)]
pub struct Scale {
    /// What one unit of the score is.
    pub unit: &'static str,
    /// Lowest possible score (None: unbounded below, or set by the model or preset).
    pub min: Option<f64>,
    /// Highest possible score (None: unbounded above, or set by the model or preset).
    pub max: Option<f64>,
    /// Typical scores on this benchmark's outputs (low, high), where known.
    pub typical: Option<(f64, f64)>,
    /// Anything else worth knowing (formula, official vs differentiable path); "" for nothing.
    pub note: &'static str,
}

impl Scale {
    const fn new(
        unit: &'static str,
        min: Option<f64>,
        max: Option<f64>,
        typical: Option<(f64, f64)>,
        note: &'static str,
    ) -> Self {
        Scale { unit, min, max, typical, note }
    }
}

impl std::fmt::Display for Scale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Numbers with a real minus sign, as in the rest of the catalogue.
        let n = |v: f64| format!("{v}").replace('-', "−");
        f.write_str(self.unit)?;
        match (self.min, self.max) {
            (Some(a), Some(b)) => write!(f, " in [{}, {}]", n(a), n(b))?,
            (Some(a), None) => write!(f, " ≥ {}", n(a))?,
            (None, Some(b)) => write!(f, " ≤ {}", n(b))?,
            (None, None) => {}
        }
        if let Some((lo, hi)) = self.typical {
            write!(f, ", typically ≈ {}…{}", n(lo), n(hi))?;
        }
        if !self.note.is_empty() {
            write!(f, " ({})", self.note)?;
        }
        Ok(())
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
    /// The scale of its score.
    pub scale: Scale,
    /// One line of description.
    pub about: &'static str,
}

/// r(D(x)) for every row of the latents `x`, written into `out` (the identity decoder scores `x` itself).
pub fn score_decoded(
    decoder: &dyn Decoder,
    reward: &dyn Reward,
    x: &[f32],
    cond: &Cond,
    out: &mut [f64],
) -> Result<()> {
    if decoder.is_identity() {
        return reward.score(x, cond, out);
    }
    let mut y = Vec::new();
    decoder.decode(x, &mut y)?;
    reward.score(&y, cond, out)
}

/// r(D(x)) into `out` and its gradient w.r.t. the latents `x` into `grad`: the reward's image gradient pulled back
/// through the decoder by [`Decoder::decode_vjp`] (one decoder forward per chunk where the decoder keeps its graph),
/// each chunk of rows scored with its own rows' conditioning.
pub fn score_grad_decoded(
    decoder: &dyn Decoder,
    reward: &dyn Reward,
    x: &[f32],
    cond: &Cond,
    out: &mut [f64],
    grad: &mut [f32],
) -> Result<()> {
    if decoder.is_identity() {
        return reward.score_grad(x, cond, out, grad);
    }
    let n = out.len();
    let mut score = |y: &[f32], rows: std::ops::Range<usize>, gy: &mut [f32]| -> Result<()> {
        reward.score_grad(y, &cond.slice(rows.clone()), &mut out[rows], gy)
    };
    decoder.decode_vjp(x, n, &mut score, grad)
}

/// The catalogue entry of a reward kind.
pub fn info(kind: &str) -> Option<RewardInfo> {
    catalogue().into_iter().find(|r| r.kind == kind)
}

/// Every reward kind this build knows.
pub fn catalogue() -> Vec<RewardInfo> {
    let r = |kind, differentiable, input, scale, about| RewardInfo { kind, differentiable, input, scale, about };
    vec![
        r(
            "quadratic",
            true,
            "points in ℝ^d",
            Scale::new("reward", None, None, None, "r(x) = −½xᵀAx + bᵀx + c, unbounded below, max at A⁻¹b"),
            "the toy's quadratic reward (presets gmm1, gmm2); exact gradient and exact tilted target",
        ),
        r(
            "onnx",
            false,
            "rows of any shape",
            Scale::new("as defined by the model", None, None, None, "declare it with `scale:`"),
            "any ONNX model as a black-box scorer (ONNX Runtime via ORT_DYLIB_PATH)",
        ),
        r(
            "weighted_sum",
            true,
            "as its terms",
            Scale::new("Σ_k w_k·scale_k", None, None, None, "the weighted scales of its terms"),
            "multi-objective Σ_k w_k r_k; differentiable iff every term is; exact tilt when every term is quadratic",
        ),
        r(
            "jpeg_compressibility",
            false,
            "images [c, h, w] in [0, 1]",
            Scale::new("−kB of the JPEG at quality 95", None, Some(0.0), Some((-100.0, -10.0)), "512² images"),
            "JPEG compressibility (DDPO's black-box reward)",
        ),
        r(
            "brightness",
            true,
            "images in [0, 1]",
            Scale::new("mean pixel value", Some(0.0), Some(1.0), None, ""),
            "test/demo reward: the mean pixel, differentiable and weight-free (never an alignment result)",
        ),
        r(
            "aesthetic",
            true,
            "images in [0, 1]",
            Scale::new("AVA rating (a 1–10 scale)", None, None, Some((5.0, 5.5)), "SD 1.x animals"),
            "LAION improved aesthetic predictor on L2-normalised CLIP ViT-L/14 embeddings (DAS target, α = 0.005)",
        ),
        r(
            "pickscore",
            true,
            "images in [0, 1] + prompt",
            Scale::new(
                "cosine",
                Some(-1.0),
                Some(1.0),
                Some((0.20, 0.23)),
                "DAS; exp(logit_scale)·cosine ≈ 18–23 official",
            ),
            "PickScore v1, CLIP ViT-H/14 (DAS target, α = 1e-4)",
        ),
        r(
            "hpsv2",
            true,
            "images in [0, 1] + prompt",
            Scale::new(
                "cosine",
                Some(-1.0),
                Some(1.0),
                Some((0.24, 0.31)),
                "tables ×100; v2.0 and v2.1 not comparable",
            ),
            "Human Preference Score v2.0 / v2.1, open_clip ViT-H-14 (cross-reward)",
        ),
        r(
            "image_reward",
            true,
            "images in [0, 1] + prompt",
            Scale::new("raw score", None, None, Some((-2.0, 2.0)), "DAS; z-normalised on the official path"),
            "ImageReward v1.0, BLIP ViT-L/16 + BERT cross-attention + MLP (cross-reward)",
        ),
        r(
            "clip_score",
            true,
            "images in [0, 1] + prompt",
            Scale::new("scale × cosine", None, None, None, "cosine ≈ 0.25–0.30; ×20 as the paper's target"),
            "CLIPScore with openai/clip-vit-large-patch14 (cross-reward; target in the multi-objective task)",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_data_and_print_informatively() {
        let b = info("brightness").unwrap().scale;
        assert_eq!((b.min, b.max), (Some(0.0), Some(1.0)));
        assert_eq!(b.to_string(), "mean pixel value in [0, 1]");
        let j = info("jpeg_compressibility").unwrap().scale;
        assert_eq!(j.to_string(), "−kB of the JPEG at quality 95 ≤ 0, typically ≈ −100…−10 (512² images)");
        for r in catalogue() {
            assert!(!r.scale.unit.is_empty(), "{}", r.kind);
            if let (Some(a), Some(b)) = (r.scale.min, r.scale.max) {
                assert!(a < b, "{}", r.kind);
            }
            if let Some((lo, hi)) = r.scale.typical {
                assert!(lo < hi, "{}", r.kind);
                assert!(r.scale.min.is_none_or(|m| m <= lo) && r.scale.max.is_none_or(|m| hi <= m), "{}", r.kind);
            }
        }
        assert!(info("nonsense").is_none());
    }
}
