//! The reference's learned toy denoiser (toy.md §5): ε-net on [x, t/1000] → Linear(h) → ReLU → Linear(h) → ReLU →
//! Linear(d), trained by ε-MSE with candle-nn (`alignbench train toy-mlp`, `problems::toy::train`).
//!
//! Sampling uses a hand-written batched forward and vector-Jacobian product (exact backprop through the two ReLU
//! layers; checked against finite differences and against candle's autograd), which is what makes the 10⁷
//! particle-step DAS workload fast on one core: the thin layers are plain loops, the h×h layer skips the exact
//! zeros of the ReLU activations, and the whole pass is compiled for AVX2 when the CPU has it. Every sum runs in
//! a fixed order, so the bits do not depend on the SIMD width. Weight names mirror PyTorch's
//! `nn.Sequential` (`net.0`, `net.2`, `net.4`) so the same file loads in either world.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::diffusion::{Cond, Cotangent, Denoiser};
use crate::rng::{Purpose, Streams};
use crate::{Error, Result};

/// A d → h → h → d ReLU MLP ε-network with time input t/1000.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// Data dimension.
    pub d: usize,
    /// Hidden width.
    pub h: usize,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    w3: Vec<f32>,
    b3: Vec<f32>,
}

const KEYS: [&str; 6] = ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "net.4.weight", "net.4.bias"];

impl Mlp {
    /// Random initialisation as PyTorch's `nn.Linear` (U(±1/√fan_in)) from the seeded `train` stream.
    pub fn init(d: usize, h: usize, seed: u64) -> Self {
        let mut rng = Streams::new(seed).rng(Purpose::Train, 0, 0);
        let mut u = |n: usize, fan_in: usize| -> Vec<f32> {
            let b = 1.0 / (fan_in as f64).sqrt();
            (0..n).map(|_| ((crate::rng::uniform(&mut rng) * 2.0 - 1.0) * b) as f32).collect()
        };
        let (w1, b1) = (u(h * (d + 1), d + 1), u(h, d + 1));
        let (w2, b2) = (u(h * h, h), u(h, h));
        let (w3, b3) = (u(d * h, h), u(d, h));
        Mlp { d, h, w1, b1, w2, b2, w3, b3 }
    }

    /// The weights as trainable candle variables, in the order `net.0.weight, net.0.bias, …, net.4.bias`.
    pub fn to_vars(&self, dev: &Device) -> Result<Vec<Var>> {
        Ok(self
            .parts()
            .into_iter()
            .map(|(v, s)| Var::from_tensor(&Tensor::from_vec(v.clone(), s, dev)?))
            .collect::<candle_core::Result<_>>()?)
    }

    /// The weights as constant tensors (same order as [`Mlp::to_vars`]).
    pub fn to_tensors(&self, dev: &Device) -> Result<Vec<Tensor>> {
        Ok(self
            .parts()
            .into_iter()
            .map(|(v, s)| Tensor::from_vec(v.clone(), s, dev))
            .collect::<candle_core::Result<_>>()?)
    }

    /// A network from variables in the order of [`Mlp::to_vars`].
    pub fn from_vars(v: &[Var]) -> Result<Self> {
        if v.len() != 6 {
            return Err(Error::config(format!("toy MLP: expected 6 weight tensors, got {}", v.len())));
        }
        let t: Vec<Tensor> = v.iter().map(|x| x.as_tensor().clone()).collect();
        Self::from_tensors(&[t[0].clone(), t[1].clone(), t[2].clone(), t[3].clone(), t[4].clone(), t[5].clone()])
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.w1.len() + self.b1.len() + self.w2.len() + self.b2.len() + self.w3.len() + self.b3.len()
    }

    /// The six weight arrays (w1, b1, w2, b2, w3, b3) with their PyTorch shapes.
    pub fn parts(&self) -> [(&Vec<f32>, Vec<usize>); 6] {
        let (d, h) = (self.d, self.h);
        [
            (&self.w1, vec![h, d + 1]),
            (&self.b1, vec![h]),
            (&self.w2, vec![h, h]),
            (&self.b2, vec![h]),
            (&self.w3, vec![d, h]),
            (&self.b3, vec![d]),
        ]
    }

    /// Weights as named tensors.
    pub fn tensors(&self, dev: &Device) -> Result<HashMap<String, Tensor>> {
        let mut m = HashMap::new();
        for (k, (v, s)) in KEYS.iter().zip(self.parts()) {
            m.insert(k.to_string(), Tensor::from_vec(v.clone(), s, dev)?);
        }
        Ok(m)
    }

