"""Probe: which int8 rounding of a full-integer file costs top-1 agreement.

Simulates the `int8` TFLite file's activation roundings in Keras
(`kc_keras.quantization.activation_simulator.ActivationSimulator`, ranges calibrated on
training images like the converter) and rounds them one at a time, then all
together, all but `--skip`, and all but `--skip` with the `--per_channel`
points rounded over one range per channel (what equalizing their ranges
would buy). Agreement is top-1 against the float network on the eval split.
The input scaling is simulated unfolded (`fold_input_scaling=False`) so its
own cost shows; `--skip=input_scaling` is the folded export. Used in
docs/BENCHMARKS.md ("The graph converted for int8").

  .venv/bin/python bench/int8_rounding_probe.py --experiment=kc_generalist_omniglot \
    --config_file=runs/omniglot/generalist_qat_int8/params.yaml --checkpoint_path=runs/omniglot/generalist_qat_int8/ckpt-4760 \
    --logit_floor=-16 --representative_examples=1623 --max_examples=8115 \
    --skip=input_scaling --per_channel=fc2
  # per-op errors of an export's int8 conversion (300 calibration images):
  ... --saved_model_dir=runs/omniglot/student_fc_sc_d_s_vertical_qat_int8/export/kc_student_omniglot/1
"""

import csv
import io

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from export import export_saved_model_lib
from export import export_tflite_lib
from export import parity_lib
from kc_keras.quantization import activation_simulator
from kc_keras.quantization import calibration as calibration_lib
from kc_keras.training import experiment_runner
from kc_keras.training import restore

flags.DEFINE_string("experiment", None, "Registered experiment name (kc_*).")
flags.DEFINE_multi_string("config_file", None, "The run's params.yaml.")
flags.DEFINE_string("params_override", None, "Last override.")
flags.DEFINE_string("checkpoint_path", None, "ckpt-N prefix or model_dir.")
flags.DEFINE_float("logit_floor", None, "The file's logit floor, if any.")
flags.DEFINE_integer("representative_examples", 200,
                     "Training images calibrating the ranges.")
flags.DEFINE_integer("max_examples", 1000, "Eval images compared.")
flags.DEFINE_list("skip", [], "Points left float in the 'all but' rows.")
flags.DEFINE_list("per_channel", [],
                  "Points rounded per channel in the last row.")
flags.DEFINE_string("saved_model_dir", None,
                    "Optional: an export of the same checkpoint; prints the "
                    "TFLite quantization debugger's per-op error of its int8 "
                    "conversion (ops the Keras simulation does not cover, "
                    "e.g. the self-paced scale).")
flags.mark_flags_as_required(["experiment", "checkpoint_path"])
FLAGS = flags.FLAGS
_BATCH = 512


def _channel_maxima(simulator, images):
  """Point -> per-channel maximum over `images` of the float walk."""
  maxima = {}

  def record(name, x):
    value = np.asarray(x).reshape(-1, x.shape[-1]).max(axis=0)
    maxima[name] = np.maximum(maxima.get(name, value), value)
    return x

  for start in range(0, len(images), _BATCH):
    simulator._walk(tf.constant(images[start:start + _BATCH]), record,  # pylint: disable=protected-access
                    round_inputs=False)
  return maxima


def print_op_errors(saved_model_dir, calibration):
  """Per-op RMSE of the int8 file against float, in units of the op's int8 step."""
  loaded = tf.saved_model.load(saved_model_dir)
  function = getattr(loaded, export_tflite_lib.TFLITE_FUNCTION)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [function.get_concrete_function()], loaded)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  batches = [calibration[i:i + 1] for i in range(len(calibration))]
  converter.representative_dataset = lambda: (
      {export_saved_model_lib.IMAGES_INPUT: b} for b in batches)
  debugger = tf.lite.experimental.QuantizationDebugger(
      converter=converter, debug_dataset=lambda: ([b] for b in batches))
  debugger.run()
  stream = io.StringIO()
  debugger.layer_statistics_dump(stream)
  print("| op | int8 step | rmse | rmse / step | output |")
  print("|---|---|---|---|---|")
  for row in csv.DictReader(io.StringIO(stream.getvalue())):
    rmse = float(row["mean_squared_error"]) ** 0.5
    step = float(row["scale"])
    print(f"| {row['op_name']} | {step:.4g} | {rmse:.4g} | {rmse / step:.2f} "
          f"| {row['tensor_name'][-60:]} |")


def main(_):
  params = experiment_runner.parse_configuration(FLAGS)
  network = restore.load_network(
      params, FLAGS.checkpoint_path)[0]
  images = parity_lib.eval_images(params, FLAGS.max_examples, _BATCH)
  calibration = np.concatenate(list(calibration_lib.training_images(
      params.task.data, FLAGS.representative_examples)))
  simulator = activation_simulator.ActivationSimulator(
      network, "int8", FLAGS.logit_floor, fold_input_scaling=False)
  simulator.calibrate(calibration, _BATCH)
  maxima = _channel_maxima(simulator, calibration)
  reference = np.concatenate([
      np.asarray(network(images[i:i + _BATCH], training=False))
      for i in range(0, len(images), _BATCH)]).argmax(1)

  def agreement(rounded, per_channel=()):
    def fake_quant(name, x):
      if name not in rounded:
        return x
      low, high = simulator.ranges[name]
      scale = 1.0
      if name in per_channel:  # Every channel stretched to the top range.
        scale = float(high) / np.maximum(maxima[name], 1e-3 * float(high))
      return keras.quantizers.fake_quant_with_min_max_vars(
          x * scale, low, high,
          num_bits=activation_simulator.ACTIVATION_BITS) / scale

    top1 = np.concatenate([
        np.asarray(simulator._walk(tf.constant(images[i:i + _BATCH]),  # pylint: disable=protected-access
                                   fake_quant, round_inputs=False)).argmax(1)
        for i in range(0, len(images), _BATCH)])
    return float(np.mean(top1 == reference))

  if FLAGS.saved_model_dir:
    print_op_errors(FLAGS.saved_model_dir, calibration[:300])
  points = simulator.points
  print(f"{len(images)} eval images, {len(calibration)} calibration images")
  print("| rounded (int8, calibrated range) | range | top-1 agreement |")
  print("|---|---|---|")
  for name in points:
    low, high = (float(v) for v in simulator.ranges[name])
    print(f"| {name} | [{low:.3f}, {high:.3f}] | {agreement({name}):.2%} |")
  print(f"| all of them | | {agreement(set(points)):.2%} |")
  kept = set(points) - set(FLAGS.skip)
  print(f"| all but {','.join(FLAGS.skip)} | | {agreement(kept):.2%} |")
  if FLAGS.per_channel:
    print(f"| all but {','.join(FLAGS.skip)}, "
          f"{','.join(FLAGS.per_channel)} per channel | | "
          f"{agreement(kept, set(FLAGS.per_channel)):.2%} |")


if __name__ == "__main__":
  app.run(main)
