//! Tempering schedules of DAS (methods.md §7.1, §13): λ_i multiplies the look-ahead twist R_i/α.

use serde::{Deserialize, Serialize};

use crate::samplers::logspace::ess;

/// How λ_i is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemperingKind {
    /// λ_i = min((1+γ)^i − 1, 1) — the DAS default.
    #[default]
    Exp,
    /// λ ≡ 1 (TDS).
    Constant,
    /// λ_i by bisection so that the ESS after weighting equals `target_ess`·K (methods.md §13).
    Adaptive,
}

/// γ(N) = 2^{1/i*} − 1 with i* = round(0.87·N): λ reaches 1 at 87 % of the steps (N = 100 → 0.007999).
pub fn default_gamma(n: usize) -> f64 {
    let istar = (0.87 * n as f64).round().max(1.0);
    2f64.powf(1.0 / istar) - 1.0
}

/// λ_i of the `exp` schedule; i may be N (the proposal's look-ahead of the last step).
pub fn lambda_exp(gamma: f64, i: usize) -> f64 {
    ((1.0 + gamma).powi(i as i32) - 1.0).min(1.0)
}

/// Adaptive λ by bisection: largest λ ∈ [λ_prev, 1] with ESS(base + λ·s) ≥ target (methods.md §13).
/// `base` = ℓ + Δ − τ, `s` = R/α per particle.
pub fn bisect_lambda(base: &[f64], s: &[f64], lambda_prev: f64, target: f64) -> f64 {
    let f = |lam: f64| {
        let l: Vec<f64> = base.iter().zip(s).map(|(b, si)| b + lam * si).collect();
        ess(&l)
    };
    if f(1.0) >= target {
        return 1.0;
    }
    if !(f(lambda_prev) >= target) {
        return lambda_prev;
    }
    let (mut lo, mut hi) = (lambda_prev, 1.0);
    for _ in 0..50 {
        if hi - lo < 1e-6 {
            break;
        }
        let mid = 0.5 * (lo + hi);
        if f(mid) >= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golden() {
        let g = 0.008;
        for (i, want) in [(0, 0.0), (1, 0.008), (10, 0.0829), (25, 0.2204), (50, 0.4895), (75, 0.8178), (86, 0.9843)] {
            assert!((lambda_exp(g, i) - want).abs() < 1e-4, "λ_{i} = {}", lambda_exp(g, i));
        }
        assert_eq!(lambda_exp(g, 87), 1.0);
        assert!((default_gamma(100) - 0.007999).abs() < 1e-6);
        assert!((default_gamma(50) - 0.01588).abs() < 1e-5);
        let lcm = [0.0, 0.1, 0.21, 0.331, 0.4641, 0.6105, 0.7716, 0.9487];
        for (i, w) in lcm.iter().enumerate() {
            assert!((lambda_exp(0.1, i) - w).abs() < 1e-4);
        }
    }

    #[test]
    fn bisection_hits_target() {
        let base = vec![0.0; 8];
        let s: Vec<f64> = (0..8).map(|k| k as f64).collect();
        let lam = bisect_lambda(&base, &s, 0.0, 4.0);
        let l: Vec<f64> = s.iter().map(|v| lam * v).collect();
        assert!((ess(&l) - 4.0).abs() < 1e-3, "{}", ess(&l));
        assert_eq!(bisect_lambda(&base, &[0.0; 8], 0.3, 4.0), 1.0);
    }
}
