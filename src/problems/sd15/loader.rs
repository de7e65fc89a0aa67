//! Loading a diffusers-layout Stable Diffusion folder: which files, their pins, their configurations.
//!
//! Layout (the Hugging Face repository `stable-diffusion-v1-5/stable-diffusion-v1-5`, downloaded with
//! `huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 <files> --local-dir <DIR>`):
//! ```text
//! <DIR>/unet/diffusion_pytorch_model[.fp16].safetensors   (+ unet/config.json)
//! <DIR>/vae/diffusion_pytorch_model[.fp16].safetensors    (+ vae/config.json)
//! <DIR>/text_encoder/model[.fp16].safetensors             (+ text_encoder/config.json)
//! <DIR>/tokenizer/vocab.json, <DIR>/tokenizer/merges.txt
//! ```
//! The folder is given explicitly or found through [`crate::rewards::weights::models_dir`] (env
//! `ALIGNBENCH_MODELS`) joined with `stable-diffusion-v1-5`. Nothing is downloaded. Every file is checked with
//! [`crate::rewards::weights::verify`] against [`SD15_FILES`] (size, then sha256) unless the folder is declared
//! [`Pins::Unpinned`] (fine-tunes, the tests' tiny model); a missing or corrupted file fails with one error naming
//! the file, the expected checksum and the `huggingface-cli` command that fetches it. The sha256 of every file read
//! is returned for provenance either way.
//!
//! Precision: `.fp16` files are preferred for fp16/bf16 models and the full-precision files for f32/f64 models;
//! the other variant is used when the preferred one is absent (candle converts on load). A `config.json` next to
//! the weights is read when present (diffusers field names); without it the SD 1.5 configuration is assumed.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::text::sd15_text_config;
use super::unet::UNetConfig;
use super::vae::VaeConfig;
use crate::models::clip::ClipTextConfig;
use crate::nn::Activation;
use crate::rewards::weights::{self, WeightFile};
use crate::{Error, Result};

/// The public repository of the reference model (methods.md §16).
pub const SD15_REPO: &str = "stable-diffusion-v1-5/stable-diffusion-v1-5";
/// The revision the pins refer to (the repository's `main` at the time of writing; the weight files have not
/// changed since the `runwayml/stable-diffusion-v1-5` original).
pub const SD15_REVISION: &str = "451f4fe16113bff5a5d2269ed5ad43b0592e9a14";
/// Folder name under [`weights::models_dir`] when no explicit path is given.
pub const SD15_DIR_NAME: &str = "stable-diffusion-v1-5";

const fn pin(file: &'static str, bytes: u64, sha256: &'static str) -> WeightFile {
    WeightFile { repo: SD15_REPO, revision: SD15_REVISION, file, bytes, sha256 }
}

/// Pinned files of `stable-diffusion-v1-5/stable-diffusion-v1-5`, in [`SdFile`] order per variant.
///
/// Sources (public records of the LFS objects; recorded 2025): sizes of every file from the Hugging Face file
/// listing (also `runwayml/stable-diffusion-v1-5`); sha256 of the three `.fp16` files and of
/// `vae/diffusion_pytorch_model.safetensors` from the LFS blob names of a Hugging Face cache snapshot at
/// [`SD15_REVISION`]; sha256 of `unet/diffusion_pytorch_model.safetensors` and `text_encoder/model.safetensors`
/// from the file table of the ModelScope mirror `AI-ModelScope/stable-diffusion-v1-5` (same sizes). The tokenizer
/// files are ordinary git blobs, not LFS objects: their sha256 is **unknown** here (git blob sha1:
/// `vocab.json` 469be27c5c010538f845f518c4f5e8574c78f7c8, `merges.txt` 76e821f1b6f0a9709293c3b6b51ed90980b3166b);
/// only their sizes are checked and the digest found is reported.
pub const SD15_FILES: [WeightFile; 8] = [
    pin(
        "unet/diffusion_pytorch_model.safetensors",
        3_438_167_540,
        "19da7aaa4b880e59d56843f1fcb4dd9b599c28a1d9d9af7c1143057c8ffae9f1",
    ),
    pin(
        "unet/diffusion_pytorch_model.fp16.safetensors",
        1_719_125_304,
        "c83908253f9a64d08c25fc90874c9c8aef9a329ce1ca5fb909d73b0c83d1ea21",
    ),
    pin(
        "vae/diffusion_pytorch_model.safetensors",
        334_643_276,
        "a2b5134f4dbc140d9c11f11cba3233099e00af40f262f136c691fb7d38d2194c",
    ),
    pin(
        "vae/diffusion_pytorch_model.fp16.safetensors",
        167_335_342,
        "4fbcf0ebe55a0984f5a5e00d8c4521d52359af7229bb4d81890039d2aa16dd7c",
    ),
    pin(
        "text_encoder/model.safetensors",
        492_265_874,
        "d008943c017f0092921106440254dbbe00b6a285f7883ec8ba160c3faad88334",
    ),
    pin(
        "text_encoder/model.fp16.safetensors",
        246_144_864,
        "77795e2023adcf39bc29a884661950380bd093cf0750a966d473d1718dc9ef4e",
    ),
    pin("tokenizer/vocab.json", 1_059_962, ""),
    pin("tokenizer/merges.txt", 524_619, ""),
];

