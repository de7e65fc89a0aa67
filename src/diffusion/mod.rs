//! The diffusion core: schedules and grids, the step function, and the [`Denoiser`] / [`Decoder`] traits.
//!
//! All sampler state lives on the host as row-major `f32` arrays of shape `[rows, dim]`; models that run on a
//! device upload and download at their boundary. This keeps one sampler code path for the toy, the Fashion-MNIST
//! latent model and Stable Diffusion.

pub mod schedule;
pub mod step;

use crate::{Error, Result};

/// Rows in a host buffer of `len` values with rows of length `dim`; an error naming `what` otherwise.
pub fn rows(what: &str, len: usize, dim: usize) -> Result<usize> {
    if dim == 0 || len % dim != 0 {
        return Err(Error::config(format!("{what}: buffer of {len} values is not a multiple of the row length {dim}")));
    }
    Ok(len / dim)
}

/// A device tensor as host `f32` values, row-major (the download side of a model's boundary).
pub fn to_host(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?)
}

/// Conditioning of a batch: per-row class/prompt index (`None` = unconditional model).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Cond {
    /// No conditioning.
    #[default]
    None,
    /// One label (class or prompt id) per row.
    Labels(Vec<usize>),
}

impl Cond {
    /// The conditioning of the batch rows `r` (labels sliced; a label list too short for `r` is kept whole, so the
    /// consumer reports the mismatch).
    pub fn slice(&self, r: std::ops::Range<usize>) -> Cond {
        match self {
            Cond::None => Cond::None,
            Cond::Labels(l) => Cond::Labels(l.get(r).map_or_else(|| l.clone(), <[usize]>::to_vec)),
        }
    }
}

/// Callback of [`Decoder::decode_vjp`]: `(images, rows, grad_out)` scores the decoded batch rows `rows` (`images`
/// row-major, those rows only) and writes the cotangent — the score's gradient w.r.t. each image — into `grad_out`.
pub type ImageCotangent<'a> = dyn FnMut(&[f32], std::ops::Range<usize>, &mut [f32]) -> Result<()> + 'a;

/// Callback computing the cotangent u (w.r.t. ε̂) from ε̂: `(eps, u_out)`.
pub type Cotangent<'a> = dyn FnMut(&[f32], &mut [f32]) -> Result<()> + 'a;

/// An ε-prediction network (or an analytic ε), batched over rows of length [`Denoiser::dim`].
pub trait Denoiser: Send + Sync {
    /// Length of one sample (latent dimension).
    fn dim(&self) -> usize;
    /// ε̂(x, t, c) for every row of `x`, written into `eps`.
    fn eps(&self, x: &[f32], t: usize, cond: &Cond, eps: &mut [f32]) -> Result<()>;
    /// Forward plus vector-Jacobian product: writes ε̂ into `eps`, asks `cot(eps, u)` for the cotangent u and
    /// writes (∂ε̂/∂x)ᵀu into `vjp`. One forward, one backward.
    fn eps_vjp(
        &self,
        x: &[f32],
        t: usize,
        cond: &Cond,
        eps: &mut [f32],
        cot: &mut Cotangent<'_>,
        vjp: &mut [f32],
    ) -> Result<()>;
    /// Denoiser rows per evaluation (2 with classifier-free guidance).
    fn rows_per_eval(&self) -> u64 {
        1
    }
}

/// Latent → reward input (image). Identity for the toy.
pub trait Decoder: Send + Sync {
    /// Output length per row.
    fn out_dim(&self, in_dim: usize) -> usize;
    /// Whether this decoder is the identity (lets callers skip copies and ledger entries stay honest).
    fn is_identity(&self) -> bool {
        false
    }
    /// Decode every row.
    fn decode(&self, x: &[f32], out: &mut Vec<f32>) -> Result<()>;
    /// (∂D/∂x)ᵀv for every row.
    fn vjp(&self, x: &[f32], v: &[f32], out: &mut [f32]) -> Result<()>;
    /// The gradient of a score of the decoded images: decodes the `n` rows of `x`, asks `score` for the images'
    /// cotangent v and writes (∂D/∂x)ᵀv into `out`. The default decodes all rows, scores them at once and calls
    /// [`Decoder::vjp`] (two decoder forward passes); a decoder that keeps its autograd graph overrides it with one
    /// forward pass per chunk of rows, scoring each chunk as it comes (the image reward's guidance gradient).
    fn decode_vjp(&self, x: &[f32], n: usize, score: &mut ImageCotangent<'_>, out: &mut [f32]) -> Result<()> {
        let mut y = Vec::new();
        self.decode(x, &mut y)?;
        let mut v = vec![0f32; y.len()];
        score(&y, 0..n, &mut v)?;
        self.vjp(x, &v, out)
    }
}

/// The identity decoder of the toy problems.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl Decoder for Identity {
    fn out_dim(&self, in_dim: usize) -> usize {
        in_dim
    }
    fn is_identity(&self) -> bool {
        true
    }
    fn decode(&self, x: &[f32], out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        out.extend_from_slice(x);
        Ok(())
    }
    fn vjp(&self, _x: &[f32], v: &[f32], out: &mut [f32]) -> Result<()> {
        out.copy_from_slice(v);
        Ok(())
    }
}
