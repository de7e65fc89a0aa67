//! The samplers' view of Stable Diffusion: [`SdDenoiser`] (ε̂ with classifier-free guidance and its VJP through
//! the UNet) and [`SdDecoder`] (latent → image in [0, 1] and its VJP through the VAE), over host rows as every
//! sampler here uses (`crate::diffusion`), plus prompt encoding and [`SdPipeline`], which loads everything.
//!
//! - ε̂(x, t, c) = ε_u + w·(ε_c − ε_u) with ε_u = ε_θ(x, t, ∅), ∅ the empty prompt's embeddings (methods.md
//!   §0.3). w = 1 is the conditional model and w = 0 the unconditional one (one UNet row per sample); any other w
//!   evaluates both rows in one batch. [`Cond::Labels`] gives each row's prompt index into the embeddings table;
//!   [`Cond::None`] is the unconditional model.
//! - D(x) = clamp(VAE_dec(x/s)/2 + 1/2, 0, 1), s = 0.18215 (methods.md §0.3). Rows are images `[3, H, W]`.
//! - Rows are processed in micro-batches of at most `batch_p` samples (the DAS reference's `batch_p`), so device
//!   memory is bounded by the micro-batch whatever the particle count. Because [`Denoiser::eps_vjp`] asks for the
//!   cotangent of **all** rows before the backward pass, a call with more than `batch_p` rows runs the forward pass
//!   twice: once without a graph (ε̂ of every row → cotangent), then per micro-batch with a graph, followed by its
//!   backward pass (gradient checkpointing; the ledger counts the logical evaluations only). With at most
//!   `batch_p` rows there is one forward and one backward.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};

use super::device::device_name;
use super::loader::{CheckedFile, Component, Pins, SdConfig, SdFolder, Variant, MERGES_TXT, VOCAB_JSON};
use super::random::{random_model, tiny_config, tiny_tokenizer_files};
use super::text::TextEncoder;
use super::unet::UNet;
use super::vae::VaeDecoder;
use crate::diffusion::{rows, to_host, Cond, Cotangent, Decoder, Denoiser, ImageCotangent};
use crate::models::ClipTokenizer;
use crate::rewards::weights;
use crate::{Error, Result};

/// Text embeddings of a prompt table and of the empty prompt.
#[derive(Clone, Debug)]
pub struct PromptEmbeddings {
    /// `[prompts, tokens, width]`, one row per prompt.
    pub cond: Tensor,
    /// `[1, tokens, width]`: the empty prompt "" (the unconditional input of classifier-free guidance).
    pub uncond: Tensor,
}

impl PromptEmbeddings {
    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.cond.dim(0).unwrap_or(0)
    }
    /// Whether there are no prompts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The same embeddings as `dtype` on `device`.
    pub fn to(&self, dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self {
            cond: self.cond.to_device(device)?.to_dtype(dtype)?,
            uncond: self.uncond.to_device(device)?.to_dtype(dtype)?,
        })
    }
}

/// Encode `prompts` and the empty prompt: tokenise (pad to the context length with `<|endoftext|>`, as the SD 1.5
/// tokenizer) and run the text encoder; embeddings stay in the encoder's dtype and device.
pub fn encode_prompts(text: &TextEncoder, tokenizer: &ClipTokenizer, prompts: &[String]) -> Result<PromptEmbeddings> {
    let device = text.device();
    let mut all: Vec<&str> = prompts.iter().map(|s| s.as_str()).collect();
    all.push("");
    let ids = tokenizer.batch(&all, &device)?;
    let h = text.forward(&ids)?;
    let n = prompts.len();
    Ok(PromptEmbeddings { cond: h.narrow(0, 0, n)?, uncond: h.narrow(0, n, 1)? })
}

/// The UNet with classifier-free guidance as the samplers' [`Denoiser`] over rows of `4·h·w` latents.
#[derive(Clone, Debug)]
pub struct SdDenoiser {
    unet: Arc<UNet>,
    emb: PromptEmbeddings,
    guidance_scale: f64,
    batch_p: usize,
    latent: [usize; 3],
    dtype: DType,
    device: Device,
}

