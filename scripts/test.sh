#!/usr/bin/env bash
# The test suite (`make test`, and CI through .ci/run). Expects the environment from scripts/deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# The onnx package's full checker runs on every export in tests/export.rs; here it must be present.
source <(TEST_DEPS=1 scripts/deps.sh)
export STRNAS_REQUIRE_ONNX_CHECKER=1
echo "== cargo test --workspace (with libtorch)"
cargo test --workspace --all-targets 2>&1
echo "== libtorch-free deployment build (--no-default-features): data path, export golden case, bench and gate"
cargo build --no-default-features --bins 2>&1
# The golden export case (stored tch outputs) and the data tests, in a build without libtorch.
cargo test --no-default-features --test export --test data --test bench 2>&1
bin="$CARGO_TARGET_DIR/debug/strnas"
if ldd "$bin" | grep -q libtorch; then
  echo "FAIL: the --no-default-features binary links libtorch" >&2
  exit 1
fi
env -u LIBTORCH "$bin" spec validate arch_specs >/dev/null
env -u LIBTORCH "$bin" doctor
echo "deploy build: ok (no libtorch linked, specs validate, onnxruntime loads)"
