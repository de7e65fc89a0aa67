//! Tests of the parent module.

use super::*;

/// Directional finite-difference check of ∂(Σ v·f(x))/∂x in f64; returns the relative error.
pub(crate) fn fd_check(f: &dyn Fn(&Tensor) -> Result<Tensor>, x: &[f64], shape: &[usize], seed: u64) -> f64 {
    let dev = Device::Cpu;
    let xv = candle_core::Var::from_tensor(&Tensor::from_slice(x, shape, &dev).unwrap()).unwrap();
    let y = f(xv.as_tensor()).unwrap();
    let mut rng = Streams::new(seed).rng(Purpose::Train, 77, 0);
    let mut v = vec![0f32; y.elem_count()];
    fill_normal(&mut rng, &mut v);
    let v = Tensor::from_vec(v, y.shape(), &dev).unwrap().to_dtype(DType::F64).unwrap();
    let s = (&y * &v).unwrap().sum_all().unwrap();
    let g = s.backward().unwrap();
    let gx: Vec<f64> = g.get(xv.as_tensor()).expect("no gradient w.r.t. x").flatten_all().unwrap().to_vec1().unwrap();
    let mut d = vec![0f32; x.len()];
    fill_normal(&mut rng, &mut d);
    let analytic: f64 = gx.iter().zip(&d).map(|(a, b)| a * *b as f64).sum();
    let h = 1e-5;
    let eval = |sgn: f64| -> f64 {
        let xs: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + sgn * h * *b as f64).collect();
        let y = f(&Tensor::from_slice(&xs, shape, &dev).unwrap()).unwrap();
        (&y * &v).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
    };
    let numeric = (eval(1.0) - eval(-1.0)) / (2.0 * h);
    (analytic - numeric).abs() / numeric.abs().max(analytic.abs()).max(1e-8)
}

pub(crate) fn images(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Streams::new(seed).rng(Purpose::Train, 78, 0);
    (0..n * PIXELS).map(|_| rng.random_range(0.0..1.0)).collect()
}

fn f64_model<M>(zero: &[&str], build: impl FnOnce(VarBuilder) -> Result<M>) -> M {
    init_model(3, 1, DType::F64, &Device::Cpu, zero, build).unwrap().0
}

#[test]
fn log_softmax_and_sigmoid_have_correct_gradients() {
    let x: Vec<f64> = (0..30).map(|i| (i as f64 * 0.37).sin() * 3.0).collect();
    let e = fd_check(&|t| log_softmax(t), &x, &[3, 10], 1);
    assert!(e < 1e-6, "log_softmax rel err {e}");
    let e = fd_check(&|t| Ok(candle_nn::ops::sigmoid(t)?), &x, &[3, 10], 2);
    assert!(e < 1e-6, "sigmoid rel err {e}");
    let e = fd_check(&|t| Ok(candle_nn::ops::log_softmax(t, 1)?), &x, &[3, 10], 3);
    assert!(e < 1e-6, "candle_nn log_softmax rel err {e}");
    let e = fd_check(&|t| normalize_features(t), &x, &[3, 10], 4);
    assert!(e < 1e-6, "normalize rel err {e}");
}