impl SdDenoiser {
    /// A denoiser for latents `[channels, h, w]` with guidance scale `w`, the prompt table `emb` (cast to the UNet's
    /// `dtype` on `device`) and micro-batches of `batch_p` samples.
    pub fn new(
        unet: Arc<UNet>,
        emb: &PromptEmbeddings,
        guidance_scale: f64,
        latent_hw: (usize, usize),
        batch_p: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let cfg = unet.config();
        let f = cfg.downsample_factor();
        if latent_hw.0 == 0 || latent_hw.0 % f != 0 || latent_hw.1 % f != 0 {
            return Err(Error::config(format!(
                "sd: latent size {}×{} must be a positive multiple of {f} (image size a multiple of {})",
                latent_hw.0,
                latent_hw.1,
                8 * f
            )));
        }
        if emb.cond.dim(2)? != cfg.cross_attention_dim {
            return Err(Error::config(format!(
                "sd: text embeddings of width {} for a UNet expecting {}",
                emb.cond.dim(2)?,
                cfg.cross_attention_dim
            )));
        }
        if !guidance_scale.is_finite() {
            return Err(Error::config("sd: guidance_scale must be finite (SD preset 5.0)"));
        }
        Ok(Self {
            latent: [cfg.in_channels, latent_hw.0, latent_hw.1],
            unet,
            emb: emb.to(dtype, device)?,
            guidance_scale,
            batch_p: batch_p.max(1),
            dtype,
            device: device.clone(),
        })
    }

    /// Latent shape `[channels, h, w]` of one row.
    pub fn latent_shape(&self) -> [usize; 3] {
        self.latent
    }
    /// The guidance scale w.
    pub fn guidance_scale(&self) -> f64 {
        self.guidance_scale
    }
    /// Number of prompts in the embeddings table.
    pub fn prompts(&self) -> usize {
        self.emb.len()
    }
    /// The UNet.
    pub fn unet(&self) -> &UNet {
        &self.unet
    }

    fn single_pass(&self) -> bool {
        self.guidance_scale == 1.0 || self.guidance_scale == 0.0
    }

    fn context(&self, labels: &[usize]) -> Result<Tensor> {
        let n = self.emb.len();
        if let Some(&bad) = labels.iter().find(|&&l| l >= n) {
            return Err(Error::config(format!("sd denoiser: prompt index {bad} but the prompt table has {n} prompts")));
        }
        let idx = Tensor::from_vec(labels.iter().map(|&l| l as u32).collect::<Vec<_>>(), labels.len(), &self.device)?;
        Ok(self.emb.cond.index_select(&idx, 0)?)
    }

    fn uncond(&self, n: usize) -> Result<Tensor> {
        let (_, t, w) = self.emb.uncond.dims3()?;
        Ok(self.emb.uncond.broadcast_as((n, t, w))?.contiguous()?)
    }

    /// ε̂ `[n, c, h, w]` for latents `x` `[n, c, h, w]` at timestep `t`; `labels` gives each row's prompt (`None`:
    /// unconditional). Differentiable with respect to `x`.
    pub fn eps_tensor(&self, x: &Tensor, t: usize, labels: Option<&[usize]>) -> Result<Tensor> {
        let n = x.dim(0)?;
        let w = self.guidance_scale;
        let t = t as f64;
        let Some(labels) = labels else {
            return self.unet.forward(x, t, &self.uncond(n)?);
        };
        if labels.len() != n {
            return Err(Error::config(format!("sd denoiser: {} labels for {n} rows", labels.len())));
        }
        if w == 0.0 {
            return self.unet.forward(x, t, &self.uncond(n)?);
        }
        if w == 1.0 {
            return self.unet.forward(x, t, &self.context(labels)?);
        }
        let xx = Tensor::cat(&[x, x], 0)?;
        let ctx = Tensor::cat(&[&self.context(labels)?, &self.uncond(n)?], 0)?;
        let e = self.unet.forward(&xx, t, &ctx)?;
        let (ec, eu) = (e.narrow(0, 0, n)?, e.narrow(0, n, n)?);
        Ok((&eu + ((ec - &eu)? * w)?)?)
    }

    fn upload(&self, x: &[f32]) -> Result<Tensor> {
        let n = rows("sd denoiser", x.len(), self.dim())?;
        let [c, h, w] = self.latent;
        Ok(Tensor::from_slice(x, (n, c, h, w), &self.device)?.to_dtype(self.dtype)?)
    }

