//! FMNIST-align: the project's CPU-scale real-data benchmark (mini-benchmark.md): Fashion-MNIST data and splits
//! (§2), the autoencoder, class-conditional latent ε-MLP, classifiers and style heads (§3), their training
//! (`alignbench train mini`, §9), and the adapters that let the samplers run on them ([`MiniDecoder`],
//! [`MiniDenoiser`]).

pub mod assets;
pub mod cell;
pub mod check;
pub mod data;
pub mod finetune;
pub mod models;
pub mod rewards;
pub mod sir;
pub mod spec;
pub mod train;

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

pub use assets::{Manifest, MiniAssets};
pub use data::{FashionMnist, Splits};
pub use models::{Autoencoder, Classifier, ClassifierA, ClassifierB, EpsMlp, StyleHead, LATENT, NULL_CLASS};

use crate::diffusion::{rows, to_host, Cond, Cotangent, Decoder, Denoiser};
use crate::{Error, Result};

/// `f` applied to the rows `[n, dim]` of `x` in chunks of `chunk` rows (CPU), host results concatenated: how the
/// FMNIST-align nets are evaluated on whole datasets and sample sets with bounded memory.
pub fn map_rows(x: &[f32], dim: usize, chunk: usize, f: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(x.len());
    for c in x.chunks(chunk.max(1) * dim) {
        out.extend(to_host(&f(&Tensor::from_slice(c, (c.len() / dim, dim), &Device::Cpu)?)?)?);
    }
    Ok(out)
}

/// The autoencoder's decoder as the samplers' [`Decoder`]: standardised latent `[n, 16]` → image `[n, 784]` in
/// [0, 1]. The VJP uses candle's autograd (one forward, one backward).
#[derive(Clone, Debug)]
pub struct MiniDecoder {
    ae: Autoencoder,
    dtype: DType,
    dev: Device,
}

impl MiniDecoder {
    /// Wrap an autoencoder whose weights are of `dtype` on `dev`.
    pub fn new(ae: Autoencoder, dtype: DType, dev: Device) -> Self {
        MiniDecoder { ae, dtype, dev }
    }
    /// Load `ae.safetensors` from an assets folder (default `assets/mini`), verified against the manifest.
    pub fn load(dir: Option<&Path>, dev: &Device) -> Result<Self> {
        let a = MiniAssets::open(dir)?;
        Ok(Self::new(a.autoencoder(DType::F32, dev)?, DType::F32, dev.clone()))
    }
    /// The wrapped autoencoder.
    pub fn autoencoder(&self) -> &Autoencoder {
        &self.ae
    }
    fn upload(&self, x: &[f32], dim: usize) -> Result<Tensor> {
        let n = rows("mini decoder", x.len(), dim)?;
        Ok(Tensor::from_slice(x, (n, dim), &self.dev)?.to_dtype(self.dtype)?)
    }
}

impl Decoder for MiniDecoder {
    fn out_dim(&self, _in_dim: usize) -> usize {
        data::PIXELS
    }
    fn decode(&self, x: &[f32], out: &mut Vec<f32>) -> Result<()> {
        let y = self.ae.decode(&self.upload(x, LATENT)?)?;
        *out = to_host(&y)?;
        Ok(())
    }
    fn vjp(&self, x: &[f32], v: &[f32], out: &mut [f32]) -> Result<()> {
        let xv = Var::from_tensor(&self.upload(x, LATENT)?)?;
        let y = self.ae.decode(xv.as_tensor())?;
        let v = self.upload(v, data::PIXELS)?;
        let g = (y * v)?.sum_all()?.backward()?;
        let gx =
            g.get(xv.as_tensor()).ok_or_else(|| Error::numeric("mini decoder", "no gradient w.r.t. the latent"))?;
        out.copy_from_slice(&to_host(gx)?);
        Ok(())
    }
}

