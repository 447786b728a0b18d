"""Writes a few eval-split images as PNG files, e.g. to try the serving client or the demo."""

import os

from kc_keras.common import startup

startup.quiet_tensorflow()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from kc_keras.common import flags as kc_flags  # noqa: E402

kc_flags.define_experiment_flags()
flags.DEFINE_string("output_dir", None, "Where eval_<i>.png are written.")
flags.DEFINE_integer("count", 2, "Images written.")
flags.mark_flags_as_required(["experiment", "output_dir"])

FLAGS = flags.FLAGS
_UINT8_MAX = 255.0


def write_pngs(images: np.ndarray, output_dir: str) -> list:
  """float [0, 1] `[E, H, W, C]` -> `output_dir/eval_<i>.png`; returns paths."""
  os.makedirs(output_dir, exist_ok=True)
  paths = []
  for i, image in enumerate(images):
    pixels = np.round(np.clip(image, 0.0, 1.0) * _UINT8_MAX).astype(np.uint8)
    path = os.path.join(output_dir, f"eval_{i}.png")
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(
        path)
    paths.append(path)
  return paths


def main(_):
  # TensorFlow loads here, not at import, so that --help answers at once.
  from export import parity_lib  # pylint: disable=g-import-not-at-top
  from kc_keras.training import experiment_runner  # pylint: disable=g-import-not-at-top
  params = experiment_runner.parse_configuration(FLAGS)
  images = parity_lib.eval_images(params, FLAGS.count, FLAGS.count)
  print("\n".join(write_pngs(images, FLAGS.output_dir)))


if __name__ == "__main__":
  app.run(main)
