"""Measures export parity (Keras vs SavedModel vs TFLite variants) and prints a markdown table."""

import os

from kc_keras.common import startup  # noqa: E402

startup.quiet_tensorflow()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from export import export_tflite_lib  # noqa: E402
from export import parity_lib  # noqa: E402
from export import tflite_flags  # noqa: E402
from kc_keras.common import flags as kc_flags  # noqa: E402
from kc_keras.training import experiment_runner  # noqa: E402
from kc_keras.training import restore  # noqa: E402

kc_flags.define_experiment_flags()
kc_flags.define_checkpoint_flag()
flags.DEFINE_string("saved_model_dir", None,
                    "The export of that checkpoint (a version directory).")
flags.DEFINE_string("tflite_dir", None,
                    "Where model_<quantization>.tflite are written.")
flags.DEFINE_list("quantizations", list(export_tflite_lib.QUANTIZATIONS),
                  "TFLite variants to convert and measure.")
flags.DEFINE_integer("max_examples", 1000, "Eval images compared.")
flags.DEFINE_integer("latency_images", 100,
                     "Images timed at batch 1 (median latency).")
flags.DEFINE_integer("throughput_batch", parity_lib.THROUGHPUT_BATCH,
                     "Batch size of the throughput column.")
flags.DEFINE_integer("throughput_repeats", parity_lib.THROUGHPUT_REPEATS,
                     "Timed batches (median) per throughput figure.")
tflite_flags.define_variant_flags(representative_examples=200)
flags.mark_flags_as_required(["experiment", "checkpoint_path",
                              "saved_model_dir", "tflite_dir"])

FLAGS = flags.FLAGS
_EVAL_BATCH = 256


def main(_):
  params = experiment_runner.parse_configuration(FLAGS)
  network, _, _, _ = restore.load_network(
      params, FLAGS.checkpoint_path)
  paths = {}
  floors = {}
  for quantization in FLAGS.quantizations:
    float_head = FLAGS.float_head or quantization != "int8_float_head"
    variant = quantization if float_head else f"{quantization} --nofloat_head"
    if FLAGS.float_layers and (
        quantization in export_tflite_lib.FLOAT_LAYER_VARIANTS):
      variant += f" (float: {','.join(FLAGS.float_layers)})"
    path = os.path.join(FLAGS.tflite_dir, f"model_{quantization}.tflite")
    result = export_tflite_lib.export_tflite(
        FLAGS.saved_model_dir, path, quantization, params=params,
        representative_examples=FLAGS.representative_examples,
        float_layers=(
            FLAGS.float_layers
            if quantization in export_tflite_lib.FLOAT_LAYER_VARIANTS else ()),
        logit_floor=FLAGS.logit_floor, float_head=float_head)
    floors[variant] = result["logit_floor"]
    paths[variant] = path
  images, label_ids = parity_lib.eval_images_and_labels(
      params, FLAGS.max_examples, _EVAL_BATCH)
  load_before = os.getloadavg()
  rows = parity_lib.measure(network, images, FLAGS.saved_model_dir, paths,
                            FLAGS.latency_images, FLAGS.throughput_batch,
                            FLAGS.throughput_repeats,
                            logit_floors=floors, label_ids=label_ids)
  print(f"{len(images)} eval images; load average (1/5/15 min) before "
        f"{load_before}, after {os.getloadavg()}")
  print(parity_lib.markdown_table(rows, FLAGS.throughput_batch))


if __name__ == "__main__":
  app.run(main)