/// The stored precision of a weight file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Full-precision (f32) files, no suffix.
    Fp32,
    /// Half-precision files with the `.fp16` suffix.
    Fp16,
}

impl Variant {
    /// The variant to prefer for a model of `dtype`.
    pub fn preferred_for(dtype: DType) -> Self {
        match dtype {
            DType::F16 | DType::BF16 => Variant::Fp16,
            _ => Variant::Fp32,
        }
    }
    fn other(self) -> Self {
        match self {
            Variant::Fp32 => Variant::Fp16,
            Variant::Fp16 => Variant::Fp32,
        }
    }
}

/// A model component stored as one safetensors file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// `unet/diffusion_pytorch_model[.fp16].safetensors`.
    Unet,
    /// `vae/diffusion_pytorch_model[.fp16].safetensors`.
    Vae,
    /// `text_encoder/model[.fp16].safetensors`.
    TextEncoder,
}

impl Component {
    /// Path of the component's weights inside the folder.
    pub fn path(self, variant: Variant) -> &'static str {
        match (self, variant) {
            (Component::Unet, Variant::Fp32) => "unet/diffusion_pytorch_model.safetensors",
            (Component::Unet, Variant::Fp16) => "unet/diffusion_pytorch_model.fp16.safetensors",
            (Component::Vae, Variant::Fp32) => "vae/diffusion_pytorch_model.safetensors",
            (Component::Vae, Variant::Fp16) => "vae/diffusion_pytorch_model.fp16.safetensors",
            (Component::TextEncoder, Variant::Fp32) => "text_encoder/model.safetensors",
            (Component::TextEncoder, Variant::Fp16) => "text_encoder/model.fp16.safetensors",
        }
    }
}

/// Path of the tokenizer vocabulary inside the folder.
pub const VOCAB_JSON: &str = "tokenizer/vocab.json";
/// Path of the tokenizer merges inside the folder.
pub const MERGES_TXT: &str = "tokenizer/merges.txt";

/// How the files of a folder are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pins {
    /// Against [`SD15_FILES`] (size and sha256).
    #[default]
    Sd15,
    /// Existence only (fine-tunes, tiny test models); digests are still computed and reported.
    Unpinned,
}

/// The pin of `path` in [`SD15_FILES`].
pub fn sd15_pin(path: &str) -> Option<&'static WeightFile> {
    SD15_FILES.iter().find(|w| w.file == path)
}

/// A file that was checked: its path inside the folder and its sha256.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CheckedFile {
    /// Path inside the folder.
    pub file: String,
    /// Lowercase hex sha256.
    pub sha256: String,
}

/// A diffusers folder and how its files are checked.
#[derive(Clone, Debug)]
pub struct SdFolder {
    dir: PathBuf,
    pins: Pins,
}

