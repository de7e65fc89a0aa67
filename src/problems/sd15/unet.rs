//! The Stable Diffusion ε-network: diffusers' `UNet2DConditionModel` (Rombach et al. 2022, "High-Resolution Image
//! Synthesis with Latent Diffusion Models", §3.3 and App. E), written on the differentiable layers of
//! [`super::layers`] so that (∂ε̂/∂x)ᵀu — the VJP every guided sampler needs (methods.md §0.5) — is exact.
//!
//! Architecture (SD 1.5 values in brackets, all configurable so a tiny instance with the same key structure exists):
//! sinusoidal timestep features [320, cos first] → `time_embedding.linear_1` → SiLU → `linear_2` [1280];
//! `conv_in` [4 → 320]; down blocks `down_blocks.{i}` [CrossAttnDownBlock2D ×3, DownBlock2D] of
//! `layers_per_block` [2] `ResnetBlock2D`s (each followed by a `Transformer2DModel` in cross-attention blocks) and
//! a stride-2 `downsamplers.0.conv` on every level but the last; `mid_block` (resnet, transformer, resnet); up blocks
//! [UpBlock2D, CrossAttnUpBlock2D ×3] of `layers_per_block + 1` resnets that consume the down path's skip
//! activations (channel concatenation) and a nearest ×2 `upsamplers.0.conv`; `conv_norm_out` (GroupNorm) → SiLU →
//! `conv_out`.
//!
//! `ResnetBlock2D`: h = conv1(SiLU(norm1(x))) + time_emb_proj(SiLU(temb)); h = conv2(SiLU(norm2(h)));
//! out = shortcut(x) + h, GroupNorm(32, eps 1e-5). `Transformer2DModel`: GroupNorm(32, eps 1e-6) → `proj_in`
//! (1×1 conv in SD 1.5, linear with `use_linear_projection`) → `transformer_blocks.{j}` → `proj_out` → + input.
//! `BasicTransformerBlock`: x += attn1(norm1(x)); x += attn2(norm2(x), text); x += ff(norm3(x)), LayerNorm eps
//! 1e-5, q/k/v without bias, feed-forward GEGLU: `ff.net.0.proj` [d → 8d], a·GELU(gate), `ff.net.2` [4d → d].
//! diffusers' `attention_head_dim: 8` of SD 1.5 is the number of heads (a known naming quirk); heads per level here.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{silu, upsample_nearest2x, Attention, Conv2d, GroupNorm, LayerNorm};
use crate::nn::{gelu, Linear};
use crate::{Error, Result};

/// Dimensions of a `UNet2DConditionModel`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetConfig {
    /// Latent channels in (4).
    pub in_channels: usize,
    /// ε channels out (4).
    pub out_channels: usize,
    /// Channels per level ([320, 640, 1280, 1280]).
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (2); up blocks have one more.
    pub layers_per_block: usize,
    /// Whether each down level is a cross-attention block ([true, true, true, false]); up levels mirror it.
    pub cross_attention: Vec<bool>,
    /// Attention heads per level ([8, 8, 8, 8]).
    pub heads: Vec<usize>,
    /// Transformer blocks per `Transformer2DModel` (1).
    pub transformer_layers: usize,
    /// Width of the text embeddings (768).
    pub cross_attention_dim: usize,
    /// GroupNorm groups (32).
    pub norm_num_groups: usize,
    /// GroupNorm eps of resnets and `conv_norm_out` (1e-5).
    pub norm_eps: f64,
    /// `proj_in`/`proj_out` as linear layers (false in SD 1.5: 1×1 convolutions).
    pub use_linear_projection: bool,
    /// Timestep features as [cos, sin] (true) or [sin, cos].
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the timestep features (0).
    pub freq_shift: f64,
}

