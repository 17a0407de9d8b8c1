#!/usr/bin/env bash
# The main job on built-in defaults (`make demo`): environment report, then the architecture specs.
# Later capabilities (synthetic data, training, export, bench) extend this script.
set -euo pipefail
BIN=${1:-strnas}
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Environment (strnas doctor)"
"$BIN" doctor

step "Validate every shipped architecture spec"
"$BIN" spec validate arch_specs

step "Parameter counts vs the paper's Table 1 (strnas spec show --summary)"
"$BIN" spec show --summary arch_specs

step "One paper-scale model, cell by cell (strnas spec show arch_specs/paper/limited-3x3-ex3.yaml)"
"$BIN" spec show arch_specs/paper/limited-3x3-ex3.yaml
