//! With the `cuda` feature: compiles alignbench's own CUDA kernels (`src/nn/kernels.cu`, the fused normalisations of
//! issue 16) to PTX with `$NVCC` (default `nvcc`) for `compute_$CUDA_COMPUTE_CAP` (default 90), as candle-kernels
//! does for its own; `make cuda` sets both. Without the feature it does nothing.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/nn/kernels.cu");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("kernels.ptx");
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", &format!("--gpu-architecture=compute_{cap}"), "src/nn/kernels.cu", "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("`{nvcc} --ptx src/nn/kernels.cu` failed ({s}); build the cuda feature with `make cuda`"),
        Err(e) => panic!("cannot run `{nvcc}` ({e}): the cuda feature needs nvcc; build it with `make cuda`"),
    }
}
