"""Fine-tunes a trained run on TFLite's int8 grid into a new run directory (absl binary).

The new run holds the network with its kernels on their int8 grid, its
`qat_summary.json` and its `quantization_recipe.json`; rerunning the same
command on an unfinished run resumes it.
"""

from kc_keras.common import startup

startup.quiet_tensorflow()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from kc_keras.common import flags as kc_flags  # noqa: E402
from kc_keras.quantization import activation_simulator  # noqa: E402
from kc_keras.quantization import fine_tuning  # noqa: E402
from kc_keras.quantization import kernels  # noqa: E402
from kc_keras.quantization import recipe  # noqa: E402
from kc_keras.training import experiment_runner  # noqa: E402

kc_flags.define_experiment_flags()
kc_flags.define_checkpoint_flag()
flags.DEFINE_string("output_dir", None,
                    "The new run directory (must not exist, or be empty; an "
                    "unfinished fine-tuning there resumes).")
flags.DEFINE_integer("steps", 200, "Fine-tuning steps.")
flags.DEFINE_float("learning_rate", 1e-4,
                   "Peak learning rate (cosine decay to 0 over --steps).")
flags.DEFINE_integer("batch_size", None,
                     "Training batch (default task.train_batch_size).")
flags.DEFINE_bool("evaluate", True,
                  "Eval metrics before and after (in qat_summary.json).")
flags.DEFINE_enum("quantization", None, list(recipe.QUANTIZATIONS),
                  "The TFLite variant the run is fine-tuned for, recorded in "
                  "its quantization recipe (export_tflite converts to it); "
                  "default int8 with --activations=int8, else dynamic.")
flags.DEFINE_enum("activations", "none",
                  list(activation_simulator.ACTIVATION_MODES),
                  "Activation rounding simulated in training: none (weights "
                  "only), dynamic (the dynamic file's hybrid ops), int8 "
                  "(full integer, calibrated ranges).")
flags.DEFINE_float("logit_floor", None,
                   "The logit floor the file will be converted with "
                   "(recorded in the recipe; int8 activations: the simulated "
                   "logits' range).")
flags.DEFINE_list("float_layers", [],
                  "dynamic and int8_float_head: Keras layer names the file "
                  "keeps float (recorded in the recipe).")
flags.DEFINE_bool("float_head", True,
                  "int8_float_head: keep the logits layer float "
                  "(recorded in the recipe).")
flags.DEFINE_integer("representative_examples", 200,
                     "int8 and --equalize_ranges: training images measuring "
                     "the ranges (use the export's "
                     "--representative_examples).")
flags.DEFINE_integer("calibration_interval", 50,
                     "int8: steps between recalibrations.")
flags.DEFINE_float("consistency_weight", 0.0,
                   "Weight of the term pulling the simulated quantized "
                   "logits towards the float network's own probabilities.")
flags.DEFINE_enum("weight_target", None, list(kernels.WEIGHT_TARGETS),
                  "The file whose int8 weight grid is trained on and snapped "
                  "to (they differ only for structurally connected layers: "
                  "per-tensor symmetric in dynamic, asymmetric in int8); "
                  "default: the one of --quantization.")
flags.DEFINE_float("equalize_ranges", 0.0,
                   "Cross-layer range equalization before fine-tuning: the "
                   "exponent in [0, 1] of s_c = (max range / range_c)^e per "
                   "channel between each BatchNorm and the next Conv2D, and "
                   "between the head's ReLU layers and the next one "
                   "(function-preserving in float; ranges over "
                   "--representative_examples training images); 0: off.")
flags.DEFINE_integer("log_every", 50,
                     "Steps per training loop: a loss line and a checkpoint.")
flags.mark_flags_as_required(["experiment", "checkpoint_path", "output_dir"])

FLAGS = flags.FLAGS


def main(_):
  params = experiment_runner.parse_configuration(FLAGS)
  result = fine_tuning.fine_tune(
      params, FLAGS.checkpoint_path, FLAGS.output_dir, FLAGS.steps,
      learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size,
      evaluate=FLAGS.evaluate, activations=FLAGS.activations,
      logit_floor=FLAGS.logit_floor,
      representative_examples=FLAGS.representative_examples,
      calibration_interval=FLAGS.calibration_interval,
      consistency_weight=FLAGS.consistency_weight,
      weight_target=FLAGS.weight_target,
      equalize_strength=FLAGS.equalize_ranges,
      quantization=FLAGS.quantization, float_layers=FLAGS.float_layers,
      float_head=FLAGS.float_head, log_every=FLAGS.log_every)
  print(f"wrote {result.checkpoint} (recipe: {result.recipe.quantization}, "
        f"logit floor {result.recipe.logit_floor})")


if __name__ == "__main__":
  app.run(main)