#[test]
fn convolutions_and_pooling_have_correct_backward() {
    let dev = Device::Cpu;
    let m: ClassifierB = f64_model(&[], ClassifierB::new);
    let x = images(2, 5);
    let e = fd_check(&|t| Ok(m.taps(t)?.conv2), &x, &[2, PIXELS], 6);
    assert!(e < 1e-3, "conv taps rel err {e}");
    let e = fd_check(&|t| max_pool2_nhwc(&t.reshape((2, SIDE, SIDE, 1))?), &x, &[2, PIXELS], 7);
    assert!(e < 1e-6, "max pool rel err {e}");
    let e = fd_check(&|t| max_pool2_nhwc(&t.reshape((2, 14, 14, 4))?), &x, &[2, PIXELS], 17);
    assert!(e < 1e-6, "max pool (channels) rel err {e}");
    let t = Tensor::from_vec(x.clone(), (2, 14, 14, 4), &dev).unwrap();
    let by_reduction = t.reshape((2, 7, 2, 7, 2, 4)).unwrap().max(4).unwrap().max(2).unwrap();
    let d = (max_pool2_nhwc(&t).unwrap() - by_reduction).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(d.to_scalar::<f64>().unwrap(), 0.0);
    // candle's own conv2d / max_pool2d also have a (slower) backward.
    let k = Tensor::from_vec((0..18).map(|i| (i as f64 * 0.3).sin()).collect::<Vec<_>>(), (2, 1, 3, 3), &dev).unwrap();
    let e1 = fd_check(&|t| Ok(t.reshape((2, 1, SIDE, SIDE))?.conv2d(&k, 1, 1, 1, 1)?), &x, &[2, PIXELS], 8);
    let e2 = fd_check(&|t| Ok(t.reshape((2, 1, SIDE, SIDE))?.max_pool2d(2)?), &x, &[2, PIXELS], 8);
    let e3 = fd_check(
        &|t| Ok(t.reshape((2, 2, SIDE, 14))?.conv2d(&k.reshape((1, 2, 3, 3))?, 1, 1, 1, 1)?),
        &x,
        &[2, PIXELS],
        8,
    );
    assert!(e1 < 1e-6 && e3 < 1e-6, "candle conv2d rel err {e1}, {e3}");
    // candle 0.11's max_pool2d backward multiplies by the window's share of maxima instead of routing the whole
    // gradient: it returns 1/4 of the true input gradient (relative error 0.75). Hence our own pooling op.
    assert!((e2 - 0.75).abs() < 1e-6, "candle max_pool2d backward changed (rel err {e2}): re-check stack.md");
    // The patch convolution equals candle's conv2d (NCHW ↔ NHWC).
    let conv = Conv3x3 {
        weight: Tensor::from_vec(
            (0..16 * 9 * 4).map(|i| (i as f64 * 0.17).cos()).collect::<Vec<_>>(),
            (4, 16, 3, 3),
            &dev,
        )
        .unwrap(),
        bias: Tensor::from_vec(vec![0.1, -0.2, 0.3, 0.0], 4, &dev).unwrap(),
    };
    let xin = Tensor::from_vec(images(2, 9)[..2 * 16 * 49].to_vec(), (2, 7, 7, 16), &dev).unwrap();
    let ours = conv.forward_nhwc(&xin).unwrap();
    let theirs = xin
        .permute((0, 3, 1, 2))
        .unwrap()
        .conv2d(&conv.weight, 1, 1, 1, 1)
        .unwrap()
        .broadcast_add(&conv.bias.reshape((1, 4, 1, 1)).unwrap())
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap();
    let d = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
    assert!(d < 1e-12, "patch conv differs from conv2d by {d}");
}

#[test]
fn autoencoder_input_gradients_match_finite_differences() {
    let m: Autoencoder = f64_model(&[], Autoencoder::new);
    let x = images(2, 8);
    let e = fd_check(&|t| m.encode(t), &x, &[2, PIXELS], 9);
    assert!(e < 1e-3, "encode rel err {e}");
    let z: Vec<f64> = (0..2 * LATENT).map(|i| (i as f64 * 0.7).cos()).collect();
    let e = fd_check(&|t| m.decode(t), &z, &[2, LATENT], 10);
    assert!(e < 1e-3, "decode rel err {e}");
}

#[test]
fn eps_mlp_input_gradient_matches_finite_differences() {
    // Without zero-init so the output depends on the input.
    let m: EpsMlp = f64_model(&[], EpsMlp::new);
    let z: Vec<f64> = (0..3 * LATENT).map(|i| (i as f64 * 0.3).sin()).collect();
    let e = fd_check(&|t| m.forward_t(t, &[0, 500, 999], &[3, 10, 0]), &z, &[3, LATENT], 11);
    assert!(e < 1e-3, "eps rel err {e}");
}

