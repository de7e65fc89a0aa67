//! Tests of the parent module.

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
        println!(
            "image_reward {h}px: official vs differentiable max |Δ| {gap:.4} (spread {spread:.4}), Spearman {rho:.3}"
        );
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
    let loaded = load_model_with(&dir, &arch.vit, arch.head, &Device::Cpu).unwrap();
    assert_eq!(loaded.arch(), &arch);
    let again = load_model_with(&dir, &arch.vit, arch.head, &Device::Cpu).unwrap();
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
    let e = image_reward(tmp.path(), &cfg, &p, [3, 64, 64], &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("med_config.json") && e.contains("THUDM/ImageReward"), "{e}");
    let dir = tmp.path().join(IMAGE_REWARD_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("med_config.json"), "{}").unwrap();
    let e = image_reward(tmp.path(), &cfg, &p, [3, 64, 64], &Device::Cpu).err().unwrap().to_string();
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
    let e = image_reward(tmp.path(), &cfg, &p, [3, 64, 64], &Device::Cpu).err().unwrap().to_string();
    assert!(
        e.contains("ImageReward.pt") && e.contains("not pinned") && e.contains("huggingface.co/THUDM/ImageReward"),
        "{e}"
    );
    assert!(e.contains(SAFETENSORS_FILE), "{e}");
    // A truncated / foreign checkpoint is refused naming the file.
    std::fs::write(dir.join(SAFETENSORS_FILE), b"not a safetensors file").unwrap();
    let e = image_reward(tmp.path(), &cfg, &p, [3, 64, 64], &Device::Cpu).err().unwrap().to_string();
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
    let r =
        ImageReward::new(model, &tok, &p, ImageRewardOutput::Raw, Preprocess::Differentiable, [3, 256, 256]).unwrap();
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
