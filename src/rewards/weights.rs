//! Pinned weight files: where each reward's weights come from, their size and sha256, verification at load time,
//! and a process-wide cache so a model is loaded once and shared by every cell (rewards.md §0).
//!
//! Nothing is downloaded: a user places the files in a local folder (`weights:` in YAML, or the env
//! `ALIGNBENCH_MODELS`), and a missing or corrupted file fails with one error naming the file, the expected
//! checksum and the public place to get it.

use std::any::Any;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::{Error, Result};

/// One pinned file of a public model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightFile {
    /// Public repository (Hugging Face id or GitHub `owner/repo`).
    pub repo: &'static str,
    /// Revision (commit) the checksum refers to; `main` where the file never changed.
    pub revision: &'static str,
    /// Path of the file inside the repository.
    pub file: &'static str,
    /// Size in bytes (0 = not pinned).
    pub bytes: u64,
    /// Full lowercase hex sha256 ("" = not pinned: the digest is printed on first load so it can be recorded).
    pub sha256: &'static str,
}

impl WeightFile {
    /// Where to get the file, as a sentence for error messages.
    pub fn how_to_get(&self) -> String {
        if self.repo.contains("github") || self.repo.starts_with("gh:") {
            format!(
                "download `{}` from {} (revision {})",
                self.file,
                self.repo.trim_start_matches("gh:"),
                self.revision
            )
        } else {
            format!(
                "download `{}` from https://huggingface.co/{} (revision {}), e.g. \
                 `huggingface-cli download {} {} --revision {} --local-dir <DIR>`",
                self.file, self.repo, self.revision, self.repo, self.file, self.revision
            )
        }
    }
}

/// The LAION improved aesthetic predictor head (`sac+logos+ava1-l14-linearMSE.pth`, Apache-2.0).
pub const AESTHETIC_MLP: WeightFile = WeightFile {
    repo: "gh:https://github.com/christophschuhmann/improved-aesthetic-predictor",
    revision: "main",
    file: "sac+logos+ava1-l14-linearMSE.pth",
    bytes: 3_714_759,
    sha256: "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0",
};

/// The older LAION linear aesthetic head on ViT-L/14 (`sa_0_4_vit_l_14_linear.pth`, MIT).
pub const AESTHETIC_LINEAR: WeightFile = WeightFile {
    repo: "gh:https://github.com/LAION-AI/aesthetic-predictor",
    revision: "main",
    file: "sa_0_4_vit_l_14_linear.pth",
    bytes: 0,
    sha256: "2cd4e60f4f24ae3bcd57b847b13c1f3ba27edc28cc1a7f9ce74ee9f421243cba",
};

/// OpenAI CLIP ViT-L/14 in Hugging Face layout (vision tower of the aesthetic reward; CLIPScore; TCE features).
pub const CLIP_VIT_L_14: WeightFile = WeightFile {
    repo: "openai/clip-vit-large-patch14",
    revision: "main",
    file: "model.safetensors",
    bytes: 0,
    sha256: "",
};

/// PickScore v1 (CLIP ViT-H/14 fine-tune, Hugging Face layout).
pub const PICKSCORE_V1: WeightFile = WeightFile {
    repo: "yuvalkirstain/PickScore_v1",
    revision: "main",
    file: "model.safetensors",
    bytes: 0,
    sha256: "",
};

/// HPS v2.0, open_clip ViT-H-14 layout (the revision DAS pins).
pub const HPS_V2_0: WeightFile = WeightFile {
    repo: "xswu/HPSv2",
    revision: "697403c78157020a1ae59d23f111aa58ced35b0a",
    file: "HPS_v2_compressed.pt",
    bytes: 1_972_484_501,
    sha256: "",
};

/// HPS v2.1, open_clip ViT-H-14 layout.
pub const HPS_V2_1: WeightFile = WeightFile {
    repo: "xswu/HPSv2",
    revision: "697403c78157020a1ae59d23f111aa58ced35b0a",
    file: "HPS_v2.1_compressed.pt",
    bytes: 1_972_490_005,
    sha256: "",
};

/// ImageReward v1.0 (BLIP ViT-L/16 + BERT cross-attention + MLP).
pub const IMAGE_REWARD_V1: WeightFile =
    WeightFile { repo: "THUDM/ImageReward", revision: "main", file: "ImageReward.pt", bytes: 0, sha256: "" };

