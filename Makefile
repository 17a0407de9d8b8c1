# strnas: the two commands a newcomer needs are `make demo` and `make test`; both do all set-up first.
#
#   make deps        install PyTorch 2.13.0 + onnxruntime 1.31.1 into $(STRNAS_CACHE) (idempotent; GPU=1 for
#                    onnxruntime-gpu; NO_TORCH=1 skips PyTorch)
#   make build       build strnas (with libtorch; rpath baked in, no LD_LIBRARY_PATH needed)
#   make build-deploy  build the libtorch-free deployment binary (--no-default-features)
#   make demo        the main job on built-in defaults
#   make test        the test suite (what CI runs)
#   make bench       criterion benchmarks
#
# Builds go to $(CARGO_TARGET_DIR), outside the clone, so fresh clones reuse compiled dependencies.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export STRNAS_CACHE ?= $(HOME)/.cache/strnas
export CARGO_TARGET_DIR ?= $(STRNAS_CACHE)/target
GPU ?= 0
export GPU

# Every recipe that builds or runs loads the environment printed by scripts/deps.sh (fast once installed).
ENV = source <(scripts/deps.sh)
BIN = $(CARGO_TARGET_DIR)/debug/strnas
DEPLOY_BIN = $(CARGO_TARGET_DIR)/deploy/strnas

.PHONY: deps build build-deploy demo test bench clean-cache

deps:
	$(ENV) && echo "deps: libtorch $$LIBTORCH" && echo "deps: onnxruntime $$ORT_DYLIB_PATH"

build:
	$(ENV) && cargo build --bins

build-deploy:
	$(ENV) && cargo build --no-default-features --bins && mkdir -p $(dir $(DEPLOY_BIN)) \
	  && cp $(CARGO_TARGET_DIR)/debug/strnas $(DEPLOY_BIN).tmp && mv $(DEPLOY_BIN).tmp $(DEPLOY_BIN)

demo: build
	$(ENV) && scripts/demo.sh $(BIN)

test:
	$(ENV) && scripts/test.sh

bench:
	$(ENV) && cargo bench --bench spec

clean-cache:
	rm -rf $(STRNAS_CACHE)