/// The ε-MLP as the samplers' [`Denoiser`], with classifier-free guidance (methods.md §0.3):
/// ε̂ = ε_u + w·(ε_c − ε_u), ε_u = ε_θ(x, t, ∅), ε_c = ε_θ(x, t, c).
///
/// w = 1 is the plain conditional model and w = 0 the unconditional one (one row per evaluation each); any other w
/// evaluates both rows in one batch. [`Cond::None`] is the unconditional model ε_θ(x, t, ∅) whatever w.
#[derive(Clone, Debug)]
pub struct MiniDenoiser {
    net: EpsMlp,
    guidance_scale: f64,
    dtype: DType,
    dev: Device,
}

impl MiniDenoiser {
    /// Wrap an ε-MLP whose weights are of `dtype` on `dev`, with guidance scale `w`.
    pub fn new(net: EpsMlp, guidance_scale: f64, dtype: DType, dev: Device) -> Self {
        MiniDenoiser { net, guidance_scale, dtype, dev }
    }
    /// Load the EMA weights `ddpm.safetensors` (default folder `assets/mini`), verified against the manifest.
    pub fn load(dir: Option<&Path>, guidance_scale: f64, dev: &Device) -> Result<Self> {
        let a = MiniAssets::open(dir)?;
        Ok(Self::new(a.eps_mlp(DType::F32, dev)?, guidance_scale, DType::F32, dev.clone()))
    }
    /// The guidance scale w.
    pub fn guidance_scale(&self) -> f64 {
        self.guidance_scale
    }
    /// The wrapped network.
    pub fn net(&self) -> &EpsMlp {
        &self.net
    }
    fn single_pass(&self) -> bool {
        self.guidance_scale == 1.0 || self.guidance_scale == 0.0
    }

    /// ε̂ as a tensor `[n, 16]` for a latent tensor `x` (differentiable w.r.t. `x`).
    pub fn eps_tensor(&self, x: &Tensor, t: usize, cond: &Cond) -> Result<Tensor> {
        let n = x.dim(0)?;
        let labels: Vec<u32> = match cond {
            Cond::None => vec![NULL_CLASS as u32; n],
            Cond::Labels(l) => {
                if l.len() != n {
                    return Err(Error::config(format!("mini denoiser: {} labels for {n} rows", l.len())));
                }
                if let Some(&c) = l.iter().find(|&&c| c >= NULL_CLASS) {
                    return Err(Error::config(format!("mini denoiser: class {c} outside 0..9")));
                }
                l.iter().map(|&c| c as u32).collect()
            }
        };
        let w = self.guidance_scale;
        if matches!(cond, Cond::None) || w == 0.0 {
            return self.net.forward_t(x, &vec![t; n], &vec![NULL_CLASS as u32; n]);
        }
        if self.single_pass() {
            return self.net.forward_t(x, &vec![t; n], &labels);
        }
        let xx = Tensor::cat(&[x, x], 0)?;
        let mut ll = labels;
        ll.extend(std::iter::repeat_n(NULL_CLASS as u32, n));
        let e = self.net.forward_t(&xx, &vec![t; 2 * n], &ll)?;
        let (ec, eu) = (e.narrow(0, 0, n)?, e.narrow(0, n, n)?);
        Ok((&eu + ((ec - &eu)? * w)?)?)
    }

    fn upload(&self, x: &[f32]) -> Result<Tensor> {
        let n = rows("mini denoiser", x.len(), LATENT)?;
        Ok(Tensor::from_slice(x, (n, LATENT), &self.dev)?.to_dtype(self.dtype)?)
    }
}

