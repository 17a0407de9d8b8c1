#!/usr/bin/env bash
# Reproduces the README's "Learning and reading real text" figures: synthetic training data, then each model
# trained for the same wall-clock budget on synthetic data only, evaluated on a held-out synthetic set and on
# the real word crops under REAL (SVT, CUTE80; evaluation only, never trained on).
#   scripts/learning.sh [MODEL...]     (default: tiny-crnn-ctc tiny-limited-3x3-ex3-attn)
# Environment: BIN (strnas binary; default the release build), OUT (default runs/learning), MINUTES (15),
# COUNT (training images, 100000), REAL (a folder holding svt/ and cute80/ real word crops with gt.txt; evaluation
# only; default none), THREADS (libtorch threads, 2), ITERS and LR: the schedule's length and peak (CTC models 3500
# and 2e-3; attention models 2650 and 4e-3, with an auxiliary CTC loss of weight AUX_CTC, 3); DISTORTION (1.0): the
# data's `--distortion` (1.0 reads real text best: README "Reading real text").
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/strnas/target}/release/strnas}
OUT=${OUT:-runs/learning}
MINUTES=${MINUTES:-15}
COUNT=${COUNT:-100000}
REAL=${REAL:-}
THREADS=${THREADS:-2}
MODELS=("$@")
[[ ${#MODELS[@]} -eq 0 ]] && MODELS=(tiny-crnn-ctc tiny-limited-3x3-ex3-attn)
mkdir -p "$OUT"
# Data: a pure function of the seeds, the renderer version, the installed fonts and the word list (synth.json
# in each set records them).
D=${DISTORTION:-1.0}
[[ -f $OUT/train/data.mdb ]] || "$BIN" dataset synth -o "$OUT/train" --count "$COUNT" --seed 11 --distortion "$D"
[[ -f $OUT/valid/data.mdb ]] || "$BIN" dataset synth -o "$OUT/valid" --count 500 --seed 12 --distortion "$D"
[[ -f $OUT/heldout/data.mdb ]] || "$BIN" dataset synth -o "$OUT/heldout" --count 2000 --seed 13 --distortion "$D"
REAL_SETS=()
if [[ -n $REAL ]]; then for s in svt cute80; do [[ -f $REAL/$s/gt.txt ]] && REAL_SETS+=("$REAL/$s"); done; fi
for m in "${MODELS[@]}"; do
  run=$OUT/$m
  extra=(--zero-init-residual)
  grep -q "kind: tps" "arch_specs/tiny/$m.yaml" && extra+=(--lr-group rectifier=0.1)
  # The recipe (clovaai/deep-text-recognition-benchmark issues #23, #51 and #107 on Adam; README "What holds the
  # TPS + attention model back", runs Q and F1): Adam with 200 warm-up iterations and cosine decay over the iterations
  # 15 minutes allow on 2 cores (3500 for the CRNN at ~155 images/s; 2650 for the TPS + attention model at ~96
  # images/s on the slower of our two machine types), gradient clip 5, identity-initialised TPS at a tenth of the
  # learning rate, residual cells starting as the identity; attention models also learn from an auxiliary CTC loss
  # (the decoder's alignment plateau).
  lr=2e-3 iters=3500
  if grep -q "kind: attention" "arch_specs/tiny/$m.yaml"; then
    lr=4e-3 iters=2650
    extra+=(--aux-ctc "${AUX_CTC:-3}")
  fi
  "$BIN" train "arch_specs/tiny/$m.yaml" --train-data "$OUT/train" --valid-data "$OUT/valid" --out "$run" \
    --optimizer adam --lr "${LR:-$lr}" --lr-schedule cosine --warmup 200 --iters "${ITERS:-$iters}" --batch-size 32 \
    "${extra[@]}" \
    --valid-every 250 --log-every 50 --max-time "$MINUTES" --threads "$THREADS" --workers 1
  "$BIN" eval "$run/model.yaml" --data "$OUT/heldout" "${REAL_SETS[@]}" --json "$run/eval.json" --threads "$THREADS" --show-errors 3
done
