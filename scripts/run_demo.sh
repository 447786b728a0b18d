#!/usr/bin/env bash
# README command 1: set up (or reuse) .venv, then run the whole Knowledge
# Concentration pipeline on the embedded default dataset (no download):
# generalist -> specialists -> soft-target cache -> student -> evaluation table
# -> SavedModel (TF Serving) + TFLite export -> one on-device demo prediction,
# then prints the command that opens the student in a web page (LiteRT.js).
# Outputs go to runs/demo/ (rerunning resumes: finished stages are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
RUN_DIR=runs/demo
PY=.venv/bin/python
STUDENT_DIR="$RUN_DIR/student_fc_sc_d_s_vertical"

$PY -m kc_keras.run_pipeline --pipeline=demo --workdir="$RUN_DIR" "$@"

rm -rf "$RUN_DIR/serving"
$PY -m export.export_saved_model --experiment=kc_student_demo \
  --checkpoint_path="$STUDENT_DIR" --export_dir="$RUN_DIR/serving" --version=1
$PY -m export.export_tflite --saved_model_dir="$RUN_DIR/serving/kc_student_demo/1" \
  --output="$RUN_DIR/kc_student_demo_fp16.tflite" --quantization=fp16
$PY -m export.sample_images --experiment=kc_student_demo \
  --output_dir="$RUN_DIR/samples" --count=8
$PY -m export.tflite_demo --model="$RUN_DIR/kc_student_demo_fp16.tflite" \
  "$RUN_DIR/samples/eval_0.png"
echo "Results table: $RUN_DIR/results.md; SavedModel: $RUN_DIR/serving/kc_student_demo/1"
echo "Open the student in a web page (needs npm once; then http://127.0.0.1:8000/):"
echo "  $PY -m export.web_demo --run=$RUN_DIR"
