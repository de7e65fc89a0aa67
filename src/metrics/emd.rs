//! Exact earth mover's distance (W1, Euclidean ground cost) between equal-size uniformly weighted point sets:
//! EMD = min over permutations π of (1/n)·Σ‖x_i − y_π(i)‖ — a linear assignment problem solved exactly with
//! `lsap` (scipy's algorithm), toy.md §7.

use rand::Rng;

use crate::{Error, Result};

/// Exact EMD between two sets of `n` points of dimension `d` (row-major).
pub fn emd(x: &[f32], y: &[f32], d: usize) -> Result<f64> {
    if x.len() != y.len() || x.len() % d != 0 {
        return Err(Error::numeric("emd", "point sets must have equal size"));
    }
    let n = x.len() / d;
    if n == 0 {
        return Ok(0.0);
    }
    let mut cost = vec![0f64; n * n];
    for i in 0..n {
        let xi = &x[i * d..(i + 1) * d];
        for j in 0..n {
            let yj = &y[j * d..(j + 1) * d];
            cost[i * n + j] = xi.iter().zip(yj).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        }
    }
    let c = lsap::get_assigned_cost(n, n, &cost, false)
        .map_err(|e| Error::numeric("emd", format!("assignment failed: {e:?}")))?;
    Ok(c / n as f64)
}

/// Draw `n` rows with replacement from `pool` (probabilities `w`, or uniform when `None`).
pub fn draw_rows<R: Rng>(pool: &[f32], w: Option<&[f64]>, d: usize, n: usize, rng: &mut R) -> Vec<f32> {
    let rows = pool.len() / d;
    let cum: Option<Vec<f64>> = w.map(|w| {
        let mut acc = 0.0;
        w.iter()
            .map(|v| {
                acc += v;
                acc
            })
            .collect()
    });
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let k = match &cum {
            None => rng.random_range(0..rows),
            Some(c) => {
                let u = rng.random::<f64>() * c[c.len() - 1];
                c.partition_point(|v| *v <= u).min(rows - 1)
            }
        };
        out.extend_from_slice(&pool[k * d..(k + 1) * d]);
    }
    out
}

/// The reference protocol (toy.md §7): `repeats` independent n-vs-n draws with replacement from the two pools;
/// returns (mean, std) of the exact EMD over repeats.
#[allow(clippy::too_many_arguments)]
pub fn emd_protocol<R: Rng>(
    a: &[f32],
    wa: Option<&[f64]>,
    b: &[f32],
    d: usize,
    n: usize,
    repeats: usize,
    rng: &mut R,
) -> Result<(f64, f64)> {
    let mut v = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let x = draw_rows(a, wa, d, n, rng);
        let y = draw_rows(b, None, d, n, rng);
        v.push(emd(&x, &y, d)?);
    }
    Ok(mean_std(&v))
}

/// Mean and (population) standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n;
    (m, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_solvable_cases() {
        // Identical sets in another order: 0.
        let x = [0.0f32, 0.0, 1.0, 0.0, 0.0, 1.0];
        let y = [0.0f32, 1.0, 0.0, 0.0, 1.0, 0.0];
        assert!(emd(&x, &y, 2).unwrap().abs() < 1e-12);
        // A shift by (3, 4) moves every point by 5.
        let y: Vec<f32> = x.chunks(2).flat_map(|p| [p[0] + 3.0, p[1] + 4.0]).collect();
        assert!((emd(&x, &y, 2).unwrap() - 5.0).abs() < 1e-6);
        // 1-D: the optimal plan matches sorted order: {0, 10} vs {1, 12}: (1 + 2)/2.
        assert!((emd(&[0.0, 10.0], &[12.0, 1.0], 1).unwrap() - 1.5).abs() < 1e-12);
    }

    #[test]
    fn matches_brute_force_on_small_random_sets() {
        let mut rng = crate::rng::Streams::new(5).rng(crate::rng::Purpose::Metric, 0, 0);
        for _ in 0..20 {
            let n = 5;
            let x: Vec<f32> = (0..n * 2).map(|_| rng.random::<f32>() * 4.0).collect();
            let y: Vec<f32> = (0..n * 2).map(|_| rng.random::<f32>() * 4.0).collect();
            let mut best = f64::INFINITY;
            let mut perm: Vec<usize> = (0..n).collect();
            permute(&mut perm, 0, &mut |p| {
                let c: f64 = (0..n)
                    .map(|i| {
                        (((x[2 * i] - y[2 * p[i]]) as f64).powi(2) + ((x[2 * i + 1] - y[2 * p[i] + 1]) as f64).powi(2))
                            .sqrt()
                    })
                    .sum();
                best = best.min(c / n as f64);
            });
            assert!((emd(&x, &y, 2).unwrap() - best).abs() < 1e-9);
        }
    }

    fn permute(p: &mut Vec<usize>, k: usize, f: &mut dyn FnMut(&[usize])) {
        if k == p.len() {
            f(p);
            return;
        }
        for i in k..p.len() {
            p.swap(k, i);
            permute(p, k + 1, f);
            p.swap(k, i);
        }
    }
}
