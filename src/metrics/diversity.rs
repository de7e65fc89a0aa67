//! Diversity metrics on image features (rewards.md §8): truncated CLIP entropy (TCE) and mean pairwise cosine
//! distance, with a bootstrap standard error over images.
//!
//! TCE (the DAS evaluation notebook): C = sample covariance of the N × D features (N − 1 denominator), λ_1..λ_K
//! its K largest eigenvalues, TCE = (K/2)·log(2πe) + ½·Σ_{k≤K} log λ_k — the differential entropy of a Gaussian
//! on the top-K principal subspace. rank(C) ≤ N − 1, so N ≤ K makes the trailing eigenvalues zero (the
//! reference's stored N = 16 example, −42.31, is that artefact): we refuse N ≤ K and callers should use N ≥ 10·K.
//! The eigenvalues come from the smaller of C (D × D) and the Gram matrix (N × N), which share their non-zero
//! spectrum, via Householder tridiagonalisation and implicit QL with Wilkinson shifts, in f64.

use rand::Rng;

use crate::{Error, Result};

/// Eigenvalues of a symmetric n × n matrix (row-major, f64), in descending order.
pub fn symmetric_eigenvalues(a: &[f64], n: usize) -> Result<Vec<f64>> {
    if a.len() != n * n {
        return Err(Error::numeric("eigenvalues", format!("matrix has {} entries, expected {n}²", a.len())));
    }
    if a.iter().any(|x| !x.is_finite()) {
        return Err(Error::numeric("eigenvalues", "matrix has non-finite entries"));
    }
    let (mut d, mut e) = tridiagonalize(a.to_vec(), n);
    tridiagonal_ql(&mut d, &mut e)?;
    d.sort_by(|x, y| y.total_cmp(x));
    Ok(d)
}

/// Householder reduction of a symmetric matrix to tridiagonal form: (diagonal, sub-diagonal with e[n−1] = 0).
fn tridiagonalize(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; n];
    let mut p = vec![0f64; n];
    for k in 0..n.saturating_sub(2) {
        let m = n - k - 1; // length of the column below the diagonal
        let norm = (k + 1..n).map(|i| a[i * n + k].powi(2)).sum::<f64>().sqrt();
        if norm == 0.0 {
            continue;
        }
        let x0 = a[(k + 1) * n + k];
        let alpha = if x0 > 0.0 { -norm } else { norm };
        for (j, i) in (k + 1..n).enumerate() {
            v[j] = a[i * n + k];
        }
        v[0] -= alpha;
        let vn = v[..m].iter().map(|x| x * x).sum::<f64>().sqrt();
        if vn == 0.0 {
            continue;
        }
        v[..m].iter_mut().for_each(|x| *x /= vn);
        // H A H on the trailing block with H = I − 2vvᵀ: A ← A − 2vqᵀ − 2qvᵀ, p = Av, q = p − (vᵀp)v.
        for (j, i) in (k + 1..n).enumerate() {
            p[j] = (k + 1..n).enumerate().map(|(l, c)| a[i * n + c] * v[l]).sum();
        }
        let kk: f64 = (0..m).map(|j| v[j] * p[j]).sum();
        for j in 0..m {
            p[j] -= kk * v[j];
        }
        for (j, i) in (k + 1..n).enumerate() {
            for (l, c) in (k + 1..n).enumerate() {
                a[i * n + c] -= 2.0 * (v[j] * p[l] + p[j] * v[l]);
            }
        }
        a[(k + 1) * n + k] = alpha;
        a[k * n + k + 1] = alpha;
        for i in k + 2..n {
            a[i * n + k] = 0.0;
            a[k * n + i] = 0.0;
        }
    }
    let d = (0..n).map(|i| a[i * n + i]).collect();
    let e = (0..n).map(|i| if i + 1 < n { a[(i + 1) * n + i] } else { 0.0 }).collect();
    (d, e)
}

