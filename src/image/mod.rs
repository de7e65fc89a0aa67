//! Image handling shared by the rewards: the CLIP preprocessing paths of rewards.md §0 ([`preprocess`]).

pub mod preprocess;

pub use preprocess::{differentiable, official, CropRounding, CLIP_MEAN, CLIP_STD};
