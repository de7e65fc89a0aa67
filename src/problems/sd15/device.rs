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

/// The largest device memory in use seen by [`sample_memory`] (bytes; 0 before any sample).
static GPU_PEAK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Record the device memory in use now, at the high-water points of a guided step — right after a backward pass,
/// while the forward graph and the gradients are both alive. CUDA: total − free of the device (`cuMemGetInfo`
/// through cudarc; the whole GPU, so other processes on it count too); the CPU needs no samples (see
/// [`peak_memory_bytes`]).
pub fn sample_memory(device: &Device) {
    if let Some((free, total)) = memory_info(device) {
        GPU_PEAK.fetch_max(total.saturating_sub(free), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Free and total memory of a GPU now, in bytes (`cuMemGetInfo`); `None` on the CPU.
pub fn memory_info(device: &Device) -> Option<(u64, u64)> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        return d.cuda_stream().context().mem_get_info().ok().map(|(f, t)| (f as u64, t as u64));
    }
    let _ = device;
    None
}

/// Whether `e` is a device allocation failure (CUDA's `CUDA_ERROR_OUT_OF_MEMORY`, as cudarc and candle print it).
pub fn is_out_of_memory(e: &Error) -> bool {
    let m = e.to_string().to_ascii_lowercase();
    m.contains("out_of_memory") || m.contains("out of memory")
}

/// Forget the peak so far: the next [`peak_memory_bytes`] reports the largest use seen from now on (CUDA: the
/// samples of [`sample_memory`]; CPU: the kernel's peak resident set, reset through `/proc/self/clear_refs`
/// where Linux allows it).
pub fn reset_peak_memory() {
    GPU_PEAK.store(0, std::sync::atomic::Ordering::Relaxed);
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `loss.backward()`, then [`sample_memory`] while the forward graph and the gradients are both alive.
pub fn backward(loss: &candle_core::Tensor, device: &Device) -> Result<candle_core::backprop::GradStore> {
    let grads = loss.backward()?;
    sample_memory(device);
    Ok(grads)
}

/// Peak memory of this process on `device`, in bytes, where it can be measured: on the CPU the peak resident set
/// size (`VmHWM` of `/proc/self/status`, Linux; it includes memory-mapped weights that were touched); on CUDA the
/// largest use [`sample_memory`] saw (candle 0.11 has no allocator counter; its allocations go straight to the
/// driver, so the device's used memory after a backward pass is the step's high-water mark).
pub fn peak_memory_bytes(device: &Device) -> Option<u64> {
    if !device.is_cpu() {
        let peak = GPU_PEAK.load(std::sync::atomic::Ordering::Relaxed);
        return (peak > 0).then_some(peak);
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
