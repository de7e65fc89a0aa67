//! The CLIP-tower rewards of the DAS paper (rewards.md §2–§4, §6): `aesthetic` (LAION head on the L2-normalised
//! ViT-L/14 image embedding), `pickscore` (ViT-H/14, cosine or logit-scaled), `hpsv2` (open_clip ViT-H-14
//! checkpoints, cosine) and `clip_score` (ViT-L/14, scale × cosine).
//!
//! One [`ClipReward`] serves all four: images (rows [3, H, W] in [0, 1], the range declared by the decoder) go
//! through the chosen preprocessing path — the differentiable tensor path (bilinear resize as matrices, CLIP
//! normalisation) for guidance, or the official uint8/bicubic/centre-crop path for evaluation — then the image
//! tower; prompt rewards compare with the prompt's text embedding (computed once per prompt, the row's prompt is
//! `Cond::Labels`). Gradients w.r.t. the pixels come from candle's autograd through the project's own
//! differentiable blocks (`crate::nn`), and are checked against finite differences on a tiny random-weight tower.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarBuilder;

use super::aesthetic_head::{AestheticHead, HeadKind};
use super::image_configs::{AestheticHeadChoice, HpsVersion, PickOutput, Preprocess};
use super::weights::{shared, verify, WeightFile, CLIP_VIT_L_14, HPS_V2_0, HPS_V2_1, PICKSCORE_V1};
use super::Reward;
use crate::diffusion::Cond;
use crate::image::preprocess::{self, CropRounding};
use crate::models::clip::{l2_normalize, open_clip_to_hf, ClipConfig, ClipModel};
use crate::models::clip_tokenizer::ClipTokenizer;
use crate::{Error, Result};

/// What the embedding is turned into.
#[derive(Clone, Debug)]
pub enum Head {
    /// Affine LAION head on ê (aesthetic).
    Aesthetic(Arc<AestheticHead>),
    /// `scale`·⟨ê_img, ê_txt(prompt)⟩ (PickScore cosine or logit, HPS, CLIPScore).
    PromptCosine {
        /// Normalised text embeddings [prompts, d].
        text: Tensor,
        /// Multiplier (1, 20 or exp(logit_scale)).
        scale: f64,
    },
}

/// A CLIP-tower reward on images of shape [3, h, w].
pub struct ClipReward {
    name: String,
    scale_doc: String,
    model: Arc<ClipModel>,
    head: Head,
    preprocess: Preprocess,
    size: usize,
    shape: [usize; 3],
}

impl ClipReward {
    /// Assemble from a loaded model (tests build tiny random ones). `size` is the tower's input resolution.
    pub fn from_parts(
        name: impl Into<String>,
        scale_doc: impl Into<String>,
        model: Arc<ClipModel>,
        head: Head,
        preprocess: Preprocess,
        size: usize,
        shape: [usize; 3],
    ) -> Result<Self> {
        if shape[0] != 3 {
            return Err(Error::config(format!("CLIP rewards score RGB images [3, h, w]; the decoder gives {shape:?}")));
        }
        Ok(ClipReward { name: name.into(), scale_doc: scale_doc.into(), model, head, preprocess, size, shape })
    }

    /// Normalised text embeddings of `prompts` ([prompts, d]).
    pub fn embed_prompts(model: &ClipModel, tok: &ClipTokenizer, prompts: &[String]) -> Result<Tensor> {
        if prompts.is_empty() {
            return Err(Error::config("prompt rewards need at least one prompt"));
        }
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let ids = tok.batch(&refs, model.device())?;
        l2_normalize(&model.text_features(&ids)?)
    }

    fn pixels(&self, images: &Tensor) -> Result<Tensor> {
        match self.preprocess {
            Preprocess::Differentiable => preprocess::differentiable(images, self.size),
            Preprocess::Official => preprocess::official(images, self.size, CropRounding::Torchvision),
        }
    }