#[test]
fn classifier_input_gradients_match_finite_differences() {
    let a: ClassifierA = f64_model(&[], ClassifierA::new);
    let b: ClassifierB = f64_model(&[], ClassifierB::new);
    let x = images(2, 12);
    for (name, c) in [("A", &a as &dyn Classifier), ("B", &b as &dyn Classifier)] {
        let e = fd_check(&|t| c.features(t), &x, &[2, PIXELS], 13);
        assert!(e < 1e-3, "{name} features rel err {e}");
        let e = fd_check(&|t| c.log_probs(t), &x, &[2, PIXELS], 14);
        assert!(e < 1e-3, "{name} log_probs rel err {e}");
    }
    let (h, _) = init_model(3, 2, DType::F64, &Device::Cpu, &[], StyleHead::new).unwrap();
    // Give the head non-trivial gold statistics.
    let h = StyleHead { gold_mean: (h.gold_mean + 0.3).unwrap(), gold_std: (h.gold_std * 0.2).unwrap(), ..h };
    let e = fd_check(&|t| h.score(&b, t), &x, &[2, PIXELS], 15);
    assert!(e < 1e-3, "style head rel err {e}");
    let e = fd_check(&|t| h.gold_ink(t), &x, &[2, PIXELS], 16);
    assert!(e < 1e-6, "gold rel err {e}");
}

#[test]
fn seeded_init_is_deterministic_and_counts_match_the_spec() {
    let dev = Device::Cpu;
    let (_, v1) = init_model(5, 1, DType::F32, &dev, &EpsMlp::ZERO_INIT, EpsMlp::new).unwrap();
    let (_, v2) = init_model(5, 1, DType::F32, &dev, &EpsMlp::ZERO_INIT, EpsMlp::new).unwrap();
    let (t1, t2) = (varmap_tensors(&v1).unwrap(), varmap_tensors(&v2).unwrap());
    for (k, a) in &t1 {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = t2[k].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b, "{k}");
        if k.starts_with("out.") {
            assert!(a.iter().all(|&x| x == 0.0));
        }
    }
    assert_eq!(count_params(&t1), 504_848);
    let (_, ae) = init_model(5, 1, DType::F32, &dev, &[], Autoencoder::new).unwrap();
    assert_eq!(count_params(&varmap_tensors(&ae).unwrap()), 1_079_600 + LATENT + 1);
    let (_, a) = init_model(5, 1, DType::F32, &dev, &[], ClassifierA::new).unwrap();
    assert_eq!(count_params(&varmap_tensors(&a).unwrap()), 235_146);
    let (_, b) = init_model(5, 1, DType::F32, &dev, &[], ClassifierB::new).unwrap();
    assert_eq!(count_params(&varmap_tensors(&b).unwrap()), 160 + 4640 + 200_832 + 1290);
}

/// Checksums of every forward pass on seeded initialisations and fixed inputs (f32), against recorded values:
/// catches unintended changes of architecture, initialisation or layout.
#[test]
fn forward_passes_match_recorded_values() {
    let dev = Device::Cpu;
    let build = |g: u64| (11u64, g, DType::F32, dev.clone());
    let x = Tensor::from_vec(images(3, 21).iter().map(|&v| v as f32).collect::<Vec<_>>(), (3, PIXELS), &dev).unwrap();
    let z = Tensor::from_vec((0..3 * LATENT).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(), (3, LATENT), &dev)
        .unwrap();
    let sum = |t: Tensor| t.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    let abs = |t: Tensor| sum(t.abs().unwrap());
    let (s, g, d, dv) = build(1);
    let (ae, _) = init_model(s, g, d, &dv, &[], Autoencoder::new).unwrap();
    let (s, g, d, dv) = build(2);
    let (eps, _) = init_model(s, g, d, &dv, &[], EpsMlp::new).unwrap();
    let (s, g, d, dv) = build(3);
    let (a, _) = init_model(s, g, d, &dv, &[], ClassifierA::new).unwrap();
    let (s, g, d, dv) = build(4);
    let (b, _) = init_model(s, g, d, &dv, &[], ClassifierB::new).unwrap();
    let got = [
        sum(ae.encode(&x).unwrap()),
        sum(ae.decode(&z).unwrap()),
        abs(eps.forward_t(&z, &[0, 250, 999], &[1, 10, 7]).unwrap()),
        abs(a.logits(&x).unwrap()),
        abs(b.logits(&x).unwrap()),
        sum(b.taps(&x).unwrap().conv1),
        sum(b.taps(&x).unwrap().conv2),
    ];
    let want: [f64; 7] = [-0.538_110_8, 1_176.541_1, 4.845_963, 1.576_961, 1.247_591, 3_802.967_8, 1_244.024_2];
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "checksum {k}: {g} vs recorded {w}");
    }
}
