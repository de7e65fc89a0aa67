//! Metrics: exact EMD and the toy's mode-occupancy and reward statistics; every metric key a run writes, with its
//! unit and direction, is in [`metric`].

pub mod diversity;
pub mod emd;
pub mod kid;
pub mod lpips;
pub mod metric;

/// Total variation ½Σ|f̂_k − w_k| between the histogram of `assign` (component indices) and weights `w`.
pub fn mode_tv(assign: &[usize], sample_w: Option<&[f64]>, w: &[f64]) -> f64 {
    let mut f = vec![0f64; w.len()];
    let mut tot = 0.0;
    for (i, &k) in assign.iter().enumerate() {
        let wi = sample_w.map_or(1.0, |s| s[i]);
        f[k] += wi;
        tot += wi;
    }
    0.5 * f.iter().zip(w).map(|(a, b)| (a / tot - b).abs()).sum::<f64>()
}

/// Spearman rank correlation 1 − 6Σd²/(n(n²−1)) of two equally long samples (ties broken by order: meant for
/// continuous scores, e.g. the official-vs-differentiable reward parity tests).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0f64; v.len()];
        for (k, &i) in idx.iter().enumerate() {
            r[i] = k as f64;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    1.0 - 6.0 * ra.iter().zip(&rb).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / (n * (n * n - 1.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tv() {
        assert!((super::mode_tv(&[0, 0, 1, 1], None, &[0.5, 0.5])).abs() < 1e-15);
        assert!((super::mode_tv(&[0, 0, 0, 0], None, &[0.5, 0.5]) - 0.5).abs() < 1e-15);
    }
}
