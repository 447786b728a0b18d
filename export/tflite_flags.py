"""absl flags shared by the binaries that convert TFLite variants."""

from absl import flags

from export import export_tflite_lib


def define_variant_flags(representative_examples: int) -> None:
  """--float_layers, --float_head, --logit_floor, --representative_examples.

  Args:
    representative_examples: the default number of training images that
      calibrate int8 / int16x8.
  """
  flags.DEFINE_list("float_layers", [],
                    "int8_float_head and dynamic: Keras layer names kept "
                    "float (e.g. input_scaling,block0_conv0; dynamic: those "
                    "ops compute in float on their int8-grid weights).")
  flags.DEFINE_bool("float_head", True,
                    "int8_float_head: keep the logits layer float; "
                    "--nofloat_head keeps only --float_layers float.")
  flags.DEFINE_string(
      "logit_floor", export_tflite_lib.DEFAULT,
      "The model outputs max(logit, floor): default (-16 where the logits "
      "layer is int8: int8, int8_float_head --nofloat_head, when it narrows "
      "their int8 logits to [floor, max]; no floor for the others) | none | "
      "a negative number.")
  flags.DEFINE_integer("representative_examples", representative_examples,
                       "Training images calibrating int8/int16x8.")
