//! Normalisations with a hand-written input gradient: layer normalisation (Ba, Kiros & Hinton 2016) over the last
//! dimension, the shared normalisation Jacobian (Ioffe & Szegedy 2015 §3) that group norm uses too, and
//! [`with_input_grad`], the custom op that puts a value computed outside the autograd graph back on it with its
//! closed-form input gradient (issue 16: the backward pass keeps the input instead of every intermediate).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp3, DType, Layout, Shape, Tensor, D};
use candle_nn::VarBuilder;

use super::fused::{self, NormShape};
use crate::Result;

/// The dtype in which reductions (norm statistics, softmax) are computed for inputs of `dtype`: f64 stays f64,
/// everything else (f32, f16, bf16) runs in f32, so half-precision models keep accurate statistics.
pub fn work_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F64 => DType::F64,
        _ => DType::F32,
    }
}

/// Layer normalisation over the last dimension (Ba, Kiros & Hinton 2016), composed from primitive ops:
/// y = (x − mean) / √(var + eps) · γ + β with the biased (population) variance, as PyTorch.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// A layer norm from γ [dim], β [dim] and eps.
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self { weight, bias, eps }
    }

    /// Loads `weight` and `bias` of length `dim` under `vb`.
    pub fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")?, eps })
    }

    /// Normalises `x` [..., dim] over its last dimension (statistics in [`work_dtype`]).
    ///
    /// When `x` is on the autograd graph and γ, β are constants (inference-time guidance through a reward tower or
    /// the UNet's transformer blocks), the forward pass runs outside the graph and [`with_input_grad`] attaches the
    /// closed-form input gradient ([`layer_norm_input_grad`]): the backward pass keeps only `x`, not the
    /// intermediates of the statistics. Trainable γ, β (fine-tuning) take the plain formula.
    ///
    /// On CUDA the forward pass and the input gradient are the fused kernels of [`super::fused`] (one launch each);
    /// the CPU keeps the composed formula.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, x.device().is_cuda())
    }

    /// [`LayerNorm::forward`] with the fused kernels or not (`fused`; the tests run them on the CPU).
    pub fn forward_with(&self, x: &Tensor, fused: bool) -> Result<Tensor> {
        let constant = !self.weight.track_op() && !self.bias.track_op();
        if fused && constant {
            let shape = NormShape::layer_norm(x.dims())?;
            return fused_norm(x, &self.weight, &self.bias, shape, self.eps, "layer-norm-input-grad");
        }
        if x.track_op() && constant {
            let y = self.forward_plain(&x.detach())?;
            let (weight, eps) = (self.weight.clone(), self.eps);
            return with_input_grad(&y, x, "layer-norm-input-grad", move |x, g| {
                layer_norm_input_grad(x, g, &weight, eps)
            });
        }
        self.forward_plain(x)
    }

    /// The plain formula, differentiated by candle's autograd: the path without a graph and the tests' reference.
    pub fn forward_plain(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xn = normalise_last(&x.to_dtype(work_dtype(dtype))?, self.eps)?.to_dtype(dtype)?;
        Ok(xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?)
    }
}

/// (x − mean)/√(var + eps) over the last dimension (biased variance, as PyTorch), in the dtype of `x`: the
/// statistics of layer norm (per row) and group norm (per (sample, group)).
pub fn normalise_last(x: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)
}

/// Layer normalisation's input gradient, ∂L/∂x = [`norm_input_grad`] of x and γ ⊙ ∂L/∂y over the last dimension,
/// in the work dtype (f32 for half-precision models).
pub fn layer_norm_input_grad(x: &Tensor, grad: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let dtype = x.dtype();
    let work = work_dtype(dtype);
    let g = grad.to_dtype(work)?.broadcast_mul(&weight.to_dtype(work)?)?;
    norm_input_grad(&x.to_dtype(work)?, &g, eps)?.to_dtype(dtype)
}