/// Eigenvalues of a symmetric tridiagonal matrix in place (implicit QL with Wilkinson shifts).
fn tridiagonal_ql(d: &mut [f64], e: &mut [f64]) -> Result<()> {
    let n = d.len();
    for l in 0..n {
        let mut iter = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iter += 1;
            if iter > 100 {
                return Err(Error::numeric("eigenvalues", "QL iteration did not converge"));
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + if g >= 0.0 { r.abs() } else { -r.abs() });
            let (mut s, mut c, mut p) = (1.0f64, 1.0f64, 0.0f64);
            let mut deflated = false;
            let mut i = m;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    deflated = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
            }
            if deflated {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    Ok(())
}

/// Eigenvalues (descending) of the sample covariance (N − 1 denominator) of `n` rows of length `d`, computed on
/// whichever of the D × D covariance and the N × N Gram matrix is smaller.
pub fn covariance_eigenvalues(features: &[f32], n: usize, d: usize) -> Result<Vec<f64>> {
    if n < 2 || features.len() != n * d {
        return Err(Error::numeric(
            "covariance",
            format!("need ≥ 2 rows of {d} features, got {} values", features.len()),
        ));
    }
    let mut mean = vec![0f64; d];
    for row in features.chunks(d) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += x as f64 / n as f64;
        }
    }
    let centred: Vec<f64> = features.chunks(d).flat_map(|r| r.iter().zip(&mean).map(|(&x, m)| x as f64 - m)).collect();
    let den = (n - 1) as f64;
    let (k, mat) = if d <= n {
        let mut c = vec![0f64; d * d];
        for row in centred.chunks(d) {
            for i in 0..d {
                let ri = row[i];
                for j in i..d {
                    c[i * d + j] += ri * row[j];
                }
            }
        }
        for i in 0..d {
            for j in i..d {
                c[i * d + j] /= den;
                c[j * d + i] = c[i * d + j];
            }
        }
        (d, c)
    } else {
        let mut g = vec![0f64; n * n];
        for i in 0..n {
            for j in i..n {
                let v: f64 = (0..d).map(|c| centred[i * d + c] * centred[j * d + c]).sum::<f64>() / den;
                g[i * n + j] = v;
                g[j * n + i] = v;
            }
        }
        (n, g)
    };
    symmetric_eigenvalues(&mat, k)
}

/// Truncated entropy: (K/2)·log(2πe) + ½·Σ_{k≤K} log λ_k over the top-K covariance eigenvalues.
/// Refuses N ≤ K (the rank of the covariance is at most N − 1).
pub fn truncated_entropy(features: &[f32], n: usize, d: usize, k: usize) -> Result<f64> {
    if k == 0 || k > d {
        return Err(Error::config(format!("truncated entropy: K = {k} must be in 1..={d} (the feature dimension)")));
    }
    if n <= k {
        return Err(Error::config(format!(
            "truncated entropy with K = {k} needs more than K samples (got N = {n}): the covariance has rank ≤ N − 1, \
             so the result would be an artefact; use N ≥ 10·K"
        )));
    }
    let ev = covariance_eigenvalues(features, n, d)?;
    let top = &ev[..k];
    if top.iter().any(|&l| l <= 0.0) {
        return Err(Error::numeric("truncated entropy", format!("a top-{k} eigenvalue is not positive: {top:?}")));
    }
    Ok(0.5 * k as f64 * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln()
        + 0.5 * top.iter().map(|l| l.ln()).sum::<f64>())
}

/// Mean over pairs i < j of 1 − cos(f_i, f_j).
pub fn mean_pairwise_cosine_distance(features: &[f32], n: usize, d: usize) -> Result<f64> {
    let idx: Vec<usize> = (0..n).collect();
    pairwise_on(features, d, &idx)
}

