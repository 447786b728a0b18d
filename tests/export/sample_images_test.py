"""Tests for run_export_lib.write_pngs (export.sample_images): PNGs hold the eval pixels rounded to 8 bits."""

import numpy as np
from PIL import Image

from export import run_export_lib


def test_write_pngs_round_trip(tmp_path):
  rng = np.random.RandomState(0)
  images = rng.rand(2, 5, 6, 3).astype(np.float32)
  grey = rng.rand(1, 4, 4, 1).astype(np.float32)
  paths = run_export_lib.write_pngs(images, str(tmp_path / "rgb"))
  paths += run_export_lib.write_pngs(grey, str(tmp_path / "grey"))
  assert [p.rsplit("/", 1)[1] for p in paths] == [
      "eval_0.png", "eval_1.png", "eval_0.png"]
  for path, image in zip(paths, [*images, grey[0]]):
    decoded = np.asarray(Image.open(path), np.float32) / 255.0
    decoded = decoded.reshape(image.shape)
    assert np.abs(decoded - image).max() <= 0.5 / 255.0 + 1e-6
