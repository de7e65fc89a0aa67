//! Tests of the Stable Diffusion module on a tiny random-weight model with SD 1.5's key structure (no real weights
//! exist on the test machines): finite-difference checks of every gradient path (UNet with CFG, VAE decoder, the
//! composite ∂r(D(x̂0(x_t)))/∂x_t), the loader on diffusers folders written to a temp dir, the SD 1.5 key
//! structure, and DAS/DPS runs through the project's samplers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use super::layers::{upsample_nearest2x, Conv2d, GroupNorm, LayerNorm};
use super::loader::{text_from_hf, unet_from_diffusers, vae_from_diffusers, Component, Pins, SdFolder, Variant};
use super::random::{tiny_config, tiny_tokenizer_files, write_random_folder};
use super::text::{sd15_text_config, TextEncoder};
use super::*;
use crate::diffusion::schedule::{BetaSchedule, Grid, Spacing};
use crate::diffusion::{Cond, Decoder, Denoiser};
use crate::ledger::Ledger;
use crate::models::ClipTokenizer;
use crate::nn::testing::{check_grad, grad_check, random_tensor};
use crate::rewards::Reward;
use crate::rng::{Purpose, Streams};
use crate::samplers::das::{DasConfig, DasSampler};
use crate::samplers::ddim::DdimSampler;
use crate::samplers::dps::{DpsConfig, DpsSampler};
use crate::samplers::guidance::{lookahead, Grad, Look};
use crate::samplers::{Batch, GroupOutput, Model, Sampler};

const DEV: Device = Device::Cpu;

fn prompts() -> Vec<String> {
    ["cat", "dog", "snail"].iter().map(|s| s.to_string()).collect()
}

fn opts(dtype: DType, w: f64, batch_p: usize) -> SdOptions {
    SdOptions { dtype, guidance_scale: w, batch_p, latent_size: 8, pins: Pins::Unpinned, ..Default::default() }
}

fn tiny(dtype: DType, w: f64, batch_p: usize) -> SdPipeline {
    SdPipeline::tiny_random(7, &opts(dtype, w, batch_p), &prompts()).unwrap()
}

fn normals(n: usize, step: u64) -> Vec<f32> {
    let mut v = vec![0f32; n];
    Streams::new(5).normals(Purpose::Train, 0x5D, step, &mut v);
    v
}

/// r(y) = mean pixel value (a differentiable image reward with an obvious gradient).
struct MeanBrightness(usize);

impl Reward for MeanBrightness {
    fn name(&self) -> String {
        "mean_brightness".into()
    }
    fn differentiable(&self) -> bool {
        true
    }
    fn scale(&self) -> String {
        "[0, 1]".into()
    }
    fn input_dim(&self) -> usize {
        self.0
    }
    fn score(&self, y: &[f32], _cond: &Cond, out: &mut [f64]) -> crate::Result<()> {
        for (o, row) in out.iter_mut().zip(y.chunks_exact(self.0)) {
            *o = row.iter().map(|&v| v as f64).sum::<f64>() / self.0 as f64;
        }
        Ok(())
    }
    fn score_grad(&self, y: &[f32], cond: &Cond, out: &mut [f64], grad: &mut [f32]) -> crate::Result<()> {
        self.score(y, cond, out)?;
        grad.iter_mut().for_each(|g| *g = 1.0 / self.0 as f32);
        Ok(())
    }
}

/// Central-difference directional derivative of Σ_rows v·f(x) along d, against ⟨vjp, d⟩ (host f32 I/O).
fn host_rel_err(f: &dyn Fn(&[f32]) -> Vec<f64>, vjp: &[f32], x: &[f32], v: &[f32], d: &[f32], h: f32) -> f64 {
    let xp: Vec<f32> = x.iter().zip(d).map(|(a, b)| a + h * b).collect();
    let xm: Vec<f32> = x.iter().zip(d).map(|(a, b)| a - h * b).collect();
    let (fp, fm) = (f(&xp), f(&xm));
    let num: f64 = fp.iter().zip(&fm).zip(v).map(|((a, b), w)| (a - b) / (2.0 * h as f64) * *w as f64).sum();
    let ana: f64 = vjp.iter().zip(d).map(|(a, b)| *a as f64 * *b as f64).sum();
    (num - ana).abs() / num.abs().max(ana.abs()).max(1e-12)
}

/// Central difference in f64 of a scalar function of a latent tensor at the host point `x` along `d`, against
/// ⟨vjp, d⟩ of a host (f32) VJP: checks an adapter's VJP with an f64 step small enough to avoid the clamp's kinks.
fn f64_rel_err(f: &dyn Fn(&Tensor) -> f64, vjp: &[f32], x: &[f32], d: &[f32], h: f64) -> f64 {
    let n = x.len() / 256;
    let t = |v: &[f32]| Tensor::from_slice(v, (n, 4, 8, 8), &DEV).unwrap().to_dtype(DType::F64).unwrap();
    let (xt, dt) = (t(x), t(d));
    let num = (f(&(&xt + (&dt * h).unwrap()).unwrap()) - f(&(&xt - (&dt * h).unwrap()).unwrap())) / (2.0 * h);
    let ana: f64 = vjp.iter().zip(d).map(|(a, b)| *a as f64 * *b as f64).sum();
    (num - ana).abs() / num.abs().max(ana.abs()).max(1e-12)
}

