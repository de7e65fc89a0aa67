//! The two CLIP preprocessing paths of rewards.md §0 (CLIP: Radford et al. 2021).
//!
//! - **official** (evaluation, host side): f32 image in [0, 1] → quantise to u8 (round half away from zero, as
//!   `(x·255).round()` of diffusers' `numpy_to_pil`) → resize the shortest side to S with PIL's BICUBIC (a = −0.5,
//!   support 2 scaled by the downsampling factor, i.e. antialiased; separable horizontal-then-vertical passes in
//!   22-bit fixed point with u8 rounding after each pass, as Pillow's `ImagingResample`) → center crop S×S
//!   (torchvision's `round((H − S)/2)` with round-half-even, or HF `CLIPImageProcessor`'s floor) → /255 → CLIP
//!   mean/std normalisation. This is OpenAI `clip.load`'s and HF `CLIPProcessor`'s transform on a PIL image.
//! - **differentiable** (guidance, DAS/DDPO/AlignProp style): tensor [n, 3, H, W] in [0, 1] → bilinear resize to
//!   S×S with `align_corners = false` and **no antialias** (torchvision's tensor default before 0.17, PyTorch
//!   `F.interpolate(mode="bilinear")`) → normalisation. The resize is two interpolation matrices,
//!   out = R_h · img · R_wᵀ, so it is exact and differentiable through matmul. Square inputs are expected (no crop);
//!   a non-square input is squashed to S×S.
//!
//! The two paths give slightly different numbers; `models::clip` tests bound the gap on a tiny CLIP.

use candle_core::{DType, Device, Tensor};

use crate::rng::{Purpose, Streams};
use crate::{Error, Result};

/// CLIP's per-channel normalisation mean (RGB), shared by every CLIP/BLIP model here.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's per-channel normalisation standard deviation (RGB).
#[allow(clippy::excessive_precision)] // the published digits, verbatim
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// How the center crop offset rounds when the size difference is odd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropRounding {
    /// torchvision `center_crop`: `int(round((H − S) / 2))` with Python's round-half-even (OpenAI `clip.load`,
    /// open_clip).
    Torchvision,
    /// HF `CLIPImageProcessor.center_crop`: `(H − S) // 2`.
    Floor,
}

impl CropRounding {
    /// The top (or left) offset of an S-crop of a side of length `len ≥ S`.
    pub fn offset(&self, len: usize, size: usize) -> usize {
        let d = len - size;
        match self {
            CropRounding::Floor => d / 2,
            // d/2 is either an integer or a half: halves round to the even neighbour.
            CropRounding::Torchvision => {
                let lo = d / 2;
                if d % 2 == 1 && lo % 2 == 1 {
                    lo + 1
                } else {
                    lo
                }
            }
        }
    }
}

/// Quantises x ∈ [0, 1] to u8 as round(255·x), clamping to [0, 255]. Fails on NaN (no silent repair).
pub fn quantize_u8(x: f32) -> Result<u8> {
    if x.is_nan() {
        return Err(Error::numeric("preprocess", "NaN pixel in an image to quantise"));
    }
    Ok((x * 255.0).round().clamp(0.0, 255.0) as u8)
}

/// Output size (height, width) of a shortest-side resize to `size`: the short side becomes `size`, the long side
/// `floor(size · long / short)` (torchvision `Resize(int)`, HF `get_resize_output_image_size`).
pub fn shortest_side_dims(h: usize, w: usize, size: usize) -> (usize, usize) {
    if h <= w {
        (size, size * w / h)
    } else {
        (size * h / w, size)
    }
}

/// A separable resampling filter with its support at scale 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    /// Keys cubic with a = −0.5 (PIL BICUBIC), support 2.
    Bicubic,
    /// Triangle (bilinear), support 1.
    Triangle,
}

impl Filter {
    fn support(&self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Triangle => 1.0,
        }
    }

    fn eval(&self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bicubic => {
                let a = -0.5;
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
            Filter::Triangle => (1.0 - x).max(0.0),
        }
    }
}

