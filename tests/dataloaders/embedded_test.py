"""Tests for the embedded hierarchical image generator."""

import numpy as np
import tensorflow as tf

from kc_keras.configs.data import EmbeddedConfig
from kc_keras.dataloaders.sources import embedded


def _source(**kw):
  defaults = dict(num_verticals=4, num_classes=20, image_size=16,
                  train_examples_per_class=3, eval_examples_per_class=2)
  defaults.update(kw)
  return embedded.EmbeddedSource(EmbeddedConfig(**defaults))


def _images(source, split):
  ds = source.raw_dataset(split).map(source.decode)
  return list(ds.as_numpy_iterator())


class VerticalSizesTest(tf.test.TestCase):

  def test_uniform(self):
    self.assertAllEqual(embedded.vertical_sizes(10, 3, "uniform", 0), [4, 3, 3])

  def test_uneven_sums_and_is_seeded(self):
    sizes = embedded.vertical_sizes(1000, 10, "uneven", 3)
    self.assertEqual(sizes.sum(), 1000)
    self.assertGreaterEqual(sizes.min(), 1)
    self.assertGreater(sizes.max(), 4 * sizes.min())
    self.assertAllEqual(sizes, embedded.vertical_sizes(1000, 10, "uneven", 3))
    self.assertNotAllEqual(sizes, embedded.vertical_sizes(1000, 10, "uneven", 4))

  def test_bad(self):
    with self.assertRaisesRegex(ValueError, "num_verticals=5, num_classes=3"):
      embedded.vertical_sizes(3, 5, "uniform", 0)


class EmbeddedSourceTest(tf.test.TestCase):

  def test_hierarchy_and_counts(self):
    s = _source()
    self.assertEqual(s.hierarchy.num_classes, 20)
    self.assertAllEqual(s.hierarchy.vertical_sizes, [5, 5, 5, 5])
    self.assertEqual(s.hierarchy.class_names[7], "v1/c07")
    self.assertEqual(s.num_examples("train"), 60)
    self.assertEqual(s.num_examples("eval"), 40)
    self.assertEqual(s.image_shape, (16, 16, 3))
    with self.assertRaisesRegex(ValueError, "unknown split 'test'"):
      s.raw_dataset("test")

  def test_elements(self):
    s = _source()
    train = _images(s, "train")
    self.assertLen(train, 60)
    first = train[21]
    self.assertEqual(first["example_id"], 21)
    self.assertAllEqual(first["label_ids"], [1])
    self.assertEqual(first["image"].shape, (16, 16, 3))
    self.assertEqual(first["image"].dtype, np.float32)
    self.assertBetween(float(first["image"].min()), 0.0, 1.0)
    self.assertBetween(float(first["image"].max()), 0.0, 1.0)
    self.assertCountEqual(first.keys(), ["example_id", "label_ids", "image"])
    for v in range(4):
      cls = int(s.hierarchy.classes_of(v)[0])
      self.assertEqual(int(s.vertical_of(cls)), v)

  def test_determinism_and_seed(self):
    a = np.stack([e["image"] for e in _images(_source(), "train")])
    b = np.stack([e["image"] for e in _images(_source(), "train")])
    c = np.stack([e["image"] for e in _images(_source(seed=1), "train")])
    self.assertAllEqual(a, b)
    self.assertGreater(np.abs(a - c).mean(), 0.05)
    self.assertNotEqual(_source().fingerprint("train"), _source(seed=1).fingerprint("train"))
    self.assertNotEqual(_source().fingerprint("train"), _source().fingerprint("eval"))

  def test_train_eval_disjoint(self):
    s = _source()
    train, ev = _images(s, "train"), _images(s, "eval")
    self.assertEmpty({e["example_id"] for e in train} & {e["example_id"] for e in ev})
    train_px = {e["image"].tobytes() for e in train}
    self.assertEmpty(train_px & {e["image"].tobytes() for e in ev})
    # The eval instance index range continues the train one.
    self.assertAllClose(s.render(3, 3), ev[3]["image"])

  def test_100k_classes(self):
    s = embedded.EmbeddedSource(EmbeddedConfig(
        num_verticals=20, num_classes=100_000, vertical_sizes="uneven"))
    self.assertEqual(int(s.vertical_of(99_999)), 19)
    self.assertEqual(s.hierarchy.class_to_vertical[99_999], 19)
    ds = s.raw_dataset("train").skip(99_999).take(1).map(s.decode)
    element = next(iter(ds))
    self.assertAllEqual(element["label_ids"], [99_999])
    self.assertEqual(element["image"].shape, (32, 32, 3))
    self.assertNotAllClose(s.render(99_999, 0), s.render(99_998, 0))

  def test_vertical_structure(self):
    """Images of one vertical are closer than images of different verticals."""
    s = _source(num_verticals=5, num_classes=25, image_size=32)
    x = np.stack([s.render(c, i).numpy().ravel() for c in range(25) for i in range(2)])
    vert = np.repeat(s.hierarchy.class_to_vertical, 2)
    cls = np.repeat(np.arange(25), 2)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).mean(-1))
    same_v = (vert[:, None] == vert[None]) & (cls[:, None] != cls[None])
    same_c = (cls[:, None] == cls[None]) & ~np.eye(len(x), dtype=bool)
    across = vert[:, None] != vert[None]
    within, between, instance = d[same_v].mean(), d[across].mean(), d[same_c].mean()
    self.assertLess(within, 0.85 * between)
    self.assertLess(instance, within)


if __name__ == "__main__":
  tf.test.main()
