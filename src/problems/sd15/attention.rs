//! Scaled dot-product attention whose memory is linear in the sequence, forward and backward (issue 16).
//!
//! O = softmax(Q Kᵀ) V with the scale 1/√d folded into Q (Vaswani et al. 2017, eq. 1). Written with candle's
//! differentiable ops, autograd keeps every `[b, heads, n, m]` intermediate of the softmax (scores, their shifted
//! exponentials, the normaliser, the probabilities) until the backward pass: at 512² the UNet's 4096-token
//! self-attention holds several GiB per layer, most of the measured ≈ 114 GB of one guided step. Here the forward
//! pass runs in blocks of query rows — never more than [`BLOCK_ELEMS`] scores at once — outside the autograd graph,
//! and a custom op attaches the backward pass, which **recomputes** each block's probabilities instead of storing
//! them (the memory-efficient attention of Rabe & Staats 2021 and FlashAttention, Dao et al. 2022, §3.1, written
//! with tensor ops, so the same code runs on the CPU and on CUDA). For a block of query rows c, with the block's
//! output gradient dO_c and output O_c:
//!
//! P = softmax(Q_c Kᵀ), dP = dO_c Vᵀ, dS = P ⊙ (dP − rowsum(dO_c ⊙ O_c)),
//! dQ_c = dS K, dK += dSᵀ Q_c, dV += Pᵀ dO_c
//!
//! (rowsum(dO_c ⊙ O_c) = rowsum(P ⊙ dP), the softmax Jacobian's diagonal correction). Only Q, K, V and O — linear in
//! the sequence — live from the forward to the backward pass. Half-precision models compute the softmax and dS in
//! f32, as the forward pass does ([`crate::nn::softmax_last_dim`]). A problem small enough for one block computes
//! exactly the ops of the plain formula, so its forward values are the same bits as before.

use candle_core::{Tensor, D};

use crate::nn::work_dtype;
use crate::{Error, Result};

/// Most scores `[b, heads, rows, m]` one block holds (2²⁴: 64 MiB in f32).
pub const BLOCK_ELEMS: usize = 1 << 24;

/// Multi-head scaled dot-product attention softmax(q kᵀ/√d) v over `[b, n, heads·d]` queries and
/// `[b, m, heads·d]` keys/values; returns `[b, n, heads·d]`. Memory linear in n and m (see the module docs).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    attention_blocked(q, k, v, heads, BLOCK_ELEMS)
}

/// [`attention`] with at most `block_elems` scores per block (at least one query row).
pub fn attention_blocked(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, block_elems: usize) -> Result<Tensor> {
    attention_with(q, k, v, heads, block_elems, q.device().is_cuda())
}

/// [`attention_blocked`] with the fused kernels (softmax forward, dS) or the composed formulas: `fused` is the CUDA
/// path; the tests run it on the CPU too.
fn attention_with(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, block_elems: usize, fused: bool) -> Result<Tensor> {
    let (b, n, inner) = q.dims3()?;
    let m = k.dim(1)?;
    if heads == 0 || inner % heads != 0 {
        return Err(Error::config(format!("attention: width {inner} is not divisible by {heads} heads")));
    }
    let d = inner / heads;
    let split = |t: &Tensor, len: usize| -> Result<Tensor> {
        Ok(t.reshape((b, len, heads, d))?.transpose(1, 2)?.contiguous()?)
    };
    let q = split(&(q * (d as f64).powf(-0.5))?, n)?;
    let k = split(k, m)?;
    let v = split(v, m)?;
    let rows = (block_elems / (b * heads * m).max(1)).clamp(1, n.max(1));
    let o = forward(&q.detach(), &k.detach(), &v.detach(), rows, fused)?;
    let o = if q.track_op() || k.track_op() || v.track_op() {
        // K and V travel as one argument (a custom op takes three): autograd splits the gradient of the concatenation.
        let kv = Tensor::cat(&[&k, &v], 3)?;
        crate::nn::with_grads(&o, &q, &kv, "attention-recompute-backward", move |q, kv, o, g| {
            recompute_backward(q, kv, o, g, rows, d, fused)
        })?
    } else {
        o
    };
    Ok(o.transpose(1, 2)?.reshape((b, n, inner))?)
}

