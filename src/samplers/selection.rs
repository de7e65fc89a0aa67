//! Output selection from a final weighted particle system (methods.md §7.6), shared by DAS, TDS, plain SMC and FK
//! steering, and the per-step child selection of SVDD (methods.md §11).

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::logspace::{ess, normalized};
use super::resampling::Resampler;
use crate::rng::uniform;
use crate::{Error, Result};

/// How outputs are chosen from the final particle system (methods.md §7.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Draw `n_out` particles from the final weights with the configured resampler (a draw from p_tar's
    /// particle approximation).
    #[default]
    Resample,
    /// One output per group: the particle of largest final weight (mode-seeking, the SD reference's rule).
    ArgmaxWeight,
    /// All K particles with their weights.
    Weighted,
    /// Reference toy notebook: ESS-conditional final SSP, then `n_out` of K uniformly without replacement.
    ToyCompat,
}

impl Selection {
    /// Outputs per group for `k` particles and the configured `n_out` (default K).
    pub fn outputs(self, k: usize, n_out: Option<usize>) -> usize {
        match self {
            Selection::ArgmaxWeight => 1,
            Selection::Weighted => k,
            Selection::Resample | Selection::ToyCompat => n_out.unwrap_or(k),
        }
    }

    /// Check `n_out` against the particle count (plan time).
    pub fn validate(self, k: usize, n_out: Option<usize>) -> Result<()> {
        if let Some(n) = n_out {
            if n == 0 || (self == Selection::ToyCompat && n > k) {
                return Err(Error::config(format!("n_out: must be in 1..={k} (the particle count)")));
            }
        }
        Ok(())
    }
}

/// Pick the outputs of one group from its final (unnormalised) log-weights `lw`. Returns the chosen particle
/// indices and their output weights. `kappa` is the ESS threshold of `toy_compat`'s conditional resampling.
/// Non-finite weights are only accepted by `argmax_weight` (lowest index), `weighted` (NaN weights) and
/// `toy_compat` (uniform pick) — the reference's behaviour in bug-compatible runs; `resample` errors.
pub fn select<R: RngCore>(
    sel: Selection,
    resampler: Resampler,
    kappa: f64,
    lw: &[f64],
    n_out: usize,
    rng: &mut R,
    method: &'static str,
) -> Result<(Vec<usize>, Vec<f64>)> {
    let k = lw.len();
    let finite = lw.iter().all(|v| !v.is_nan() && *v != f64::INFINITY) && lw.iter().any(|v| v.is_finite());
    let w: Vec<f64> = if finite { normalized(lw) } else { vec![f64::NAN; k] };
    Ok(match sel {
        Selection::ArgmaxWeight => {
            let mut best = 0;
            for j in 1..k {
                if lw[j] > lw[best] {
                    best = j;
                }
            }
            (vec![best], vec![1.0])
        }
        Selection::Weighted => ((0..k).collect(), w),
        Selection::Resample => {
            if !finite {
                return Err(Error::numeric(method, "selection `resample` needs finite final weights"));
            }
            (resampler.ancestors(&w, n_out, rng), vec![1.0 / n_out as f64; n_out])
        }
        Selection::ToyCompat => {
            let mut pool: Vec<usize> = (0..k).collect();
            if finite && ess(lw) < kappa * k as f64 {
                pool = Resampler::Ssp.ancestors(&w, k, rng);
            }
            // n_out of K uniformly without replacement (partial Fisher–Yates).
            for s in 0..n_out {
                let j = rng.random_range(s..k);
                pool.swap(s, j);
            }
            pool.truncate(n_out);
            (pool, vec![1.0 / n_out as f64; n_out])
        }
    })
}

/// Index of the largest value (ties → lowest index): SVDD's α → 0 selection.
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for j in 1..v.len() {
        if v[j] > v[best] {
            best = j;
        }
    }
    best
}

/// One draw from softmax(v/α) by inversion of one uniform (SVDD's soft selection, methods.md §11).
pub fn softmax_draw<R: RngCore>(v: &[f64], alpha: f64, rng: &mut R) -> usize {
    let l: Vec<f64> = v.iter().map(|x| x / alpha).collect();
    let w = normalized(&l);
    let u = uniform(rng);
    let mut acc = 0.0;
    for (j, wj) in w.iter().enumerate() {
        acc += wj;
        if u < acc {
            return j;
        }
    }
    // Round-off: u ≥ Σw; the last index with positive weight.
    w.iter().rposition(|&x| x > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, Streams};

    #[test]
    fn argmax_ties_take_the_lowest_index() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[0.0; 5]), 0);
    }

    #[test]
    fn softmax_draw_frequencies_match_the_weights() {
        let v = [0.0, 1.0, -1.0, 0.5];
        let alpha = 0.7;
        let w = normalized(&v.iter().map(|x| x / alpha).collect::<Vec<_>>());
        let mut rng = Streams::new(5).rng(Purpose::Select, 0, 0);
        let n = 100_000;
        let mut c = [0f64; 4];
        for _ in 0..n {
            c[softmax_draw(&v, alpha, &mut rng)] += 1.0;
        }
        for j in 0..4 {
            let se = (w[j] * (1.0 - w[j]) / n as f64).sqrt();
            assert!((c[j] / n as f64 - w[j]).abs() < 4.0 * se, "{j}: {} vs {}", c[j] / n as f64, w[j]);
        }
        // α → 0 concentrates on the argmax.
        assert_eq!(softmax_draw(&v, 1e-9, &mut rng), 1);
    }

    #[test]
    fn selection_rules() {
        let mut rng = Streams::new(1).rng(Purpose::Select, 0, 0);
        let lw = [0.0, 2.0, -1.0, 2.0];
        let (i, w) = select(Selection::ArgmaxWeight, Resampler::Ssp, 0.5, &lw, 1, &mut rng, "t").unwrap();
        assert_eq!((i, w), (vec![1], vec![1.0]));
        let (i, w) = select(Selection::Weighted, Resampler::Ssp, 0.5, &lw, 4, &mut rng, "t").unwrap();
        assert_eq!(i, vec![0, 1, 2, 3]);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let (i, _) = select(Selection::Resample, Resampler::Ssp, 0.5, &lw, 3, &mut rng, "t").unwrap();
        assert_eq!(i.len(), 3);
        let (i, _) = select(Selection::ToyCompat, Resampler::Ssp, 0.5, &lw, 2, &mut rng, "t").unwrap();
        assert_eq!(i.len(), 2);
        assert!(select(Selection::Resample, Resampler::Ssp, 0.5, &[f64::NAN, 0.0], 1, &mut rng, "t").is_err());
        assert_eq!(Selection::Weighted.outputs(7, Some(2)), 7);
        assert_eq!(Selection::Resample.outputs(7, None), 7);
        assert!(Selection::ToyCompat.validate(4, Some(5)).is_err());
    }
}
