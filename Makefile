# alignbench — the two commands that matter: `make reproduce` and `make test`.
CARGO ?= cargo
RESULTS ?= results

.PHONY: all build cuda test test-slow reproduce reproduce-quick same-numbers bench train-toy train-mini fmt clippy clean-results venv

# ONNX Runtime (for `onnx` rewards) and the `onnx` package (to build the test scorer), from PyPI into .venv.
# Best effort: without them the ONNX tests skip with a message.
VENV ?= .venv
ORT_VERSION ?= 1.32.0

all: build

build:
	$(CARGO) build --release

venv:
	@if [ ! -x $(VENV)/bin/python ] || ! $(VENV)/bin/python -c 'import onnxruntime, onnx' 2>/dev/null; then \
	  echo "installing onnxruntime==$(ORT_VERSION) and onnx into $(VENV)"; \
	  python3 -m venv $(VENV) && $(VENV)/bin/pip install -q onnxruntime==$(ORT_VERSION) onnx numpy \
	    || echo "warning: could not install onnxruntime into $(VENV); ONNX tests will be skipped" >&2; \
	fi

## The CUDA build on a machine without a system CUDA: pinned CUDA 13.0 wheels into .cuda/, then --features cuda into
## target/cuda (about an hour from scratch on 2 cores; keep target/cuda). See README "GPU".
cuda:
	scripts/cuda-build.sh

## Unit, property, statistical and end-to-end tests (fast versions).
test: venv
	ORT_DYLIB_PATH=$${ORT_DYLIB_PATH:-$$(ls $(CURDIR)/$(VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -1)} \
	  $(CARGO) test

## The slow statistical grids (#[ignore]d in `make test`).
test-slow:
	$(CARGO) test --release -- --ignored

## Run every shipped experiment (toy: exact targets, no downloads) into $(RESULTS)/.
reproduce:
	$(CARGO) run --release -- reproduce --out $(RESULTS)

## A fast look: at most 100 prompt groups, 5 EMD repeats and the first seed of every experiment (results/quick/).
reproduce-quick:
	$(CARGO) run --release -- reproduce --quick

## Refactors keep the numbers: `reproduce --quick` and the smoke experiments against tests/golden/same-numbers/
## (byte for byte, timing rows aside); `scripts/same-numbers.sh --record` records a deliberate change.
same-numbers:
	scripts/same-numbers.sh

## Benchmarks print `name: value unit` lines; they are never timed tests.
bench:
	scripts/bench.sh toy

## Re-train the toy MLP denoisers (committed under assets/toy/).
train-toy:
	$(CARGO) run --release -- train toy-mlp --preset gmm1
	$(CARGO) run --release -- train toy-mlp --preset gmm2

## Re-train the FMNIST-align models (committed under assets/mini/; needs `apt-get install dataset-fashion-mnist`).
train-mini:
	$(CARGO) run --release -- train mini --config experiments/mini/train.yaml --out assets/mini

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

clean-results:
	find $(RESULTS) -mindepth 1 -maxdepth 1 ! -name README.md ! -name reference -exec rm -rf {} +
