"""Tests for the Omniglot source: real files (via `omniglot_path`) and error paths."""

import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from kc_keras.configs.data import OmniglotConfig
from kc_keras.dataloaders.sources import omniglot


class OmniglotErrorsTest(tf.test.TestCase):

  def test_checksum_mismatch_names_file(self):
    root = self.get_temp_dir()
    for name in omniglot.FILES:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"not an npz")
    with open(os.path.join(root, omniglot.FILES[1] + ".sha256"), "w") as f:
      f.write("0" * 64 + "  " + omniglot.FILES[1] + "\n")
    with self.assertRaisesRegex(omniglot.OmniglotError,
                                "checksum mismatch for .*images_evaluation.npz"):
      omniglot.verify_checksums(root)

  def test_missing_and_bad_ranges(self):
    root = self.get_temp_dir()
    with self.assertRaisesRegex(omniglot.OmniglotError, "not found: .*alphabet_ranges.tsv"):
      omniglot.OmniglotSource(OmniglotConfig(data_dir=root))
    path = os.path.join(root, omniglot.RANGES_FILE)
    with open(path, "w") as f:
      f.write("1\t3\tA\n5\t9\tB\n")
    with self.assertRaisesRegex(omniglot.OmniglotError, ":2: range 5..9 for 'B'"):
      omniglot.read_alphabet_ranges(path)


@pytest.mark.omniglot
@pytest.mark.slow
class OmniglotRealTest(tf.test.TestCase):

  @pytest.fixture(autouse=True)
  def _path(self, omniglot_path):
    self.path = omniglot_path

  def test_real_files(self):
    src = omniglot.OmniglotSource(OmniglotConfig(data_dir=str(self.path)))
    h = src.hierarchy
    self.assertEqual(h.num_classes, 1623)
    self.assertEqual(h.num_verticals, 50)
    self.assertEqual(int(h.vertical_sizes.min()), 14)
    self.assertEqual(int(h.vertical_sizes.max()), 55)
    self.assertEqual(h.class_names[0], "Arcadian/character01")
    self.assertEqual(h.vertical_names[0], "Arcadian")
    self.assertEqual(src.num_examples("train"), 24_345)
    self.assertEqual(src.num_examples("eval"), 8_115)
    self.assertEqual(src.image_shape, (28, 28, 1))
    train = src.raw_dataset("train")
    self.assertEqual(int(train.cardinality()), 24_345)
    first = [src.decode(e) for e in train.take(16)]
    self.assertAllEqual([int(e["example_id"]) for e in first[:16]],
                        list(range(15)) + [20])
    self.assertAllEqual([int(e["label_ids"][0]) for e in first], [0] * 15 + [1])
    image = first[0]["image"].numpy()
    self.assertEqual(image.shape, (28, 28, 1))
    self.assertEqual(image.dtype, np.float32)
    # Ink polarity: ink (1.0) is the minority, paper (0.0) the background.
    ink = src.images().mean() / 255.0
    self.assertBetween(ink, 0.04, 0.15)
    self.assertLess(float(image[0, 0, 0]), 0.05)
    self.assertGreater(float(image.max()), 0.8)
    ev = list(src.raw_dataset("eval").take(5).as_numpy_iterator())
    self.assertAllEqual([e["example_id"] for e in ev], [15, 16, 17, 18, 19])
    self.assertNotEqual(src.fingerprint("train"), src.fingerprint("eval"))

  def test_checksums_and_copy(self):
    sums = omniglot.verify_checksums(str(self.path))
    self.assertCountEqual(sums, omniglot.FILES)
    # A corrupted copy fails naming the file.
    copy = self.get_temp_dir()
    for name in os.listdir(self.path):
      shutil.copy(os.path.join(self.path, name), copy)
    os.chmod(os.path.join(copy, omniglot.FILES[0]), 0o644)
    with open(os.path.join(copy, omniglot.FILES[0]), "ab") as f:
      f.write(b"x")
    with self.assertRaisesRegex(omniglot.OmniglotError, "images_background.npz"):
      omniglot.OmniglotSource(OmniglotConfig(data_dir=copy))


if __name__ == "__main__":
  tf.test.main()
