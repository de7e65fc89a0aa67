//! Tests of the parent module.

use super::*;
use crate::image::preprocess::{differentiable, official, CropRounding};
use crate::nn::testing::{check_grad, grad_check, random_tensor};

const DEV: Device = Device::Cpu;

fn tiny(dtype: DType) -> (ClipConfig, ClipModel) {
    let cfg = ClipConfig::tiny();
    let vb = VarBuilder::from_tensors(random_weights(&cfg, 7, dtype, &DEV).unwrap(), dtype, &DEV);
    let m = ClipModel::new(vb, &cfg).unwrap();
    (cfg, m)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn presets_are_consistent() {
    for cfg in [ClipConfig::vit_l_14(), ClipConfig::vit_h_14(), ClipConfig::tiny()] {
        cfg.validate().unwrap();
    }
    let l = ClipConfig::vit_l_14();
    assert_eq!((l.vision.image_size / l.vision.patch_size).pow(2) + 1, 257);
    assert_eq!(l.vision.width / l.vision.heads, 64);
    let h = ClipConfig::vit_h_14();
    assert_eq!(h.vision.width / h.vision.heads, 80);
    // ViT-L/14 parameter count: ≈ 428 M for the full HF CLIPModel (vision 303 M + text 123 M + projections).
    let n: usize = l.hf_tensor_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert!((427_000_000..429_000_000).contains(&n), "{n}");
    let n: usize = h.hf_tensor_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert!((985_000_000..988_000_000).contains(&n), "{n}"); // PickScore ≈ 986 M (rewards.md §3)
}

#[test]
fn forward_shapes_and_missing_weights() {
    let (cfg, m) = tiny(DType::F32);
    let px = random_tensor(&[3, 3, 16, 16], 1, DType::F32, &DEV).unwrap();
    assert_eq!(m.image_features(&px).unwrap().dims(), &[3, cfg.projection_dim]);
    let ids = Tensor::new(&[[1u32, 5, 63, 0, 0, 0], [1, 63, 63, 63, 63, 63]], &DEV).unwrap();
    assert_eq!(m.text_features(&ids).unwrap().dims(), &[2, cfg.projection_dim]);
    assert!((m.logit_scale_exp().unwrap().unwrap() - 100.0).abs() < 1e-3);
    let bad = random_tensor(&[1, 3, 12, 12], 1, DType::F32, &DEV).unwrap();
    assert!(m.image_features(&bad).unwrap_err().to_string().contains("expected pixels"));
    let mut w = random_weights(&cfg, 7, DType::F32, &DEV).unwrap();
    w.remove("vision_model.encoder.layers.1.mlp.fc2.bias");
    let err = ClipModel::new(VarBuilder::from_tensors(w, DType::F32, &DEV), &cfg).unwrap_err().to_string();
    assert!(err.contains("layers.1.mlp.fc2.bias"), "{err}");
}

#[test]
fn patch_embedding_equals_convolution_and_vision_loads_alone() {
    let cfg = ClipConfig::tiny();
    let mut w = random_weights(&cfg, 7, DType::F64, &DEV).unwrap();
    w.retain(|k, _| !k.starts_with("text_"));
    let tower = ClipVisionTower::new(VarBuilder::from_tensors(w, DType::F64, &DEV), &cfg).unwrap();
    let px = random_tensor(&[2, 3, 16, 16], 8, DType::F64, &DEV).unwrap();
    let ours = tower.features(&px).unwrap();
    // Reference: the same tower with candle's conv2d for the patch embedding.
    let conv = px.conv2d(&tower.patch_embedding, 0, 4, 1, 1).unwrap().flatten_from(2).unwrap();
    let conv = conv.transpose(1, 2).unwrap();
    let cls = tower.class_embedding.reshape((1, 1, 16)).unwrap().broadcast_as((2, 1, 16)).unwrap();
    let tokens = Tensor::cat(&[&cls, &conv], 1).unwrap();
    let tokens = tokens.broadcast_add(&tower.position_embedding.unsqueeze(0).unwrap()).unwrap();
    let x = tower.pre_layrnorm.forward(&tokens).unwrap();
    let x = tower.encoder.forward(&x, false).unwrap();
    let cls = tower.post_layernorm.forward(&x.narrow(1, 0, 1).unwrap().squeeze(1).unwrap()).unwrap();
    let reference = tower.visual_projection.forward(&cls).unwrap();
    assert!(max_abs_diff(&ours, &reference) < 1e-12);
}

#[test]
fn text_pooling_at_first_eos_and_padding_invariance() {
    assert_eq!(eos_positions(&[vec![1, 5, 9, 9, 9], vec![1, 9, 0, 0, 0], vec![3, 3, 3]]), vec![2, 1, 0]);
    let (_, m) = tiny(DType::F64);
    // EOS = 63 (largest id of the tiny vocabulary). Pad with EOS (HF openai) or with 0 (open_clip).
    let ids = Tensor::new(&[[62u32, 5, 17, 63, 63, 63, 63, 63], [62, 5, 17, 63, 0, 0, 0, 0]], &DEV).unwrap();
    let f = m.text_features(&ids).unwrap();
    let d = max_abs_diff(&f.get(0).unwrap(), &f.get(1).unwrap());
    assert!(d < 1e-12, "padding changed the text features by {d}");
    // Shorter rows (no padding at all) agree too, and a different token changes the features.
    let short = Tensor::new(&[[62u32, 5, 17, 63]], &DEV).unwrap();
    assert!(max_abs_diff(&m.text_features(&short).unwrap().get(0).unwrap(), &f.get(0).unwrap()) < 1e-12);
    let other = Tensor::new(&[[62u32, 6, 17, 63]], &DEV).unwrap();
    assert!(max_abs_diff(&m.text_features(&other).unwrap().get(0).unwrap(), &f.get(0).unwrap()) > 1e-6);
}

#[test]
fn image_features_gradient_wrt_pixels() {
    let (_, m) = tiny(DType::F64);
    let px = random_tensor(&[2, 3, 16, 16], 3, DType::F64, &DEV).unwrap();
    let c = grad_check(|x| m.image_features(x), &px, 9, 1e-5).unwrap();
    eprintln!("tiny CLIP image features w.r.t. pixels, f64: {c:?}");
    // The trap of rewards.md §9.1: a fused op would leave the pixel gradient at zero.
    assert!(c.analytic.abs() > 1e-3, "no gradient reached the pixels: {c:?}");
    assert!(c.rel_err < 1e-6, "{c:?}");
    // Normalised features (the cosine rewards) and f32.
    let e = check_grad(|x| l2_normalize(&m.image_features(x)?), &px, 10).unwrap();
    eprintln!("normalised features f64 FD rel err {e:.2e}");
    assert!(e < 1e-6);
    let (_, m32) = tiny(DType::F32);
    let e = check_grad(|x| m32.image_features(x), &px.to_dtype(DType::F32).unwrap(), 9).unwrap();
    eprintln!("tiny CLIP image features f32 FD rel err {e:.2e}");
    assert!(e < 1e-2);
}

#[test]
fn image_features_gradient_through_differentiable_preprocessing() {
    let (cfg, m) = tiny(DType::F64);
    let img =
        ((random_tensor(&[2, 3, 24, 24], 4, DType::F64, &DEV).unwrap().tanh().unwrap() * 0.5).unwrap() + 0.5).unwrap();
    let f = |x: &Tensor| m.image_features(&differentiable(x, cfg.vision.image_size)?);
    let c = grad_check(f, &img, 12, 1e-5).unwrap();
    eprintln!("tiny CLIP through differentiable preprocessing, f64: {c:?}");
    assert!(c.analytic.abs() > 1e-3 && c.rel_err < 1e-6, "{c:?}");
}

/// The real ViT-L/14 preset with random weights: loads, gives [1, 768] features and a finite, non-zero pixel
/// gradient through the differentiable preprocessing (slow: `cargo test --lib vit_l_14 -- --ignored`).
#[test]
#[ignore]
fn vit_l_14_preset_forward_and_backward() {
    let cfg = ClipConfig::vit_l_14();
    let t0 = std::time::Instant::now();
    let mut w = random_weights(&cfg, 1, DType::F32, &DEV).unwrap();
    w.retain(|k, _| !k.starts_with("text_"));
    let tower = ClipVisionTower::new(VarBuilder::from_tensors(w, DType::F32, &DEV), &cfg).unwrap();
    let t1 = std::time::Instant::now();
    let img = crate::image::preprocess::smooth_test_images(1, 256, 256, 3, &DEV).unwrap();
    let var = candle_core::Var::from_tensor(&img).unwrap();
    let f = tower.features(&differentiable(var.as_tensor(), 224).unwrap()).unwrap();
    assert_eq!(f.dims(), &[1, 768]);
    let t2 = std::time::Instant::now();
    let g = f.sum_all().unwrap().backward().unwrap();
    let g = g.get(var.as_tensor()).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    let t3 = std::time::Instant::now();
    eprintln!(
        "ViT-L/14 random weights: init+load {:.1}s, forward {:.1}s, backward {:.1}s, Σ|∂/∂pixels| = {g:.3e}",
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        (t3 - t2).as_secs_f64()
    );
    assert!(g.is_finite() && g > 0.0);
}

/// Inverse of `open_clip_to_hf`, written independently for the round trip.
fn hf_to_open_clip(hf: &HashMap<String, Tensor>, cfg: &ClipConfig) -> HashMap<String, Tensor> {
    let mut o = HashMap::new();
    let g = |k: &str| hf[k].clone();
    let pairs = [
        ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
        ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
        ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
        ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),
        ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
        ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
        ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
        ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
        ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
        ("ln_final.weight", "text_model.final_layer_norm.weight"),
        ("ln_final.bias", "text_model.final_layer_norm.bias"),
        ("logit_scale", "logit_scale"),
    ];
    for (oc, h) in pairs {
        o.insert(oc.to_string(), g(h));
    }
    o.insert("visual.proj".into(), g("visual_projection.weight").t().unwrap().contiguous().unwrap());
    o.insert("text_projection".into(), g("text_projection.weight").t().unwrap().contiguous().unwrap());
    for (oc_pre, hf_pre, n) in
        [("visual.transformer", "vision_model", cfg.vision.layers), ("transformer", "text_model", cfg.text.layers)]
    {
        for i in 0..n {
            let h = format!("{hf_pre}.encoder.layers.{i}");
            let oc = format!("{oc_pre}.resblocks.{i}");
            for kind in ["weight", "bias"] {
                let qkv: Vec<Tensor> =
                    ["q", "k", "v"].iter().map(|p| g(&format!("{h}.self_attn.{p}_proj.{kind}"))).collect();
                o.insert(format!("{oc}.attn.in_proj_{kind}"), Tensor::cat(&qkv, 0).unwrap());
                for (a, b) in [
                    ("ln_1", "layer_norm1"),
                    ("ln_2", "layer_norm2"),
                    ("attn.out_proj", "self_attn.out_proj"),
                    ("mlp.c_fc", "mlp.fc1"),
                    ("mlp.c_proj", "mlp.fc2"),
                ] {
                    o.insert(format!("{oc}.{a}.{kind}"), g(&format!("{h}.{b}.{kind}")));
                }
            }
        }
    }
    o
}

