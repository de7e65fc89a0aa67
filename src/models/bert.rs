//! BLIP's BERT text encoder with cross-attention to image tokens (Devlin et al. 2019, "BERT", §3; Li et al. 2022,
//! "BLIP", §3.1 "image-grounded text encoder"), as ImageReward v1.0 uses it (rewards.md §5): BERT-base — 12
//! post-norm layers, hidden 768, 12 heads, intermediate 3072, exact GELU, LayerNorm eps 1e-12 — where every layer
//! runs self-attention over the text, then cross-attention from the text to the image embeddings, then the
//! feed-forward block, each followed by dropout (inactive), a residual and a LayerNorm.
//!
//! BLIP's `med.py` embeddings have **no token-type embeddings**: word + absolute position, then LayerNorm. The
//! self-attention mask is BERT's additive (1 − mask)·(−10000) on padded keys; the image mask is all ones (no
//! masking). Cross-attention keys and values project from the image width (`encoder_width`, set to the ViT's
//! width, 1024 for ImageReward, whatever `med_config.json` says), queries from the text width.
//!
//! Written with the differentiable blocks of [`crate::nn`] (rewards.md §9.1). Weight names are those of BLIP's
//! `BertModel` under the caller's prefix (`blip.text_encoder` in `ImageReward.pt`): `embeddings.word_embeddings`,
//! `embeddings.position_embeddings`, `embeddings.LayerNorm`, `encoder.layer.N.attention.self.{query,key,value}`,
//! `encoder.layer.N.attention.output.{dense,LayerNorm}`, `encoder.layer.N.crossattention.…` (same names),
//! `encoder.layer.N.intermediate.dense`, `encoder.layer.N.output.{dense,LayerNorm}`.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::nn::{gelu, softmax_last_dim, LayerNorm, Linear};
use crate::{Error, Result};

/// BERT's additive mask value for padded keys (exp underflows to exactly 0 after the softmax shift).
pub const MASK_VALUE: f64 = -10000.0;

/// Dimensions of the cross-attention BERT encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertConfig {
    /// Vocabulary size (30,524 = `bert-base-uncased` + `[DEC]`, `[ENC]`).
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Number of layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// Rows of the position embedding.
    pub max_position: usize,
    /// LayerNorm eps.
    pub eps: f64,
    /// Width of the image embeddings the cross-attention reads (the ViT's width).
    pub encoder_width: usize,
}

/// The fields of BLIP's `med_config.json` (HF `BertConfig` names) that shape the model; others are ignored.
#[derive(Clone, Debug, Deserialize)]
struct MedConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    layer_norm_eps: f64,
    #[serde(default = "gelu_name")]
    hidden_act: String,
    #[serde(default)]
    add_cross_attention: Option<bool>,
    #[serde(default)]
    position_embedding_type: Option<String>,
}

fn gelu_name() -> String {
    "gelu".into()
}

impl BertConfig {
    /// BLIP's `med_config.json` (ImageReward v1.0): vocabulary 30,524, hidden 768, 12 layers, 12 heads,
    /// intermediate 3072, 512 positions, eps 1e-12; cross-attention from `encoder_width`.
    pub fn blip_base(encoder_width: usize) -> Self {
        Self {
            vocab_size: 30524,
            hidden: 768,
            layers: 12,
            heads: 12,
            intermediate: 3072,
            max_position: 512,
            eps: 1e-12,
            encoder_width,
        }
    }

    /// A tiny configuration for tests: vocabulary 40, hidden 8, 2 layers, 2 heads, intermediate 16, 12 positions.
    pub fn tiny(encoder_width: usize) -> Self {
        Self {
            vocab_size: 40,
            hidden: 8,
            layers: 2,
            heads: 2,
            intermediate: 16,
            max_position: 12,
            eps: 1e-12,
            encoder_width,
        }
    }

