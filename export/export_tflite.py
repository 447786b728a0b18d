"""Converts an exported SavedModel to TFLite with its label files (absl binary).

An export of a quantization-aware fine-tuned run carries its quantization
recipe: the conversion flags left unset (--quantization, --logit_floor,
--float_layers, --float_head) are taken from it, and a set flag that
contradicts it is refused unless --override_recipe is passed.
"""

import sys

from kc_keras.common import startup

startup.quiet_tensorflow()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from export import export_tflite_lib  # noqa: E402
from export import tflite_flags  # noqa: E402
from export import web_compat_lib  # noqa: E402
from kc_keras.common import flags as kc_flags  # noqa: E402
from kc_keras.quantization import recipe as recipe_lib  # noqa: E402

flags.DEFINE_string("saved_model_dir", None,
                    "A version directory written by export.export_saved_model.")
flags.DEFINE_string("output", None, "The .tflite file to write.")
flags.DEFINE_enum("quantization", "none", list(export_tflite_lib.QUANTIZATIONS),
                  "none | fp16 | dynamic (int8 weights) | int8 (full integer) | "
                  "int8_float_head (int8, the logits layer float) | "
                  "int16x8 (int16 activations, int8 weights). Default: the "
                  "export's quantization recipe, else none.")
tflite_flags.define_variant_flags(representative_examples=100)
flags.DEFINE_bool(recipe_lib.OVERRIDE_FLAG, False,
                  "Convert with the flags given even where they contradict "
                  "the export's quantization recipe (the settings its run "
                  "was fine-tuned for).")
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
  try:
    settings = export_tflite_lib.resolve_settings(
        FLAGS.saved_model_dir,
        defaults={name: FLAGS[name].value
                  for name in recipe_lib.EXPORT_SETTINGS},
        given={name: FLAGS[name].value for name in recipe_lib.EXPORT_SETTINGS
               if FLAGS[name].present},
        override=FLAGS[recipe_lib.OVERRIDE_FLAG].value, log=logging.info)
  except recipe_lib.RecipeError as e:
    # A flag against the recipe, or a recipe that is not this export's: the
    # user's input, so one line, not a traceback.
    sys.exit(f"export_tflite: error: {e}")
  result = export_tflite_lib.export_tflite(
      FLAGS.saved_model_dir, FLAGS.output, settings["quantization"],
      params=params, representative_examples=FLAGS.representative_examples,
      float_layers=settings["float_layers"],
      logit_floor=settings["logit_floor"], float_head=settings["float_head"])
  print(f"{result['model']} ({result['bytes']} bytes, {result['quantization']}"
        f", logit floor {result['logit_floor']}), labels: "
        f"{result['labels']}, verticals: {result['verticals']}")
  # Whether the browser demo can run this file, before anyone opens the page.
  print(web_compat_lib.describe(result["model"]))


if __name__ == "__main__":
  app.run(main)
