#!/usr/bin/env bash
# README command 1: set up (or reuse) .venv, then run the main job end to end on
# the embedded default dataset (no download). Outputs go to runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
export TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=tensorflow
RUN_DIR="${RUN_DIR:-runs/demo}"
.venv/bin/python -m kc_keras.train \
  --experiment=kc_generalist_demo \
  --mode=train_and_eval \
  --model_dir="$RUN_DIR/generalist" "$@"
.venv/bin/python -c "
import json, sys
m = json.load(open('$RUN_DIR/generalist/eval_metrics.json'))
print(f\"generalist on the embedded demo: top-1 {m['top1']:.3f}  top-5 {m['top5']:.3f}  mpvap {m['mpvap']:.3f}  ({m['num_examples']} eval images, {m['params']['total']:,} params)\")
"
