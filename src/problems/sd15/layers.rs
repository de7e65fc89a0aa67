//! Differentiable layers of the Stable Diffusion UNet and VAE, composed from primitive candle ops.
//!
//! candle's fused `softmax_last_dim`, `layer_norm` and `rms_norm` have no backward pass (stack.md, "gradients
//! silently dropped"), so the normalisations and the attention softmax here are written from means, variances,
//! `exp` and sums, and guidance attaches their closed-form input gradients; on CUDA the normalisations run as fused
//! kernels ([`crate::nn::fused`]) and the attention softmax as candle's fused forward kernel, their gradients still
//! attached by us. Convolutions get their input gradient as a forward convolution ([`conv_input_grad`], cuDNN on
//! CUDA); `silu`, broadcasts and `to_dtype` are candle ops with a backward pass; every layer is covered by
//! finite-difference tests.
//!
//! Half-precision models (fp16 / bf16) compute group/layer-norm statistics and the attention softmax in f32 and
//! cast back, as PyTorch's autocast does for these reductions; f32 and f64 models compute in their own dtype.
//! Nearest-neighbour up-sampling is a broadcast + reshape (candle's `upsample_nearest2d` backward overwrites,
//! rather than accumulates, the input gradient).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::nn::fused::NormShape;
use crate::nn::fused_norm;
use crate::nn::Linear;
use crate::{Error, Result};

pub use super::attention::attention;
pub use crate::nn::{norm_input_grad, normalise_last, with_input_grad, work_dtype, LayerNorm};

/// Group normalisation (Wu & He 2018) over `[batch, channels, ...]` with per-channel affine γ, β (PyTorch
/// `nn.GroupNorm`, biased variance). Keys `weight`, `bias`.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads γ, β of `channels` under `vb`; `channels` must be divisible by `groups`.
    pub fn load(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || channels % groups != 0 {
            return Err(Error::config(format!(
                "group norm `{}`: {channels} channels are not divisible into {groups} groups; fix norm_num_groups",
                vb.prefix()
            )));
        }
        Ok(Self { weight: vb.get(channels, "weight")?, bias: vb.get(channels, "bias")?, groups, eps })
    }

    /// Normalises `x` `[b, c, ...]` per (sample, group).
    ///
    /// When `x` is on the autograd graph (and γ, β are constants, as in inference-time guidance), the forward pass
    /// runs outside the graph and [`with_input_grad`] attaches the closed-form input gradient
    /// ([`group_norm_input_grad`]), so the backward
    /// pass keeps only `x` instead of every intermediate of the statistics.
    ///
    /// On CUDA the forward pass and the input gradient are the fused kernels of [`crate::nn::fused`] (one launch
    /// each); the CPU keeps the composed formula.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, x.device().is_cuda())
    }

    /// [`GroupNorm::forward`] with the fused kernels or not (`fused`; the tests run them on the CPU). Trainable γ, β
    /// take the plain formula.
    pub fn forward_with(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        let constant = !self.weight.track_op() && !self.bias.track_op();
        if fused && constant {
            let shape = NormShape::group_norm(x.dims(), self.groups)?;
            return fused_norm(x, &self.weight, &self.bias, shape, self.eps, "group-norm-input-grad");
        }
        if x.track_op() && constant {
            let y = self.forward_plain(&x.detach())?;
            let (weight, groups, eps) = (self.weight.clone(), self.groups, self.eps);
            return with_input_grad(&y, x, "group-norm-input-grad", move |x, g| {
                group_norm_input_grad(x, g, &weight, groups, eps)
            });
        }
        self.forward_plain(x)
    }

    /// The plain formula, differentiated by candle's autograd (which keeps every intermediate of the statistics):
    /// the path without a graph, and the reference of the tests and of `examples/sd_layer_memory.rs`.
    pub fn forward_plain(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let dims = x.dims().to_vec();
        if dims.len() < 2 {
            return Err(Error::config("group norm: input must be [batch, channels, ...]"));
        }
        let xg = x.to_dtype(work_dtype(dtype))?.reshape((dims[0], self.groups, ()))?;
        let xn = normalise_last(&xg, self.eps)?.reshape(dims.as_slice())?.to_dtype(dtype)?;
        let mut s = vec![1usize; dims.len()];
        s[1] = dims[1];
        Ok(xn.broadcast_mul(&self.weight.reshape(s.as_slice())?)?.broadcast_add(&self.bias.reshape(s.as_slice())?)?)
    }
}

