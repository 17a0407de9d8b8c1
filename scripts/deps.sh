#!/usr/bin/env bash
# Installs what strnas needs at build and run time into a cache outside the clone, idempotently:
#   - PyTorch 2.13.0 (libtorch for tch 0.26)        -> $STRNAS_CACHE/venv/.../torch
#   - onnxruntime 1.31.1 (libonnxruntime for ort)   -> $STRNAS_CACHE/venv/.../onnxruntime/capi
#     GPU=1 installs onnxruntime-gpu 1.31.1 instead (CUDA execution provider).
#   - NO_TORCH=1 skips PyTorch (the libtorch-free deployment build).
#   - TEST_DEPS=1 (scripts/test.sh) adds the `onnx` Python package: the tests run its full checker (strict
#     shape inference) on every export. Not needed to build or run strnas.
# Prints the environment to use as `export` lines on stdout (everything else goes to stderr), so callers do
#   eval "$(scripts/deps.sh)"
# A second run with everything present takes well under a second.
set -euo pipefail

TORCH_VERSION=2.13.0
ORT_VERSION=1.31.1
CACHE="${STRNAS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/strnas}"
VENV="$CACHE/venv"
GPU="${GPU:-0}"
NO_TORCH="${NO_TORCH:-0}"

log() { printf 'deps: %s\n' "$*" >&2; }

mkdir -p "$CACHE"
exec 9>"$CACHE/.deps.lock"
flock 9

if [ ! -x "$VENV/bin/python" ]; then
  command -v python3 >/dev/null || { log "python3 not found: install Python 3.9+ (e.g. apt-get install python3 python3-venv)"; exit 2; }
  log "creating virtual environment $VENV"
  rm -rf "$VENV.tmp"
  python3 -m venv "$VENV.tmp"
  mv "$VENV.tmp" "$VENV"
fi
PY="$VENV/bin/python"
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

installed_version() { # dist name -> version or empty
  "$PY" - "$1" <<'PYEOF' 2>/dev/null || true
import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
PYEOF
}

pip_install() {
  log "pip install $* (first time only; torch is ~4.8 GB)"
  "$PY" -m pip install --disable-pip-version-check --no-input -q "$@" >&2
}

if [ "$NO_TORCH" != 1 ] && [ "$(installed_version torch)" != "$TORCH_VERSION" ]; then
  pip_install "torch==$TORCH_VERSION"
fi

if [ "$GPU" = 1 ]; then want=onnxruntime-gpu; other=onnxruntime; else want=onnxruntime; other=onnxruntime-gpu; fi
if [ "$(installed_version "$want")" != "$ORT_VERSION" ]; then
  if [ -n "$(installed_version "$other")" ]; then
    log "replacing $other with $want"
    "$PY" -m pip uninstall -y -q "$other" >&2
  fi
  pip_install "$want==$ORT_VERSION"
fi

ONNX_VERSION=1.23.2
if [ "${TEST_DEPS:-0}" = 1 ] && [ "$(installed_version onnx)" != "$ONNX_VERSION" ]; then
  pip_install "onnx==$ONNX_VERSION"
fi

ORT_LIB="$SITE/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"
[ -f "$ORT_LIB" ] || { log "expected $ORT_LIB after installing $want==$ORT_VERSION; it is missing"; exit 2; }

echo "export STRNAS_CACHE='$CACHE'"
echo "export ORT_DYLIB_PATH='$ORT_LIB'"
if [ -n "$(installed_version onnx)" ]; then
  echo "export STRNAS_ONNX_PYTHON='$PY'"
fi
if [ "$NO_TORCH" != 1 ]; then
  TORCH_DIR="$SITE/torch"
  [ -f "$TORCH_DIR/lib/libtorch_cpu.so" ] || { log "torch installed but $TORCH_DIR/lib/libtorch_cpu.so is missing"; exit 2; }
  echo "export LIBTORCH='$TORCH_DIR'"
fi
"$(dirname "$0")/fonts.sh"
log "ready: $CACHE"