    /// Parses a BLIP `med_config.json`; `encoder_width` is the ViT's width (BLIP overrides the file's value).
    /// Refuses configurations this module does not implement (non-GELU activation, relative positions, no
    /// cross-attention).
    pub fn from_med_config(json: &str, encoder_width: usize) -> Result<Self> {
        let m: MedConfig = serde_json::from_str(json)
            .map_err(|e| Error::config(format!("med_config.json is not a BERT configuration: {e}")))?;
        if m.hidden_act != "gelu" {
            return Err(Error::config(format!("med_config.json: hidden_act `{}` (only `gelu`)", m.hidden_act)));
        }
        if m.add_cross_attention == Some(false) {
            return Err(Error::config("med_config.json: add_cross_attention is false; ImageReward needs it"));
        }
        if let Some(p) = m.position_embedding_type.as_deref().filter(|&p| p != "absolute") {
            return Err(Error::config(format!("med_config.json: position_embedding_type `{p}` (only `absolute`)")));
        }
        let cfg = Self {
            vocab_size: m.vocab_size,
            hidden: m.hidden_size,
            layers: m.num_hidden_layers,
            heads: m.num_attention_heads,
            intermediate: m.intermediate_size,
            max_position: m.max_position_embeddings,
            eps: m.layer_norm_eps,
            encoder_width,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks divisibility; the message names the field to fix.
    pub fn validate(&self) -> Result<()> {
        if self.heads == 0 || self.hidden % self.heads != 0 {
            return Err(Error::config(format!(
                "bert: hidden {} is not divisible by {} heads",
                self.hidden, self.heads
            )));
        }
        Ok(())
    }

    /// Every parameter with its shape, names relative to the encoder's prefix, in a fixed order.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, f, e) = (self.hidden, self.intermediate, self.encoder_width);
        let mut out: Vec<(String, Vec<usize>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![self.vocab_size, h]),
            ("embeddings.position_embeddings.weight".into(), vec![self.max_position, h]),
            ("embeddings.LayerNorm.weight".into(), vec![h]),
            ("embeddings.LayerNorm.bias".into(), vec![h]),
        ];
        for i in 0..self.layers {
            let l = format!("encoder.layer.{i}");
            for (block, kv_in) in [("attention", h), ("crossattention", e)] {
                for (name, shape) in [
                    ("self.query.weight", vec![h, h]),
                    ("self.query.bias", vec![h]),
                    ("self.key.weight", vec![h, kv_in]),
                    ("self.key.bias", vec![h]),
                    ("self.value.weight", vec![h, kv_in]),
                    ("self.value.bias", vec![h]),
                    ("output.dense.weight", vec![h, h]),
                    ("output.dense.bias", vec![h]),
                    ("output.LayerNorm.weight", vec![h]),
                    ("output.LayerNorm.bias", vec![h]),
                ] {
                    out.push((format!("{l}.{block}.{name}"), shape));
                }
            }
            out.push((format!("{l}.intermediate.dense.weight"), vec![f, h]));
            out.push((format!("{l}.intermediate.dense.bias"), vec![f]));
            out.push((format!("{l}.output.dense.weight"), vec![h, f]));
            out.push((format!("{l}.output.dense.bias"), vec![h]));
            out.push((format!("{l}.output.LayerNorm.weight"), vec![h]));
            out.push((format!("{l}.output.LayerNorm.bias"), vec![h]));
        }
        out
    }
}