/// Group normalisation's input gradient: with x̂ = (x − μ)/σ per (sample, group) and g = γ ⊙ ∂L/∂y,
/// ∂L/∂x = (g − mean(g) − x̂ · mean(g ⊙ x̂)) / σ (the normalisation's Jacobian, Ioffe & Szegedy 2015 §3, per
/// group). μ, σ and x̂ are recomputed from `x` in the work dtype (f32 for half-precision models).
pub fn group_norm_input_grad(
    x: &Tensor,
    grad: &Tensor,
    weight: &Tensor,
    groups: usize,
    eps: f64,
) -> candle_core::Result<Tensor> {
    let dtype = x.dtype();
    let work = work_dtype(dtype);
    let dims = x.dims().to_vec();
    let xg = x.to_dtype(work)?.reshape((dims[0], groups, ()))?;
    let mut s = vec![1usize; dims.len()];
    s[1] = dims[1];
    let gamma = weight.to_dtype(work)?.reshape(s.as_slice())?;
    let g = grad.to_dtype(work)?.broadcast_mul(&gamma)?.reshape((dims[0], groups, ()))?;
    norm_input_grad(&xg, &g, eps)?.reshape(dims.as_slice())?.to_dtype(dtype)
}

/// A 2-D convolution with PyTorch weight layout `[out, in, k, k]` and optional bias `[out]`. Keys `weight`, `bias`.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Loads a `k × k` convolution `c_in → c_out` with bias under `vb`.
    pub fn load(vb: VarBuilder, c_in: usize, c_out: usize, k: usize, stride: usize, padding: usize) -> Result<Self> {
        Ok(Self { weight: vb.get((c_out, c_in, k, k), "weight")?, bias: Some(vb.get(c_out, "bias")?), stride, padding })
    }

    /// Applies the convolution to `x` `[b, c_in, h, w]`.
    ///
    /// A convolution of an input on the autograd graph with a constant kernel (inference-time guidance) runs outside
    /// the graph and gets its input gradient from [`conv_input_grad`] through [`with_input_grad`], on every device:
    /// candle's `Conv2D` backward computes the input gradient with `conv_transpose2d`, whose CPU kernel is a direct
    /// loop (≈ 6× slower than the equivalent im2col convolution at 128 channels × 128², measured) and whose CUDA
    /// kernel is a plain loop too (no cuDNN), and it always computes the kernel gradient, which guidance never uses.
    /// The input gradient as a forward convolution runs on im2col + GEMM on the CPU and on cuDNN on CUDA.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, kh, kw) = self.weight.dims4()?;
        let y = if x.track_op() && !self.weight.track_op() && kh == kw && self.padding < kh {
            let (_, _, h, w) = x.dims4()?;
            let y = x.detach().conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
            let (weight, padding, stride) = (self.weight.clone(), self.padding, self.stride);
            with_input_grad(&y, x, "conv2d-input-grad", move |_, g| {
                conv_input_grad(g, &weight, padding, stride, (h, w))
            })?
        } else {
            x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
            None => y,
        })
    }
}

/// The input gradient of a convolution with square kernel `weight` `[out, in, k, k]`, padding `p < k` and stride
/// `s`, for an input of spatial size `input_hw`: the transposed convolution written as a forward one (Dumoulin &
/// Visin 2016, §4.5): the output gradient with s − 1 zeros inserted between its entries (and the
/// (h + 2p − k) mod s rows/columns the strided forward pass skipped appended as zeros), convolved at stride 1 with
/// the spatially flipped, transposed kernel and padding k − 1 − p. A forward convolution: im2col + GEMM on the CPU,
/// cuDNN on CUDA.
pub fn conv_input_grad(
    grad: &Tensor,
    weight: &Tensor,
    padding: usize,
    stride: usize,
    input_hw: (usize, usize),
) -> candle_core::Result<Tensor> {
    let k = weight.dim(2)?;
    let flipped = weight.flip(&[2, 3])?.transpose(0, 1)?.contiguous()?;
    let grad = if stride > 1 {
        dilate(grad, stride, (input_hw.0 + 1 + 2 * padding - k, input_hw.1 + 1 + 2 * padding - k))?
    } else {
        grad.clone()
    };
    grad.conv2d(&flipped, k - 1 - padding, 1, 1, 1)
}

