# strnas: the two commands a newcomer needs are `make demo` and `make test`; both do all set-up first.
#
#   make deps        install PyTorch 2.13.0 + onnxruntime 1.31.1 into $(STRNAS_CACHE) (idempotent; GPU=1 for
#                    onnxruntime-gpu; NO_TORCH=1 skips PyTorch)
#   make build       build strnas, optimised (with libtorch; rpath baked in, no LD_LIBRARY_PATH needed); the
#                    tests, the demo and the gate all use this one release build
#   make build-deploy  build the libtorch-free deployment binary (--no-default-features) into target/deploy
#   make demo        the main job on built-in defaults
#   make test        the test suite (what CI runs)
#   make bench       criterion benchmarks
#   make gate        latency regression gate: tiny specs vs this CPU model's bench/baselines/<cpu>.json (CI runs it)
#   make baseline    re-measure this CPU model's baseline (after an intended change, on each CI machine type)
#   make gate-proof  20 unchanged gate runs (no false alarm allowed) + a 25%-slower model (must be caught)
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
DEPLOY_BIN = $(CARGO_TARGET_DIR)/deploy/strnas
RELEASE_BIN = $(CARGO_TARGET_DIR)/release/strnas

# The gate's measurement: every tiny spec, onnxruntime and tract, batch 1, one thread (multi-threaded timings on
# a shared 2-core machine swing with the neighbours), 1 s per entry alternating with the calibration network.
GATE = $(RELEASE_BIN) bench arch_specs/tiny --runtime ort,tract --batch 1 --threads 1 --min-time 1

.PHONY: deps build build-deploy build-release demo test bench gate baseline gate-proof clean-cache

deps:
	$(ENV) && echo "deps: libtorch $$LIBTORCH" && echo "deps: onnxruntime $$ORT_DYLIB_PATH"

build:
	$(ENV) && cargo build --release --bins

# The deployment binary is built in target/release too (sharing its dependencies), copied out, and the
# libtorch binary put back (no recompilation: both builds' artifacts stay in target/release/deps).
build-deploy:
	$(ENV) && cargo build --release --no-default-features --bins && mkdir -p $(dir $(DEPLOY_BIN)) \
	  && cp $(RELEASE_BIN) $(DEPLOY_BIN).tmp && mv $(DEPLOY_BIN).tmp $(DEPLOY_BIN) && cargo build --release --bins

# (kept as a name for `make build`)
build-release: build

demo: build-release
	$(ENV) && scripts/demo.sh $(RELEASE_BIN)

test:
	$(ENV) && scripts/test.sh

bench:
	$(ENV) && cargo bench --bench spec --bench data --bench runtimes --bench search --bench search_memory

gate: build-release
	$(ENV) && $(GATE) --baseline $$(scripts/baseline-path.sh)

baseline: build-release
	$(ENV) && out=$$(scripts/baseline-path.sh --save) && mkdir -p $$(dirname $$out) && $(GATE) --save-baseline $$out

gate-proof: build-release
	$(ENV) && scripts/gate-proof.sh $(RELEASE_BIN) 20

clean-cache:
	rm -rf $(STRNAS_CACHE)
