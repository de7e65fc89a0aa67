//! ImageReward v1.0 (Xu et al. 2023, "ImageReward: Learning and Evaluating Human Preferences for Text-to-Image
//! Generation", §3; rewards.md §5), a cross-reward of the DAS paper: BLIP ViT-L/16 image embeddings → BLIP BERT
//! text encoder cross-attending to them → hidden state of the first text token ([CLS]) → MLP head
//! 768→1024→128→64→16→1 (dropout only, **no activations**; checkpoint keys `mlp.layers.{0,2,4,6,7}`) → raw score r.
//! The official score is z-normalised, z = (r − 0.16717362830052426)/1.0333394966054072; DAS reports raw r
//! ([`ImageRewardOutput`]).
//!
//! Text: the prompt is tokenized with `bert-base-uncased` WordPiece plus BLIP's `[DEC]`, `[ENC]` (vocabulary
//! 30,524), `padding="max_length"`, `max_length=35`, truncation; the ids go in unchanged — the package's
//! `score`/`inference_rank` do **not** replace [CLS] by [ENC] (checked against `ImageReward/ImageReward.py`).
//! Padding is trimmed to the longest prompt of a batch before the encoder: padded keys get weight exp(−10⁴) = 0
//! and the [CLS] state never reads padded positions, so this is exact.
//!
//! Images (rows [3, H, W] in [0, 1]) take one of the two paths of rewards.md §0: the official one (uint8 → PIL
//! bicubic shortest side 224 → torchvision centre crop → CLIP normalisation; ImageReward's `_transform`) for
//! evaluation, or the differentiable one (bilinear resize on the tensor → normalisation) for guidance. Gradients
//! w.r.t. the pixels come from candle's autograd through the project's differentiable blocks and are checked against
//! finite differences on a tiny random-weight model (preprocessing + ViT + cross-attention BERT + head).
//!
//! Weights: `<models>/ImageReward/ImageReward.pt` (torch zip pickle, read with `candle_core::pickle`) or its
//! safetensors conversion `ImageReward.safetensors` (same keys; preferred when present: memory-mapped), plus
//! `med_config.json` and the `bert-base-uncased` `vocab.txt`, all in that folder.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;

use super::image_configs::{ImageRewardConfig, ImageRewardOutput, Preprocess};
use super::weights::{shared, verify, WeightFile, IMAGE_REWARD_V1};
use super::Reward;
use crate::diffusion::Cond;
use crate::image::preprocess::{self, CropRounding};
use crate::models::bert::{BertConfig, BertCrossEncoder};
use crate::models::blip_vit::{random_tensors, BlipVit, BlipVitConfig};
use crate::models::wordpiece::{Encoding, WordPieceTokenizer};
use crate::nn::Linear;
use crate::{Error, Result};

/// Mean of the raw scores on the authors' SD 1.4 prompt set (ImageReward's `self.mean`).
pub const RAW_MEAN: f64 = 0.16717362830052426;
/// Standard deviation of the raw scores (ImageReward's `self.std`).
pub const RAW_STD: f64 = 1.0333394966054072;
/// Token length of the prompt (`max_length=35`, padded and truncated).
pub const MAX_LENGTH: usize = 35;
/// Checkpoint keys of the head's linear layers (`nn.Sequential` indices; 1, 3, 5 are dropouts).
pub const HEAD_KEYS: [usize; 5] = [0, 2, 4, 6, 7];
/// Sub-folder of the models folder holding the ImageReward files.
pub const IMAGE_REWARD_DIR: &str = "ImageReward";
/// File name of the optional safetensors conversion of `ImageReward.pt` (same keys).
pub const SAFETENSORS_FILE: &str = "ImageReward.safetensors";

/// BLIP's BERT configuration shipped with ImageReward (485 B per rewards.md §5; sha256 not published).
pub const MED_CONFIG: WeightFile =
    WeightFile { repo: "THUDM/ImageReward", revision: "main", file: "med_config.json", bytes: 485, sha256: "" };

