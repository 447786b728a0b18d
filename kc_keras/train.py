"""Knowledge Concentration trainer binary (model-garden style flags)."""

from kc_keras.common import startup

startup.quiet_tensorflow()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from kc_keras.common import flags as kc_flags  # noqa: E402

kc_flags.define_experiment_flags()
kc_flags.define_run_flags()
flags.DEFINE_list(
    "verticals", None,
    "train_specialists: vertical ids to train (default: "
    "task.specialists.verticals, else all), so that workers can split them.")
flags.DEFINE_bool(
    "allow_config_change", False,
    "Rerun a model_dir whose params.yaml differs from this config in more "
    "than the resume-safe keys (train_steps, intervals, runtime; see "
    "docs/RELIABILITY.md); the new config is then recorded.")
flags.DEFINE_string(
    "eval_data", None,
    "--mode=eval on another test set: folder:DIR with DIR/<vertical>/<class>/"
    "<image>, classes a subset of the run's, matched by name; metrics go to "
    "model_dir/eval_metrics_<DIR name>.json.")
flags.DEFINE_string(
    "eval_output", None,
    "--mode=eval: write the metrics JSON here instead of the default.")
flags.mark_flags_as_required(["experiment", "mode", "model_dir"])

FLAGS = flags.FLAGS


def main(argv):
  del argv
  # TensorFlow loads here, not at import, so that --help answers at once.
  from kc_keras.training import experiment_runner  # pylint: disable=g-import-not-at-top
  from kc_keras.utils import files  # pylint: disable=g-import-not-at-top
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
          eval_data=FLAGS.eval_data,
          eval_output=FLAGS.eval_output,
      )
  except files.StorageError as e:
    # One line, not a traceback: the fix (space, permissions) is outside.
    raise SystemExit(f"kc_keras.train: {e}") from None


if __name__ == "__main__":
  app.run(main)