#[test]
fn open_clip_round_trip_gives_identical_outputs() {
    let cfg = ClipConfig::tiny();
    let hf = random_weights(&cfg, 21, DType::F32, &DEV).unwrap();
    let oc = hf_to_open_clip(&hf, &cfg);
    assert_eq!(oc.len(), hf.len() - 4 * (cfg.vision.layers + cfg.text.layers));
    let mut with_buffers = oc.clone();
    with_buffers.insert("attn_mask".into(), Tensor::zeros((8, 8), DType::F32, &DEV).unwrap());
    let back = open_clip_to_hf(with_buffers).unwrap();
    assert_eq!(back.len(), hf.len());
    for (k, v) in &hf {
        assert_eq!(back[k].dims(), v.dims(), "{k}");
        assert_eq!(max_abs_diff(&back[k], v), 0.0, "{k}");
    }
    let a = ClipModel::new(VarBuilder::from_tensors(hf, DType::F32, &DEV), &cfg).unwrap();
    let b = ClipModel::new(VarBuilder::from_tensors(back, DType::F32, &DEV), &cfg).unwrap();
    let px = random_tensor(&[2, 3, 16, 16], 5, DType::F32, &DEV).unwrap();
    assert_eq!(max_abs_diff(&a.image_features(&px).unwrap(), &b.image_features(&px).unwrap()), 0.0);
    let ids = Tensor::new(&[[62u32, 9, 63, 0]], &DEV).unwrap();
    assert_eq!(max_abs_diff(&a.text_features(&ids).unwrap(), &b.text_features(&ids).unwrap()), 0.0);
    // Unknown keys are refused with the key named.
    let mut bad = oc;
    bad.insert("visual.attn_pool.weight".into(), Tensor::zeros(1, DType::F32, &DEV).unwrap());
    assert!(open_clip_to_hf(bad).unwrap_err().to_string().contains("visual.attn_pool.weight"));
}

