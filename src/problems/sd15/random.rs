//! Seeded random weights for any model built through a [`VarBuilder`]: the model's own constructor decides which
//! tensors exist (so the keys are exactly those a checkpoint would need), and each tensor is drawn from a
//! `crate::rng` stream keyed by its name — never candle's unseedable `randn`, never `VarMap`'s zero default.
//!
//! Values: 1-D `*.weight` (norm γ) ~ 1 + 0.1·N; `*.bias` ~ 0.1·N; `*token_embedding*`/`*position_embedding*`
//! ~ 0.5·N; every other weight ~ N/√fan_in (fan_in = product of all but the first dimension).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use std::path::Path;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use super::loader::{Component, SdConfig, Variant, MERGES_TXT, VOCAB_JSON};
use super::text::{tiny_text_config, TextEncoder};
use super::unet::{UNet, UNetConfig};
use super::vae::{VaeConfig, VaeDecoder};
use crate::models::clip_tokenizer::{bytes_to_unicode, END_OF_TEXT, START_OF_TEXT};
use crate::rng::{fill_normal, mix64, Purpose, Streams};
use crate::{Error, Result};

/// Tensors made so far, by full key, as f32 on the CPU (only when recording).
pub type Recorded = Arc<Mutex<BTreeMap<String, Tensor>>>;

struct RandomBackend {
    seed: u64,
    record: Option<Recorded>,
}

fn key_hash(name: &str) -> u64 {
    name.bytes().fold(0x5D_u64, |h, b| mix64(h ^ b as u64))
}

/// (mean, std) of the random initialisation of tensor `name` with `dims`.
pub fn init_stats(name: &str, dims: &[usize]) -> (f32, f32) {
    if name.ends_with(".bias") {
        (0.0, 0.1)
    } else if dims.len() == 1 {
        (1.0, 0.1)
    } else if name.contains("token_embedding") || name.contains("position_embedding") {
        (0.0, 0.5)
    } else {
        let fan_in: usize = dims[1..].iter().product();
        (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
    }
}

impl SimpleBackend for RandomBackend {
    fn get(&self, s: Shape, name: &str, _h: Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let dims = s.dims().to_vec();
        let (mean, std) = init_stats(name, &dims);
        let mut v = vec![0f32; s.elem_count()];
        fill_normal(&mut Streams::new(self.seed).rng(Purpose::Train, key_hash(name), 0x5D), &mut v);
        v.iter_mut().for_each(|x| *x = mean + std * *x);
        let t = Tensor::from_vec(v, s, &Device::Cpu)?;
        if let Some(r) = &self.record {
            r.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), t.clone());
        }
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights: `{name}` was requested without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// A [`VarBuilder`] that creates seeded random tensors on request; with `record`, every tensor made is also kept
/// (f32, CPU) under its full key, e.g. to write a checkpoint.
pub fn random_var_builder(seed: u64, dtype: DType, device: &Device, record: Option<Recorded>) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomBackend { seed, record }), dtype, device.clone())
}

/// Build a model with seeded random weights and return it with its tensors by key (f32, CPU).
pub fn random_model<T>(
    seed: u64,
    dtype: DType,
    device: &Device,
    build: impl FnOnce(VarBuilder<'static>) -> Result<T>,
) -> Result<(T, BTreeMap<String, Tensor>)> {
    let rec: Recorded = Arc::new(Mutex::new(BTreeMap::new()));
    let model = build(random_var_builder(seed, dtype, device, Some(rec.clone())))?;
    let map = std::mem::take(&mut *rec.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((model, map))
}

/// The tokenizer merges of the tiny test model (a few animal words; every other text still tokenises byte-wise).
const TINY_MERGES: &str = "#version: 0.2\nc a\nca t</w>\nd o\ndo g</w>\ns n\nsn a\nsna i\nsnai l</w>\nb a\nba t</w>\n";

/// `vocab.json` and `merges.txt` of the tiny test model: the 256 byte symbols, the same with `</w>`, one token per
/// merge, `<|startoftext|>`, `<|endoftext|>` (the CLIP construction on a small merge list).
pub fn tiny_tokenizer_files() -> (String, String) {
    let mut vocab: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
    vocab.extend(bytes_to_unicode().iter().map(|c| format!("{c}</w>")));
    for line in TINY_MERGES.lines().skip(1) {
        vocab.push(line.replace(' ', ""));
    }
    vocab.push(START_OF_TEXT.into());
    vocab.push(END_OF_TEXT.into());
    let map: std::collections::BTreeMap<&str, usize> = vocab.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    (serde_json::to_string(&map).expect("json"), TINY_MERGES.to_string())
}

/// The tiny SD: UNet [`UNetConfig::tiny`] (text width 16), VAE [`VaeConfig::tiny`], a 2-layer text encoder of
/// width 16 over the [`tiny_tokenizer_files`] vocabulary.
pub fn tiny_config() -> SdConfig {
    let vocab = 512 + TINY_MERGES.lines().skip(1).count() + 2;
    SdConfig { unet: UNetConfig::tiny(16), vae: VaeConfig::tiny(), text: tiny_text_config(vocab, 16) }
}

/// Write a diffusers folder of seeded random weights for `config` into `dir`: the three `config.json`, the three
/// safetensors files of `variant` (`.fp16` files stored as f16) and the tiny tokenizer files. With `legacy_vae`,
/// the VAE attention uses the pre-0.14 names `query/key/value/proj_attn`.
pub fn write_random_folder(dir: &Path, config: &SdConfig, seed: u64, variant: Variant, legacy_vae: bool) -> Result<()> {
    config.write_diffusers(dir)?;
    let store = match variant {
        Variant::Fp32 => DType::F32,
        Variant::Fp16 => DType::F16,
    };
    let cpu = Device::Cpu;
    let (_, unet) = random_model(seed, DType::F32, &cpu, |vb| UNet::load(vb, &config.unet))?;
    let (_, vae) = random_model(seed, DType::F32, &cpu, |vb| VaeDecoder::load(vb, &config.vae))?;
    let (_, text) = random_model(seed, DType::F32, &cpu, |vb| TextEncoder::load(vb, &config.text))?;
    let legacy = |k: String| -> String {
        if !legacy_vae || !k.contains("mid_block.attentions.0.") {
            return k;
        }
        k.replace(".to_q.", ".query.")
            .replace(".to_k.", ".key.")
            .replace(".to_v.", ".value.")
            .replace(".to_out.0.", ".proj_attn.")
    };
    for (component, map, rename) in
        [(Component::Unet, unet, false), (Component::Vae, vae, true), (Component::TextEncoder, text, false)]
    {
        let mut out = std::collections::HashMap::new();
        for (k, t) in map {
            let k = if rename { legacy(k) } else { k };
            out.insert(k, t.to_dtype(store)?);
        }
        let p = dir.join(component.path(variant));
        std::fs::create_dir_all(p.parent().expect("subfolder")).map_err(|e| Error::file(&p, e.to_string()))?;
        candle_core::safetensors::save(&out, &p).map_err(|e| Error::file(&p, format!("cannot write: {e}")))?;
    }
    let (vocab, merges) = tiny_tokenizer_files();
    let tdir = dir.join("tokenizer");
    std::fs::create_dir_all(&tdir).map_err(|e| Error::file(&tdir, e.to_string()))?;
    std::fs::write(dir.join(VOCAB_JSON), vocab).map_err(|e| Error::file(dir.join(VOCAB_JSON), e.to_string()))?;
    std::fs::write(dir.join(MERGES_TXT), merges).map_err(|e| Error::file(dir.join(MERGES_TXT), e.to_string()))?;
    Ok(())
}