impl UNetConfig {
    /// `stable-diffusion-v1-5/stable-diffusion-v1-5` `unet/config.json`.
    pub fn sd15() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            cross_attention: vec![true, true, true, false],
            heads: vec![8; 4],
            transformer_layers: 1,
            cross_attention_dim: 768,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            use_linear_projection: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
        }
    }

    /// A tiny instance with SD 1.5's block structure (cross-attention on all levels but the last, 2 resnets per
    /// down block, 1×1-conv projections): channels [8, 16, 16], 4 groups, 2 heads, text width `context_dim`.
    pub fn tiny(context_dim: usize) -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![8, 16, 16],
            layers_per_block: 2,
            cross_attention: vec![true, true, false],
            heads: vec![2; 3],
            transformer_layers: 1,
            cross_attention_dim: context_dim,
            norm_num_groups: 4,
            norm_eps: 1e-5,
            use_linear_projection: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
        }
    }

    /// Checks lengths and divisibility; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::config("unet: block_out_channels is empty"));
        }
        if self.cross_attention.len() != n || self.heads.len() != n {
            return Err(Error::config(format!(
                "unet: cross_attention ({}) and heads ({}) need one entry per level ({n})",
                self.cross_attention.len(),
                self.heads.len()
            )));
        }
        for (i, (&c, &h)) in self.block_out_channels.iter().zip(&self.heads).enumerate() {
            if c % self.norm_num_groups != 0 {
                return Err(Error::config(format!(
                    "unet: level {i} has {c} channels, not divisible by norm_num_groups"
                )));
            }
            if self.cross_attention[i] && (h == 0 || c % h != 0) {
                return Err(Error::config(format!("unet: level {i} has {c} channels, not divisible by {h} heads")));
            }
        }
        if self.block_out_channels[0] % 2 != 0 {
            return Err(Error::config("unet: block_out_channels[0] must be even (sin/cos timestep features)"));
        }
        Ok(())
    }

    /// The spatial down-sampling factor of the latent (2^(levels − 1)): latents must be divisible by it.
    pub fn downsample_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// diffusers `ResnetBlock2D` (optionally with a timestep projection).
#[derive(Clone, Debug)]
pub(crate) struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    pub(crate) fn load(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        temb: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::load(vb.pp("norm1"), groups, c_in, eps)?,
            conv1: Conv2d::load(vb.pp("conv1"), c_in, c_out, 3, 1, 1)?,
            time_emb_proj: match temb {
                Some(t) => Some(Linear::load(vb.pp("time_emb_proj"), t, c_out, true)?),
                None => None,
            },
            norm2: GroupNorm::load(vb.pp("norm2"), groups, c_out, eps)?,
            conv2: Conv2d::load(vb.pp("conv2"), c_out, c_out, 3, 1, 1)?,
            conv_shortcut: if c_in != c_out {
                Some(Conv2d::load(vb.pp("conv_shortcut"), c_in, c_out, 1, 1, 0)?)
            } else {
                None
            },
        })
    }

    /// `temb_act` is SiLU(temb) `[b, temb]` (shared by every resnet).
    pub(crate) fn forward(&self, x: &Tensor, temb_act: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward(&silu(&self.norm1.forward(x)?)?)?;
        if let (Some(p), Some(t)) = (&self.time_emb_proj, temb_act) {
            let (b, c) = (h.dim(0)?, h.dim(1)?);
            h = h.broadcast_add(&p.forward(t)?.reshape((b, c, 1, 1))?)?;
        }
        let h = self.conv2.forward(&silu(&self.norm2.forward(&h)?)?)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        Ok((skip + h)?)
    }
}

/// diffusers `BasicTransformerBlock` (self-attention, cross-attention, GEGLU feed-forward; pre-LayerNorm).
#[derive(Clone, Debug)]
struct TransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff_proj: Linear,
    ff_out: Linear,
}