#[test]
fn layers_match_definitions_and_gradients() {
    // GroupNorm equals candle-nn's forward; its gradient (and candle-nn's, composed from primitive ops too) agrees
    // with finite differences.
    let x = (random_tensor(&[2, 8, 3, 5], 1, DType::F64, &DEV).unwrap() * 3.0).unwrap();
    let mut m = HashMap::new();
    m.insert("weight".to_string(), (random_tensor(&[8], 2, DType::F64, &DEV).unwrap() + 1.0).unwrap());
    m.insert("bias".to_string(), random_tensor(&[8], 3, DType::F64, &DEV).unwrap());
    let vb = VarBuilder::from_tensors(m.clone(), DType::F64, &DEV);
    let ours = GroupNorm::load(vb.clone(), 4, 8, 1e-5).unwrap();
    let theirs = candle_nn::group_norm(4, 8, 1e-5, vb.clone()).unwrap();
    let d = (ours.forward(&x).unwrap() - candle_nn::Module::forward(&theirs, &x).unwrap()).unwrap();
    assert!(d.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() < 1e-12);
    let e_ours = check_grad(|x| ours.forward(x), &x, 1).unwrap();
    let e_candle = check_grad(|x| Ok(candle_nn::Module::forward(&theirs, x)?), &x, 1).unwrap();
    // f16 input: statistics in f32, output in f16.
    let gn16 = GroupNorm::load(VarBuilder::from_tensors(m.clone(), DType::F16, &DEV), 4, 8, 1e-5).unwrap();
    let y16 = gn16.forward(&(x.to_dtype(DType::F16).unwrap() * 100.0).unwrap()).unwrap();
    assert_eq!(y16.dtype(), DType::F16);
    let d16 = (y16.to_dtype(DType::F64).unwrap() - ours.forward(&(&x * 100.0).unwrap()).unwrap()).unwrap();
    assert!(d16.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() < 2e-2);

    let mut l = HashMap::new();
    l.insert("weight".to_string(), (random_tensor(&[6], 4, DType::F64, &DEV).unwrap() + 1.0).unwrap());
    l.insert("bias".to_string(), random_tensor(&[6], 5, DType::F64, &DEV).unwrap());
    let ln = LayerNorm::load(VarBuilder::from_tensors(l.clone(), DType::F64, &DEV), 6, 1e-5).unwrap();
    let reference = crate::nn::LayerNorm::load(VarBuilder::from_tensors(l, DType::F64, &DEV), 6, 1e-5).unwrap();
    let xl = random_tensor(&[3, 4, 6], 6, DType::F64, &DEV).unwrap();
    let dl = (ln.forward(&xl).unwrap() - reference.forward(&xl).unwrap()).unwrap();
    assert!(dl.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() < 1e-14);
    let e_ln = check_grad(|x| ln.forward(x), &xl, 2).unwrap();

    // Nearest ×2 up-sampling equals candle's forward; its gradient accumulates (candle's overwrites).
    let xu = random_tensor(&[2, 3, 4, 5], 7, DType::F64, &DEV).unwrap();
    let du = (upsample_nearest2x(&xu).unwrap() - xu.upsample_nearest2d(8, 10).unwrap()).unwrap();
    assert_eq!(du.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap(), 0.0);
    let e_up = check_grad(|x| Ok((upsample_nearest2x(x)? + upsample_nearest2x(&x.sqr()?)?)?), &xu, 3).unwrap();
    let e_up_candle =
        check_grad(|x| Ok((x.upsample_nearest2d(8, 10)? + x.sqr()?.upsample_nearest2d(8, 10)?)?), &xu, 3).unwrap();

    // Stride-2 padded convolution (the down-samplers): the input-gradient op with a dilated output gradient.
    let mut c = HashMap::new();
    c.insert("weight".to_string(), (random_tensor(&[4, 3, 3, 3], 8, DType::F64, &DEV).unwrap() * 0.3).unwrap());
    c.insert("bias".to_string(), random_tensor(&[4], 9, DType::F64, &DEV).unwrap());
    let conv = Conv2d::load(VarBuilder::from_tensors(c, DType::F64, &DEV), 3, 4, 3, 2, 1).unwrap();
    let xc = random_tensor(&[2, 3, 8, 6], 10, DType::F64, &DEV).unwrap();
    let e_conv = check_grad(|x| conv.forward(x), &xc, 4).unwrap();
    // Stride-1 3×3 and 1×1 convolutions take the input-gradient-only op when the input is on the graph.
    let mut e_conv1 = Vec::new();
    for (k, p) in [(3usize, 1usize), (1, 0)] {
        let mut c = HashMap::new();
        c.insert("weight".to_string(), (random_tensor(&[4, 3, k, k], 11, DType::F64, &DEV).unwrap() * 0.3).unwrap());
        c.insert("bias".to_string(), random_tensor(&[4], 12, DType::F64, &DEV).unwrap());
        let conv = Conv2d::load(VarBuilder::from_tensors(c.clone(), DType::F64, &DEV), 3, 4, k, 1, p).unwrap();
        let xv = candle_core::Var::from_tensor(&xc).unwrap();
        let plain =
            xc.conv2d(&c["weight"], p, 1, 1, 1).unwrap().broadcast_add(&c["bias"].reshape((1, 4, 1, 1)).unwrap());
        let d = (conv.forward(xv.as_tensor()).unwrap() - plain.unwrap()).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f64>().unwrap(), 0.0);
        // A strided (transposed) input view exercises the op's contiguous copy.
        let e = check_grad(|x| conv.forward(&x.transpose(2, 3)?), &xc, 6).unwrap();
        e_conv1.push(e.max(check_grad(|x| conv.forward(x), &xc, 7).unwrap()));
    }
    let e_silu = check_grad(|x| Ok(x.silu()?), &xc, 5).unwrap();
    eprintln!(
        "FD rel err (f64): group_norm {e_ours:.2e} (candle-nn group_norm {e_candle:.2e}), layer_norm {e_ln:.2e}, \
         upsample2x {e_up:.2e} (candle upsample_nearest2d used twice: {e_up_candle:.2e}), conv stride 2 {e_conv:.2e}, \
         conv 3×3 / 1×1 input-gradient op {:.2e} / {:.2e}, silu {e_silu:.2e}",
        e_conv1[0], e_conv1[1]
    );
    for e in [e_ours, e_candle, e_ln, e_up, e_conv, e_conv1[0], e_conv1[1], e_silu] {
        assert!(e < 1e-6, "{e}");
    }
}

