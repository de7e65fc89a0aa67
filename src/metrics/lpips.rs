//! LPIPS (Zhang et al. 2018, v0.1, AlexNet backbone) and its mean pairwise distance as a diversity metric
//! (rewards.md §8).
//!
//! Input x ∈ [−1, 1] (3 channels) → scaling layer (x − shift)/scale → AlexNet `features` with taps after its five
//! ReLUs (64, 192, 384, 256, 256 channels). Per tap l: f̂ = f/(‖f‖₂ over channels + 1e-10) and
//! d_l = spatial mean of Σ_c w_{l,c}(f̂_a − f̂_b)²_c with w_l ≥ 0 from the v0.1 linear heads; LPIPS = Σ_l d_l.
//! The DAS evaluation fed [0, 1] images without rescaling; that quirk is the explicit option
//! [`LpipsInput::ZeroOneCompat`]. [`tap_distance`] is the formula on any list of feature maps, so the same code
//! serves the Fashion-MNIST benchmark's LPIPS-style distance (uniform weights, `lin=False`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};

use crate::rewards::weights::{verify, WeightFile, ALEXNET_TORCHVISION, LPIPS_ALEX_HEADS};
use crate::{Error, Result};

/// LPIPS scaling-layer shift and scale (per RGB channel).
pub const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
/// See [`SHIFT`].
pub const SCALE: [f32; 3] = [0.458, 0.448, 0.450];
/// Channels of the five AlexNet taps.
pub const ALEX_CHANNELS: [usize; 5] = [64, 192, 384, 256, 256];

/// How images in [0, 1] are handed to LPIPS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LpipsInput {
    /// Map [0, 1] → [−1, 1] as LPIPS expects (default).
    #[default]
    Minus1_1,
    /// Feed [0, 1] unchanged, as the DAS evaluation notebook did (compatibility with its numbers only).
    ZeroOneCompat,
}

/// Per-tap distance: Σ_l spatial-mean Σ_c w_{l,c}(f̂_a − f̂_b)², for a batch of pairs.
/// `taps_*[l]` is [n, C_l, H_l, W_l]; `weights[l]` has C_l non-negative entries (`None` = all ones).
pub fn tap_distance(taps_a: &[Tensor], taps_b: &[Tensor], weights: Option<&[Vec<f32>]>) -> Result<Tensor> {
    if taps_a.len() != taps_b.len() || weights.is_some_and(|w| w.len() != taps_a.len()) {
        return Err(Error::config("lpips: the two feature lists and the heads must have the same number of taps"));
    }
    let mut total: Option<Tensor> = None;
    for (l, (fa, fb)) in taps_a.iter().zip(taps_b).enumerate() {
        let unit = |f: &Tensor| -> Result<Tensor> {
            let nrm = f.sqr()?.sum_keepdim(1)?.sqrt()?;
            Ok(f.broadcast_div(&(nrm + 1e-10)?)?)
        };
        let diff = (unit(fa)? - unit(fb)?)?.sqr()?;
        let c = diff.dim(1)?;
        let weighted = match weights {
            Some(w) => {
                if w[l].len() != c {
                    return Err(Error::config(format!(
                        "lpips: head {l} has {} weights, tap has {c} channels",
                        w[l].len()
                    )));
                }
                let wt = Tensor::from_vec(w[l].clone(), (1, c, 1, 1), fa.device())?.to_dtype(fa.dtype())?;
                diff.broadcast_mul(&wt)?
            }
            None => diff,
        };
        let d = weighted.sum(1)?.flatten_from(1)?.mean(D::Minus1)?;
        total = Some(match total {
            Some(t) => (t + d)?,
            None => d,
        });
    }
    total.ok_or_else(|| Error::config("lpips: no taps"))
}

/// The v0.1 linear heads (`lin{l}.model.1.weight`, [1, C_l, 1, 1], non-negative).
pub fn load_heads(path: &Path, file: &WeightFile) -> Result<Vec<Vec<f32>>> {
    verify(path, file)?;
    let t = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| Error::file(path, format!("cannot read the LPIPS heads: {e}")))?;
    let mut heads = Vec::new();
    for l in 0.. {
        let Some(w) = t.get(&format!("lin{l}.model.1.weight")) else { break };
        let (one, c, h, wd) = w.dims4()?;
        if (one, h, wd) != (1, 1, 1) {
            return Err(Error::file(
                path,
                format!("lin{l}.model.1.weight has shape {:?}, expected [1, C, 1, 1]", w.dims()),
            ));
        }
        let v: Vec<f32> = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        if v.iter().any(|x| *x < 0.0 || !x.is_finite()) {
            return Err(Error::file(path, format!("lin{l}: LPIPS head weights must be finite and non-negative")));
        }
        debug_assert_eq!(v.len(), c);
        heads.push(v);
    }
    if heads.is_empty() {
        return Err(Error::file(path, "no `lin{l}.model.1.weight` tensors: not an LPIPS v0.1 head file"));
    }
    Ok(heads)
}

