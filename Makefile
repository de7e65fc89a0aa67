# alignbench — the two commands that matter: `make reproduce` and `make test`.
CARGO ?= cargo
RESULTS ?= results

.PHONY: all build test test-slow reproduce reproduce-quick bench train-toy fmt clippy clean-results

all: build

build:
	$(CARGO) build --release

## Unit, property, statistical and end-to-end tests (fast versions).
test:
	$(CARGO) test

## The slow statistical grids (#[ignore]d in `make test`).
test-slow:
	$(CARGO) test --release -- --ignored

## Run every shipped experiment (toy: exact targets, no downloads) into $(RESULTS)/.
reproduce:
	$(CARGO) run --release -- reproduce --out $(RESULTS)

## Benchmarks print `name: value unit` lines; they are never timed tests.
bench:
	scripts/bench.sh toy

## Re-train the toy MLP denoisers (committed under assets/toy/).
train-toy:
	$(CARGO) run --release -- train toy-mlp --preset gmm1
	$(CARGO) run --release -- train toy-mlp --preset gmm2

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

clean-results:
	find $(RESULTS) -mindepth 1 -maxdepth 1 ! -name README.md ! -name reference -exec rm -rf {} +
