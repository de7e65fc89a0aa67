//! Fused ops for CUDA (issue 16): group norm (Wu & He 2018) and layer norm (Ba, Kiros & Hinton 2016), forward and
//! input gradient, the attention softmax's dS ([`softmax_grad`]) and SiLU's input gradient ([`silu_grad`]), each one
//! kernel launch (`src/nn/kernels.cu`, compiled to PTX by `build.rs` with the
//! `cuda` feature) instead of the composed formula's ten-odd passes (mean, centre, square, mean, root, divide,
//! two dtype casts, the affine map) and their temporaries.
//!
//! A tensor is `rows` rows of `len` contiguous values normalised per row; value i of row r belongs to channel
//! (r mod groups)·(len / hw) + i / hw ([`NormShape`]). The input gradient is the normalisation's Jacobian
//! (Ioffe & Szegedy 2015 §3), ∂L/∂x = (g − mean(g) − x̂·mean(g ⊙ x̂))/σ with g = γ ⊙ ∂L/∂y, as in
//! [`super::norm_input_grad`]. Statistics accumulate in f32 for f32/f16/bf16 storage and in f64 for f64.
//!
//! The ops run on the CPU too — the kernels' algorithm written on the host, in f64 — as the reference of the tests
//! (`src/nn/norm.rs` checks them against the composed formula); the models use them on CUDA only
//! ([`super::norm::fused_norm`]) and keep the composed formula on the CPU (its bits are the CPU reference).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor, WithDType};

use crate::{Error, Result};

/// How a contiguous tensor splits into normalised rows and which channel's γ, β each value takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormShape {
    /// Values per normalised row.
    pub len: usize,
    /// Groups per sample (rows cycle through them); 1 for layer norm.
    pub groups: usize,
    /// Consecutive values sharing one channel (h·w for group norm, 1 for layer norm).
    pub hw: usize,
}

impl NormShape {
    /// Group norm of `[b, c, ...]` with `groups` groups: rows are (sample, group).
    pub fn group_norm(dims: &[usize], groups: usize) -> Result<Self> {
        if dims.len() < 2 || groups == 0 || dims[1] % groups != 0 {
            return Err(Error::config(format!(
                "group norm: input {dims:?} is not [batch, channels divisible by {groups}, ...]"
            )));
        }
        let hw: usize = dims[2..].iter().product();
        Ok(Self { len: dims[1] / groups * hw, groups, hw })
    }

    /// Layer norm over the last dimension of `dims`.
    pub fn layer_norm(dims: &[usize]) -> Result<Self> {
        let len = *dims.last().ok_or_else(|| Error::config("layer norm: input has no dimension"))?;
        Ok(Self { len, groups: 1, hw: 1 })
    }

    /// The channel of value `i` in row `row`.
    fn channel(&self, row: usize, i: usize) -> usize {
        (row % self.groups) * (self.len / self.hw) + i / self.hw
    }
}

/// The fused forward pass y = (x − μ)/σ·γ_c + β_c (no autograd: callers attach [`norm_input_grad`]).
pub fn norm(x: &Tensor, weight: &Tensor, bias: &Tensor, shape: NormShape, eps: f64) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op3_no_bwd(weight, bias, &Fused { kind: Kind::Forward, shape, eps })?)
}

/// The fused input gradient ∂L/∂x of [`norm`] for the output gradient `grad`.
pub fn norm_input_grad(
    x: &Tensor,
    grad: &Tensor,
    weight: &Tensor,
    shape: NormShape,
    eps: f64,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(&grad.contiguous()?, weight, &Fused { kind: Kind::InputGrad, shape, eps })
}

/// The softmax's backward inside attention: dS = P ⊙ (dP − c) for probabilities `p` and their gradient `dp`
/// (`[..., cols]`, one dtype) and the per-row correction `c` (`[..., 1]`, the work dtype: f32 for f32/f16/bf16, f64
/// for f64), computed in the work dtype and stored in `p`'s dtype — one pass instead of five (two casts, the
/// subtraction, the product, the cast back).
pub fn softmax_grad(p: &Tensor, dp: &Tensor, c: &Tensor) -> candle_core::Result<Tensor> {
    p.contiguous()?.apply_op3_no_bwd(&dp.contiguous()?, &c.contiguous()?, &SoftmaxGrad)
}