    /// Save as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        let tmp = path.with_extension("safetensors.tmp");
        candle_core::safetensors::save(&self.tensors(&Device::Cpu)?, &tmp)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Load from safetensors (keys `net.{0,2,4}.{weight,bias}`).
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::file(
                path,
                "toy MLP weights not found; train them with `alignbench train toy-mlp --preset gmm1` (or gmm2)",
            ));
        }
        let t = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
        let get = |k: &str| -> Result<Tensor> {
            t.get(k).cloned().ok_or_else(|| Error::file(path, format!("missing tensor `{k}`")))
        };
        Self::from_tensors(&[get(KEYS[0])?, get(KEYS[1])?, get(KEYS[2])?, get(KEYS[3])?, get(KEYS[4])?, get(KEYS[5])?])
    }

    /// The network from its six weight tensors (w1, b1, w2, b2, w3, b3).
    pub fn from_tensors(t: &[Tensor; 6]) -> Result<Self> {
        let (h, d1) = t[0].dims2()?;
        let d = t[4].dims2()?.0;
        if d1 != d + 1 {
            return Err(Error::config(format!("toy MLP: first layer has {d1} inputs, expected d + 1 = {}", d + 1)));
        }
        let v = |x: &Tensor| -> Result<Vec<f32>> { Ok(x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?) };
        Ok(Mlp { d, h, w1: v(&t[0])?, b1: v(&t[1])?, w2: v(&t[2])?, b2: v(&t[3])?, w3: v(&t[4])?, b3: v(&t[5])? })
    }

    /// [`Self::backward_body`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn backward_avx2(
        &self,
        u: &[f32],
        h1: &[f32],
        h2: &[f32],
        vjp: &mut [f32],
        g2: &mut Vec<f32>,
        g1: &mut Vec<f32>,
    ) {
        self.backward_body(u, h1, h2, vjp, g2, g1)
    }

    /// vjp = uᵀ·∂ε/∂x given the cotangent `u` on ε and the forward activations.
    #[inline(always)]
    fn backward_body(&self, u: &[f32], h1: &[f32], h2: &[f32], vjp: &mut [f32], g2: &mut Vec<f32>, g1: &mut Vec<f32>) {
        let (d, h) = (self.d, self.h);
        let n = u.len() / d;
        // g2 = (u·W3) ⊙ 1[h2 > 0], row by row (d axpys of width h).
        g2.clear();
        g2.resize(n * h, 0.0);
        g1.resize(n * h, 0.0);
        for ((gr, ur), hr) in g2.chunks_exact_mut(h).zip(u.chunks_exact(d)).zip(h2.chunks_exact(h)) {
            for (j, &uj) in ur.iter().enumerate() {
                for (g, w) in gr.iter_mut().zip(&self.w3[j * h..(j + 1) * h]) {
                    *g += uj * w;
                }
            }
            mask(gr, hr);
        }
        square_product(h, g2, &self.w2, g1);
        mask(g1, h1);
        // W1 restricted to its first d input columns (the time input gets no cotangent).
        let w1t = self.w1_t();
        for (vr, gr) in vjp.chunks_exact_mut(d).zip(g1.chunks_exact(h)) {
            for (i, v) in vr.iter_mut().enumerate() {
                *v = dot(gr, &w1t[i * h..(i + 1) * h]);
            }
        }
    }

    /// W1 transposed to `[(d + 1), h]`, so the first layer runs as `d + 1` axpys over the hidden units.
    fn w1_t(&self) -> Vec<f32> {
        let (d1, h) = (self.d + 1, self.h);
        let mut t = vec![0f32; d1 * h];
        for o in 0..h {
            for i in 0..d1 {
                t[i * h + o] = self.w1[o * d1 + i];
            }
        }
        t
    }

    /// Forward pass keeping the hidden activations (post-ReLU) for the VJP. The thin layers (input d + 1 → h and
    /// h → d) are written out by hand: a packed GEMM would spend most of its time packing for a 2-wide product.
    fn forward(&self, x: &[f32], t: usize, eps: &mut [f32], h1: &mut Vec<f32>, h2: &mut Vec<f32>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked just above).
            return unsafe { self.forward_avx2(x, t, eps, h1, h2) };
        }
        self.forward_body(x, t, eps, h1, h2)
    }

    /// [`Self::forward_body`] compiled for AVX2 (same bits: every sum runs in the same order at any width).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn forward_avx2(&self, x: &[f32], t: usize, eps: &mut [f32], h1: &mut Vec<f32>, h2: &mut Vec<f32>) {
        self.forward_body(x, t, eps, h1, h2)
    }

    #[inline(always)]
    fn forward_body(&self, x: &[f32], t: usize, eps: &mut [f32], h1: &mut Vec<f32>, h2: &mut Vec<f32>) {
        let (d, h) = (self.d, self.h);
        let n = x.len() / d;
        let tt = t as f32 / 1000.0;
        let w1t = self.w1_t();
        // Bias plus the time input's column, the same for every row.
        let base: Vec<f32> = (0..h).map(|o| self.b1[o] + tt * w1t[d * h + o]).collect();
        h1.resize(n * h, 0.0);
        h2.resize(n * h, 0.0);
        for (out, xr) in h1.chunks_exact_mut(h).zip(x.chunks_exact(d)) {
            out.copy_from_slice(&base);
            for (i, &xi) in xr.iter().enumerate() {
                for (v, w) in out.iter_mut().zip(&w1t[i * h..(i + 1) * h]) {
                    *v += xi * w;
                }
            }
            out.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        square_product(h, h1, &transpose(&self.w2, h), h2);
        relu_bias(h2, &self.b2);
        for (er, hr) in eps.chunks_exact_mut(d).zip(h2.chunks_exact(h)) {
            for (j, e) in er.iter_mut().enumerate() {
                *e = self.b3[j] + dot(hr, &self.w3[j * h..(j + 1) * h]);
            }
        }
    }
}

