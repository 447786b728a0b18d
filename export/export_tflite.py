"""Converts an exported SavedModel to TFLite with its label files (absl binary)."""

from kc_keras.common import startup

startup.quiet_tensorflow()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from export import export_tflite_lib  # noqa: E402
from export import tflite_flags  # noqa: E402
from export import web_compat_lib  # noqa: E402
from kc_keras.common import flags as kc_flags  # noqa: E402

flags.DEFINE_string("saved_model_dir", None,
                    "A version directory written by export.export_saved_model.")
flags.DEFINE_string("output", None, "The .tflite file to write.")
flags.DEFINE_enum("quantization", "none", list(export_tflite_lib.QUANTIZATIONS),
                  "none | fp16 | dynamic (int8 weights) | int8 (full integer) | "
                  "int8_float_head (int8, the logits layer float) | "
                  "int16x8 (int16 activations, int8 weights).")
tflite_flags.define_variant_flags(representative_examples=100)
# int8/int16x8: the experiment whose training split calibrates (default:
# the params.yaml saved with the export).
kc_flags.define_experiment_flags("int8/int16x8 calibration: ")
flags.mark_flags_as_required(["saved_model_dir", "output"])

FLAGS = flags.FLAGS


def main(_):
  params = None
  if FLAGS.experiment:
    from kc_keras.training import experiment_runner  # pylint: disable=g-import-not-at-top
    params = experiment_runner.parse_configuration(FLAGS)
  result = export_tflite_lib.export_tflite(
      FLAGS.saved_model_dir, FLAGS.output, FLAGS.quantization, params=params,
      representative_examples=FLAGS.representative_examples,
      float_layers=FLAGS.float_layers, logit_floor=FLAGS.logit_floor,
      float_head=FLAGS.float_head)
  print(f"{result['model']} ({result['bytes']} bytes, logit floor "
        f"{result['logit_floor']}), labels: "
        f"{result['labels']}, verticals: {result['verticals']}")
  # Whether the browser demo can run this file, before anyone opens the page.
  print(web_compat_lib.describe(result["model"]))


if __name__ == "__main__":
  app.run(main)
