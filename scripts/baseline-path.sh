#!/usr/bin/env bash
# Prints the gate baseline for this machine's CPU model: bench/baselines/<cpu>.json, where <cpu> is the
# /proc/cpuinfo model name in lower case with runs of other characters as '-' (e.g. amd-epyc,
# intel-r-xeon-r-processor). Calibrated ratios cancel machine speed but not microarchitecture: the same
# model's ratio to the calibration network differs by -24% to +8% between the Intel Xeon and AMD EPYC VMs
# this project runs on, so each CPU model gets its own baseline. `--save` prints the path to write (for
# `make baseline`); without it, a CPU model with no baseline yet falls back to the first committed
# one (with a note: expect shifts of that size).
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- || true)
slug=$(printf '%s' "${model:-unknown}" | tr 'A-Z' 'a-z' | sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g')
path="bench/baselines/${slug:-unknown}.json"
if [ "${1:-}" = "--save" ] || [ -f "$path" ]; then
  echo "$path"
else
  fallback=$(ls bench/baselines/*.json 2>/dev/null | head -1)
  [ -n "$fallback" ] || { echo "gate: no baseline in bench/baselines/ (record one with make baseline)" >&2; exit 2; }
  echo "gate: no baseline for CPU model '${model# }' ($path); using $fallback (record one with make baseline)" >&2
  echo "$fallback"
fi
