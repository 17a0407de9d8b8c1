#!/usr/bin/env bash
# A tiny Table 1 (issue 13; the paper's Table 1 at CPU scale): the four tiny limited-space TPS + attention
# specs and the specs that str-nas1 (latency term on) and str-nas2 (latency term off) find in their space, each
# retrained with the same data, recipe and number of iterations; accuracy on a held-out synthetic set and on the
# real word crops of ../shared/data/real-dev (SVT, CUTE80; evaluation only), params, and onnxruntime and tract
# ms/image at batch 1 on one thread, plus the accuracy-vs-latency charts.
#   scripts/table1.sh
# Environment: BIN (strnas release binary), OUT (runs/table1), ITERS (training iterations per model, 1500),
# SEARCH_ITERS (weight steps per search, 2000), SEARCH_WARMUP (weight steps before the first architecture step,
# 1200), ARCH_LR (the searches' architecture learning rate, 3e-2; see below), JOBS (trainings at a time, 2,
# each on one libtorch thread), COUNT (training images, 60000), REAL (../shared/data/real-dev), TARGET_MS
# (str-nas1's latency target; default the table's prediction for tiny-limited-3x3-ex3-attn, the space's own
# skeleton), ONLY (model names to keep).
# On this machine (2 cores, AMD EPYC, 2026-12-01) the two searches take 33-35 minutes side by side, and with
# ITERS=1500 a training takes 17.5 (3x3-e3) to 22 (str-nas2) minutes at one thread beside another, the two
# expansion-6 models ~50 minutes each: about 2 h 15 min in all.
# Every step is skipped when its output exists, so an interrupted run continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/strnas/target}/release/strnas}
OUT=${OUT:-runs/table1}
ITERS=${ITERS:-1500}
SEARCH_ITERS=${SEARCH_ITERS:-2000}
SEARCH_WARMUP=${SEARCH_WARMUP:-1200}
ARCH_LR=${ARCH_LR:-3e-2}
JOBS=${JOBS:-2}
COUNT=${COUNT:-60000}
REAL=${REAL:-../shared/data/real-dev}
SPACE=arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml
mkdir -p "$OUT"
log() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# One recipe for every model and for the searches' weight steps (README "What holds the TPS + attention model
# back", run F1): Adam 4e-3 with warm-up and cosine decay, identity-initialised TPS at a tenth of the learning
# rate, residual cells starting as the identity, an auxiliary CTC loss (weight 3) past the decoder's plateau.
RECIPE=(--optimizer adam --lr 4e-3 --lr-schedule cosine --warmup 200 --lr-group rectifier=0.1 --zero-init-residual --aux-ctc 3)

log "Data (pure functions of the seeds and the installed fonts)"
[[ -f $OUT/train/data.mdb ]] || "$BIN" dataset synth -o "$OUT/train" --count "$COUNT" --seed 11 --distortion 0.5
[[ -f $OUT/valid/data.mdb ]] || "$BIN" dataset synth -o "$OUT/valid" --count 500 --seed 12 --distortion 0.5
[[ -f $OUT/heldout/data.mdb ]] || "$BIN" dataset synth -o "$OUT/heldout" --count 2000 --seed 13 --distortion 0.5
REAL_SETS=()
for s in svt cute80; do [[ -f $REAL/$s/gt.txt ]] && REAL_SETS+=("$REAL/$s"); done

log "Latency table of the space on onnxruntime (batch 1, one thread)"
[[ -f $OUT/latency-ort.json ]] || "$BIN" latency build "$SPACE" --runtime ort --threads 1 --fit-specs arch_specs/tiny -o "$OUT/latency-ort.json"