/// `g` `[b, c, h, w]` with s − 1 zeros after each entry along both spatial axes, cut to `size` (≤ (h·s, w·s)):
/// entry (i, j) lands at (s·i, s·j).
fn dilate(g: &Tensor, s: usize, size: (usize, usize)) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = g.dims4()?;
    let z = g.reshape((b, c, h, 1, w, 1))?.pad_with_zeros(5, 0, s - 1)?.pad_with_zeros(3, 0, s - 1)?;
    z.reshape((b, c, h * s, w * s))?.narrow(2, 0, size.0)?.narrow(3, 0, size.1)?.contiguous()
}

/// SiLU x·σ(x) of the ResNet blocks. On CUDA with `x` on the autograd graph, the forward pass runs off the graph
/// and the fused kernel's input gradient ([`crate::nn::fused::silu_grad`], one pass) is attached instead of candle's
/// nine-pass backward; the CPU keeps candle's op.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    silu_with(x, x.device().is_cuda())
}

/// [`silu`] with the fused input gradient or not (`fused`; the tests run it on the CPU).
pub fn silu_with(x: &Tensor, fused: bool) -> Result<Tensor> {
    if fused && x.track_op() {
        let y = x.detach().silu()?;
        return with_input_grad(&y, x, "silu-input-grad", crate::nn::fused::silu_grad);
    }
    Ok(x.silu()?)
}

/// Nearest-neighbour ×2 up-sampling of `[b, c, h, w]` (PyTorch `F.interpolate(scale_factor=2, mode="nearest")`),
/// as a broadcast + reshape so that the backward pass sums the four copies.
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    Ok(x.reshape((b, c, h, 1, w, 1))?.broadcast_as((b, c, h, 2, w, 2))?.reshape((b, c, 2 * h, 2 * w))?)
}