fn pairwise_on(features: &[f32], d: usize, idx: &[usize]) -> Result<f64> {
    if idx.len() < 2 {
        return Err(Error::config("pairwise distance needs at least two samples"));
    }
    let unit: Vec<Vec<f64>> = idx
        .iter()
        .map(|&i| {
            let r = &features[i * d..(i + 1) * d];
            let nrm = r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
            r.iter().map(|&x| x as f64 / nrm).collect()
        })
        .collect();
    let (mut s, mut cnt) = (0.0, 0usize);
    for i in 0..unit.len() {
        for j in i + 1..unit.len() {
            s += 1.0 - unit[i].iter().zip(&unit[j]).map(|(a, b)| a * b).sum::<f64>();
            cnt += 1;
        }
    }
    Ok(s / cnt as f64)
}

/// Bootstrap standard error (over images, `reps` resamples from `rng`) of a statistic of a set of rows.
pub fn bootstrap_se<R: Rng>(
    n: usize,
    reps: usize,
    rng: &mut R,
    mut stat: impl FnMut(&[usize]) -> Result<f64>,
) -> Result<f64> {
    let mut vals = Vec::with_capacity(reps);
    let mut idx = vec![0usize; n];
    for _ in 0..reps {
        idx.iter_mut().for_each(|i| *i = rng.random_range(0..n));
        vals.push(stat(&idx)?);
    }
    let m = vals.iter().sum::<f64>() / reps as f64;
    Ok((vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (reps as f64 - 1.0)).sqrt())
}

