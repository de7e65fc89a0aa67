//! Particle state of SMC samplers. The only resampling API is [`Particles::gather`], so no per-particle array can
//! be forgotten when ancestors are drawn (methods.md §7.4). Shared by DAS, TDS, plain SMC and FK steering.

use rand::RngCore;

use super::logspace::{ess, lse, normalized};
use super::resampling::Resampler;

/// Which fields a gather skips — the reference implementation's re-indexing bugs (methods.md §7.8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StaleFields {
    /// Do not gather the guidance gradient g.
    pub guidance: bool,
    /// Do not gather the twist τ'.
    pub twist: bool,
    /// Do not gather x̂0.
    pub x0hat: bool,
}

/// Per-particle arrays of a batch of groups of `k` particles of dimension `d`.
#[derive(Clone, Debug, Default)]
pub struct Particles {
    /// Particles per group.
    pub k: usize,
    /// Dimension.
    pub d: usize,
    /// Current states x.
    pub x: Vec<f32>,
    /// ε̂ at x.
    pub eps: Vec<f32>,
    /// x̂0 at x.
    pub x0: Vec<f32>,
    /// Guidance gradient ∇_x R/α.
    pub g: Vec<f32>,
    /// Look-ahead reward R = r(D(x̂0)).
    pub r: Vec<f64>,
    /// Twist of the current step τ' = λ_i·R/α.
    pub tau_new: Vec<f64>,
    /// Twist of the previous step τ.
    pub tau: Vec<f64>,
    /// log p − log q of the last proposal (Δ).
    pub delta: Vec<f64>,
    /// Normalised log-weights ℓ.
    pub log_w: Vec<f64>,
    /// Columns of [`Particles::aux`] per particle.
    pub n_aux: usize,
    /// Method-specific running per-particle quantities (FK: running potential state, Σ log G of the ancestral
    /// path), row-major `n_aux` per particle; gathered like every other field.
    pub aux: Vec<f64>,
}

impl Particles {
    /// State for `groups` groups starting at `x`.
    pub fn new(x: Vec<f32>, groups: usize, k: usize, d: usize) -> Self {
        let n = groups * k;
        let lk = -(k as f64).ln();
        Particles {
            k,
            d,
            x,
            eps: vec![0.0; n * d],
            x0: vec![0.0; n * d],
            g: vec![0.0; n * d],
            r: vec![0.0; n],
            tau_new: vec![0.0; n],
            tau: vec![0.0; n],
            delta: vec![0.0; n],
            log_w: vec![lk; n],
            n_aux: 0,
            aux: vec![],
        }
    }

    /// Add `n_aux` per-particle running quantities, all initialised to `init`.
    pub fn with_aux(mut self, n_aux: usize, init: f64) -> Self {
        self.n_aux = n_aux;
        self.aux = vec![init; self.log_w.len() * n_aux];
        self
    }

    /// Normalise group `gi`'s log-weights in place and return the log normaliser L = LSE(ℓ) (its increment to
    /// log Ẑ). If L is not finite nothing is changed and L is returned for the caller to report.
    pub fn normalise(&mut self, gi: usize) -> f64 {
        let lw = &mut self.log_w[gi * self.k..(gi + 1) * self.k];
        let l = lse(lw);
        if l.is_finite() {
            lw.iter_mut().for_each(|v| *v -= l);
        }
        l
    }

    /// ESS of group `gi` (methods.md §0.7).
    pub fn ess(&self, gi: usize) -> f64 {
        ess(&self.log_w[gi * self.k..(gi + 1) * self.k])
    }

    /// Draw K ancestors of group `gi` from its normalised weights and gather every field by them.
    pub fn resample<R: RngCore>(&mut self, gi: usize, resampler: Resampler, rng: &mut R, stale: StaleFields) {
        let w = normalized(&self.log_w[gi * self.k..(gi + 1) * self.k]);
        let a = resampler.ancestors(&w, self.k, rng);
        self.gather(gi, &a, stale);
    }