/// Attention block of diffusers (`Attention`): `to_q`, `to_k`, `to_v` (bias optional), `to_out.0` (with bias).
/// Self-attention when no context is given, cross-attention otherwise.
#[derive(Clone, Debug)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl Attention {
    /// Loads an attention of query width `query_dim`, context width `context_dim`, `heads` heads of `head_dim`.
    pub fn load(
        vb: VarBuilder,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            to_q: Linear::load(vb.pp("to_q"), query_dim, inner, qkv_bias)?,
            to_k: Linear::load(vb.pp("to_k"), context_dim, inner, qkv_bias)?,
            to_v: Linear::load(vb.pp("to_v"), context_dim, inner, qkv_bias)?,
            to_out: Linear::load(vb.pp("to_out").pp(0), inner, query_dim, true)?,
            heads,
        })
    }

    /// An attention from its four projections.
    pub fn new(to_q: Linear, to_k: Linear, to_v: Linear, to_out: Linear, heads: usize) -> Self {
        Self { to_q, to_k, to_v, to_out, heads }
    }

    /// Attention of `x` `[b, n, query_dim]` to `context` `[b, m, context_dim]` (or to itself).
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let o = attention(&self.to_q.forward(x)?, &self.to_k.forward(ctx)?, &self.to_v.forward(ctx)?, self.heads)?;
        self.to_out.forward(&o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::{check_grad, random_tensor};
    use candle_core::{DType, Device, Var};

    fn norm(dtype: DType) -> GroupNorm {
        let dev = Device::Cpu;
        let weight = (random_tensor(&[8], 2, DType::F64, &dev).unwrap() + 1.0).unwrap().to_dtype(dtype).unwrap();
        let bias = random_tensor(&[8], 3, DType::F64, &dev).unwrap().to_dtype(dtype).unwrap();
        GroupNorm { weight, bias, groups: 4, eps: 1e-5 }
    }

    /// ∂(u · f(x))/∂x by candle's autograd.
    fn grad(f: impl Fn(&Tensor) -> Result<Tensor>, x: &Tensor, u: &Tensor) -> Tensor {
        let var = Var::from_tensor(x).unwrap();
        let y = f(var.as_tensor()).unwrap();
        let g = (y.to_dtype(u.dtype()).unwrap() * u).unwrap().sum_all().unwrap().backward().unwrap();
        g.get(var.as_tensor()).unwrap().to_dtype(DType::F64).unwrap()
    }

    fn max_abs(a: &Tensor) -> f64 {
        a.abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn group_norm_backward_is_the_autograd_gradient() {
        let dev = Device::Cpu;
        let x = (random_tensor(&[2, 8, 3, 5], 1, DType::F64, &dev).unwrap() * 3.0).unwrap();
        let u = random_tensor(&[2, 8, 3, 5], 4, DType::F64, &dev).unwrap();
        let gn = norm(DType::F64);
        // The same forward bits with and without the graph.
        let on_graph = gn.forward(Var::from_tensor(&x).unwrap().as_tensor()).unwrap();
        assert_eq!(max_abs(&(on_graph - gn.forward_plain(&x).unwrap()).unwrap()), 0.0);
        let ours = grad(|x| gn.forward(x), &x, &u);
        let theirs = grad(|x| gn.forward_plain(x), &x, &u);
        assert!(max_abs(&(&ours - &theirs).unwrap()) < 1e-12 * max_abs(&theirs));
        assert!(check_grad(|x| gn.forward(x), &x, 5).unwrap() < 1e-8);
        // The fused kernels (CUDA's path, here on the CPU): the same values and gradient to rounding.
        let fused = gn.forward_with(Var::from_tensor(&x).unwrap().as_tensor(), true).unwrap();
        assert!(max_abs(&(fused - gn.forward_plain(&x).unwrap()).unwrap()) < 1e-12);
        let g_fused = grad(|x| gn.forward_with(x, true), &x, &u);
        assert!(max_abs(&(&g_fused - &theirs).unwrap()) < 1e-12 * max_abs(&theirs));
        assert!(check_grad(|x| gn.forward_with(x, true), &x, 6).unwrap() < 1e-8);
        // f16: statistics in f32; close to the f64 gradient.
        let (gn16, x16) = (norm(DType::F16), x.to_dtype(DType::F16).unwrap());
        let g16 = grad(|x| gn16.forward(x), &x16, &u);
        assert!(max_abs(&(&g16 - &theirs).unwrap()) < 2e-2 * max_abs(&theirs));
    }

    /// The fused SiLU gradient (CUDA's path, here its CPU reference) is candle's autograd gradient and the FD one;
    /// half-precision storage within its rounding.
    #[test]
    fn silu_input_gradient_op() {
        let dev = Device::Cpu;
        let x = (random_tensor(&[2, 3, 4, 5], 28, DType::F64, &dev).unwrap() * 4.0).unwrap();
        let u = random_tensor(&[2, 3, 4, 5], 29, DType::F64, &dev).unwrap();
        let ours = grad(|x| silu_with(x, true), &x, &u);
        let theirs = grad(|x| Ok(x.silu()?), &x, &u);
        assert!(max_abs(&(&ours - &theirs).unwrap()) < 1e-14 * max_abs(&theirs));
        assert_eq!(max_abs(&(silu_with(&x, true).unwrap() - x.silu().unwrap()).unwrap()), 0.0);
        assert!(check_grad(|x| silu_with(x, true), &x, 30).unwrap() < 1e-8);
        for (dtype, tol) in [(DType::F32, 1e-6), (DType::F16, 3e-3), (DType::BF16, 2e-2)] {
            let h = |t: &Tensor| t.to_dtype(dtype).unwrap();
            let g = crate::nn::fused::silu_grad(&h(&x), &h(&u)).unwrap();
            let reference =
                crate::nn::fused::silu_grad(&h(&x).to_dtype(DType::F64).unwrap(), &h(&u).to_dtype(DType::F64).unwrap())
                    .unwrap();
            let rel = max_abs(&(g.to_dtype(DType::F64).unwrap() - &reference).unwrap()) / max_abs(&reference);
            assert!(g.dtype() == dtype && rel < tol, "{dtype:?}: {rel:.1e}");
        }
        assert!(crate::nn::fused::silu_grad(&x, &u.narrow(3, 0, 4).unwrap()).is_err(), "shapes must match");
    }

    fn conv(k: usize, stride: usize, padding: usize, dtype: DType, dev: &Device) -> Conv2d {
        let weight =
            (random_tensor(&[4, 3, k, k], 21, DType::F64, dev).unwrap() * 0.3).unwrap().to_dtype(dtype).unwrap();
        let bias = random_tensor(&[4], 22, DType::F64, dev).unwrap().to_dtype(dtype).unwrap();
        Conv2d { weight, bias: Some(bias), stride, padding }
    }

    /// The convolutions of the UNet and VAE (3×3 / 1×1 at stride 1, the 3×3 stride-2 down-samplers) and a few
    /// more (stride 2 without padding, a 4×4 kernel, stride 3) on even and odd sizes, where the strided pass
    /// skips rows and columns: the input-gradient op gives candle's forward bits, candle's autograd gradient (where
    /// candle's backward handles the size) and the finite-difference gradient.
    #[test]
    fn conv_input_gradient_op_matches_autograd_at_every_stride() {
        let dev = Device::Cpu;
        for (k, s, p) in [(3, 1, 1), (1, 1, 0), (3, 2, 1), (3, 2, 0), (4, 2, 1), (3, 3, 2)] {
            for (h, w) in [(8, 6), (7, 9)] {
                let c = conv(k, s, p, DType::F64, &dev);
                let x = random_tensor(&[2, 3, h, w], 23, DType::F64, &dev).unwrap();
                let u_shape = c.forward(&x).unwrap().dims().to_vec();
                let u = random_tensor(&u_shape, 24, DType::F64, &dev).unwrap();
                let on_graph = c.forward(Var::from_tensor(&x).unwrap().as_tensor()).unwrap();
                let plain = x
                    .conv2d(&c.weight, p, s, 1, 1)
                    .unwrap()
                    .broadcast_add(&c.bias.as_ref().unwrap().reshape((1, 4, 1, 1)).unwrap())
                    .unwrap();
                assert_eq!(max_abs(&(on_graph - &plain).unwrap()), 0.0, "k {k} s {s} p {p} {h}×{w}: forward bits");
                let ours = grad(|x| c.forward(x), &x, &u);
                // candle's own backward has no output padding: where the strided pass skips trailing rows or
                // columns its input gradient comes out a row or column short (an error), so only FD checks those.
                if (h + 2 * p - k) % s == 0 && (w + 2 * p - k) % s == 0 {
                    let theirs = grad(|x| Ok(x.conv2d(&c.weight, p, s, 1, 1)?), &x, &u);
                    let rel = max_abs(&(&ours - &theirs).unwrap()) / max_abs(&theirs);
                    assert!(rel < 1e-12, "k {k} s {s} p {p} {h}×{w}: input gradient {rel:.1e} from candle's autograd");
                }
                let fd = check_grad(|x| c.forward(x), &x, 25).unwrap();
                assert!(fd < 1e-7, "k {k} s {s} p {p} {h}×{w}: FD rel err {fd:.1e}");
            }
        }
    }

    #[test]
    fn conv_cuda_matches_cpu_where_a_gpu_is_present() {
        let Ok(gpu) = Device::new_cuda(0) else {
            eprintln!("SKIP: no CUDA device here (build with --features cuda and run on a GPU machine)");
            return;
        };
        for (k, s, p) in [(3, 1, 1), (1, 1, 0), (3, 2, 1)] {
            let x = random_tensor(&[2, 3, 9, 8], 26, DType::F32, &Device::Cpu).unwrap();
            let run = |dev: &Device, dtype: DType| -> (Tensor, Tensor) {
                let c = conv(k, s, p, dtype, dev);
                let var = Var::from_tensor(&x.to_dtype(dtype).unwrap().to_device(dev).unwrap()).unwrap();
                let y = c.forward(var.as_tensor()).unwrap();
                let u = random_tensor(y.dims(), 27, dtype, dev).unwrap();
                let g = (&y * &u).unwrap().sum_all().unwrap().backward().unwrap();
                let back = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap();
                (back(&y), back(g.get(var.as_tensor()).unwrap()))
            };
            let (y0, g0) = run(&Device::Cpu, DType::F32);
            // f32 on cuDNN against the CPU; f16 on cuDNN against the f32 CPU reference.
            for (dtype, tol) in [(DType::F32, 1e-5), (DType::F16, 1e-2)] {
                let (y1, g1) = run(&gpu, dtype);
                let rel = |a: &Tensor, b: &Tensor| max_abs(&(a - b).unwrap()) / max_abs(b);
                assert!(rel(&y1, &y0) < tol && rel(&g1, &g0) < tol, "k {k} s {s} {dtype:?}: CPU vs CUDA (cuDNN)");
            }
        }
    }

    #[test]
    fn silu_cuda_matches_cpu_where_a_gpu_is_present() {
        let Ok(gpu) = Device::new_cuda(0) else {
            eprintln!("SKIP: no CUDA device here (build with --features cuda and run on a GPU machine)");
            return;
        };
        let x = (random_tensor(&[2, 3, 5, 7], 34, DType::F32, &Device::Cpu).unwrap() * 4.0).unwrap();
        let u = random_tensor(&[2, 3, 5, 7], 35, DType::F32, &Device::Cpu).unwrap();
        let run = |dev: &Device, dtype: DType| -> Tensor {
            let var = Var::from_tensor(&x.to_dtype(dtype).unwrap().to_device(dev).unwrap()).unwrap();
            let y = silu(var.as_tensor()).unwrap();
            let g = (&y * &u.to_dtype(dtype).unwrap().to_device(dev).unwrap()).unwrap().sum_all().unwrap();
            let g = g.backward().unwrap();
            g.get(var.as_tensor()).unwrap().to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap()
        };
        let g0 = run(&Device::Cpu, DType::F32);
        for (dtype, tol) in [(DType::F32, 1e-6), (DType::F16, 5e-3), (DType::BF16, 3e-2)] {
            let rel = max_abs(&(run(&gpu, dtype) - &g0).unwrap()) / max_abs(&g0);
            assert!(rel < tol, "{dtype:?}: SiLU input gradient CPU vs CUDA {rel:.1e}");
        }
    }

    #[test]
    fn group_norm_cuda_matches_cpu_where_a_gpu_is_present() {
        let Ok(gpu) = Device::new_cuda(0) else {
            eprintln!("SKIP: no CUDA device here (build with --features cuda and run on a GPU machine)");
            return;
        };
        let x = random_tensor(&[2, 8, 3, 5], 1, DType::F32, &Device::Cpu).unwrap();
        let u = random_tensor(&[2, 8, 3, 5], 4, DType::F32, &Device::Cpu).unwrap();
        let gn = norm(DType::F32);
        let run = |dev: &Device| -> (Tensor, Tensor) {
            let to = |t: &Tensor| t.to_device(dev).unwrap();
            let gn = GroupNorm { weight: to(&gn.weight), bias: to(&gn.bias), groups: gn.groups, eps: gn.eps };
            let var = Var::from_tensor(&to(&x)).unwrap();
            let y = gn.forward(var.as_tensor()).unwrap();
            let g = (&y * to(&u)).unwrap().sum_all().unwrap().backward().unwrap();
            (y.to_device(&Device::Cpu).unwrap(), g.get(var.as_tensor()).unwrap().to_device(&Device::Cpu).unwrap())
        };
        let ((y0, g0), (y1, g1)) = (run(&Device::Cpu), run(&gpu));
        let rel = |a: &Tensor, b: &Tensor| max_abs(&(a - b).unwrap()) / max_abs(b);
        assert!(rel(&y1, &y0) < 1e-5 && rel(&g1, &g0) < 1e-5, "CPU vs CUDA");
    }
}
