//! Fashion-MNIST for the FMNIST-align benchmark (mini-benchmark.md §2): locating the four IDX gz files, verifying
//! them, parsing IDX, and the deterministic splits P, A, B, E (with the labelled subsets A_r, B_r).
//!
//! Sources, in order: `--data-dir`, env `ALIGNBENCH_DATA`, the Debian package `dataset-fashion-mnist`
//! (`/usr/share/datasets/fashion-mnist/`). Nothing is downloaded at run time. The files are verified by the sha256 of
//! their *decompressed* content (so a re-gzipped copy of the canonical Zalando files also passes); the sha256 of
//! each gz file as found is recorded in the manifest (the Debian files' gz hashes start with the prefixes listed in
//! the spec).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::numerics::sha256_hex;
use crate::{Error, Result};

/// Image side length.
pub const SIDE: usize = 28;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;
/// Number of classes.
pub const CLASSES: usize = 10;
/// The Debian package's install folder.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Environment variable naming a folder with the four IDX gz files.
pub const DATA_ENV: &str = "ALIGNBENCH_DATA";
/// Class names, index = label.
pub const CLASS_NAMES: [&str; CLASSES] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// One of the four dataset files and the sha256 of its decompressed IDX content.
#[derive(Clone, Copy, Debug)]
pub struct KnownFile {
    /// File name.
    pub name: &'static str,
    /// sha256 of the gunzipped bytes.
    pub raw_sha256: &'static str,
    /// sha256 prefix of the gz file itself (Debian package / spec §2).
    pub gz_sha256_prefix: &'static str,
    /// Expected item count.
    pub count: usize,
}

/// The four files (train images, train labels, test images, test labels).
pub const FILES: [KnownFile; 4] = [
    KnownFile {
        name: "train-images-idx3-ubyte.gz",
        raw_sha256: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        gz_sha256_prefix: "b0564c3e",
        count: 60_000,
    },
    KnownFile {
        name: "train-labels-idx1-ubyte.gz",
        raw_sha256: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        gz_sha256_prefix: "0ae29f65",
        count: 60_000,
    },
    KnownFile {
        name: "t10k-images-idx3-ubyte.gz",
        raw_sha256: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        gz_sha256_prefix: "cc1d090a",
        count: 10_000,
    },
    KnownFile {
        name: "t10k-labels-idx1-ubyte.gz",
        raw_sha256: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        gz_sha256_prefix: "8d3605d1",
        count: 10_000,
    },
];

/// How to obtain the data: appended to every "missing" error.
pub const INSTALL_HINT: &str = "install the Debian package (`sudo apt-get update && sudo apt-get install -y \
     dataset-fashion-mnist`, files land in /usr/share/datasets/fashion-mnist/), or point `--data-dir` / env \
     ALIGNBENCH_DATA at a folder holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
     t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz";

/// An IDX array: dimensions and raw u8 payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// Dimensions (first = item count).
    pub dims: Vec<usize>,
    /// Row-major u8 data.
    pub data: Vec<u8>,
}

/// Magic number of an IDX u8 array with `ndim` dimensions (0x0000_08nn).
pub fn idx_magic(ndim: usize) -> u32 {
    0x0800 | ndim as u32
}

/// Parse an (uncompressed) IDX u8 array: big-endian magic `0x000008nn`, `nn` big-endian u32 dimensions, raw bytes.
pub fn parse_idx(bytes: &[u8], what: &str) -> Result<Idx> {
    let bad = |m: String| Error::config(format!("{what}: not an IDX u8 file: {m}"));
    let be = |i: usize| -> Result<u32> {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| bad("truncated header".into()))
    };
    let magic = be(0)?;
    if magic >> 8 != 0x08 {
        return Err(bad(format!("magic {magic:#010x} (expected 0x000008nn, u8 data)")));
    }
    let ndim = (magic & 0xff) as usize;
    if ndim == 0 {
        return Err(bad("zero dimensions".into()));
    }
    let dims = (0..ndim).map(|k| be(4 + 4 * k).map(|d| d as usize)).collect::<Result<Vec<_>>>()?;
    let n: usize = dims.iter().product();
    let start = 4 + 4 * ndim;
    if bytes.len() != start + n {
        return Err(bad(format!("payload has {} bytes, dims {dims:?} need {n}", bytes.len() - start.min(bytes.len()))));
    }
    Ok(Idx { dims, data: bytes[start..].to_vec() })
}

