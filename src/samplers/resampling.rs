//! Resampling schemes (methods.md §12, after `nchopin/particles`): multinomial, stratified, systematic,
//! residual and SSP (Srinivasan sampling process; Gerber, Chopin & Whiteley 2019). Input: normalised weights W;
//! output: M sorted ancestor indices.

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::rng::uniform;

/// A resampling scheme.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Resampler {
    /// iid draws from W.
    Multinomial,
    /// u_m = (m + U_m)/M.
    Stratified,
    /// u_m = (m + U)/M.
    Systematic,
    /// ⌊M W_i⌋ copies plus multinomial residuals.
    Residual,
    /// Srinivasan sampling process (DAS default): c_i ∈ {⌊MW_i⌋, ⌈MW_i⌉}, E c_i = M W_i.
    #[default]
    Ssp,
}

impl Resampler {
    /// Draw `m` ancestors from normalised weights `w`.
    pub fn ancestors<R: RngCore>(self, w: &[f64], m: usize, rng: &mut R) -> Vec<usize> {
        match self {
            Resampler::Multinomial => {
                // Sorted uniforms via normalised cumulative exponential spacings.
                let mut e: Vec<f64> = (0..=m).map(|_| -(1.0 - uniform(rng)).ln()).collect();
                let tot: f64 = e.iter().sum();
                let mut acc = 0.0;
                for v in e.iter_mut() {
                    acc += *v;
                    *v = acc / tot;
                }
                inverse_cdf(&e[..m], w)
            }
            Resampler::Stratified => {
                let u: Vec<f64> = (0..m).map(|k| (k as f64 + uniform(rng)) / m as f64).collect();
                inverse_cdf(&u, w)
            }
            Resampler::Systematic => {
                let u0 = uniform(rng);
                let u: Vec<f64> = (0..m).map(|k| (k as f64 + u0) / m as f64).collect();
                inverse_cdf(&u, w)
            }
            Resampler::Residual => {
                let mut counts: Vec<usize> = w.iter().map(|wi| (m as f64 * wi).floor() as usize).collect();
                let used: usize = counts.iter().sum();
                let r = m - used.min(m);
                if r > 0 {
                    let res: Vec<f64> =
                        w.iter().zip(&counts).map(|(wi, &c)| (m as f64 * wi - c as f64).max(0.0)).collect();
                    let tot: f64 = res.iter().sum();
                    let resn: Vec<f64> = res.iter().map(|v| v / tot).collect();
                    for a in Resampler::Multinomial.ancestors(&resn, r, rng) {
                        counts[a] += 1;
                    }
                }
                expand(&counts)
            }
            Resampler::Ssp => expand(&ssp_counts(w, m, rng)),
        }
    }
}

/// When a particle system resamples (methods.md §7.4, §8, §10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ResampleWhen {
    /// ESS-adaptive: resample iff ESS < κ·K (κ = `ess_threshold`; DAS default).
    #[default]
    Ess,
    /// At every weighting step (TDS and FK references). With uniform weights the non-multinomial schemes are
    /// the identity, so this still reproduces unguided sampling under a constant reward.
    Always,
}

impl ResampleWhen {
    /// Whether a group with effective sample size `ess` of `k` particles resamples at threshold κ.
    pub fn fires(self, ess: f64, k: usize, kappa: f64) -> bool {
        match self {
            ResampleWhen::Ess => ess < kappa * k as f64,
            ResampleWhen::Always => true,
        }
    }
}

/// a_m = smallest n with Σ_{j≤n} W_j ≥ u_m, for sorted u (last bin guarded against round-off).
pub fn inverse_cdf(u: &[f64], w: &[f64]) -> Vec<usize> {
    let mut out = Vec::with_capacity(u.len());
    let mut j = 0;
    let mut cum = w[0];
    for &um in u {
        while um > cum && j + 1 < w.len() {
            j += 1;
            cum += w[j];
        }
        out.push(j);
    }
    out
}

fn expand(counts: &[usize]) -> Vec<usize> {
    counts.iter().enumerate().flat_map(|(i, &c)| std::iter::repeat_n(i, c)).collect()
}

