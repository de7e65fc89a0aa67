#!/usr/bin/env bash
# The GPU check of issue 16, in two halves:
#
#   scripts/gpu-check.sh pack [DIR]   here (after `make cuda`): DIR (default gpu-pack/, git-ignored) gets the stripped
#                                     CUDA binaries in one solid tar.xz (alignbench, sd_step_timing, sd_layer_memory,
#                                     sd_parity, unit-tests), the diffusers anchor script and the diffusers wheel.
#   scripts/gpu-check.sh run [DIR]    on the GPU machine (no Rust there): prints `name: value unit` lines —
#                                     the CPU-vs-CUDA parity unit tests of every op (`*_where_a_gpu_is_present`),
#                                     CPU-vs-GPU parity on the tiny and the full-size random SD, the guided-step
#                                     timing (first step, warm medians) and peak GPU memory of alignbench and of
#                                     diffusers + PyTorch SDPA on the same GPU in the same run, their ratios, and the
#                                     attention / group-norm / layer-norm layers' time and memory, and seconds per
#                                     image per method (`alignbench cost`) beside the anchor-priced ledger.
#
# Environment for `run`: TORCH_VENV (default /opt/torch/.venv, the machine's PyTorch), GPU_CHECK_SIZE (512),
# GPU_CHECK_BATCH (2), GPU_CHECK_DTYPE (f16), GPU_CHECK_REPS (7); the whole-method part runs
# `alignbench cost experiments/paper/$GPU_CHECK_COST_FILE.yaml` (aesthetic) for GPU_CHECK_COST_PROMPTS (1) images of
# GPU_CHECK_COST_METHODS (ddim,dps: at 34× the anchor a K = 4 method is minutes per image); GPU_CHECK_COST=0 skips
# it. Peak memory of our processes is the maximum of `nvidia-smi --query-gpu=memory.used` sampled every 50 ms (the
# cells also sample it after each backward pass); PyTorch reports its own `max_memory_allocated` and `max_memory_reserved`.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
dir=${2:-gpu-pack}
BINS=(release/alignbench release/examples/sd_step_timing release/examples/sd_layer_memory release/examples/sd_parity
  release/unit-tests)
DIFFUSERS=diffusers==0.42.1

pack() {
  local target=${CARGO_TARGET_DIR:-target/cuda} anchor=${ANCHOR:-../shared/gpu/torch_anchor.py} b
  for b in "${BINS[@]}"; do
    [[ -x $target/$b ]] || { echo "gpu-check: $target/$b missing; run \`make cuda\` first" >&2; exit 1; }
  done
  [[ -f $anchor ]] || { echo "gpu-check: the anchor script $anchor is missing (set ANCHOR=path/to/torch_anchor.py)" >&2; exit 1; }
  rm -rf "$dir" && mkdir -p "$dir/bin" "$dir/wheels"
  local stage
  stage=$(mktemp -d)
  for b in "${BINS[@]}"; do
    strip -o "$stage/$(basename "$b")" "$target/$b"
  done
  # One solid archive with a dictionary larger than any binary: the binaries share most of their bytes (candle's
  # kernels, the libraries), which separate archives would each carry (62 MB separately, 35 MB solid, 2026-12-05).
  tar -C "$stage" -cf - . | xz -T1 --x86 --lzma2=preset=6,dict=256MiB >"$dir/bin/bin.tar.xz"
  rm -rf "$stage"
  cp "$anchor" "$dir/torch_anchor.py"
  python3 -m pip download -q --no-deps --disable-pip-version-check "$DIFFUSERS" -d "$dir/wheels"
  git rev-parse --short HEAD >"$dir/commit"
  echo "gpu-check: packed $(du -sh "$dir" | cut -f1) into $dir (carry it; then \`scripts/gpu-check.sh run $dir\` there)"
}

# Run a command while sampling the GPU's used memory; prints its output, then `<name>_peak_gpu_memory: X GiB`.
with_peak() {
  local name=$1
  shift
  local log
  log=$(mktemp)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "${GPU_INDEX:-0}" -lms 50 >"$log" 2>/dev/null &
  local smi=$!
  local rc=0
  "$@" || rc=$?
  kill "$smi" 2>/dev/null || true
  wait "$smi" 2>/dev/null || true
  awk -v n="$name" 'BEGIN { m = 0 } $1 + 0 > m { m = $1 + 0 } END { printf "%s_peak_gpu_memory: %.2f GiB\n", n, m / 1024 }' "$log"
  rm -f "$log"
  return "$rc"
}

