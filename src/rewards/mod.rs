//! Rewards: differentiable or black-box scorers of decoded samples, each declaring its scale.

pub mod aesthetic_head;
pub mod quadratic;
pub mod weights;

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
    /// r(y) for every row of `y`.
    fn score(&self, y: &[f32], out: &mut [f64]) -> Result<()>;
    /// r(y) and ∇_y r(y) for every row.
    fn score_grad(&self, y: &[f32], out: &mut [f64], grad: &mut [f32]) -> Result<()>;
}

/// Description of a reward kind for `alignbench list rewards`.
#[derive(Clone, Debug)]
pub struct RewardInfo {
    /// YAML `kind:`.
    pub kind: &'static str,
    /// Differentiable (`true`) or black-box.
    pub differentiable: bool,
    /// Scale.
    pub scale: &'static str,
    /// One line of description.
    pub about: &'static str,
}

/// Every reward kind this build knows.
pub fn catalogue() -> Vec<RewardInfo> {
    vec![RewardInfo {
        kind: "quadratic",
        differentiable: true,
        scale: "r(x) = −½xᵀAx + bᵀx + c, unbounded above by r_max",
        about: "quadratic reward of the toy problems (presets gmm1, gmm2) with exact gradient and exact tilted target",
    }]
}
