"""Converts an exported SavedModel to TFLite with its label files (absl binary)."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from export import export_tflite_lib  # noqa: E402
from export import web_compat_lib  # noqa: E402

flags.DEFINE_string("saved_model_dir", None,
                    "A version directory written by export.export_saved_model.")
flags.DEFINE_string("output", None, "The .tflite file to write.")
flags.DEFINE_enum("quantization", "none", list(export_tflite_lib.QUANTIZATIONS),
                  "none | fp16 | dynamic (int8 weights) | int8 (full integer) | "
                  "int8_float_head (int8, the logits layer float) | "
                  "int16x8 (int16 activations, int8 weights).")
flags.DEFINE_list("float_layers", [],
                  "int8_float_head and dynamic: Keras layer names kept "
                  "float (e.g. input_scaling,block0_conv0; dynamic: those "
                  "ops compute in float on their int8-grid weights).")
flags.DEFINE_bool("float_head", True,
                  "int8_float_head: keep the logits layer float; "
                  "--nofloat_head keeps only --float_layers float.")
flags.DEFINE_string("logit_floor", export_tflite_lib.DEFAULT,
                    "The model outputs max(logit, floor): default (-16 where "
                    "the logits layer is int8: int8, int8_float_head "
                    "--nofloat_head, when it narrows their int8 logits to "
                    "[floor, max]; no floor for the others) | none | a "
                    "negative number.")
flags.DEFINE_integer("representative_examples", 100,
                     "Training images calibrating int8/int16x8.")
flags.DEFINE_string("experiment", None,
                    "int8/int16x8: the experiment whose TRAINING split "
                    "calibrates (default: params.yaml saved with the export).")
flags.DEFINE_multi_string("config_file", None, "int8/int16x8: YAML overrides.")
flags.DEFINE_string("params_override", None, "int8/int16x8: last override.")
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
