//! The Gaussian-mixture toy problems with exact tilted targets (toy.md): mixtures, the analytic denoiser, the
//! reference's learned MLP denoiser and its trainer, and the exact soft value (oracle twist).

pub mod gmm;
pub mod linalg;
pub mod mlp;
pub mod oracle;