/// Mean pairwise cosine distance with its bootstrap standard error (pairs of a resample that repeat an image
/// count as distance 0, as a resampled set would).
pub fn pairwise_cosine_with_se<R: Rng>(
    features: &[f32],
    n: usize,
    d: usize,
    reps: usize,
    rng: &mut R,
) -> Result<(f64, f64)> {
    let m = mean_pairwise_cosine_distance(features, n, d)?;
    let se = bootstrap_se(n, reps, rng, |idx| pairwise_on(features, d, idx))?;
    Ok((m, se))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn jacobi(mut a: Vec<f64>, n: usize) -> Vec<f64> {
        for _ in 0..100 {
            let off: f64 = (0..n)
                .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
                .map(|(i, j)| a[i * n + j].powi(2))
                .sum();
            if off < 1e-24 {
                break;
            }
            for p in 0..n {
                for q in p + 1..n {
                    if a[p * n + q].abs() < 1e-300 {
                        continue;
                    }
                    let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * a[p * n + q]);
                    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                    let t = if theta == 0.0 { 1.0 } else { t };
                    let c = 1.0 / (t * t + 1.0).sqrt();
                    let s = t * c;
                    for k in 0..n {
                        let (akp, akq) = (a[k * n + p], a[k * n + q]);
                        a[k * n + p] = c * akp - s * akq;
                        a[k * n + q] = s * akp + c * akq;
                    }
                    for k in 0..n {
                        let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                        a[p * n + k] = c * apk - s * aqk;
                        a[q * n + k] = s * apk + c * aqk;
                    }
                }
            }
        }
        let mut d: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
        d.sort_by(|x, y| y.total_cmp(x));
        d
    }

    #[test]
    fn eigenvalues_match_jacobi_on_random_symmetric_matrices() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for n in [1usize, 2, 3, 5, 17, 40] {
            let mut a = vec![0f64; n * n];
            for i in 0..n {
                for j in i..n {
                    let v: f64 = rng.random_range(-1.0..1.0);
                    a[i * n + j] = v;
                    a[j * n + i] = v;
                }
            }
            let ql = symmetric_eigenvalues(&a, n).unwrap();
            let jc = jacobi(a, n);
            for (x, y) in ql.iter().zip(&jc) {
                assert!((x - y).abs() < 1e-9, "n={n}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn diagonal_and_repeated_eigenvalues() {
        let a = [3.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0];
        assert_eq!(symmetric_eigenvalues(&a, 3).unwrap(), vec![3.0, 2.0, 1.0]);
        let ones = vec![1.0; 16]; // rank one: eigenvalues 4, 0, 0, 0
        let ev = symmetric_eigenvalues(&ones, 4).unwrap();
        assert!((ev[0] - 4.0).abs() < 1e-12 && ev[1..].iter().all(|x| x.abs() < 1e-12), "{ev:?}");
    }

    #[test]
    fn gaussian_entropy_closed_form_and_gram_path() {
        // Features with exact sample covariance diag(4, 1, 0.25) along axes: ±√(n−1)·σ placements.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (n, d) = (400usize, 3usize);
        let sd = [2.0f64, 1.0, 0.5];
        let mut f = vec![0f32; n * d];
        for i in 0..n {
            for j in 0..d {
                let z: f64 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng);
                f[i * d + j] = (z * sd[j]) as f32;
            }
        }
        let ev = covariance_eigenvalues(&f, n, d).unwrap();
        for (l, s) in ev.iter().zip(sd) {
            assert!((l / (s * s) - 1.0).abs() < 0.2, "{l} vs {}", s * s);
        }
        let tce = truncated_entropy(&f, n, d, 2).unwrap();
        let want = (2.0 * std::f64::consts::PI * std::f64::consts::E).ln() + 0.5 * (ev[0].ln() + ev[1].ln());
        assert!((tce - want).abs() < 1e-12);
        // N < D: the Gram path gives the same non-zero spectrum as the covariance.
        let (n2, d2) = (5usize, 9usize);
        let g: Vec<f32> = (0..n2 * d2).map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.4).collect();
        let ev_gram = covariance_eigenvalues(&g, n2, d2).unwrap();
        let mut mean = vec![0f64; d2];
        for r in g.chunks(d2) {
            for (m, &x) in mean.iter_mut().zip(r) {
                *m += x as f64 / n2 as f64;
            }
        }
        let mut c = vec![0f64; d2 * d2];
        for r in g.chunks(d2) {
            for i in 0..d2 {
                for j in 0..d2 {
                    c[i * d2 + j] += (r[i] as f64 - mean[i]) * (r[j] as f64 - mean[j]) / (n2 - 1) as f64;
                }
            }
        }
        let ev_cov = symmetric_eigenvalues(&c, d2).unwrap();
        for k in 0..n2 - 1 {
            assert!((ev_gram[k] - ev_cov[k]).abs() < 1e-9, "{k}: {} vs {}", ev_gram[k], ev_cov[k]);
        }
    }

    #[test]
    fn entropy_refuses_n_at_most_k() {
        let f = vec![0.5f32; 20 * 4];
        let e = truncated_entropy(&f, 20, 4, 20).unwrap_err().to_string();
        assert!(e.contains("K = 20") || e.contains("1..=4"), "{e}");
        let f = vec![0.5f32; 10 * 30];
        let e = truncated_entropy(&f, 10, 30, 20).unwrap_err().to_string();
        assert!(e.contains("N = 10") && e.contains("10·K"), "{e}");
    }

    #[test]
    fn pairwise_cosine_hand_cases() {
        // Orthogonal unit vectors: every pair has distance 1; identical rows: 0; opposite: 2.
        let f = [1.0f32, 0.0, 0.0, 1.0];
        assert!((mean_pairwise_cosine_distance(&f, 2, 2).unwrap() - 1.0).abs() < 1e-12);
        let f = [1.0f32, 2.0, 2.0, 4.0, -1.0, -2.0];
        // pairs: (0,1) 0, (0,2) 2, (1,2) 2 → 4/3
        assert!((mean_pairwise_cosine_distance(&f, 3, 2).unwrap() - 4.0 / 3.0).abs() < 1e-12);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (m, se) = pairwise_cosine_with_se(&f, 3, 2, 200, &mut rng).unwrap();
        assert!((m - 4.0 / 3.0).abs() < 1e-12 && se > 0.0);
    }
}
