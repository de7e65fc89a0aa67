#!/usr/bin/env bash
# Same numbers: `alignbench reproduce --quick` and the smoke experiments must give the recorded tidy tables
# (metrics.csv, prompts.csv) byte for byte, except the measured times (the `wall_s` and `train_s` metric rows).
# Run it before and after a refactor (`make same-numbers`); a deliberate change of numbers is recorded with
# `--record` and listed in the commit that makes it.
#
#   scripts/same-numbers.sh              compare with tests/golden/same-numbers/{quick,smoke}/
#   scripts/same-numbers.sh --record     record the current outputs as the reference (listing what changed)
#
# ALIGNBENCH_BIN picks the binary (default target/release/alignbench, built first). SAME_NUMBERS=smoke runs the
# smoke experiments only (seconds; `make test` checks those through tests/same_numbers.rs as well).
set -euo pipefail
cd "$(dirname "$0")/.."

record=0
[ "${1:-}" = "--record" ] && record=1
golden=tests/golden/same-numbers
bin=${ALIGNBENCH_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=target/release/alignbench
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A tidy table without its timing rows (the metric column is found by name).
strip_times() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "metric") c = i; print; next }
           c == 0 || ($c != "wall_s" && $c != "train_s")' "$1"
}

for f in experiments/smoke/*.yaml; do
  "$bin" run "$f" --quiet --out "$work/smoke" >/dev/null
done
if [ "${SAME_NUMBERS:-all}" != "smoke" ]; then
  echo "running alignbench reproduce --quick (a few minutes)" >&2
  "$bin" reproduce --quick --out "$work/quick" >"$work/quick.log" 2>&1 || { tail -20 "$work/quick.log"; exit 1; }
fi

status=0
for set in smoke quick; do
  [ -d "$work/$set" ] || continue
  for exp in "$work/$set"/*/; do
    name=$(basename "$exp")
    [ "$name" = report ] && continue
    for table in metrics.csv prompts.csv; do
      [ -f "$exp/$table" ] || continue
      ref="$golden/$set/$name/$table"
      if [ ! -f "$ref" ]; then
        echo "NEW   $set/$name/$table (no recorded copy; --record to add it)"
        status=1
      elif ! diff -q <(strip_times "$exp/$table") "$ref" >/dev/null; then
        echo "DIFF  $set/$name/$table ($(diff <(strip_times "$exp/$table") "$ref" | grep -c '^<' || true) lines)"
        # The first lines only (`|| true`: head closing the pipe must not end the script under pipefail).
        diff <(strip_times "$exp/$table") "$ref" | head -10 || true
        status=1
      else
        echo "same  $set/$name/$table"
      fi
      if [ "$record" = 1 ]; then
        mkdir -p "$(dirname "$ref")"
        strip_times "$exp/$table" >"$ref"
      fi
    done
  done
done
if [ "$record" = 1 ]; then
  echo "recorded into $golden (the DIFF/NEW lines above are what changed)"
  status=0
elif [ "$status" = 0 ]; then
  echo "same numbers: every table is byte-identical (timing rows aside)"
else
  echo "same numbers: FAILED (see the DIFF/NEW lines above)" >&2
fi
exit "$status"
