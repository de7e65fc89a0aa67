//! Tests of the FMNIST-align training.

use super::stages::*;
use super::*;
use crate::problems::mini::assets::{MiniAssets, FILES};
use crate::problems::mini::data::{PIXELS, SIDE};
use candle_core::{DType, Device};

#[test]
fn default_config_matches_the_yaml_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let full = MiniTrainConfig::from_file(&root.join("experiments/mini/train.yaml")).unwrap();
    assert_eq!(full, MiniTrainConfig::default());
    let smoke = MiniTrainConfig::from_file(&root.join("experiments/mini/train-smoke.yaml")).unwrap();
    assert_eq!(smoke.data.n_train, Some(2000));
    let e = yaml_serde::from_str::<MiniTrainConfig>("version: 1\nae: {epochs: 1, bogus: 2}\n").unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
}

#[test]
fn independent_stages_share_a_wave() {
    let cfg = MiniTrainConfig::default();
    let w = waves(&Stage::All.expand(), &cfg);
    assert_eq!(w, vec![vec![Stage::Ae], vec![Stage::Ddpm, Stage::ClfA, Stage::ClfB], vec![Stage::Style]]);
    assert_eq!(waves(&[Stage::ClfB], &cfg), vec![vec![Stage::ClfB]]);
}

#[test]
fn ridge_recovers_a_linear_map_and_schedules_are_sane() {
    let d = 3;
    let x: Vec<f64> = (0..300).map(|i| ((i * 7919) % 101) as f64 / 101.0 - 0.5).collect();
    let y: Vec<f64> = x.chunks(d).map(|r| 2.0 * r[0] - r[1] + 0.5 * r[2] + 0.25).collect();
    let (w, b) = ridge(&x, &y, d, 0.0).unwrap();
    for (a, t) in w.iter().zip([2.0, -1.0, 0.5]) {
        assert!((a - t).abs() < 1e-5, "{w:?}");
    }
    assert!((b - 0.25).abs() < 1e-5);
    assert!((lr_at(0, 100, 10, 1.0, 0.0) - 0.1).abs() < 1e-12);
    assert!((lr_at(10, 100, 10, 1.0, 0.1) - 1.0).abs() < 1e-12);
    assert!((lr_at(100, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
    let mut out = vec![0f32; PIXELS];
    let x: Vec<f32> = (0..PIXELS).map(|i| i as f32).collect();
    shift_image(&x, 1, -2, &mut out);
    assert_eq!(out[SIDE + 3], x[5]);
    assert_eq!(out[0], 0.0);
    assert_eq!(accuracy(&[0.0, 1.0, 2.0, 0.5], &[1, 0]), 1.0);
}

/// The smoke configuration trained twice (on the real data when installed, else on a synthetic stand-in)
/// gives bit-identical weights; a second run over the same folder skips every stage.
#[test]
fn smoke_training_is_reproducible_and_resumable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cfg = MiniTrainConfig::from_file(&root.join("experiments/mini/train-smoke.yaml")).unwrap();
    let data = match FashionMnist::load(None) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("Fashion-MNIST not installed, training on synthetic images instead: {e}");
            FashionMnist::synthetic(2000, 500, 1)
        }
    };
    // Keep the test quick: fewer DDPM steps than the CI smoke config.
    cfg.ddpm.steps = 60;
    cfg.ddpm.eval_rows = 500;
    cfg.data.n_test = Some(500);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut manifests = Vec::new();
    // One stage at a time, then the independent stages concurrently: the same weights.
    for (d, jobs) in dirs.iter().zip([1, 3]) {
        let opts = TrainOptions { out: d.path().to_path_buf(), stage: Stage::All, fresh: false, progress: false, jobs };
        let r = train(&data, &cfg, &opts).unwrap();
        assert!(r.iter().all(|s| !s.skipped));
        manifests.push(Manifest::read(d.path()).unwrap());
    }
    for f in FILES {
        assert_eq!(manifests[0].files[f].sha256, manifests[1].files[f].sha256, "{f}");
        assert_eq!(manifests[0].files[f].config_hash, manifests[1].files[f].config_hash, "{f}");
    }
    let opts =
        TrainOptions { out: dirs[0].path().to_path_buf(), stage: Stage::All, fresh: false, progress: false, jobs: 2 };
    assert!(train(&data, &cfg, &opts).unwrap().iter().all(|s| s.skipped));
    // A changed DDPM config retrains the DDPM only.
    cfg.ddpm.steps = 61;
    let r = train(&data, &cfg, &opts).unwrap();
    let ran: Vec<Stage> = r.iter().filter(|s| !s.skipped).map(|s| s.stage).collect();
    assert_eq!(ran, vec![Stage::Ddpm]);
    // Every artifact loads through the verified path.
    let a = MiniAssets::open(Some(dirs[0].path())).unwrap();
    let dev = Device::Cpu;
    a.autoencoder(DType::F32, &dev).unwrap();
    a.eps_mlp(DType::F32, &dev).unwrap();
    a.classifier_a(DType::F32, &dev).unwrap();
    a.classifier_b(DType::F32, &dev).unwrap();
    a.style_a(DType::F32, &dev).unwrap();
    a.style_b(DType::F32, &dev).unwrap();
    // A corrupted file is reported with the fix.
    std::fs::write(dirs[0].path().join(FILES[2]), b"junk").unwrap();
    let e = a.classifier_a(DType::F32, &dev).unwrap_err().to_string();
    assert!(e.contains("clf_a.safetensors") && e.contains("alignbench train mini"), "{e}");
}
