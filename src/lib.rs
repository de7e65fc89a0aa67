//! alignbench: reproduce and benchmark test-time reward alignment of diffusion models — DAS (tempered SMC, Kim,
//! Kim & Park, ICLR 2025) against guidance, best-of-N and other particle methods — at equal compute, with exact
//! ground truth on the Gaussian-mixture toy.
//!
//! Layers (arrows point down): `report` → `experiment` → `samplers` → `diffusion`, `rewards`, `toy`; `metrics` are pure.
#![warn(missing_docs)]

pub mod diffusion;
pub mod error;
pub mod experiment;
pub mod finetune;
pub mod image;
pub mod ledger;
pub mod methods;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod numerics;
pub mod problems;
pub mod report;
pub mod rewards;
pub mod rng;
pub mod samplers;
pub mod score;
pub mod testing;

pub use error::{Error, Result};
