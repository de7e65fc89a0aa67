//! The LAION aesthetic heads on L2-normalised CLIP ViT-L/14 image embeddings (rewards.md §2).
//!
//! The improved predictor (`sac+logos+ava1-l14-linearMSE.pth`) is Linear 768→1024→128→64→16→1 with dropout and
//! **no activations**, so at inference it is one affine map wᵀê + b. We load the layers under their checkpoint keys
//! (`layers.{0,2,4,6,7}.{weight,bias}`), keep them for inspection, and collapse them once in f64 to (w, b). The older
//! linear head (`sa_0_4_vit_l_14_linear.pth`: `weight [1,768]`, `bias [1]`) is the same map with one layer.
//! Score on an embedding e: ê = e/‖e‖₂, r = wᵀê + b; the gradient w.r.t. e is (w − (wᵀê)ê)/‖e‖₂.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::weights::{verify, WeightFile, AESTHETIC_LINEAR, AESTHETIC_MLP};
use crate::{Error, Result};

/// Which LAION head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    /// `sac+logos+ava1-l14-linearMSE.pth`, the DAS paper's aesthetic reward (AVA 1–10 scale).
    ImprovedMlp,
    /// `sa_0_4_vit_l_14_linear.pth`, the older linear predictor.
    Linear,
}

impl HeadKind {
    /// The pinned file of this head.
    pub fn file(self) -> WeightFile {
        match self {
            HeadKind::ImprovedMlp => AESTHETIC_MLP,
            HeadKind::Linear => AESTHETIC_LINEAR,
        }
    }
    fn keys(self) -> &'static [&'static str] {
        match self {
            HeadKind::ImprovedMlp => &["layers.0", "layers.2", "layers.4", "layers.6", "layers.7"],
            HeadKind::Linear => &[""],
        }
    }
}

/// An affine aesthetic head, with its original layers.
#[derive(Clone, Debug)]
pub struct AestheticHead {
    /// Layers as loaded: (weight [out × in] row-major, bias [out], in, out).
    pub layers: Vec<(Vec<f32>, Vec<f32>, usize, usize)>,
    /// Collapsed w (embedding dimension).
    pub w: Vec<f64>,
    /// Collapsed bias.
    pub b: f64,
}

impl AestheticHead {
    /// Build from layers (first layer first); checks that consecutive shapes chain and the output is a scalar.
    pub fn from_layers(layers: Vec<(Vec<f32>, Vec<f32>, usize, usize)>) -> Result<Self> {
        let d = layers.first().ok_or_else(|| Error::config("aesthetic head: no layers"))?.2;
        // Collapse right to left: r = W_L(…(W_1 e + b_1)…) + b_L = wᵀe + b.
        let mut v = vec![1.0f64]; // row vector of the composition so far
        let mut b = 0.0f64;
        for (wt, bias, inp, out) in layers.iter().rev() {
            if v.len() != *out || wt.len() != inp * out || bias.len() != *out {
                return Err(Error::config("aesthetic head: layer shapes do not chain to a scalar output"));
            }
            b += v.iter().zip(bias).map(|(a, c)| a * *c as f64).sum::<f64>();
            let mut nv = vec![0f64; *inp];
            for o in 0..*out {
                for i in 0..*inp {
                    nv[i] += v[o] * wt[o * inp + i] as f64;
                }
            }
            v = nv;
        }
        debug_assert_eq!(v.len(), d);
        Ok(AestheticHead { layers, w: v, b })
    }

    /// Load a head from a torch zip checkpoint (`.pth`) or safetensors, verifying the pinned checksum.
    pub fn load(path: &Path, kind: HeadKind) -> Result<Self> {
        verify(path, &kind.file())?;
        let tensors: Vec<(String, Tensor)> = if path.extension().is_some_and(|e| e == "safetensors") {
            candle_core::safetensors::load(path, &Device::Cpu)?.into_iter().collect()
        } else {
            candle_core::pickle::read_all(path)
                .map_err(|e| Error::file(path, format!("cannot read the torch checkpoint: {e}")))?
        };
        let get = |k: &str| -> Result<Tensor> {
            tensors.iter().find(|(n, _)| n == k).map(|(_, t)| t.clone()).ok_or_else(|| {
                Error::file(path, format!("missing tensor `{k}` (is this the {:?} aesthetic head?)", kind))
            })
        };
        let mut layers = Vec::new();
        for prefix in kind.keys() {
            let join = |s: &str| if prefix.is_empty() { s.to_string() } else { format!("{prefix}.{s}") };
            let w = get(&join("weight"))?.to_dtype(DType::F32)?;
            let (out, inp) = w.dims2()?;
            let b = get(&join("bias"))?.to_dtype(DType::F32)?.flatten_all()?;
            layers.push((w.flatten_all()?.to_vec1()?, b.to_vec1()?, inp, out));
        }
        Self::from_layers(layers)
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.w.len()
    }

