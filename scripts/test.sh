#!/usr/bin/env bash
# The test suite (`make test`, and CI through .ci/run). Expects the environment from scripts/deps.sh.
#
# One build profile serves everything: the tests run in release, so the libtorch binary they build is the one
# `make demo` and the latency gate run, and the libtorch-free build reuses every compiled dependency (the
# feature sets of both builds are the same, Cargo.toml). Only the strnas crate is compiled twice.
set -euo pipefail
cd "$(dirname "$0")/.."
# The onnx package's full checker runs on every export in tests/export.rs; here it must be present.
source <(TEST_DEPS=1 scripts/deps.sh)
export STRNAS_REQUIRE_ONNX_CHECKER=1
echo "== cargo test --release --workspace (with libtorch)"
cargo test --release --workspace --all-targets 2>&1
echo "== libtorch-free deployment build (--no-default-features): data path, export golden case, bench and gate"
cargo build --release --no-default-features --bins 2>&1
# The golden export case (stored tch outputs) and the data tests, in a build without libtorch.
cargo test --release --no-default-features --test export --test data --test bench 2>&1
deploy="$CARGO_TARGET_DIR/deploy/strnas"
mkdir -p "$(dirname "$deploy")"
cp "$CARGO_TARGET_DIR/release/strnas" "$deploy.tmp" && mv "$deploy.tmp" "$deploy"
if ldd "$deploy" | grep -q libtorch; then
  echo "FAIL: the --no-default-features binary links libtorch" >&2
  exit 1
fi
env -u LIBTORCH "$deploy" spec validate arch_specs >/dev/null
env -u LIBTORCH "$deploy" doctor
echo "deploy build: ok (no libtorch linked, specs validate, onnxruntime loads; $deploy)"
# Put the libtorch binary back in target/release for `make demo` and `make gate` (compiled above: no rebuild).
cargo build --release --bins 2>&1
