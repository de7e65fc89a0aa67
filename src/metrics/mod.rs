//! Metrics: exact EMD and the toy's mode-occupancy and reward statistics.

pub mod diversity;
pub mod emd;
pub mod kid;
pub mod lpips;

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

#[cfg(test)]
mod tests {
    #[test]
    fn tv() {
        assert!((super::mode_tv(&[0, 0, 1, 1], None, &[0.5, 0.5])).abs() < 1e-15);
        assert!((super::mode_tv(&[0, 0, 0, 0], None, &[0.5, 0.5]) - 0.5).abs() < 1e-15);
    }
}