impl Denoiser for MiniDenoiser {
    fn dim(&self) -> usize {
        LATENT
    }
    fn eps(&self, x: &[f32], t: usize, cond: &Cond, eps: &mut [f32]) -> Result<()> {
        let e = self.eps_tensor(&self.upload(x)?, t, cond)?;
        eps.copy_from_slice(&to_host(&e)?);
        Ok(())
    }
    fn eps_vjp(
        &self,
        x: &[f32],
        t: usize,
        cond: &Cond,
        eps: &mut [f32],
        cot: &mut Cotangent<'_>,
        vjp: &mut [f32],
    ) -> Result<()> {
        let xv = Var::from_tensor(&self.upload(x)?)?;
        let e = self.eps_tensor(xv.as_tensor(), t, cond)?;
        eps.copy_from_slice(&to_host(&e)?);
        let mut u = vec![0f32; eps.len()];
        cot(eps, &mut u)?;
        let u = Tensor::from_vec(u, e.shape(), &self.dev)?.to_dtype(self.dtype)?;
        let g = (e * u)?.sum_all()?.backward()?;
        let gx = g.get(xv.as_tensor()).ok_or_else(|| Error::numeric("mini denoiser", "no gradient w.r.t. x"))?;
        vjp.copy_from_slice(&to_host(gx)?);
        Ok(())
    }
    fn rows_per_eval(&self) -> u64 {
        if self.single_pass() {
            1
        } else {
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problems::mini::models::init_model;
    use crate::rng::{fill_normal, Purpose, Streams};

    fn normals(n: usize, step: u64) -> Vec<f32> {
        let mut v = vec![0f32; n];
        fill_normal(&mut Streams::new(1).rng(Purpose::Train, 90, step), &mut v);
        v
    }

    /// Directional derivative check of a host VJP in f64 weights with f32 I/O.
    fn rel_err(f: &dyn Fn(&[f32]) -> Vec<f32>, vjp: &[f32], x: &[f32], v: &[f32], d: &[f32]) -> f64 {
        let h = 1e-2f32;
        let xp: Vec<f32> = x.iter().zip(d).map(|(a, b)| a + h * b).collect();
        let xm: Vec<f32> = x.iter().zip(d).map(|(a, b)| a - h * b).collect();
        let (fp, fm) = (f(&xp), f(&xm));
        let num: f64 = fp.iter().zip(&fm).zip(v).map(|((a, b), w)| (a - b) as f64 / (2.0 * h as f64) * *w as f64).sum();
        let ana: f64 = vjp.iter().zip(d).map(|(a, b)| *a as f64 * *b as f64).sum();
        (num - ana).abs() / num.abs().max(ana.abs()).max(1e-6)
    }

    #[test]
    fn decoder_vjp_matches_finite_differences() {
        let (ae, _) = init_model(4, 1, DType::F64, &Device::Cpu, &[], Autoencoder::new).unwrap();
        let dec = MiniDecoder::new(ae, DType::F64, Device::Cpu);
        let n = 3;
        let (x, v, d) = (normals(n * LATENT, 0), normals(n * data::PIXELS, 1), normals(n * LATENT, 2));
        let mut g = vec![0f32; n * LATENT];
        dec.vjp(&x, &v, &mut g).unwrap();
        let f = |z: &[f32]| {
            let mut o = Vec::new();
            dec.decode(z, &mut o).unwrap();
            o
        };
        assert_eq!(f(&x).len(), n * data::PIXELS);
        let e = rel_err(&f, &g, &x, &v, &d);
        assert!(e < 1e-3, "decoder VJP rel err {e}");
    }

    #[test]
    fn denoiser_cfg_and_vjp() {
        let (net, _) = init_model(4, 1, DType::F64, &Device::Cpu, &[], EpsMlp::new).unwrap();
        let n = 4;
        let x = normals(n * LATENT, 3);
        let cond = Cond::Labels(vec![0, 3, 9, 5]);
        let run = |w: f64, c: &Cond| {
            let m = MiniDenoiser::new(net.clone(), w, DType::F64, Device::Cpu);
            let mut e = vec![0f32; n * LATENT];
            m.eps(&x, 400, c, &mut e).unwrap();
            e
        };
        let (ec, eu, e3) = (run(1.0, &cond), run(0.0, &cond), run(3.0, &cond));
        assert_eq!(eu, run(2.0, &Cond::None));
        for i in 0..n * LATENT {
            let want = eu[i] + 3.0 * (ec[i] - eu[i]);
            assert!((e3[i] - want).abs() < 1e-5, "{i}: {} vs {want}", e3[i]);
        }
        assert_eq!(MiniDenoiser::new(net.clone(), 3.0, DType::F64, Device::Cpu).rows_per_eval(), 2);
        assert_eq!(MiniDenoiser::new(net.clone(), 1.0, DType::F64, Device::Cpu).rows_per_eval(), 1);
        for w in [1.0, 3.0] {
            let m = MiniDenoiser::new(net.clone(), w, DType::F64, Device::Cpu);
            let v = normals(n * LATENT, 4);
            let d = normals(n * LATENT, 5);
            let mut eps = vec![0f32; n * LATENT];
            let mut g = vec![0f32; n * LATENT];
            let vv = v.clone();
            m.eps_vjp(
                &x,
                400,
                &cond,
                &mut eps,
                &mut |_e, u| {
                    u.copy_from_slice(&vv);
                    Ok(())
                },
                &mut g,
            )
            .unwrap();
            let f = |z: &[f32]| {
                let mut e = vec![0f32; n * LATENT];
                m.eps(z, 400, &cond, &mut e).unwrap();
                e
            };
            assert_eq!(eps, f(&x));
            let e = rel_err(&f, &g, &x, &v, &d);
            assert!(e < 1e-3, "w = {w}: denoiser VJP rel err {e}");
        }
    }

    /// The committed weights (`assets/mini`) give the recorded outputs on fixed inputs: decoded latents, ε̂ with and
    /// without guidance, classifier logits and style scores of the decoded images. Skips when the assets are absent.
    #[test]
    fn committed_weights_reproduce_recorded_outputs() {
        let Ok(assets) = MiniAssets::open(None) else {
            crate::testing::missing(format!("no assets/mini/manifest.json ({})", assets::TRAIN_HINT));
            return;
        };
        let dev = Device::Cpu;
        let dec = MiniDecoder::new(assets.autoencoder(DType::F32, &dev).unwrap(), DType::F32, dev.clone());
        let den = MiniDenoiser::new(assets.eps_mlp(DType::F32, &dev).unwrap(), 3.0, DType::F32, dev.clone());
        let (a, b) = (assets.classifier_a(DType::F32, &dev).unwrap(), assets.classifier_b(DType::F32, &dev).unwrap());
        let (sa, sb) = (assets.style_a(DType::F32, &dev).unwrap(), assets.style_b(DType::F32, &dev).unwrap());
        let n = 4;
        let z = normals(n * LATENT, 6);
        let mut img = Vec::new();
        dec.decode(&z, &mut img).unwrap();
        let mut eps = vec![0f32; n * LATENT];
        den.eps(&z, 500, &Cond::Labels(vec![0, 1, 5, 9]), &mut eps).unwrap();
        let x = Tensor::from_vec(img.clone(), (n, data::PIXELS), &dev).unwrap();
        let sum = |t: Tensor| t.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let got = [
            img.iter().map(|&v| v as f64).sum::<f64>(),
            eps.iter().map(|&v| v.abs() as f64).sum::<f64>(),
            sum(a.logits(&x).unwrap().abs().unwrap()),
            sum(b.logits(&x).unwrap().abs().unwrap()),
            sum(sa.score(&a, &x).unwrap()),
            sum(sb.score(&b, &x).unwrap()),
            sum(sa.gold_ink(&x).unwrap()),
        ];
        let want: [f64; 7] = [1_029.309_068, 80.741_967, 122.209_846, 144.229_065, 1.628_524, 1.864_320, 1.338_506];
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "checksum {k}: {g} vs recorded {w} (all now: {got:?})");
        }
    }
}