/// Encode an IDX u8 array (used by tests and fixtures).
pub fn encode_idx(idx: &Idx) -> Vec<u8> {
    let mut out = idx_magic(idx.dims.len()).to_be_bytes().to_vec();
    for &d in &idx.dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(&idx.data);
    out
}

/// Gunzip a whole file.
pub fn gunzip(path: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}; {INSTALL_HINT}")))?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::io::BufReader::new(f))
        .read_to_end(&mut out)
        .map_err(|e| Error::file(path, format!("not a valid gzip file: {e}")))?;
    Ok(out)
}

/// The folder holding the four files: `dir` if given, else `$ALIGNBENCH_DATA`, else the Debian package folder.
pub fn locate(dir: Option<&Path>) -> Result<PathBuf> {
    let (d, src) = match dir {
        Some(d) => (d.to_path_buf(), "--data-dir"),
        None => match std::env::var_os(DATA_ENV) {
            Some(d) if !d.is_empty() => (PathBuf::from(d), "ALIGNBENCH_DATA"),
            _ => (PathBuf::from(DEBIAN_DIR), "the default location"),
        },
    };
    let missing: Vec<&str> = FILES.iter().map(|f| f.name).filter(|n| !d.join(n).is_file()).collect();
    if !missing.is_empty() {
        return Err(Error::file(
            &d,
            format!("Fashion-MNIST not found ({src}; missing {}): {INSTALL_HINT}", missing.join(", ")),
        ));
    }
    Ok(d)
}

/// What was loaded, for the manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Folder the files were read from.
    pub dir: String,
    /// Per file: name, sha256 of the gz file, sha256 of the decompressed IDX.
    pub files: Vec<FileHashes>,
}

/// Hashes of one dataset file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileHashes {
    /// File name.
    pub name: String,
    /// sha256 of the gz file as found.
    pub gz_sha256: String,
    /// sha256 of its decompressed content (what is verified).
    pub raw_sha256: String,
}

/// Fashion-MNIST in memory: u8 images (row-major, 784 per image) and labels.
#[derive(Clone, Debug, Default)]
pub struct FashionMnist {
    /// Train images, `60000 × 784`.
    pub train_images: Vec<u8>,
    /// Train labels.
    pub train_labels: Vec<u8>,
    /// Test images, `10000 × 784`.
    pub test_images: Vec<u8>,
    /// Test labels.
    pub test_labels: Vec<u8>,
    /// Provenance.
    pub info: DatasetInfo,
}

impl FashionMnist {
    /// Locate (see [`locate`]), verify and parse the dataset.
    pub fn load(dir: Option<&Path>) -> Result<Self> {
        let d = locate(dir)?;
        Self::load_from(&d, true)
    }

