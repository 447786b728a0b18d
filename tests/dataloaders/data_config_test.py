"""Tests for kc_keras.configs.data and kc_keras.dataloaders.factory."""

from absl.testing import parameterized
import tensorflow as tf

from kc_keras.configs.data import DataConfig
from kc_keras.dataloaders import factory
from kc_keras.dataloaders.sources import embedded


class DataConfigTest(tf.test.TestCase, parameterized.TestCase):

  def test_defaults_valid(self):
    cfg = DataConfig()
    cfg.validate()
    self.assertEqual(cfg.source, "embedded")
    self.assertEqual(cfg.omniglot.image_size, 28)
    self.assertEqual(cfg.omniglot.data_dir, "../shared/data/omniglot")
    self.assertEqual(tuple(cfg.omniglot.train_drawers), tuple(range(15)))
    self.assertEqual(cfg.image_shape(), (32, 32, 3))
    self.assertFalse(cfg.augmentation.enabled)

  @parameterized.parameters(
      ({"source": "imagenet"}, r"data\.source='imagenet'"),
      ({"embedded": {"num_classes": 3}}, r"data\.embedded\.num_classes=3"),
      ({"embedded": {"vertical_sizes": "zipf"}}, r"data\.embedded\.vertical_sizes"),
      ({"embedded": {"channels": 2}}, r"data\.embedded\.channels=2"),
      ({"source": "omniglot", "omniglot": {"eval_drawers": [14, 15]}},
       r"data\.omniglot\.train_drawers and data\.omniglot\.eval_drawers share drawers \[14\]"),
      ({"source": "omniglot", "omniglot": {"train_drawers": [0, 25]}},
       r"data\.omniglot\.train_drawers has drawer ids outside 0..19: \[25\]"),
      ({"source": "folder"}, r"data\.folder\.train_dir"),
      ({"source": "tfrecord"}, r"data\.tfrecord\.hierarchy_file"),
      ({"source": "tfds"}, r"data\.tfds\.name"),
      ({"augmentation": {"rotation": 1.5}}, r"data\.augmentation\.rotation=1\.5"),
      ({"augmentation": {"flip": "diagonal"}}, r"data\.augmentation\.flip='diagonal'"),
      ({"max_labels_per_example": 0}, r"data\.max_labels_per_example=0"),
      ({"num_parallel_calls": 0}, r"data\.num_parallel_calls=0"),
  )
  def test_validate_names_key_path(self, override, pattern):
    cfg = DataConfig()
    cfg.override(override, is_strict=True)
    with self.assertRaisesRegex(ValueError, pattern):
      cfg.validate()

  def test_typo_in_override_is_error(self):
    with self.assertRaises(KeyError):
      DataConfig().override({"embeded": {"seed": 1}}, is_strict=True)

  def test_factory_embedded(self):
    cfg = DataConfig()
    cfg.override({"max_labels_per_example": 3, "embedded": {"num_classes": 30}})
    src = factory.build_source(cfg)
    self.assertIsInstance(src, embedded.EmbeddedSource)
    self.assertEqual(src.hierarchy.num_classes, 30)
    element = next(iter(src.raw_dataset("train")))
    self.assertAllEqual(element["label_ids"], [0, -1, -1])

  def test_factory_rejects_invalid(self):
    cfg = DataConfig()
    cfg.override({"source": "nope"})
    with self.assertRaisesRegex(ValueError, "data.source='nope'"):
      factory.build_source(cfg)


if __name__ == "__main__":
  tf.test.main()