impl SdFolder {
    /// The folder `explicit`, else `<ALIGNBENCH_MODELS>/stable-diffusion-v1-5`.
    pub fn locate(explicit: Option<&Path>, pins: Pins) -> Result<Self> {
        let dir = match explicit {
            Some(p) => p.to_path_buf(),
            None => weights::models_dir(None)?.join(SD15_DIR_NAME),
        };
        if !dir.is_dir() {
            return Err(Error::file(
                &dir,
                format!(
                    "Stable Diffusion folder not found; download the diffusers layout of {SD15_REPO} into it, e.g. \
                     `huggingface-cli download {SD15_REPO} {} {} {} {VOCAB_JSON} {MERGES_TXT} --revision \
                     {SD15_REVISION} --local-dir {}`",
                    Component::Unet.path(Variant::Fp32),
                    Component::Vae.path(Variant::Fp32),
                    Component::TextEncoder.path(Variant::Fp32),
                    dir.display()
                ),
            ));
        }
        Ok(Self { dir, pins })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Check one file (pinned size and sha256, or existence); returns its digest.
    pub fn check(&self, rel: &str) -> Result<CheckedFile> {
        let path = self.dir.join(rel);
        let digest = match (self.pins, sd15_pin(rel)) {
            (Pins::Sd15, Some(w)) => weights::verify(&path, w)?,
            _ => {
                if !path.is_file() {
                    return Err(Error::file(
                        &path,
                        format!(
                            "`{rel}` not found in this unpinned diffusers folder; for the reference model run \
                             `huggingface-cli download {SD15_REPO} {rel} --revision {SD15_REVISION} --local-dir {}`",
                            self.dir.display()
                        ),
                    ));
                }
                weights::sha256_file(&path)?
            }
        };
        Ok(CheckedFile { file: rel.to_string(), sha256: digest })
    }

    /// The weights file of `component`: `variant` if given, else the one preferred for `dtype` or, when that is
    /// absent, the other one. The error for a missing component names the preferred file.
    pub fn resolve(&self, component: Component, variant: Option<Variant>, dtype: DType) -> Result<&'static str> {
        if let Some(v) = variant {
            return Ok(component.path(v));
        }
        let first = Variant::preferred_for(dtype);
        for v in [first, first.other()] {
            if self.dir.join(component.path(v)).is_file() {
                return Ok(component.path(v));
            }
        }
        Ok(component.path(first))
    }

    /// Check and memory-map the weights of `component` as a [`VarBuilder`] of `dtype` on `device`.
    pub fn var_builder(
        &self,
        component: Component,
        variant: Option<Variant>,
        dtype: DType,
        device: &Device,
    ) -> Result<(VarBuilder<'static>, CheckedFile)> {
        let rel = self.resolve(component, variant, dtype)?;
        let checked = self.check(rel)?;
        let path = self.dir.join(rel);
        // SAFETY: the file is memory-mapped read-only; it must not be modified while the model is loaded (the
        // same contract as every safetensors mmap loader).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], dtype, device) }.map_err(|e| {
            let hint = match sd15_pin(rel) {
                Some(w) => w.how_to_get(),
                None => "re-save it with diffusers `save_pretrained`".to_string(),
            };
            Error::file(&path, format!("`{rel}` is not a readable safetensors file ({e}); {hint}"))
        })?;
        Ok((vb, checked))
    }

    /// The UNet, VAE and text encoder configurations from the folder's `config.json` files (SD 1.5 values for
    /// absent files).
    pub fn config(&self) -> Result<SdConfig> {
        let read = |rel: &str| -> Result<Option<String>> {
            let p = self.dir.join(rel);
            if !p.is_file() {
                return Ok(None);
            }
            std::fs::read_to_string(&p).map(Some).map_err(|e| Error::file(&p, format!("cannot read: {e}")))
        };
        let parse_err = |rel: &str, e: Error| Error::file(self.dir.join(rel), e.to_string());
        let unet = match read("unet/config.json")? {
            Some(s) => unet_from_diffusers(&s).map_err(|e| parse_err("unet/config.json", e))?,
            None => UNetConfig::sd15(),
        };
        let vae = match read("vae/config.json")? {
            Some(s) => vae_from_diffusers(&s).map_err(|e| parse_err("vae/config.json", e))?,
            None => VaeConfig::sd15(),
        };
        let text = match read("text_encoder/config.json")? {
            Some(s) => text_from_hf(&s).map_err(|e| parse_err("text_encoder/config.json", e))?,
            None => sd15_text_config(),
        };
        Ok(SdConfig { unet, vae, text })
    }
}

