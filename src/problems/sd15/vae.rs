//! The decoder half of Stable Diffusion's `AutoencoderKL` (Rombach et al. 2022, §3.1; diffusers key names), written
//! on the differentiable layers of [`super::layers`]: the look-ahead reward r(D(x̂0)) is differentiated through it
//! at every guided step (methods.md §0.3, §0.5).
//!
//! `post_quant_conv` (1×1) → `decoder.conv_in` [4 → 512] → `decoder.mid_block` (resnet, single-head
//! self-attention over all pixels with its own GroupNorm, resnet) → `decoder.up_blocks.{i}` (`layers_per_block + 1`
//! resnets without timestep input; nearest ×2 `upsamplers.0.conv` on all but the last level; channels
//! [512, 512, 256, 128] in SD 1.5) → `decoder.conv_norm_out` → SiLU → `decoder.conv_out` [→ 3]. GroupNorm(32,
//! eps 1e-6) everywhere. The mid-block attention is read in either diffusers layout: `to_q/to_k/to_v/to_out.0`
//! (current) or `query/key/value/proj_attn` (checkpoints saved before diffusers 0.14), linear `[c, c]` or 1×1-conv
//! `[c, c, 1, 1]` weights.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{silu, upsample_nearest2x, Attention, Conv2d, GroupNorm};
use super::unet::ResnetBlock;
use crate::nn::Linear;
use crate::{Error, Result};

/// Dimensions of the `AutoencoderKL` decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    /// Latent channels (4).
    pub latent_channels: usize,
    /// Image channels out (3).
    pub out_channels: usize,
    /// Channels per level, shallow to deep ([128, 256, 512, 512]).
    pub block_out_channels: Vec<usize>,
    /// `layers_per_block` of the autoencoder (2); decoder up blocks have one more resnet.
    pub layers_per_block: usize,
    /// GroupNorm groups (32).
    pub norm_num_groups: usize,
    /// Latent scaling factor s: the diffusion model works on s·z (0.18215).
    pub scaling_factor: f64,
}

impl VaeConfig {
    /// `stable-diffusion-v1-5/stable-diffusion-v1-5` `vae/config.json`.
    pub fn sd15() -> Self {
        Self {
            latent_channels: 4,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
        }
    }

    /// A tiny instance: channels [8, 8, 16] (×4 up-sampling), 1 layer per block, 4 groups.
    pub fn tiny() -> Self {
        Self {
            latent_channels: 4,
            out_channels: 3,
            block_out_channels: vec![8, 8, 16],
            layers_per_block: 1,
            norm_num_groups: 4,
            scaling_factor: 0.18215,
        }
    }

    /// The spatial up-sampling factor latent → image (2^(levels − 1); 8 for SD 1.5).
    pub fn upsample_factor(&self) -> usize {
        1 << (self.block_out_channels.len().saturating_sub(1))
    }

    /// Checks lengths and divisibility.
    pub fn validate(&self) -> Result<()> {
        if self.block_out_channels.is_empty() {
            return Err(Error::config("vae: block_out_channels is empty"));
        }
        if let Some(c) = self.block_out_channels.iter().find(|&&c| c % self.norm_num_groups != 0) {
            return Err(Error::config(format!("vae: {c} channels are not divisible by norm_num_groups")));
        }
        if !(self.scaling_factor > 0.0) {
            return Err(Error::config("vae: scaling_factor must be > 0"));
        }
        Ok(())
    }
}

/// The single-head spatial self-attention of the VAE mid block.
#[derive(Clone, Debug)]
struct MidAttention {
    group_norm: GroupNorm,
    attn: Attention,
}