/// The input gradient of a normalisation over the last dimension (layer norm per row, group norm per (sample,
/// group)): with x̂ = (x − μ)/σ and g = γ ⊙ ∂L/∂y, ∂L/∂x = (g − mean(g) − x̂ · mean(g ⊙ x̂)) / σ (the normalisation's
/// Jacobian, Ioffe & Szegedy 2015 §3). μ, σ and x̂ are recomputed from `x`; `x` and `g` in the dtype to compute in.
pub fn norm_input_grad(x: &Tensor, g: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let inv = (xc.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    let xhat = xc.broadcast_mul(&inv)?;
    drop(xc);
    let mg = g.mean_keepdim(D::Minus1)?;
    let mgx = (g * &xhat)?.mean_keepdim(D::Minus1)?;
    (g.broadcast_sub(&mg)? - xhat.broadcast_mul(&mgx)?)?.broadcast_mul(&inv)
}

/// `x` normalised by the fused kernels ([`super::fused`]) with constant γ = `weight`, β = `bias`; when `x` is on the
/// autograd graph, the fused input gradient is attached through [`with_input_grad`] (op `name`).
pub fn fused_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    shape: NormShape,
    eps: f64,
    name: &'static str,
) -> Result<Tensor> {
    let y = fused::norm(&x.detach(), weight, bias, shape, eps)?;
    if !x.track_op() {
        return Ok(y);
    }
    let weight = weight.clone();
    with_input_grad(&y, x, name, move |x, g| fused::norm_input_grad(x, g, &weight, shape, eps))
}

