//! The look-ahead reward R_i(x) = r(D(x̂0(x, t_i))) and its gradients (methods.md §0.3, §0.5), shared by every
//! guided method.
//!
//! - full gradient g = ∇_x R = Jᵀg0 with J = ∂x̂0/∂x = (I − √(1−a)·∂ε̂/∂x)/√a and g0 = ∇_{x̂0} r(D(x̂0)):
//!   one denoiser forward and one VJP (counted as `vjp_denoiser`);
//! - x̂0-only gradient g0 (MPGD): no backprop through the denoiser (counted as `vjp_reward`).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Model;
use crate::diffusion::step::{x0_hat, StepCoef};
use crate::diffusion::Cond;
use crate::ledger::Phase;
use crate::rewards::{score_decoded, score_grad_decoded};
use crate::Result;

/// Which gradient the look-ahead computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grad {
    /// No gradient.
    None,
    /// ∇_x r(D(x̂0(x))) through the denoiser.
    Full,
    /// ∇_{x̂0} r(D(x̂0)) with x̂0 detached.
    X0Only,
}

/// Output buffers of [`lookahead`] (row-major, `rows × dim`).
pub struct Look<'b> {
    /// ε̂.
    pub eps: &'b mut [f32],
    /// x̂0.
    pub x0: &'b mut [f32],
    /// R = r(D(x̂0)) (left untouched when no reward is asked for).
    pub r: &'b mut [f64],
    /// The gradient asked for (untouched for [`Grad::None`]).
    pub g: &'b mut [f32],
}

/// r(D(y)) and, if `grad`, its gradient w.r.t. y's pre-image (through the decoder). Counts the ledger.
fn reward_at(m: &Model, x0: &[f32], cond: &Cond, r: &mut [f64], grad: Option<&mut [f32]>) -> Result<()> {
    let rows = r.len() as u64;
    m.ledger.add_decoder(rows);
    m.ledger.add_reward(rows);
    match grad {
        Some(g) => score_grad_decoded(m.decoder, m.reward, x0, cond, r, g),
        None => score_decoded(m.decoder, m.reward, x0, cond, r),
    }
}

/// Denoise `x` at loop index `i`; optionally evaluate the look-ahead reward and a gradient.
pub fn lookahead(m: &Model, x: &[f32], cond: &Cond, i: usize, grad: Grad, reward: bool, out: Look<'_>) -> Result<()> {
    let rows = (x.len() / m.dim()) as u64;
    let t = m.grid.t[i];
    let c = StepCoef::new(m.grid.a[i], m.grid.a_prev[i], m.eta);
    let t0 = Instant::now();
    m.ledger.add_nfe(rows * m.denoiser.rows_per_eval());
    match grad {
        Grad::Full => {
            let mut jv = vec![0f32; x.len()];
            let mut inner = std::time::Duration::ZERO;
            let Look { eps, x0, r, g } = out;
            {
                let mut cot = |e: &[f32], u: &mut [f32]| -> Result<()> {
                    let ti = Instant::now();
                    x0_hat(&c, x, e, x0);
                    reward_at(m, x0, cond, r, Some(g))?;
                    // u = −(√(1−a)/√a)·g0 so that Jᵀg0 = g0/√a + (∂ε̂/∂x)ᵀu.
                    let s = -(c.sqrt_1ma / c.sqrt_a) as f32;
                    for (ui, gi) in u.iter_mut().zip(g.iter()) {
                        *ui = s * gi;
                    }
                    inner += ti.elapsed();
                    Ok(())
                };
                m.denoiser.eps_vjp(x, t, cond, eps, &mut cot, &mut jv)?;
            }
            let inv = (1.0 / c.sqrt_a) as f32;
            for (gi, j) in g.iter_mut().zip(&jv) {
                *gi = *gi * inv + j;
            }
            m.ledger.add_vjp_denoiser(rows);
            let total = t0.elapsed();
            m.ledger.add_time(Phase::Denoise, Instant::now() - total.saturating_sub(inner));
            m.ledger.add_time(Phase::Reward, Instant::now() - inner);
        }
        Grad::X0Only | Grad::None => {
            m.denoiser.eps(x, t, cond, out.eps)?;
            x0_hat(&c, x, out.eps, out.x0);
            m.ledger.add_time(Phase::Denoise, t0);
            if reward || grad == Grad::X0Only {
                let t1 = Instant::now();
                if grad == Grad::X0Only {
                    reward_at(m, out.x0, cond, out.r, Some(out.g))?;
                    m.ledger.add_vjp_reward(rows);
                } else {
                    reward_at(m, out.x0, cond, out.r, None)?;
                }
                m.ledger.add_time(Phase::Reward, t1);
            }
        }
    }
    Ok(())
}

/// rms(v) = √(mean(v²)) (methods.md §0.5), in f64.
pub fn rms(v: &[f32]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    (v.iter().map(|&a| a as f64 * a as f64).sum::<f64>() / v.len() as f64).sqrt()
}

/// Over which elements the norm-matching rms of FreeDoM / MPGD is taken (methods.md §0.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormScope {
    /// One rms per sample (the definition of methods.md §0.5).
    #[default]
    Sample,
    /// One rms over the K particles of a prompt group — the reference codes' one scalar per batch, made
    /// independent of how the runner chunks groups.
    Group,
}