run() {
  local venv=${TORCH_VENV:-/opt/torch/.venv} size=${GPU_CHECK_SIZE:-512} batch=${GPU_CHECK_BATCH:-2}
  local dtype=${GPU_CHECK_DTYPE:-f16} reps=${GPU_CHECK_REPS:-7} tmp libs f
  [[ -d $dir/bin ]] || { echo "gpu-check: no $dir/bin; run \`scripts/gpu-check.sh pack $dir\` where the build is" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap "rm -rf '$tmp'" EXIT
  xz -dc "$dir/bin/bin.tar.xz" | tar -C "$tmp" -xf -
  libs=$(find "$venv" -path '*site-packages/nvidia/*/lib' -type d 2>/dev/null | tr '\n' ':')
  export LD_LIBRARY_PATH=${libs}/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  # candle ships its kernels as PTX, which the driver compiles at first use; its JIT cache (~/.nv/ComputeCache) keeps
  # the result for later processes when it is large enough.
  export CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-4294967296}
  echo "commit: $(cat "$dir/commit" 2>/dev/null || echo unknown)"
  echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader -i "${GPU_INDEX:-0}")"

  # Parity first: a wrong GPU path makes every timing meaningless. f32 parity without TF32 (cuDNN and cuBLAS allow
  # it by default on Ampere and later); the timings below run with the defaults.
  local passed
  passed=$(NVIDIA_TF32_OVERRIDE=0 "$tmp/unit-tests" where_a_gpu_is_present --test-threads 1 2>&1 | tee "$tmp/unit.txt" |
    awk '/^test result:/ { print $4 }') || true
  grep -E '^test .* FAILED$|panicked' "$tmp/unit.txt" || true
  echo "gpu_parity_unit_tests_passed: ${passed:-0} tests"
  grep -q '^test result: ok' "$tmp/unit.txt" || echo "gpu_parity_unit_tests: FAILED"
  NVIDIA_TF32_OVERRIDE=0 "$tmp/sd_parity" cuda:0 64 2 || echo "parity: FAILED"

  # alignbench's guided step (our numbers, then the anchor's, in one run on one GPU).
  with_peak sd15_step "$tmp/sd_step_timing" cuda:0 "$size" "$batch" "$dtype" "$reps" | tee "$tmp/ours.txt"
  mkdir -p "$tmp/py"
  "$venv/bin/python" -m pip install -q --no-deps --disable-pip-version-check --target "$tmp/py" "$dir"/wheels/*.whl
  PYTHONPATH=$tmp/py "$venv/bin/python" "$dir/torch_anchor.py" --size "$size" --batch "$batch" --dtype "$dtype" \
    --attn sdpa --reps "$reps" --tag anchor | tee "$tmp/anchor.txt"
  local ours theirs om tm
  ours=$(awk '/^sd15_guided_step:/ { print $2 }' "$tmp/ours.txt")
  theirs=$(awk '/^torch_anchor_median_guided_step:/ { print $2 }' "$tmp/anchor.txt")
  om=$(awk '/^sd15_step_peak_gpu_memory:/ { print $2 }' "$tmp/ours.txt")
  tm=$(awk '/^torch_anchor_peak_memory_reserved:/ { print $2 }' "$tmp/anchor.txt")
  [[ -n $ours && -n $theirs ]] && awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "guided_step_ratio_vs_diffusers: %.2f x\n", a / b }'
  [[ -n $om && -n $tm ]] && awk -v a="$om" -v b="$tm" 'BEGIN { printf "peak_memory_ratio_vs_diffusers: %.2f x\n", a / b }'

  # Whole-method figures: seconds per image of the paper's methods on full-size random weights
  # (`alignbench cost`), next to the same ledgers priced by the anchor's rows (the PyTorch-stack estimate; the
  # anchor's reward is a scalar of the image, so the reward towers are not in it).
  if [[ ${GPU_CHECK_COST:-1} != 0 ]]; then
    local rs
    rs=$(awk -v b="$batch" '/_median_unet_fwd_cfg:/ { f = $2 } /_median_guided_step:/ { g = $2 }
      /_median_vae_decode_vjp:/ { v = $2 } /_median_vae_decode:/ { d = $2 }
      END { if (f && g && v && d) printf "%.6f,%.6f,%.6f,%.6f", f / (2 * b), g / b, v / b, d / b }' "$tmp/anchor.txt")
    echo "anchor_row_seconds: $rs s (UNet row, guided step per latent, decode VJP, decode; batch $batch)"
    ALIGNBENCH_DEVICE=cuda:0 with_peak cost "$tmp/alignbench" cost "experiments/paper/${GPU_CHECK_COST_FILE:-aesthetic}.yaml" \
      --prompts "${GPU_CHECK_COST_PROMPTS:-1}" --methods "${GPU_CHECK_COST_METHODS:-ddim,dps}" --out "$tmp/cost" \
      --quiet ${rs:+--row-seconds "$rs"} || echo "cost: FAILED"
  fi

  # The first step again, in a new process: what the PTX JIT cache saves.
  "$tmp/sd_step_timing" cuda:0 "$size" "$batch" "$dtype" 1 | awk '/^sd15_first_step:/ { print "sd15_first_step_second_process:", $2, $3 }'

  # The layers rewritten for memory (issue 16), on the GPU.
  for mode in new plain; do
    with_peak "attention_$mode" "$tmp/sd_layer_memory" attention "$mode" 4096 "$batch" cuda:0 || true
    with_peak "groupnorm_$mode" "$tmp/sd_layer_memory" groupnorm "$mode" "$size" "$batch" cuda:0 || true
    with_peak "layernorm_$mode" "$tmp/sd_layer_memory" layernorm "$mode" 4096 "$batch" cuda:0 || true
  done
}

case $mode in
  pack) pack ;;
  run) run ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
