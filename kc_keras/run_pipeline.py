"""Runs a registered end-to-end pipeline (generalist, specialists, soft targets, students, report)."""

from kc_keras.common import startup

startup.quiet_tensorflow()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from kc_keras.training import pipeline_lib  # noqa: E402
from kc_keras.training import pipelines  # noqa: E402

flags.DEFINE_enum("pipeline", "demo", sorted(pipelines.PIPELINES),
                  "Which registered pipeline to run.")
flags.DEFINE_string("workdir", None, "Root of every stage's model_dir.")
flags.DEFINE_multi_string("config_file", None,
                          "YAML overrides applied to every stage.")
flags.DEFINE_string("params_override", None,
                    "Override applied to every stage, last.")
flags.DEFINE_list("stages", None, "Run only these stages (by name).")
flags.mark_flags_as_required(["workdir"])

FLAGS = flags.FLAGS


def main(argv):
  del argv
  rows = pipeline_lib.run_pipeline(
      pipelines.get_pipeline(FLAGS.pipeline), FLAGS.workdir,
      config_files=FLAGS.config_file or (),
      params_override=FLAGS.params_override, only=FLAGS.stages)
  print(pipeline_lib.results_table(rows))
  summary = pipeline_lib.summarize(rows)
  if summary:
    print(summary)


if __name__ == "__main__":
  app.run(main)
