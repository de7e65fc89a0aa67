//! JPEG compressibility, the black-box reward of the online fine-tuning experiments (rewards.md §6):
//! r = −(size in bytes of the JPEG encoding at quality q)/1000, on the uint8 quantisation of the image.
//!
//! The encoder is the `jpeg-encoder` crate with libjpeg's default quantisation tables scaled by quality, the
//! standard Huffman tables (no optimisation) and 4:2:0 chroma subsampling, as PIL's defaults; the JFIF headers
//! differ from PIL's by a few bytes, so compare sizes within alignbench, not against PIL to the byte.

use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
use serde::{Deserialize, Serialize};

use super::Reward;
use crate::diffusion::Cond;
use crate::{Error, Result};

/// YAML of `jpeg_compressibility`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JpegConfig {
    /// JPEG quality 1..=100 (PIL's `quality`; DDPO uses 95).
    #[serde(default = "q95")]
    pub quality: u8,
}

fn q95() -> u8 {
    95
}

impl Default for JpegConfig {
    fn default() -> Self {
        JpegConfig { quality: q95() }
    }
}

/// The reward on images of a declared shape [c, h, w] (c = 1 or 3), values in [0, 1].
#[derive(Clone, Debug)]
pub struct JpegCompressibility {
    quality: u8,
    shape: [usize; 3],
}

impl JpegCompressibility {
    /// Build for images of shape `[c, h, w]`.
    pub fn new(cfg: &JpegConfig, shape: [usize; 3]) -> Result<Self> {
        if !(1..=100).contains(&cfg.quality) {
            return Err(Error::config(format!("reward.quality: {} is not in 1..=100", cfg.quality)));
        }
        if !(shape[0] == 1 || shape[0] == 3) || shape[1] == 0 || shape[2] == 0 || shape[1] > 65535 || shape[2] > 65535 {
            return Err(Error::config(format!(
                "jpeg_compressibility needs 1- or 3-channel images, got shape {shape:?}"
            )));
        }
        Ok(JpegCompressibility { quality: cfg.quality, shape })
    }

    /// Size in bytes of one image's JPEG encoding (CHW floats in [0, 1]).
    pub fn encoded_size(&self, chw: &[f32]) -> Result<usize> {
        let [c, h, w] = self.shape;
        let to_u8 = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        let mut hwc = vec![0u8; c * h * w];
        for ch in 0..c {
            for p in 0..h * w {
                hwc[p * c + ch] = to_u8(chw[ch * h * w + p]);
            }
        }
        let mut buf = Vec::new();
        let mut enc = Encoder::new(&mut buf, self.quality);
        enc.set_sampling_factor(SamplingFactor::F_2_2);
        let ct = if c == 1 { ColorType::Luma } else { ColorType::Rgb };
        enc.encode(&hwc, w as u16, h as u16, ct).map_err(|e| Error::numeric("jpeg_compressibility", e.to_string()))?;
        Ok(buf.len())
    }
}

impl Reward for JpegCompressibility {
    fn name(&self) -> String {
        format!("jpeg_compressibility(q={})", self.quality)
    }
    fn differentiable(&self) -> bool {
        false
    }
    fn scale(&self) -> String {
        "−kB of the JPEG encoding (higher = more compressible)".into()
    }
    fn input_dim(&self) -> usize {
        self.shape.iter().product()
    }
    fn score(&self, y: &[f32], _cond: &Cond, out: &mut [f64]) -> Result<()> {
        for (row, o) in y.chunks_exact(self.input_dim()).zip(out.iter_mut()) {
            *o = -(self.encoded_size(row)? as f64) / 1000.0;
        }
        Ok(())
    }
    fn score_grad(&self, _y: &[f32], _c: &Cond, _out: &mut [f64], _grad: &mut [f32]) -> Result<()> {
        Err(Error::config("jpeg_compressibility is black-box: it has no gradient"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{fill_normal, Purpose, Streams};

    #[test]
    fn flat_images_compress_better_than_noise_and_decode_size_is_valid() {
        let r = JpegCompressibility::new(&JpegConfig::default(), [3, 32, 32]).unwrap();
        let flat = vec![0.5f32; 3 * 32 * 32];
        let mut noise = vec![0f32; 3 * 32 * 32];
        fill_normal(&mut Streams::new(1).rng(Purpose::Train, 0, 0), &mut noise);
        noise.iter_mut().for_each(|v| *v = 0.5 + 0.25 * *v);
        let mut out = [0f64; 2];
        let y: Vec<f32> = flat.iter().chain(&noise).copied().collect();
        r.score(&y, &Cond::None, &mut out).unwrap();
        assert!(out[0] > out[1], "flat {} vs noise {}", out[0], out[1]);
        assert!(out[0] < 0.0 && out[0] > -2.0, "a flat 32×32 JPEG is a few hundred bytes: {}", out[0]);
        // Deterministic, and the encoding starts with the JPEG SOI marker.
        let mut again = [0f64; 2];
        r.score(&y, &Cond::None, &mut again).unwrap();
        assert_eq!(out, again);
        let gray = JpegCompressibility::new(&JpegConfig { quality: 50 }, [1, 28, 28]).unwrap();
        assert!(gray.encoded_size(&vec![0.0; 784]).unwrap() > 100);
        assert!(!r.differentiable() && r.score_grad(&y, &Cond::None, &mut out, &mut vec![0.0; y.len()]).is_err());
    }

    #[test]
    fn bad_quality_and_shape_are_config_errors() {
        assert!(JpegCompressibility::new(&JpegConfig { quality: 0 }, [3, 8, 8])
            .unwrap_err()
            .to_string()
            .contains("quality"));
        assert!(JpegCompressibility::new(&JpegConfig::default(), [2, 8, 8]).is_err());
    }
}