    /// Score of one embedding (normalised first) and, if asked, the gradient w.r.t. the raw embedding.
    pub fn score(&self, e: &[f32], grad: Option<&mut [f32]>) -> f64 {
        let norm = e.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
        let wx: f64 = self.w.iter().zip(e).map(|(w, &x)| w * x as f64).sum::<f64>() / norm;
        if let Some(g) = grad {
            for ((gi, w), &x) in g.iter_mut().zip(&self.w).zip(e) {
                *gi = ((w - wx * x as f64 / norm) / norm) as f32;
            }
        }
        wx + self.b
    }

    /// The layered forward (no collapse), for checking the collapse.
    pub fn forward_layers(&self, e: &[f32]) -> f64 {
        let norm = e.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
        let mut h: Vec<f64> = e.iter().map(|&x| x as f64 / norm).collect();
        for (w, b, inp, out) in &self.layers {
            h = (0..*out).map(|o| b[o] as f64 + (0..*inp).map(|i| w[o * inp + i] as f64 * h[i]).sum::<f64>()).collect();
        }
        h[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn shared_data() -> Option<PathBuf> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/aesthetic");
        if p.exists() {
            Some(p)
        } else {
            crate::testing::missing(
                "../shared/data/aesthetic is absent (the real aesthetic heads are not on this machine)",
            );
            None
        }
    }

    fn embedding(dir: &Path, k: usize) -> Vec<f32> {
        let t = Tensor::read_npy(dir.join(format!("vit_l_14_embeddings/rating{k}.npy"))).unwrap();
        t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    /// Golden values of `../shared/data/README.md` (float64 reference), to 1e-4.
    #[test]
    fn golden_laion_heads_on_reference_embeddings() {
        let Some(dir) = shared_data() else { return };
        let mlp = AestheticHead::load(&dir.join("sac+logos+ava1-l14-linearMSE.pth"), HeadKind::ImprovedMlp).unwrap();
        let lin = AestheticHead::load(&dir.join("sa_0_4_vit_l_14_linear.pth"), HeadKind::Linear).unwrap();
        assert_eq!(
            mlp.layers.iter().map(|l| (l.2, l.3)).collect::<Vec<_>>(),
            [(768, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
        );
        let params: usize = mlp.layers.iter().map(|l| l.0.len() + l.1.len()).sum();
        assert_eq!(params, 927_969);
        let want_mlp =
            [1.655480, 2.359275, 3.069824, 3.672451, 4.238010, 4.701021, 5.073054, 5.365362, 5.576664, 5.746761];
        let want_lin =
            [-2.457908, -0.137857, 1.895110, 3.584934, 5.099726, 6.470104, 7.786990, 9.048002, 10.226408, 11.304426];
        for k in 0..10 {
            let e = embedding(&dir, k);
            let (a, b) = (mlp.score(&e, None), lin.score(&e, None));
            assert!((a - want_mlp[k]).abs() < 1e-4, "mlp rating{k}: {a} vs {}", want_mlp[k]);
            assert!((b - want_lin[k]).abs() < 1e-4, "linear rating{k}: {b} vs {}", want_lin[k]);
            assert!((mlp.forward_layers(&e) - a).abs() < 1e-6, "collapse differs from the layered forward");
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let layers =
            vec![(vec![0.3, -0.2, 0.5, 0.1, 0.4, -0.6], vec![0.1, -0.2], 3, 2), (vec![0.7, -1.1], vec![0.05], 2, 1)];
        let h = AestheticHead::from_layers(layers).unwrap();
        let e = [0.4f32, -1.3, 0.8];
        let mut g = [0f32; 3];
        h.score(&e, Some(&mut g));
        for i in 0..3 {
            let (mut p, mut m) = (e, e);
            p[i] += 1e-3;
            m[i] -= 1e-3;
            let fd = (h.score(&p, None) - h.score(&m, None)) / 2e-3;
            assert!((fd - g[i] as f64).abs() < 1e-4, "{i}: {fd} vs {}", g[i]);
        }
        // Scale invariance: the head sees ê only.
        let e2: Vec<f32> = e.iter().map(|x| x * 3.0).collect();
        assert!((h.score(&e, None) - h.score(&e2, None)).abs() < 1e-6);
    }

    #[test]
    fn wrong_checksum_is_refused_with_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sac+logos+ava1-l14-linearMSE.pth");
        std::fs::write(&p, vec![0u8; 3_714_759]).unwrap();
        let e = AestheticHead::load(&p, HeadKind::ImprovedMlp).unwrap_err().to_string();
        assert!(e.contains("expected 21dd590f") && e.contains("improved-aesthetic-predictor"), "{e}");
    }
}