/// Normalised antialiased resampling weights (Pillow `precompute_coeffs`, also PyTorch's `antialias=True`):
/// for each output index, the first input index and the weights of the inputs from there on.
fn aa_weights(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero; negatives are clamped to 0 right after, so trunc = floor here.
            let xmin = ((center - support + 0.5).trunc().max(0.0)) as usize;
            let xmax = ((center + support + 0.5).trunc() as usize).min(in_size);
            let mut w: Vec<f64> = (xmin..xmax).map(|x| filter.eval((x as f64 - center + 0.5) / filterscale)).collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (xmin, w)
        })
        .collect()
}

/// Pillow's fixed-point precision for 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One Pillow 8-bit resampling pass along the axis of length `in_size` with `stride` between its samples:
/// Σ k·pixel in 22-bit fixed point, rounded (+½) and clamped to u8.
fn pil_pass(src: &[u8], outer: usize, in_size: usize, inner: usize, out_size: usize, filter: Filter) -> Vec<u8> {
    let weights = aa_weights(in_size, out_size, filter);
    let fixed: Vec<(usize, Vec<i64>)> = weights
        .into_iter()
        .map(|(xmin, w)| {
            let one = (1i64 << PRECISION_BITS) as f64;
            let k = w.iter().map(|&v| if v < 0.0 { (-0.5 + v * one) as i64 } else { (0.5 + v * one) as i64 }).collect();
            (xmin, k)
        })
        .collect();
    let mut out = vec![0u8; outer * out_size * inner];
    for o in 0..outer {
        for (xx, (xmin, k)) in fixed.iter().enumerate() {
            for i in 0..inner {
                let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                for (j, &kj) in k.iter().enumerate() {
                    ss += src[(o * in_size + xmin + j) * inner + i] as i64 * kj;
                }
                out[(o * out_size + xx) * inner + i] = (ss >> PRECISION_BITS).clamp(0, 255) as u8;
            }
        }
    }
    out
}

/// PIL `Image.resize((out_w, out_h), BICUBIC)` of a planar u8 image [channels, h, w] (Pillow ≥ 7 semantics,
/// `reducing_gap=None`): horizontal pass, u8 intermediate, vertical pass; a pass whose size is unchanged is skipped.
///
/// # Panics
/// When `img.len() != channels · h · w` (a caller bug; [`official_u8`] checks it and returns an error).
pub fn pil_resize_bicubic(img: &[u8], channels: usize, h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<u8> {
    assert_eq!(img.len(), channels * h * w, "pil_resize_bicubic: buffer does not match [channels, h, w]");
    let mut cur = img.to_vec();
    if out_w != w {
        cur = pil_pass(&cur, channels * h, w, 1, out_w, Filter::Bicubic);
    }
    if out_h != h {
        cur = pil_pass(&cur, channels, h, out_w, out_h, Filter::Bicubic);
    }
    cur
}

/// Center crop `size`×`size` of a planar image [channels, h, w] with h, w ≥ size.
pub fn center_crop<T: Copy>(img: &[T], channels: usize, h: usize, w: usize, size: usize, r: CropRounding) -> Vec<T> {
    let (top, left) = (r.offset(h, size), r.offset(w, size));
    let mut out = Vec::with_capacity(channels * size * size);
    for c in 0..channels {
        for y in top..top + size {
            let row = (c * h + y) * w;
            out.extend_from_slice(&img[row + left..row + left + size]);
        }
    }
    out
}

/// The official CLIP transform of one planar u8 RGB image [3, h, w]: shortest side → `size` (PIL bicubic), center
/// crop, /255, CLIP normalisation. Returns [3, size, size] f32.
pub fn official_u8(img: &[u8], h: usize, w: usize, size: usize, crop: CropRounding) -> Result<Vec<f32>> {
    if img.len() != 3 * h * w || h == 0 || w == 0 || size == 0 {
        return Err(Error::config(format!(
            "preprocess: image buffer of {} bytes does not match [3, {h}, {w}] (or a size is 0)",
            img.len()
        )));
    }
    let (rh, rw) = shortest_side_dims(h, w, size);
    let resized = pil_resize_bicubic(img, 3, h, w, rh, rw);
    let cropped = center_crop(&resized, 3, rh, rw, size, crop);
    let plane = size * size;
    Ok(cropped
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = i / plane;
            (v as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c]
        })
        .collect())
}

