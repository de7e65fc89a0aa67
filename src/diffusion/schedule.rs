//! Noise schedules (β, ᾱ) and sampling grids (methods.md §0.1, §0.2, §0.8).
//!
//! ᾱ is 0-indexed: ᾱ[t] = Π_{s≤t}(1 − β[s]). A [`Grid`] lists, for loop index i (i = 0 is the noisiest step), the
//! timestep t_i fed to the network and the ᾱ values a = ᾱ[t_i], a' = ᾱ[p_i] (or ᾱ_final when p_i < 0).

use serde::{Deserialize, Serialize};

/// Number of training timesteps of every schedule here.
pub const T_TRAIN: usize = 1000;

/// A β schedule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// β linear in [1e-4, 0.02] (DDPM, the toy).
    Linear,
    /// β = linspace(√0.00085, √0.012)² (Stable Diffusion 1.5).
    ScaledLinear,
    /// Nichol & Dhariwal's cosine schedule, β clipped at 0.999 (methods.md §0.8).
    Cosine,
}

impl BetaSchedule {
    /// The 1000 β values.
    pub fn betas(self) -> Vec<f64> {
        let n = T_TRAIN;
        match self {
            BetaSchedule::Linear => linspace(1e-4, 0.02, n),
            BetaSchedule::ScaledLinear => {
                linspace(0.00085f64.sqrt(), 0.012f64.sqrt(), n).into_iter().map(|b| b * b).collect()
            }
            BetaSchedule::Cosine => {
                let f = |u: f64| ((u + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..n).map(|s| (1.0 - f((s + 1) as f64 / n as f64) / f(s as f64 / n as f64)).min(0.999)).collect()
            }
        }
    }
    /// ᾱ[t] = Π_{s≤t}(1 − β[s]).
    pub fn alpha_bar(self) -> Vec<f64> {
        let mut acc = 1.0;
        self.betas()
            .into_iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect()
    }
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).collect()
}

/// Timestep spacing of the sampling grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spacing {
    /// diffusers DDIM "leading" spacing with steps_offset 1; ᾱ_final = ᾱ[0].
    Sd15,
    /// The reference toy notebooks: t = trunc(linspace(999, 0, N)), p = t − 1000/N, ᾱ_final = ᾱ[0] (σ = 0 last step).
    ToyRef,
    /// t = (N−1−i)·1000/N, p = t − 1000/N, ᾱ_final = 1: the last step returns x̂0.
    ToyClean,
}

/// A sampling grid: per loop index i, the network timestep and the two ᾱ values of the step.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    /// Timestep fed to the network at loop index i.
    pub t: Vec<usize>,
    /// a_i = ᾱ[t_i].
    pub a: Vec<f64>,
    /// a'_i = ᾱ[p_i], or ᾱ_final when p_i < 0.
    pub a_prev: Vec<f64>,
}

impl Grid {
    /// Build the grid of `n` steps with the given spacing over `schedule`.
    pub fn new(schedule: BetaSchedule, spacing: Spacing, n: usize) -> Self {
        assert!((1..=T_TRAIN).contains(&n), "steps must be in 1..=1000");
        let ab = schedule.alpha_bar();
        let stride = (T_TRAIN / n) as i64;
        let (ts, final_ab): (Vec<i64>, f64) = match spacing {
            Spacing::Sd15 => ((0..n).map(|i| 1 + (n - 1 - i) as i64 * stride).collect(), ab[0]),
            Spacing::ToyRef => (
                (0..n)
                    .map(|i| if n == 1 { 999 } else { (999.0 - 999.0 * i as f64 / (n - 1) as f64).trunc() as i64 })
                    .collect(),
                ab[0],
            ),
            Spacing::ToyClean => ((0..n).map(|i| (n - 1 - i) as i64 * stride).collect(), 1.0),
        };
        let mut t = Vec::with_capacity(n);
        let mut a = Vec::with_capacity(n);
        let mut a_prev = Vec::with_capacity(n);
        for &ti in &ts {
            let p = ti - stride;
            t.push(ti as usize);
            a.push(ab[ti as usize]);
            a_prev.push(if p >= 0 { ab[p as usize] } else { final_ab });
        }
        Grid { t, a, a_prev }
    }
    /// Number of steps N.
    pub fn len(&self) -> usize {
        self.t.len()
    }
    /// Whether the grid has no steps.
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }
    /// σ of step i at the given η (methods.md §0.4).
    pub fn sigma(&self, i: usize, eta: f64) -> f64 {
        crate::diffusion::step::sigma(self.a[i], self.a_prev[i], eta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) {
        assert!((a - b).abs() <= rel * b.abs().max(1e-300), "{a} vs {b}");
    }

    #[test]
    fn golden_linear() {
        let ab = BetaSchedule::Linear.alpha_bar();
        close(ab[0], 0.9999, 1e-9);
        close(ab[499], 0.078587, 1e-4);
        close(ab[999], 4.0358e-5, 1e-3);
    }

    #[test]
    fn golden_scaled_linear() {
        let ab = BetaSchedule::ScaledLinear.alpha_bar();
        close(ab[0], 0.99915, 1e-6);
        close(ab[1], 0.998296, 1e-5);
        close(ab[501], 0.274999, 1e-4);
        close(ab[991], 0.005130, 1e-3);
        close(ab[999], 0.004660, 1e-3);
    }

    #[test]
    fn golden_cosine() {
        let b = BetaSchedule::Cosine.betas();
        close(b[0], 4.1284e-5, 1e-3);
        close(b[1], 4.6142e-5, 1e-3);
        close(b[500], 3.1557e-3, 1e-3);
        close(b[998], 0.75, 1e-3);
        close(b[999], 0.999, 1e-9);
    }

    #[test]
    fn grids() {
        let g = Grid::new(BetaSchedule::ScaledLinear, Spacing::Sd15, 100);
        assert_eq!(g.t[0], 991);
        assert_eq!(g.t[1], 981);
        assert_eq!(g.t[99], 1);
        close(g.sigma(0, 1.0), 0.33419, 1e-4);
        close(g.sigma(98, 1.0), 0.03780, 1e-3);
        close(g.sigma(99, 1.0), 0.020648, 1e-4);
        let g = Grid::new(BetaSchedule::Linear, Spacing::ToyRef, 100);
        assert_eq!(&g.t[..3], &[999, 988, 978]);
        assert_eq!(g.t[98], 10);
        assert_eq!(g.t[99], 0);
        assert_eq!(g.sigma(99, 1.0), 0.0);
        let g = Grid::new(BetaSchedule::Linear, Spacing::ToyClean, 100);
        assert_eq!(g.t[0], 990);
        assert_eq!(g.t[99], 0);
        close(g.sigma(98, 1.0), 0.00977, 2e-3);
        assert_eq!(g.sigma(99, 1.0), 0.0);
        assert_eq!(g.a_prev[99], 1.0);
    }
}