/// The three model configurations of a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct SdConfig {
    /// ε-network.
    pub unet: UNetConfig,
    /// Autoencoder decoder.
    pub vae: VaeConfig,
    /// Text encoder (CLIP text transformer).
    pub text: ClipTextConfig,
}

impl SdConfig {
    /// Stable Diffusion 1.5.
    pub fn sd15() -> Self {
        Self { unet: UNetConfig::sd15(), vae: VaeConfig::sd15(), text: sd15_text_config() }
    }

    /// Write the three `config.json` files in diffusers / HF field names into `dir` (tests, tiny models).
    pub fn write_diffusers(&self, dir: &Path) -> Result<()> {
        let u = &self.unet;
        let n = u.block_out_channels.len();
        let down: Vec<&str> =
            u.cross_attention.iter().map(|&a| if a { "CrossAttnDownBlock2D" } else { "DownBlock2D" }).collect();
        let up: Vec<&str> =
            u.cross_attention.iter().rev().map(|&a| if a { "CrossAttnUpBlock2D" } else { "UpBlock2D" }).collect();
        let unet = serde_json::json!({
            "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": u.heads,
            "block_out_channels": u.block_out_channels, "cross_attention_dim": u.cross_attention_dim,
            "down_block_types": down, "up_block_types": up, "flip_sin_to_cos": u.flip_sin_to_cos,
            "freq_shift": u.freq_shift, "in_channels": u.in_channels, "out_channels": u.out_channels,
            "layers_per_block": u.layers_per_block, "norm_eps": u.norm_eps, "norm_num_groups": u.norm_num_groups,
            "use_linear_projection": u.use_linear_projection, "transformer_layers_per_block": u.transformer_layers,
            "sample_size": 8 * n,
        });
        let v = &self.vae;
        let vae = serde_json::json!({
            "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": v.block_out_channels,
            "in_channels": v.out_channels, "out_channels": v.out_channels, "latent_channels": v.latent_channels,
            "layers_per_block": v.layers_per_block, "norm_num_groups": v.norm_num_groups,
            "scaling_factor": v.scaling_factor,
            "up_block_types": vec!["UpDecoderBlock2D"; v.block_out_channels.len()],
            "down_block_types": vec!["DownEncoderBlock2D"; v.block_out_channels.len()],
        });
        let t = &self.text;
        let text = serde_json::json!({
            "architectures": ["CLIPTextModel"], "vocab_size": t.vocab_size, "hidden_size": t.width,
            "intermediate_size": t.mlp, "num_hidden_layers": t.layers, "num_attention_heads": t.heads,
            "max_position_embeddings": t.context_length, "layer_norm_eps": t.eps,
            "hidden_act": match t.act { Activation::QuickGelu => "quick_gelu", Activation::Gelu => "gelu" },
        });
        for (sub, doc) in [("unet", unet), ("vae", vae), ("text_encoder", text)] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::file(&d, format!("cannot create: {e}")))?;
            let p = d.join("config.json");
            std::fs::write(&p, serde_json::to_string_pretty(&doc).expect("json"))
                .map_err(|e| Error::file(&p, format!("cannot write: {e}")))?;
        }
        Ok(())
    }
}

/// An int or a per-level list (diffusers allows both for several fields).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(usize),
    Many(Vec<usize>),
}

impl OneOrMany {
    fn per_level(&self, n: usize, field: &str) -> Result<Vec<usize>> {
        match self {
            OneOrMany::One(v) => Ok(vec![*v; n]),
            OneOrMany::Many(v) if v.len() == n => Ok(v.clone()),
            OneOrMany::Many(v) => Err(Error::config(format!("{field}: {} entries for {n} levels", v.len()))),
        }
    }
}

fn four() -> usize {
    4
}
fn three() -> usize {
    3
}
fn groups32() -> usize {
    32
}
fn eps5() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}
fn sd_scale() -> f64 {
    0.18215
}