/// SSP counts (methods.md §12).
pub fn ssp_counts<R: RngCore>(w: &[f64], m: usize, rng: &mut R) -> Vec<usize> {
    let n = w.len();
    let mut c: Vec<usize> = w.iter().map(|wi| (m as f64 * wi).floor() as usize).collect();
    let mut xi: Vec<f64> = w.iter().zip(&c).map(|(wi, &ci)| (m as f64 * wi - ci as f64).clamp(0.0, 1.0)).collect();
    if n == 1 {
        return vec![m];
    }
    let (mut i, mut j) = (0usize, 1usize);
    for k in 0..n - 1 {
        let di = xi[j].min(1.0 - xi[i]);
        let dj = xi[i].min(1.0 - xi[j]);
        let p = if di + dj > 0.0 { di / (di + dj) } else { 0.0 };
        let (mut a, mut b, delta) = (i, j, di);
        let delta = if uniform(rng) < p {
            std::mem::swap(&mut a, &mut b);
            dj
        } else {
            delta
        };
        // Raise a by delta, lower b by delta.
        let b_hits_zero = xi[b] < 1.0 - xi[a];
        xi[a] += delta;
        xi[b] -= delta;
        let next = k + 2;
        if b_hits_zero {
            xi[b] = 0.0;
            // b is closed; a stays open.
            if next < n {
                i = a;
                j = next;
            } else {
                i = a;
                j = a;
            }
        } else {
            c[a] += 1;
            xi[a] = 0.0;
            if next < n {
                i = b;
                j = next;
            } else {
                i = b;
                j = b;
            }
        }
    }
    let total: usize = c.iter().sum();
    if total + 1 == m {
        // Round-off guard: the still-open index carries the missing unit.
        let open = if xi[i] > xi[j] { i } else { j };
        c[open] += 1;
    } else if total != m {
        // Large round-off: fall back to the index with the biggest residual (never observed with f64 weights).
        let mut rem = m as isize - total as isize;
        while rem > 0 {
            let k = (0..n).max_by(|&x, &y| xi[x].partial_cmp(&xi[y]).unwrap_or(std::cmp::Ordering::Equal)).unwrap_or(0);
            c[k] += 1;
            xi[k] = -1.0;
            rem -= 1;
        }
    }
    debug_assert_eq!(c.iter().sum::<usize>(), m);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, Streams};

    const ALL: [Resampler; 5] =
        [Resampler::Multinomial, Resampler::Stratified, Resampler::Systematic, Resampler::Residual, Resampler::Ssp];

    #[test]
    fn counts_sum_and_degenerate_cases() {
        let mut rng = Streams::new(3).rng(Purpose::Resample, 0, 0);
        let w = [0.1, 0.25, 0.05, 0.3, 0.3];
        for r in ALL {
            for m in [1, 5, 7, 20] {
                let a = r.ancestors(&w, m, &mut rng);
                assert_eq!(a.len(), m, "{r:?}");
                assert!(a.windows(2).all(|p| p[0] <= p[1]));
            }
            let onehot = [0.0, 0.0, 1.0, 0.0];
            assert_eq!(r.ancestors(&onehot, 4, &mut rng), vec![2, 2, 2, 2], "{r:?}");
            if r != Resampler::Multinomial {
                assert_eq!(r.ancestors(&[0.25; 4], 4, &mut rng), vec![0, 1, 2, 3], "{r:?}");
            }
        }
    }

    #[test]
    fn unbiased_and_floor_ceil() {
        let w = [0.03, 0.17, 0.4, 0.1, 0.05, 0.25];
        let m = 6;
        let draws = 200_000;
        for r in ALL {
            let mut rng = Streams::new(11).rng(Purpose::Resample, r as u64, 1);
            let mut sum = [0f64; 6];
            let mut sum2 = [0f64; 6];
            for _ in 0..draws {
                let mut c = [0f64; 6];
                for a in r.ancestors(&w, m, &mut rng) {
                    c[a] += 1.0;
                }
                for i in 0..6 {
                    sum[i] += c[i];
                    sum2[i] += c[i] * c[i];
                    if matches!(r, Resampler::Ssp | Resampler::Systematic) {
                        let mw = m as f64 * w[i];
                        assert!(c[i] >= mw.floor() && c[i] <= mw.ceil(), "{r:?}: c={} for MW={mw}", c[i]);
                    }
                }
            }
            for i in 0..6 {
                let mean = sum[i] / draws as f64;
                let var = sum2[i] / draws as f64 - mean * mean;
                let se = (var / draws as f64).sqrt().max(1e-12);
                assert!(
                    (mean - m as f64 * w[i]).abs() <= 4.0 * se + 1e-12,
                    "{r:?} i={i}: {mean} vs {}",
                    m as f64 * w[i]
                );
            }
        }
    }
}