/// `[h, h]` row-major transposed.
fn transpose(w: &[f32], h: usize) -> Vec<f32> {
    let mut t = vec![0f32; h * h];
    for r in 0..h {
        for c in 0..h {
            t[c * h + r] = w[r * h + c];
        }
    }
    t
}

/// out (n×h) = a (n×h) · bt (h×h, indexed `[k][c]`). Each row accumulates over the non-zero entries of its `a` row
/// in increasing k (ReLU activations and masked cotangents are about half zeros; skipping an exact zero leaves the
/// sum's bits unchanged), so the result does not depend on the SIMD width.
#[inline(always)]
fn square_product(h: usize, a: &[f32], bt: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if h == 64 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available (checked just above); the slices are whole 64-wide rows.
        unsafe { square64_avx2(a, bt, out) };
        return;
    }
    for (orow, arow) in out.chunks_exact_mut(h).zip(a.chunks_exact(h)) {
        orow.iter_mut().for_each(|v| *v = 0.0);
        for (k, &ak) in arow.iter().enumerate() {
            if ak != 0.0 {
                for (o, b) in orow.iter_mut().zip(&bt[k * h..(k + 1) * h]) {
                    *o += ak * b;
                }
            }
        }
    }
}

/// [`square_product`] for h = 64 with the output row held in eight AVX registers (multiply then add, in the same
/// order as the portable loop, so the bits agree).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn square64_avx2(a: &[f32], bt: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(bt.len() >= 64 * 64);
    let mut idx = [0usize; 64];
    for (orow, arow) in out.chunks_exact_mut(64).zip(a.chunks_exact(64)) {
        let mut cnt = 0;
        for (k, &ak) in arow.iter().enumerate() {
            idx[cnt] = k;
            cnt += (ak != 0.0) as usize;
        }
        let mut acc = [_mm256_setzero_ps(); 8];
        for &k in &idx[..cnt] {
            let av = _mm256_set1_ps(arow[k]);
            let bp = bt.as_ptr().add(k * 64);
            for (l, v) in acc.iter_mut().enumerate() {
                *v = _mm256_add_ps(*v, _mm256_mul_ps(av, _mm256_loadu_ps(bp.add(8 * l))));
            }
        }
        for (l, v) in acc.iter().enumerate() {
            _mm256_storeu_ps(orow.as_mut_ptr().add(8 * l), *v);
        }
    }
}

/// Dot product with eight independent accumulators (vectorises without reassociation flags).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn relu_bias(a: &mut [f32], b: &[f32]) {
    for row in a.chunks_exact_mut(b.len()) {
        for (v, bb) in row.iter_mut().zip(b) {
            *v = (*v + bb).max(0.0);
        }
    }
}

#[inline(always)]
fn mask(g: &mut [f32], act: &[f32]) {
    for (v, a) in g.iter_mut().zip(act) {
        if *a <= 0.0 {
            *v = 0.0;
        }
    }
}

impl Denoiser for Mlp {
    fn dim(&self) -> usize {
        self.d
    }
    fn eps(&self, x: &[f32], t: usize, _cond: &Cond, eps: &mut [f32]) -> Result<()> {
        with_scratch(|[h1, h2, ..]| self.forward(x, t, eps, h1, h2));
        Ok(())
    }
    fn eps_vjp(
        &self,
        x: &[f32],
        t: usize,
        _c: &Cond,
        eps: &mut [f32],
        cot: &mut Cotangent<'_>,
        vjp: &mut [f32],
    ) -> Result<()> {
        with_scratch(|[h1, h2, u, g2, g1]| {
            self.forward(x, t, eps, h1, h2);
            u.clear();
            u.resize(x.len(), 0.0);
            cot(eps, u)?;
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is available (checked just above).
                unsafe { self.backward_avx2(u, h1, h2, vjp, g2, g1) };
                return Ok(());
            }
            self.backward_body(u, h1, h2, vjp, g2, g1);
            Ok(())
        })
    }
}