#[derive(Deserialize)]
struct DiffusersUNet {
    #[serde(default = "four")]
    in_channels: usize,
    #[serde(default = "four")]
    out_channels: usize,
    block_out_channels: Vec<usize>,
    layers_per_block: usize,
    attention_head_dim: Option<OneOrMany>,
    num_attention_heads: Option<OneOrMany>,
    cross_attention_dim: usize,
    down_block_types: Vec<String>,
    up_block_types: Vec<String>,
    #[serde(default = "groups32")]
    norm_num_groups: usize,
    #[serde(default = "eps5")]
    norm_eps: f64,
    #[serde(default)]
    use_linear_projection: bool,
    #[serde(default = "yes")]
    flip_sin_to_cos: bool,
    #[serde(default)]
    freq_shift: f64,
    transformer_layers_per_block: Option<usize>,
    act_fn: Option<String>,
    class_embed_type: Option<serde_json::Value>,
    addition_embed_type: Option<serde_json::Value>,
    time_embedding_type: Option<String>,
    mid_block_type: Option<String>,
    #[serde(default)]
    dual_cross_attention: bool,
    only_cross_attention: Option<serde_json::Value>,
    #[serde(default)]
    center_input_sample: bool,
    downsample_padding: Option<usize>,
    mid_block_scale_factor: Option<f64>,
    resnet_time_scale_shift: Option<String>,
    conv_in_kernel: Option<usize>,
    conv_out_kernel: Option<usize>,
    resnet_out_scale_factor: Option<f64>,
}

/// A [`UNetConfig`] from the text of a diffusers `unet/config.json`; features outside SD 1.x/2.x (class or
/// added embeddings, other activations or mid blocks) are refused by name.
pub fn unet_from_diffusers(json: &str) -> Result<UNetConfig> {
    let d: DiffusersUNet =
        serde_json::from_str(json).map_err(|e| Error::config(format!("not a diffusers UNet config: {e}")))?;
    let refuse = |what: &str| Error::config(format!("unsupported UNet feature `{what}` (only SD 1.x/2.x UNets)"));
    if d.act_fn.as_deref().is_some_and(|a| a != "silu") {
        return Err(refuse("act_fn"));
    }
    if d.class_embed_type.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(refuse("class_embed_type"));
    }
    if d.addition_embed_type.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(refuse("addition_embed_type"));
    }
    if d.time_embedding_type.as_deref().is_some_and(|t| t != "positional") {
        return Err(refuse("time_embedding_type"));
    }
    if d.mid_block_type.as_deref().is_some_and(|t| t != "UNetMidBlock2DCrossAttn") {
        return Err(refuse("mid_block_type"));
    }
    if d.dual_cross_attention || d.center_input_sample {
        return Err(refuse("dual_cross_attention / center_input_sample"));
    }
    if d.only_cross_attention.as_ref().is_some_and(|v| v.as_bool() != Some(false) && !v.is_null()) {
        return Err(refuse("only_cross_attention"));
    }
    if d.downsample_padding.is_some_and(|p| p != 1) {
        return Err(refuse("downsample_padding ≠ 1"));
    }
    if d.mid_block_scale_factor.is_some_and(|f| f != 1.0) || d.resnet_out_scale_factor.is_some_and(|f| f != 1.0) {
        return Err(refuse("resnet output scale factor ≠ 1"));
    }
    if d.resnet_time_scale_shift.as_deref().is_some_and(|s| s != "default") {
        return Err(refuse("resnet_time_scale_shift"));
    }
    if d.conv_in_kernel.is_some_and(|k| k != 3) || d.conv_out_kernel.is_some_and(|k| k != 3) {
        return Err(refuse("conv_in_kernel / conv_out_kernel ≠ 3"));
    }
    let n = d.block_out_channels.len();
    let cross_attention = d
        .down_block_types
        .iter()
        .map(|t| match t.as_str() {
            "CrossAttnDownBlock2D" => Ok(true),
            "DownBlock2D" => Ok(false),
            other => Err(Error::config(format!("unsupported down block `{other}`"))),
        })
        .collect::<Result<Vec<_>>>()?;
    let up_expected: Vec<String> =
        cross_attention.iter().rev().map(|&a| if a { "CrossAttnUpBlock2D" } else { "UpBlock2D" }.to_string()).collect();
    if d.up_block_types != up_expected {
        return Err(Error::config(format!(
            "up_block_types {:?} do not mirror down_block_types {:?}",
            d.up_block_types, d.down_block_types
        )));
    }
    let heads = match (&d.num_attention_heads, &d.attention_head_dim) {
        // diffusers: `num_attention_heads = num_attention_heads or attention_head_dim` (SD's naming quirk).
        (Some(h), _) | (None, Some(h)) => h.per_level(n, "attention heads")?,
        (None, None) => vec![8; n],
    };
    let cfg = UNetConfig {
        in_channels: d.in_channels,
        out_channels: d.out_channels,
        block_out_channels: d.block_out_channels,
        layers_per_block: d.layers_per_block,
        cross_attention,
        heads,
        transformer_layers: d.transformer_layers_per_block.unwrap_or(1),
        cross_attention_dim: d.cross_attention_dim,
        norm_num_groups: d.norm_num_groups,
        norm_eps: d.norm_eps,
        use_linear_projection: d.use_linear_projection,
        flip_sin_to_cos: d.flip_sin_to_cos,
        freq_shift: d.freq_shift,
    };
    cfg.validate()?;
    Ok(cfg)
}