    /// Scores [n] of images [n, 3, h, w] (a tensor, so gradients can flow).
    pub fn score_tensor(&self, images: &Tensor, cond: &Cond) -> Result<Tensor> {
        let e = l2_normalize(&self.model.image_features(&self.pixels(images)?)?)?;
        let n = e.dim(0)?;
        match &self.head {
            Head::Aesthetic(h) => {
                let w = Tensor::from_vec(h.w.iter().map(|&v| v as f32).collect::<Vec<_>>(), (h.dim(), 1), e.device())?
                    .to_dtype(e.dtype())?;
                Ok((e.matmul(&w)?.squeeze(1)? + h.b)?)
            }
            Head::PromptCosine { text, scale } => {
                let idx: Vec<u32> = match cond {
                    Cond::Labels(l) if l.len() == n => l.iter().map(|&c| c as u32).collect(),
                    Cond::Labels(l) => {
                        return Err(Error::config(format!("{}: {} prompt labels for {n} images", self.name, l.len())))
                    }
                    Cond::None if text.dim(0)? == 1 => vec![0; n],
                    Cond::None => {
                        return Err(Error::config(format!(
                            "{} is prompt-conditioned: the problem must give each sample's prompt",
                            self.name
                        )))
                    }
                };
                if let Some(bad) = idx.iter().find(|&&i| i as usize >= text.dim(0).unwrap_or(0)) {
                    return Err(Error::config(format!("{}: prompt index {bad} out of range", self.name)));
                }
                let t = text.index_select(&Tensor::new(idx, e.device())?, 0)?.to_dtype(e.dtype())?;
                Ok(((e * t)?.sum(D::Minus1)? * *scale)?)
            }
        }
    }

    fn images(&self, y: &[f32]) -> Result<Tensor> {
        let [c, h, w] = self.shape;
        let n = y.len() / (c * h * w);
        Ok(Tensor::from_vec(y.to_vec(), (n, c, h, w), self.model.device())?)
    }
}

impl Reward for ClipReward {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn differentiable(&self) -> bool {
        self.preprocess == Preprocess::Differentiable
    }
    fn scale(&self) -> String {
        self.scale_doc.clone()
    }
    fn input_dim(&self) -> usize {
        self.shape.iter().product()
    }
    fn score(&self, y: &[f32], cond: &Cond, out: &mut [f64]) -> Result<()> {
        let s: Vec<f32> = self.score_tensor(&self.images(y)?, cond)?.to_dtype(DType::F32)?.to_vec1()?;
        out.iter_mut().zip(s).for_each(|(o, v)| *o = v as f64);
        Ok(())
    }
    fn score_grad(&self, y: &[f32], cond: &Cond, out: &mut [f64], grad: &mut [f32]) -> Result<()> {
        if !self.differentiable() {
            return Err(Error::config(format!(
                "{}: the official preprocessing (uint8, bicubic) has no gradient; use `preprocess: differentiable`",
                self.name
            )));
        }
        let x = Var::from_tensor(&self.images(y)?)?;
        let s = self.score_tensor(x.as_tensor(), cond)?;
        let g = s.sum_all()?.backward()?;
        let gx = g.get(x.as_tensor()).ok_or_else(|| Error::numeric("clip reward", "no gradient reached the pixels"))?;
        let gv: Vec<f32> = gx.flatten_all()?.to_vec1()?;
        grad.copy_from_slice(&gv);
        let sv: Vec<f32> = s.to_vec1()?;
        out.iter_mut().zip(sv).for_each(|(o, v)| *o = v as f64);
        Ok(())
    }
}

/// Loads an HF-layout CLIP checkpoint (`model.safetensors` in `dir`), verified, onto `device`, once per process
/// and device.
pub fn load_hf_clip(dir: &Path, file: &WeightFile, cfg: &ClipConfig, device: &Device) -> Result<Arc<ClipModel>> {
    let path = dir.join(file.file);
    let key = format!("clip:{}:{:?}", path.display(), device.location());
    shared(&key, || {
        verify(&path, file)?;
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, device)? };
        ClipModel::new(vb, cfg)
    })
}

/// Loads an open_clip checkpoint (HPSv2 `.pt`, torch zip pickle), renamed to the HF layout, onto `device`, once per
/// process and device.
pub fn load_open_clip(path: &Path, file: &WeightFile, cfg: &ClipConfig, device: &Device) -> Result<Arc<ClipModel>> {
    let key = format!("open_clip:{}:{:?}", path.display(), device.location());
    shared(&key, || {
        verify(path, file)?;
        let raw = candle_core::pickle::read_all_with_key(path, Some("state_dict"))
            .or_else(|_| candle_core::pickle::read_all(path))
            .map_err(|e| Error::file(path, format!("cannot read the torch checkpoint: {e}")))?;
        let map = raw.into_iter().map(|(k, v)| (k.trim_start_matches("module.").to_string(), v)).collect();
        let vb = VarBuilder::from_tensors(open_clip_to_hf(map)?, DType::F32, device);
        ClipModel::new(vb, cfg)
    })
}

