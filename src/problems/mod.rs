//! Problems: a data distribution with its models — the Gaussian-mixture toy with exact tilted targets (`toy`),
//! FMNIST-align (`mini`) and Stable Diffusion 1.5 (`sd15`). Everything a problem needs lives in its folder.

pub mod cross_reward;
pub mod mini;
pub mod sd15;
pub mod toy;