/// The official (evaluation) path for a batch [n, 3, H, W] of float images in [0, 1]: quantise to u8, then
/// [`official_u8`]. Runs on the host; returns normalised f32 pixels [n, 3, size, size] on the input's device.
pub fn official(images: &Tensor, size: usize, crop: CropRounding) -> Result<Tensor> {
    let (n, c, h, w) = images.dims4()?;
    if c != 3 {
        return Err(Error::config(format!("preprocess: expected RGB images [n, 3, H, W], got {c} channels")));
    }
    let host = images.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(n * 3 * size * size);
    for chunk in host.chunks(3 * h * w) {
        let bytes = chunk.iter().map(|&x| quantize_u8(x)).collect::<Result<Vec<u8>>>()?;
        out.extend(official_u8(&bytes, h, w, size, crop)?);
    }
    Ok(Tensor::from_vec(out, (n, 3, size, size), images.device())?)
}

/// Bilinear interpolation matrix R [out_size, in_size] with `align_corners = false`, no antialias (PyTorch
/// `upsample_bilinear2d`): source coordinate s = (i + ½)·in/out − ½, clamped at 0; weights 1 − λ and λ on
/// ⌊s⌋ and min(⌊s⌋ + 1, in − 1). Rows sum to 1.
pub fn bilinear_matrix(in_size: usize, out_size: usize) -> Vec<f64> {
    let scale = in_size as f64 / out_size as f64;
    let mut m = vec![0.0; out_size * in_size];
    for i in 0..out_size {
        let s = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(in_size - 1);
        let i1 = (i0 + 1).min(in_size - 1);
        let lambda = s - i0 as f64;
        m[i * in_size + i0] += 1.0 - lambda;
        m[i * in_size + i1] += lambda;
    }
    m
}

/// Antialiased bilinear matrix [out_size, in_size] (PyTorch `antialias=True`, torchvision ≥ 0.17's default): the
/// triangle filter widened by the downsampling factor, weights normalised per row. Equal to [`bilinear_matrix`]
/// when upsampling.
pub fn bilinear_matrix_antialias(in_size: usize, out_size: usize) -> Vec<f64> {
    let mut m = vec![0.0; out_size * in_size];
    for (i, (xmin, w)) in aa_weights(in_size, out_size, Filter::Triangle).into_iter().enumerate() {
        for (j, v) in w.into_iter().enumerate() {
            m[i * in_size + xmin + j] = v;
        }
    }
    m
}

/// (x − mean_c) / std_c per channel of images [n, 3, H, W] with the CLIP constants (differentiable).
pub fn normalize(images: &Tensor) -> Result<Tensor> {
    let dev = images.device();
    let dt = images.dtype();
    let mean = Tensor::new(&CLIP_MEAN, dev)?.to_dtype(dt)?.reshape((1, 3, 1, 1))?;
    let std = Tensor::new(&CLIP_STD, dev)?.to_dtype(dt)?.reshape((1, 3, 1, 1))?;
    Ok(images.broadcast_sub(&mean)?.broadcast_div(&std)?)
}