/// The tokenizer files (`vocab.json`, `merges.txt`) of a folder, with a clear error when absent.
pub fn load_tokenizer(dir: &Path) -> Result<ClipTokenizer> {
    let (v, m) = (dir.join("vocab.json"), dir.join("merges.txt"));
    for f in [&v, &m] {
        if !f.exists() {
            return Err(Error::file(
                f,
                "CLIP tokenizer file not found; download `tokenizer/vocab.json` and `tokenizer/merges.txt` of \
                 openai/clip-vit-large-patch14 (https://huggingface.co/openai/clip-vit-large-patch14) into this folder",
            ));
        }
    }
    ClipTokenizer::from_files(&v, &m)
}

/// Folder names under the models folder.
pub const CLIP_L_DIR: &str = "clip-vit-large-patch14";
/// See [`CLIP_L_DIR`].
pub const PICKSCORE_DIR: &str = "PickScore_v1";
/// See [`CLIP_L_DIR`].
pub const HPS_DIR: &str = "HPSv2";

/// `aesthetic` from a models folder: `<dir>/clip-vit-large-patch14/model.safetensors` and the head file in `<dir>`;
/// the CLIP tower runs on `device` (the Stable Diffusion device on a GPU run).
pub fn aesthetic(
    dir: &Path,
    head: AestheticHeadChoice,
    pre: Preprocess,
    shape: [usize; 3],
    device: &Device,
) -> Result<ClipReward> {
    let model = load_hf_clip(&dir.join(CLIP_L_DIR), &CLIP_VIT_L_14, &ClipConfig::vit_l_14(), device)?;
    let kind = match head {
        AestheticHeadChoice::ImprovedMlp => HeadKind::ImprovedMlp,
        AestheticHeadChoice::Linear => HeadKind::Linear,
    };
    let hp = dir.join(kind.file().file);
    let h = shared(&format!("aesthetic-head:{}", hp.display()), || AestheticHead::load(&hp, kind))?;
    ClipReward::from_parts(
        format!("aesthetic({kind:?})"),
        "AVA rating 1–10",
        model,
        Head::Aesthetic(h),
        pre,
        224,
        shape,
    )
}

/// `pickscore`, `clip_score` and `hpsv2` from a models folder, for the given prompts, the tower on `device`.
pub fn prompt_reward(
    dir: &Path,
    which: PromptModel,
    prompts: &[String],
    pre: Preprocess,
    shape: [usize; 3],
    device: &Device,
) -> Result<ClipReward> {
    // DAS tokenises with the openai/clip-vit-large-patch14 processor for every CLIP model (same BPE vocabulary).
    let tok_dir = dir.join(CLIP_L_DIR);
    let (model, tok, name, doc, mult): (Arc<ClipModel>, ClipTokenizer, String, String, Option<f64>) = match which {
        PromptModel::PickScore(out) => {
            let m = load_hf_clip(&dir.join(PICKSCORE_DIR), &PICKSCORE_V1, &ClipConfig::vit_h_14(), device)?;
            let mult = match out {
                PickOutput::Cosine => Some(1.0),
                PickOutput::Logit => None,
            };
            let doc = if mult.is_some() { "cosine ≈ 0.20–0.23" } else { "exp(logit_scale)·cosine ≈ 18–23" };
            (m, load_tokenizer(&tok_dir)?, format!("pickscore({out:?})"), doc.into(), mult)
        }
        PromptModel::ClipScore(scale) => {
            let m = load_hf_clip(&dir.join(CLIP_L_DIR), &CLIP_VIT_L_14, &ClipConfig::vit_l_14(), device)?;
            (m, load_tokenizer(&tok_dir)?, format!("clip_score(×{scale})"), format!("{scale} × cosine"), Some(scale))
        }
        PromptModel::Hps(v) => {
            let file = match v {
                HpsVersion::V2_0 => HPS_V2_0,
                HpsVersion::V2_1 => HPS_V2_1,
            };
            let m = load_open_clip(&dir.join(HPS_DIR).join(file.file), &file, &ClipConfig::vit_h_14(), device)?;
            // open_clip pads with 0; the pooled EOS embedding does not depend on it (causal mask).
            (
                m,
                load_tokenizer(&tok_dir)?.with_pad_id(0),
                format!("hpsv2({v:?})"),
                "cosine ≈ 0.24–0.31".into(),
                Some(1.0),
            )
        }
    };
    let scale = match mult {
        Some(s) => s,
        None => model.logit_scale_exp()?.ok_or_else(|| Error::config("pickscore: checkpoint has no logit_scale"))?,
    };
    let text = ClipReward::embed_prompts(&model, &tok, prompts)?;
    ClipReward::from_parts(name, doc, model, Head::PromptCosine { text, scale }, pre, 224, shape)
}