/// The plain formula softmax(q kᵀ/√d) v differentiated by candle's autograd, which keeps every `[b, heads, n, m]`
/// intermediate for the backward pass: the reference of the tests and of `examples/sd_layer_memory.rs`.
pub fn attention_autograd(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, inner) = q.dims3()?;
    let m = k.dim(1)?;
    if heads == 0 || inner % heads != 0 {
        return Err(Error::config(format!("attention: width {inner} is not divisible by {heads} heads")));
    }
    let d = inner / heads;
    let split = |t: &Tensor, len: usize| -> Result<Tensor> {
        Ok(t.reshape((b, len, heads, d))?.transpose(1, 2)?.contiguous()?)
    };
    let q = split(&(q * (d as f64).powf(-0.5))?, n)?;
    let (k, v) = (split(k, m)?, split(v, m)?);
    let p = crate::nn::softmax_last_dim(&q.matmul(&k.t()?.contiguous()?)?)?;
    Ok(p.matmul(&v)?.transpose(1, 2)?.reshape((b, n, inner))?)
}

/// softmax(q kᵀ) v in blocks of `rows` query rows, for `[b, h, n, d]` inputs (q already scaled).
fn forward(q: &Tensor, k: &Tensor, v: &Tensor, rows: usize, fused: bool) -> Result<Tensor> {
    let n = q.dim(2)?;
    let kt = k.t()?.contiguous()?;
    let block = |q: &Tensor| -> Result<Tensor> { Ok(probabilities(&q.matmul(&kt)?, fused)?.matmul(v)?) };
    if rows >= n {
        return block(q);
    }
    let mut parts = Vec::with_capacity(n.div_ceil(rows));
    for r0 in (0..n).step_by(rows) {
        parts.push(block(&q.narrow(2, r0, rows.min(n - r0))?.contiguous()?)?);
    }
    Ok(Tensor::cat(&parts, 2)?)
}

/// softmax over the last dimension of a block of scores off the autograd graph. `fused` (on CUDA): candle's fused
/// kernel, one launch per block instead of the composed formula's max, shift, exp, sum and divide passes and its two
/// dtype casts; it reads half-precision scores directly and accumulates in f32 (the work dtype), so the
/// probabilities are the composed formula's up to rounding. Otherwise the composed [`crate::nn::softmax_last_dim`]
/// (the CPU keeps its bits).
fn probabilities(scores: &Tensor, fused: bool) -> candle_core::Result<Tensor> {
    if fused {
        candle_nn::ops::softmax_last_dim(&scores.contiguous()?)
    } else {
        crate::nn::softmax_last_dim(scores).map_err(candle_core::Error::wrap)
    }
}

