//! One DDIM step with caller-supplied noise (methods.md §0.4): returns (x̂0, μ, σ); the caller draws
//! x_prev = μ + σ·z from its own seeded stream. η = 1 is the DDPM posterior on the sub-grid.

/// σ = η·√((1−a')/(1−a))·√(1 − a/a'). Zero when a' = a (identity step) or a' = 1 (final x̂0 step).
pub fn sigma(a: f64, a_prev: f64, eta: f64) -> f64 {
    let v = (1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev);
    eta * v.max(0.0).sqrt()
}

/// Coefficients of one step: x̂0 = (x − s_e·ε̂)/√a and μ = c_x0·x̂0 + c_eps·ε̂.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCoef {
    /// √a.
    pub sqrt_a: f64,
    /// √(1 − a).
    pub sqrt_1ma: f64,
    /// √a'.
    pub c_x0: f64,
    /// √(1 − a' − σ²).
    pub c_eps: f64,
    /// σ.
    pub sigma: f64,
}

impl StepCoef {
    /// Coefficients for ᾱ values (a, a') at η.
    pub fn new(a: f64, a_prev: f64, eta: f64) -> Self {
        let s = sigma(a, a_prev, eta);
        StepCoef {
            sqrt_a: a.sqrt(),
            sqrt_1ma: (1.0 - a).sqrt(),
            c_x0: a_prev.sqrt(),
            c_eps: (1.0 - a_prev - s * s).max(0.0).sqrt(),
            sigma: s,
        }
    }
}

/// Tweedie / DDIM estimate x̂0 = (x − √(1−a)·ε̂)/√a, written into `x0`. No clipping.
pub fn x0_hat(c: &StepCoef, x: &[f32], eps: &[f32], x0: &mut [f32]) {
    let (sa, s1) = (c.sqrt_a, c.sqrt_1ma);
    for ((o, &xv), &e) in x0.iter_mut().zip(x).zip(eps) {
        *o = ((xv as f64 - s1 * e as f64) / sa) as f32;
    }
}

/// ε recovered from x̂0 (the ε-free form of §0.4): ε = (x − √a·x̂0)/√(1−a).
pub fn eps_from_x0(c: &StepCoef, x: &[f32], x0: &[f32], eps: &mut [f32]) {
    for ((o, &xv), &x0v) in eps.iter_mut().zip(x).zip(x0) {
        *o = ((xv as f64 - c.sqrt_a * x0v as f64) / c.sqrt_1ma) as f32;
    }
}

/// Step mean μ = √a'·x̂0 + √(1 − a' − σ²)·ε̂, written into `mean`.
pub fn mean(c: &StepCoef, x0: &[f32], eps: &[f32], mean: &mut [f32]) {
    for ((o, &x0v), &e) in mean.iter_mut().zip(x0).zip(eps) {
        *o = (c.c_x0 * x0v as f64 + c.c_eps * e as f64) as f32;
    }
}

/// The full step: from x_t and ε̂ compute x̂0 and μ; return σ.
pub fn step(c: &StepCoef, x: &[f32], eps: &[f32], x0: &mut [f32], mu: &mut [f32]) -> f64 {
    x0_hat(c, x, eps, x0);
    mean(c, x0, eps, mu);
    c.sigma
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::{BetaSchedule, Grid, Spacing};

    #[test]
    fn ddpm_posterior_identity() {
        // η = 1 ⇒ μ = c1·x̂0 + c2·x_t, σ = c3 (methods.md §0.4, derived).
        let g = Grid::new(BetaSchedule::Linear, Spacing::ToyClean, 50);
        for i in [0, 10, 30, 48] {
            let (a, ap) = (g.a[i], g.a_prev[i]);
            let c = StepCoef::new(a, ap, 1.0);
            let x = [0.7f32, -1.3];
            let eps = [0.2f32, 0.9];
            let mut x0 = [0f32; 2];
            let mut mu = [0f32; 2];
            let s = step(&c, &x, &eps, &mut x0, &mut mu);
            let c1 = ap.sqrt() * (1.0 - a / ap) / (1.0 - a);
            let c2 = (a / ap).sqrt() * (1.0 - ap) / (1.0 - a);
            let c3 = ((1.0 - ap) * (1.0 - a / ap) / (1.0 - a)).sqrt();
            assert!((s - c3).abs() < 1e-12);
            for k in 0..2 {
                let want = c1 * x0[k] as f64 + c2 * x[k] as f64;
                assert!((mu[k] as f64 - want).abs() < 1e-5, "{} vs {}", mu[k], want);
            }
        }
    }

    #[test]
    fn by_hand() {
        // a = 0.64, a' = 0.81, η = 0: x̂0 = (x − 0.6ε)/0.8, μ = 0.9x̂0 + √0.19·ε.
        let c = StepCoef::new(0.64, 0.81, 0.0);
        let (x, e) = ([1.0f32], [0.5f32]);
        let (mut x0, mut mu) = ([0f32], [0f32]);
        let s = step(&c, &x, &e, &mut x0, &mut mu);
        assert_eq!(s, 0.0);
        assert!((x0[0] - 0.875).abs() < 1e-6);
        assert!((mu[0] as f64 - (0.9 * 0.875 + 0.19f64.sqrt() * 0.5)).abs() < 1e-6);
        // identity step: a' = a ⇒ σ = 0 and μ = x.
        let c = StepCoef::new(0.5, 0.5, 1.0);
        let s = step(&c, &x, &e, &mut x0, &mut mu);
        assert_eq!(s, 0.0);
        assert!((mu[0] - 1.0).abs() < 1e-6);
    }
}