/// The op of [`softmax_grad`]: (P, dP, c) → dS.
struct SoftmaxGrad;

impl SoftmaxGrad {
    fn check(l1: &Layout, l2: &Layout, l3: &Layout) -> candle_core::Result<usize> {
        let cols = l1.shape().dims().last().copied().unwrap_or(0);
        let n = l1.shape().elem_count();
        if cols == 0
            || l2.shape() != l1.shape()
            || l3.shape().elem_count() * cols != n
            || cols > i32::MAX as usize
            || ![l1, l2, l3].iter().all(|l| l.is_contiguous())
        {
            candle_core::bail!("softmax grad: P {:?}, dP {:?}, c {:?} do not fit", l1.shape(), l2.shape(), l3.shape())
        }
        Ok(cols)
    }

    fn host<T: WithDType, A: WithDType>(p: &[T], dp: &[T], c: &[A], cols: usize) -> Vec<T> {
        let ds = p.iter().zip(dp).enumerate();
        ds.map(|(i, (p, d))| T::from_f64(p.to_f64() * (d.to_f64() - c[i / cols].to_f64()))).collect()
    }
}

impl CustomOp3 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let cols = Self::check(l1, l2, l3)?;
        let out = match (s1, s2, s3) {
            (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
                let (a, b, c) = (values(a, l1), values(b, l2), values(c, l3));
                CpuStorage::F64(Self::host(a, b, c, cols))
            }
            (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
                let (a, b, c) = (values(a, l1), values(b, l2), values(c, l3));
                CpuStorage::F32(Self::host(a, b, c, cols))
            }
            (CpuStorage::F16(a), CpuStorage::F16(b), CpuStorage::F32(c)) => {
                let (a, b, c) = (values(a, l1), values(b, l2), values(c, l3));
                CpuStorage::F16(Self::host(a, b, c, cols))
            }
            (CpuStorage::BF16(a), CpuStorage::BF16(b), CpuStorage::F32(c)) => {
                let (a, b, c) = (values(a, l1), values(b, l2), values(c, l3));
                CpuStorage::BF16(Self::host(a, b, c, cols))
            }
            _ => candle_core::bail!("softmax grad: P and dP share a float dtype, c is its work dtype"),
        };
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::DType;
        let cols = Self::check(l1, l2, l3)?;
        let inputs = [(s1, l1), (s2, l2), (s3, l3)];
        let out = match (s1.dtype(), s3.dtype()) {
            (DType::F32, DType::F32) => cuda::softmax_grad::<f32, f32>(cols, inputs, "f32")?,
            (DType::F64, DType::F64) => cuda::softmax_grad::<f64, f64>(cols, inputs, "f64")?,
            (DType::F16, DType::F32) => cuda::softmax_grad::<half::f16, f32>(cols, inputs, "f16")?,
            (DType::BF16, DType::F32) => cuda::softmax_grad::<half::bf16, f32>(cols, inputs, "bf16")?,
            (p, c) => candle_core::bail!("softmax grad: no kernel for P {p:?} with c {c:?}"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// SiLU's input gradient ∂L/∂x = g · σ(x) · (1 + x · (1 − σ(x))) for x and the output gradient g (one dtype),
/// computed in the work dtype — one pass where candle's backward takes nine.
pub fn silu_grad(x: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(&g.contiguous()?, &SiluGrad)
}

/// The op of [`silu_grad`]: (x, g) → ∂L/∂x.
struct SiluGrad;

impl SiluGrad {
    fn host<T: WithDType>(x: &[T], g: &[T]) -> Vec<T> {
        let d = |x: f64, g: f64| {
            let s = 1.0 / (1.0 + (-x).exp());
            g * s * (1.0 + x * (1.0 - s))
        };
        x.iter().zip(g).map(|(x, g)| T::from_f64(d(x.to_f64(), g.to_f64()))).collect()
    }
}

impl candle_core::CustomOp2 for SiluGrad {
    fn name(&self) -> &'static str {
        "silu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() || !l1.is_contiguous() || !l2.is_contiguous() {
            candle_core::bail!("silu grad: x {:?} and g {:?} do not fit", l1.shape(), l2.shape())
        }
        let out = match (s1, s2) {
            (CpuStorage::F64(x), CpuStorage::F64(g)) => CpuStorage::F64(Self::host(values(x, l1), values(g, l2))),
            (CpuStorage::F32(x), CpuStorage::F32(g)) => CpuStorage::F32(Self::host(values(x, l1), values(g, l2))),
            (CpuStorage::F16(x), CpuStorage::F16(g)) => CpuStorage::F16(Self::host(values(x, l1), values(g, l2))),
            (CpuStorage::BF16(x), CpuStorage::BF16(g)) => CpuStorage::BF16(Self::host(values(x, l1), values(g, l2))),
            _ => candle_core::bail!("silu grad: x and g must share one float dtype"),
        };
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::DType;
        if l1.shape() != l2.shape() || !l1.is_contiguous() || !l2.is_contiguous() || s1.dtype() != s2.dtype() {
            candle_core::bail!("silu grad: x {:?} and g {:?} do not fit", l1.shape(), l2.shape())
        }
        let inputs = [(s1, l1), (s2, l2)];
        let out = match s1.dtype() {
            DType::F32 => cuda::silu_grad::<f32>(inputs, "f32")?,
            DType::F64 => cuda::silu_grad::<f64>(inputs, "f64")?,
            DType::F16 => cuda::silu_grad::<half::f16>(inputs, "f16")?,
            DType::BF16 => cuda::silu_grad::<half::bf16>(inputs, "bf16")?,
            d => candle_core::bail!("silu grad: no kernel for {d:?}"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// The values of a contiguous layout within its storage.
fn values<'a, T>(v: &'a [T], l: &Layout) -> &'a [T] {
    &v[l.start_offset()..l.start_offset() + l.shape().elem_count()]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// (x, γ, β) → y.
    Forward,
    /// (x, ∂L/∂y, γ) → ∂L/∂x.
    InputGrad,
}

struct Fused {
    kind: Kind,
    shape: NormShape,
    eps: f64,
}

impl Fused {
    fn check(&self, l1: &Layout, l2: &Layout, l3: &Layout) -> candle_core::Result<usize> {
        let n = l1.shape().elem_count();
        let s = self.shape;
        let channels = s.groups * (s.len / s.hw.max(1));
        let second = if self.kind == Kind::InputGrad { n } else { channels };
        let ok = s.len > 0
            && s.hw > 0
            && s.len % s.hw == 0
            && n % s.len == 0
            && l2.shape().elem_count() == second
            && l3.shape().elem_count() == channels
            && [l1, l2, l3].iter().all(|l| l.is_contiguous());
        if !ok || (n / s.len) > i32::MAX as usize || s.len > i32::MAX as usize {
            candle_core::bail!(
                "fused norm: {:?} does not fit {:?} / {:?} / {:?}",
                s,
                l1.shape(),
                l2.shape(),
                l3.shape()
            )
        }
        Ok(n / s.len)
    }

    /// The kernels' algorithm on the host, in f64 (the reference of the CUDA kernels).
    fn host<T: WithDType>(&self, a: &[T], b: &[T], c: &[T], rows: usize) -> Vec<T> {
        let s = self.shape;
        let len = s.len;
        let mut out = Vec::with_capacity(a.len());
        for r in 0..rows {
            let x = &a[r * len..(r + 1) * len];
            let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / len as f64;
            let var = x.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / len as f64;
            let inv = 1.0 / (var + self.eps).sqrt();
            match self.kind {
                Kind::Forward => out.extend(x.iter().enumerate().map(|(i, v)| {
                    let ch = s.channel(r, i);
                    T::from_f64((v.to_f64() - mean) * inv * b[ch].to_f64() + c[ch].to_f64())
                })),
                Kind::InputGrad => {
                    let dy = &b[r * len..(r + 1) * len];
                    let g = |i: usize| dy[i].to_f64() * c[s.channel(r, i)].to_f64();
                    let xh = |i: usize| (x[i].to_f64() - mean) * inv;
                    let mg = (0..len).map(g).sum::<f64>() / len as f64;
                    let mgx = (0..len).map(|i| g(i) * xh(i)).sum::<f64>() / len as f64;
                    out.extend((0..len).map(|i| T::from_f64((g(i) - mg - xh(i) * mgx) * inv)));
                }
            }
        }
        out
    }
}

impl CustomOp3 for Fused {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Forward => "fused-norm",
            Kind::InputGrad => "fused-norm-input-grad",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let rows = self.check(l1, l2, l3)?;
        let out = match (s1, s2, s3) {
            (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
                CpuStorage::F64(self.host(values(a, l1), values(b, l2), values(c, l3), rows))
            }
            (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
                CpuStorage::F32(self.host(values(a, l1), values(b, l2), values(c, l3), rows))
            }
            (CpuStorage::F16(a), CpuStorage::F16(b), CpuStorage::F16(c)) => {
                CpuStorage::F16(self.host(values(a, l1), values(b, l2), values(c, l3), rows))
            }
            (CpuStorage::BF16(a), CpuStorage::BF16(b), CpuStorage::BF16(c)) => {
                CpuStorage::BF16(self.host(values(a, l1), values(b, l2), values(c, l3), rows))
            }
            _ => candle_core::bail!("fused norm: inputs must share one float dtype"),
        };
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let rows = self.check(l1, l2, l3)?;
        use candle_core::backend::BackendStorage;
        use candle_core::DType;
        let out = match s1.dtype() {
            DType::F32 => cuda::launch::<f32>(self, rows, [(s1, l1), (s2, l2), (s3, l3)], "f32")?,
            DType::F64 => cuda::launch::<f64>(self, rows, [(s1, l1), (s2, l2), (s3, l3)], "f64")?,
            DType::F16 => cuda::launch::<half::f16>(self, rows, [(s1, l1), (s2, l2), (s3, l3)], "f16")?,
            DType::BF16 => cuda::launch::<half::bf16>(self, rows, [(s1, l1), (s2, l2), (s3, l3)], "bf16")?,
            d => candle_core::bail!("fused norm: no kernel for {d:?}"),
        };
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CudaStorage, Layout};

    use crate::nn::fused::{Fused, Kind};

    /// The PTX of `src/nn/kernels.cu` (build.rs).
    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));

    /// The values of a contiguous layout of `s` as a `T` view.
    fn view<'a, T: CudaDType>((s, l): (&'a CudaStorage, &Layout)) -> candle_core::Result<CudaView<'a, T>> {
        let (o1, o2) =
            l.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("fused op: not contiguous".into()))?;
        Ok(s.as_cuda_slice::<T>()?.slice(o1..o2))
    }

    /// Launch configuration of an elementwise kernel over `n` values (grid-stride loop).
    fn elementwise(n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(256).clamp(1, 65_535 * 32) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
    }

    /// Launches `silu_grad_<suffix>` on x and g (storage `T`).
    pub(super) fn silu_grad<T: CudaDType + DeviceRepr>(
        inputs: [(&CudaStorage, &Layout); 2],
        suffix: &str,
    ) -> candle_core::Result<CudaStorage> {
        let dev = inputs[0].0.device().clone();
        let (x, g) = (view::<T>(inputs[0])?, view::<T>(inputs[1])?);
        let n = inputs[0].1.shape().elem_count();
        let func = dev.get_or_load_custom_func(&format!("silu_grad_{suffix}"), "alignbench_kernels", PTX)?;
        // SAFETY: every element is written by the kernel.
        let out = unsafe { dev.alloc::<T>(n)? };
        let n64 = n as i64;
        let mut builder = func.builder();
        builder.arg(&x);
        builder.arg(&g);
        builder.arg(&out);
        builder.arg(&n64);
        // SAFETY: the kernel's signature is (const T*, const T*, T*, long long).
        unsafe { builder.launch(elementwise(n)) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }

    /// Launches `softmax_grad_<suffix>` on P, dP (storage `T`) and c (work type `A`), values in rows of `cols`.
    pub(super) fn softmax_grad<T: CudaDType + DeviceRepr, A: CudaDType + DeviceRepr>(
        cols: usize,
        inputs: [(&CudaStorage, &Layout); 3],
        suffix: &str,
    ) -> candle_core::Result<CudaStorage> {
        let dev = inputs[0].0.device().clone();
        let (p, dp, c) = (view::<T>(inputs[0])?, view::<T>(inputs[1])?, view::<A>(inputs[2])?);
        let n = inputs[0].1.shape().elem_count();
        let func = dev.get_or_load_custom_func(&format!("softmax_grad_{suffix}"), "alignbench_kernels", PTX)?;
        // SAFETY: every element is written by the kernel.
        let out = unsafe { dev.alloc::<T>(n)? };
        let cfg = elementwise(n);
        let (cols, n) = (cols as i32, n as i64);
        let mut builder = func.builder();
        builder.arg(&p);
        builder.arg(&dp);
        builder.arg(&c);
        builder.arg(&out);
        builder.arg(&cols);
        builder.arg(&n);
        // SAFETY: the kernel's signature is (const T*, const T*, const A*, T*, int, long long).
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }

    /// Launches the kernel of `op` for storage type `T` (kernel suffix `suffix`): one block per row.
    pub(super) fn launch<T: CudaDType + DeviceRepr>(
        op: &Fused,
        rows: usize,
        inputs: [(&CudaStorage, &Layout); 3],
        suffix: &str,
    ) -> candle_core::Result<CudaStorage> {
        let dev = inputs[0].0.device().clone();
        let (a, b, c) = (view::<T>(inputs[0])?, view::<T>(inputs[1])?, view::<T>(inputs[2])?);
        let name = match op.kind {
            Kind::Forward => format!("norm_fwd_{suffix}"),
            Kind::InputGrad => format!("norm_input_grad_{suffix}"),
        };
        let func = dev.get_or_load_custom_func(&name, "alignbench_kernels", PTX)?;
        let s = op.shape;
        // SAFETY: every element is written by the kernel.
        let out = unsafe { dev.alloc::<T>(rows * s.len)? };
        let threads = if s.len >= 1024 { 1024 } else { s.len.div_ceil(32).max(1) * 32 };
        let cfg =
            LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (threads as u32, 1, 1), shared_mem_bytes: 0 };
        let (len, groups, hw) = (s.len as i32, s.groups as i32, s.hw as i32);
        let mut builder = func.builder();
        builder.arg(&a);
        builder.arg(&b);
        builder.arg(&c);
        builder.arg(&out);
        builder.arg(&len);
        builder.arg(&groups);
        builder.arg(&hw);
        builder.arg(&op.eps);
        // SAFETY: the kernel's signature is (const T*, const T*, const T*, T*, int, int, int, double).
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::random_tensor;
    use candle_core::{DType, Device};

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let dev = Device::Cpu;
        assert!(NormShape::group_norm(&[2, 6, 3], 4).is_err());
        assert!(NormShape::group_norm(&[6], 3).is_err());
        assert!(NormShape::layer_norm(&[]).is_err());
        let x = random_tensor(&[2, 6], 1, DType::F32, &dev).unwrap();
        let w = random_tensor(&[5], 2, DType::F32, &dev).unwrap();
        let shape = NormShape::layer_norm(&[2, 6]).unwrap();
        let err = norm(&x, &w, &w, shape, 1e-5).unwrap_err().to_string();
        assert!(err.contains("fused norm"), "{err}");
        let w64 = random_tensor(&[6], 2, DType::F64, &dev).unwrap();
        assert!(norm(&x, &w64, &w64, shape, 1e-5).is_err(), "mixed dtypes");
    }
}