#[test]
fn unet_input_gradient_with_cfg_matches_finite_differences() {
    let sd = tiny(DType::F64, 5.0, 8);
    let den = &sd.denoiser;
    assert_eq!(den.rows_per_eval(), 2);
    let x = random_tensor(&[3, 4, 8, 8], 11, DType::F64, &DEV).unwrap();
    let labels = [0usize, 2, 1];
    for (t, what) in [(981usize, "t=981 CFG"), (500, "t=500 CFG"), (21, "t=21 CFG")] {
        let g = grad_check(|x| den.eps_tensor(x, t, Some(&labels)), &x, t as u64, 1e-5).unwrap();
        eprintln!("UNet ε̂ input gradient, {what}: FD rel err {:.2e} (⟨∇,v⟩ = {:.4e})", g.rel_err, g.analytic);
        assert!(g.rel_err < 1e-6, "{what}: {g:?}");
    }
    let g = grad_check(|x| den.eps_tensor(x, 500, None), &x, 3, 1e-5).unwrap();
    eprintln!("UNet ε̂ input gradient, unconditional: FD rel err {:.2e}", g.rel_err);
    assert!(g.rel_err < 1e-6, "{g:?}");
    // The same in f32 weights meets the f32 bar.
    let sd32 = tiny(DType::F32, 5.0, 8);
    let x32 = x.to_dtype(DType::F32).unwrap();
    let g = grad_check(|x| sd32.denoiser.eps_tensor(x, 500, Some(&labels)), &x32, 4, 3e-3).unwrap();
    eprintln!("UNet ε̂ input gradient, f32 weights: FD rel err {:.2e}", g.rel_err);
    assert!(g.rel_err < 1e-2, "{g:?}");
}

#[test]
fn cfg_combines_conditional_and_unconditional_rows() {
    let n = 3;
    let d = 4 * 8 * 8;
    let x = normals(n * d, 1);
    let cond = Cond::Labels(vec![0, 1, 2]);
    let run = |w: f64, c: &Cond| {
        let sd = tiny(DType::F64, w, 2);
        let mut e = vec![0f32; n * d];
        sd.denoiser.eps(&x, 500, c, &mut e).unwrap();
        (e, sd.denoiser.rows_per_eval())
    };
    let ((ec, r1), (eu, r0), (e5, r5)) = (run(1.0, &cond), run(0.0, &cond), run(5.0, &cond));
    assert_eq!((r1, r0, r5), (1, 1, 2));
    assert_eq!(eu, run(3.0, &Cond::None).0);
    let mut worst = 0f32;
    for i in 0..n * d {
        worst = worst.max((e5[i] - (eu[i] + 5.0 * (ec[i] - eu[i]))).abs());
    }
    assert!(worst < 1e-5, "{worst}");
    // Different prompts give different ε̂; an out-of-table label is an error.
    assert_ne!(ec[..d], ec[d..2 * d]);
    let sd = tiny(DType::F64, 5.0, 2);
    let mut e = vec![0f32; d];
    let err = sd.denoiser.eps(&x[..d], 500, &Cond::Labels(vec![3]), &mut e).unwrap_err().to_string();
    assert!(err.contains("prompt index 3"), "{err}");
}