/// Which prompt-conditioned CLIP reward.
#[derive(Clone, Copy, Debug)]
pub enum PromptModel {
    /// PickScore v1.
    PickScore(PickOutput),
    /// CLIPScore × scale.
    ClipScore(f64),
    /// HPS v2.x.
    Hps(HpsVersion),
}

/// The models folder of a reward: its `weights:` key or env ALIGNBENCH_MODELS.
pub fn weights_dir(explicit: &Option<String>) -> Result<PathBuf> {
    super::weights::models_dir(explicit.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::clip::random_weights;
    use crate::rng::{Purpose, Streams};
    use rand::Rng;

    fn tiny(seed: u64) -> (Arc<ClipModel>, ClipConfig) {
        let cfg = ClipConfig::tiny();
        let w = random_weights(&cfg, seed, DType::F32, &Device::Cpu).unwrap();
        let vb = VarBuilder::from_tensors(w, DType::F32, &Device::Cpu);
        (Arc::new(ClipModel::new(vb, &cfg).unwrap()), cfg)
    }

    fn images(n: usize, h: usize, seed: u64) -> Vec<f32> {
        let t = preprocess::smooth_test_images(n, h, h, seed, &Device::Cpu).unwrap();
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn aesthetic_tiny(pre: Preprocess) -> ClipReward {
        let (m, cfg) = tiny(1);
        let d = cfg.projection_dim;
        let mut rng = Streams::new(2).rng(Purpose::Train, 0, 0);
        let w: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let head = AestheticHead::from_layers(vec![(w, vec![0.3], d, 1)]).unwrap();
        ClipReward::from_parts(
            "aesthetic(tiny)",
            "test",
            m,
            Head::Aesthetic(Arc::new(head)),
            pre,
            cfg.vision.image_size,
            [3, 24, 24],
        )
        .unwrap()
    }

    #[test]
    fn clip_reward_on_cuda_matches_the_cpu_where_a_gpu_is_present() {
        // The towers follow the device of their weights: the same tiny reward on the CPU and on CUDA gives the same
        // score and pixel gradient (f32, ≤ 1e-4 relative).
        let Ok(gpu) = Device::new_cuda(0) else {
            eprintln!("SKIP: no CUDA device here (build with --features cuda and run on a GPU machine)");
            return;
        };
        let cpu = aesthetic_tiny(Preprocess::Differentiable);
        let cfg = ClipConfig::tiny();
        let w = random_weights(&cfg, 1, DType::F32, &gpu).unwrap();
        let model = Arc::new(ClipModel::new(VarBuilder::from_tensors(w, DType::F32, &gpu), &cfg).unwrap());
        assert!(model.device().is_cuda());
        let on_gpu =
            ClipReward::from_parts("g", "t", model, cpu.head.clone(), cpu.preprocess, cpu.size, [3, 24, 24]).unwrap();
        let y = images(2, 24, 3);
        let run = |r: &ClipReward| {
            let (mut out, mut g) = (vec![0f64; 2], vec![0f32; y.len()]);
            r.score_grad(&y, &Cond::None, &mut out, &mut g).unwrap();
            (out, g)
        };
        let ((s0, g0), (s1, g1)) = (run(&cpu), run(&on_gpu));
        let gmax = g0.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in s0.iter().zip(&s1) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "score {a} vs {b}");
        }
        for (a, b) in g0.iter().zip(&g1) {
            assert!((a - b).abs() <= 1e-4 * gmax, "gradient {a} vs {b}");
        }
    }

    fn directional_fd(r: &ClipReward, y: &[f32], cond: &Cond) -> (f64, f64) {
        let n = y.len() / r.input_dim();
        let (mut out, mut g) = (vec![0f64; n], vec![0f32; y.len()]);
        r.score_grad(y, cond, &mut out, &mut g).unwrap();
        let mut rng = Streams::new(9).rng(Purpose::Train, 1, 0);
        let v: Vec<f32> = (0..y.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let analytic: f64 = g.iter().zip(&v).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        let h = 1e-2f32;
        let shift = |s: f32| -> f64 {
            let yy: Vec<f32> = y.iter().zip(&v).map(|(a, b)| a + s * b).collect();
            let mut o = vec![0f64; n];
            r.score(&yy, cond, &mut o).unwrap();
            o.iter().sum()
        };
        ((shift(h) - shift(-h)) / (2.0 * h as f64), analytic)
    }

    #[test]
    fn aesthetic_gradient_through_preprocess_and_tower_matches_finite_differences() {
        let r = aesthetic_tiny(Preprocess::Differentiable);
        let y = images(2, 24, 3);
        let (fd, an) = directional_fd(&r, &y, &Cond::None);
        let rel = (fd - an).abs() / an.abs().max(1e-6);
        println!("aesthetic tiny: fd {fd:.6} autograd {an:.6} rel {rel:.2e}");
        assert!(an.abs() > 1e-6, "no gradient reached the pixels");
        assert!(rel < 2e-2, "fd {fd} vs autograd {an} (rel {rel})");
    }

    #[test]
    fn prompt_cosine_uses_each_rows_prompt_and_has_a_correct_gradient() {
        let (m, cfg) = tiny(4);
        let mut rng = Streams::new(5).rng(Purpose::Train, 0, 0);
        let d = cfg.projection_dim;
        let t: Vec<f32> = (0..2 * d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let text = l2_normalize(&Tensor::from_vec(t, (2, d), &Device::Cpu).unwrap()).unwrap();
        let r = ClipReward::from_parts(
            "clip_score(tiny)",
            "test",
            m,
            Head::PromptCosine { text, scale: 20.0 },
            Preprocess::Differentiable,
            cfg.vision.image_size,
            [3, 24, 24],
        )
        .unwrap();
        let y = images(2, 24, 6);
        let (mut a, mut b) = ([0f64; 2], [0f64; 2]);
        r.score(&y, &Cond::Labels(vec![0, 1]), &mut a).unwrap();
        r.score(&y, &Cond::Labels(vec![1, 0]), &mut b).unwrap();
        assert!((a[0] - b[0]).abs() > 1e-6, "the prompt must matter");
        assert!(a.iter().all(|v| v.abs() <= 20.0 + 1e-4), "scale × cosine is bounded by the scale: {a:?}");
        let (fd, an) = directional_fd(&r, &y, &Cond::Labels(vec![1, 0]));
        assert!((fd - an).abs() / an.abs().max(1e-6) < 2e-2, "fd {fd} vs autograd {an}");
        assert!(r.score(&y, &Cond::None, &mut a).unwrap_err().to_string().contains("prompt-conditioned"));
    }

    use crate::metrics::spearman;

    /// The parity test of rewards.md §7 on a tiny random tower and smooth images: at the tower's own resolution the
    /// two paths differ only by uint8 quantisation; when downsampling 3× also by the resampling filter (bicubic with
    /// antialias vs bilinear without). Measured: max |Δ| 0.002 / 0.003 of a spread of ≈ 0.86, Spearman 1.0.
    #[test]
    fn official_and_differentiable_paths_agree() {
        let (diff, off) = (aesthetic_tiny(Preprocess::Differentiable), aesthetic_tiny(Preprocess::Official));
        let spread =
            |a: &[f64]| a.iter().cloned().fold(f64::MIN, f64::max) - a.iter().cloned().fold(f64::MAX, f64::min);
        for (h, max_rel_gap, min_rho) in [(16usize, 0.02, 0.99), (48, 0.05, 0.95)] {
            let shaped = |r: &ClipReward| {
                ClipReward::from_parts("t", "t", r.model.clone(), r.head.clone(), r.preprocess, r.size, [3, h, h])
                    .unwrap()
            };
            let (d2, o2) = (shaped(&diff), shaped(&off));
            let y = images(16, h, 7);
            let (mut a, mut b) = ([0f64; 16], [0f64; 16]);
            d2.score(&y, &Cond::None, &mut a).unwrap();
            o2.score(&y, &Cond::None, &mut b).unwrap();
            let gap = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            let rho = spearman(&a, &b);
            println!(
                "{h}px: official vs differentiable max |Δ| {gap:.4} (spread {:.4}), Spearman {rho:.3}",
                spread(&a)
            );
            assert!(gap <= max_rel_gap * spread(&a), "{h}px: gap {gap}");
            assert!(rho >= min_rho, "{h}px: Spearman {rho}");
        }
        assert!(!off.differentiable());
        let y = images(1, 24, 1);
        assert!(off.score_grad(&y, &Cond::None, &mut [0.0], &mut vec![0.0; y.len()]).is_err());
    }

    #[test]
    fn missing_weights_name_the_file_and_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let e = aesthetic(
            dir.path(),
            AestheticHeadChoice::ImprovedMlp,
            Preprocess::Differentiable,
            [3, 64, 64],
            &Device::Cpu,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("clip-vit-large-patch14") && e.contains("model.safetensors") && e.contains("huggingface"),
            "{e}"
        );
        let e = load_tokenizer(dir.path()).err().unwrap().to_string();
        assert!(e.contains("vocab.json"), "{e}");
    }
}