/// Resizes images [n, c, H, W] to [n, c, size, size] as R_h · img · R_wᵀ with the given row-major matrices
/// (R_h [size, H], R_w [size, W]), in the images' dtype.
pub fn resize_with_matrices(images: &Tensor, r_h: &[f64], r_w: &[f64], size: usize) -> Result<Tensor> {
    let (_, _, h, w) = images.dims4()?;
    let dev = images.device();
    let dt = images.dtype();
    let rh = Tensor::from_vec(r_h.to_vec(), (size, h), dev)?.to_dtype(dt)?;
    let rwt = Tensor::from_vec(r_w.to_vec(), (size, w), dev)?.to_dtype(dt)?.t()?;
    Ok(rh.broadcast_matmul(images)?.broadcast_matmul(&rwt)?)
}

/// The differentiable (guidance) path: images [n, 3, H, W] in [0, 1] (any float dtype, gradients flow) →
/// bilinear resize to `size`×`size` (`align_corners = false`, no antialias) → CLIP normalisation.
pub fn differentiable(images: &Tensor, size: usize) -> Result<Tensor> {
    differentiable_with(images, size, false)
}

/// [`differentiable`] with a choice of antialiasing (`true` matches torchvision ≥ 0.17's tensor default).
pub fn differentiable_with(images: &Tensor, size: usize, antialias: bool) -> Result<Tensor> {
    let (_, c, h, w) = images.dims4()?;
    if c != 3 || size == 0 {
        return Err(Error::config(format!("preprocess: expected RGB images [n, 3, H, W], got {c} channels")));
    }
    let mat = if antialias { bilinear_matrix_antialias } else { bilinear_matrix };
    normalize(&resize_with_matrices(images, &mat(h, size), &mat(w, size), size)?)
}

