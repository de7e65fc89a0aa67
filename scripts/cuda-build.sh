#!/usr/bin/env bash
# `make cuda`: build alignbench with `--features cuda` on a machine without a system CUDA (issue 16).
#
# 1. Installs the pinned CUDA 13.0 toolchain from PyPI wheels into a venv under $CUDA_DIR (default .cuda/): nvcc,
#    nvvm and crt pinned to 13.0.88 (unpinned they resolve to 13.5.x, whose PTX driver 580 cannot load), the runtime
#    headers and libcudart, cccl, nvrtc, cuBLAS, cuRAND, and cuDNN 9 (candle's `cudnn` feature: convolutions, the
#    UNet/VAE's input gradients among them, run on cuDNN instead of candle's im2col + GEMM kernels).
# 2. Adds the unversioned .so links the linker wants (libcublas.so → libcublas.so.13, …) and a link-time stub
#    libcuda.so (soname libcuda.so.1) defining every `cu*` driver symbol cudarc declares: no wheel ships the driver
#    library, cudarc links it at build time, and the real driver is loaded at run time on the GPU machine.
# 3. Builds `cargo build --release --features cuda` and the two GPU examples into $CARGO_TARGET_DIR (default
#    target/cuda, so the CPU build in target/ stays as it is) for compute capability $CUDA_COMPUTE_CAP (default 90,
#    H100/H200; one architecture keeps the kernel build short).
#
# Time: about an hour from scratch on a 2-core machine, 22 minutes of it candle-kernels' MoE/GGUF library, which
# candle-kernels' build script always compiles and links (it cannot be skipped without patching candle); its objects
# are cached in the target folder (cudaforge's incremental cache, keyed by sources, flags and architecture), so keep
# $CARGO_TARGET_DIR between builds and a rebuild after changing alignbench takes minutes.
# Then `scripts/gpu-check.sh pack` makes the folder to carry to a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_DIR=${CUDA_DIR:-$PWD/.cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/cuda}
PINS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
  nvidia-cudnn-cu13==9.13.0.50
)
log() { echo "cuda-build: $*" >&2; }
t0=$(date +%s)

venv=$CUDA_DIR/venv
if [[ ! -x $venv/bin/python ]]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
if [[ $("$venv/bin/pip" freeze 2>/dev/null | grep -cxF -f <(printf '%s\n' "${PINS[@]}")) -ne ${#PINS[@]} ]]; then
  log "installing the CUDA 13.0 wheels: ${PINS[*]}"
  "$venv/bin/pip" install -q --disable-pip-version-check "${PINS[@]}"
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
N=$site/nvidia/cu13
[[ -x $N/bin/nvcc ]] || { log "error: no nvcc at $N/bin/nvcc after installing the wheels"; exit 1; }

# Unversioned shared-library names for the linker.
for f in "$N"/lib/lib*.so.*; do
  [[ -e $f ]] || continue
  base=${f%%.so.*}.so
  [[ -e $base ]] || ln -s "$(basename "$f")" "$base"
done

# cuDNN's wheel keeps its libraries in nvidia/cudnn/lib: link against its dispatcher libcudnn.so.9 from $N/lib (at
# run time the GPU machine's own cuDNN 9 is found through LD_LIBRARY_PATH, see scripts/gpu-check.sh).
cudnn=$site/nvidia/cudnn/lib/libcudnn.so.9
[[ -f $cudnn ]] || { log "error: no cuDNN at $cudnn after installing the wheels"; exit 1; }
ln -sf "$cudnn" "$N/lib/libcudnn.so"

# The driver stub: every cu* function cudarc's driver bindings declare, each returning CUDA_ERROR_STUB_LIBRARY (34).
cudarc=$(cargo metadata --format-version 1 --features cuda 2>/dev/null |
  "$venv/bin/python" -c 'import json, sys, os
m = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == "cudarc"))')
sys_rs=$cudarc/src/driver/sys/mod.rs
[[ -f $sys_rs ]] || { log "error: cudarc's driver bindings not found at $sys_rs (run cargo fetch)"; exit 1; }
stub=$N/lib/stubs
mkdir -p "$stub"
if [[ ! -f $stub/libcuda.so || $sys_rs -nt $stub/libcuda.so ]]; then
  grep -o 'fn cu[A-Za-z0-9_]*' "$sys_rs" | sed 's/^fn //' | sort -u |
    awk '{ printf "int %s(void) { return 34; }\n", $1 }' >"$stub/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub/libcuda.so" "$stub/cuda_stub.c"
  log "driver stub: $(wc -l <"$stub/cuda_stub.c") symbols → $stub/libcuda.so"
fi

export PATH=$N/bin:$PATH CUDA_HOME=$N CUDA_PATH=$N CUDA_ROOT=$N NVCC=$N/bin/nvcc
export LD_LIBRARY_PATH=$N/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
log "nvcc: $(nvcc --version | tail -n 2 | head -n 1)"
log "building --features cuda into $CARGO_TARGET_DIR (compute capability $CUDA_COMPUTE_CAP)"
cargo build --release --features cuda --bin alignbench --example sd_step_timing --example sd_layer_memory --example sd_parity
# The library's unit tests with the CUDA path, for the GPU machine: every `*_where_a_gpu_is_present` test is a
# CPU-vs-CUDA parity test of one op or model (scripts/gpu-check.sh runs them there). Same profile: only alignbench's
# own test target compiles.
tests=$(cargo test --release --features cuda --lib --no-run --message-format=json 2>"$CARGO_TARGET_DIR/unit-tests.log" |
  "$venv/bin/python" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["executable"])')
if [[ ! -x $tests ]]; then
  tail -n 40 "$CARGO_TARGET_DIR/unit-tests.log" >&2
  log "error: the CUDA unit-test binary was not built (cargo test --release --features cuda --lib --no-run)"
  exit 1
fi
cp "$tests" "$CARGO_TARGET_DIR/release/unit-tests"
log "done in $(($(date +%s) - t0)) s: $CARGO_TARGET_DIR/release/alignbench"
