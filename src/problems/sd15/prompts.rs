//! Prompt manifests: versioned prompt lists with an id and a sha256, and a seeded draw without replacement.
//!
//! Built in (`assets/prompts/`, references.md C2): `eval_simple_animals` — the 10 animals the DAS aesthetic task
//! evaluates on (unseen in training); `simple_animals` — the 40 DDPO/DAS training-style animals.
//!
//! File format (user manifests use the same): UTF-8 text, one prompt per line, surrounding whitespace trimmed,
//! blank lines ignored; lines starting with `#` are comments, and the header comments `# id: <id>` and
//! `# version: <integer>` name the manifest (defaults: the file stem and version 1). Prompts must be distinct.
//! The manifest's sha256 is that of the file's bytes, so a run records exactly which list it drew from.
//!
//! The draw differs from the DAS reference on purpose (references.md C3: `random.choice` with replacement after
//! per-device reseeding): n prompts **without replacement**, by a partial Fisher–Yates shuffle driven by the
//! `crate::rng` stream `(seed, Select, PROMPT_DRAW_GROUP, 0)` — the same seed gives the same prompts on any
//! machine, and a larger draw extends a smaller one.

use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::rng::{Purpose, Streams};
use crate::{Error, Result};

/// Group key of the prompt-draw stream (Select purpose; sampler selection streams use group indices below it).
pub const PROMPT_DRAW_GROUP: u64 = u64::MAX;

const BUILTIN: [(&str, &str); 2] = [
    ("eval_simple_animals", include_str!("../../../assets/prompts/eval_simple_animals.txt")),
    ("simple_animals", include_str!("../../../assets/prompts/simple_animals.txt")),
];

/// A versioned list of prompts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptManifest {
    /// Manifest id (`# id:` header, else the file stem).
    pub id: String,
    /// Version (`# version:` header, else 1).
    pub version: u32,
    /// sha256 of the manifest's bytes.
    pub sha256: String,
    /// Where it was read: `builtin:<name>` or the file path.
    pub source: String,
    /// The prompts in file order.
    pub prompts: Vec<String>,
}

/// Prompts drawn from a manifest, with the manifest's identity for the run record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptDraw {
    /// Manifest id.
    pub manifest_id: String,
    /// Manifest version.
    pub version: u32,
    /// Manifest sha256.
    pub sha256: String,
    /// Indices into the manifest, in draw order.
    pub indices: Vec<usize>,
    /// The drawn prompts (row label i of the pipeline ↔ `prompts[i]`).
    pub prompts: Vec<String>,
}