/// `n` smooth synthetic RGB images [n, 3, h, w] in (0, 1) from the seeded stream `seed`: per channel, an offset
/// plus three low-frequency plane waves (≤ 1.5 cycles per side) with random phases. For parity tests and benchmarks.
pub fn smooth_test_images(n: usize, h: usize, w: usize, seed: u64, device: &Device) -> Result<Tensor> {
    use rand::Rng;
    let mut rng = Streams::new(seed).rng(Purpose::Metric, 0x1A6E, 0);
    let mut v = Vec::with_capacity(n * 3 * h * w);
    for _ in 0..n * 3 {
        let base: f64 = rng.random_range(0.3..0.7);
        let waves: Vec<[f64; 4]> = (0..3)
            .map(|_| {
                [
                    rng.random_range(-1.5..1.5),
                    rng.random_range(-1.5..1.5),
                    rng.random_range(0.0..std::f64::consts::TAU),
                    rng.random_range(0.05..0.12),
                ]
            })
            .collect();
        for y in 0..h {
            for x in 0..w {
                let (u, t) = (x as f64 / w as f64, y as f64 / h as f64);
                let s: f64 = waves
                    .iter()
                    .map(|[fx, fy, ph, a]| a * (std::f64::consts::TAU * (fx * u + fy * t) + ph).cos())
                    .sum();
                v.push((base + s) as f32);
            }
        }
    }
    Ok(Tensor::from_vec(v, (n, 3, h, w), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::check_grad;

    const DEV: Device = Device::Cpu;

    fn matvec(m: &[f64], x: &[f64]) -> Vec<f64> {
        m.chunks(x.len()).map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
    }

    #[test]
    fn bilinear_matrices() {
        for (i, o) in [(7, 7), (32, 16), (16, 40), (224, 224), (512, 224), (5, 3)] {
            for m in [bilinear_matrix(i, o), bilinear_matrix_antialias(i, o)] {
                // Constant stays constant.
                for r in m.chunks(i) {
                    assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                }
                if i == o {
                    for a in 0..i {
                        for b in 0..i {
                            assert_eq!(m[a * i + b], if a == b { 1.0 } else { 0.0 });
                        }
                    }
                }
            }
        }
        // 2× → 1×: each output is the mean of its two inputs (source coordinate 2i + ½).
        let y = matvec(&bilinear_matrix(4, 2), &[1.0, 3.0, 10.0, 20.0]);
        assert_eq!(y, vec![2.0, 15.0]);
        // 4 → 2 antialiased: triangle of half-width 2 centred at 1 and 3: weights (1,3,3,1)/8 inside, clipped at
        // the borders: output 0 sees inputs 0..3 with weights 3,3,1 over 7 (input at −1 is outside).
        let m = bilinear_matrix_antialias(4, 2);
        let expect0 = [3.0 / 7.0, 3.0 / 7.0, 1.0 / 7.0, 0.0];
        for (a, b) in m[..4].iter().zip(expect0) {
            assert!((a - b).abs() < 1e-12, "{m:?}");
        }
        // Upsampling 2 → 4: s = −0.25, 0.25, 0.75, 1.25 → clamp, (¾, ¼), (¼, ¾), clamp to the last.
        let y = matvec(&bilinear_matrix(2, 4), &[0.0, 4.0]);
        assert_eq!(y, vec![0.0, 1.0, 3.0, 4.0]);
        assert_eq!(bilinear_matrix(2, 4), bilinear_matrix_antialias(2, 4));
    }

    #[test]
    fn differentiable_path_values_and_gradient() {
        // A constant image maps to the normalised constant.
        let img = (Tensor::ones((1, 3, 10, 10), DType::F64, &DEV).unwrap() * 0.25).unwrap();
        let out = differentiable(&img, 4).unwrap().to_dtype(DType::F32).unwrap();
        let v = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, x) in v.iter().enumerate() {
            let c = i / 16;
            assert!((x - (0.25 - CLIP_MEAN[c]) / CLIP_STD[c]).abs() < 1e-6);
        }
        // Identity size: only normalisation.
        let img = smooth_test_images(2, 8, 8, 3, &DEV).unwrap();
        let a = differentiable(&img, 8).unwrap();
        let b = normalize(&img).unwrap();
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-6);
        // Linear map: the FD check is exact up to rounding.
        let x = smooth_test_images(2, 12, 9, 4, &DEV).unwrap().to_dtype(DType::F64).unwrap();
        for aa in [false, true] {
            let e = check_grad(|x| differentiable_with(&x.sqr()?, 5, aa), &x, 3).unwrap();
            eprintln!("differentiable preprocessing (antialias {aa}) FD rel err {e:.2e}");
            assert!(e < 1e-8);
        }
    }

    #[test]
    fn crop_rounding() {
        let tv = CropRounding::Torchvision;
        // round(d/2) half-to-even: d = 1 → 0, 3 → 2, 5 → 2, 7 → 4; floor: 0, 1, 2, 3.
        assert_eq!([1, 3, 5, 7, 4].map(|d| tv.offset(224 + d, 224)), [0, 2, 2, 4, 2]);
        assert_eq!([1, 3, 5, 7, 4].map(|d| CropRounding::Floor.offset(224 + d, 224)), [0, 1, 2, 3, 2]);
        let img: Vec<u8> = (0..2 * 3 * 5).map(|v| v as u8).collect(); // [2, 3, 5]
        assert_eq!(
            center_crop(&img, 2, 3, 5, 3, tv),
            vec![1, 2, 3, 6, 7, 8, 11, 12, 13, 16, 17, 18, 21, 22, 23, 26, 27, 28]
        );
        assert_eq!(shortest_side_dims(512, 768, 224), (224, 336));
        assert_eq!(shortest_side_dims(300, 200, 224), (336, 224));
        assert_eq!(shortest_side_dims(100, 333, 224), (224, 745)); // floor(224·3.33)
    }

    #[test]
    fn quantisation() {
        assert_eq!(quantize_u8(0.0).unwrap(), 0);
        assert_eq!(quantize_u8(1.0).unwrap(), 255);
        assert_eq!(quantize_u8(0.5).unwrap(), 128); // 127.5 rounds away from zero
        assert_eq!(quantize_u8(-0.1).unwrap(), 0);
        assert_eq!(quantize_u8(1.2).unwrap(), 255);
        assert!(quantize_u8(f32::NAN).is_err());
    }

    /// PIL goldens derived by hand with Pillow's algorithm (`precompute_coeffs`, 22-bit fixed point):
    /// width 4 → 2 (scale 2, support 4, filter argument (x − center + ½)/2):
    /// output 0, center 1: bicubic(−0.25, 0.25, 0.75, 1.25) = (0.8671875, 0.8671875, 0.2265625, −0.0703125),
    /// sum 1.890625 → on row (0, 100, 200, 255): (100·0.8671875 + 200·0.2265625 − 255·0.0703125)/1.890625
    /// = 60.351 → 60; output 1, center 3: weights reversed → (100·0.2265625 + 200·0.8671875 + 255·0.8671875)
    /// /1.890625 = 220.682 → 221.
    #[test]
    fn pil_bicubic_goldens() {
        let row = [0u8, 100, 200, 255];
        assert_eq!(pil_resize_bicubic(&row, 1, 1, 4, 1, 2), vec![60, 221]);
        // The same along the vertical axis (a 4×1 column) and in a 2D image whose rows are identical.
        assert_eq!(pil_resize_bicubic(&row, 1, 4, 1, 2, 1), vec![60, 221]);
        let img: Vec<u8> = (0..4).flat_map(|_| row).collect(); // 4×4, rows equal
        assert_eq!(pil_resize_bicubic(&img, 1, 4, 4, 2, 2), vec![60, 221, 60, 221]);
        // Upsampling 2 → 4 (scale ½, support 2, no widening), taps clipped at the borders and renormalised:
        // output 0, center 0.25, taps x = 0, 1 at arguments 0.25, 1.25 → (0.8671875, −0.0703125)/0.796875 on
        // (0, 200) → −17.6 → clamped to 0; output 1, center 0.75: arguments −0.25, 0.75 → 200·0.2265625/1.09375
        // = 41.43 → 41; output 2: 158.57 → 159; output 3, center 1.75: arguments −1.25, −0.25 → 217.6 → 218.
        assert_eq!(pil_resize_bicubic(&[0, 200], 1, 1, 2, 1, 4), vec![0, 41, 159, 218]);
        // Overshoot is clamped to u8: a step edge rings below 0 and above 255.
        let step = [0u8, 0, 0, 255, 255, 255];
        let up = pil_resize_bicubic(&step, 1, 1, 6, 1, 12);
        assert_eq!(up.first(), Some(&0));
        assert_eq!(up.last(), Some(&255));
        // Constant images stay constant; equal sizes are the identity.
        let c = vec![173u8; 3 * 37 * 23];
        assert!(pil_resize_bicubic(&c, 3, 37, 23, 16, 10).iter().all(|&v| v == 173));
        let r: Vec<u8> = (0..3 * 5 * 5).map(|v| (v * 7 % 256) as u8).collect();
        assert_eq!(pil_resize_bicubic(&r, 3, 5, 5, 5, 5), r);
    }

    #[test]
    fn official_path_shapes_and_constant() {
        let img = (Tensor::ones((2, 3, 20, 30), DType::F32, &DEV).unwrap() * 0.6).unwrap();
        let out = official(&img, 8, CropRounding::Torchvision).unwrap();
        assert_eq!(out.dims(), &[2, 3, 8, 8]);
        let v = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let q = 153.0 / 255.0; // round(0.6·255) = 153
        for (i, x) in v.iter().enumerate() {
            let c = (i / 64) % 3;
            assert!((x - (q - CLIP_MEAN[c]) / CLIP_STD[c]).abs() < 1e-6);
        }
        let nan = Tensor::new(&[f32::NAN], &DEV).unwrap().broadcast_as((1, 3, 4, 4)).unwrap().contiguous().unwrap();
        assert!(official(&nan, 2, CropRounding::Floor).is_err());
    }
}
