//! Matrix products whose bits do not depend on the CPU they run on.
//!
//! candle's CPU matmul is the `gemm` crate, which cuts the contraction axis into panels of kc = max(512, f(L1 data
//! cache size, associativity)) (`gemm-common`'s `kernel_params`) and adds the panels' partial products. kc, and with
//! it the rounding, therefore differs between CPUs with different L1 caches: the same FMNIST-align run gave tables
//! that differed in the 8th significant digit on two CI machines (every number through the 784-wide layers: the
//! decoder's input gradient, the classifiers' first layers). [`matmul`] cuts every contraction into blocks of at
//! most [`BLOCK`] = 512 terms, so `gemm` never splits one, and adds the blocks left to right; its backward pass does
//! the same for both gradients (∂A = G·Bᵀ contracts the output columns, ∂B = Aᵀ·G the rows). Each output element
//! is then the same sequence of fused multiply-adds on every x86-64 CPU with FMA (tested against a scalar
//! reference), whatever the thread count. Other devices take candle's matmul unchanged.

use candle_core::Tensor;

use crate::Result;

/// The longest contraction handed to `gemm` in one call: `gemm`'s smallest panel, so no CPU splits it further.
pub const BLOCK: usize = 512;

/// A·B for A `[m, k]` and B `[k, n]` on the CPU with every contraction in blocks of at most [`BLOCK`] terms (see the
/// module docs); differentiable in both arguments. Other devices: candle's matmul.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !a.device().is_cpu() {
        return Ok(a.matmul(b)?);
    }
    let y = blocked(&a.detach(), &b.detach())?;
    if !a.track_op() && !b.track_op() {
        return Ok(y);
    }
    // ∂A = G·Bᵀ contracts the output columns, ∂B = Aᵀ·G the rows: both blocked the same way.
    crate::nn::norm::with_grads(&y, a, b, "blocked-matmul", |a, b, _y, g| {
        let ga = if a.track_op() { Some(blocked(g, &b.detach().t()?)?) } else { None };
        let gb = if b.track_op() { Some(blocked(&a.detach().t()?, g)?) } else { None };
        Ok((ga, gb))
    })
}

/// The blocked product of [`matmul`] off the autograd graph (candle's error type, for closures and custom ops).
pub fn blocked(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let (_, k) = a.dims2()?;
    let (k_b, _) = b.dims2()?;
    if k != k_b {
        return Err(candle_core::Error::Msg(format!("matmul: A has {k} columns but B has {k_b} rows")));
    }
    if k <= BLOCK || !a.device().is_cpu() {
        return a.matmul(b);
    }
    let mut acc: Option<Tensor> = None;
    for start in (0..k).step_by(BLOCK) {
        let len = BLOCK.min(k - start);
        let part = a.narrow(1, start, len)?.matmul(&b.narrow(0, start, len)?)?;
        acc = Some(match acc {
            None => part,
            Some(s) => (s + part)?,
        });
    }
    Ok(acc.expect("k > BLOCK gives at least two blocks"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::{check_grad, random_tensor};
    use candle_core::{DType, Device, Var};

    /// Scalar reference: each block of at most BLOCK terms accumulated in order with FMA, blocks added in order.
    fn reference(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut total: Option<f32> = None;
                for start in (0..k).step_by(BLOCK) {
                    let mut s = 0f32;
                    for p in start..(start + BLOCK).min(k) {
                        s = a[i * k + p].mul_add(b[p * n + j], s);
                    }
                    total = Some(total.map_or(s, |t| t + s));
                }
                y[i * n + j] = total.unwrap_or(0.0);
            }
        }
        y
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        random_tensor(&[len], seed, DType::F32, &Device::Cpu).unwrap().to_vec1().unwrap()
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_element_is_the_same_fma_sequence_as_the_scalar_reference() {
        if !std::arch::is_x86_feature_detected!("fma") {
            // The claim is for CPUs with FMA (every x86-64-v3 machine); without it `gemm` multiplies and adds.
            eprintln!("SKIP: this CPU has no FMA");
            return;
        }
        for &(m, k, n) in &[(7, 784, 33), (40, 1568, 128), (64, 512, 256), (5, 300, 9), (300, 784, 512)] {
            let (av, bv) = (values(m * k, 1), values(k * n, 2));
            let a = Tensor::from_vec(av.clone(), (m, k), &Device::Cpu).unwrap();
            let b = Tensor::from_vec(bv.clone(), (k, n), &Device::Cpu).unwrap();
            let got: Vec<f32> = matmul(&a, &b).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let want = reference(&av, &bv, (m, k, n));
            let same = got.iter().zip(&want).filter(|(x, y)| x.to_bits() == y.to_bits()).count();
            assert_eq!(same, got.len(), "{m}×{k}×{n}: {same} of {} elements bit-identical", got.len());
        }
    }

    #[test]
    fn gradients_match_autograd_and_finite_differences() {
        let dev = Device::Cpu;
        let (m, k, n) = (5, 2 * BLOCK + 3, 4);
        let a = Var::from_tensor(&random_tensor(&[m, k], 3, DType::F64, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&random_tensor(&[k, n], 4, DType::F64, &dev).unwrap()).unwrap();
        let w = random_tensor(&[m, n], 5, DType::F64, &dev).unwrap();
        let ours = (matmul(&a, &b).unwrap() * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let plain = (a.matmul(&b).unwrap() * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&a, &b] {
            let d = (ours.get(v).unwrap() - plain.get(v).unwrap()).unwrap().abs().unwrap();
            let e: f64 = d.max_all().unwrap().to_scalar().unwrap();
            assert!(e < 1e-12, "gradient differs from candle's by {e}");
        }
        let bc = b.as_tensor().detach();
        let e = check_grad(|x: &Tensor| matmul(x, &bc), a.as_tensor(), 6).unwrap();
        assert!(e < 1e-7, "∂A: FD rel err {e}");
        let ac = a.as_tensor().detach();
        let e = check_grad(|x: &Tensor| matmul(&ac, x), b.as_tensor(), 7).unwrap();
        assert!(e < 1e-7, "∂B: FD rel err {e}");
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let a = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(matmul(&a, &b).is_err());
    }
}