    fn labels<'c>(&self, cond: &'c Cond, n: usize) -> Result<Option<&'c [usize]>> {
        match cond {
            Cond::None => Ok(None),
            Cond::Labels(l) if l.len() == n => Ok(Some(l.as_slice())),
            Cond::Labels(l) => Err(Error::config(format!("sd denoiser: {} labels for {n} rows", l.len()))),
        }
    }

    /// The device the UNet runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// (∂ε̂/∂x)ᵀu for one micro-batch (forward with graph + backward).
    fn chunk_vjp(&self, x: &[f32], t: usize, labels: Option<&[usize]>, u: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let xv = Var::from_tensor(&self.upload(x)?)?;
        let e = self.eps_tensor(xv.as_tensor(), t, labels)?;
        let ut = Tensor::from_slice(u, e.shape(), &self.device)?.to_dtype(e.dtype())?;
        let grads = super::device::backward(&(&e * ut)?.sum_all()?, &self.device)?;
        let g = grads.get(xv.as_tensor()).ok_or_else(|| Error::numeric("sd denoiser", "no gradient w.r.t. x"))?;
        Ok((to_host(&e)?, to_host(g)?))
    }
}

impl Denoiser for SdDenoiser {
    fn dim(&self) -> usize {
        self.latent.iter().product()
    }

    fn eps(&self, x: &[f32], t: usize, cond: &Cond, eps: &mut [f32]) -> Result<()> {
        let d = self.dim();
        let n = rows("sd denoiser", x.len(), d)?;
        let labels = self.labels(cond, n)?;
        for r0 in (0..n).step_by(self.batch_p) {
            let r1 = (r0 + self.batch_p).min(n);
            let e = self.eps_tensor(&self.upload(&x[r0 * d..r1 * d])?, t, labels.map(|l| &l[r0..r1]))?;
            eps[r0 * d..r1 * d].copy_from_slice(&to_host(&e)?);
        }
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
        let d = self.dim();
        let n = rows("sd denoiser", x.len(), d)?;
        let labels = self.labels(cond, n)?;
        let mut u = vec![0f32; eps.len()];
        if n <= self.batch_p {
            let xv = Var::from_tensor(&self.upload(x)?)?;
            let e = self.eps_tensor(xv.as_tensor(), t, labels)?;
            eps.copy_from_slice(&to_host(&e)?);
            cot(eps, &mut u)?;
            let ut = Tensor::from_vec(u, e.shape(), &self.device)?.to_dtype(e.dtype())?;
            let grads = super::device::backward(&(&e * ut)?.sum_all()?, &self.device)?;
            let g = grads.get(xv.as_tensor()).ok_or_else(|| Error::numeric("sd denoiser", "no gradient w.r.t. x"))?;
            vjp.copy_from_slice(&to_host(g)?);
            return Ok(());
        }
        // More rows than one micro-batch: ε̂ of all rows without a graph, the cotangent, then recompute + backward
        // per micro-batch (memory bounded by `batch_p`).
        self.eps(x, t, cond, eps)?;
        cot(eps, &mut u)?;
        for r0 in (0..n).step_by(self.batch_p) {
            let r1 = (r0 + self.batch_p).min(n);
            let (_, g) = self.chunk_vjp(&x[r0 * d..r1 * d], t, labels.map(|l| &l[r0..r1]), &u[r0 * d..r1 * d])?;
            vjp[r0 * d..r1 * d].copy_from_slice(&g);
        }
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

/// What the VJP of [`SdDecoder`] does at the clamp to [0, 1].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClampGrad {
    /// The exact derivative of the clamped decoder: zero for pixels outside [0, 1] (PyTorch's `clamp` backward,
    /// passing the gradient on the closed interval), as the DAS reference, which clamps inside its gradient path.
    #[default]
    Exact,
    /// Straight-through: the clamp's derivative is taken as 1 everywhere (the gradient of the unclamped decoder).
    StraightThrough,
}

/// The VAE decoder as the samplers' [`Decoder`]: latent rows `[4·h·w]` → image rows `[3, 8h, 8w]` in [0, 1].
#[derive(Clone, Debug)]
pub struct SdDecoder {
    vae: Arc<VaeDecoder>,
    latent: [usize; 3],
    batch_p: usize,
    clamp: ClampGrad,
    dtype: DType,
    device: Device,
}

impl SdDecoder {
    /// A decoder of latents `[channels, h, w]` in micro-batches of `batch_p`, with the clamp rule `clamp`.
    pub fn new(
        vae: Arc<VaeDecoder>,
        latent_hw: (usize, usize),
        batch_p: usize,
        clamp: ClampGrad,
        dtype: DType,
        device: &Device,
    ) -> Self {
        Self {
            latent: [vae.config().latent_channels, latent_hw.0, latent_hw.1],
            vae,
            batch_p: batch_p.max(1),
            clamp,
            dtype,
            device: device.clone(),
        }
    }

