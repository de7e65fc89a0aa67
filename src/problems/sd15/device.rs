//! Devices for the Stable Diffusion pipeline: parsing `cpu` / `cuda:N`, and the peak memory a run used.
//!
//! CUDA needs the crate's `cuda` cargo feature (`cargo build --release --features cuda`), which compiles candle's
//! kernels with `nvcc` at build time; a build without it refuses `cuda:N` with that instruction.

use candle_core::Device;

use crate::{Error, Result};

/// `"cpu"`, `"cuda"` (= `cuda:0`) or `"cuda:N"`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let s = spec.trim().to_ascii_lowercase();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()).ok_or_else(|| {
            Error::config(format!("device `{spec}`: expected `cpu`, `cuda` or `cuda:N` with N a GPU index"))
        })?,
        None => return Err(Error::config(format!("device `{spec}`: expected `cpu`, `cuda` or `cuda:N`"))),
    };
    if !cfg!(feature = "cuda") {
        return Err(Error::config(format!(
            "device `{spec}`: this build has no CUDA support; rebuild with `cargo build --release --features cuda` \
             (needs the CUDA toolkit's nvcc at build time) or use `cpu`"
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| Error::config(format!("device `{spec}`: cannot open GPU {ordinal}: {e}")))
}

/// A device as the text [`parse_device`] reads (`cpu`, `cuda:N`, `metal:N`).
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Peak memory of this process on `device`, in bytes, where it can be measured: on the CPU the peak resident set
/// size (`VmHWM` of `/proc/self/status`, Linux; it includes memory-mapped weights that were touched). candle 0.11
/// exposes no peak-allocation counter for CUDA, so GPU devices give `None` (use `nvidia-smi` alongside).
pub fn peak_memory_bytes(device: &Device) -> Option<u64> {
    if !device.is_cpu() {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_refuses_cuda_without_the_feature() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device(" CPU ").unwrap().is_cpu());
        assert_eq!(device_name(&Device::Cpu), "cpu");
        for bad in ["gpu", "cuda:x", "cuda:", "cuda0"] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(e.contains("expected `cpu`"), "{bad}: {e}");
        }
        if !cfg!(feature = "cuda") {
            for s in ["cuda", "cuda:1"] {
                let e = parse_device(s).unwrap_err().to_string();
                assert!(e.contains("--features cuda") && e.contains("nvcc"), "{e}");
            }
        }
        let peak = peak_memory_bytes(&Device::Cpu);
        if cfg!(target_os = "linux") {
            assert!(peak.unwrap() > 1 << 20, "{peak:?}");
        }
    }
}