/// Official (PIL bicubic + crop, uint8) vs differentiable (bilinear matrices) preprocessing on 16 smooth seeded
/// images through the tiny CLIP: the feature cosine stays close to 1 (rewards.md §7 parity design).
#[test]
fn preprocessing_parity_on_tiny_clip() {
    let (cfg, m) = tiny(DType::F32);
    let s = cfg.vision.image_size;
    let n = 16;
    let side = 40;
    let imgs = crate::image::preprocess::smooth_test_images(n, side, side, 77, &DEV).unwrap();
    let pa = official(&imgs, s, CropRounding::Torchvision).unwrap();
    let pb = differentiable(&imgs, s).unwrap();
    let gap = (&pa - &pb).unwrap().abs().unwrap().flatten_all().unwrap();
    let (mean_gap, max_gap) =
        (gap.mean(0).unwrap().to_scalar::<f32>().unwrap(), gap.max(0).unwrap().to_scalar::<f32>().unwrap());
    eprintln!("parity pixels (normalised units): mean |Δ| {mean_gap:.4}, max |Δ| {max_gap:.4}");
    assert!(max_gap < 0.1, "{max_gap}");
    let a = m.image_features(&pa).unwrap();
    let b = m.image_features(&pb).unwrap();
    let cos = (l2_normalize(&a).unwrap() * l2_normalize(&b).unwrap()).unwrap().sum(1).unwrap();
    let cos = cos.to_vec1::<f32>().unwrap();
    let worst = cos.iter().cloned().fold(f32::INFINITY, f32::min);
    let mean = cos.iter().sum::<f32>() / n as f32;
    eprintln!("parity over {n} images ({side}px → {s}px): cosine mean {mean:.5}, min {worst:.5}");
    assert!(worst > 0.99, "{cos:?}");
}
