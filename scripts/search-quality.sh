#!/usr/bin/env bash
# The search-quality protocol: does `strnas search` beat architectures drawn at random at the same latency,
# trained the same way (Li & Talwalkar 2019; Yang et al. 2020, "NAS evaluation is frustratingly hard")?
#
# For one space and latency target (default: the table's prediction for the space spec, the skeleton):
#   1. data (synthetic train / valid / held-out), a latency table of the space on onnxruntime (batch 1, 1 thread);
#   2. the skeleton trained (seed 1): both searches start from its weights (--init-from);
#   3. the proxyless search (the paper's method, str-nas1 with the target-seeking latency term) and the evolution
#      search (uniform one-shot supernet + evolution under the hard limit), the same number of weight steps;
#   4. K random architectures in the +-BAND band around the target (`strnas sample`);
#   5. every spec (skeleton, both searched, the K random) retrained with one recipe for ITERS iterations, once per
#      seed in SEEDS, and evaluated on the held-out set and on the real word crops under REAL (evaluation only);
#   6. every model timed A/B against the skeleton on onnxruntime (batch 1, one thread);
#   7. every spec's inherited accuracy in both supernets (`strnas rank`) against its stand-alone accuracy;
#   8. the table (scripts/search_quality_table.py) and the accuracy-vs-latency charts (`strnas report`).
#
#   scripts/search-quality.sh                      # the tiny TPS + CTC space
#   SPACE=arch_specs/tiny/tiny-limited-3x3-ex3-attn.yaml scripts/search-quality.sh
# Environment: BIN (release binary), SPACE, OUT (runs/search-quality/<space>), DATA (runs/search-quality/data),
# ITERS (training iterations, 1500), SEARCH_ITERS (weight steps per search, 800), SEEDS ("1 2"), K (5),
# BAND (5%), TARGET_MS (default: the table's prediction for SPACE), JOBS (trainings at a time, 2, one thread
# each), COUNT (training images, 60000), REAL (a folder holding svt/ and cute80/ real word crops with gt.txt; evaluation only), POPULATION and
# GENERATIONS (the evolution's, 16 and 8).
# Every step is skipped when its output exists: an interrupted run continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/strnas/target}/release/strnas}
SPACE=${SPACE:-arch_specs/tiny/tiny-limited-3x3-ex3-ctc.yaml}
SKELETON=$(basename "$SPACE" .yaml)
OUT=${OUT:-runs/search-quality/$SKELETON}
DATA=${DATA:-runs/search-quality/data}
ITERS=${ITERS:-1500}
SEARCH_ITERS=${SEARCH_ITERS:-800}
SEEDS=${SEEDS:-1 2}
K=${K:-5}
BAND=${BAND:-5%}
JOBS=${JOBS:-2}
COUNT=${COUNT:-60000}
REAL=${REAL:-}
POPULATION=${POPULATION:-16}
GENERATIONS=${GENERATIONS:-8}
mkdir -p "$OUT" "$DATA" "$OUT/specs" "$OUT/runs" "$OUT/logs"
log() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
[[ -x $BIN ]] || { echo "search-quality: $BIN is not built (make build)" >&2; exit 2; }

# One recipe for every model and for the searches' weight steps (docs/training.md): Adam 4e-3 with warm-up and
# cosine decay, the rectifier at a tenth of the learning rate, residual cells starting as the identity; attention
# heads add the auxiliary CTC loss that takes the decoder off its plateau.
RECIPE=(--optimizer adam --lr 4e-3 --lr-schedule cosine --warmup 200 --lr-group rectifier=0.1 --zero-init-residual)
grep -q 'kind: attention' "$SPACE" && RECIPE+=(--aux-ctc 3)

log "Data (pure functions of the seeds and the installed fonts)"
[[ -f $DATA/train/data.mdb ]] || "$BIN" dataset synth -o "$DATA/train" --count "$COUNT" --seed 11 --distortion 0.5
[[ -f $DATA/valid/data.mdb ]] || "$BIN" dataset synth -o "$DATA/valid" --count 500 --seed 12 --distortion 0.5
[[ -f $DATA/heldout/data.mdb ]] || "$BIN" dataset synth -o "$DATA/heldout" --count 2000 --seed 13 --distortion 0.5
REAL_SETS=()
if [[ -n $REAL ]]; then for s in svt cute80; do [[ -f $REAL/$s/gt.txt ]] && REAL_SETS+=("$REAL/$s"); done; fi

TABLE=$OUT/latency-ort.json
log "Latency table of the space on onnxruntime (batch 1, one thread)"
[[ -f $TABLE ]] || "$BIN" latency build "$SPACE" --runtime ort --threads 1 --fit-specs arch_specs/tiny -o "$TABLE"
TARGET=()
[[ -n ${TARGET_MS:-} ]] && TARGET=(--target-ms "$TARGET_MS")