/// BERT attention with its output block: LayerNorm(x + dense(softmax(q kᵀ/√d + mask) v)), where q comes from `x`
/// and k, v from `x` (self-attention) or the image embeddings (cross-attention).
#[derive(Clone, Debug)]
struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    norm: LayerNorm,
    heads: usize,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &BertConfig, kv_in: usize) -> Result<Self> {
        let h = cfg.hidden;
        let s = vb.pp("self");
        let o = vb.pp("output");
        Ok(Self {
            query: Linear::load(s.pp("query"), h, h, true)?,
            key: Linear::load(s.pp("key"), kv_in, h, true)?,
            value: Linear::load(s.pp("value"), kv_in, h, true)?,
            dense: Linear::load(o.pp("dense"), h, h, true)?,
            norm: LayerNorm::load(o.pp("LayerNorm"), h, cfg.eps)?,
            heads: cfg.heads,
        })
    }

    /// `x` [b, t, h] attends to `kv` [b, m, kv_in]; `mask` is additive, broadcastable to [b, heads, t, m].
    fn forward(&self, x: &Tensor, kv: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let m = kv.dim(1)?;
        let hd = h / self.heads;
        let split = |y: Tensor, len: usize| -> Result<Tensor> {
            Ok(y.reshape((b, len, self.heads, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(self.query.forward(x)?, t)?;
        let k = split(self.key.forward(kv)?, m)?;
        let v = split(self.value.forward(kv)?, m)?;
        let mut scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let ctx = softmax_last_dim(&scores)?.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        self.norm.forward(&(self.dense.forward(&ctx)? + x)?)
    }
}

/// One BLIP BERT layer: self-attention, cross-attention to the image, feed-forward (post-norm).
#[derive(Clone, Debug)]
struct Layer {
    attention: Attention,
    crossattention: Attention,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        Ok(Self {
            attention: Attention::load(vb.pp("attention"), cfg, cfg.hidden)?,
            crossattention: Attention::load(vb.pp("crossattention"), cfg, cfg.encoder_width)?,
            intermediate: Linear::load(vb.pp("intermediate").pp("dense"), cfg.hidden, cfg.intermediate, true)?,
            output: Linear::load(vb.pp("output").pp("dense"), cfg.intermediate, cfg.hidden, true)?,
            output_norm: LayerNorm::load(vb.pp("output").pp("LayerNorm"), cfg.hidden, cfg.eps)?,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor, image: &Tensor) -> Result<Tensor> {
        let a = self.attention.forward(x, x, Some(mask))?;
        let a = self.crossattention.forward(&a, image, None)?;
        let f = self.output.forward(&gelu(&self.intermediate.forward(&a)?)?)?;
        self.output_norm.forward(&(f + a)?)
    }
}

/// BLIP's image-grounded BERT text encoder (`BertModel(add_pooling_layer=False)`, mode `multimodal`).
#[derive(Clone, Debug)]
pub struct BertCrossEncoder {
    cfg: BertConfig,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
}

impl BertCrossEncoder {
    /// Loads the encoder from `vb` positioned at its prefix (e.g. `vb.pp("blip").pp("text_encoder")`).
    pub fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        cfg.validate()?;
        let emb = vb.pp("embeddings");
        let layers =
            (0..cfg.layers).map(|i| Layer::load(vb.pp("encoder").pp("layer").pp(i), cfg)).collect::<Result<_>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            word_embeddings: emb.get((cfg.vocab_size, cfg.hidden), "word_embeddings.weight")?,
            position_embeddings: emb.get((cfg.max_position, cfg.hidden), "position_embeddings.weight")?,
            embeddings_norm: LayerNorm::load(emb.pp("LayerNorm"), cfg.hidden, cfg.eps)?,
            layers,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// Last hidden state [n, t, hidden] of token ids `ids` [n, t] (u32) with attention mask `mask` [n, t]
    /// (1 = token, 0 = padding; any numeric dtype), cross-attending to `image` [n, m, encoder_width] (all image
    /// tokens visible).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, image: &Tensor) -> Result<Tensor> {
        let (n, t) = ids.dims2()?;
        let (ni, _, ew) = image.dims3()?;
        if ni != n || ew != self.cfg.encoder_width {
            return Err(Error::config(format!(
                "bert: image embeddings [{ni}, _, {ew}] for {n} texts; expected [{n}, _, {}]",
                self.cfg.encoder_width
            )));
        }
        if mask.dims() != ids.dims() {
            return Err(Error::config(format!("bert: mask {:?} does not match ids {:?}", mask.dims(), ids.dims())));
        }
        if t == 0 || t > self.cfg.max_position {
            return Err(Error::config(format!("bert: {t} tokens; expected 1..={}", self.cfg.max_position)));
        }
        let ids = ids.to_dtype(DType::U32)?;
        if let Some(bad) = ids.flatten_all()?.to_vec1::<u32>()?.into_iter().find(|&i| i as usize >= self.cfg.vocab_size)
        {
            return Err(Error::config(format!(
                "bert: token id {bad} is outside the vocabulary of {} tokens; use the model's vocab.txt",
                self.cfg.vocab_size
            )));
        }
        let dtype = self.word_embeddings.dtype();
        let h = self.cfg.hidden;
        let x = self.word_embeddings.embedding(&ids.flatten_all()?)?.reshape((n, t, h))?;
        let x = x.broadcast_add(&self.position_embeddings.narrow(0, 0, t)?.unsqueeze(0)?)?;
        let mut x = self.embeddings_norm.forward(&x)?;
        // [n, 1, 1, t]: 0 on tokens, −10000 on padding (BERT's extended attention mask).
        let additive = ((mask.to_dtype(dtype)?.affine(-1.0, 1.0)? * MASK_VALUE)?).reshape((n, 1, 1, t))?;
        let image = image.to_dtype(dtype)?;
        for layer in &self.layers {
            x = layer.forward(&x, &additive, &image)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::blip_vit::random_tensors;
    use crate::nn::testing::{check_grad, random_tensor};
    use candle_core::Device;

    const DEV: Device = Device::Cpu;

    fn tiny() -> BertCrossEncoder {
        let cfg = BertConfig::tiny(6);
        let w = random_tensors(&cfg.tensor_shapes(), "", 11, DType::F64, &DEV).unwrap();
        BertCrossEncoder::load(VarBuilder::from_tensors(w, DType::F64, &DEV), &cfg).unwrap()
    }

    fn ids_mask() -> (Tensor, Tensor) {
        let ids = Tensor::new(&[[1u32, 5, 7, 2, 0, 0], [1, 9, 2, 0, 0, 0]], &DEV).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], &DEV).unwrap();
        (ids, mask)
    }

    #[test]
    fn gradient_with_respect_to_image_embeddings() {
        let bert = tiny();
        let (ids, mask) = ids_mask();
        let img = random_tensor(&[2, 5, 6], 12, DType::F64, &DEV).unwrap();
        let err = check_grad(|im| Ok(bert.forward(&ids, &mask, im)?.narrow(1, 0, 1)?), &img, 13).unwrap();
        eprintln!("bert cross-attention tiny FD rel err {err:.2e}");
        assert!(err < 1e-6, "{err}");
    }

    #[test]
    fn padding_does_not_change_real_tokens_and_image_matters() {
        let bert = tiny();
        let (ids, mask) = ids_mask();
        let img = random_tensor(&[2, 5, 6], 12, DType::F64, &DEV).unwrap();
        let full = bert.forward(&ids, &mask, &img).unwrap();
        // The same rows without their padding: the CLS state is unchanged (masked keys get weight exp(−10⁴) = 0).
        let short = bert.forward(&ids.narrow(1, 0, 4).unwrap(), &mask.narrow(1, 0, 4).unwrap(), &img).unwrap();
        let d = (full.narrow(1, 0, 1).unwrap() - short.narrow(1, 0, 1).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-12, "{d}");
        // A different image changes the CLS state.
        let img2 = (img.clone() + 0.5).unwrap();
        let other = bert.forward(&ids, &mask, &img2).unwrap();
        let d = (full - other).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(d > 1e-6, "{d}");
        let bad = Tensor::new(&[[1u32, 40]], &DEV).unwrap();
        let e = bert.forward(&bad, &Tensor::new(&[[1u32, 1]], &DEV).unwrap(), &img.narrow(0, 0, 1).unwrap());
        assert!(e.unwrap_err().to_string().contains("outside the vocabulary"));
    }

    #[test]
    fn med_config_parsing() {
        let json = r#"{"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
            "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
            "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2,
            "vocab_size": 30524, "encoder_width": 768, "add_cross_attention": true}"#;
        // BLIP overrides encoder_width with the ViT's width.
        assert_eq!(BertConfig::from_med_config(json, 1024).unwrap(), BertConfig::blip_base(1024));
        let relu = json.replace("\"gelu\"", "\"relu\"");
        assert!(BertConfig::from_med_config(&relu, 1024).unwrap_err().to_string().contains("relu"));
        assert!(BertConfig::from_med_config("{}", 1024).is_err());
        let params: usize =
            BertConfig::blip_base(1024).tensor_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        // BERT-base without token types and pooler (≈ 108.9 M) plus 12 cross-attention blocks from 1024 (≈ 33.1 M);
        // with the ViT-L/16 (303.3 M) and the head (0.9 M) this is the ≈ 447 M of rewards.md §5.
        assert_eq!(params, 141_977_088);
    }
}
