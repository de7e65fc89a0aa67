//! Any ONNX model as a **black-box** reward, through ONNX Runtime loaded at run time (`ort` with `load-dynamic`,
//! stack.md): the model maps a float tensor [n, …] (the decoder's rows, reshaped to `shape` when given) to one
//! score per row ([n] or [n, 1]). Gradient methods are refused at plan time; best-of-N, SMC, FK steering and SVDD
//! use it as is.
//!
//! The runtime library is found through `ORT_DYLIB_PATH` (e.g. from the PyPI wheel:
//! `python3 -m venv .venv && .venv/bin/pip install onnxruntime==1.32.0`, then
//! `export ORT_DYLIB_PATH=$(ls $PWD/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*)`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;
use serde::{Deserialize, Serialize};

use super::weights::sha256_file;
use super::Reward;
use crate::diffusion::Cond;
use crate::{Error, Result};

/// YAML of an `onnx` reward.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxConfig {
    /// Path of the `.onnx` file.
    pub path: String,
    /// Expected sha256 of the file (recommended: pins the scorer in every result).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Input name (default: the model's first input).
    #[serde(default)]
    pub input: Option<String>,
    /// Output name (default: the model's first output).
    #[serde(default)]
    pub output: Option<String>,
    /// Per-row input shape (default `[dim]`), e.g. `[3, 64, 64]` for images.
    #[serde(default)]
    pub shape: Option<Vec<usize>>,
    /// Human-readable scale of the score, recorded with results.
    #[serde(default)]
    pub scale: Option<String>,
}

fn environment() -> Result<&'static Environment> {
    static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = runtime_path().map_err(|e| e.to_string())?;
        ort::init_from(&lib)
            .map_err(|e| format!("{}: cannot load ONNX Runtime: {e}", lib.display()))?
            .with_name("alignbench")
            .build()
            .map_err(|e| format!("ONNX Runtime environment: {e}"))
    })
    .as_ref()
    .map_err(|e| Error::config(e.clone()))
}

/// The ONNX Runtime shared library named by `ORT_DYLIB_PATH`, checked to exist (ort would panic otherwise).
pub fn runtime_path() -> Result<PathBuf> {
    let how = "install it with `python3 -m venv .venv && .venv/bin/pip install onnxruntime==1.32.0` and \
               `export ORT_DYLIB_PATH=$(ls $PWD/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*)`";
    let p = std::env::var_os("ORT_DYLIB_PATH").ok_or_else(|| {
        Error::config(format!("onnx reward: ORT_DYLIB_PATH is not set (ONNX Runtime library); {how}"))
    })?;
    let p = PathBuf::from(p);
    if !p.is_file() {
        return Err(Error::file(&p, format!("ORT_DYLIB_PATH does not point to a file; {how}")));
    }
    Ok(p)
}

/// An ONNX scorer.
pub struct OnnxReward {
    session: Mutex<Session>,
    input: String,
    output: String,
    shape: Vec<usize>,
    dim: usize,
    path: PathBuf,
    sha256: String,
    scale: String,
}

impl OnnxReward {
    /// Load the model for rows of length `dim`.
    pub fn load(cfg: &OnnxConfig, dim: usize) -> Result<Self> {
        let path = PathBuf::from(&cfg.path);
        if !path.is_file() {
            return Err(Error::file(&path, "reward.path: ONNX model not found; give the path of a `.onnx` file"));
        }
        let sha256 = sha256_file(&path)?;
        if let Some(want) = &cfg.sha256 {
            if !want.eq_ignore_ascii_case(&sha256) {
                return Err(Error::file(
                    &path,
                    format!("reward.sha256: the file has sha256 {sha256}, expected {want}"),
                ));
            }
        }
        let shape = cfg.shape.clone().unwrap_or_else(|| vec![dim]);
        if shape.iter().product::<usize>() != dim {
            return Err(Error::config(format!(
                "reward.shape: {shape:?} has {} values per row, the samples have {dim}",
                shape.iter().product::<usize>()
            )));
        }
        let env = environment()?;
        let session = Session::builder(env)
            .and_then(|mut b| b.commit_from_file(&path))
            .map_err(|e| Error::file(&path, format!("ONNX Runtime cannot load the model: {e}")))?;
        let pick = |given: &Option<String>, names: Vec<String>, what: &str| -> Result<String> {
            match given {
                Some(n) if names.contains(n) => Ok(n.clone()),
                Some(n) => {
                    Err(Error::config(format!("reward.{what}: the model has no {what} `{n}` (it has {names:?})")))
                }
                None => names.into_iter().next().ok_or_else(|| Error::file(&path, format!("the model has no {what}s"))),
            }
        };
        let input = pick(&cfg.input, session.inputs().iter().map(|o| o.name().to_string()).collect(), "input")?;
        let output = pick(&cfg.output, session.outputs().iter().map(|o| o.name().to_string()).collect(), "output")?;
        Ok(OnnxReward {
            session: Mutex::new(session),
            input,
            output,
            shape,
            dim,
            path,
            sha256,
            scale: cfg.scale.clone().unwrap_or_else(|| "as defined by the ONNX model".into()),
        })
    }

    /// sha256 of the model file.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

impl Reward for OnnxReward {
    fn name(&self) -> String {
        format!("onnx({})", self.path.display())
    }
    fn differentiable(&self) -> bool {
        false
    }
    fn scale(&self) -> String {
        self.scale.clone()
    }
    fn input_dim(&self) -> usize {
        self.dim
    }
    fn score(&self, y: &[f32], _cond: &Cond, out: &mut [f64]) -> Result<()> {
        let n = y.len() / self.dim;
        if n == 0 {
            return Ok(());
        }
        let mut shape = vec![n as i64];
        shape.extend(self.shape.iter().map(|&s| s as i64));
        let t = Tensor::from_array((shape, y.to_vec().into_boxed_slice()))
            .map_err(|e| Error::config(format!("onnx reward: input tensor: {e}")))?;
        let mut s = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = s
            .run(ort::inputs![self.input.as_str() => t])
            .map_err(|e| Error::file(&self.path, format!("ONNX Runtime run failed: {e}")))?;
        let (oshape, data) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::file(&self.path, format!("output `{}` is not a float tensor: {e}", self.output)))?;
        if data.len() != n {
            return Err(Error::file(
                &self.path,
                format!("output `{}` has shape {oshape:?}; a reward must give one value per row ({n})", self.output),
            ));
        }
        for (o, &v) in out.iter_mut().zip(data) {
            *o = v as f64;
        }
        Ok(())
    }
    fn score_grad(&self, _y: &[f32], _c: &Cond, _out: &mut [f64], _grad: &mut [f32]) -> Result<()> {
        Err(Error::config(format!("reward {} is black-box: it has no gradient", self.name())))
    }
}

/// The runtime library inside `<root>/.venv` (where `make test` installs it) of the runtime library, if present.
pub fn venv_runtime(root: &Path) -> Option<PathBuf> {
    let lib = root.join(".venv/lib");
    for py in std::fs::read_dir(lib).ok()?.flatten() {
        let capi = py.path().join("site-packages/onnxruntime/capi");
        for f in std::fs::read_dir(capi).ok()?.flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            if name.starts_with("libonnxruntime.so.") {
                return Some(f.path());
            }
        }
    }
    None
}