impl TransformerBlock {
    fn load(vb: VarBuilder, dim: usize, heads: usize, context_dim: usize) -> Result<Self> {
        let hd = dim / heads;
        Ok(Self {
            norm1: LayerNorm::load(vb.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::load(vb.pp("attn1"), dim, dim, heads, hd, false)?,
            norm2: LayerNorm::load(vb.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::load(vb.pp("attn2"), dim, context_dim, heads, hd, false)?,
            norm3: LayerNorm::load(vb.pp("norm3"), dim, 1e-5)?,
            ff_proj: Linear::load(vb.pp("ff").pp("net").pp(0).pp("proj"), dim, 8 * dim, true)?,
            ff_out: Linear::load(vb.pp("ff").pp("net").pp(2), 4 * dim, dim, true)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = (x + self.attn1.forward(&self.norm1.forward(x)?, None)?)?;
        let x = (&x + self.attn2.forward(&self.norm2.forward(&x)?, Some(context))?)?;
        // GEGLU (Shazeer 2020): the projection's first half times GELU of its second half.
        let p = self.ff_proj.forward(&self.norm3.forward(&x)?)?;
        let half = p.dim(candle_core::D::Minus1)? / 2;
        let a = p.narrow(candle_core::D::Minus1, 0, half)?;
        let gate = p.narrow(candle_core::D::Minus1, half, half)?;
        let ff = self.ff_out.forward(&(a * gelu(&gate)?)?)?;
        Ok((x + ff)?)
    }
}

/// 1×1 convolution or linear projection of a `Transformer2DModel`.
#[derive(Clone, Debug)]
enum Proj {
    Conv(Conv2d),
    Linear(Linear),
}

/// diffusers `Transformer2DModel` (continuous input).
#[derive(Clone, Debug)]
struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Proj,
    blocks: Vec<TransformerBlock>,
    proj_out: Proj,
}

impl SpatialTransformer {
    fn load(vb: VarBuilder, channels: usize, heads: usize, cfg: &UNetConfig) -> Result<Self> {
        let proj = |name: &str, a: usize, b: usize| -> Result<Proj> {
            Ok(if cfg.use_linear_projection {
                Proj::Linear(Linear::load(vb.pp(name), a, b, true)?)
            } else {
                Proj::Conv(Conv2d::load(vb.pp(name), a, b, 1, 1, 0)?)
            })
        };
        let blocks = (0..cfg.transformer_layers)
            .map(|j| {
                TransformerBlock::load(vb.pp("transformer_blocks").pp(j), channels, heads, cfg.cross_attention_dim)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::load(vb.pp("norm"), cfg.norm_num_groups, channels, 1e-6)?,
            proj_in: proj("proj_in", channels, channels)?,
            blocks,
            proj_out: proj("proj_out", channels, channels)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = self.norm.forward(x)?;
        let to_tokens = |t: Tensor| -> Result<Tensor> { Ok(t.reshape((b, c, h * w))?.transpose(1, 2)?) };
        let mut t = match &self.proj_in {
            Proj::Conv(p) => to_tokens(p.forward(&n)?)?,
            Proj::Linear(p) => p.forward(&to_tokens(n)?)?,
        };
        for blk in &self.blocks {
            t = blk.forward(&t, context)?;
        }
        let from_tokens = |t: Tensor| -> Result<Tensor> { Ok(t.transpose(1, 2)?.reshape((b, c, h, w))?) };
        let y = match &self.proj_out {
            Proj::Conv(p) => p.forward(&from_tokens(t)?)?,
            Proj::Linear(p) => from_tokens(p.forward(&t)?)?,
        };
        Ok((y + x)?)
    }
}

/// One down or up level: resnets, optional transformers, optional down/up-sampler.
#[derive(Clone, Debug)]
struct Level {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<SpatialTransformer>,
    sampler: Option<Conv2d>,
}

/// The `UNet2DConditionModel` ε-network.
#[derive(Clone, Debug)]
pub struct UNet {
    cfg: UNetConfig,
    linear_1: Linear,
    linear_2: Linear,
    conv_in: Conv2d,
    down: Vec<Level>,
    mid_resnets: [ResnetBlock; 2],
    mid_attention: SpatialTransformer,
    up: Vec<Level>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    /// Loads every tensor under `vb` (the root of `unet/diffusion_pytorch_model.safetensors`).
    pub fn load(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        cfg.validate()?;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let temb = 4 * ch[0];
        let (g, eps) = (cfg.norm_num_groups, cfg.norm_eps);
        let te = vb.pp("time_embedding");
        let mut down = Vec::with_capacity(n);
        let mut c_prev = ch[0];
        for i in 0..n {
            let vbl = vb.pp("down_blocks").pp(i);
            let mut lvl = Level { resnets: vec![], attentions: vec![], sampler: None };
            for j in 0..cfg.layers_per_block {
                let c_in = if j == 0 { c_prev } else { ch[i] };
                lvl.resnets.push(ResnetBlock::load(vbl.pp("resnets").pp(j), c_in, ch[i], Some(temb), g, eps)?);
                if cfg.cross_attention[i] {
                    lvl.attentions.push(SpatialTransformer::load(
                        vbl.pp("attentions").pp(j),
                        ch[i],
                        cfg.heads[i],
                        cfg,
                    )?);
                }
            }
            if i + 1 < n {
                lvl.sampler = Some(Conv2d::load(vbl.pp("downsamplers").pp(0).pp("conv"), ch[i], ch[i], 3, 2, 1)?);
            }
            c_prev = ch[i];
            down.push(lvl);
        }
        let c_mid = ch[n - 1];
        let vbm = vb.pp("mid_block");
        let mid_resnets = [
            ResnetBlock::load(vbm.pp("resnets").pp(0), c_mid, c_mid, Some(temb), g, eps)?,
            ResnetBlock::load(vbm.pp("resnets").pp(1), c_mid, c_mid, Some(temb), g, eps)?,
        ];
        let mid_attention = SpatialTransformer::load(vbm.pp("attentions").pp(0), c_mid, cfg.heads[n - 1], cfg)?;
        // Up level i works at the channels of down level n−1−i; its resnet j consumes one skip activation whose
        // channels are those of the down level (or, for the last resnet, of the next-shallower level).
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        let mut c_prev = rev[0];
        for i in 0..n {
            let vbl = vb.pp("up_blocks").pp(i);
            let c_out = rev[i];
            let c_skip_in = rev[(i + 1).min(n - 1)];
            let level = n - 1 - i;
            let mut lvl = Level { resnets: vec![], attentions: vec![], sampler: None };
            for j in 0..=cfg.layers_per_block {
                let skip = if j == cfg.layers_per_block { c_skip_in } else { c_out };
                let c_in = if j == 0 { c_prev } else { c_out };
                lvl.resnets.push(ResnetBlock::load(vbl.pp("resnets").pp(j), c_in + skip, c_out, Some(temb), g, eps)?);
                if cfg.cross_attention[level] {
                    lvl.attentions.push(SpatialTransformer::load(
                        vbl.pp("attentions").pp(j),
                        c_out,
                        cfg.heads[level],
                        cfg,
                    )?);
                }
            }
            if i + 1 < n {
                lvl.sampler = Some(Conv2d::load(vbl.pp("upsamplers").pp(0).pp("conv"), c_out, c_out, 3, 1, 1)?);
            }
            c_prev = c_out;
            up.push(lvl);
        }
        Ok(Self {
            cfg: cfg.clone(),
            linear_1: Linear::load(te.pp("linear_1"), ch[0], temb, true)?,
            linear_2: Linear::load(te.pp("linear_2"), temb, temb, true)?,
            conv_in: Conv2d::load(vb.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1)?,
            down,
            mid_resnets,
            mid_attention,
            up,
            conv_norm_out: GroupNorm::load(vb.pp("conv_norm_out"), g, ch[0], eps)?,
            conv_out: Conv2d::load(vb.pp("conv_out"), ch[0], cfg.out_channels, 3, 1, 1)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// Sinusoidal timestep features `[b, block_out_channels[0]]` (diffusers `Timesteps`, max period 10,000):
    /// freq_j = exp(−ln(10⁴)·j/(half − shift)), features [sin(t·freq), cos(t·freq)], flipped to [cos, sin].
    pub fn timestep_features(&self, t: f64, batch: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let half = self.cfg.block_out_channels[0] / 2;
        let mut row = vec![0f32; 2 * half];
        for j in 0..half {
            let freq = (-(10_000f64.ln()) * j as f64 / (half as f64 - self.cfg.freq_shift)).exp();
            let (s, c) = (t * freq).sin_cos();
            let (first, second) = if self.cfg.flip_sin_to_cos { (c, s) } else { (s, c) };
            row[j] = first as f32;
            row[half + j] = second as f32;
        }
        let row = Tensor::from_vec(row, (1, 2 * half), device)?.to_dtype(dtype)?;
        Ok(row.broadcast_as((batch, 2 * half))?.contiguous()?)
    }

    /// ε_θ(x, t, context) for latents `x` `[b, in_channels, h, w]` (h, w divisible by
    /// [`UNetConfig::downsample_factor`]) and text embeddings `context` `[b, tokens, cross_attention_dim]`.
    pub fn forward(&self, x: &Tensor, t: f64, context: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let f = self.cfg.downsample_factor();
        if h % f != 0 || w % f != 0 {
            return Err(Error::config(format!("unet: latent size {h}×{w} is not divisible by {f}")));
        }
        if context.dim(0)? != b {
            return Err(Error::config(format!("unet: {} context rows for {b} latents", context.dim(0)?)));
        }
        let temb = self.timestep_features(t, b, x.dtype(), x.device())?;
        let temb = self.linear_2.forward(&self.linear_1.forward(&temb)?.silu()?)?;
        let ta = temb.silu()?;
        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for lvl in &self.down {
            for (j, r) in lvl.resnets.iter().enumerate() {
                h = r.forward(&h, Some(&ta))?;
                if let Some(a) = lvl.attentions.get(j) {
                    h = a.forward(&h, context)?;
                }
                skips.push(h.clone());
            }
            if let Some(s) = &lvl.sampler {
                h = s.forward(&h)?;
                skips.push(h.clone());
            }
        }
        h = self.mid_resnets[0].forward(&h, Some(&ta))?;
        h = self.mid_attention.forward(&h, context)?;
        h = self.mid_resnets[1].forward(&h, Some(&ta))?;
        for lvl in &self.up {
            for (j, r) in lvl.resnets.iter().enumerate() {
                let skip = skips.pop().ok_or_else(|| Error::config("unet: skip connections exhausted"))?;
                h = r.forward(&Tensor::cat(&[&h, &skip], 1)?, Some(&ta))?;
                if let Some(a) = lvl.attentions.get(j) {
                    h = a.forward(&h, context)?;
                }
            }
            if let Some(s) = &lvl.sampler {
                h = s.forward(&upsample_nearest2x(&h)?)?;
            }
        }
        self.conv_out.forward(&silu(&self.conv_norm_out.forward(&h)?)?)
    }
}