    /// Parse the four files in `dir`; with `verify`, check the sha256 of their decompressed content.
    pub fn load_from(dir: &Path, verify: bool) -> Result<Self> {
        let mut parts = Vec::new();
        let mut info = DatasetInfo { dir: dir.display().to_string(), files: Vec::new() };
        for (k, f) in FILES.iter().enumerate() {
            let path = dir.join(f.name);
            let gz =
                std::fs::read(&path).map_err(|e| Error::file(&path, format!("cannot read: {e}; {INSTALL_HINT}")))?;
            let raw = gunzip(&path)?;
            let raw_sha = sha256_hex(&raw);
            if verify && raw_sha != f.raw_sha256 {
                return Err(Error::file(
                    &path,
                    format!(
                        "content sha256 {raw_sha} differs from the Fashion-MNIST file ({}): corrupt or a different \
                         dataset; {INSTALL_HINT}",
                        f.raw_sha256
                    ),
                ));
            }
            info.files.push(FileHashes { name: f.name.into(), gz_sha256: sha256_hex(&gz), raw_sha256: raw_sha });
            let idx = parse_idx(&raw, f.name)?;
            let want_ndim = if k % 2 == 0 { 3 } else { 1 };
            if idx.dims.len() != want_ndim || (want_ndim == 3 && idx.dims[1..] != [SIDE, SIDE]) {
                return Err(Error::file(&path, format!("unexpected IDX dims {:?}", idx.dims)));
            }
            parts.push(idx);
        }
        let (ti, tl, ei, el) = (&parts[0], &parts[1], &parts[2], &parts[3]);
        if ti.dims[0] != tl.dims[0] || ei.dims[0] != el.dims[0] {
            return Err(Error::file(dir, "image and label counts differ"));
        }
        if tl.data.iter().chain(&el.data).any(|&l| l as usize >= CLASSES) {
            return Err(Error::file(dir, "label outside 0..9"));
        }
        Ok(FashionMnist {
            train_images: parts[0].data.clone(),
            train_labels: parts[1].data.clone(),
            test_images: parts[2].data.clone(),
            test_labels: parts[3].data.clone(),
            info,
        })
    }

    /// Number of train images.
    pub fn n_train(&self) -> usize {
        self.train_labels.len()
    }

    /// Number of test images.
    pub fn n_test(&self) -> usize {
        self.test_labels.len()
    }

    /// A synthetic stand-in with the same layout (class-dependent blobs plus seeded noise), for tests on machines
    /// without the dataset.
    pub fn synthetic(n_train: usize, n_test: usize, seed: u64) -> Self {
        use crate::rng::{Purpose, Streams};
        use rand::Rng;
        let make = |n: usize, group: u64| -> (Vec<u8>, Vec<u8>) {
            let mut rng = Streams::new(seed).rng(Purpose::Train, 9_000 + group, 0);
            let mut img = vec![0u8; n * PIXELS];
            let mut lab = vec![0u8; n];
            for i in 0..n {
                let c = (i % CLASSES) as u8;
                lab[i] = c;
                let (cy, cx) = (8.0 + (c % 4) as f32 * 4.0, 8.0 + (c / 4) as f32 * 5.0);
                let r = 4.0 + (c % 3) as f32 * 2.0;
                for y in 0..SIDE {
                    for x in 0..SIDE {
                        let d2 = (y as f32 - cy).powi(2) + (x as f32 - cx).powi(2);
                        let v = 220.0 * (-d2 / (2.0 * r * r)).exp() + rng.random_range(0.0..30.0f32);
                        img[i * PIXELS + y * SIDE + x] = v.min(255.0) as u8;
                    }
                }
            }
            (img, lab)
        };
        let (train_images, train_labels) = make(n_train, 0);
        let (test_images, test_labels) = make(n_test, 1);
        FashionMnist {
            train_images,
            train_labels,
            test_images,
            test_labels,
            info: DatasetInfo { dir: format!("synthetic(seed {seed})"), files: Vec::new() },
        }
    }
}

/// Which image pool an index refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// The 60k training images.
    Train,
    /// The 10k test images.
    Test,
}

/// A list of images of one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subset {
    /// The pool.
    pub pool: Pool,
    /// Indices into the pool.
    pub idx: Vec<usize>,
}