/// The `bert-base-uncased` vocabulary (30,522 lines; checked by structure, not pinned).
pub const BERT_VOCAB: WeightFile =
    WeightFile { repo: "google-bert/bert-base-uncased", revision: "main", file: "vocab.txt", bytes: 0, sha256: "" };

/// Architecture of an ImageReward model.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRewardArch {
    /// Image encoder.
    pub vit: BlipVitConfig,
    /// Text encoder (its `encoder_width` equals `vit.width`).
    pub bert: BertConfig,
    /// Output widths of the five head layers (the last is 1).
    pub head: [usize; 5],
}

impl ImageRewardArch {
    /// ImageReward v1.0: ViT-L/16 at 224 px, BERT-base with cross-attention from 1024, head 768→1024→128→64→16→1.
    pub fn v1() -> Self {
        Self { vit: BlipVitConfig::vit_l_16(), bert: BertConfig::blip_base(1024), head: V1_HEAD }
    }

    /// A tiny architecture for tests (16 px images, widths 12/8, head 8→6→5→4→3→1).
    pub fn tiny() -> Self {
        let vit = BlipVitConfig::tiny();
        let bert = BertConfig::tiny(vit.width);
        Self { vit, bert, head: [6, 5, 4, 3, 1] }
    }

    /// Every parameter with its checkpoint key and shape (`blip.visual_encoder.*`, `blip.text_encoder.*`,
    /// `mlp.layers.*`).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out: Vec<(String, Vec<usize>)> = Vec::new();
        for (prefix, shapes) in
            [("blip.visual_encoder", self.vit.tensor_shapes()), ("blip.text_encoder", self.bert.tensor_shapes())]
        {
            out.extend(shapes.into_iter().map(|(n, s)| (format!("{prefix}.{n}"), s)));
        }
        let mut inp = self.bert.hidden;
        for (k, &o) in HEAD_KEYS.iter().zip(&self.head) {
            out.push((format!("mlp.layers.{k}.weight"), vec![o, inp]));
            out.push((format!("mlp.layers.{k}.bias"), vec![o]));
            inp = o;
        }
        out
    }
}

const V1_HEAD: [usize; 5] = [1024, 128, 64, 16, 1];

/// Random weights for `arch` under the checkpoint keys, from the seeded stream `seed` (tests, benchmarks).
pub fn random_weights(arch: &ImageRewardArch, seed: u64, dtype: DType) -> Result<HashMap<String, Tensor>> {
    random_tensors(&arch.tensor_shapes(), "", seed, dtype, &Device::Cpu)
}

/// The ImageReward network: image encoder, text encoder, head.
#[derive(Clone, Debug)]
pub struct ImageRewardModel {
    arch: ImageRewardArch,
    vit: BlipVit,
    bert: BertCrossEncoder,
    head: Vec<Linear>,
    device: Device,
}

impl ImageRewardModel {
    /// Loads from the root `vb` of an ImageReward state dict (extra keys such as `blip.vision_proj` or
    /// `position_ids` are ignored).
    pub fn load(vb: VarBuilder, arch: &ImageRewardArch) -> Result<Self> {
        if arch.bert.encoder_width != arch.vit.width || arch.head[4] != 1 {
            return Err(Error::config(format!(
                "image_reward: bert.encoder_width {} must equal vit.width {} and the head must end in 1 output",
                arch.bert.encoder_width, arch.vit.width
            )));
        }
        let blip = vb.pp("blip");
        let mut head = Vec::new();
        let mut inp = arch.bert.hidden;
        for (k, &o) in HEAD_KEYS.iter().zip(&arch.head) {
            head.push(Linear::load(vb.pp("mlp").pp("layers").pp(k), inp, o, true)?);
            inp = o;
        }
        Ok(Self {
            arch: arch.clone(),
            device: vb.device().clone(),
            vit: BlipVit::load(blip.pp("visual_encoder"), &arch.vit)?,
            bert: BertCrossEncoder::load(blip.pp("text_encoder"), &arch.bert)?,
            head,
        })
    }

    /// The architecture.
    pub fn arch(&self) -> &ImageRewardArch {
        &self.arch
    }

