#!/usr/bin/env bash
# Layering check: no dependency cycle between the top-level modules of src/ (the stages of README's Layout
# table depend one way). Uses the shared checker beside the clone when present; a user's clone without it
# skips the check with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
tool=../shared/tools/module-cycles.py
if [[ ! -f $tool ]]; then
  echo "layering: $tool not found (a clone outside the team's workspace); skipping the module-cycle check"
  exit 0
fi
python3 "$tool" src
echo "layering: no cycle between top-level modules"