#[test]
fn denoiser_vjp_in_micro_batches_matches_finite_differences() {
    let n = 5;
    let d = 4 * 8 * 8;
    let x = normals(n * d, 2);
    let v = normals(n * d, 3);
    let dir = normals(n * d, 4);
    let labels = [0usize, 1, 2, 1, 0];
    let cond = Cond::Labels(labels.to_vec());
    let vt = Tensor::from_slice(&v, (n, 4, 8, 8), &DEV).unwrap().to_dtype(DType::F64).unwrap();
    let mut results = Vec::new();
    for batch_p in [8, 2] {
        let sd = tiny(DType::F64, 5.0, batch_p);
        let den = &sd.denoiser;
        let (mut eps, mut g) = (vec![0f32; n * d], vec![0f32; n * d]);
        let vv = v.clone();
        den.eps_vjp(
            &x,
            500,
            &cond,
            &mut eps,
            &mut |_e, u| {
                u.copy_from_slice(&vv);
                Ok(())
            },
            &mut g,
        )
        .unwrap();
        let mut e_fwd = vec![0f32; n * d];
        den.eps(&x, 500, &cond, &mut e_fwd).unwrap();
        assert_eq!(eps, e_fwd);
        // f64 step on the f64 model: the adapter's VJP (f32 out) against Σ v·ε̂.
        let f = |z: &Tensor| {
            let e = den.eps_tensor(z, 500, Some(&labels)).unwrap();
            (e * &vt).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let e64 = f64_rel_err(&f, &g, &x, &dir, 1e-6);
        // Host round trip with f32 inputs: truncation O(h²) dominates above h ≈ 1e-3 on this very non-linear
        // random UNet (measured 5.4e-2 at h = 1e-2, 5.7e-3 at 3e-3, 4.0e-4 at 1e-3, 2.0e-4 at 3e-4).
        let fh = |z: &[f32]| {
            let mut e = vec![0f32; n * d];
            den.eps(z, 500, &cond, &mut e).unwrap();
            e.into_iter().map(|v| v as f64).collect::<Vec<_>>()
        };
        let eh = host_rel_err(&fh, &g, &x, &v, &dir, 1e-3);
        eprintln!(
            "SdDenoiser::eps_vjp (CFG 5, f64 weights, batch_p {batch_p}, 5 rows): FD rel err {e64:.2e} (f64 step \
             1e-6), {eh:.2e} (host f32 step 1e-3)"
        );
        assert!(e64 < 1e-5 && eh < 2e-3, "batch_p {batch_p}: {e64} {eh}");
        results.push(g);
    }
    let worst = results[0].iter().zip(&results[1]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-5, "one pass vs micro-batches with recompute: {worst}");
}

#[test]
fn vae_decoder_vjp_matches_finite_differences() {
    let sd = tiny(DType::F64, 5.0, 2);
    let dec = &sd.decoder;
    assert_eq!(sd.image_shape, [3, 32, 32]);
    let z = random_tensor(&[2, 4, 8, 8], 12, DType::F64, &DEV).unwrap();
    let g = grad_check(|z| dec.image_tensor(z), &z, 1, 1e-5).unwrap();
    eprintln!("VAE decoder (unclamped) input gradient: FD rel err {:.2e}", g.rel_err);
    assert!(g.rel_err < 1e-6, "{g:?}");
    // Host adapter: decode clamps to [0, 1]; the exact VJP zeroes the clamped pixels.
    let n = 3;
    let d = 4 * 64;
    let o = dec.out_dim(d);
    let x = normals(n * d, 5);
    let v = normals(n * o, 6);
    let dir = normals(n * d, 7);
    let mut img = Vec::new();
    dec.decode(&x, &mut img).unwrap();
    assert_eq!(img.len(), n * o);
    assert!(img.iter().all(|p| (0.0..=1.0).contains(p)));
    let raw =
        dec.image_tensor(&Tensor::from_slice(&x, (n, 4, 8, 8), &DEV).unwrap().to_dtype(DType::F64).unwrap()).unwrap();
    let raw: Vec<f64> = raw.flatten_all().unwrap().to_vec1().unwrap();
    let clamped = raw.iter().filter(|p| !(0.0..=1.0).contains(*p)).count();
    eprintln!("tiny VAE: {clamped} of {} pixels outside [0, 1] before the clamp", raw.len());
    let vt = Tensor::from_slice(&v, (n, 3, 32, 32), &DEV).unwrap().to_dtype(DType::F64).unwrap();
    let mut g = vec![0f32; n * d];
    dec.vjp(&x, &v, &mut g).unwrap();
    // Σ v·clamp(D(z)) with an f64 step of 1e-6: no pixel crosses 0 or 1, the clamp's kinks do not enter.
    let f = |z: &Tensor| {
        let y = dec.image_tensor(z).unwrap().clamp(0f64, 1f64).unwrap();
        (y * &vt).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
    };
    let e = f64_rel_err(&f, &g, &x, &dir, 1e-6);
    eprintln!("SdDecoder::vjp (exact clamp, f64 weights): FD rel err {e:.2e}");
    assert!(e < 1e-5, "{e}");
    // Straight-through is the unclamped decoder's VJP; it differs from the exact one when pixels are clamped.
    let o_st = SdOptions { clamp: ClampGrad::StraightThrough, ..opts(DType::F64, 5.0, 2) };
    let st = SdPipeline::tiny_random(7, &o_st, &prompts()).unwrap();
    let mut g_st = vec![0f32; n * d];
    st.decoder.vjp(&x, &v, &mut g_st).unwrap();
    let f_raw = |z: &Tensor| {
        (st.decoder.image_tensor(z).unwrap() * &vt).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
    };
    let e_st = f64_rel_err(&f_raw, &g_st, &x, &dir, 1e-6);
    eprintln!("SdDecoder::vjp (straight-through) vs the unclamped decoder: FD rel err {e_st:.2e}");
    assert!(e_st < 1e-5, "{e_st}");
    assert!(clamped > 0 && g != g_st);
}

/// The look-ahead's decoder path: one VAE forward pass per chunk of `batch_p` rows (2 of 3 rows: an uneven last
/// chunk), each chunk scored with its own rows' prompts while its graph is kept, gives the reward values and the
/// latent gradient of the two-pass default (decode, score every row, VJP).
#[test]
fn one_pass_decode_vjp_is_decode_score_vjp() {
    use crate::rewards::random::{random_image_reward, TowerSize};
    let sd = tiny(DType::F64, 5.0, 2);
    let spec = yaml_serde::from_str("{ kind: pickscore }").unwrap();
    let reward = random_image_reward(&spec, sd.image_shape, &prompts(), &DEV, TowerSize::Tiny).unwrap();
    let (n, d) = (3, 4 * 64);
    let x = normals(n * d, 8);
    let cond = Cond::Labels(vec![2, 0, 1]);
    let mut img = Vec::new();
    sd.decoder.decode(&x, &mut img).unwrap();
    let (mut r2, mut gy) = (vec![0f64; n], vec![0f32; img.len()]);
    reward.score_grad(&img, &cond, &mut r2, &mut gy).unwrap();
    let mut g2 = vec![0f32; n * d];
    sd.decoder.vjp(&x, &gy, &mut g2).unwrap();

    let (mut r1, mut g1, mut chunks) = (vec![0f64; n], vec![0f32; n * d], Vec::new());
    let mut score = |y: &[f32], rows: std::ops::Range<usize>, gy: &mut [f32]| -> crate::Result<()> {
        chunks.push(rows.clone());
        assert_eq!(y, &img[rows.start * 3 * 32 * 32..rows.end * 3 * 32 * 32], "the chunk's images are decode's");
        reward.score_grad(y, &cond.slice(rows.clone()), &mut r1[rows], gy)
    };
    sd.decoder.decode_vjp(&x, n, &mut score, &mut g1).unwrap();
    assert_eq!(chunks, vec![0..2, 2..3]);
    let rel = |a: &[f64], b: &[f64]| {
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
    };
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    assert!(rel(&r1, &r2) < 1e-6, "rewards {r1:?} vs {r2:?}");
    assert!(rel(&wide(&g1), &wide(&g2)) < 1e-5, "latent gradient {:.1e}", rel(&wide(&g1), &wide(&g2)));
    // A mismatched row count is one clear error.
    let err = sd.decoder.decode_vjp(&x, 2, &mut |_, _, _| Ok(()), &mut g1).unwrap_err().to_string();
    assert!(err.contains("sd decoder"), "{err}");
}

#[test]
fn composite_lookahead_gradient_matches_finite_differences() {
    // g = ∇_x r(D(x̂0(x, t_i))) from samplers::guidance::lookahead (reward gradient → decoder VJP → Tweedie →
    // UNet VJP with CFG), against a central difference of the same composite evaluated in f64 tensors.
    for clamp in [ClampGrad::Exact, ClampGrad::StraightThrough] {
        let sd = SdPipeline::tiny_random(7, &SdOptions { clamp, ..opts(DType::F64, 5.0, 2) }, &prompts()).unwrap();
        let reward = MeanBrightness(sd.image_shape.iter().product());
        let grid = Grid::new(BetaSchedule::ScaledLinear, Spacing::Sd15, 10);
        let ledger = Ledger::default();
        let m = Model {
            denoiser: &sd.denoiser,
            decoder: &sd.decoder,
            reward: &reward,
            grid: &grid,
            eta: 1.0,
            ledger: &ledger,
            streams: Streams::new(1),
        };
        let (n, d) = (3, m.dim());
        let labels = [2usize, 0, 1];
        let cond = Cond::Labels(labels.to_vec());
        let x = normals(n * d, 8);
        let dir = normals(n * d, 9);
        for i in [1usize, 5, 9] {
            let (mut eps, mut x0, mut r, mut g) =
                (vec![0f32; n * d], vec![0f32; n * d], vec![0f64; n], vec![0f32; n * d]);
            lookahead(&m, &x, &cond, i, Grad::Full, true, Look { eps: &mut eps, x0: &mut x0, r: &mut r, g: &mut g })
                .unwrap();
            let (sa, s1) = (grid.a[i].sqrt(), (1.0 - grid.a[i]).sqrt());
            let f = |z: &Tensor| {
                let e = sd.denoiser.eps_tensor(z, grid.t[i], Some(&labels)).unwrap();
                let x0 = ((z - (e * s1).unwrap()).unwrap() / sa).unwrap();
                let mut y = sd.decoder.image_tensor(&x0).unwrap();
                if clamp == ClampGrad::Exact {
                    y = y.clamp(0f64, 1f64).unwrap();
                }
                // Σ over rows of the mean brightness.
                y.mean_all().unwrap().to_scalar::<f64>().unwrap() * n as f64
            };
            let e = f64_rel_err(&f, &g, &x, &dir, 1e-6);
            eprintln!(
                "composite ∂r(D(x̂0(x_t)))/∂x_t ({clamp:?}, t = {}, CFG 5, f64 weights): FD rel err {e:.2e}",
                grid.t[i]
            );
            assert!(e < 1e-5, "{clamp:?} i = {i}: {e}");
        }
        let s = ledger.snapshot();
        assert_eq!((s.vjp_denoiser, s.decoder_calls), (3 * n as u64, 3 * n as u64));
    }
}

/// Counts the tensors a model asks for (shapes only: zero-stride broadcasts, no allocation).
struct ShapeBackend(Arc<Mutex<HashMap<String, Vec<usize>>>>);

impl SimpleBackend for ShapeBackend {
    fn get(&self, s: Shape, name: &str, _h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.lock().unwrap().insert(name.to_string(), s.dims().to_vec());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("{name}: no shape")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

fn shapes(build: impl FnOnce(VarBuilder<'static>)) -> HashMap<String, Vec<usize>> {
    let m = Arc::new(Mutex::new(HashMap::new()));
    build(VarBuilder::from_backend(Box::new(ShapeBackend(m.clone())), DType::F32, DEV));
    let out = m.lock().unwrap().clone();
    out
}

#[test]
fn sd15_key_structure() {
    // Tensor counts of the public checkpoints: UNet 686; VAE 248 of which 140 are post_quant_conv + decoder;
    // CLIPTextModel 196 (+ the `position_ids` buffer, not a weight).
    let u = shapes(|vb| {
        UNet::load(vb, &UNetConfig::sd15()).unwrap();
    });
    let v = shapes(|vb| {
        VaeDecoder::load(vb, &VaeConfig::sd15()).unwrap();
    });
    let t = shapes(|vb| {
        TextEncoder::load(vb, &sd15_text_config()).unwrap();
    });
    assert_eq!((u.len(), v.len(), t.len()), (686, 140, 196));
    let params = |m: &HashMap<String, Vec<usize>>| m.values().map(|s| s.iter().product::<usize>()).sum::<usize>();
    eprintln!("SD 1.5 parameters: UNet {}, VAE decoder {}, text encoder {}", params(&u), params(&v), params(&t));
    assert_eq!(params(&u), 859_520_964);
    assert_eq!(params(&t), 123_060_480);
    for (k, s) in [
        ("conv_in.weight", vec![320, 4, 3, 3]),
        ("time_embedding.linear_1.weight", vec![1280, 320]),
        ("down_blocks.0.attentions.0.proj_in.weight", vec![320, 320, 1, 1]),
        ("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", vec![320, 768]),
        ("down_blocks.1.resnets.0.conv_shortcut.weight", vec![640, 320, 1, 1]),
        ("down_blocks.2.attentions.1.transformer_blocks.0.ff.net.0.proj.weight", vec![10240, 1280]),
        ("down_blocks.2.downsamplers.0.conv.weight", vec![1280, 1280, 3, 3]),
        ("mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.bias", vec![1280]),
        ("up_blocks.0.resnets.0.conv1.weight", vec![1280, 2560, 3, 3]),
        ("up_blocks.1.resnets.2.conv1.weight", vec![1280, 1920, 3, 3]),
        ("up_blocks.2.resnets.0.conv1.weight", vec![640, 1920, 3, 3]),
        ("up_blocks.2.resnets.2.conv_shortcut.weight", vec![640, 960, 1, 1]),
        ("up_blocks.3.resnets.0.conv1.weight", vec![320, 960, 3, 3]),
        ("up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.weight", vec![320, 1280]),
        ("up_blocks.2.upsamplers.0.conv.weight", vec![640, 640, 3, 3]),
        ("conv_out.weight", vec![4, 320, 3, 3]),
    ] {
        assert_eq!(u.get(k), Some(&s), "{k}");
    }
    for (k, s) in [
        ("post_quant_conv.weight", vec![4, 4, 1, 1]),
        ("decoder.conv_in.weight", vec![512, 4, 3, 3]),
        ("decoder.mid_block.attentions.0.to_q.weight", vec![512, 512]),
        ("decoder.up_blocks.2.resnets.0.conv_shortcut.weight", vec![256, 512, 1, 1]),
        ("decoder.up_blocks.3.resnets.2.conv2.weight", vec![128, 128, 3, 3]),
        ("decoder.conv_out.weight", vec![3, 128, 3, 3]),
    ] {
        assert_eq!(v.get(k), Some(&s), "{k}");
    }
    assert_eq!(t.get("text_model.embeddings.token_embedding.weight"), Some(&vec![49408, 768]));
    assert_eq!(t.get("text_model.encoder.layers.11.mlp.fc1.weight"), Some(&vec![3072, 768]));
}

const SD15_UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu",
  "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
  "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}"#;

const SD15_VAE_CONFIG: &str = r#"{
  "_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0", "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
  "sample_size": 512,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
}"#;

const SD15_TEXT_CONFIG: &str = r#"{
  "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
  "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
  "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
  "model_type": "clip_text_model", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
  "projection_dim": 768, "torch_dtype": "float32", "vocab_size": 49408
}"#;

#[test]
fn diffusers_configs_parse_and_round_trip() {
    assert_eq!(unet_from_diffusers(SD15_UNET_CONFIG).unwrap(), UNetConfig::sd15());
    assert_eq!(vae_from_diffusers(SD15_VAE_CONFIG).unwrap(), VaeConfig::sd15());
    assert_eq!(text_from_hf(SD15_TEXT_CONFIG).unwrap(), sd15_text_config());
    let dir = tempfile::tempdir().unwrap();
    for cfg in [SdConfig::sd15(), tiny_config()] {
        cfg.write_diffusers(dir.path()).unwrap();
        let f = SdFolder::locate(Some(dir.path()), Pins::Unpinned).unwrap();
        assert_eq!(f.config().unwrap(), cfg);
    }
    // Unsupported features are refused by name.
    let sdxl_like = SD15_UNET_CONFIG.replace("\"act_fn\": \"silu\",", "\"addition_embed_type\": \"text_time\",");
    assert!(unet_from_diffusers(&sdxl_like).unwrap_err().to_string().contains("addition_embed_type"));
    let bad_up = SD15_UNET_CONFIG.replace("[\"UpBlock2D\",", "[\"CrossAttnUpBlock2D\",");
    assert!(unet_from_diffusers(&bad_up).unwrap_err().to_string().contains("mirror"));
}

#[test]
fn loader_reads_a_diffusers_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    write_random_folder(dir.path(), &cfg, 7, Variant::Fp32, false).unwrap();
    let o = opts(DType::F32, 5.0, 2);
    let loaded = SdPipeline::load(Some(dir.path()), &o, &prompts()).unwrap();
    let mem = SdPipeline::tiny_random(7, &o, &prompts()).unwrap();
    assert_eq!(loaded.files.len(), 5);
    assert_eq!(loaded.files[0].file, "unet/diffusion_pytorch_model.safetensors");
    assert!(loaded.files.iter().all(|f| f.sha256.len() == 64));
    assert_eq!((loaded.image_shape, loaded.latent_shape), ([3, 32, 32], [4, 8, 8]));
    // Files written from the seeded weights load to the same models: identical ε̂ and images.
    let d = 256;
    let x = normals(2 * d, 10);
    let cond = Cond::Labels(vec![1, 2]);
    let run = |p: &SdPipeline| {
        let mut e = vec![0f32; 2 * d];
        p.denoiser.eps(&x, 300, &cond, &mut e).unwrap();
        let mut img = Vec::new();
        p.decoder.decode(&x, &mut img).unwrap();
        (e, img)
    };
    assert_eq!(run(&loaded), run(&mem));

    // fp16 files with the pre-0.14 VAE attention names; an f16 model prefers them, an f32 model falls back to them.
    let dir16 = tempfile::tempdir().unwrap();
    write_random_folder(dir16.path(), &cfg, 7, Variant::Fp16, true).unwrap();
    let f = SdFolder::locate(Some(dir16.path()), Pins::Unpinned).unwrap();
    assert_eq!(f.resolve(Component::Vae, None, DType::F32).unwrap(), "vae/diffusion_pytorch_model.fp16.safetensors");
    let from16 = SdPipeline::load(Some(dir16.path()), &o, &prompts()).unwrap();
    let (a, b) = (run(&from16), run(&mem));
    let gap = |u: &[f32], v: &[f32]| u.iter().zip(v).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    eprintln!("fp16-stored weights vs f32: max |Δε̂| {:.2e}, max |Δpixel| {:.2e}", gap(&a.0, &b.0), gap(&a.1, &b.1));
    assert!(gap(&a.0, &b.0) < 0.05 && gap(&a.1, &b.1) < 0.05);
    let half = SdPipeline::load(Some(dir16.path()), &SdOptions { dtype: DType::F16, ..o.clone() }, &prompts()).unwrap();
    let (h, _) = run(&half);
    assert!(h.iter().all(|v| v.is_finite()) && gap(&h, &b.0) < 0.1, "f16 model: {}", gap(&h, &b.0));
}

#[test]
fn loader_errors_name_file_checksum_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(DType::F32, 5.0, 2);
    // Missing folder.
    let e = SdPipeline::load(Some(&dir.path().join("nope")), &o, &prompts()).unwrap_err().to_string();
    assert!(
        e.contains("nope") && e.contains("huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5"),
        "{e}"
    );
    write_random_folder(dir.path(), &tiny_config(), 7, Variant::Fp32, false).unwrap();
    // Pinned (the default): the tiny files are not the public ones — size mismatch, naming file and source.
    let pinned = SdOptions { pins: Pins::Sd15, ..o.clone() };
    let e = SdPipeline::load(Some(dir.path()), &pinned, &prompts()).unwrap_err().to_string();
    assert!(e.contains("unet/diffusion_pytorch_model.safetensors") && e.contains("expected 3438167540"), "{e}");
    assert!(e.contains("--revision") && e.contains(SD15_REPO), "{e}");
    // Missing file: named with its pinned sha256 and the command that fetches it.
    std::fs::remove_file(dir.path().join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let f = SdFolder::locate(Some(dir.path()), Pins::Sd15).unwrap();
    let e = f.check(Component::Vae.path(Variant::Fp32)).unwrap_err().to_string();
    assert!(e.contains("vae/diffusion_pytorch_model.safetensors") && e.contains("not found"), "{e}");
    assert!(e.contains("a2b5134f4dbc140d9c11f11cba3233099e00af40f262f136c691fb7d38d2194c"), "{e}");
    assert!(e.contains("huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5"), "{e}");
    let e = SdPipeline::load(Some(dir.path()), &o, &prompts()).unwrap_err().to_string();
    assert!(e.contains("vae/diffusion_pytorch_model.safetensors") && e.contains("not found"), "{e}");
    // Corrupt (unpinned) file: not a safetensors file, named.
    std::fs::write(dir.path().join("vae/diffusion_pytorch_model.safetensors"), b"not a safetensors file").unwrap();
    let e = SdPipeline::load(Some(dir.path()), &o, &prompts()).unwrap_err().to_string();
    assert!(e.contains("vae/diffusion_pytorch_model.safetensors") && e.contains("not a readable safetensors"), "{e}");
    // A truncated pinned file: wrong size, named, with the expected size.
    let e = f.check(Component::Vae.path(Variant::Fp32)).unwrap_err().to_string();
    assert!(e.contains("22 bytes, expected 334643276"), "{e}");
    // Every pinned weight has a full sha256; the tokenizer digests are unknown (size only).
    for w in SD15_FILES.iter() {
        assert!(w.sha256.len() == 64 || w.file.starts_with("tokenizer/"), "{}", w.file);
        assert!(w.bytes > 0);
    }
}

#[test]
fn tokenizer_and_prompt_encoding() {
    let (vocab, merges) = tiny_tokenizer_files();
    let tok = ClipTokenizer::from_strs(&vocab, &merges).unwrap();
    let cat = tok.encode("cat").unwrap();
    assert_eq!(cat.len(), 1, "merged to one token: {cat:?}");
    assert_eq!(tok.encode("A snail!").unwrap().len(), 3); // a</w>, snail</w>, !</w>
    let ids = tok.encode_padded("").unwrap();
    assert_eq!((ids.len(), ids[0], ids[1], ids[76]), (77, tok.sot_id(), tok.eot_id(), tok.eot_id()));
    let cfg = tiny_config();
    assert_eq!(cfg.text.vocab_size as u32, tok.eot_id() + 1);
    let (text, _) = super::random::random_model(3, DType::F64, &DEV, |vb| TextEncoder::load(vb, &cfg.text)).unwrap();
    let p = prompts();
    let emb = encode_prompts(&text, &tok, &p).unwrap();
    assert_eq!(emb.cond.dims(), &[3, 77, 16]);
    assert_eq!(emb.uncond.dims(), &[1, 77, 16]);
    // Row i is prompt i alone; the unconditional row is the empty prompt.
    let one = encode_prompts(&text, &tok, &p[1..2]).unwrap();
    let d = (emb.cond.narrow(0, 1, 1).unwrap() - &one.cond).unwrap().abs().unwrap().max_all().unwrap();
    assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
    let d = (&emb.uncond - &one.uncond).unwrap().abs().unwrap().max_all().unwrap();
    assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
    // Final LayerNorm applied: each token's features have mean ≈ β-mean and are not the raw embeddings.
    let h = text.forward(&tok.batch(&["dog"], &DEV).unwrap()).unwrap();
    assert_eq!(h.dims(), &[1, 77, 16]);
    let d = (emb.cond.narrow(0, 0, 1).unwrap() - emb.cond.narrow(0, 1, 1).unwrap()).unwrap().abs().unwrap();
    assert!(d.max_all().unwrap().to_scalar::<f64>().unwrap() > 1e-3, "different prompts, different embeddings");
}

fn run_sampler(m: &Model, b: &Batch, mut s: Box<dyn Sampler>) -> Vec<GroupOutput> {
    s.init(m, b).unwrap();
    for i in 0..m.grid.len() {
        s.step(m, b, i).unwrap();
    }
    s.finish(m, b).unwrap()
}

#[test]
fn das_and_dps_run_on_the_tiny_sd() {
    // f32 weights, CFG 5, 8 particle rows per step in micro-batches of 3 (the recompute path).
    let sd = tiny(DType::F32, 5.0, 3);
    let reward = MeanBrightness(sd.image_shape.iter().product());
    let n = 4;
    let grid = Grid::new(BetaSchedule::ScaledLinear, Spacing::Sd15, n);
    let b = Batch { groups: vec![0, 1], cond: Cond::Labels(vec![0, 2]) };
    let model = |ledger: &'static Ledger| Model {
        denoiser: &sd.denoiser,
        decoder: &sd.decoder,
        reward: &reward,
        grid: &grid,
        eta: 1.0,
        ledger,
        streams: Streams::new(42),
    };
    let k = 4;
    let das_cfg: DasConfig = serde_json::from_value(serde_json::json!({ "particles": k })).unwrap();
    let ledger: &'static Ledger = Box::leak(Box::default());
    let t0 = std::time::Instant::now();
    let das = run_sampler(&model(ledger), &b, Box::new(DasSampler::new(das_cfg, 0.01)));
    let das_s = t0.elapsed().as_secs_f64();
    let s = ledger.snapshot();
    let (g, nk) = (2u64, (n * k) as u64);
    assert_eq!((s.nfe, s.vjp_denoiser, s.decoder_calls), (2 * nk * g, nk * g, (nk + k as u64) * g));
    assert_eq!(das.len(), 2);
    for o in &das {
        assert!(o.samples.iter().all(|v| v.is_finite()) && o.rewards.iter().all(|r| r.is_finite()));
        assert!((o.weights.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(o.log_z_hat.is_some_and(f64::is_finite), "{:?}", o.log_z_hat);
    }

    let dps_cfg: DpsConfig = serde_json::from_value(serde_json::json!({ "particles": 2, "rho": 50.0 })).unwrap();
    let ledger: &'static Ledger = Box::leak(Box::default());
    let dps = run_sampler(&model(ledger), &b, Box::new(DpsSampler::new(dps_cfg, 0.01)));
    let s = ledger.snapshot();
    assert_eq!((s.nfe, s.vjp_denoiser), (2 * 2 * n as u64 * g, 2 * n as u64 * g));
    let ledger: &'static Ledger = Box::leak(Box::default());
    let ddim = run_sampler(&model(ledger), &b, Box::new(DdimSampler::new(2)));
    let mean = |o: &[GroupOutput]| {
        o.iter().flat_map(|g| g.rewards.iter()).sum::<f64>() / o.iter().map(|g| g.rewards.len()).sum::<usize>() as f64
    };
    let das_best = das.iter().flat_map(|g| g.rewards.iter()).cloned().fold(f64::NEG_INFINITY, f64::max);
    eprintln!(
        "tiny SD, {n} steps: mean brightness DDIM {:.4}, DPS(ρ=50) {:.4}; DAS (K={k}) best {das_best:.4}; DAS run {das_s:.1} s",
        mean(&ddim),
        mean(&dps)
    );
    assert!(dps.iter().all(|o| o.samples.iter().all(|v| v.is_finite())));
    // Same initial and step noise: the guided chains end brighter than the unguided ones.
    assert!(mean(&dps) > mean(&ddim), "DPS {} vs DDIM {}", mean(&dps), mean(&ddim));
}

#[test]
fn half_precision_vjps_track_f32() {
    // An f16 model (norm statistics and softmax in f32): ε̂ and both VJPs stay close to the f32 model's. (bf16 is
    // a GPU option: candle's CPU matmul has no bf16 kernel.)
    let (n, d) = (2, 256);
    let x = normals(n * d, 20);
    let v = normals(n * d, 21);
    let cond = Cond::Labels(vec![0, 1]);
    let run = |dtype: DType| {
        let sd = tiny(dtype, 5.0, 2);
        let (mut eps, mut g) = (vec![0f32; n * d], vec![0f32; n * d]);
        let vv = v.clone();
        let mut cot = |_e: &[f32], u: &mut [f32]| {
            u.copy_from_slice(&vv);
            Ok(())
        };
        sd.denoiser.eps_vjp(&x, 600, &cond, &mut eps, &mut cot, &mut g).unwrap();
        let o = sd.decoder.out_dim(d);
        let mut gd = vec![0f32; n * d];
        sd.decoder.vjp(&x, &normals(n * o, 22), &mut gd).unwrap();
        (eps, g, gd)
    };
    let rel = |a: &[f32], b: &[f32]| {
        let num: f32 = a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum();
        (num / b.iter().map(|q| q * q).sum::<f32>()).sqrt()
    };
    let f32s = run(DType::F32);
    {
        let dtype = DType::F16;
        let h = run(dtype);
        let errs = (rel(&h.0, &f32s.0), rel(&h.1, &f32s.1), rel(&h.2, &f32s.2));
        eprintln!("{dtype:?} vs f32 (relative L2): ε̂ {:.1e}, UNet VJP {:.1e}, VAE VJP {:.1e}", errs.0, errs.1, errs.2);
        assert!(errs.0 < 5e-2 && errs.1 < 5e-2 && errs.2 < 5e-2, "{dtype:?}: {errs:?}");
    }
}
