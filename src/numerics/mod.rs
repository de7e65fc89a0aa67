//! Small shared utilities: hex sha256 (checksums, cell ids, cache keys), atomic file writes, and the summary
//! statistics of the checks (classification accuracy, R², mean and standard deviation), and the small dense linear
//! algebra of the toy and the style heads (`linalg`).

pub mod linalg;

/// This machine's physical memory in bytes (`MemTotal` of `/proc/meminfo`), where the system says.
pub fn total_memory_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Bytes as text with a binary unit (`23.4 GiB`).
pub fn human_bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut x = b;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{x:.0} B")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

use std::path::Path;

use crate::{Error, Result};

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Write `bytes` to `path` atomically: a hidden temporary sibling unique to this process and call
/// (`.name.<pid>.<n>.tmp`), then a rename, so a reader never sees half a file and concurrent writers of the same
/// path never share a temporary. Creates the parent folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| Error::file(p, format!("cannot create folder: {e}")))?;
    }
    let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("out");
    let tmp = path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::file(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::file(path, format!("cannot move into place: {e}")))?;
    Ok(())
}

/// Index of the largest logit of each row of `k` logits (ties → lowest index).
pub fn argmax_rows(logits: &[f32], k: usize) -> Vec<usize> {
    logits.chunks(k).map(|r| r.iter().enumerate().fold(0, |b, (i, &v)| if v > r[b] { i } else { b })).collect()
}

/// Fraction of rows whose arg-max logit equals the label (`logits` row-major, one row per label).
pub fn accuracy(logits: &[f32], labels: &[usize]) -> f64 {
    let k = logits.len() / labels.len().max(1);
    argmax_rows(logits, k).iter().zip(labels).filter(|(a, b)| a == b).count() as f64 / labels.len() as f64
}

/// Coefficient of determination 1 − SS_res/SS_tot of predictions `pred` for targets `y`.
pub fn r_squared<T: Copy + Into<f64>>(pred: &[T], y: &[T]) -> f64 {
    let m = y.iter().map(|&v| v.into()).sum::<f64>() / y.len() as f64;
    let res: f64 = pred.iter().zip(y).map(|(&p, &t)| (p.into() - t.into()).powi(2)).sum();
    let tot: f64 = y.iter().map(|&t| (t.into() - m).powi(2)).sum();
    1.0 - res / tot
}

/// Weighted mean and (population) standard deviation of `v` with weights `w`.
pub fn weighted_mean_sd(v: &[f64], w: &[f64]) -> (f64, f64) {
    let ws: f64 = w.iter().sum();
    let m = v.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() / ws;
    let var = v.iter().zip(w).map(|(a, b)| b * (a - m).powi(2)).sum::<f64>() / ws;
    (m, var.sqrt())
}

/// Mean and population standard deviation.
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
}

/// JSON has no ±∞ or NaN: metrics keep them as strings, sample coordinates as `null` (read back as NaN).
pub mod non_finite {
    use std::collections::BTreeMap;

    use serde::de::Error as _;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f64),
        S(String),
    }

    /// Serialise a metric map, non-finite values as strings.
    pub fn serialize<S: Serializer>(m: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            if v.is_finite() {
                map.serialize_entry(k, v)?;
            } else {
                map.serialize_entry(k, &format!("{v}"))?;
            }
        }
        map.end()
    }

    /// Read a metric map back.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
        let raw = BTreeMap::<String, Num>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| match v {
                Num::F(x) => Ok((k, x)),
                Num::S(s) => s
                    .parse::<f64>()
                    .map(|x| (k, x))
                    .map_err(|_| D::Error::custom(format!("metric `{s}` is not a number"))),
            })
            .collect()
    }

    /// One number, non-finite values as strings (`#[serde(with = "non_finite::scalar")]`).
    pub mod scalar {
        use super::*;

        /// Serialise one number.
        pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
            if v.is_finite() {
                s.serialize_f64(*v)
            } else {
                s.serialize_str(&format!("{v}"))
            }
        }

        /// Read one number back.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
            match Num::deserialize(d)? {
                Num::F(x) => Ok(x),
                Num::S(s) => s.parse::<f64>().map_err(|_| D::Error::custom(format!("`{s}` is not a number"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_abc() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn statistics() {
        assert_eq!(accuracy(&[0.1, 0.9, 0.8, 0.2, 0.5, 0.5], &[1, 0, 1]), 2.0 / 3.0);
        assert_eq!(r_squared(&[1.0f64, 2.0, 3.0], &[1.0, 2.0, 3.0]), 1.0);
        assert_eq!(r_squared(&[2.0f32, 2.0, 2.0], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(mean_sd(&[1.0, 3.0]), (2.0, 1.0));
    }

    #[test]
    fn atomic_write_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/x.json");
        write_atomic(&p, b"{}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
        assert_eq!(std::fs::read_dir(d.path().join("sub")).unwrap().count(), 1);
    }
}
