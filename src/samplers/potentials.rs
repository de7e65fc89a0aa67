//! FK-steering potentials (methods.md §10): the log-potential log G of an intermediate resampling step from the
//! look-ahead reward r_k = R_{s_k} and a per-particle running state (gathered at resampling like every field).
//! The final step always applies λ·r(D(x_0)) − Σ_{ancestral path} log G, so the product of all potentials along a
//! path is exactly exp(λ·r_final) and the particle system targets p·exp(λr) for every potential.

use serde::{Deserialize, Serialize};

/// An FK potential.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Potential {
    /// log G = λ·m_k, m_k = max(r_k, m_{k−1}), m_0 = r_min (the reference's default).
    #[default]
    Max,
    /// log G = λ·(r_k − r_{k−1}), r_0 = r_min: differences telescope to the exact tilt.
    Diff,
    /// log G = λ·s_k, s_k = r_k + s_{k−1}, s_0 = r_min.
    Add,
    /// log G = λ·r_k.
    Rt,
}

impl Potential {
    /// (log G, new running state) for look-ahead reward `r`, running state `state` and strength λ.
    pub fn log_g(self, lambda: f64, r: f64, state: f64) -> (f64, f64) {
        match self {
            Potential::Max => {
                let m = r.max(state);
                (lambda * m, m)
            }
            Potential::Diff => (lambda * (r - state), r),
            Potential::Add => {
                let s = r + state;
                (lambda * s, s)
            }
            Potential::Rt => (lambda * r, state),
        }
    }

    /// Final log-potential: λ·r_final − Σ log G of the particle's ancestral path.
    pub fn final_log_g(lambda: f64, r_final: f64, path_sum: f64) -> f64 {
        lambda * r_final - path_sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_telescope_to_the_exact_tilt() {
        let rs = [-3.0, -1.0, -2.0, 0.5];
        let (lam, r_min, r_final) = (0.7, -10.0, 0.25);
        for pot in [Potential::Max, Potential::Diff, Potential::Add, Potential::Rt] {
            let (mut state, mut sum) = (r_min, 0.0);
            for &r in &rs {
                let (lg, s) = pot.log_g(lam, r, state);
                state = s;
                sum += lg;
            }
            let total = sum + Potential::final_log_g(lam, r_final, sum);
            assert!((total - lam * r_final).abs() < 1e-12, "{pot:?}");
        }
        // By hand: max keeps the running maximum, diff the differences, add the running sum.
        assert_eq!(Potential::Max.log_g(2.0, -1.0, 0.5), (1.0, 0.5));
        assert_eq!(Potential::Diff.log_g(2.0, -1.0, 0.5), (-3.0, -1.0));
        assert_eq!(Potential::Add.log_g(2.0, -1.0, 0.5), (-1.0, -0.5));
        assert_eq!(Potential::Rt.log_g(2.0, -1.0, 0.5), (-2.0, 0.5));
    }
}