/// Norm-matched step sizes ρ_t = ρ·rms(ref)/rms(g) (FreeDoM §5, MPGD §6) for each row of a batch of `k`-particle
/// groups. A row (or group) whose gradient is exactly zero gets step 0 (nothing to match; never 0/0).
pub fn norm_matched(rho: f64, reference: &[f32], g: &[f32], d: usize, k: usize, scope: NormScope) -> Vec<f64> {
    let rows = g.len() / d;
    let per = match scope {
        NormScope::Sample => d,
        NormScope::Group => k * d,
    };
    let mut out = Vec::with_capacity(rows);
    for (rc, gc) in reference.chunks(per).zip(g.chunks(per)) {
        let rg = rms(gc);
        let s = if rg > 0.0 { rho * rms(rc) / rg } else { 0.0 };
        out.extend(std::iter::repeat_n(s, gc.len() / d));
    }
    out
}

/// A window of reverse indices j = N−1−i given as fractions `{ from, to }` of N: j ∈ [from·N, to·N)
/// (FreeDoM/MPGD `[0.3N, 0.7N)`; methods.md §5, §6: the repo's 30/40/70 of N = 100, scaled as fractions of N
/// [design]). A mapping, not a list, so that a list inside a method entry stays a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Lower end (inclusive), fraction of N.
    pub from: f64,
    /// Upper end (exclusive), fraction of N.
    pub to: f64,
}

impl Window {
    /// The window [from, to).
    pub fn new(from: f64, to: f64) -> Self {
        Window { from, to }
    }
    /// Whether loop index `i` of an `n`-step grid lies in the window (j = n−1−i ∈ [from·n, to·n)).
    pub fn contains(&self, i: usize, n: usize) -> bool {
        let j = (n - 1 - i) as f64;
        j >= self.from * n as f64 && j < self.to * n as f64
    }
    /// Steps of an `n`-step grid inside the window.
    pub fn count(&self, n: usize) -> usize {
        (0..n).filter(|&i| self.contains(i, n)).count()
    }
    /// Check 0 ≤ from ≤ to ≤ 1.
    pub fn validate(&self, key: &str) -> Result<()> {
        if !(0.0 <= self.from && self.from <= self.to && self.to <= 1.0) {
            return Err(crate::Error::config(format!(
                "{key}: must be {{ from: lo, to: hi }} with 0 ≤ lo ≤ hi ≤ 1 (fractions of the step count over j = N−1−i), \
                 got {{ from: {}, to: {} }}",
                self.from, self.to
            )));
        }
        Ok(())
    }
}

/// Time-travel re-noising p_i → t_i (FreeDoM, methods.md §5): x ← √(a/a')·x_p + √(1 − a/a')·z'.
pub fn renoise(a: f64, a_prev: f64, x_p: &[f32], z: &[f32], x: &mut [f32]) {
    let r = a / a_prev;
    let (s, n) = (r.sqrt(), (1.0 - r).max(0.0).sqrt());
    for ((o, &xp), &zz) in x.iter_mut().zip(x_p).zip(z) {
        *o = (s * xp as f64 + n * zz as f64) as f32;
    }
}

/// Noise of time-travel pass `pass` at step i from the `travel` stream: `which` = 0 for the pass's step noise
/// z_pass (pass ≥ 1; pass 0 uses the common `step` stream), 1 for the re-noising z'. Keyed per (group, i, pass,
/// which), drawn particle-major, so K = 8 contains K = 4.
pub fn travel_noise(m: &Model, groups: &[u64], k: usize, i: usize, pass: usize, which: u64, z: &mut [f32]) {
    let d = m.dim();
    let key = ((i as u64) << 16) | ((pass as u64) << 1) | which;
    for (gi, &g) in groups.iter().enumerate() {
        m.streams.normals(crate::rng::Purpose::Travel, g, key, &mut z[gi * k * d..(gi + 1) * k * d]);
    }
}

/// One DDPM/DDIM posterior draw of time-travel pass `pass` at loop index i: x_p = μ(x̂0, ε̂) + σ·z, where z is the
/// common `step` noise on pass 0 (so a single pass equals plain sampling) and the `travel` stream afterwards.
/// The rows are `k` particles per group of the batch (k is read from the buffer lengths).
#[allow(clippy::too_many_arguments)]
pub fn posterior_draw(
    m: &Model,
    b: &super::Batch,
    i: usize,
    pass: usize,
    x0: &[f32],
    eps: &[f32],
    z: &mut [f32],
    x_p: &mut [f32],
) {
    let k = z.len() / (b.groups.len() * m.dim());
    let c = &StepCoef::new(m.grid.a[i], m.grid.a_prev[i], m.eta);
    if pass == 0 {
        super::step_noise(m, b, k, i, z);
    } else {
        travel_noise(m, &b.groups, k, i, pass, 0, z);
    }
    crate::diffusion::step::mean(c, x0, eps, x_p);
    let s = c.sigma as f32;
    for (xv, zv) in x_p.iter_mut().zip(z.iter()) {
        *xv += s * zv;
    }
}

/// Time travel after pass `pass`: re-noise x_p back to t_i into `x` with fresh `travel` noise (FreeDoM, MPGD).
pub fn travel_back(m: &Model, b: &super::Batch, i: usize, pass: usize, x_p: &[f32], z: &mut [f32], x: &mut [f32]) {
    let k = z.len() / (b.groups.len() * m.dim());
    travel_noise(m, &b.groups, k, i, pass, 1, z);
    renoise(m.grid.a[i], m.grid.a_prev[i], x_p, z, x);
}