    /// Image shape `[3, H, W]` of one output row.
    pub fn image_shape(&self) -> [usize; 3] {
        let f = self.vae.config().upsample_factor();
        [self.vae.config().out_channels, f * self.latent[1], f * self.latent[2]]
    }

    /// The clamp rule of the VJP.
    pub fn clamp_grad(&self) -> ClampGrad {
        self.clamp
    }

    /// The unclamped image VAE_dec(x/s)/2 + 1/2 `[n, 3, H, W]` of diffusion latents `x` `[n, c, h, w]`
    /// (differentiable).
    pub fn image_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.vae.forward(&(x / self.vae.config().scaling_factor)?)?;
        Ok(((y * 0.5)? + 0.5)?)
    }

    fn upload(&self, x: &[f32]) -> Result<Tensor> {
        let d: usize = self.latent.iter().product();
        let n = rows("sd decoder", x.len(), d)?;
        let [c, h, w] = self.latent;
        Ok(Tensor::from_slice(x, (n, c, h, w), &self.device)?.to_dtype(self.dtype)?)
    }
}

impl Decoder for SdDecoder {
    fn out_dim(&self, _in_dim: usize) -> usize {
        self.image_shape().iter().product()
    }

    fn decode(&self, x: &[f32], out: &mut Vec<f32>) -> Result<()> {
        let d: usize = self.latent.iter().product();
        let n = rows("sd decoder", x.len(), d)?;
        out.clear();
        out.reserve(n * self.out_dim(d));
        for r0 in (0..n).step_by(self.batch_p) {
            let r1 = (r0 + self.batch_p).min(n);
            let y = self.image_tensor(&self.upload(&x[r0 * d..r1 * d])?)?.clamp(0f64, 1f64)?;
            out.extend(to_host(&y)?);
        }
        Ok(())
    }

    fn vjp(&self, x: &[f32], v: &[f32], out: &mut [f32]) -> Result<()> {
        let d: usize = self.latent.iter().product();
        let n = rows("sd decoder", x.len(), d)?;
        let o = self.out_dim(d);
        if v.len() != n * o {
            return Err(Error::config(format!("sd decoder: cotangent of {} values for {n} images of {o}", v.len())));
        }
        for r0 in (0..n).step_by(self.batch_p) {
            let r1 = (r0 + self.batch_p).min(n);
            let xv = Var::from_tensor(&self.upload(&x[r0 * d..r1 * d])?)?;
            let y = self.image_tensor(xv.as_tensor())?;
            self.pull_back(&xv, &y, &v[r0 * o..r1 * o], &mut out[r0 * d..r1 * d])?;
        }
        Ok(())
    }

    /// One VAE forward pass per chunk of `batch_p` rows: the chunk's clamped images go to `score` while the graph
    /// is kept, and their cotangent comes straight back through it (the default would decode twice).
    fn decode_vjp(&self, x: &[f32], n: usize, score: &mut ImageCotangent<'_>, out: &mut [f32]) -> Result<()> {
        let d: usize = self.latent.iter().product();
        if rows("sd decoder", x.len(), d)? != n || out.len() != x.len() {
            return Err(Error::config(format!(
                "sd decoder: {} latent values and a gradient buffer of {} for {n} rows of {d}",
                x.len(),
                out.len()
            )));
        }
        for r0 in (0..n).step_by(self.batch_p) {
            let r1 = (r0 + self.batch_p).min(n);
            let xv = Var::from_tensor(&self.upload(&x[r0 * d..r1 * d])?)?;
            let y = self.image_tensor(xv.as_tensor())?;
            let images = to_host(&y.detach().clamp(0f64, 1f64)?)?;
            let mut v = vec![0f32; images.len()];
            score(&images, r0..r1, &mut v)?;
            self.pull_back(&xv, &y, &v, &mut out[r0 * d..r1 * d])?;
        }
        Ok(())
    }
}