#[derive(Deserialize)]
struct DiffusersVae {
    #[serde(default = "four")]
    latent_channels: usize,
    #[serde(default = "three")]
    out_channels: usize,
    block_out_channels: Vec<usize>,
    layers_per_block: usize,
    #[serde(default = "groups32")]
    norm_num_groups: usize,
    #[serde(default = "sd_scale")]
    scaling_factor: f64,
    up_block_types: Option<Vec<String>>,
    act_fn: Option<String>,
    #[serde(default = "yes")]
    mid_block_add_attention: bool,
}

/// A [`VaeConfig`] from the text of a diffusers `vae/config.json`.
pub fn vae_from_diffusers(json: &str) -> Result<VaeConfig> {
    let d: DiffusersVae =
        serde_json::from_str(json).map_err(|e| Error::config(format!("not a diffusers AutoencoderKL config: {e}")))?;
    if d.act_fn.as_deref().is_some_and(|a| a != "silu") || !d.mid_block_add_attention {
        return Err(Error::config("unsupported AutoencoderKL: act_fn must be silu, mid-block attention present"));
    }
    if let Some(t) = &d.up_block_types {
        if t.iter().any(|b| b != "UpDecoderBlock2D") || t.len() != d.block_out_channels.len() {
            return Err(Error::config(format!("unsupported VAE up blocks {t:?}")));
        }
    }
    let cfg = VaeConfig {
        latent_channels: d.latent_channels,
        out_channels: d.out_channels,
        block_out_channels: d.block_out_channels,
        layers_per_block: d.layers_per_block,
        norm_num_groups: d.norm_num_groups,
        scaling_factor: d.scaling_factor,
    };
    cfg.validate()?;
    Ok(cfg)
}

#[derive(Deserialize)]
struct HfClipText {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    #[serde(default = "eps5")]
    layer_norm_eps: f64,
    hidden_act: Option<String>,
}

/// A [`ClipTextConfig`] from the text of an HF `text_encoder/config.json` (`CLIPTextModel`).
pub fn text_from_hf(json: &str) -> Result<ClipTextConfig> {
    let d: HfClipText =
        serde_json::from_str(json).map_err(|e| Error::config(format!("not an HF CLIPTextModel config: {e}")))?;
    let act = match d.hidden_act.as_deref() {
        None | Some("quick_gelu") => Activation::QuickGelu,
        Some("gelu") => Activation::Gelu,
        Some(other) => return Err(Error::config(format!("unsupported text encoder activation `{other}`"))),
    };
    Ok(ClipTextConfig {
        vocab_size: d.vocab_size,
        context_length: d.max_position_embeddings,
        width: d.hidden_size,
        layers: d.num_hidden_layers,
        heads: d.num_attention_heads,
        mlp: d.intermediate_size,
        act,
        eps: d.layer_norm_eps,
    })
}
