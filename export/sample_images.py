"""Writes a few eval-split images as PNG files, e.g. to try the serving client or the demo."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from export import parity_lib  # noqa: E402
from export.run_export_lib import write_pngs  # noqa: E402
from kc_keras.training import experiment_runner  # noqa: E402

flags.DEFINE_string("experiment", None, "Registered experiment name (kc_*).")
flags.DEFINE_multi_string("config_file", None, "YAML overrides.")
flags.DEFINE_string("params_override", None, "Last override.")
flags.DEFINE_string("output_dir", None, "Where eval_<i>.png are written.")
flags.DEFINE_integer("count", 2, "Images written.")
flags.mark_flags_as_required(["experiment", "output_dir"])

FLAGS = flags.FLAGS


def main(_):
  params = experiment_runner.parse_configuration(FLAGS)
  images = parity_lib.eval_images(params, FLAGS.count, FLAGS.count)
  print("\n".join(write_pngs(images, FLAGS.output_dir)))


if __name__ == "__main__":
  app.run(main)