impl SdDecoder {
    /// (∂ clamp(y)/∂x)ᵀ v for the images `y` computed from the latents `xv` on the graph, written into `out`.
    fn pull_back(&self, xv: &Var, y: &Tensor, v: &[f32], out: &mut [f32]) -> Result<()> {
        let mut vt = Tensor::from_slice(v, y.shape(), &self.device)?.to_dtype(y.dtype())?;
        if self.clamp == ClampGrad::Exact {
            // d clamp(y)/dy = 1 on [0, 1], 0 outside (the mask is a constant of the graph).
            let yd = y.detach();
            let inside = (yd.ge(0f64)?.to_dtype(y.dtype())? * yd.le(1f64)?.to_dtype(y.dtype())?)?;
            vt = (vt * inside)?;
        }
        let grads = super::device::backward(&(y * vt)?.sum_all()?, &self.device)?;
        let g = grads.get(xv.as_tensor()).ok_or_else(|| Error::numeric("sd decoder", "no gradient w.r.t. x"))?;
        out.copy_from_slice(&to_host(g)?);
        Ok(())
    }
}

/// How to load and run a pipeline.
#[derive(Clone, Debug)]
pub struct SdOptions {
    /// dtype of the UNet and VAE (f32, f16, bf16; f64 for tests; bf16 only on a GPU — candle's CPU matmul has no
    /// bf16 kernel). The text encoder runs in f32 (f64 when this is f64): it is evaluated once per prompt.
    pub dtype: DType,
    /// Device of the models.
    pub device: Device,
    /// Classifier-free guidance scale w (SD preset 5.0).
    pub guidance_scale: f64,
    /// Micro-batch size in samples (DAS reference `batch_p` = 2).
    pub batch_p: usize,
    /// Latent side h = w (64 ⇒ 512 × 512 images for SD 1.5).
    pub latent_size: usize,
    /// Stored precision to read; `None` picks by dtype (see [`Variant::preferred_for`]).
    pub variant: Option<Variant>,
    /// How files are checked.
    pub pins: Pins,
    /// Clamp rule of the decoder VJP.
    pub clamp: ClampGrad,
}

impl Default for SdOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            guidance_scale: 5.0,
            batch_p: 2,
            latent_size: 64,
            variant: None,
            pins: Pins::Sd15,
            clamp: ClampGrad::Exact,
        }
    }
}

/// Everything a Stable Diffusion experiment cell needs: the denoiser and decoder adapters, shapes, the prompts
/// (row label i ↔ `prompts[i]`) and the digests of the files read.
#[derive(Clone, Debug)]
pub struct SdPipeline {
    /// ε̂ with CFG over latent rows.
    pub denoiser: SdDenoiser,
    /// Latent rows → images in [0, 1].
    pub decoder: SdDecoder,
    /// `[3, H, W]` of one decoded image.
    pub image_shape: [usize; 3],
    /// `[4, h, w]` of one latent row.
    pub latent_shape: [usize; 3],
    /// The prompt table, indexed by [`Cond::Labels`].
    pub prompts: Vec<String>,
    /// Files read and their sha256 (empty for in-memory models).
    pub files: Vec<CheckedFile>,
    /// The model configurations.
    pub config: SdConfig,
}

/// The text encoder's dtype for a pipeline of `dtype` (f32, f64 for f64 tests): it runs once per prompt.
pub(crate) fn text_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