# train_one SPEC SEED: trains, then evaluates on the held-out set and the real crops (skipped when done).
train_one() {
  local spec=$1 seed=$2 name
  name=$(basename "$spec" .yaml)
  local run=$OUT/runs/$name-seed$seed
  if [[ ! -f $run/eval.json ]]; then
    local resume=()
    [[ -f $run/checkpoint.safetensors ]] && resume=(--resume)
    "$BIN" train "$spec" --train-data "$DATA/train" --valid-data "$DATA/valid" --out "$run" "${RECIPE[@]}" --seed "$seed" \
      --iters "$ITERS" --batch-size 32 --valid-every 250 --log-every 100 --threads 1 "${resume[@]}" > "$OUT/logs/$name-seed$seed.log" 2>&1
    "$BIN" eval "$run/model.yaml" --data "$DATA/heldout" "${REAL_SETS[@]}" --json "$run/eval.json" --threads 1 --no-timing >> "$OUT/logs/$name-seed$seed.log" 2>&1
  fi
  tail -n 1 "$OUT/logs/$name-seed$seed.log"
}

FIRST_SEED=${SEEDS%% *}
log "The skeleton ($ITERS iterations, seed $FIRST_SEED): the searches start from its weights"
train_one "$SPACE" "$FIRST_SEED"
INIT=$OUT/runs/$SKELETON-seed$FIRST_SEED/checkpoint.safetensors

# search_one STRATEGY: the same data, recipe, warm start and weight steps for both strategies.
search_one() {
  local strategy=$1 dir=$OUT/search-$1
  [[ -f $dir/done ]] && return 0
  local extra=()
  if [[ $strategy == proxyless ]]; then
    # str-nas1 with the target-seeking latency term (TuNAS), arch lr 5e-2 and 200 warm-up steps (docs/search.md).
    extra=(--preset str-nas1 --latency-abs 1 --arch-lr 5e-2 --warmup-iters 200)
  else
    extra=(--strategy evolution --population "$POPULATION" --generations "$GENERATIONS")
  fi
  local resume=()
  [[ -f $dir/supernet.safetensors ]] && resume=(--resume)
  local t0=$SECONDS
  "$BIN" search "$SPACE" --train-data "$DATA/train" --valid-data "$DATA/valid" --latency-table "$TABLE" "${TARGET[@]}" \
    "${extra[@]}" "${RECIPE[@]}" --init-from "$INIT" --iters "$SEARCH_ITERS" --batch-size 32 --valid-every 200 \
    --threads 1 --out "$dir" "${resume[@]}" > "$OUT/logs/search-$strategy.log" 2>&1
  echo $((SECONDS - t0)) > "$dir/wall_seconds"
  touch "$dir/done"
}
log "Searches: proxyless and evolution, $SEARCH_ITERS weight steps each, side by side"
search_one proxyless & search_one evolution & wait
for s in proxyless evolution; do
  tail -n 4 "$OUT/logs/search-$s.log"
  sed "s/^name: .*/name: \"$SKELETON-$s\"/" "$OUT/search-$s/arch.yaml" > "$OUT/specs/$SKELETON-$s.yaml"
done

log "$K random architectures within $BAND of the target"
[[ -n $(ls "$OUT/random" 2>/dev/null) ]] || "$BIN" sample "$SPACE" --latency-table "$TABLE" "${TARGET[@]}" --band "$BAND" \
  --count "$K" --seed 1 -o "$OUT/random"

SPECS=("$SPACE" "$OUT/specs/$SKELETON-proxyless.yaml" "$OUT/specs/$SKELETON-evolution.yaml" "$OUT"/random/*.yaml)
log "Retraining ${#SPECS[@]} specs x seeds ($SEEDS), $ITERS iterations, $JOBS at a time"
running=0
for seed in $SEEDS; do
  for s in "${SPECS[@]}"; do
    train_one "$s" "$seed" &
    running=$((running + 1))
    if (( running >= JOBS )); then wait -n; running=$((running - 1)); fi
  done
done
wait

log "Time per image A/B against the skeleton (onnxruntime, batch 1, one thread)"
MODELS=() EVALS=()
for s in "${SPECS[@]}"; do
  name=$(basename "$s" .yaml)
  MODELS+=("$OUT/runs/$name-seed$FIRST_SEED/model.yaml")
  for seed in $SEEDS; do EVALS+=("$OUT/runs/$name-seed$seed/eval.json"); done
done
[[ -f $OUT/bench.json ]] || "$BIN" bench "${MODELS[@]}" --runtime ort --batch 1 --threads 1 \
  --relative-to "$OUT/runs/$SKELETON-seed$FIRST_SEED/model.yaml" --json "$OUT/bench.json"

log "The supernets' ranking against stand-alone accuracy"
for s in proxyless evolution; do
  [[ -f $OUT/rank-$s.json ]] || "$BIN" rank "$OUT/search-$s" "${SPECS[@]}" --train-data "$DATA/train" --data "$DATA/valid" \
    --stand-alone "${EVALS[@]}" --json "$OUT/rank-$s.json"
done

log "Table and charts"
"$BIN" report --bench "$OUT/bench.json" --eval "${EVALS[@]}" --out "$OUT/charts" > /dev/null || true
python3 scripts/search_quality_table.py "$OUT" "$SKELETON" | tee "$OUT/table.md"
echo "outputs: $OUT (table.md, bench.json, rank-*.json, charts/, runs/<model>-seed<N>/eval.json, search-*/)"
