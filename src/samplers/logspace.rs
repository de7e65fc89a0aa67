//! Log-space utilities (methods.md §0.7): log-sum-exp, normalisation, effective sample size.

/// log Σ exp(ℓ_k), stable; all −∞ ⇒ −∞; any NaN or +∞ ⇒ NaN (callers treat that as an error).
pub fn lse(l: &[f64]) -> f64 {
    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if l.iter().any(|v| v.is_nan() || *v == f64::INFINITY) {
        return f64::NAN;
    }
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + l.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// Normalised weights W_k = exp(ℓ_k − LSE(ℓ)).
pub fn normalized(l: &[f64]) -> Vec<f64> {
    let z = lse(l);
    l.iter().map(|v| (v - z).exp()).collect()
}

/// ESS = (Σw)²/Σw² with w = exp(ℓ − max ℓ); in [1, K] for finite weights, NaN if any weight is NaN.
pub fn ess(l: &[f64]) -> f64 {
    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if l.iter().any(|v| v.is_nan()) || m == f64::NEG_INFINITY {
        return f64::NAN;
    }
    let (mut s, mut s2) = (0.0, 0.0);
    for v in l {
        let w = (v - m).exp();
        s += w;
        s2 += w * w;
    }
    s * s / s2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lse_is_stable() {
        assert_eq!(lse(&[f64::NEG_INFINITY; 3]), f64::NEG_INFINITY);
        assert!((lse(&[-1e30, 0.0]) - 0.0).abs() < 1e-15);
        assert!((lse(&[700.0, 700.0]) - (700.0 + 2f64.ln())).abs() < 1e-12);
        assert!((lse(&[1000.0, 0.0]) - 1000.0).abs() < 1e-12);
        assert!(lse(&[0.0, f64::NAN]).is_nan());
        assert!(lse(&[0.0, f64::INFINITY]).is_nan());
    }

    #[test]
    fn ess_bounds() {
        assert!((ess(&[0.0; 8]) - 8.0).abs() < 1e-12);
        assert!((ess(&[0.0, -1e30, -1e30]) - 1.0).abs() < 1e-12);
        let e = ess(&[0.1, -0.5, 2.0, 700.0, 699.0]);
        assert!((1.0..=5.0).contains(&e));
        let w = normalized(&[1.0, 2.0, 3.0]);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
    }
}
