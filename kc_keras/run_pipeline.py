"""Runs a registered end-to-end pipeline (generalist, specialists, soft targets, students, report)."""

import os
import sys

from kc_keras.common import startup

startup.quiet_tensorflow()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

# The registry only: the stages' TensorFlow code loads in main(), so that --help
# answers at once.
from kc_keras.training import pipelines  # noqa: E402

flags.DEFINE_enum("pipeline", "demo", sorted(pipelines.PIPELINES),
                  "Which registered pipeline to run.")
flags.DEFINE_string("workdir", None, "Root of every stage's model_dir.")
flags.DEFINE_string(
    "data", None,
    "Your data, for --pipeline=kc or kc_ablation: folder:TRAIN_DIR[,EVAL_DIR], "
    "tfrecord:TRAIN_GLOB,EVAL_GLOB (with --hierarchy_file) or tfds:NAME.")
flags.DEFINE_string("hierarchy_file", "",
                    "Class -> vertical file (.json/.csv) for --data.")
flags.DEFINE_multi_string("config_file", None,
                          "YAML overrides applied to every stage.")
flags.DEFINE_string("params_override", None,
                    "Override applied to every stage, last.")
flags.DEFINE_list("stages", None, "Run only these stages (by name).")
flags.mark_flags_as_required(["workdir"])

FLAGS = flags.FLAGS

# What bad input raises while the configs are parsed and the data is counted
# (config, hierarchy and data errors are ValueErrors; unknown keys KeyErrors).
_INPUT_ERRORS = (ValueError, KeyError, OSError)


def _data_override():
  """`--data` as a config override, or None; refuses it where it is not read."""
  own_data = FLAGS.pipeline in pipelines.OWN_DATA_EXPORTS
  if own_data and not FLAGS.data:
    raise ValueError(f"--pipeline={FLAGS.pipeline} needs --data (e.g. "
                     "--data=folder:TRAIN_DIR[,EVAL_DIR]).")
  if FLAGS.data and not own_data:
    raise ValueError(
        f"--data is for --pipeline={' or '.join(pipelines.OWN_DATA_EXPORTS)}; "
        f"--pipeline={FLAGS.pipeline} has its own data.")
  if not FLAGS.data:
    return None
  from kc_keras.configs import data as data_cfg  # pylint: disable=g-import-not-at-top
  return data_cfg.data_spec_override(FLAGS.data, FLAGS.hierarchy_file)


def main(argv):
  del argv
  from kc_keras.training import pipeline_lib  # pylint: disable=g-import-not-at-top
  stages = pipelines.get_pipeline(FLAGS.pipeline)
  options = dict(config_files=FLAGS.config_file or (),
                 params_override=FLAGS.params_override)
  try:
    data_override = _data_override()
    params = pipeline_lib.prepare(stages, FLAGS.workdir, data_override,
                                  **options)
  except _INPUT_ERRORS as e:
    sys.exit(f"run_pipeline: error: {e}")
  rows = pipeline_lib.run_pipeline(stages, FLAGS.workdir, only=FLAGS.stages,
                                   data_override=data_override, **options)
  print(pipeline_lib.results_table(rows))
  summary = pipeline_lib.summarize(rows)
  if summary:
    print(summary)
  exported = pipelines.OWN_DATA_EXPORTS.get(FLAGS.pipeline)
  if exported and not FLAGS.stages:
    # Imported here: the registered pipelines that do not export need no
    # TFLite runtime.
    from export import run_export_lib  # pylint: disable=g-import-not-at-top
    index = [s.name for s in stages].index(exported)
    record = run_export_lib.export_and_predict(
        params[index], os.path.join(FLAGS.workdir, stages[index].model_dir),
        FLAGS.workdir)
    print(f"SavedModel: {record['saved_model']}\nTFLite: {record['tflite']}\n"
          f"On-device prediction for {record['image']}:\n{record['text']}")


if __name__ == "__main__":
  app.run(main)
