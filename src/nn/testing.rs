//! Finite-difference gradient checks and seeded random tensors, for the tests of every differentiable component.
//!
//! candle silently drops gradients through its fused kernels (stack.md, rewards.md §9.1), so every differentiable
//! component is checked against central differences: for a seeded random direction v and seeded random output
//! weights u, with L(x) = Σ u ⊙ f(x),
//!   analytic = ⟨∇L(x), v⟩ (candle autograd),  numeric = (L(x + hv) − L(x − hv)) / 2h,
//!   rel. error = |analytic − numeric| / max(|analytic|, |numeric|).
//! Run in F64 for tight tolerances (≤ 1e-3 is the project's bar; composed blocks reach ≈ 1e-8); F32 reaches ≈ 1e-3.

use candle_core::{DType, Device, Tensor, Var};

use crate::rng::{fill_normal, Purpose, Streams};
use crate::{Error, Result};

/// The outcome of one directional finite-difference check.
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    /// ⟨∇L(x), v⟩ from candle autograd.
    pub analytic: f64,
    /// Central difference (L(x + hv) − L(x − hv)) / 2h.
    pub numeric: f64,
    /// |analytic − numeric| / max(|analytic|, |numeric|) (0 when both are 0).
    pub rel_err: f64,
    /// The step h.
    pub step: f64,
}

/// A tensor of standard normals drawn from the seeded stream `seed` (never candle's unseedable `randn`).
pub fn random_tensor(shape: &[usize], seed: u64, dtype: DType, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let mut v = vec![0f32; n];
    let mut rng = Streams::new(seed).rng(Purpose::Train, 0x6EAD_C0DE, 0);
    fill_normal(&mut rng, &mut v);
    Ok(Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?)
}

/// The default central-difference step for a dtype: 1e-5 in F64, 3e-3 in F32 and narrower types.
pub fn default_step(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-5,
        _ => 3e-3,
    }
}

/// Relative error of candle's gradient of `f` at `x` along a random direction (seeded by `seed`), against central
/// finite differences. `f` may return any shape; it is reduced with seeded random weights.
pub fn check_grad(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor, seed: u64) -> Result<f64> {
    Ok(grad_check(f, x, seed, default_step(x.dtype()))?.rel_err)
}

/// [`check_grad`] with an explicit step `h`, returning both directional derivatives.
///
/// Fails when the analytic gradient is missing (the input is not on the graph of `f`'s output) or either value is
/// not finite.
pub fn grad_check(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor, seed: u64, h: f64) -> Result<GradCheck> {
    let dtype = x.dtype();
    let device = x.device();
    let v = random_tensor(x.dims(), seed.wrapping_mul(2).wrapping_add(1), dtype, device)?;
    let var = Var::from_tensor(&x.detach())?;
    let y = f(var.as_tensor())?;
    let u = random_tensor(y.dims(), seed.wrapping_mul(2).wrapping_add(2), y.dtype(), device)?;
    let loss = |y: &Tensor| -> Result<f64> { Ok((y * &u)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
    let grads = (&y * &u)?.sum_all()?.backward()?;
    let analytic = match grads.get(var.as_tensor()) {
        Some(g) => (g * &v)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        // No gradient reached the input: candle's "zero" gradient, the trap this check exists for.
        None => 0.0,
    };
    let xd = x.detach();
    let plus = loss(&f(&(&xd + (&v * h)?)?)?)?;
    let minus = loss(&f(&(&xd - (&v * h)?)?)?)?;
    let numeric = (plus - minus) / (2.0 * h);
    if !analytic.is_finite() || !numeric.is_finite() {
        return Err(Error::numeric(
            "grad_check",
            format!("non-finite derivative: analytic {analytic}, numeric {numeric}"),
        ));
    }
    let scale = analytic.abs().max(numeric.abs());
    let rel_err = if scale == 0.0 { 0.0 } else { (analytic - numeric).abs() / scale };
    Ok(GradCheck { analytic, numeric, rel_err, step: h })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_correct_and_wrong_gradients() {
        let x = random_tensor(&[3, 4], 1, DType::F64, &Device::Cpu).unwrap();
        let ok = grad_check(|x| Ok(x.sqr()?.sin()?), &x, 5, 1e-5).unwrap();
        assert!(ok.rel_err < 1e-7, "{ok:?}");
        // The fused layer norm has no backward: the check must flag it.
        let g = Tensor::ones(4, DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let x32 = x.to_dtype(DType::F32).unwrap();
        let bad = grad_check(|x| Ok(candle_nn::ops::layer_norm(&x.sin()?, &g, &b, 1e-5)?), &x32, 5, 1e-2).unwrap();
        eprintln!("fused layer_norm: {bad:?}");
        assert!(bad.rel_err > 0.1, "{bad:?}");
    }
}
