#!/usr/bin/env bash
# The main job on built-in defaults (`make demo`): environment report, the architecture specs, then a small
# end-to-end run: render synthetic word images into LMDB, train a tiny model for a few minutes, evaluate it on
# a held-out set, search an architecture in the same model's space from it (ProxylessNAS, latency target
# predicted for onnxruntime), fine-tune the searched network from its inherited weights against the baseline
# trained on for the same time, evaluate both, bench and summarise (DEMO_SEARCH=0 skips the search). Outputs go
# to runs/demo (DEMO_DIR to change; it is replaced on every run).
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

if [[ "${DEMO_TRAIN:-1}" == "1" ]] && "$BIN" train --help >/dev/null 2>&1; then
  DIR=${DEMO_DIR:-runs/demo}
  rm -rf "$DIR"
  mkdir -p "$DIR"
  step "Synthetic data: 8000 training, 300 validation, 500 held-out test images (strnas dataset synth)"
  "$BIN" dataset synth -o "$DIR/train" --count 8000 --seed 1 --distortion 0.3
  "$BIN" dataset synth -o "$DIR/valid" --count 300 --seed 2 --distortion 0.3
  "$BIN" dataset synth -o "$DIR/test" --count 500 --seed 3 --distortion 0.3
  "$BIN" dataset info "$DIR/train" "$DIR/test"
  "$BIN" dataset preview "$DIR/train" -o "$DIR/train-preview.png" --count 16
  "$BIN" dataset preview "$DIR/test" -o "$DIR/test-preview.png" --count 8 --extract "$DIR/test-images"

  # Adam with warm-up and cosine decay (docs/training.md); fine-tuning continues at the learning rate the
  # baseline's schedule ends near, constant.
  RECIPE=(--optimizer adam --lr 2e-3 --lr-schedule cosine --warmup 100 --batch-size 32)
  FINETUNE=(--optimizer adam --lr 3e-4 --lr-schedule constant --batch-size 32)
  SEARCH_MIN=${DEMO_SEARCH_MINUTES:-4} TUNE_MIN=${DEMO_TUNE_MINUTES:-3}
  ON_MIN=$((SEARCH_MIN + TUNE_MIN))
  step "Train tiny-crnn-ctc briefly (strnas train; at most ${DEMO_MINUTES:-6} minutes)"
  "$BIN" train arch_specs/tiny/tiny-crnn-ctc.yaml --train-data "$DIR/train" --valid-data "$DIR/valid" \
    "${RECIPE[@]}" --iters 2000 --valid-every 100 --max-time "${DEMO_MINUTES:-6}" --out "$DIR/run"

  step "Evaluate on the held-out set (strnas eval)"
  "$BIN" eval "$DIR/run/model.yaml" --data "$DIR/test" --json "$DIR/eval.json" --show-errors 5

  step "Export to ONNX and check it against tch, onnxruntime and tract (strnas export / verify / infer)"
  "$BIN" export "$DIR/run/model.yaml"
  "$BIN" verify "$DIR/run/model.onnx" --spec "$DIR/run/model.yaml"
  echo "ground truth:"; cat "$DIR/test-images/labels.tsv"
  "$BIN" infer "$DIR/run/model.onnx" --runtime tract "$DIR"/test-images/0*

  MODELS=("$DIR/run/model.yaml")
  EVALS=("$DIR/eval.json")
  if [[ "${DEMO_SEARCH:-1}" == "1" ]]; then
    # The search space is the trained model's own skeleton, so the searched model and the limited-space
    # baseline (every cell 3x3, expansion 3) differ only in what the search chose, and get the same data and
    # the same training budget.
    step "Latency table of the tiny-crnn-ctc space on onnxruntime (strnas latency build)"
    "$BIN" latency build arch_specs/tiny/tiny-crnn-ctc.yaml --runtime ort --threads 1 --fit-random 4 \
      --fit-specs arch_specs/tiny/tiny-crnn-ctc.yaml -o "$DIR/latency-ort.json"

    # The paper's search (ProxylessNAS, str-nas1) over the baseline's extractor cells. The supernet starts from
    # the baseline just trained (--init-from: every path without identity computes it), so the architecture
    # steps compare ops of a network that reads; the target-seeking latency term pulls the expected latency
    # onto the target (the baseline's predicted latency) from either side. arch.yaml changes a cell from the
    # baseline's op only where the search gives the new op 1.5 times its probability (--min-odds), and is the
    # most probable such architecture within the target (a hard limit); arch.safetensors holds its weights
    # inherited from the supernet.
    step "Search that space from the trained baseline, latency target = the baseline's predicted latency (strnas search, ProxylessNAS; at most ${SEARCH_MIN} minutes)"
    "$BIN" search arch_specs/tiny/tiny-crnn-ctc.yaml --search extractor --train-data "$DIR/train" --valid-data "$DIR/valid" \
      --preset str-nas1 --latency-abs 1 --arch-lr 5e-2 --warmup-iters 50 --latency-table "$DIR/latency-ort.json" \
      --init-from "$DIR/run/checkpoint.safetensors" "${RECIPE[@]}" --iters 250 --valid-every 125 \
      --max-time "$SEARCH_MIN" --out "$DIR/search"
    "$BIN" spec show "$DIR/search/arch.yaml"
    "$BIN" latency predict "$DIR/run/model.yaml" "$DIR/search/arch.yaml" --table "$DIR/latency-ort.json" \
      --json "$DIR/latency-predicted.json"

    # Both arms start from the trained baseline and get the same wall time: the searched network (its
    # weights inherited from the supernet) is fine-tuned for what is left after the search, the baseline
    # trains on for the whole time. Same data, fine-tuning recipe and stopping rule.
    step "Fine-tune the searched network from its inherited weights (strnas train --init-from; at most ${TUNE_MIN} minutes)"
    "$BIN" train "$DIR/search/arch.yaml" --init-from "$DIR/search/arch.safetensors" --train-data "$DIR/train" \
      --valid-data "$DIR/valid" "${FINETUNE[@]}" --iters 5000 --valid-every 100 --max-time "$TUNE_MIN" --out "$DIR/searched"
    "$BIN" eval "$DIR/searched/model.yaml" --data "$DIR/test" --json "$DIR/eval-searched.json"
    "$BIN" export "$DIR/searched/model.yaml"
    "$BIN" verify "$DIR/searched/model.onnx" --spec "$DIR/searched/model.yaml"

    step "Train the baseline on for the same time instead (strnas train --init-from; at most ${ON_MIN} minutes)"
    "$BIN" train "$DIR/run/model.yaml" --init-from "$DIR/run/model.safetensors" --train-data "$DIR/train" \
      --valid-data "$DIR/valid" "${FINETUNE[@]}" --iters 5000 --valid-every 100 --max-time "$ON_MIN" --out "$DIR/trained-on"
    "$BIN" eval "$DIR/trained-on/model.yaml" --data "$DIR/test" --json "$DIR/eval-trained-on.json"
    MODELS+=("$DIR/searched/model.yaml")
    EVALS+=("$DIR/eval-searched.json")
  fi

  step "Time it like the paper's Table 1 on onnxruntime, tract and tch, with the accuracy above (strnas bench / report)"
  RUNTIMES=ort,tract
  "$BIN" train --help >/dev/null 2>&1 && RUNTIMES=ort,tract,tch
  "$BIN" bench "${MODELS[@]}" --runtime "$RUNTIMES" --batch 1,32 --min-time 1 --eval "${EVALS[@]}" \
    --relative-to "$DIR/run/model.yaml" --json "$DIR/bench.json" --markdown "$DIR/bench.md"
  SEARCH_CHART=()
  [[ -f "$DIR/search/probs.jsonl" ]] && SEARCH_CHART=(--search "$DIR/search")
  "$BIN" report --bench "$DIR/bench.json" --eval "${EVALS[@]}" "${SEARCH_CHART[@]}" --train "$DIR/run" --out "$DIR/charts"
  step "Summary"
  python3 scripts/demo_summary.py "$DIR"
  echo
  echo "outputs: $DIR (run/ holds model.yaml + model.safetensors, checkpoint, log; train-preview.png shows the data;"
  echo "         search/ the searched arch.yaml, its inherited weights arch.safetensors, probs.jsonl (the architecture"
  echo "         probabilities) and log; searched/ its fine-tuning; trained-on/ the baseline trained on for the same"
  echo "         time; bench.json/bench.md the timings; charts/ the latency, accuracy and search charts)"
fi
