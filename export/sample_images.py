"""Writes a few eval-split images as PNG files, e.g. to try the serving client or the demo."""

from kc_keras.common import startup

startup.quiet_tensorflow()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from kc_keras.common import flags as kc_flags  # noqa: E402

kc_flags.define_experiment_flags()
flags.DEFINE_string("output_dir", None, "Where eval_<i>.png are written.")
flags.DEFINE_integer("count", 2, "Images written.")
flags.mark_flags_as_required(["experiment", "output_dir"])

FLAGS = flags.FLAGS


def main(_):
  # TensorFlow loads here, not at import, so that --help answers at once.
  from export import parity_lib  # pylint: disable=g-import-not-at-top
  from export.run_export_lib import write_pngs  # pylint: disable=g-import-not-at-top
  from kc_keras.training import experiment_runner  # pylint: disable=g-import-not-at-top
  params = experiment_runner.parse_configuration(FLAGS)
  images = parity_lib.eval_images(params, FLAGS.count, FLAGS.count)
  print("\n".join(write_pngs(images, FLAGS.output_dir)))


if __name__ == "__main__":
  app.run(main)
