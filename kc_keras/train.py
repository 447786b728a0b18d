"""Knowledge Concentration trainer binary (model-garden style flags)."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from kc_keras.training import experiment_runner  # noqa: E402
from kc_keras.utils import files  # noqa: E402

flags.DEFINE_string("experiment", None, "Registered experiment name (kc_*).")
flags.DEFINE_enum(
    "mode", None, experiment_runner.MODES,
    "train | eval | train_and_eval (the experiment's network: a generalist or "
    "a student), train_specialists (one teacher per vertical), cache_targets "
    "(offline soft targets), eval_specialists (the teachers as a set).")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries and reports.")
flags.DEFINE_multi_string(
    "config_file", None,
    "YAML files overriding the registered experiment, applied in order.")
flags.DEFINE_string(
    "params_override", None,
    "YAML/JSON string or file applied last; unknown keys are errors.")
flags.DEFINE_string("tpu", None, "TPU address (sets runtime.tpu).")
flags.DEFINE_string(
    "checkpoint_path", None, "Checkpoint to evaluate (default: latest).")
flags.DEFINE_list(
    "verticals", None,
    "train_specialists: vertical ids to train (default: "
    "task.specialists.verticals, else all), so that workers can split them.")
flags.DEFINE_bool(
    "allow_config_change", False,
    "Rerun a model_dir whose params.yaml differs from this config in more "
    "than the resume-safe keys (train_steps, intervals, runtime; see "
    "docs/RELIABILITY.md); the new config is then recorded.")
flags.mark_flags_as_required(["experiment", "mode", "model_dir"])

FLAGS = flags.FLAGS


def main(argv):
  del argv
  params = experiment_runner.parse_configuration(FLAGS)
  try:
    with files.storage_errors(FLAGS.model_dir):
      experiment_runner.run(
          params,
          mode=FLAGS.mode,
          model_dir=FLAGS.model_dir,
          checkpoint_path=FLAGS.checkpoint_path,
          verticals=([int(v) for v in FLAGS.verticals] if FLAGS.verticals
                     else None),
          allow_config_change=FLAGS.allow_config_change,
      )
  except files.StorageError as e:
    # One line, not a traceback: the fix (space, permissions) is outside.
    raise SystemExit(f"kc_keras.train: {e}") from None


if __name__ == "__main__":
  app.run(main)