/// The attention's gradients (∂L/∂q, ∂L/∂[k | v]) for the output `o` and its gradient `grad`: the softmax recomputed
/// block by block of `rows` query rows (module docs); `fused` uses the fused kernels (softmax, dS), the CUDA path.
fn recompute_backward(
    q: &Tensor,
    kv: &Tensor,
    o: &Tensor,
    grad: &Tensor,
    rows: usize,
    d: usize,
    fused: bool,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    let (q, kv, o) = (q.detach(), kv.detach(), o.detach());
    let k = kv.narrow(3, 0, d)?.contiguous()?;
    let v = kv.narrow(3, d, d)?.contiguous()?;
    let kt = k.t()?.contiguous()?;
    let vt = v.t()?.contiguous()?;
    let grad = grad.contiguous()?;
    let dtype = q.dtype();
    let work = work_dtype(dtype);
    let n = q.dim(2)?;
    let (mut dq, mut dk, mut dv) = (Vec::new(), None::<Tensor>, None::<Tensor>);
    let add = |acc: Option<Tensor>, x: Tensor| -> candle_core::Result<Option<Tensor>> {
        Ok(Some(match acc {
            Some(a) => (a + x)?,
            None => x,
        }))
    };
    for r0 in (0..n).step_by(rows) {
        let len = rows.min(n - r0);
        let qc = q.narrow(2, r0, len)?.contiguous()?;
        let go = grad.narrow(2, r0, len)?.contiguous()?;
        let oc = o.narrow(2, r0, len)?;
        let p = probabilities(&qc.matmul(&kt)?, fused)?;
        let dp = go.matmul(&vt)?;
        let row = (go.to_dtype(work)? * oc.to_dtype(work)?)?.sum_keepdim(D::Minus1)?;
        let ds = if fused {
            crate::nn::fused::softmax_grad(&p, &dp, &row)?
        } else {
            (p.to_dtype(work)? * dp.to_dtype(work)?.broadcast_sub(&row)?)?.to_dtype(dtype)?
        };
        dq.push(ds.matmul(&k)?);
        dk = add(dk, ds.t()?.matmul(&qc)?)?;
        dv = add(dv, p.t()?.matmul(&go)?)?;
    }
    let dq = Tensor::cat(&dq, 2)?;
    let dkv = match (dk, dv) {
        (Some(dk), Some(dv)) => Some(Tensor::cat(&[&dk, &dv], 3)?),
        _ => None,
    };
    Ok((Some(dq), dkv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::{check_grad, random_tensor};
    use candle_core::{DType, Device, Var};

    fn plain(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
        attention_autograd(q, k, v, heads)
    }

    fn inputs(dtype: DType) -> (Tensor, Tensor, Tensor) {
        let dev = Device::Cpu;
        let q = (random_tensor(&[2, 7, 6], 1, dtype, &dev).unwrap() * 2.0).unwrap();
        let k = (random_tensor(&[2, 5, 6], 2, dtype, &dev).unwrap() * 2.0).unwrap();
        let v = random_tensor(&[2, 5, 6], 3, dtype, &dev).unwrap();
        (q, k, v)
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
        let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-30);
        a.iter().zip(&b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    #[test]
    fn blocks_give_the_plain_values_and_one_block_the_same_bits() {
        let (q, k, v) = inputs(DType::F64);
        let reference = plain(&q, &k, &v, 2).unwrap();
        // One block: the same ops, the same bits.
        let one = attention_blocked(&q, &k, &v, 2, usize::MAX).unwrap();
        assert_eq!(max_rel(&one, &reference), 0.0);
        for elems in [1, 2 * 2 * 5 * 2, 2 * 2 * 5 * 3] {
            let o = attention_blocked(&q, &k, &v, 2, elems).unwrap();
            assert!(max_rel(&o, &reference) < 1e-14, "block of {elems} scores");
        }
    }

    #[test]
    fn recomputed_backward_matches_finite_differences_and_autograd() {
        let (q, k, v) = inputs(DType::F64);
        // Blocks of 1, 2 and 3 query rows (7 rows: uneven last blocks), and one block.
        for elems in [1, 2 * 2 * 5 * 2, 2 * 2 * 5 * 3, usize::MAX] {
            let eq = check_grad(|x| attention_blocked(x, &k, &v, 2, elems), &q, 11).unwrap();
            let ek = check_grad(|x| attention_blocked(&q, x, &v, 2, elems), &k, 12).unwrap();
            let ev = check_grad(|x| attention_blocked(&q, &k, x, 2, elems), &v, 13).unwrap();
            // Self-attention: one input feeds q, k and v.
            let x = random_tensor(&[2, 5, 6], 14, DType::F64, &Device::Cpu).unwrap();
            let es = check_grad(|x| attention_blocked(x, x, x, 3, elems), &x, 15).unwrap();
            assert!(eq < 1e-7 && ek < 1e-7 && ev < 1e-7 && es < 1e-7, "FD rel err {eq:.1e} {ek:.1e} {ev:.1e} {es:.1e}");
        }
        // Against candle's autograd of the plain formula, all three gradients.
        let u = random_tensor(&[2, 7, 6], 16, DType::F64, &Device::Cpu).unwrap();
        let grads = |f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>| -> Vec<Tensor> {
            let (vq, vk, vv) =
                (Var::from_tensor(&q).unwrap(), Var::from_tensor(&k).unwrap(), Var::from_tensor(&v).unwrap());
            let y = f(vq.as_tensor(), vk.as_tensor(), vv.as_tensor()).unwrap();
            let g = (y * &u).unwrap().sum_all().unwrap().backward().unwrap();
            [vq, vk, vv].iter().map(|x| g.get(x.as_tensor()).unwrap().clone()).collect()
        };
        let ours = grads(&|q, k, v| attention_blocked(q, k, v, 2, 2 * 2 * 5 * 2));
        let theirs = grads(&|q, k, v| plain(q, k, v, 2));
        // The CUDA path's fused kernels (here their CPU implementations) in the forward pass and the recomputation.
        let fused = grads(&|q, k, v| attention_with(q, k, v, 2, 2 * 2 * 5 * 2, true));
        for ((a, f), b) in ours.iter().zip(&fused).zip(&theirs) {
            assert!(max_rel(a, b) < 1e-13, "gradient differs from autograd: {:.1e}", max_rel(a, b));
            assert!(max_rel(f, b) < 1e-13, "fused gradient differs from autograd: {:.1e}", max_rel(f, b));
        }
        let ef = check_grad(|x| attention_with(x, x, x, 3, 2 * 2 * 5 * 2, true), &q.narrow(1, 0, 5).unwrap(), 19);
        assert!(ef.unwrap() < 1e-7, "fused path FD");
    }

    /// The fused kernels of the CUDA path (candle's softmax and our dS, here their CPU implementations) give the
    /// composed formula's values. Softmax:
    /// probabilities from the same scores: f64 and f32 to rounding, f16 to f16 rounding (candle's CPU kernel sums in
    /// f16; the CUDA kernel in f32).
    #[test]
    fn fused_probabilities_are_the_composed_ones() {
        let s = (random_tensor(&[2, 3, 5, 7], 31, DType::F64, &Device::Cpu).unwrap() * 4.0).unwrap();
        for (dtype, tol) in [(DType::F64, 1e-15), (DType::F32, 1e-6), (DType::F16, 2e-3)] {
            let x = s.to_dtype(dtype).unwrap();
            let fused = probabilities(&x, true).unwrap();
            assert_eq!(fused.dtype(), dtype);
            let rel = max_rel(&fused, &probabilities(&x, false).unwrap());
            assert!(rel < tol, "{dtype:?}: fused softmax {rel:.1e} from the composed one");
        }
        // dS = P ⊙ (dP − c) of the backward pass: the fused op is the composed formula.
        let p = probabilities(&s, false).unwrap();
        let dp = random_tensor(&[2, 3, 5, 7], 32, DType::F64, &Device::Cpu).unwrap();
        let c = random_tensor(&[2, 3, 5, 1], 33, DType::F64, &Device::Cpu).unwrap();
        let reference = (&p * dp.broadcast_sub(&c).unwrap()).unwrap();
        for (dtype, tol) in [(DType::F64, 1e-15), (DType::F32, 1e-6), (DType::F16, 2e-3), (DType::BF16, 2e-2)] {
            let (pt, dpt) = (p.to_dtype(dtype).unwrap(), dp.to_dtype(dtype).unwrap());
            let ct = c.to_dtype(work_dtype(dtype)).unwrap();
            let ds = crate::nn::fused::softmax_grad(&pt, &dpt, &ct).unwrap();
            assert_eq!(ds.dtype(), dtype);
            let rel = max_rel(&ds, &reference);
            assert!(rel < tol, "{dtype:?}: fused dS {rel:.1e} from the composed one");
        }
        assert!(crate::nn::fused::softmax_grad(&p, &dp, &dp).is_err(), "c must have one value per row");
        // A transposed (non-contiguous) block.
        let t = s.transpose(2, 3).unwrap();
        assert!(max_rel(&probabilities(&t, true).unwrap(), &probabilities(&t, false).unwrap()) < 1e-15);
    }

    #[test]
    fn half_precision_blocks_stay_close_to_f32() {
        let (q, k, v) = inputs(DType::F32);
        let h = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
        let o32 = attention_blocked(&q, &k, &v, 2, 20).unwrap();
        let o16 = attention_blocked(&h(&q), &h(&k), &h(&v), 2, 20).unwrap();
        assert!(max_rel(&o16, &o32) < 5e-3);
        let u = random_tensor(&[2, 7, 6], 17, DType::F32, &Device::Cpu).unwrap();
        let gq = |q: &Tensor| -> Tensor {
            let var = Var::from_tensor(q).unwrap();
            let y = attention_blocked(
                var.as_tensor(),
                &k.to_dtype(q.dtype()).unwrap(),
                &v.to_dtype(q.dtype()).unwrap(),
                2,
                20,
            )
            .unwrap();
            let g = (y.to_dtype(DType::F32).unwrap() * &u).unwrap().sum_all().unwrap().backward().unwrap();
            g.get(var.as_tensor()).unwrap().clone()
        };
        assert!(max_rel(&gq(&h(&q)), &gq(&q)) < 2e-2);
    }

    #[test]
    fn cuda_matches_cpu_where_a_gpu_is_present() {
        let Ok(gpu) = Device::new_cuda(0) else {
            eprintln!("SKIP: no CUDA device here (build with --features cuda and run on a GPU machine)");
            return;
        };
        let (q, k, v) = inputs(DType::F32);
        let u = random_tensor(&[2, 7, 6], 18, DType::F32, &Device::Cpu).unwrap();
        let run = |dev: &Device| -> (Tensor, Tensor) {
            let to = |t: &Tensor| t.to_device(dev).unwrap();
            let var = Var::from_tensor(&to(&q)).unwrap();
            let y = attention_blocked(var.as_tensor(), &to(&k), &to(&v), 2, 20).unwrap();
            let g = (&y * to(&u)).unwrap().sum_all().unwrap().backward().unwrap();
            let gq = g.get(var.as_tensor()).unwrap().to_device(&Device::Cpu).unwrap();
            (y.to_device(&Device::Cpu).unwrap(), gq)
        };
        let ((y0, g0), (y1, g1)) = (run(&Device::Cpu), run(&gpu));
        assert!(max_rel(&y1, &y0) < 1e-5 && max_rel(&g1, &g0) < 1e-5, "CPU vs CUDA");
    }
}
