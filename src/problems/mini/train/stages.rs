//! The training stages: the autoencoder, the latent DDPM, the two classifiers and the ridge style heads, with the
//! shared machinery (seeded streams per stage, learning-rate schedule, EMA, AdamW).

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, VarBuilder, VarMap};
use rand::Rng;

use crate::diffusion::schedule::{BetaSchedule, T_TRAIN};
use crate::numerics::r_squared;
use crate::problems::mini::assets::{Manifest, MiniAssets, FILES};
use crate::problems::mini::data::{FashionMnist, Splits, Subset, PIXELS, SIDE};
use crate::problems::mini::models::{
    init_model, log_softmax, normalize_features, Autoencoder, Classifier, ClassifierA, ClassifierB, EpsMlp, LATENT,
    NULL_CLASS,
};
use crate::rng::{fill_normal, Purpose, Streams};
use crate::{Error, Result};

use super::config::*;

pub(super) struct Ctx<'a> {
    pub(super) data: &'a FashionMnist,
    pub(super) splits: &'a Splits,
    pub(super) cfg: &'a MiniTrainConfig,
    pub(super) opts: &'a TrainOptions,
    pub(super) streams: Streams,
    pub(super) manifest: &'a Manifest,
    pub(super) stage: Stage,
    pub(super) bars: &'a indicatif::MultiProgress,
}

/// Stream sub-groups of a stage.
pub(super) const INIT: u64 = 0;
pub(super) const ORDER: u64 = 1;
pub(super) const NOISE: u64 = 2;
pub(super) const AUG: u64 = 3;
pub(super) const RECON: u64 = 4;
pub(super) const EVAL: u64 = 5;

impl Ctx<'_> {
    pub(super) fn rng(&self, sub: u64, step: u64) -> rand_chacha::ChaCha8Rng {
        self.streams.rng(Purpose::Train, self.stage.group() + sub, step)
    }
    pub(super) fn bar(&self, len: u64) -> indicatif::ProgressBar {
        if !self.opts.progress {
            return indicatif::ProgressBar::hidden();
        }
        let b = self.bars.add(indicatif::ProgressBar::new(len));
        b.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "train mini {:<5} [{{bar:32}}] {{pos}}/{{len}} {{msg}} ETA {{eta}}",
                self.stage.name()
            ))
            .expect("template"),
        );
        b
    }
    /// A frozen copy (constant tensors) of a trained var map.
    pub(super) fn frozen(&self, t: &HashMap<String, Tensor>) -> VarBuilder<'static> {
        VarBuilder::from_tensors(t.clone(), DType::F32, &Device::Cpu)
    }
    /// Assets saved by earlier stages (verified).
    pub(super) fn assets(&self) -> MiniAssets {
        MiniAssets { dir: self.opts.out.clone(), manifest: self.manifest.clone() }
    }
}

/// Seeded Fisher–Yates permutation of 0..n.
pub(super) fn permutation(n: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        p.swap(i, j);
    }
    p
}

/// Cosine decay from `lr` to `lr_min` over `total` steps after `warmup` linear warm-up steps.
pub fn lr_at(step: usize, total: usize, warmup: usize, lr: f64, lr_min: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let u = ((step - warmup) as f64 / span as f64).min(1.0);
    lr_min + 0.5 * (lr - lr_min) * (1.0 + (std::f64::consts::PI * u).cos())
}