impl PromptManifest {
    /// Parse manifest text; `default_id` is used without an `# id:` header.
    pub fn parse(text: &str, default_id: &str, source: &str) -> Result<Self> {
        let mut id = default_id.to_string();
        let mut version = 1u32;
        let mut prompts: Vec<String> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(c) = line.strip_prefix('#') {
                let c = c.trim();
                if prompts.is_empty() {
                    if let Some(v) = c.strip_prefix("id:") {
                        id = v.trim().to_string();
                    } else if let Some(v) = c.strip_prefix("version:") {
                        version = v.trim().parse().map_err(|_| {
                            Error::config(format!("{source}: line {}: `# version:` needs an integer", i + 1))
                        })?;
                    }
                }
                continue;
            }
            if prompts.iter().any(|p| p == line) {
                return Err(Error::config(format!("{source}: line {}: duplicate prompt `{line}`", i + 1)));
            }
            prompts.push(line.to_string());
        }
        if prompts.is_empty() {
            return Err(Error::config(format!("{source}: no prompts (one per line; `#` starts a comment)")));
        }
        if id.is_empty() {
            return Err(Error::config(format!("{source}: empty `# id:`")));
        }
        let sha256 = Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { id, version, sha256, source: source.to_string(), prompts })
    }

    /// Read a manifest file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, format!("cannot read prompts: {e}")))?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("prompts");
        Self::parse(&text, stem, &path.display().to_string())
    }

    /// A built-in manifest by name (`eval_simple_animals`, `simple_animals`).
    pub fn builtin(name: &str) -> Result<Self> {
        let (n, text) = BUILTIN.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            Error::config(format!(
                "prompts: no built-in manifest `{name}`; choose one of {:?} or give a file path",
                BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>()
            ))
        })?;
        Self::parse(text, n, &format!("builtin:{n}"))
    }

    /// `builtin:<name>` or a file path.
    pub fn resolve(spec: &str) -> Result<Self> {
        match spec.strip_prefix("builtin:") {
            Some(name) => Self::builtin(name),
            None => Self::load(Path::new(spec)),
        }
    }

    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    /// Whether the manifest has no prompts (never true for a parsed manifest).
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// Draw `n` distinct prompts (partial Fisher–Yates on the seeded prompt stream of `streams`).
    pub fn draw(&self, n: usize, streams: &Streams) -> Result<PromptDraw> {
        let m = self.prompts.len();
        if n > m {
            return Err(Error::config(format!(
                "prompts: {n} prompts asked from `{}` which has {m}; draws are without replacement — lower the \
                 number of prompts or use a larger manifest",
                self.id
            )));
        }
        let mut idx: Vec<usize> = (0..m).collect();
        let mut rng = streams.rng(Purpose::Select, PROMPT_DRAW_GROUP, 0);
        for i in 0..n {
            let j = rng.random_range(i..m);
            idx.swap(i, j);
        }
        idx.truncate(n);
        Ok(PromptDraw {
            manifest_id: self.id.clone(),
            version: self.version,
            sha256: self.sha256.clone(),
            prompts: idx.iter().map(|&i| self.prompts[i].clone()).collect(),
            indices: idx,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifests_match_the_reference_lists() {
        let e = PromptManifest::builtin("eval_simple_animals").unwrap();
        assert_eq!((e.id.as_str(), e.version, e.len()), ("das_eval_simple_animals", 1, 10));
        assert_eq!(e.prompts[0], "snail");
        assert_eq!(e.prompts[9], "kangaroo");
        let t = PromptManifest::resolve("builtin:simple_animals").unwrap();
        assert_eq!((t.id.as_str(), t.len()), ("ddpo_simple_animals", 40));
        assert_eq!(&t.prompts[..3], ["cat", "dog", "horse"]);
        // Unseen means unseen: no evaluation animal is a training animal.
        assert!(e.prompts.iter().all(|p| !t.prompts.contains(p)));
        assert_eq!(e.sha256.len(), 64);
        assert!(PromptManifest::builtin("nope").unwrap_err().to_string().contains("eval_simple_animals"));
    }

    #[test]
    fn draw_is_seeded_without_replacement_and_nested() {
        let t = PromptManifest::builtin("simple_animals").unwrap();
        let a = t.draw(10, &Streams::new(42)).unwrap();
        assert_eq!(a, t.draw(10, &Streams::new(42)).unwrap());
        assert_ne!(a.indices, t.draw(10, &Streams::new(43)).unwrap().indices);
        let mut s = a.indices.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 10);
        assert!(a.indices.iter().zip(&a.prompts).all(|(&i, p)| &t.prompts[i] == p));
        // A larger draw extends a smaller one; the whole manifest is a permutation.
        let all = t.draw(40, &Streams::new(42)).unwrap();
        assert_eq!(&all.indices[..10], &a.indices[..]);
        let mut p = all.indices.clone();
        p.sort_unstable();
        assert_eq!(p, (0..40).collect::<Vec<_>>());
        assert_eq!((a.manifest_id.as_str(), a.sha256.as_str()), (t.id.as_str(), t.sha256.as_str()));
        let e = t.draw(41, &Streams::new(1)).unwrap_err().to_string();
        assert!(e.contains("without replacement"), "{e}");
    }

    #[test]
    fn user_file_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("my_prompts.txt");
        std::fs::write(
            &p,
            "# a comment\n\n  a red cube  \n# version: 9 (ignored after the first prompt)\nblue sphere\n",
        )
        .unwrap();
        let m = PromptManifest::load(&p).unwrap();
        assert_eq!((m.id.as_str(), m.version), ("my_prompts", 1));
        assert_eq!(m.prompts, ["a red cube", "blue sphere"]);
        let h = PromptManifest::parse("# id: x\n# version: 3\nz\n", "d", "t").unwrap();
        assert_eq!((h.id.as_str(), h.version), ("x", 3));
        assert_ne!(h.sha256, PromptManifest::parse("# id: x\n# version: 3\nz \n", "d", "t").unwrap().sha256);
        for (bad, msg) in
            [("a\na\n", "duplicate"), ("# only comments\n", "no prompts"), ("# version: x\na\n", "integer")]
        {
            let e = PromptManifest::parse(bad, "d", "t").unwrap_err().to_string();
            assert!(e.contains(msg), "{bad:?}: {e}");
        }
        assert!(PromptManifest::load(&dir.path().join("missing.txt")).unwrap_err().to_string().contains("missing.txt"));
    }
}