impl Subset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.idx.len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }
    /// The first `n` images.
    pub fn head(&self, n: usize) -> Subset {
        Subset { pool: self.pool, idx: self.idx[..n.min(self.idx.len())].to_vec() }
    }
    /// Pixels x/255 of the images at positions `pos` of this subset, row-major `[pos.len(), 784]`.
    pub fn pixels(&self, data: &FashionMnist, pos: impl IntoIterator<Item = usize>) -> Vec<f32> {
        let src = match self.pool {
            Pool::Train => &data.train_images,
            Pool::Test => &data.test_images,
        };
        let mut out = Vec::new();
        for p in pos {
            let i = self.idx[p];
            out.extend(src[i * PIXELS..(i + 1) * PIXELS].iter().map(|&v| v as f32 / 255.0));
        }
        out
    }
    /// All pixels of the subset.
    pub fn all_pixels(&self, data: &FashionMnist) -> Vec<f32> {
        self.pixels(data, 0..self.len())
    }
    /// Labels of the images at positions `pos`.
    pub fn labels(&self, data: &FashionMnist, pos: impl IntoIterator<Item = usize>) -> Vec<u32> {
        let src = match self.pool {
            Pool::Train => &data.train_labels,
            Pool::Test => &data.test_labels,
        };
        pos.into_iter().map(|p| src[self.idx[p]] as u32).collect()
    }
    /// All labels of the subset.
    pub fn all_labels(&self, data: &FashionMnist) -> Vec<u32> {
        self.labels(data, 0..self.len())
    }
    /// Images per class.
    pub fn class_counts(&self, data: &FashionMnist) -> [usize; CLASSES] {
        let mut c = [0; CLASSES];
        for l in self.all_labels(data) {
            c[l as usize] += 1;
        }
        c
    }
}

/// The deterministic splits of spec §2 (no shuffling of identities).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splits {
    /// P: all (used) train images — autoencoder and DDPM.
    pub p: Subset,
    /// A: even train indices — classifier A.
    pub a: Subset,
    /// B: odd train indices — classifier B.
    pub b: Subset,
    /// A_r: first `n_labels` of A — style head A.
    pub a_r: Subset,
    /// B_r: first `n_labels` of B — style head B.
    pub b_r: Subset,
    /// E: the (used) test images — evaluation.
    pub e: Subset,
}

impl Splits {
    /// Splits over the first `n_train` train and `n_test` test images (all of them when `None`), with
    /// `n_labels` style labels per side (5,000 in the spec).
    pub fn new(data: &FashionMnist, n_train: Option<usize>, n_test: Option<usize>, n_labels: usize) -> Self {
        let nt = n_train.unwrap_or(usize::MAX).min(data.n_train());
        let ne = n_test.unwrap_or(usize::MAX).min(data.n_test());
        let p = Subset { pool: Pool::Train, idx: (0..nt).collect() };
        let a = Subset { pool: Pool::Train, idx: (0..nt).step_by(2).collect() };
        let b = Subset { pool: Pool::Train, idx: (1..nt).step_by(2).collect() };
        let a_r = a.head(n_labels);
        let b_r = b.head(n_labels);
        let e = Subset { pool: Pool::Test, idx: (0..ne).collect() };
        Splits { p, a, b, a_r, b_r, e }
    }

    /// Sizes and per-class counts, for the manifest.
    pub fn counts(&self, data: &FashionMnist) -> SplitCounts {
        let one = |s: &Subset| SplitCount { n: s.len(), per_class: s.class_counts(data).to_vec() };
        SplitCounts {
            p: one(&self.p),
            a: one(&self.a),
            b: one(&self.b),
            a_r: one(&self.a_r),
            b_r: one(&self.b_r),
            e: one(&self.e),
        }
    }
}

/// Size and class histogram of one split.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitCount {
    /// Images.
    pub n: usize,
    /// Images per class 0..9.
    pub per_class: Vec<usize>,
}

