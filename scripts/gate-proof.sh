#!/usr/bin/env bash
# Proves the latency gate on this machine: RUNS gate runs on unchanged models must raise no false alarm, and a
# model made ~25% slower by a real change (bench/gate-proof/tiny-crnn-ctc.yaml: wider cells) must be caught in
# every run. Writes every run's JSON and a summary under OUT. The unchanged runs pass --measure-identical: their
# graphs equal the reference graphs, which the gate otherwise passes without timing, so this times the A/B
# against the reference anyway and shows its noise floor; the slower model is a changed graph, timed A/B.
#
#   scripts/gate-proof.sh BIN [RUNS]        (make gate-proof)
#   STRESS=1 scripts/gate-proof.sh BIN      also run a CPU hog in bursts beside the measurements (a noisy neighbour)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:?usage: scripts/gate-proof.sh BIN [RUNS]}
RUNS=${2:-20}
OUT=${OUT:-runs/gate-proof}
mkdir -p "$OUT"
MODELS=(arch_specs/tiny/tiny-crnn-ctc.yaml arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml)
SLOWER=bench/gate-proof/tiny-crnn-ctc.yaml
COMMON=(--runtime ort,tract --batch 1 --threads 1 --min-time 1)

HOG=
if [[ "${STRESS:-0}" == 1 ]]; then
  # One core busy for 0.5-2.5 s, idle for 0.5-2.5 s, forever: load that comes and goes mid-measurement.
  # Its own process group (setsid), so the whole group, busy loop included, is killed on exit.
  setsid bash -c 'while :; do timeout "$(( RANDOM % 3 )).$(( RANDOM % 10 ))" sh -c "while :; do :; done" || true; sleep "$(( RANDOM % 3 )).$(( RANDOM % 10 ))"; done' &
  HOG=$!
  trap 'kill -- -$HOG 2>/dev/null || true' EXIT
  echo "gate-proof: noisy neighbour running (pid $HOG)"
fi

echo "gate-proof: baseline of ${MODELS[*]} (${COMMON[*]})"
"$BIN" bench "${MODELS[@]}" "${COMMON[@]}" --save-baseline "$OUT/baseline.json" > "$OUT/baseline.txt"

# Exit 1 is a regression or "too noisy to judge": tell them apart from the JSON.
regressed() { python3 -c 'import json,sys; sys.exit(0 if any(r["verdict"] == "regressed" for r in json.load(open(sys.argv[1]))["gate"]["rows"]) else 1)' "$1"; }

false_alarms=0
too_noisy=0
for i in $(seq 1 "$RUNS"); do
  rc=0
  "$BIN" bench "${MODELS[@]}" "${COMMON[@]}" --baseline "$OUT/baseline.json" --measure-identical --json "$OUT/unchanged-$i.json" > "$OUT/unchanged-$i.txt" || rc=$?
  case $rc in
    0) ;;
    1) if regressed "$OUT/unchanged-$i.json"; then
         false_alarms=$((false_alarms + 1)); echo "gate-proof: unchanged run $i: FALSE ALARM"
       else
         too_noisy=$((too_noisy + 1)); echo "gate-proof: unchanged run $i: too noisy to judge"
       fi
       grep -A8 "Latency gate" "$OUT/unchanged-$i.txt" ;;
    *) echo "gate-proof: unchanged run $i: error (exit $rc)"; cat "$OUT/unchanged-$i.txt"; exit 2 ;;
  esac
  echo "gate-proof: unchanged run $i/$RUNS: exit $rc"
done

caught=0
for i in $(seq 1 "$RUNS"); do
  rc=0
  "$BIN" bench "$SLOWER" "${COMMON[@]}" --baseline "$OUT/baseline.json" --allow-arch-change --json "$OUT/slower-$i.json" > "$OUT/slower-$i.txt" || rc=$?
  case $rc in
    1) if regressed "$OUT/slower-$i.json"; then caught=$((caught + 1)); else too_noisy=$((too_noisy + 1)); echo "gate-proof: slower run $i: too noisy to judge"; fi ;;
    0) echo "gate-proof: slower run $i: MISSED"; grep -A6 "Latency gate" "$OUT/slower-$i.txt" ;;
    *) echo "gate-proof: slower run $i: error (exit $rc)"; cat "$OUT/slower-$i.txt"; exit 2 ;;
  esac
  echo "gate-proof: slower run $i/$RUNS: exit $rc"
done

python3 - "$OUT" "$RUNS" > "$OUT/summary.md" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def rows(kind):
    by = {}
    for i in range(1, runs + 1):
        r = json.load(open(f"{out}/{kind}-{i}.json"))
        for g in r["gate"]["rows"]:
            by.setdefault((g["model"], g["runtime"]), []).append(g)
    return by
print(f"| runs | model | runtime | first-attempt change: min / median / max | threshold (median) | failed runs | re-runs |")
print("|---|---|---|---|---|---|---|")
for kind in ["unchanged", "slower"]:
    for (m, rt), gs in sorted(rows(kind).items()):
        first = [g["changes"][0] * 100 for g in gs]
        thr = statistics.median(g["threshold"] * 100 for g in gs)
        failed = sum(g["verdict"] in ("regressed", "arch-changed", "too-noisy") for g in gs)
        reruns = sum(len(g["changes"]) - 1 for g in gs)
        print(f"| {kind} x{len(gs)} | {m} | {rt} | {min(first):+.1f}% / {statistics.median(first):+.1f}% / {max(first):+.1f}% | {thr:.1f}% | {failed} | {reruns} |")
PY
cat "$OUT/summary.md"
echo "gate-proof: $false_alarms false alarm(s) in $RUNS unchanged runs; slower model caught in $caught of $RUNS runs; $too_noisy run(s) too noisy to judge"
[[ $false_alarms == 0 && $caught == "$RUNS" ]]
