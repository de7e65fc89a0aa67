#!/usr/bin/env bash
# The cost of sharding on a real Slurm (issue 17): a 64-cell toy sweep (8 seeds × DAS at 4 particle counts × 2 α)
# submitted with `alignbench slurm` as 1 shard and as 8 shards to a one-node local Slurm (scripts/local-slurm.sh),
# each task on one CPU. Prints `name: value unit` lines: the wall time from submission until the merge + report job
# has finished, the sum of the cells' own `wall_s`, the overhead (wall time minus the cells' time divided by the
# tasks that can run at once: min(shards, node CPUs)), and whether the two merged tables are identical (timing aside).
#
#   scripts/slurm-overhead.sh            # builds the release binary first
#   ALIGNBENCH_BIN=target/debug/alignbench scripts/slurm-overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${ALIGNBENCH_BIN:-}
if [[ -z $bin ]]; then
  cargo build --release --quiet
  bin=target/release/alignbench
fi
bin=$(cd "$(dirname "$bin")" && pwd -P)/$(basename "$bin")

tmp=$(mktemp -d)
cleanup() {
  scripts/local-slurm.sh down "$tmp/slurm" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

scripts/local-slurm.sh install >/dev/null 2>&1
scripts/local-slurm.sh up "$tmp/slurm" >/dev/null 2>&1
export SLURM_CONF=$tmp/slurm/slurm.conf

cat >"$tmp/sweep64.yaml" <<'EOF'
version: 1
name: sweep64
description: 64 toy cells (8 seeds × DAS at 4 particle counts × 2 α) for the Slurm overhead measurement.
seeds: [1, 2, 3, 4, 5, 6, 7, 8]
problem: { kind: gmm, preset: gmm1 }
reward: { kind: quadratic, preset: gmm1 }
alpha: [0.5, 1.0]
steps: 50
groups: 400
metrics: { target_pool: 2000, emd_n: 200, emd_repeats: 3, keep_samples: 200 }
methods:
  - method: das
    particles: [4, 8, 16, 32]
EOF

# Sum of a results folder's `wall_s` rows (seconds).
cell_seconds() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "metric") m = i; if ($i == "value") v = i } }
           NR > 1 && $m == "wall_s" { s += $v } END { printf "%.2f", s }' "$1/sweep64/metrics.csv"
}

# Submit with N shards, wait for both jobs to leave the queue; echo the wall seconds.
run_sharded() {
  local n=$1 out=$2 t0 ids array merge
  t0=$(date +%s.%N)
  ids=$("$bin" slurm "$tmp/sweep64.yaml" --shards "$n" --cpus-per-task 1 --out "$out" |
    sed -n 's/.*job array \([0-9]*\) .*merge + report job \([0-9]*\) .*/\1 \2/p')
  read -r array merge <<<"$ids"
  [[ -n $array && -n $merge ]] || { echo "could not submit" >&2; exit 1; }
  while [[ -n $(squeue -h -j "$array,$merge" -o %i 2>/dev/null) ]]; do
    if squeue -h -j "$merge" -o %r 2>/dev/null | grep -q DependencyNeverSatisfied; then
      echo "a shard failed; logs in $out/sweep64/slurm/" >&2
      cat "$out"/sweep64/slurm/*.out >&2
      exit 1
    fi
    sleep 0.2
  done
  scontrol show job "$merge" | grep -q 'JobState=COMPLETED' || { echo "merge job did not complete" >&2; exit 1; }
  awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.3f", a - b }'
}

echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "node_cpus: $(sinfo -h -o %c) cpus"
echo "cells: $("$bin" plan "$tmp/sweep64.yaml" | grep -c '^ *[0-9a-f]\{12\}' || true) cells"
w1=$(run_sharded 1 "$tmp/one")
w8=$(run_sharded 8 "$tmp/eight")
c1=$(cell_seconds "$tmp/one")
c8=$(cell_seconds "$tmp/eight")
printf 'slurm_1_shard_wall: %.2f s\n' "$w1"
printf 'slurm_1_shard_cell_sum: %.2f s\n' "$c1"
printf 'slurm_8_shards_wall: %.2f s\n' "$w8"
printf 'slurm_8_shards_cell_sum: %.2f s\n' "$c8"
cpus=$(sinfo -h -o %c)
printf 'slurm_1_shard_overhead: %.2f s\n' "$(awk -v w="$w1" -v c="$c1" 'BEGIN { print w - c }')"
printf 'slurm_8_shards_overhead: %.2f s\n' "$(awk -v w="$w8" -v c="$c8" -v p="$cpus" 'BEGIN { q = p < 8 ? p : 8; print w - c / q }')"
printf 'slurm_speedup_8_vs_1: %.2f x\n' "$(awk -v a="$w1" -v b="$w8" 'BEGIN { print a / b }')"
same=no
if diff <(grep -v ',wall_s,' "$tmp/one/sweep64/metrics.csv") <(grep -v ',wall_s,' "$tmp/eight/sweep64/metrics.csv") >/dev/null; then
  same=yes
fi
echo "tables_identical: $same"
