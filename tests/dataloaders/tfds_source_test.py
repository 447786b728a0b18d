"""Tests for the TFDS source with a tiny omniglot-shaped builder prepared locally."""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from kc_keras.configs.data import TFDSConfig
from kc_keras.dataloaders.hierarchy import HierarchyError
from kc_keras.dataloaders.sources import tfds as tfds_source

_CLASSES = ["a1", "a2", "b1"]
_VERTICALS = ["alpha", "beta"]
_C2V = [0, 0, 1]


class KcToyGlyphs(tfds.core.GeneratorBasedBuilder):
  """Omniglot-shaped toy data: image, label, alphabet."""

  VERSION = tfds.core.Version("1.0.0")
  BAD_VERTICAL = False

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(6, 6, 3)),
        "label": tfds.features.ClassLabel(names=_CLASSES),
        "alphabet": tfds.features.ClassLabel(names=_VERTICALS),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(range(6)),
            "test": self._generate_examples(range(6, 9))}

  def _generate_examples(self, indices):
    for i in indices:
      label = i % 3
      vertical = _C2V[label]
      if self.BAD_VERTICAL and i == 4:
        vertical = 1
      yield i, {"image": np.full((6, 6, 3), 20 * i, np.uint8), "label": label,
                "alphabet": vertical}


class KcToyGlyphsBad(KcToyGlyphs):
  """Same, with class 'a2' once filed under 'beta'."""

  BAD_VERTICAL = True


class TFDSSourceTest(tf.test.TestCase):

  def test_end_to_end(self):
    data_dir = self.get_temp_dir()
    builder = KcToyGlyphs(data_dir=data_dir)
    builder.download_and_prepare()
    # The prepared builder is passed in: reloading it by name needs a
    # tensorflow-datasets/protobuf pair that can read dataset_info.json.
    src = tfds_source.TFDSSource(TFDSConfig(name="kc_toy_glyphs", data_dir=data_dir,
                                            image_size=3, channels=1), builder=builder)
    h = src.hierarchy
    self.assertEqual(h.class_names, tuple(_CLASSES))
    self.assertEqual(h.vertical_names, tuple(_VERTICALS))
    self.assertEqual(h.class_to_vertical, tuple(_C2V))
    self.assertEqual(src.num_examples("train"), 6)
    self.assertEqual(src.num_examples("eval"), 3)
    elements = list(src.raw_dataset("train").map(src.decode).as_numpy_iterator())
    self.assertAllEqual([e["example_id"] for e in elements], range(6))
    self.assertCountEqual([e["label_ids"][0] for e in elements], [0, 0, 1, 1, 2, 2])
    for e in elements:
      self.assertEqual(e["image"].shape, (3, 3, 1))
    # Order is deterministic across reads.
    again = list(src.raw_dataset("train").as_numpy_iterator())
    self.assertAllEqual([e["label_ids"] for e in again], [e["label_ids"] for e in elements])
    values = sorted(float(e["image"][0, 0, 0]) for e in elements)
    self.assertAllClose(values, np.arange(6) * 20 / 255.0, atol=1e-3)
    self.assertNotEqual(src.fingerprint("train"), src.fingerprint("eval"))

  def test_inconsistent_vertical_names_class(self):
    data_dir = self.get_temp_dir()
    builder = KcToyGlyphsBad(data_dir=data_dir)
    builder.download_and_prepare()
    with self.assertRaisesRegex(
        HierarchyError,
        r"class 'a2' \(id 1\) appears with verticals '(alpha|beta)' and '(alpha|beta)'"):
      tfds_source.TFDSSource(TFDSConfig(name="kc_toy_glyphs_bad", data_dir=data_dir),
                             builder=builder)

  def test_by_name(self):
    """Loads the prepared toy data by name, as a user's config would."""
    data_dir = self.get_temp_dir()
    KcToyGlyphs(data_dir=data_dir).download_and_prepare()
    src = tfds_source.TFDSSource(TFDSConfig(name="kc_toy_glyphs", data_dir=data_dir))
    self.assertEqual(src.hierarchy.class_to_vertical, tuple(_C2V))

  def test_not_prepared(self):
    with self.assertRaisesRegex(ValueError, "not prepared"):
      tfds_source.TFDSSource(TFDSConfig(name="kc_toy_glyphs",
                                        data_dir=self.get_temp_dir() + "/empty"))


if __name__ == "__main__":
  tf.test.main()