    /// Replace every per-particle field of group `gi` by its value at the ancestors `a` (indices within the
    /// group), except the fields `stale` names; resets the group's log-weights to −log K.
    pub fn gather(&mut self, gi: usize, a: &[usize], stale: StaleFields) {
        let (k, d) = (self.k, self.d);
        let base = gi * k;
        fn vec_rows<T: Copy>(v: &mut [T], base: usize, d: usize, a: &[usize]) {
            let src: Vec<T> = v[base * d..(base + a.len()) * d].to_vec();
            for (j, &aj) in a.iter().enumerate() {
                v[(base + j) * d..(base + j + 1) * d].copy_from_slice(&src[aj * d..(aj + 1) * d]);
            }
        }
        vec_rows(&mut self.x, base, d, a);
        vec_rows(&mut self.eps, base, d, a);
        if !stale.x0hat {
            vec_rows(&mut self.x0, base, d, a);
        }
        if !stale.guidance {
            vec_rows(&mut self.g, base, d, a);
        }
        vec_rows(&mut self.r, base, 1, a);
        if !stale.twist {
            vec_rows(&mut self.tau_new, base, 1, a);
        }
        vec_rows(&mut self.tau, base, 1, a);
        vec_rows(&mut self.delta, base, 1, a);
        vec_rows(&mut self.aux, base, self.n_aux, a);
        let lk = -(k as f64).ln();
        self.log_w[base..base + k].iter_mut().for_each(|v| *v = lk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_invariant() {
        let (g, k, d) = (2, 3, 2);
        let x: Vec<f32> = (0..g * k * d).map(|v| v as f32).collect();
        let mut p = Particles::new(x.clone(), g, k, d).with_aux(2, 0.0);
        p.aux = (0..g * k * 2).map(|v| v as f64 * 0.5).collect();
        p.eps = x.iter().map(|v| v + 100.0).collect();
        p.x0 = x.iter().map(|v| v + 200.0).collect();
        p.g = x.iter().map(|v| v + 300.0).collect();
        p.r = (0..g * k).map(|v| v as f64).collect();
        p.tau_new = p.r.iter().map(|v| v + 10.0).collect();
        p.tau = p.r.iter().map(|v| v + 20.0).collect();
        p.delta = p.r.iter().map(|v| v + 30.0).collect();
        let before = p.clone();
        let a = [2usize, 2, 0];
        p.gather(1, &a, StaleFields::default());
        for (j, &aj) in a.iter().enumerate() {
            let (dst, src) = (k + j, k + aj);
            assert_eq!(p.x[dst * d..dst * d + d], before.x[src * d..src * d + d]);
            assert_eq!(p.eps[dst * d..dst * d + d], before.eps[src * d..src * d + d]);
            assert_eq!(p.x0[dst * d..dst * d + d], before.x0[src * d..src * d + d]);
            assert_eq!(p.g[dst * d..dst * d + d], before.g[src * d..src * d + d]);
            assert_eq!(p.r[dst], before.r[src]);
            assert_eq!(p.tau_new[dst], before.tau_new[src]);
            assert_eq!(p.tau[dst], before.tau[src]);
            assert_eq!(p.delta[dst], before.delta[src]);
            assert_eq!(p.aux[dst * 2..dst * 2 + 2], before.aux[src * 2..src * 2 + 2]);
        }
        assert!(p.log_w[k..].iter().all(|&v| v == -(k as f64).ln()));
        // Group 0 untouched.
        assert_eq!(p.x[..k * d], before.x[..k * d]);
        let mut q = before.clone();
        q.gather(1, &a, StaleFields { guidance: true, twist: true, x0hat: true });
        assert_eq!(q.g, before.g);
        assert_eq!(q.tau_new, before.tau_new);
        assert_eq!(q.x0, before.x0);
    }
}