thread_local! {
    /// Per-thread activation buffers, reused across calls: allocating (and faulting in) fresh n×h buffers on
    /// every step cost more than the arithmetic.
    static SCRATCH: std::cell::RefCell<[Vec<f32>; 5]> = Default::default();
}

/// Run `f` with this thread's scratch buffers (taken out for the call, so a nested call just allocates).
fn with_scratch<R>(f: impl FnOnce(&mut [Vec<f32>; 5]) -> R) -> R {
    let mut bufs = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let r = f(&mut bufs);
    SCRATCH.with(|s| *s.borrow_mut() = bufs);
    r
}

/// The same network in candle ops (used for training and to cross-check the hand-written passes).
pub fn forward_candle(v: &[Var], inp: &Tensor) -> Result<Tensor> {
    let t: Vec<Tensor> = v.iter().map(|x| x.as_tensor().clone()).collect();
    forward_tensors(&t, inp)
}

/// [`forward_candle`] on plain tensors (a frozen copy: gradients still flow to the input).
pub fn forward_tensors(w: &[Tensor], inp: &Tensor) -> Result<Tensor> {
    // The product is nn::matmul's: the same trained bits on every CPU with FMA (training contracts over the batch).
    let lin = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<Tensor> {
        Ok(crate::nn::matmul::matmul(x, &w.t()?)?.broadcast_add(b)?)
    };
    let h1 = lin(inp, &w[0], &w[1])?.relu()?;
    let h2 = lin(&h1, &w[2], &w[3])?.relu()?;
    lin(&h2, &w[4], &w[5])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(m: &Mlp) -> Vec<Var> {
        m.parts()
            .into_iter()
            .map(|(v, s)| Var::from_tensor(&Tensor::from_vec(v.clone(), s, &Device::Cpu).unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn hand_forward_and_vjp_match_candle_autograd() {
        let m = Mlp::init(2, 16, 5);
        let x = [0.3f32, -1.2, 2.0, 0.4, -0.7, 0.9];
        let t = 370;
        let u = [0.5f32, -1.0, 0.25, 0.75, -0.3, 0.1];
        let mut e = [0f32; 6];
        let mut v = [0f32; 6];
        m.eps_vjp(
            &x,
            t,
            &Cond::None,
            &mut e,
            &mut |_, o: &mut [f32]| {
                o.copy_from_slice(&u);
                Ok(())
            },
            &mut v,
        )
        .unwrap();
        let dev = Device::Cpu;
        let xv = Var::from_tensor(&Tensor::from_vec(x.to_vec(), (3, 2), &dev).unwrap()).unwrap();
        let inp = Tensor::cat(&[xv.as_tensor().clone(), Tensor::full(0.37f32, (3, 1), &dev).unwrap()], 1).unwrap();
        let out = forward_candle(&vars(&m), &inp).unwrap();
        let ec: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in e.iter().zip(&ec) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let ut = Tensor::from_vec(u.to_vec(), (3, 2), &dev).unwrap();
        let grads = (out * ut).unwrap().sum_all().unwrap().backward().unwrap();
        let gc: Vec<f32> = grads.get(xv.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in v.iter().zip(&gc) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn vjp_matches_finite_difference() {
        let m = Mlp::init(3, 32, 9);
        let x = [0.3f32, -1.2, 2.0];
        let u = [0.5f32, -1.0, 0.25];
        let mut e = [0f32; 3];
        let mut v = [0f32; 3];
        m.eps_vjp(
            &x,
            500,
            &Cond::None,
            &mut e,
            &mut |_, o: &mut [f32]| {
                o.copy_from_slice(&u);
                Ok(())
            },
            &mut v,
        )
        .unwrap();
        for i in 0..3 {
            let h = 1e-3f32;
            let (mut xp, mut xm) = (x, x);
            xp[i] += h;
            xm[i] -= h;
            let (mut ep, mut em) = ([0f32; 3], [0f32; 3]);
            m.eps(&xp, 500, &Cond::None, &mut ep).unwrap();
            m.eps(&xm, 500, &Cond::None, &mut em).unwrap();
            let fd: f32 = (0..3).map(|j| u[j] * (ep[j] - em[j]) / (2.0 * h)).sum();
            assert!((fd - v[i]).abs() < 1e-2 * (1.0 + fd.abs()), "{fd} vs {}", v[i]);
        }
    }
}
