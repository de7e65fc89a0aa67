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
            vit: BlipVit::load(blip.pp("visual_encoder"), &arch.vit)?,
            bert: BertCrossEncoder::load(blip.pp("text_encoder"), &arch.bert)?,
            head,
        })
    }

    /// The architecture.
    pub fn arch(&self) -> &ImageRewardArch {
        &self.arch
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
        Ok(Tensor::from_vec(y.to_vec(), (y.len() / (c * h * w), c, h, w), &Device::Cpu)?
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
/// and `med_config.json`), verified, once per process.
pub fn load_model(dir: &Path) -> Result<Arc<ImageRewardModel>> {
    let v1 = ImageRewardArch::v1();
    load_model_with(dir, &v1.vit, v1.head)
}

/// [`load_model`] with a given image encoder and head (the text encoder comes from `med_config.json`); tests load
/// tiny random checkpoints written under the real names through this.
pub fn load_model_with(dir: &Path, vit: &BlipVitConfig, head: [usize; 5]) -> Result<Arc<ImageRewardModel>> {
    let (pt, st) = (dir.join(IMAGE_REWARD_V1.file), dir.join(SAFETENSORS_FILE));
    let key = format!("image_reward:{}:{vit:?}:{head:?}", dir.display());
    shared(&key, || {
        let med = dir.join(MED_CONFIG.file);
        note_unpinned(&MED_CONFIG, &verify(&med, &MED_CONFIG)?);
        let text = std::fs::read_to_string(&med).map_err(|e| Error::file(&med, format!("cannot read: {e}")))?;
        let bert = BertConfig::from_med_config(&text, vit.width).map_err(|e| Error::file(&med, e.to_string()))?;
        let arch = ImageRewardArch { vit: vit.clone(), bert, head };
        let vb = if st.exists() {
            let local = WeightFile { file: SAFETENSORS_FILE, ..IMAGE_REWARD_V1 };
            note_unpinned(&local, &verify(&st, &local)?);
            unsafe { VarBuilder::from_mmaped_safetensors(&[&st], DType::F32, &Device::Cpu) }
                .map_err(|e| Error::file(&st, format!("cannot read the safetensors file: {e}")))?
        } else if pt.exists() {
            note_unpinned(&IMAGE_REWARD_V1, &verify(&pt, &IMAGE_REWARD_V1)?);
            VarBuilder::from_tensors(read_torch_checkpoint(&pt)?, DType::F32, &Device::Cpu)
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

/// `image_reward` from a models folder (files under `<models>/ImageReward/`), for the given prompts.
pub fn image_reward(
    models: &Path,
    cfg: &ImageRewardConfig,
    prompts: &[String],
    shape: [usize; 3],
) -> Result<ImageReward> {
    let dir = models.join(IMAGE_REWARD_DIR);
    let model = load_model(&dir)?;
    let tok = load_tokenizer(&dir, model.arch().bert.vocab_size)?;
    ImageReward::new(model, &tok, prompts, cfg.output, cfg.preprocess, shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::grad_check;
    use crate::rng::{Purpose, Streams};
    use rand::Rng;
    use std::path::PathBuf;

    /// A generated vocabulary of exactly `n` tokens in BERT's layout (specials at 0, 100–103).
    fn vocab(n: usize) -> Vec<String> {
        let mut v: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
        for (i, s) in [(0, "[PAD]"), (100, "[UNK]"), (101, "[CLS]"), (102, "[SEP]"), (103, "[MASK]")] {
            if i < n {
                v[i] = s.into();
            }
        }
        let words = ["a", "cat", "dog", "photo", "of", "red", "##s", "painting", "ocean", "birds"];
        for (k, w) in words.iter().enumerate() {
            v[1 + k] = w.to_string();
        }
        v
    }

    fn tiny_model(dtype: DType, seed: u64) -> Arc<ImageRewardModel> {
        let arch = ImageRewardArch::tiny();
        let vb = VarBuilder::from_tensors(random_weights(&arch, seed, dtype).unwrap(), dtype, &Device::Cpu);
        Arc::new(ImageRewardModel::load(vb, &arch).unwrap())
    }

    fn tiny_tokenizer() -> WordPieceTokenizer {
        // 38 tokens + [DEC], [ENC] = the tiny model's vocabulary of 40, so every id is in range.
        let mut v: Vec<String> = (0..38).map(|i| format!("w{i}")).collect();
        v[0] = "[PAD]".into();
        for (i, s) in [(30, "[UNK]"), (31, "[CLS]"), (32, "[SEP]"), (33, "[MASK]")] {
            v[i] = s.into();
        }
        for (k, w) in ["a", "cat", "dog", "photo", "of", "red", "##s", "painting"].iter().enumerate() {
            v[1 + k] = w.to_string();
        }
        WordPieceTokenizer::new(v, true).unwrap().with_added_specials(&["[DEC]", "[ENC]"])
    }

    fn prompts() -> Vec<String> {
        vec!["a photo of a cat".into(), "red dogs".into(), "a painting".into()]
    }

    fn reward(dtype: DType, pre: Preprocess, out: ImageRewardOutput, h: usize) -> ImageReward {
        ImageReward::new(tiny_model(dtype, 1), &tiny_tokenizer(), &prompts(), out, pre, [3, h, h]).unwrap()
    }

    fn images(n: usize, h: usize, seed: u64, dtype: DType) -> Tensor {
        preprocess::smooth_test_images(n, h, h, seed, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
    }

    #[test]
    fn checkpoint_key_names_of_the_real_model() {
        let shapes: HashMap<String, Vec<usize>> = ImageRewardArch::v1().tensor_shapes().into_iter().collect();
        for (k, s) in [
            ("blip.visual_encoder.patch_embed.proj.weight", vec![1024, 3, 16, 16]),
            ("blip.visual_encoder.cls_token", vec![1, 1, 1024]),
            ("blip.visual_encoder.pos_embed", vec![1, 197, 1024]),
            ("blip.visual_encoder.blocks.23.attn.qkv.weight", vec![3072, 1024]),
            ("blip.visual_encoder.blocks.0.mlp.fc2.weight", vec![1024, 4096]),
            ("blip.visual_encoder.norm.bias", vec![1024]),
            ("blip.text_encoder.embeddings.word_embeddings.weight", vec![30524, 768]),
            ("blip.text_encoder.embeddings.LayerNorm.weight", vec![768]),
            ("blip.text_encoder.encoder.layer.11.attention.self.query.weight", vec![768, 768]),
            ("blip.text_encoder.encoder.layer.0.crossattention.self.key.weight", vec![768, 1024]),
            ("blip.text_encoder.encoder.layer.0.crossattention.output.LayerNorm.bias", vec![768]),
            ("blip.text_encoder.encoder.layer.5.intermediate.dense.weight", vec![3072, 768]),
            ("blip.text_encoder.encoder.layer.5.output.dense.weight", vec![768, 3072]),
            ("mlp.layers.0.weight", vec![1024, 768]),
            ("mlp.layers.7.weight", vec![1, 16]),
        ] {
            assert_eq!(shapes.get(k), Some(&s), "{k}");
        }
        assert!(!shapes.contains_key("mlp.layers.8.weight"));
        let params: usize = shapes.values().map(|s| s.iter().product::<usize>()).sum();
        // rewards.md §5: ≈ 447 M (the checkpoint also holds BLIP's unused vision_proj / text_proj, 0.46 M).
        assert_eq!(params, 446_206_689);
    }

    /// ∂score/∂pixels through differentiable preprocessing (24 → 16 px), ViT, cross-attention BERT and head, in
    /// f64 against central differences. Measured: rel. error ≈ 1e-10.
    #[test]
    fn gradient_through_preprocessing_vit_bert_and_head_matches_finite_differences() {
        for out in [ImageRewardOutput::Raw, ImageRewardOutput::Normalized] {
            let r = reward(DType::F64, Preprocess::Differentiable, out, 24);
            let x = images(3, 24, 2, DType::F64);
            let cond = Cond::Labels(vec![2, 0, 1]);
            let g = grad_check(|x| r.score_tensor(x, &cond), &x, 7, 1e-5).unwrap();
            eprintln!("image_reward tiny f64 ({out:?}): {g:?}");
            assert!(g.analytic.abs() > 1e-8, "no gradient reached the pixels");
            assert!(g.rel_err <= 1e-6, "{g:?}");
        }
    }

    /// The [`Reward`] interface (f32 rows): `score_grad` against central differences of `score`.
    #[test]
    fn reward_interface_gradient_in_f32() {
        let r = reward(DType::F32, Preprocess::Differentiable, ImageRewardOutput::Raw, 24);
        let y: Vec<f32> = images(2, 24, 3, DType::F32).flatten_all().unwrap().to_vec1().unwrap();
        let cond = Cond::Labels(vec![1, 0]);
        let (mut out, mut g) = (vec![0f64; 2], vec![0f32; y.len()]);
        r.score_grad(&y, &cond, &mut out, &mut g).unwrap();
        let mut rng = Streams::new(9).rng(Purpose::Train, 1, 0);
        let v: Vec<f32> = (0..y.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let analytic: f64 = g.iter().zip(&v).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        let h = 1e-2f32;
        let shifted = |s: f32| -> f64 {
            let yy: Vec<f32> = y.iter().zip(&v).map(|(a, b)| a + s * b).collect();
            let mut o = vec![0f64; 2];
            r.score(&yy, &cond, &mut o).unwrap();
            o.iter().sum()
        };
        let fd = (shifted(h) - shifted(-h)) / (2.0 * h as f64);
        let rel = (fd - analytic).abs() / analytic.abs().max(1e-6);
        eprintln!("image_reward tiny f32 via Reward: fd {fd:.6} autograd {analytic:.6} rel {rel:.2e}");
        assert!(rel < 2e-2, "fd {fd} vs autograd {analytic}");
        let mut again = vec![0f64; 2];
        r.score(&y, &cond, &mut again).unwrap();
        assert_eq!(out, again, "score_grad and score give the same values");
    }

    #[test]
    fn prompts_rows_and_normalisation() {
        let raw = reward(DType::F64, Preprocess::Differentiable, ImageRewardOutput::Raw, 16);
        let z = reward(DType::F64, Preprocess::Differentiable, ImageRewardOutput::Normalized, 16);
        let y: Vec<f32> = images(2, 16, 4, DType::F32).flatten_all().unwrap().to_vec1().unwrap();
        let (mut a, mut b, mut c) = ([0f64; 2], [0f64; 2], [0f64; 2]);
        raw.score(&y, &Cond::Labels(vec![0, 1]), &mut a).unwrap();
        raw.score(&y, &Cond::Labels(vec![1, 1]), &mut b).unwrap();
        z.score(&y, &Cond::Labels(vec![0, 1]), &mut c).unwrap();
        assert!((a[0] - b[0]).abs() > 1e-9, "the prompt must matter");
        assert!((a[1] - b[1]).abs() < 1e-12, "same prompt, same image, same score (padding trimmed per batch)");
        for k in 0..2 {
            assert!((c[k] - (a[k] - RAW_MEAN) / RAW_STD).abs() < 1e-12);
        }
        assert!(raw.score(&y, &Cond::None, &mut a).unwrap_err().to_string().contains("prompt-conditioned"));
        assert!(raw.score(&y, &Cond::Labels(vec![0, 3]), &mut a).unwrap_err().to_string().contains("out of range"));
        let one = ImageReward::new(
            tiny_model(DType::F64, 1),
            &tiny_tokenizer(),
            &prompts()[..1],
            ImageRewardOutput::Raw,
            Preprocess::Differentiable,
            [3, 16, 16],
        )
        .unwrap();
        one.score(&y, &Cond::None, &mut b).unwrap();
        assert!((a[0] - b[0]).abs() < 1e-12, "one prompt serves Cond::None");
        assert_eq!(raw.input_dim(), 3 * 16 * 16);
    }

    use crate::metrics::spearman;

    /// rewards.md §7 parity on a tiny random model and 16 smooth images: at the encoder's resolution the paths differ
    /// by uint8 quantisation only; downsampling 3× adds the filter difference (bicubic + antialias vs bilinear).
    #[test]
    fn official_and_differentiable_paths_agree() {
        for (h, max_rel_gap, min_rho) in [(16usize, 0.02, 0.99), (48, 0.05, 0.95)] {
            let d = reward(DType::F32, Preprocess::Differentiable, ImageRewardOutput::Raw, h);
            let o = reward(DType::F32, Preprocess::Official, ImageRewardOutput::Raw, h);
            let y: Vec<f32> = images(16, h, 7, DType::F32).flatten_all().unwrap().to_vec1().unwrap();
            let cond = Cond::Labels((0..16).map(|i| i % 3).collect());
            let (mut a, mut b) = ([0f64; 16], [0f64; 16]);
            d.score(&y, &cond, &mut a).unwrap();
            o.score(&y, &cond, &mut b).unwrap();
            let gap = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            let spread = a.iter().cloned().fold(f64::MIN, f64::max) - a.iter().cloned().fold(f64::MAX, f64::min);
            let rho = spearman(&a, &b);
            println!("image_reward {h}px: official vs differentiable max |Δ| {gap:.4} (spread {spread:.4}), Spearman {rho:.3}");
            assert!(gap <= max_rel_gap * spread, "{h}px: gap {gap} of spread {spread}");
            assert!(rho >= min_rho, "{h}px: Spearman {rho}");
            assert!(!o.differentiable());
            let e = o.score_grad(&y, &cond, &mut a, &mut vec![0.0; y.len()]).unwrap_err().to_string();
            assert!(e.contains("preprocess: differentiable"), "{e}");
        }
    }

    /// Pads `text` with spaces to exactly `bytes` bytes (JSON allows trailing whitespace), so a tiny test
    /// configuration passes the pinned size of the real `med_config.json`.
    fn padded(text: &str, bytes: u64) -> String {
        format!("{text:<width$}", width = bytes as usize)
    }

    fn write_tiny_folder(dir: &Path, arch: &ImageRewardArch, seed: u64) -> HashMap<String, Tensor> {
        let mut w = random_weights(arch, seed, DType::F32).unwrap();
        let b = &arch.bert;
        let med = format!(
            r#"{{"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": {}, "intermediate_size": {},
            "layer_norm_eps": {:e}, "max_position_embeddings": {}, "model_type": "bert", "num_attention_heads": {},
            "num_hidden_layers": {}, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": {},
            "encoder_width": 768, "add_cross_attention": true}}"#,
            b.hidden, b.intermediate, b.eps, b.max_position, b.heads, b.layers, b.vocab_size
        );
        std::fs::write(dir.join("med_config.json"), padded(&med, MED_CONFIG.bytes)).unwrap();
        std::fs::write(dir.join("vocab.txt"), vocab(b.vocab_size - 2).join("\n") + "\n").unwrap();
        // Keys the real checkpoint carries and the model does not use.
        w.insert("blip.vision_proj.weight".into(), Tensor::zeros((4, 12), DType::F32, &Device::Cpu).unwrap());
        w.insert(
            "blip.text_encoder.embeddings.position_ids".into(),
            Tensor::zeros((1, b.max_position), DType::I64, &Device::Cpu).unwrap(),
        );
        candle_core::safetensors::save(&w, dir.join(SAFETENSORS_FILE)).unwrap();
        w
    }

    /// Tiny random weights written under the real checkpoint keys, with `med_config.json` and `vocab.txt`, load
    /// through the real loader from a folder and score like the same weights loaded in memory.
    #[test]
    fn loads_a_checkpoint_folder_under_the_real_key_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(IMAGE_REWARD_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let mut arch = ImageRewardArch::tiny();
        // vocab.txt must give ids that fit: 102 specials + [DEC]/[ENC] → at least 106 tokens.
        arch.bert.vocab_size = 120;
        let w = write_tiny_folder(&dir, &arch, 21);
        let loaded = load_model_with(&dir, &arch.vit, arch.head).unwrap();
        assert_eq!(loaded.arch(), &arch);
        let again = load_model_with(&dir, &arch.vit, arch.head).unwrap();
        assert!(Arc::ptr_eq(&loaded, &again), "loaded once per process");
        let tok = load_tokenizer(&dir, arch.bert.vocab_size).unwrap();
        assert_eq!((tok.token_id("[CLS]"), tok.token_id("[ENC]")), (Some(101), Some(119)));
        let in_memory =
            Arc::new(ImageRewardModel::load(VarBuilder::from_tensors(w, DType::F32, &Device::Cpu), &arch).unwrap());
        let p = vec!["a photo of a cat".to_string()];
        let mk = |m| ImageReward::new(m, &tok, &p, ImageRewardOutput::Normalized, Preprocess::Official, [3, 20, 20]);
        let (r1, r2) = (mk(loaded).unwrap(), mk(in_memory).unwrap());
        let y: Vec<f32> = images(2, 20, 5, DType::F32).flatten_all().unwrap().to_vec1().unwrap();
        let (mut a, mut b) = ([0f64; 2], [0f64; 2]);
        r1.score(&y, &Cond::None, &mut a).unwrap();
        r2.score(&y, &Cond::None, &mut b).unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|v| v.is_finite()));
        // A vocabulary that does not match the model's is refused, naming the file.
        let e = load_tokenizer(&dir, 30524).unwrap_err().to_string();
        assert!(e.contains("vocab.txt") && e.contains("30524"), "{e}");
    }

    #[test]
    fn missing_and_wrong_files_name_the_file_checksum_and_source() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = ImageRewardConfig::default();
        let p = vec!["a cat".to_string()];
        let e = image_reward(tmp.path(), &cfg, &p, [3, 64, 64]).err().unwrap().to_string();
        assert!(e.contains("med_config.json") && e.contains("THUDM/ImageReward"), "{e}");
        let dir = tmp.path().join(IMAGE_REWARD_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("med_config.json"), "{}").unwrap();
        let e = image_reward(tmp.path(), &cfg, &p, [3, 64, 64]).err().unwrap().to_string();
        assert!(e.contains("2 bytes, expected 485"), "{e}");
        let arch = ImageRewardArch::v1();
        let med = padded(
            &format!(
                r#"{{"hidden_act": "gelu", "hidden_size": 768, "intermediate_size": 3072, "layer_norm_eps": 1e-12,
                "max_position_embeddings": 512, "num_attention_heads": 12, "num_hidden_layers": 12,
                "vocab_size": {}}}"#,
                arch.bert.vocab_size
            ),
            485,
        );
        std::fs::write(dir.join("med_config.json"), med).unwrap();
        let e = image_reward(tmp.path(), &cfg, &p, [3, 64, 64]).err().unwrap().to_string();
        assert!(
            e.contains("ImageReward.pt") && e.contains("not pinned") && e.contains("huggingface.co/THUDM/ImageReward"),
            "{e}"
        );
        assert!(e.contains(SAFETENSORS_FILE), "{e}");
        // A truncated / foreign checkpoint is refused naming the file.
        std::fs::write(dir.join(SAFETENSORS_FILE), b"not a safetensors file").unwrap();
        let e = image_reward(tmp.path(), &cfg, &p, [3, 64, 64]).err().unwrap().to_string();
        assert!(e.contains(SAFETENSORS_FILE) || e.contains("safetensors"), "{e}");
    }

    /// The full v1.0 architecture with random weights (≈ 1.8 GB): shapes chain end to end, one image scores and
    /// differentiates. Slow; run with `cargo test --lib full_size -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn full_size_random_model_scores_and_differentiates() {
        let arch = ImageRewardArch::v1();
        let t0 = std::time::Instant::now();
        let vb = VarBuilder::from_tensors(random_weights(&arch, 1, DType::F32).unwrap(), DType::F32, &Device::Cpu);
        let model = Arc::new(ImageRewardModel::load(vb, &arch).unwrap());
        let mut v = vocab(30522);
        v[1000] = "ocean".into();
        let tok = WordPieceTokenizer::new(v, true).unwrap().with_added_specials(&["[DEC]", "[ENC]"]);
        let p = vec!["a painting of an ocean".to_string()];
        let r = ImageReward::new(model, &tok, &p, ImageRewardOutput::Raw, Preprocess::Differentiable, [3, 256, 256])
            .unwrap();
        println!("random v1.0 model built in {:.1} s", t0.elapsed().as_secs_f64());
        let y: Vec<f32> = images(1, 256, 3, DType::F32).flatten_all().unwrap().to_vec1().unwrap();
        let t1 = std::time::Instant::now();
        let mut out = [0f64];
        r.score(&y, &Cond::None, &mut out).unwrap();
        let t2 = std::time::Instant::now();
        let mut g = vec![0f32; y.len()];
        r.score_grad(&y, &Cond::None, &mut out, &mut g).unwrap();
        let norm = g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        println!(
            "score {:.4}: forward {:.2} s, forward+backward {:.2} s, ‖∇‖ {norm:.3e}",
            out[0],
            (t2 - t1).as_secs_f64(),
            t2.elapsed().as_secs_f64()
        );
        assert!(out[0].is_finite() && norm > 0.0 && norm.is_finite());
    }

    fn shared_data() -> Option<PathBuf> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/aesthetic");
        if p.exists() {
            Some(p)
        } else {
            crate::testing::missing("../shared/data/aesthetic is absent");
            None
        }
    }

    /// ImageReward's head has the layout of the LAION improved aesthetic head (Linear 768→1024→128→64→16→1 at
    /// `nn.Sequential` indices 0, 2, 4, 6, 7, no activations). Loading that real zip-format torch file through
    /// [`read_torch_checkpoint`] and the head code under `layers.*` reproduces its golden values, which checks the
    /// key indices, the layer order and the pickle path on real weights.
    #[test]
    fn head_layout_reproduces_the_laion_golden_values_on_real_weights() {
        let Some(dir) = shared_data() else { return };
        let t = read_torch_checkpoint(&dir.join("sac+logos+ava1-l14-linearMSE.pth")).unwrap();
        let renamed: HashMap<String, Tensor> = t.into_iter().map(|(k, v)| (format!("mlp.{k}"), v)).collect();
        let vb = VarBuilder::from_tensors(renamed, DType::F32, &Device::Cpu);
        let mut inp = 768;
        let mut head = Vec::new();
        for (k, &o) in HEAD_KEYS.iter().zip(&V1_HEAD) {
            head.push(Linear::load(vb.pp("mlp").pp("layers").pp(k), inp, o, true).unwrap());
            inp = o;
        }
        for (k, want) in [(0, 1.655480), (5, 4.701021), (9, 5.746761)] {
            let e = Tensor::read_npy(dir.join(format!("vit_l_14_embeddings/rating{k}.npy"))).unwrap();
            let mut x = e.to_dtype(DType::F32).unwrap().reshape((1, 768)).unwrap();
            for l in &head {
                x = l.forward(&x).unwrap();
            }
            let got = x.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] as f64;
            assert!((got - want).abs() < 1e-4, "rating{k}: {got} vs {want}");
        }
    }
}