/// `y`, computed from `x` outside the autograd graph, put back on the graph with the input gradient
/// `grad(x, ∂L/∂y)`: the pattern of every layer whose backward pass is cheaper written by hand than recorded by
/// autograd (layer and group norm, stride-1 convolutions): only `x` is kept for the backward pass, no intermediate.
/// The forward pass of the op is a copy of `y` (candle's custom ops return new storage), on any device.
pub fn with_input_grad<F>(y: &Tensor, x: &Tensor, name: &'static str, grad: F) -> Result<Tensor>
where
    F: Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static,
{
    // x rides as both arguments of the two-input op; only the first receives the gradient.
    with_grads(y, x, x, name, move |x, _, _, g| Ok((Some(grad(&x.detach(), g)?), None)))
}

/// [`with_input_grad`] for a value computed off the graph from two inputs: `y` put back on the graph with the
/// gradients `grads(a, b, y, ∂L/∂y) = (∂L/∂a, ∂L/∂b)` (`None` where an input needs none). Used by the blocked CPU
/// matmul ([`super::matmul`]) and the recomputing attention backward of SD 1.5.
pub fn with_grads<F>(y: &Tensor, a: &Tensor, b: &Tensor, name: &'static str, grads: F) -> Result<Tensor>
where
    F: Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)>
        + Send
        + Sync
        + 'static,
{
    Ok(y.apply_op3(a, b, Grads { name, grads })?)
}

/// The custom op `(y, a, b) → y` of [`with_grads`].
struct Grads<F> {
    name: &'static str,
    grads: F,
}

impl<F> CustomOp3 for Grads<F>
where
    F: Fn(&Tensor, &Tensor, &Tensor, &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> + Send + Sync,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((s1.affine(l1, 1.0, 0.0)?, l1.shape().clone()))
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        Ok((s1.affine(l1, 1.0, 0.0)?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (ga, gb) = (self.grads)(a, b, res, grad)?;
        Ok((None, ga, gb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::{check_grad, random_tensor};
    use candle_core::Device;

    const DEV: Device = Device::Cpu;

    #[test]
    fn layer_norm_matches_definition_and_candle() {
        let x = random_tensor(&[3, 5], 1, DType::F64, &DEV).unwrap();
        let g = random_tensor(&[5], 2, DType::F64, &DEV).unwrap();
        let b = random_tensor(&[5], 3, DType::F64, &DEV).unwrap();
        let ln = LayerNorm::new(g.clone(), b.clone(), 1e-5);
        let ours = ln.forward(&x).unwrap();
        let fused = candle_nn::ops::layer_norm(
            &x.to_dtype(DType::F32).unwrap(),
            &g.to_dtype(DType::F32).unwrap(),
            &b.to_dtype(DType::F32).unwrap(),
            1e-5,
        )
        .unwrap();
        let d = (ours.to_dtype(DType::F32).unwrap() - fused).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
    }

    #[test]
    fn layer_norm_gradient() {
        let g = random_tensor(&[6], 2, DType::F64, &DEV).unwrap();
        let b = random_tensor(&[6], 3, DType::F64, &DEV).unwrap();
        let ln = LayerNorm::new(g, b, 1e-5);
        let x = random_tensor(&[2, 3, 6], 4, DType::F64, &DEV).unwrap();
        let err = check_grad(|x| ln.forward(x), &x, 11).unwrap();
        eprintln!("layer_norm FD rel err {err:.2e}");
        assert!(err < 1e-6, "{err}");
    }

    #[test]
    fn layer_norm_backward_is_the_autograd_gradient_with_the_same_forward_bits() {
        use candle_core::Var;
        let g = (random_tensor(&[6], 2, DType::F64, &DEV).unwrap() + 1.0).unwrap();
        let b = random_tensor(&[6], 3, DType::F64, &DEV).unwrap();
        let x = (random_tensor(&[2, 3, 6], 4, DType::F64, &DEV).unwrap() * 3.0).unwrap();
        let u = random_tensor(&[2, 3, 6], 5, DType::F64, &DEV).unwrap();
        let grad = |ln: &LayerNorm, plain: bool, x: &Tensor| {
            let var = Var::from_tensor(x).unwrap();
            let y = if plain { ln.forward_plain(var.as_tensor()) } else { ln.forward(var.as_tensor()) }.unwrap();
            let gs = (y.to_dtype(DType::F64).unwrap() * &u).unwrap().sum_all().unwrap().backward().unwrap();
            gs.get(var.as_tensor()).unwrap().to_dtype(DType::F64).unwrap()
        };
        let max_abs = |t: &Tensor| t.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        let ln = LayerNorm::new(g.clone(), b.clone(), 1e-5);
        let on_graph = ln.forward(Var::from_tensor(&x).unwrap().as_tensor()).unwrap();
        assert_eq!(max_abs(&(on_graph - ln.forward_plain(&x).unwrap()).unwrap()), 0.0);
        let (ours, theirs) = (grad(&ln, false, &x), grad(&ln, true, &x));
        assert!(max_abs(&(&ours - &theirs).unwrap()) < 1e-12 * max_abs(&theirs));
        // The fused kernels (CUDA's path, here on the CPU): the same values and gradient to rounding.
        let fused = ln.forward_with(Var::from_tensor(&x).unwrap().as_tensor(), true).unwrap();
        assert!(max_abs(&(fused - ln.forward_plain(&x).unwrap()).unwrap()) < 1e-12);
        let var = Var::from_tensor(&x).unwrap();
        let y = ln.forward_with(var.as_tensor(), true).unwrap();
        let gs = (y * &u).unwrap().sum_all().unwrap().backward().unwrap();
        let g_fused = gs.get(var.as_tensor()).unwrap();
        assert!(max_abs(&(g_fused - &theirs).unwrap()) < 1e-12 * max_abs(&theirs));
        assert!(check_grad(|x| ln.forward_with(x, true), &x, 12).unwrap() < 1e-6);
        // f16 model: statistics in f32, close to the f64 gradient.
        let ln16 = LayerNorm::new(g.to_dtype(DType::F16).unwrap(), b.to_dtype(DType::F16).unwrap(), 1e-5);
        let g16 = grad(&ln16, false, &x.to_dtype(DType::F16).unwrap());
        assert!(max_abs(&(&g16 - &theirs).unwrap()) < 2e-2 * max_abs(&theirs));
        // Trainable γ (fine-tuning) takes the plain formula: γ gets its gradient.
        let gv = Var::from_tensor(&g).unwrap();
        let lnv = LayerNorm::new(gv.as_tensor().clone(), b, 1e-5);
        let y = lnv.forward(&x).unwrap();
        let gs = (y * &u).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(gs.get(gv.as_tensor()).is_some());
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
        let d = (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap()).unwrap();
        let m =
            |t: &Tensor| t.abs().unwrap().flatten_all().unwrap().max(D::Minus1).unwrap().to_scalar::<f64>().unwrap();
        m(&d) / m(&b.to_dtype(DType::F64).unwrap())
    }

    /// Group norm [2, 6, 3, 5] in 3 groups and layer norm [2, 4, 7]: the fused ops' forward values and input
    /// gradients are the composed formula's (f64 to rounding; f32/f16/bf16 storage to its rounding).
    #[test]
    fn fused_ops_are_the_composed_formula() {
        let dev = Device::Cpu;
        let cases = [(vec![2usize, 6, 3, 5], Some(3usize)), (vec![2, 4, 7], None)];
        for (dims, groups) in cases {
            let c = if groups.is_some() { dims[1] } else { dims[dims.len() - 1] };
            let x = random_tensor(&dims, 1, DType::F64, &dev).unwrap().affine(3.0, 1.5).unwrap();
            let dy = random_tensor(&dims, 2, DType::F64, &dev).unwrap();
            let w = (random_tensor(&[c], 3, DType::F64, &dev).unwrap() + 1.0).unwrap();
            let b = random_tensor(&[c], 4, DType::F64, &dev).unwrap();
            let (shape, rows_view, affine): (NormShape, Vec<usize>, Vec<usize>) = match groups {
                Some(g) => (NormShape::group_norm(&dims, g).unwrap(), vec![dims[0], g, c / g * 15], vec![1, c, 1, 1]),
                None => (NormShape::layer_norm(&dims).unwrap(), vec![8, 7], vec![c]),
            };
            // The composed reference: normalise each row, then γ, β per channel.
            let xn = normalise_last(&x.reshape(rows_view.as_slice()).unwrap(), 1e-5)
                .unwrap()
                .reshape(dims.as_slice())
                .unwrap();
            let (wa, ba) = (w.reshape(affine.as_slice()).unwrap(), b.reshape(affine.as_slice()).unwrap());
            let y_ref = xn.broadcast_mul(&wa).unwrap().broadcast_add(&ba).unwrap();
            let g = dy.broadcast_mul(&wa).unwrap().reshape(rows_view.as_slice()).unwrap();
            let gx_ref = norm_input_grad(&x.reshape(rows_view.as_slice()).unwrap(), &g, 1e-5)
                .unwrap()
                .reshape(dims.as_slice())
                .unwrap();
            for (dtype, tol) in [(DType::F64, 1e-13), (DType::F32, 1e-6), (DType::F16, 5e-3), (DType::BF16, 3e-2)] {
                let t = |v: &Tensor| v.to_dtype(dtype).unwrap();
                let y = fused::norm(&t(&x), &t(&w), &t(&b), shape, 1e-5).unwrap();
                let gx = fused::norm_input_grad(&t(&x), &t(&dy), &t(&w), shape, 1e-5).unwrap();
                assert_eq!((y.dtype(), y.dims()), (dtype, dims.as_slice()));
                let (ey, eg) = (max_rel(&y, &y_ref), max_rel(&gx, &gx_ref));
                assert!(ey < tol && eg < tol, "{dims:?} {dtype:?}: forward {ey:.1e}, input gradient {eg:.1e}");
            }
            // A non-contiguous input is made contiguous first.
            let xt = x.transpose(0, 1).unwrap().contiguous().unwrap().transpose(0, 1).unwrap();
            assert!(max_rel(&fused::norm(&xt, &w, &b, shape, 1e-5).unwrap(), &y_ref) < 1e-13);
        }
    }

    #[test]
    fn layer_norm_cuda_matches_cpu_where_a_gpu_is_present() {
        use candle_core::Var;
        let Ok(gpu) = Device::new_cuda(0) else {
            eprintln!("SKIP: no CUDA device here (build with --features cuda and run on a GPU machine)");
            return;
        };
        let g = (random_tensor(&[16], 2, DType::F32, &DEV).unwrap() + 1.0).unwrap();
        let b = random_tensor(&[16], 3, DType::F32, &DEV).unwrap();
        let x = random_tensor(&[3, 5, 16], 4, DType::F32, &DEV).unwrap();
        let u = random_tensor(&[3, 5, 16], 5, DType::F32, &DEV).unwrap();
        let run = |dev: &Device| -> (Tensor, Tensor) {
            let to = |t: &Tensor| t.to_device(dev).unwrap();
            let ln = LayerNorm::new(to(&g), to(&b), 1e-5);
            let var = Var::from_tensor(&to(&x)).unwrap();
            let y = ln.forward(var.as_tensor()).unwrap();
            let gs = (&y * to(&u)).unwrap().sum_all().unwrap().backward().unwrap();
            (y.to_device(&DEV).unwrap(), gs.get(var.as_tensor()).unwrap().to_device(&DEV).unwrap())
        };
        let ((y0, g0), (y1, g1)) = (run(&DEV), run(&gpu));
        let rel = |a: &Tensor, b: &Tensor| {
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            d / b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
        };
        assert!(rel(&y1, &y0) < 1e-5 && rel(&g1, &g0) < 1e-5, "CPU vs CUDA");
    }
}