/// LPIPS v0.1 AlexNet linear heads, converted to safetensors (BSD-2-Clause, PyPI `lpips` 0.1.4).
pub const LPIPS_ALEX_HEADS: WeightFile = WeightFile {
    repo:
        "gh:https://github.com/richzhang/PerceptualSimilarity (lpips/weights/v0.1/alex.pth, converted to safetensors)",
    revision: "v0.1",
    file: "lpips_v0.1_alex.safetensors",
    bytes: 0,
    sha256: "",
};

/// torchvision's ImageNet AlexNet (the LPIPS backbone), converted to safetensors.
pub const ALEXNET_TORCHVISION: WeightFile = WeightFile {
    repo: "gh:https://download.pytorch.org/models/alexnet-owt-7be5be79.pth (torchvision; convert to safetensors)",
    revision: "owt-7be5be79",
    file: "alexnet.safetensors",
    bytes: 0,
    sha256: "",
};

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Check that `path` exists and is the pinned file (size, then sha256 where pinned). Returns the digest.
pub fn verify(path: &Path, w: &WeightFile) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|_| {
        Error::file(
            path,
            format!(
                "weight file `{}` not found (expected sha256 {}); {}",
                w.file,
                if w.sha256.is_empty() { "not pinned" } else { w.sha256 },
                w.how_to_get()
            ),
        )
    })?;
    if w.bytes != 0 && meta.len() != w.bytes {
        return Err(Error::file(
            path,
            format!(
                "weight file `{}` has {} bytes, expected {} (a truncated or different file); {}",
                w.file,
                meta.len(),
                w.bytes,
                w.how_to_get()
            ),
        ));
    }
    let digest = sha256_file(path)?;
    if !w.sha256.is_empty() && digest != w.sha256 {
        return Err(Error::file(
            path,
            format!("weight file `{}` has sha256 {digest}, expected {}; {}", w.file, w.sha256, w.how_to_get()),
        ));
    }
    Ok(digest)
}

/// The folder holding model weights: `explicit` if given, else env `ALIGNBENCH_MODELS`.
pub fn models_dir(explicit: Option<&str>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(PathBuf::from(p));
    }
    match std::env::var_os("ALIGNBENCH_MODELS") {
        Some(p) => Ok(PathBuf::from(p)),
        None => Err(Error::config(
            "weights: no folder given; set `weights: <DIR>` on the reward or the env ALIGNBENCH_MODELS to the folder \
             holding the model files",
        )),
    }
}

type Shared = Arc<dyn Any + Send + Sync>;

fn cache() -> &'static Mutex<HashMap<String, Shared>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Shared>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Load a model once per process: the first call for `key` runs `load`, later calls share the result.
/// (Loading holds the lock, so two cells asking at once load once.)
pub fn shared<T: Any + Send + Sync>(key: &str, load: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
    let mut map = cache().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = map.get(key) {
        return Arc::clone(v)
            .downcast::<T>()
            .map_err(|_| Error::config(format!("model cache: `{key}` holds a different type")));
    }
    let v = Arc::new(load()?);
    map.insert(key.to_string(), v.clone() as Shared);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_names_file_checksum_and_source() {
        let e = verify(Path::new("/nonexistent/sac+logos+ava1-l14-linearMSE.pth"), &AESTHETIC_MLP).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("sac+logos+ava1-l14-linearMSE.pth"), "{s}");
        assert!(s.contains(AESTHETIC_MLP.sha256), "{s}");
        assert!(s.contains("improved-aesthetic-predictor"), "{s}");
    }

    #[test]
    fn wrong_size_and_wrong_digest_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.bin");
        std::fs::write(&p, b"hello").unwrap();
        let w = WeightFile { repo: "x/y", revision: "r", file: "w.bin", bytes: 6, sha256: "" };
        assert!(verify(&p, &w).unwrap_err().to_string().contains("5 bytes, expected 6"));
        let w = WeightFile { bytes: 5, sha256: "00", ..w };
        assert!(verify(&p, &w).unwrap_err().to_string().contains("expected 00"));
        // sha256("hello")
        let ok = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(verify(&p, &WeightFile { sha256: ok, ..w }).unwrap(), ok);
    }

    #[test]
    fn shared_loads_once() {
        let mut calls = 0;
        let a = shared("test-shared-loads-once", || {
            calls += 1;
            Ok(41u32)
        })
        .unwrap();
        let b = shared::<u32>("test-shared-loads-once", || unreachable!()).unwrap();
        assert_eq!((*a, *b, calls), (41, 41, 1));
        assert!(shared::<String>("test-shared-loads-once", || Ok(String::new())).is_err());
    }
}
