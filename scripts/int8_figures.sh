#!/usr/bin/env bash
# INT8 against float for one trained model: accuracy of the deployed artifacts (`strnas eval MODEL.onnx`) on the
# test sets under onnxruntime and tract, file size, and time per image (onnxruntime and tract, batch 1 and 8,
# one and two threads; A/B against the float export). Prints the tables and leaves everything under OUT.
#
#   scripts/int8_figures.sh RUN_DIR CALIB OUT TEST [TEST...]
#     RUN_DIR: a `strnas train` run (model.yaml + model.safetensors); CALIB: calibration data (training-side,
#     e.g. the validation set, never a test set); TEST: evaluation datasets (held-out synthetic, real crops).
#   PHASES="accuracy speed" (default both): speed needs a quiet machine, accuracy does not.
set -euo pipefail
[[ $# -ge 4 ]] || { sed -n 2,10p "$0"; exit 2; }
RUN=$1 CALIB=$2 OUT=$3
shift 3
TESTS=("$@")
BIN=${STRNAS:-target/release/strnas}
PHASES=${PHASES:-accuracy speed}
mkdir -p "$OUT"
cp "$RUN/model.yaml" "$RUN/model.safetensors" "$OUT/"
M="$OUT/model.yaml"

# The float export and the INT8 variants: weight bits x calibration method.
"$BIN" export "$M" -o "$OUT/float.onnx"
for bits in 7 8; do
  for method in minmax percentile; do
    "$BIN" export "$M" --quantize int8 --calib "$CALIB" --calib-method "$method" --weight-bits "$bits" --lstm-weights float \
      -o "$OUT/int8-w$bits-$method.onnx"
  done
done
# The default export: 7-bit minmax with the BiLSTMs' weights stored int8 too (weight-only).
"$BIN" export "$M" --quantize int8 --calib "$CALIB" --lstm-weights int8 -o "$OUT/int8-w7-minmax-lstm8.onnx"
MODELS=("$OUT/float.onnx" "$OUT"/int8-w7-minmax.onnx "$OUT"/int8-w7-percentile.onnx "$OUT"/int8-w8-minmax.onnx "$OUT"/int8-w8-percentile.onnx
  "$OUT"/int8-w7-minmax-lstm8.onnx)
echo
echo "| model | size MB | x float |"
echo "|---|---:|---:|"
fs=$(stat -c %s "$OUT/float.onnx")
for m in "${MODELS[@]}"; do
  s=$(stat -c %s "$m")
  echo "| $(basename "$m" .onnx) | $(awk -v s="$s" 'BEGIN{printf "%.2f", s/1e6}') | $(awk -v s="$s" -v f="$fs" 'BEGIN{printf "%.3f", s/f}') |"
done

if [[ " $PHASES " == *" accuracy "* ]]; then
  for m in "${MODELS[@]}"; do
    for rt in ort tract; do
      [[ $rt == tract && $m == *-w8-* ]] && continue   # tract dequantizes: bits change nothing there
      "$BIN" eval "$m" --runtime "$rt" --data "${TESTS[@]}" --batch-size 16 --json "${m%.onnx}.$rt.eval.json" > /dev/null
    done
  done
  python3 - "$OUT" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
rows = sorted(glob.glob(os.path.join(out, "*.eval.json")))
sets = [d["name"] for d in json.load(open(rows[0]))["datasets"]]
print()
print("| model | runtime | " + " | ".join(f"{s} %" for s in sets) + " |")
print("|---|---|" + "---:|" * len(sets))
for p in rows:
    e = json.load(open(p))
    name, rt = os.path.basename(p).split(".")[:2]
    print(f"| {name} | {rt} | " + " | ".join(f"{d['accuracy']:.2f}" for d in e["datasets"]) + " |")
EOF
fi

if [[ " $PHASES " == *" speed "* ]]; then
  for threads in 1 2; do
    for rt in ort tract; do
      "$BIN" bench "${MODELS[@]}" --runtime "$rt" --batch 1,8 --threads "$threads" --relative-to "$OUT/float.onnx" \
        --json "$OUT/bench-$rt-t$threads.json" | tail -n +1
    done
  done
fi