    /// The device the towers run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Raw scores [n] of normalised pixels [n, 3, S, S] and token rows `ids`, `mask` [n, t].
    pub fn raw_scores(&self, pixels: &Tensor, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let image = self.vit.forward(pixels)?;
        let text = self.bert.forward(ids, mask, &image)?;
        let mut x = text.narrow(1, 0, 1)?.squeeze(1)?;
        for layer in &self.head {
            x = layer.forward(&x)?;
        }
        Ok(x.squeeze(1)?)
    }
}

/// ImageReward as a [`Reward`] on images [3, h, w] in [0, 1], one prompt per `Cond` label.
pub struct ImageReward {
    model: Arc<ImageRewardModel>,
    prompts: Vec<Encoding>,
    output: ImageRewardOutput,
    preprocess: Preprocess,
    shape: [usize; 3],
}

impl ImageReward {
    /// Assemble from a loaded model and tokenizer; `prompts[k]` is the prompt of `Cond::Labels` value k.
    pub fn new(
        model: Arc<ImageRewardModel>,
        tokenizer: &WordPieceTokenizer,
        prompts: &[String],
        output: ImageRewardOutput,
        preprocess: Preprocess,
        shape: [usize; 3],
    ) -> Result<Self> {
        if shape[0] != 3 || shape[1] == 0 || shape[2] == 0 {
            return Err(Error::config(format!(
                "image_reward scores RGB images [3, h, w]; the decoder gives {shape:?}"
            )));
        }
        if prompts.is_empty() {
            return Err(Error::config("image_reward is prompt-conditioned: give at least one prompt"));
        }
        let prompts = prompts.iter().map(|p| tokenizer.encode(p, MAX_LENGTH)).collect::<Result<Vec<_>>>()?;
        Ok(Self { model, prompts, output, preprocess, shape })
    }

    fn pixels(&self, images: &Tensor) -> Result<Tensor> {
        let size = self.model.arch.vit.image_size;
        match self.preprocess {
            Preprocess::Differentiable => preprocess::differentiable(images, size),
            Preprocess::Official => preprocess::official(images, size, CropRounding::Torchvision),
        }
    }

    fn rows_prompts(&self, n: usize, cond: &Cond) -> Result<Vec<usize>> {
        let idx = match cond {
            Cond::Labels(l) if l.len() == n => l.clone(),
            Cond::Labels(l) => {
                return Err(Error::config(format!("image_reward: {} prompt labels for {n} images", l.len())))
            }
            Cond::None if self.prompts.len() == 1 => vec![0; n],
            Cond::None => {
                return Err(Error::config(
                    "image_reward is prompt-conditioned: the problem must give each sample's prompt",
                ))
            }
        };
        if let Some(bad) = idx.iter().find(|&&i| i >= self.prompts.len()) {
            return Err(Error::config(format!(
                "image_reward: prompt index {bad} out of range ({} prompts)",
                self.prompts.len()
            )));
        }
        Ok(idx)
    }

    /// Scores [n] of images [n, 3, h, w] (a tensor, so gradients can flow), raw or z-normalised per the config.
    pub fn score_tensor(&self, images: &Tensor, cond: &Cond) -> Result<Tensor> {
        let n = images.dim(0)?;
        let idx = self.rows_prompts(n, cond)?;
        let t = idx.iter().map(|&i| self.prompts[i].len_unpadded()).max().unwrap_or(1);
        let ids: Vec<u32> = idx.iter().flat_map(|&i| self.prompts[i].ids[..t].to_vec()).collect();
        let mask: Vec<u32> = idx.iter().flat_map(|&i| self.prompts[i].mask[..t].to_vec()).collect();
        let dev = images.device();
        let ids = Tensor::from_vec(ids, (n, t), dev)?;
        let mask = Tensor::from_vec(mask, (n, t), dev)?;
        let raw = self.model.raw_scores(&self.pixels(images)?, &ids, &mask)?;
        Ok(match self.output {
            ImageRewardOutput::Raw => raw,
            ImageRewardOutput::Normalized => raw.affine(1.0 / RAW_STD, -RAW_MEAN / RAW_STD)?,
        })
    }