# The searches' schedule, scaled to a CPU budget (both values land in each search's config.json):
# - Warm-up past the plateau. The architecture steps only learn something once the supernet reads text: on the
#   attention decoder's plateau (README, "What holds the TPS + attention model back") the objective's gradient
#   with respect to the ops is noise, and a latency term, the one consistent signal, decides every cell alone
#   (2026-12-01, warm-up 200: after 68 architecture steps str-nas1 had identity at 0.4-0.6 in every normal cell,
#   str-nas2 nothing but noise). 1200 random-path weight steps with the auxiliary CTC loss get past it.
# - ProxylessNAS's arch lr 1e-3 assumes thousands of architecture steps (its ImageNet schedule: ~8000); these
#   searches take 160 (one every 5 of the last 800 weight steps). Adam moves a logit by about the learning rate
#   per step it is sampled in, so at 1e-3 every cell stays within a few percent of uniform and the argmax follows
#   noise (the 2026-11-30 run). 3e-2 lets a consistently preferred op gain ~1.4 in its logit, noise ~0.2.
log "Searches: str-nas1 and str-nas2, $SEARCH_ITERS weight steps each (warm-up $SEARCH_WARMUP), arch lr $ARCH_LR, side by side"
search() {
  local preset=$1
  [[ -f $OUT/search-$preset/done ]] && return 0
  local extra=()
  [[ -n ${TARGET_MS:-} ]] && extra=(--target-ms "$TARGET_MS")
  local resume=()
  [[ -f $OUT/search-$preset/supernet.safetensors ]] && resume=(--resume)
  "$BIN" search "$SPACE" --train-data "$OUT/train" --valid-data "$OUT/valid" --preset "$preset" \
    --arch-lr "$ARCH_LR" --warmup-iters "$SEARCH_WARMUP" --latency-table "$OUT/latency-ort.json" "${extra[@]}" "${RECIPE[@]}" --iters "$SEARCH_ITERS" --batch-size 32 \
    --valid-every 200 --threads 1 --out "$OUT/search-$preset" "${resume[@]}" > "$OUT/search-$preset.log" 2>&1
  touch "$OUT/search-$preset/done"
}
search str-nas1 & search str-nas2 & wait
for p in str-nas1 str-nas2; do tail -n 3 "$OUT/search-$p.log"; done

log "Retraining: $ITERS iterations each, $JOBS at a time"
# Cheapest first, the searched specs before the two expansion-6 models (the slowest to train), so a run cut
# short still has the space's own skeleton, the search's results and something to compare them with.
mkdir -p "$OUT/specs"
for p in str-nas1 str-nas2; do
  sed "s/^name: .*/name: \"tiny-$p\"/" "$OUT/search-$p/arch.yaml" > "$OUT/specs/tiny-$p.yaml"
done
ALL=(arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml arch_specs/tiny/tiny-limited-5x5-ex3-attn.yaml
  "$OUT/specs/tiny-str-nas1.yaml" "$OUT/specs/tiny-str-nas2.yaml"
  arch_specs/tiny/tiny-limited-5x5-ex6-attn.yaml arch_specs/tiny/tiny-limited-7x7-ex6-attn.yaml)
# ONLY="name ..." restricts the table to those models (e.g. to bench what a cut-short run has finished).
SPECS=()
for s in "${ALL[@]}"; do
  name=$(basename "$s" .yaml)
  if [[ -z ${ONLY:-} || " $ONLY " == *" $name "* ]]; then SPECS+=("$s"); fi
done
train_one() {
  local spec=$1 name
  name=$(basename "$spec" .yaml)
  local run=$OUT/runs/$name
  if [[ ! -f $run/eval.json ]]; then
    local resume=()
    [[ -f $run/checkpoint.safetensors ]] && resume=(--resume)
    "$BIN" train "$spec" --train-data "$OUT/train" --valid-data "$OUT/valid" --out "$run" "${RECIPE[@]}" \
      --iters "$ITERS" --batch-size 32 --valid-every 250 --log-every 100 --threads 1 "${resume[@]}" > "$OUT/$name.log" 2>&1
    "$BIN" eval "$run/model.yaml" --data "$OUT/heldout" "${REAL_SETS[@]}" --json "$run/eval.json" --threads 1 --no-timing >> "$OUT/$name.log" 2>&1
  fi
  tail -n 1 "$OUT/$name.log"
}
running=0
for s in "${SPECS[@]}"; do
  train_one "$s" &
  running=$((running + 1))
  if (( running >= JOBS )); then wait -n; running=$((running - 1)); fi
done
wait

log "Time per image (onnxruntime and tract, batch 1, one thread, on a quiet machine) and the table"
MODELS=() EVALS=()
for s in "${SPECS[@]}"; do
  name=$(basename "$s" .yaml)
  MODELS+=("$OUT/runs/$name/model.yaml")
  EVALS+=("$OUT/runs/$name/eval.json")
done
"$BIN" latency predict "${MODELS[@]}" --table "$OUT/latency-ort.json"
"$BIN" bench "${MODELS[@]}" --runtime ort,tract --batch 1 --threads 1 --eval "${EVALS[@]}" \
  --json "$OUT/bench.json" --markdown "$OUT/table1.md"
"$BIN" report --bench "$OUT/bench.json" --eval "${EVALS[@]}" --search "$OUT/search-str-nas1" "$OUT/search-str-nas2" --out "$OUT/charts"
echo
cat "$OUT/table1.md"
echo "outputs: $OUT (table1.md, bench.json, charts/, runs/<model>/eval.json, search-str-nas{1,2}/)"