/// torchvision AlexNet `features` (conv layers 0, 3, 6, 8, 10) with taps after the five ReLUs.
pub struct AlexFeatures {
    convs: Vec<(Tensor, Tensor, usize, usize)>, // (weight, bias, stride, padding)
}

impl AlexFeatures {
    const LAYERS: [(usize, usize, usize); 5] = [(0, 4, 2), (3, 1, 2), (6, 1, 1), (8, 1, 1), (10, 1, 1)];

    /// From tensors keyed `features.{0,3,6,8,10}.{weight,bias}` (torchvision names).
    pub fn from_tensors(t: &HashMap<String, Tensor>) -> Result<Self> {
        let mut convs = Vec::new();
        for (idx, stride, pad) in Self::LAYERS {
            let get = |s: &str| {
                t.get(&format!("features.{idx}.{s}"))
                    .cloned()
                    .ok_or_else(|| Error::config(format!("AlexNet weights: missing `features.{idx}.{s}`")))
            };
            convs.push((get("weight")?, get("bias")?, stride, pad));
        }
        for ((w, _, _, _), c) in convs.iter().zip(ALEX_CHANNELS) {
            if w.dim(0)? != c {
                return Err(Error::config(format!("AlexNet weights: a conv has {} filters, expected {c}", w.dim(0)?)));
            }
        }
        Ok(AlexFeatures { convs })
    }

    /// Load a safetensors conversion of torchvision's `alexnet-owt-7be5be79.pth`.
    pub fn load(path: &Path) -> Result<Self> {
        verify(path, &ALEXNET_TORCHVISION)?;
        let t = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::file(path, format!("cannot read AlexNet weights: {e}")))?;
        Self::from_tensors(&t)
    }

    /// The five post-ReLU feature maps of x ([n, 3, H, W], already scaled).
    pub fn taps(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut h = x.clone();
        let mut out = Vec::new();
        for (i, (w, b, stride, pad)) in self.convs.iter().enumerate() {
            if i == 1 || i == 2 {
                h = h.max_pool2d_with_stride(3, 2)?;
            }
            let w = w.to_dtype(h.dtype())?;
            let b = b.to_dtype(h.dtype())?.reshape((1, (), 1, 1))?;
            h = h.conv2d(&w, *pad, *stride, 1, 1)?.broadcast_add(&b)?.relu()?;
            out.push(h.clone());
        }
        Ok(out)
    }
}

/// LPIPS with an AlexNet backbone and v0.1 heads.
pub struct Lpips {
    backbone: AlexFeatures,
    heads: Vec<Vec<f32>>,
    /// Input convention.
    pub input: LpipsInput,
}

impl Lpips {
    /// Assemble from parts (heads must have the AlexNet tap widths).
    pub fn new(backbone: AlexFeatures, heads: Vec<Vec<f32>>, input: LpipsInput) -> Result<Self> {
        if heads.iter().map(Vec::len).collect::<Vec<_>>() != ALEX_CHANNELS {
            return Err(Error::config("lpips: the heads do not match AlexNet's taps (64, 192, 384, 256, 256)"));
        }
        Ok(Lpips { backbone, heads, input })
    }

    /// Load the backbone and heads from a folder holding `alexnet.safetensors` and `lpips_v0.1_alex.safetensors`.
    pub fn load(dir: &Path, input: LpipsInput) -> Result<Self> {
        let backbone = AlexFeatures::load(&dir.join(ALEXNET_TORCHVISION.file))?;
        let heads = load_heads(&dir.join(LPIPS_ALEX_HEADS.file), &LPIPS_ALEX_HEADS)?;
        Self::new(backbone, heads, input)
    }

    fn features(&self, img01: &Tensor) -> Result<Vec<Tensor>> {
        let x = match self.input {
            LpipsInput::Minus1_1 => ((img01 * 2.0)? - 1.0)?,
            LpipsInput::ZeroOneCompat => img01.clone(),
        };
        let dev = x.device();
        let shift = Tensor::from_vec(SHIFT.to_vec(), (1, 3, 1, 1), dev)?.to_dtype(x.dtype())?;
        let scale = Tensor::from_vec(SCALE.to_vec(), (1, 3, 1, 1), dev)?.to_dtype(x.dtype())?;
        self.backbone.taps(&x.broadcast_sub(&shift)?.broadcast_div(&scale)?)
    }