    fn images(&self, y: &[f32]) -> Result<Tensor> {
        let [c, h, w] = self.shape;
        if y.len() % (c * h * w) != 0 {
            return Err(Error::config(format!("image_reward: {} values are not rows of {:?}", y.len(), self.shape)));
        }
        Ok(Tensor::from_vec(y.to_vec(), (y.len() / (c * h * w), c, h, w), self.model.device())?
            .to_dtype(self.model.vit.dtype())?)
    }
}

fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.to_vec1()?)
}

impl Reward for ImageReward {
    fn name(&self) -> String {
        match self.output {
            ImageRewardOutput::Raw => "image_reward(raw)".into(),
            ImageRewardOutput::Normalized => "image_reward(normalized)".into(),
        }
    }
    fn differentiable(&self) -> bool {
        self.preprocess == Preprocess::Differentiable
    }
    fn scale(&self) -> String {
        match self.output {
            ImageRewardOutput::Raw => {
                "raw MLP output (DAS) = 1.0333·z + 0.1672, z the official score; SD images ≈ −2…2"
            }
            ImageRewardOutput::Normalized => {
                "z-normalised (official): 62 % of SD 1.4 images in [−1, 1], 98 % in [−2, 2]"
            }
        }
        .into()
    }
    fn input_dim(&self) -> usize {
        self.shape.iter().product()
    }
    fn score(&self, y: &[f32], cond: &Cond, out: &mut [f64]) -> Result<()> {
        let s = to_f64(&self.score_tensor(&self.images(y)?, cond)?)?;
        out.iter_mut().zip(s).for_each(|(o, v)| *o = v);
        Ok(())
    }
    fn score_grad(&self, y: &[f32], cond: &Cond, out: &mut [f64], grad: &mut [f32]) -> Result<()> {
        if !self.differentiable() {
            return Err(Error::config(
                "image_reward: the official preprocessing (uint8, bicubic) has no gradient; use `preprocess: \
                 differentiable`",
            ));
        }
        let x = Var::from_tensor(&self.images(y)?)?;
        let s = self.score_tensor(x.as_tensor(), cond)?;
        let g = s.sum_all()?.backward()?;
        let gx =
            g.get(x.as_tensor()).ok_or_else(|| Error::numeric("image_reward", "no gradient reached the pixels"))?;
        let gv: Vec<f32> = gx.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        if gv.len() != grad.len() {
            return Err(Error::config(format!("image_reward: gradient buffer {} for {} values", grad.len(), gv.len())));
        }
        grad.copy_from_slice(&gv);
        out.iter_mut().zip(to_f64(&s)?).for_each(|(o, v)| *o = v);
        Ok(())
    }
}

/// Reads every tensor of a torch checkpoint (zip-format pickle; a plain state dict, or one under `state_dict`).
pub fn read_torch_checkpoint(path: &Path) -> Result<HashMap<String, Tensor>> {
    let raw = candle_core::pickle::read_all_with_key(path, Some("state_dict"))
        .or_else(|_| candle_core::pickle::read_all(path))
        .map_err(|e| {
            Error::file(
                path,
                format!(
                    "cannot read the torch checkpoint ({e}); candle reads zip-format files only — convert it to \
                     `{SAFETENSORS_FILE}` (docs/verify-rewards.md)"
                ),
            )
        })?;
    Ok(raw.into_iter().map(|(k, v)| (k.trim_start_matches("module.").to_string(), v)).collect())
}

fn note_unpinned(file: &WeightFile, digest: &str) {
    if file.sha256.is_empty() {
        eprintln!("note: {} is not pinned; its sha256 is {digest} (record it in rewards/weights.rs)", file.file);
    }
}