impl MidAttention {
    fn load(vb: VarBuilder, c: usize, groups: usize) -> Result<Self> {
        let new_layout = vb.contains_tensor("to_q.weight");
        let (q, k, v, o) =
            if new_layout { ("to_q", "to_k", "to_v", "to_out.0") } else { ("query", "key", "value", "proj_attn") };
        let lin = |name: &str| -> Result<Linear> {
            let w = match vb.get((c, c), &format!("{name}.weight")) {
                Ok(w) => w,
                Err(_) => vb.get((c, c, 1, 1), &format!("{name}.weight"))?.reshape((c, c))?,
            };
            Ok(Linear::new(w, Some(vb.get(c, &format!("{name}.bias"))?)))
        };
        Ok(Self {
            group_norm: GroupNorm::load(vb.pp("group_norm"), groups, c, 1e-6)?,
            attn: Attention::new(lin(q)?, lin(k)?, lin(v)?, lin(o)?, 1),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self.group_norm.forward(x)?.reshape((b, c, h * w))?.transpose(1, 2)?;
        let y = self.attn.forward(&t, None)?.transpose(1, 2)?.reshape((b, c, h, w))?;
        Ok((y + x)?)
    }
}

/// `post_quant_conv` + the `AutoencoderKL` decoder.
#[derive(Clone, Debug)]
pub struct VaeDecoder {
    cfg: VaeConfig,
    post_quant_conv: Conv2d,
    conv_in: Conv2d,
    mid: (ResnetBlock, MidAttention, ResnetBlock),
    up: Vec<(Vec<ResnetBlock>, Option<Conv2d>)>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl VaeDecoder {
    /// Loads `post_quant_conv.*` and `decoder.*` under `vb` (the root of `vae/diffusion_pytorch_model.safetensors`;
    /// encoder tensors are not read).
    pub fn load(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        cfg.validate()?;
        let g = cfg.norm_num_groups;
        let eps = 1e-6;
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let d = vb.pp("decoder");
        let top = rev[0];
        let mb = d.pp("mid_block");
        let mid = (
            ResnetBlock::load(mb.pp("resnets").pp(0), top, top, None, g, eps)?,
            MidAttention::load(mb.pp("attentions").pp(0), top, g)?,
            ResnetBlock::load(mb.pp("resnets").pp(1), top, top, None, g, eps)?,
        );
        let mut up = Vec::with_capacity(rev.len());
        let mut c_prev = top;
        for (i, &c) in rev.iter().enumerate() {
            let ub = d.pp("up_blocks").pp(i);
            let resnets = (0..=cfg.layers_per_block)
                .map(|j| ResnetBlock::load(ub.pp("resnets").pp(j), if j == 0 { c_prev } else { c }, c, None, g, eps))
                .collect::<Result<Vec<_>>>()?;
            let sampler = if i + 1 < rev.len() {
                Some(Conv2d::load(ub.pp("upsamplers").pp(0).pp("conv"), c, c, 3, 1, 1)?)
            } else {
                None
            };
            up.push((resnets, sampler));
            c_prev = c;
        }
        let c0 = cfg.block_out_channels[0];
        Ok(Self {
            cfg: cfg.clone(),
            post_quant_conv: Conv2d::load(vb.pp("post_quant_conv"), cfg.latent_channels, cfg.latent_channels, 1, 1, 0)?,
            conv_in: Conv2d::load(d.pp("conv_in"), cfg.latent_channels, top, 3, 1, 1)?,
            mid,
            up,
            conv_norm_out: GroupNorm::load(d.pp("conv_norm_out"), g, c0, eps)?,
            conv_out: Conv2d::load(d.pp("conv_out"), c0, cfg.out_channels, 3, 1, 1)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// Decodes unscaled latents z `[b, latent_channels, h, w]` into images `[b, 3, f·h, f·w]` in the VAE's native
    /// range (≈ [−1, 1]); callers divide diffusion latents by [`VaeConfig::scaling_factor`] first.
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(&self.post_quant_conv.forward(z)?)?;
        h = self.mid.0.forward(&h, None)?;
        h = self.mid.1.forward(&h)?;
        h = self.mid.2.forward(&h, None)?;
        for (resnets, sampler) in &self.up {
            for r in resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(s) = sampler {
                h = s.forward(&upsample_nearest2x(&h)?)?;
            }
        }
        self.conv_out.forward(&silu(&self.conv_norm_out.forward(&h)?)?)
    }
}
