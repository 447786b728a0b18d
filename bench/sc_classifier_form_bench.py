"""Benchmark: the SC classifier's int8 TFLite forms, latency by block width s2.

Converts the SC classifier alone (logit_c = h[v(c)] . W[c] + b[c], random
weights, N classes in M uneven verticals) to full-integer TFLite files in
two forms and times one batch-1 invoke of each (LiteRT, 1 thread, XNNPACK,
median of `--repeats`), side by side in one process:
  depthwise:    the classifier's integer-friendly form below the limit
                (`quantization.integer_forms`): one DEPTHWISE_CONV_2D, a
                1 x s2 filter per class;
  batch_matmul: `chunked_logits`' einsum: one BATCH_MATMUL and a bias ADD.
The ratio depthwise / batch_matmul per s2 is what sets
`integer_forms.DEPTHWISE_MAX_UNITS` (docs/BENCHMARKS.md).

  .venv/bin/python bench/sc_classifier_form_bench.py --num_classes=1623 \
      --num_verticals=50 --units=16,24,25,26,32,64
"""

import tempfile
import time

from absl import app
from absl import flags
from ai_edge_litert.interpreter import Interpreter
import numpy as np
import tensorflow as tf

from kc_keras.modeling.layers import structurally_connected
from kc_keras.quantization import integer_forms

flags.DEFINE_integer("num_classes", 1623, "N.")
flags.DEFINE_integer("num_verticals", 50, "M.")
flags.DEFINE_list("units", ["16", "24", "25", "26", "32", "64"],
                  "Block widths s2 to time.")
flags.DEFINE_integer("repeats", 200, "Timed invokes (median reported).")
flags.DEFINE_integer("calibration_batches", 10, "Representative batches.")
FLAGS = flags.FLAGS
_FORMS = ("depthwise", "batch_matmul")


def _int8_file(layer, form, units, rng):
  """The classifier in `form` as a full-integer TFLite flatbuffer."""
  spec = tf.TensorSpec([1, layer.num_verticals, units], tf.float32)
  if form == "depthwise":
    # The depthwise graph whatever `DEPTHWISE_MAX_UNITS` says: the bench
    # measures both forms at every width.
    order = np.arange(layer.num_classes, dtype=np.int32)
    forward = lambda h: integer_forms.depthwise_logits(  # noqa: E731
        layer, h, tf.transpose(layer.kernel), layer.bias, order)
  else:
    forward = layer.chunked_logits
  module = tf.Module()
  module.layer = layer
  module.forward = tf.function(forward, input_signature=[spec])
  # Saved and loaded, as `export_tflite_lib` converts: the loaded
  # function's variables freeze into constants.
  saved = tempfile.mkdtemp()
  tf.saved_model.save(module, saved)
  loaded = tf.saved_model.load(saved)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [loaded.forward.get_concrete_function()], loaded)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = lambda: (
      [rng.uniform(size=spec.shape).astype(np.float32)]
      for _ in range(FLAGS.calibration_batches))
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  converter.inference_input_type = tf.int8
  converter.inference_output_type = tf.int8
  return converter.convert()


def _latency_ms(model: bytes, repeats: int) -> float:
  interpreter = Interpreter(model_content=model, num_threads=1)
  interpreter.allocate_tensors()
  detail = interpreter.get_input_details()[0]
  interpreter.set_tensor(detail["index"],
                         np.zeros(detail["shape"], detail["dtype"]))
  for _ in range(5):
    interpreter.invoke()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    interpreter.invoke()
    times.append(time.perf_counter() - start)
  return float(np.median(times)) * 1e3


def main(_):
  rng = np.random.default_rng(0)
  sizes = np.bincount(rng.integers(0, FLAGS.num_verticals, FLAGS.num_classes),
                      minlength=FLAGS.num_verticals)
  c2v = np.repeat(np.arange(FLAGS.num_verticals), sizes)
  c2v = c2v[rng.permutation(c2v.size)]
  print(f"N={FLAGS.num_classes} M={FLAGS.num_verticals}; int8 TFLite, batch 1,"
        f" 1 thread, XNNPACK; median of {FLAGS.repeats} invokes")
  print("| s2 | depthwise (ms) | batch_matmul (ms) | depthwise / batch_matmul |"
        " form used |")
  print("|---|---|---|---|---|")
  for units in (int(u) for u in FLAGS.units):
    layer = structurally_connected.StructurallyConnectedClassifier(
        c2v, bias_initializer="random_normal")
    layer.build((None, FLAGS.num_verticals, units))
    times = {form: _latency_ms(_int8_file(layer, form, units, rng),
                               FLAGS.repeats) for form in _FORMS}
    used = ("depthwise" if integer_forms.has_depthwise_form(layer)
            else "batch_matmul")
    print(f"| {units} | {times['depthwise']:.3f} | {times['batch_matmul']:.3f}"
          f" | {times['depthwise'] / times['batch_matmul']:.2f}x | {used} |")


if __name__ == "__main__":
  app.run(main)