impl SdPipeline {
    /// Load a diffusers folder (`dir`, else `<ALIGNBENCH_MODELS>/stable-diffusion-v1-5`), check its files, encode
    /// `prompts` and build the adapters. UNet, VAE and text encoder are loaded once per process and shared.
    pub fn load(dir: Option<&Path>, opts: &SdOptions, prompts: &[String]) -> Result<Self> {
        let folder = SdFolder::locate(dir, opts.pins)?;
        let config = folder.config()?;
        let root = std::fs::canonicalize(folder.dir()).unwrap_or_else(|_| folder.dir().to_path_buf());
        let dev = device_name(&opts.device);
        let key =
            |c: &str, dt: DType| format!("sd:{}:{c}:{:?}:{dt:?}:{dev}:{:?}", root.display(), opts.variant, opts.pins);
        let (dtype, device, variant) = (opts.dtype, &opts.device, opts.variant);
        let unet = weights::shared(&key("unet", dtype), || {
            let (vb, f) = folder.var_builder(Component::Unet, variant, dtype, device)?;
            Ok((Arc::new(UNet::load(vb, &config.unet)?), f))
        })?;
        let vae = weights::shared(&key("vae", dtype), || {
            let (vb, f) = folder.var_builder(Component::Vae, variant, dtype, device)?;
            Ok((Arc::new(VaeDecoder::load(vb, &config.vae)?), f))
        })?;
        let tdt = text_dtype(dtype);
        let text = weights::shared(&key("text", tdt), || {
            let (vb, f) = folder.var_builder(Component::TextEncoder, variant, tdt, device)?;
            Ok((Arc::new(TextEncoder::load(vb, &config.text)?), f))
        })?;
        let vocab = folder.check(VOCAB_JSON)?;
        let merges = folder.check(MERGES_TXT)?;
        let tokenizer = ClipTokenizer::from_files(&folder.dir().join(VOCAB_JSON), &folder.dir().join(MERGES_TXT))?
            .with_context_length(config.text.context_length)?;
        let emb = encode_prompts(&text.0, &tokenizer, prompts)?;
        let files = vec![unet.1.clone(), vae.1.clone(), text.1.clone(), vocab, merges];
        Self::assemble(unet.0.clone(), vae.0.clone(), &emb, opts, prompts, files, config)
    }

    /// A pipeline of seeded random weights for `config` (no files), encoding `prompts` with `tokenizer`.
    pub fn random(
        config: &SdConfig,
        tokenizer: &ClipTokenizer,
        seed: u64,
        opts: &SdOptions,
        prompts: &[String],
    ) -> Result<Self> {
        let (dtype, device) = (opts.dtype, &opts.device);
        let (unet, _) = random_model(seed, dtype, device, |vb| UNet::load(vb, &config.unet))?;
        let (vae, _) = random_model(seed, dtype, device, |vb| VaeDecoder::load(vb, &config.vae))?;
        let (text, _) = random_model(seed, text_dtype(dtype), device, |vb| TextEncoder::load(vb, &config.text))?;
        let emb = encode_prompts(&text, tokenizer, prompts)?;
        Self::assemble(Arc::new(unet), Arc::new(vae), &emb, opts, prompts, vec![], config.clone())
    }

    /// The tiny random-weight SD of the tests ([`tiny_config`], [`tiny_tokenizer_files`]): 8 × 8 latents by
    /// default (`opts.latent_size`), 32 × 32 images.
    pub fn tiny_random(seed: u64, opts: &SdOptions, prompts: &[String]) -> Result<Self> {
        let (vocab, merges) = tiny_tokenizer_files();
        let tok = ClipTokenizer::from_strs(&vocab, &merges)?;
        Self::random(&tiny_config(), &tok, seed, opts, prompts)
    }

    /// Set the micro-batch size of the denoiser and the decoder (`problem.batch_p: auto` after its probe).
    pub fn set_batch_p(&mut self, batch_p: usize) {
        self.denoiser.batch_p = batch_p.max(1);
        self.decoder.batch_p = batch_p.max(1);
    }

    pub(crate) fn assemble(
        unet: Arc<UNet>,
        vae: Arc<VaeDecoder>,
        emb: &PromptEmbeddings,
        opts: &SdOptions,
        prompts: &[String],
        files: Vec<CheckedFile>,
        config: SdConfig,
    ) -> Result<Self> {
        let hw = (opts.latent_size, opts.latent_size);
        let denoiser = SdDenoiser::new(unet, emb, opts.guidance_scale, hw, opts.batch_p, opts.dtype, &opts.device)?;
        let decoder = SdDecoder::new(vae, hw, opts.batch_p, opts.clamp, opts.dtype, &opts.device);
        Ok(Self {
            image_shape: decoder.image_shape(),
            latent_shape: denoiser.latent_shape(),
            denoiser,
            decoder,
            prompts: prompts.to_vec(),
            files,
            config,
        })
    }
}
