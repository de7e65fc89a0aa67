//! The look-ahead reward R_i(x) = r(D(x̂0(x, t_i))) and its gradients (methods.md §0.3, §0.5), shared by every
//! guided method.
//!
//! - full gradient g = ∇_x R = Jᵀg0 with J = ∂x̂0/∂x = (I − √(1−a)·∂ε̂/∂x)/√a and g0 = ∇_{x̂0} r(D(x̂0)):
//!   one denoiser forward and one VJP (counted as `vjp_denoiser`);
//! - x̂0-only gradient g0 (MPGD): no backprop through the denoiser (counted as `vjp_reward`).

use std::time::Instant;

use super::Model;
use crate::diffusion::step::{x0_hat, StepCoef};
use crate::diffusion::Cond;
use crate::ledger::Phase;
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
fn reward_at(m: &Model, x0: &[f32], r: &mut [f64], grad: Option<&mut [f32]>) -> Result<()> {
    let rows = r.len() as u64;
    m.ledger.add_decoder(rows);
    m.ledger.add_reward(rows);
    if m.decoder.is_identity() {
        return match grad {
            Some(g) => m.reward.score_grad(x0, r, g),
            None => m.reward.score(x0, r),
        };
    }
    let mut y = Vec::new();
    m.decoder.decode(x0, &mut y)?;
    match grad {
        Some(g) => {
            let mut gy = vec![0f32; y.len()];
            m.reward.score_grad(&y, r, &mut gy)?;
            m.decoder.vjp(x0, &gy, g)
        }
        None => m.reward.score(&y, r),
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
                    reward_at(m, x0, r, Some(g))?;
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
                    reward_at(m, out.x0, out.r, Some(out.g))?;
                    m.ledger.add_vjp_reward(rows);
                } else {
                    reward_at(m, out.x0, out.r, None)?;
                }
                m.ledger.add_time(Phase::Reward, t1);
            }
        }
    }
    Ok(())
}