pub(super) fn vars_sorted(vm: &VarMap) -> Result<Vec<(String, Var)>> {
    let d = vm.data().lock().map_err(|_| Error::config("varmap lock poisoned"))?;
    let mut v: Vec<(String, Var)> = d.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

pub(super) fn snapshot(vm: &VarMap) -> Result<HashMap<String, Tensor>> {
    // Deep copies: later optimiser steps must not change a snapshot.
    vars_sorted(vm)?.into_iter().map(|(k, v)| Ok((k, v.as_tensor().copy()?.detach()))).collect()
}

/// Exponential moving average of a model's variables (name order), the weights a stage saves when its decay is > 0.
pub(super) struct Ema {
    decay: f64,
    avg: Vec<Tensor>,
}

impl Ema {
    pub(super) fn new(vars: &[(String, Var)], decay: f64) -> Result<Self> {
        let avg = vars.iter().map(|(_, v)| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
        Ok(Ema { decay, avg })
    }

    /// avg ← decay·avg + (1 − decay)·v after an optimiser step.
    pub(super) fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        for (e, (_, v)) in self.avg.iter_mut().zip(vars) {
            // Detached: an EMA built from variables would keep the op graph of every past step alive.
            *e = ((&*e * self.decay)? + (v.as_tensor().detach() * (1.0 - self.decay))?)?.detach();
        }
        Ok(())
    }

    /// The averaged weights under the variables' names.
    pub(super) fn tensors(self, vars: &[(String, Var)]) -> HashMap<String, Tensor> {
        vars.iter().map(|(k, _)| k.clone()).zip(self.avg).collect()
    }
}

pub(super) fn adam(vm: &VarMap, lr: f64, weight_decay: f64) -> Result<AdamW> {
    crate::nn::adam(vars_sorted(vm)?.into_iter().map(|(_, v)| v).collect(), lr, weight_decay)
}

pub(super) fn finite(stage: &'static str, step: usize, loss: f32) -> Result<f32> {
    if !loss.is_finite() {
        return Err(Error::numeric(stage, format!("training loss became {loss} at step {step}")));
    }
    Ok(loss)
}

pub(super) fn rows(x: Vec<f32>, dim: usize) -> Result<Tensor> {
    let n = x.len() / dim;
    Ok(Tensor::from_vec(x, (n, dim), &Device::Cpu)?)
}

// ---------------------------------------------------------------------------------------------------------------
// Autoencoder
// ---------------------------------------------------------------------------------------------------------------

pub(super) fn train_ae(ctx: &Ctx) -> Result<Output> {
    let c = &ctx.cfg.ae;
    let p = &ctx.splits.p;
    let dev = Device::Cpu;
    let (ae, vm) = init_model(ctx.cfg.seed, ctx.stage.group() + INIT, DType::F32, &dev, &[], Autoencoder::new)?;
    let per_epoch = p.len().div_ceil(c.batch);
    let total = c.epochs * per_epoch;
    let mut opt = adam(&vm, c.lr, 0.0)?;
    let bar = ctx.bar(total as u64);
    let mut step = 0;
    let mut last = f32::NAN;
    for epoch in 0..c.epochs {
        let perm = permutation(p.len(), &mut ctx.rng(ORDER, epoch as u64));
        for idx in perm.chunks(c.batch) {
            let b = idx.len();
            let x = rows(p.pixels(ctx.data, idx.iter().copied()), PIXELS)?;
            let mut noise = vec![0f32; b * LATENT];
            fill_normal(&mut ctx.rng(NOISE, step as u64), &mut noise);
            let noise = rows(noise, LATENT)?;
            let (mu, logvar) = ae.moments(&x)?;
            let z = (&mu + (logvar.clone() * 0.5)?.exp()?.mul(&noise)?)?;
            let logits = ae.decode_raw_logits(&z)?;
            // BCE(x, σ(a)) = softplus(a) − x·a, softplus(a) = relu(a) + log(1 + e^{−|a|}).
            let softplus = (logits.relu()? + ((logits.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
            let bce = (softplus - (&x * &logits)?)?.sum(1)?.mean(0)?;
            let kl = ((((mu.sqr()? + logvar.exp()?)? - logvar)? - 1.0)? * 0.5)?.sum(1)?.mean(0)?;
            let loss = (bce + (kl * c.beta_kl)?)?;
            opt.set_learning_rate(lr_at(step, total, 0, c.lr, c.lr_min));
            opt.backward_step(&loss)?;
            last = finite("mini autoencoder", step, loss.to_scalar::<f32>()?)?;
            step += 1;
            bar.inc(1);
            if step % 20 == 0 {
                bar.set_message(format!("loss {last:.2}"));
            }
        }
    }
    bar.finish_and_clear();
    // Latent standardisation over P: m = mean of μ per dimension, s = one global std of μ − m.
    let mut t = snapshot(&vm)?;
    let frozen = Autoencoder::new(ctx.frozen(&t))?;
    let mu = crate::problems::mini::map_rows(&p.all_pixels(ctx.data), PIXELS, 2048, &|x| Ok(frozen.moments(x)?.0))?;
    let n = mu.len() / LATENT;
    let mut m = vec![0f64; LATENT];
    for r in mu.chunks(LATENT) {
        for (a, &v) in m.iter_mut().zip(r) {
            *a += v as f64 / n as f64;
        }
    }
    let var: f64 = mu.chunks(LATENT).flat_map(|r| r.iter().zip(&m).map(|(&v, &a)| (v as f64 - a).powi(2))).sum::<f64>()
        / mu.len() as f64;
    let s = var.sqrt();
    t.insert("latent_mean".into(), Tensor::from_vec(m.iter().map(|&v| v as f32).collect(), LATENT, &dev)?);
    t.insert("latent_scale".into(), Tensor::from_vec(vec![s as f32], 1, &dev)?);
    let ae = Autoencoder::new(ctx.frozen(&t))?;
    // Held-out reconstruction D(E(x)) on E.
    let e = &ctx.splits.e;
    let xe = e.all_pixels(ctx.data);
    let rec = crate::problems::mini::map_rows(&xe, PIXELS, 2048, &|x| ae.reconstruct(x))?;
    let mse = xe.iter().zip(&rec).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / xe.len() as f64;
    let ze = crate::problems::mini::map_rows(&xe, PIXELS, 2048, &|x| ae.encode(x))?;
    let z_std = (ze.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / ze.len() as f64).sqrt();
    let metrics = BTreeMap::from([
        ("test_recon_mse".to_string(), mse),
        ("final_train_loss".to_string(), last as f64),
        ("latent_scale".to_string(), s),
        ("test_latent_rms".to_string(), z_std),
    ]);
    Ok((FILES[0], t, metrics))
}

// ---------------------------------------------------------------------------------------------------------------
// Latent DDPM
// ---------------------------------------------------------------------------------------------------------------

/// One batch of the ε-prediction objective: x_t = √ᾱ_t z + √(1−ᾱ_t) ε, t uniform, labels dropped to ∅ with `p_drop`.
pub(super) struct DiffusionBatch {
    xt: Tensor,
    eps: Tensor,
    ts: Vec<usize>,
    labels: Vec<u32>,
}

pub(super) fn diffusion_batch(
    z: &[f32],
    labels: &[u32],
    idx: &[usize],
    ab: &[f64],
    p_drop: f64,
    rng: &mut impl Rng,
) -> Result<DiffusionBatch> {
    let b = idx.len();
    let mut eps = vec![0f32; b * LATENT];
    fill_normal(rng, &mut eps);
    let ts: Vec<usize> = (0..b).map(|_| rng.random_range(0..T_TRAIN)).collect();
    let labels: Vec<u32> =
        idx.iter().map(|&i| if rng.random::<f64>() < p_drop { NULL_CLASS as u32 } else { labels[i] }).collect();
    let mut xt = vec![0f32; b * LATENT];
    for (r, &i) in idx.iter().enumerate() {
        let (sa, sb) = (ab[ts[r]].sqrt() as f32, (1.0 - ab[ts[r]]).sqrt() as f32);
        for k in 0..LATENT {
            xt[r * LATENT + k] = sa * z[i * LATENT + k] + sb * eps[r * LATENT + k];
        }
    }
    Ok(DiffusionBatch { xt: rows(xt, LATENT)?, eps: rows(eps, LATENT)?, ts, labels })
}

pub(super) fn train_ddpm(ctx: &Ctx) -> Result<Output> {
    let c = &ctx.cfg.ddpm;
    let dev = Device::Cpu;
    let ae = ctx.assets().autoencoder(DType::F32, &dev)?;
    let p = &ctx.splits.p;
    let z = crate::problems::mini::map_rows(&p.all_pixels(ctx.data), PIXELS, 2048, &|x| ae.encode(x))?;
    let labels = p.all_labels(ctx.data);
    let ab = BetaSchedule::ScaledLinear.alpha_bar();
    let (net, vm) =
        init_model(ctx.cfg.seed, ctx.stage.group() + INIT, DType::F32, &dev, &EpsMlp::ZERO_INIT, EpsMlp::new)?;
    let vars = vars_sorted(&vm)?;
    let mut ema = Ema::new(&vars, c.ema)?;
    let mut opt = adam(&vm, c.lr, c.weight_decay)?;
    let bar = ctx.bar(c.steps as u64);
    let (mut perm, mut epoch, mut pos) = (Vec::new(), 0u64, usize::MAX);
    let mut recent = Vec::new();
    let mut clipped = 0usize;
    for step in 0..c.steps {
        if pos >= perm.len() {
            perm = permutation(p.len(), &mut ctx.rng(ORDER, epoch));
            epoch += 1;
            pos = 0;
        }
        let idx = &perm[pos..(pos + c.batch).min(perm.len())];
        pos += c.batch;
        let batch = diffusion_batch(&z, &labels, idx, &ab, c.label_dropout, &mut ctx.rng(NOISE, step as u64))?;
        let pred = net.forward_t(&batch.xt, &batch.ts, &batch.labels)?;
        let loss = (pred - &batch.eps)?.sqr()?.mean_all()?;
        let mut grads = loss.backward()?;
        // Global gradient-norm clipping (sum in name order: deterministic).
        let mut sq = 0f64;
        for (_, v) in &vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        let norm = sq.sqrt();
        if c.grad_clip > 0.0 && norm > c.grad_clip {
            clipped += 1;
            let scale = c.grad_clip / norm;
            for (_, v) in &vars {
                if let Some(g) = grads.remove(v.as_tensor()) {
                    grads.insert(v.as_tensor(), (g * scale)?);
                }
            }
        }
        opt.set_learning_rate(lr_at(step, c.steps, c.warmup, c.lr, c.lr_min));
        opt.step(&grads)?;
        ema.update(&vars)?;
        let l = finite("mini ddpm", step, loss.to_scalar::<f32>()?)?;
        recent.push(l as f64);
        if recent.len() > 200 {
            recent.remove(0);
        }
        bar.inc(1);
        if step % 50 == 0 {
            bar.set_message(format!("loss {:.4}", recent.iter().sum::<f64>() / recent.len() as f64));
        }
    }
    bar.finish_and_clear();
    let t = ema.tensors(&vars);
    // Held-out ε-MSE of the EMA network on test latents, fixed noise and timesteps, conditional and unconditional.
    let ema_net = EpsMlp::new(ctx.frozen(&t))?;
    let e = &ctx.splits.e;
    let n_eval = c.eval_rows.min(e.len());
    let ze = crate::problems::mini::map_rows(&e.pixels(ctx.data, 0..n_eval), PIXELS, 2048, &|x| ae.encode(x))?;
    let le = e.labels(ctx.data, 0..n_eval);
    let mut metrics = BTreeMap::new();
    for (name, p_drop) in [("test_eps_mse_cond", 0.0), ("test_eps_mse_uncond", 1.0)] {
        let idx: Vec<usize> = (0..n_eval).collect();
        let mut sum = 0.0;
        for ch in idx.chunks(2048) {
            let b = diffusion_batch(&ze, &le, ch, &ab, p_drop, &mut ctx.rng(EVAL, ch[0] as u64))?;
            let pred = ema_net.forward_t(&b.xt, &b.ts, &b.labels)?;
            sum += (pred - &b.eps)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        metrics.insert(name.to_string(), sum / (n_eval * LATENT) as f64);
    }
    metrics.insert("final_train_loss".into(), recent.iter().sum::<f64>() / recent.len().max(1) as f64);
    metrics.insert("clipped_steps".into(), clipped as f64);
    Ok((FILES[1], t, metrics))
}

// ---------------------------------------------------------------------------------------------------------------
// Classifiers
// ---------------------------------------------------------------------------------------------------------------

/// Shift a 28×28 image by (dy, dx) pixels with zero fill.
pub(super) fn shift_image(x: &[f32], dy: isize, dx: isize, out: &mut [f32]) {
    let s = SIDE as isize;
    for r in 0..s {
        for c in 0..s {
            let (sr, sc) = (r - dy, c - dx);
            out[(r * s + c) as usize] =
                if (0..s).contains(&sr) && (0..s).contains(&sc) { x[(sr * s + sc) as usize] } else { 0.0 };
        }
    }
}

/// Fraction of rows whose arg-max logit equals the label.
pub(super) fn accuracy(logits: &[f32], labels: &[u32]) -> f64 {
    crate::numerics::accuracy(logits, &labels.iter().map(|&l| l as usize).collect::<Vec<_>>())
}

pub(super) fn train_classifier(ctx: &Ctx, is_b: bool) -> Result<Output> {
    let (c, split, file) =
        if is_b { (&ctx.cfg.clf_b, &ctx.splits.b, FILES[3]) } else { (&ctx.cfg.clf_a, &ctx.splits.a, FILES[2]) };
    let dev = Device::Cpu;
    let seed = ctx.cfg.seed;
    let group = ctx.stage.group() + INIT;
    let (model_a, model_b, vm) = if is_b {
        let (m, vm) = init_model(seed, group, DType::F32, &dev, &[], ClassifierB::new)?;
        (None, Some(m), vm)
    } else {
        let (m, vm) = init_model(seed, group, DType::F32, &dev, &[], ClassifierA::new)?;
        (Some(m), None, vm)
    };
    let total = c.epochs * split.len().div_ceil(c.batch);
    let mut opt = adam(&vm, c.lr, 0.0)?;
    let bar = ctx.bar(total as u64);
    let mut step = 0;
    let mut last = f32::NAN;
    let keep = 1.0 - c.dropout;
    let vars = vars_sorted(&vm)?;
    let mut ema = if c.ema > 0.0 { Some(Ema::new(&vars, c.ema)?) } else { None };
    // Reconstructions D(E(x)) of the whole split, when some training rows are to be replaced by them.
    let recon = if c.recon > 0.0 {
        let ae = ctx.assets().autoencoder(DType::F32, &dev)?;
        Some(crate::problems::mini::map_rows(&split.all_pixels(ctx.data), PIXELS, 2048, &|x| ae.reconstruct(x))?)
    } else {
        None
    };
    for epoch in 0..c.epochs {
        let perm = permutation(split.len(), &mut ctx.rng(ORDER, epoch as u64));
        for idx in perm.chunks(c.batch) {
            let b = idx.len();
            let mut x = split.pixels(ctx.data, idx.iter().copied());
            if let Some(rec) = &recon {
                let mut rr = ctx.rng(RECON, step as u64);
                for (row, &i) in x.chunks_mut(PIXELS).zip(idx) {
                    if rr.random::<f64>() < c.recon {
                        row.copy_from_slice(&rec[i * PIXELS..(i + 1) * PIXELS]);
                    }
                }
            }
            let mut rng = ctx.rng(AUG, step as u64);
            if c.shift > 0 {
                let s = c.shift as i32;
                let mut tmp = vec![0f32; PIXELS];
                for r in x.chunks_mut(PIXELS) {
                    let (dy, dx) = (rng.random_range(-s..=s), rng.random_range(-s..=s));
                    shift_image(r, dy as isize, dx as isize, &mut tmp);
                    r.copy_from_slice(&tmp);
                }
            }
            let x = rows(x, PIXELS)?;
            let y = Tensor::from_vec(split.labels(ctx.data, idx.iter().copied()), b, &dev)?;
            let logits = match (&model_a, &model_b) {
                (Some(a), _) => a.logits(&x)?,
                (_, Some(m)) => {
                    let mask = if c.dropout > 0.0 {
                        let v: Vec<f32> = (0..b * crate::problems::mini::models::FEATURES)
                            .map(|_| if rng.random::<f64>() < keep { (1.0 / keep) as f32 } else { 0.0 })
                            .collect();
                        Some(rows(v, crate::problems::mini::models::FEATURES)?)
                    } else {
                        None
                    };
                    m.logits_train(&x, mask.as_ref())?
                }
                _ => unreachable!(),
            };
            let loss = log_softmax(&logits)?.gather(&y.unsqueeze(1)?, 1)?.mean_all()?.neg()?;
            opt.set_learning_rate(lr_at(step, total, 0, c.lr, c.lr_min));
            opt.backward_step(&loss)?;
            if let Some(e) = ema.as_mut() {
                e.update(&vars)?;
            }
            last = finite(if is_b { "mini classifier B" } else { "mini classifier A" }, step, loss.to_scalar()?)?;
            step += 1;
            bar.inc(1);
            if step % 20 == 0 {
                bar.set_message(format!("loss {last:.3}"));
            }
        }
    }
    bar.finish_and_clear();
    let t = match ema {
        Some(e) => e.tensors(&vars),
        None => snapshot(&vm)?,
    };
    let frozen: Box<dyn Classifier> =
        if is_b { Box::new(ClassifierB::new(ctx.frozen(&t))?) } else { Box::new(ClassifierA::new(ctx.frozen(&t))?) };
    let e = &ctx.splits.e;
    let logits = crate::problems::mini::map_rows(&e.all_pixels(ctx.data), PIXELS, 1000, &|x| frozen.logits(x))?;
    let train_sub = split.head(5000);
    let train_logits =
        crate::problems::mini::map_rows(&train_sub.all_pixels(ctx.data), PIXELS, 1000, &|x| frozen.logits(x))?;
    let mut metrics = BTreeMap::from([
        ("test_accuracy".to_string(), accuracy(&logits, &e.all_labels(ctx.data))),
        ("train_accuracy_first5000".to_string(), accuracy(&train_logits, &train_sub.all_labels(ctx.data))),
        ("final_train_loss".to_string(), last as f64),
    ]);
    if recon.is_some() {
        let ae = ctx.assets().autoencoder(DType::F32, &dev)?;
        let lr = crate::problems::mini::map_rows(&e.all_pixels(ctx.data), PIXELS, 1000, &|x| {
            frozen.logits(&ae.reconstruct(x)?)
        })?;
        metrics.insert("test_accuracy_reconstructions".to_string(), accuracy(&lr, &e.all_labels(ctx.data)));
    }
    Ok((file, t, metrics))
}

// ---------------------------------------------------------------------------------------------------------------
// Style heads
// ---------------------------------------------------------------------------------------------------------------

/// Ridge regression with an unpenalised intercept on rows `x` `[n, d]`: minimises (1/n)‖Xw + b − y‖² + λ‖w‖².
pub fn ridge(x: &[f64], y: &[f64], d: usize, lambda: f64) -> Result<(Vec<f64>, f64)> {
    let n = y.len();
    let xm: Vec<f64> = (0..d).map(|j| (0..n).map(|i| x[i * d + j]).sum::<f64>() / n as f64).collect();
    let ym = y.iter().sum::<f64>() / n as f64;
    let mut a = vec![0f64; d * d];
    let mut rhs = vec![0f64; d];
    for i in 0..n {
        let r: Vec<f64> = (0..d).map(|j| x[i * d + j] - xm[j]).collect();
        for j in 0..d {
            rhs[j] += r[j] * (y[i] - ym) / n as f64;
            for k in 0..d {
                a[j * d + k] += r[j] * r[k] / n as f64;
            }
        }
    }
    for j in 0..d {
        a[j * d + j] += lambda.max(1e-12);
    }
    let l = crate::numerics::linalg::cholesky(&a, d)
        .ok_or_else(|| Error::numeric("mini style ridge", "normal equations are not positive definite"))?;
    let w = crate::numerics::linalg::chol_solve(&l, d, &rhs);
    let b = ym - w.iter().zip(&xm).map(|(a, b)| a * b).sum::<f64>();
    Ok((w, b))
}

pub(super) fn fit_style(ctx: &Ctx) -> Result<Vec<Output>> {
    let c = &ctx.cfg.style;
    let dev = Device::Cpu;
    let assets = ctx.assets();
    let a = assets.classifier_a(DType::F32, &dev)?;
    let b = assets.classifier_b(DType::F32, &dev)?;
    let attr =
        |s: &Subset| -> Vec<f64> { s.all_pixels(ctx.data).chunks(PIXELS).map(|r| c.attribute.value(r)).collect() };
    let gp = attr(&ctx.splits.p);
    let g_mean = gp.iter().sum::<f64>() / gp.len() as f64;
    let g_std = (gp.iter().map(|g| (g - g_mean).powi(2)).sum::<f64>() / gp.len() as f64).sqrt();
    let z = |g: &[f64]| -> Vec<f64> { g.iter().map(|v| (v - g_mean) / g_std).collect() };
    let ze = z(&attr(&ctx.splits.e));
    let xe = ctx.splits.e.all_pixels(ctx.data);
    let mut out = Vec::new();
    for (k, (clf, sub, file)) in
        [(&a as &dyn Classifier, &ctx.splits.a_r, FILES[4]), (&b as &dyn Classifier, &ctx.splits.b_r, FILES[5])]
            .into_iter()
            .enumerate()
    {
        let phi_hat = |x: &[f32]| -> Result<Vec<f64>> {
            Ok(crate::problems::mini::map_rows(x, PIXELS, 1000, &|t| normalize_features(&clf.features(t)?))?
                .iter()
                .map(|&v| v as f64)
                .collect())
        };
        let mut noise = vec![0f32; sub.len()];
        fill_normal(&mut ctx.rng(NOISE, k as u64), &mut noise);
        let y: Vec<f64> = z(&attr(sub)).iter().zip(&noise).map(|(g, e)| g + c.label_noise * *e as f64).collect();
        let fx = phi_hat(&sub.all_pixels(ctx.data))?;
        let d = crate::problems::mini::models::FEATURES;
        let (w, bias) = ridge(&fx, &y, d, c.ridge)?;
        let predict = |f: &[f64]| -> Vec<f64> {
            f.chunks(d).map(|r| r.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + bias).collect()
        };
        let fe = phi_hat(&xe)?;
        let pe = predict(&fe);
        let pr = predict(&fx);
        let t = HashMap::from([
            ("weight".to_string(), Tensor::from_vec(w.iter().map(|&v| v as f32).collect(), d, &dev)?),
            ("bias".to_string(), Tensor::from_vec(vec![bias as f32], 1, &dev)?),
            ("gold_mean".to_string(), Tensor::from_vec(vec![g_mean as f32], 1, &dev)?),
            ("gold_std".to_string(), Tensor::from_vec(vec![g_std as f32], 1, &dev)?),
        ]);
        let pm = pe.iter().sum::<f64>() / pe.len() as f64;
        let ps = (pe.iter().map(|v| (v - pm).powi(2)).sum::<f64>() / pe.len() as f64).sqrt();
        let metrics = BTreeMap::from([
            ("test_r2_vs_gold".to_string(), r_squared(&pe, &ze)),
            ("train_r2_vs_labels".to_string(), r_squared(&pr, &y)),
            ("train_r2_vs_gold".to_string(), r_squared(&pr, &z(&attr(sub)))),
            ("test_score_mean".to_string(), pm),
            ("test_score_std".to_string(), ps),
            ("gold_mean".to_string(), g_mean),
            ("gold_std".to_string(), g_std),
        ]);
        out.push((file, t, metrics));
    }
    Ok(out)
}
