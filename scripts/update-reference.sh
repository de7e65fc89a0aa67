#!/usr/bin/env bash
# Copy a small, stable selection of a full `make reproduce` report into results/reference/ (committed, shown in the
# README) so a reader sees the results before running anything. Run after a full (not --quick) reproduce.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-results/report}
dst=results/reference
[ -f "$src/index.html" ] || { echo "no report at $src: run \`make reproduce\` first" >&2; exit 1; }
rm -rf "$dst"
mkdir -p "$dst/tables" "$dst/figures"
for t in figure1 reference particles alpha budget ledger; do
  for ext in md csv; do
    [ -f "$src/tables/$t.$ext" ] && cp "$src/tables/$t.$ext" "$dst/tables/"
  done
done
for pat in 'samples-toy-figure1-gmm1-analytic' 'samples-toy-figure1-gmm2-analytic' 'samples-toy-figure1-gmm1-mlp' 'particles-toy-particles-*' \
           'alpha-toy-alpha-gmm1-analytic' 'pareto-toy-figure1-gmm1-analytic-*' 'pareto-toy-figure1-gmm2-analytic-*' \
           'budget-toy-budget-gmm1-analytic' 'traces-toy-gmm1-*'; do
  for f in "$src"/figures/$pat.png; do
    [ -f "$f" ] && cp "$f" "$dst/figures/"
  done
done
{
  echo "# Reference results"
  echo
  echo "A selection of the report of one full \`make reproduce\` run, copied by \`scripts/update-reference.sh\`."
  echo "Commit: $(git rev-parse --short HEAD); machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores."
} > "$dst/README.md"
du -sh "$dst"
