#!/usr/bin/env bash
# Build the release binary and run the named benchmarks, prefixed by the provenance a reader needs to compare
# figures across machines (commit, CPU, cores). Figures are `name: value unit` lines; quote medians of several runs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "cores: $(nproc)"
for name in "${@:-toy}"; do
  ./target/release/alignbench bench "$name"
done