    /// LPIPS between paired images a[i], b[i] ([n, 3, H, W] in [0, 1]).
    pub fn distance(&self, a: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
        let d = tap_distance(&self.features(a)?, &self.features(b)?, Some(&self.heads))?;
        Ok(d.to_dtype(DType::F32)?.to_vec1()?)
    }

    /// Mean LPIPS over all pairs i < j of a set of images (higher = more diverse).
    pub fn mean_pairwise(&self, imgs: &Tensor) -> Result<f64> {
        mean_pairwise_tap_distance(&self.features(imgs)?, Some(&self.heads))
    }
}

/// Mean over pairs i < j of [`tap_distance`] for features of one set of images ([n, C, H, W] per tap).
///
/// Computed through Gram matrices rather than pair by pair: with channel-unit taps scaled by √w,
/// d(i, j) = Σ_l (s_i + s_j − 2⟨f_i, f_j⟩)/(H_l W_l), s_i = ‖f_i‖², so one [n, n] matrix product per tap gives every
/// pair (exact up to rounding; accumulated in f64).
pub fn mean_pairwise_tap_distance(taps: &[Tensor], weights: Option<&[Vec<f32>]>) -> Result<f64> {
    let n = taps.first().ok_or_else(|| Error::config("lpips: no taps"))?.dim(0)?;
    if n < 2 {
        return Err(Error::config("pairwise LPIPS needs at least two images"));
    }
    if weights.is_some_and(|w| w.len() != taps.len()) {
        return Err(Error::config("lpips: the heads and the feature list must have the same number of taps"));
    }
    let mut total = 0f64;
    for (l, f) in taps.iter().enumerate() {
        let f = f.to_dtype(DType::F64)?;
        let (c, h, w) = (f.dim(1)?, f.dim(2)?, f.dim(3)?);
        let nrm = f.sqr()?.sum_keepdim(1)?.sqrt()?;
        let mut u = f.broadcast_div(&(nrm + 1e-10)?)?;
        if let Some(ws) = weights {
            if ws[l].len() != c {
                return Err(Error::config(format!(
                    "lpips: head {l} has {} weights, tap has {c} channels",
                    ws[l].len()
                )));
            }
            if ws[l].iter().any(|&x| x < 0.0) {
                return Err(Error::config(format!("lpips: head {l} has a negative weight")));
            }
            let sq: Vec<f64> = ws[l].iter().map(|&x| (x as f64).sqrt()).collect();
            u = u.broadcast_mul(&Tensor::from_vec(sq, (1, c, 1, 1), f.device())?)?;
        }
        let flat = u.reshape((n, c * h * w))?;
        let gram: Vec<Vec<f64>> = flat.matmul(&flat.t()?)?.to_vec2()?;
        let mut s = 0f64;
        for i in 0..n {
            for j in i + 1..n {
                s += gram[i][i] + gram[j][j] - 2.0 * gram[i][j];
            }
        }
        total += s / (h * w) as f64;
    }
    Ok(total / (n * (n - 1) / 2) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{fill_normal, Purpose, Streams};
    use std::path::PathBuf;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut v = vec![0f32; shape.iter().product()];
        fill_normal(&mut Streams::new(seed).rng(Purpose::Train, 0, 0), &mut v);
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn formula_on_synthetic_feature_maps() {
        let fa = vec![randn(&[2, 3, 2, 2], 1), randn(&[2, 2, 1, 3], 2)];
        let fb = vec![randn(&[2, 3, 2, 2], 3), randn(&[2, 2, 1, 3], 4)];
        let w = vec![vec![0.5, 1.0, 2.0], vec![0.25, 3.0]];
        let got: Vec<f32> = tap_distance(&fa, &fb, Some(&w)).unwrap().to_vec1().unwrap();
        // By hand.
        for i in 0..2 {
            let mut want = 0f64;
            for l in 0..2 {
                let (a, b) = (fa[l].get(i).unwrap(), fb[l].get(i).unwrap());
                let (c, h, wd) = a.dims3().unwrap();
                let av: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
                let bv: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
                let mut sum = 0f64;
                for p in 0..h * wd {
                    let na = (0..c).map(|k| (av[k * h * wd + p] as f64).powi(2)).sum::<f64>().sqrt() + 1e-10;
                    let nb = (0..c).map(|k| (bv[k * h * wd + p] as f64).powi(2)).sum::<f64>().sqrt() + 1e-10;
                    for k in 0..c {
                        sum +=
                            w[l][k] as f64 * (av[k * h * wd + p] as f64 / na - bv[k * h * wd + p] as f64 / nb).powi(2);
                    }
                }
                want += sum / (h * wd) as f64;
            }
            assert!((got[i] as f64 - want).abs() < 1e-5, "{} vs {want}", got[i]);
        }
        // Identical features: distance 0; non-negative always.
        let z: Vec<f32> = tap_distance(&fa, &fa, Some(&w)).unwrap().to_vec1().unwrap();
        assert!(z.iter().all(|x| x.abs() < 1e-7));
        assert!(got.iter().all(|x| *x >= 0.0));
    }

    #[test]
    fn pairwise_mean_equals_explicit_pairs() {
        let taps = vec![randn(&[5, 3, 2, 2], 5), randn(&[5, 4, 3, 1], 6)];
        let heads = vec![vec![0.5, 0.0, 2.0], vec![1.0, 0.25, 0.0, 3.0]];
        for w in [None, Some(heads.as_slice())] {
            let m = mean_pairwise_tap_distance(&taps, w).unwrap();
            let mut s = 0f64;
            for i in 0..5 {
                for j in i + 1..5 {
                    let a: Vec<Tensor> = taps.iter().map(|t| t.narrow(0, i, 1).unwrap()).collect();
                    let b: Vec<Tensor> = taps.iter().map(|t| t.narrow(0, j, 1).unwrap()).collect();
                    s += tap_distance(&a, &b, w).unwrap().to_vec1::<f32>().unwrap()[0] as f64;
                }
            }
            assert!((m - s / 10.0).abs() < 1e-5 * m.abs().max(1.0), "{m} vs {}", s / 10.0);
        }
    }

    fn random_alexnet() -> AlexFeatures {
        let shapes = [
            (0, [64, 3, 11, 11]),
            (3, [192, 64, 5, 5]),
            (6, [384, 192, 3, 3]),
            (8, [256, 384, 3, 3]),
            (10, [256, 256, 3, 3]),
        ];
        let mut t = HashMap::new();
        for (k, (idx, s)) in shapes.iter().enumerate() {
            let fan_in = (s[1] * s[2] * s[3]) as f64;
            let w = (randn(s, 10 + k as u64) * (2.0 / fan_in).sqrt()).unwrap();
            t.insert(format!("features.{idx}.weight"), w);
            t.insert(format!("features.{idx}.bias"), (randn(&[s[0]], 20 + k as u64) * 0.01).unwrap());
        }
        AlexFeatures::from_tensors(&t).unwrap()
    }

    #[test]
    fn alexnet_tap_shapes_and_lpips_properties_with_real_heads() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/lpips");
        let heads_path = dir.join("lpips_v0.1_alex.safetensors");
        if !heads_path.exists() {
            crate::testing::missing("../shared/data/lpips is absent (the LPIPS heads are not on this machine)");
            return;
        }
        let heads = load_heads(&heads_path, &LPIPS_ALEX_HEADS).unwrap();
        assert_eq!(heads.iter().map(Vec::len).collect::<Vec<_>>(), ALEX_CHANNELS);
        assert!(heads.iter().flatten().all(|&w| w >= 0.0));
        let lp = Lpips::new(random_alexnet(), heads, LpipsInput::Minus1_1).unwrap();
        // 64×64 → taps at 15×15, 7×7, 3×3, 3×3, 3×3 (torchvision's AlexNet arithmetic).
        let imgs = randn(&[3, 3, 64, 64], 30).tanh().unwrap().affine(0.5, 0.5).unwrap();
        let taps = lp.features(&imgs).unwrap();
        let dims: Vec<_> = taps.iter().map(|t| t.dims().to_vec()).collect();
        assert_eq!(
            dims,
            vec![vec![3, 64, 15, 15], vec![3, 192, 7, 7], vec![3, 384, 3, 3], vec![3, 256, 3, 3], vec![3, 256, 3, 3]]
        );
        let a = imgs.narrow(0, 0, 2).unwrap();
        let b = imgs.narrow(0, 1, 2).unwrap();
        let d = lp.distance(&a, &b).unwrap();
        assert!(d.iter().all(|x| *x > 0.0 && x.is_finite()), "{d:?}");
        let same = lp.distance(&a, &a).unwrap();
        assert!(same.iter().all(|x| x.abs() < 1e-6), "{same:?}");
        let sym = lp.distance(&b, &a).unwrap();
        assert!(d.iter().zip(&sym).all(|(x, y)| (x - y).abs() < 1e-5));
        assert!(lp.mean_pairwise(&imgs).unwrap() > 0.0);
    }

    #[test]
    fn heads_file_without_lin_keys_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        let mut m = HashMap::new();
        m.insert("other".to_string(), Tensor::zeros((1, 2, 1, 1), DType::F32, &Device::Cpu).unwrap());
        candle_core::safetensors::save(&m, &p).unwrap();
        assert!(load_heads(&p, &LPIPS_ALEX_HEADS).unwrap_err().to_string().contains("not an LPIPS v0.1 head file"));
    }
}