/// The BERT vocabulary of `dir` (`vocab.txt`) with BLIP's `[DEC]`, `[ENC]` appended; checks the BERT layout
/// ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102 in `bert-base-uncased`) through the vocabulary size `expected`.
pub fn load_tokenizer(dir: &Path, expected: usize) -> Result<WordPieceTokenizer> {
    let path = dir.join(BERT_VOCAB.file);
    verify(&path, &BERT_VOCAB)?;
    let tok = WordPieceTokenizer::from_vocab_file(&path, true)?.with_added_specials(&["[DEC]", "[ENC]"]);
    if tok.vocab_size() != expected {
        return Err(Error::file(
            &path,
            format!(
                "{} tokens + [DEC], [ENC] = {}, but the model's vocabulary has {expected}; use the bert-base-uncased \
                 vocab.txt ({})",
                tok.vocab_size() - 2,
                tok.vocab_size(),
                BERT_VOCAB.how_to_get()
            ),
        ));
    }
    Ok(tok)
}

/// Loads the ImageReward v1.0 model from `dir` (the folder holding `ImageReward.pt` or `ImageReward.safetensors`
/// and `med_config.json`), verified, onto `device`, once per process and device.
pub fn load_model(dir: &Path, device: &Device) -> Result<Arc<ImageRewardModel>> {
    let v1 = ImageRewardArch::v1();
    load_model_with(dir, &v1.vit, v1.head, device)
}

/// [`load_model`] with a given image encoder and head (the text encoder comes from `med_config.json`); tests load
/// tiny random checkpoints written under the real names through this.
pub fn load_model_with(
    dir: &Path,
    vit: &BlipVitConfig,
    head: [usize; 5],
    device: &Device,
) -> Result<Arc<ImageRewardModel>> {
    let (pt, st) = (dir.join(IMAGE_REWARD_V1.file), dir.join(SAFETENSORS_FILE));
    let key = format!("image_reward:{}:{vit:?}:{head:?}:{:?}", dir.display(), device.location());
    shared(&key, || {
        let med = dir.join(MED_CONFIG.file);
        note_unpinned(&MED_CONFIG, &verify(&med, &MED_CONFIG)?);
        let text = std::fs::read_to_string(&med).map_err(|e| Error::file(&med, format!("cannot read: {e}")))?;
        let bert = BertConfig::from_med_config(&text, vit.width).map_err(|e| Error::file(&med, e.to_string()))?;
        let arch = ImageRewardArch { vit: vit.clone(), bert, head };
        let vb = if st.exists() {
            let local = WeightFile { file: SAFETENSORS_FILE, ..IMAGE_REWARD_V1 };
            note_unpinned(&local, &verify(&st, &local)?);
            unsafe { VarBuilder::from_mmaped_safetensors(&[&st], DType::F32, device) }
                .map_err(|e| Error::file(&st, format!("cannot read the safetensors file: {e}")))?
        } else if pt.exists() {
            note_unpinned(&IMAGE_REWARD_V1, &verify(&pt, &IMAGE_REWARD_V1)?);
            VarBuilder::from_tensors(read_torch_checkpoint(&pt)?, DType::F32, device)
        } else {
            return Err(Error::file(
                &pt,
                format!(
                    "weight file `{}` not found (sha256 not pinned); {}; or place its safetensors conversion \
                     `{SAFETENSORS_FILE}` in this folder (docs/verify-rewards.md)",
                    IMAGE_REWARD_V1.file,
                    IMAGE_REWARD_V1.how_to_get()
                ),
            ));
        };
        let path = if st.exists() { &st } else { &pt };
        ImageRewardModel::load(vb, &arch)
            .map_err(|e| Error::file(path, format!("not an ImageReward v1.0 checkpoint: {e}")))
    })
}

/// `image_reward` from a models folder (files under `<models>/ImageReward/`), for the given prompts, the BLIP
/// towers on `device`.
pub fn image_reward(
    models: &Path,
    cfg: &ImageRewardConfig,
    prompts: &[String],
    shape: [usize; 3],
    device: &Device,
) -> Result<ImageReward> {
    let dir = models.join(IMAGE_REWARD_DIR);
    let model = load_model(&dir, device)?;
    let tok = load_tokenizer(&dir, model.arch().bert.vocab_size)?;
    ImageReward::new(model, &tok, prompts, cfg.output, cfg.preprocess, shape)
}

#[cfg(test)]
mod tests;