/// [`SplitCount`] of every split.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitCounts {
    /// P.
    pub p: SplitCount,
    /// A.
    pub a: SplitCount,
    /// B.
    pub b: SplitCount,
    /// A_r.
    pub a_r: SplitCount,
    /// B_r.
    pub b_r: SplitCount,
    /// E.
    pub e: SplitCount,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_gz(path: &Path, bytes: &[u8]) {
        let f = std::fs::File::create(path).unwrap();
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap();
    }

    #[test]
    fn idx_fixture_round_trips_through_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let img = Idx { dims: vec![3, SIDE, SIDE], data: (0..3 * PIXELS).map(|i| (i % 251) as u8).collect() };
        let lab = Idx { dims: vec![3], data: vec![7, 0, 9] };
        let bytes = encode_idx(&img);
        assert_eq!(&bytes[..4], &[0, 0, 8, 3]);
        assert_eq!(&bytes[4..8], &[0, 0, 0, 3]);
        assert_eq!(&encode_idx(&lab)[..4], &[0, 0, 8, 1]);
        for (k, f) in FILES.iter().enumerate() {
            write_gz(&dir.path().join(f.name), &encode_idx(if k % 2 == 0 { &img } else { &lab }));
        }
        let raw = gunzip(&dir.path().join(FILES[0].name)).unwrap();
        assert_eq!(parse_idx(&raw, "x").unwrap(), img);
        // Unverified load parses; verified load rejects the fixture with a message naming the file.
        let d = FashionMnist::load_from(dir.path(), false).unwrap();
        assert_eq!(d.train_labels, vec![7, 0, 9]);
        assert_eq!(d.test_images, img.data);
        assert_eq!(d.info.files[1].raw_sha256, sha256_hex(&encode_idx(&lab)));
        let e = FashionMnist::load_from(dir.path(), true).unwrap_err().to_string();
        assert!(e.contains("train-images-idx3-ubyte.gz") && e.contains("sha256"), "{e}");
        // Pixels are x/255.
        let s = Splits::new(&d, None, None, 2);
        assert_eq!(s.a.idx, vec![0, 2]);
        assert_eq!(s.b.idx, vec![1]);
        assert_eq!(s.a_r.idx, vec![0, 2]);
        assert_eq!(s.e.pixels(&d, [1])[0], (PIXELS % 251) as f32 / 255.0);
        assert_eq!(s.a.all_labels(&d), vec![7, 9]);
    }

    #[test]
    fn idx_errors_are_clear() {
        assert!(parse_idx(&[0, 0, 8], "t").unwrap_err().to_string().contains("truncated"));
        assert!(parse_idx(&[0, 0, 9, 1, 0, 0, 0, 0], "t").unwrap_err().to_string().contains("magic"));
        assert!(parse_idx(&[0, 0, 8, 1, 0, 0, 0, 2, 5], "t").unwrap_err().to_string().contains("payload"));
        let dir = tempfile::tempdir().unwrap();
        let e = locate(Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("apt-get install -y dataset-fashion-mnist") && e.contains("ALIGNBENCH_DATA"), "{e}");
    }

    #[test]
    fn real_data_splits_when_installed() {
        let Ok(dir) = locate(None) else {
            crate::testing::missing(format!("Fashion-MNIST not installed ({INSTALL_HINT})"));
            return;
        };
        let d = FashionMnist::load_from(&dir, true).unwrap();
        for (f, h) in FILES.iter().zip(&d.info.files) {
            assert_eq!(h.raw_sha256, f.raw_sha256);
            assert_eq!(d.info.files.len(), 4);
            let _ = f.gz_sha256_prefix;
        }
        let s = Splits::new(&d, None, None, 5000);
        let c = s.counts(&d);
        assert_eq!((c.p.n, c.a.n, c.b.n, c.a_r.n, c.e.n), (60_000, 30_000, 30_000, 5000, 10_000));
        assert_eq!(c.e.per_class, vec![1000; 10]);
        assert!(c.a.per_class.iter().all(|&k| (2800..3200).contains(&k)), "{:?}", c.a.per_class);
    }
}
