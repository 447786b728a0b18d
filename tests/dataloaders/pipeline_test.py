"""Tests for kc_keras.dataloaders.pipeline."""

import os

import numpy as np
import tensorflow as tf

from kc_keras.configs.data import DataConfig
from kc_keras.dataloaders import pipeline
from kc_keras.dataloaders.sources import embedded


def _config(**kw):
  cfg = DataConfig()
  cfg.override({"embedded": dict(num_verticals=3, num_classes=9, image_size=8,
                                 train_examples_per_class=2, eval_examples_per_class=1),
                "shuffle_buffer_size": 32}, is_strict=True)
  cfg.override(kw, is_strict=True)
  return cfg


def _source(cfg):
  return embedded.EmbeddedSource(cfg.embedded, cfg.max_labels_per_example)


def _take(ds, n):
  return [(x.numpy(), {k: v.numpy() for k, v in f.items()}) for x, f in ds.take(n)]


class PipelineTest(tf.test.TestCase):

  def test_eval_batches(self):
    cfg = _config(max_labels_per_example=2)
    src = _source(cfg)
    batches = _take(pipeline.build_dataset(src, "eval", cfg, training=False,
                                           global_batch_size=4), 10)
    self.assertEqual([b[0].shape[0] for b in batches], [4, 4, 1])
    images, features = batches[0]
    self.assertEqual(images.shape, (4, 8, 8, 3))
    self.assertEqual(images.dtype, np.float32)
    self.assertEqual(features["label_ids"].dtype, np.int32)
    self.assertEqual(features["example_id"].dtype, np.int64)
    self.assertAllEqual(features["label_ids"], [[0, -1], [1, -1], [2, -1], [3, -1]])
    self.assertCountEqual(features.keys(), ["label_ids", "example_id"])
    self.assertAllEqual(features["example_id"], [18, 19, 20, 21])

  def test_training_repeats_shuffles_and_drops_remainder(self):
    cfg = _config(shuffle_buffer_size=6)
    src = _source(cfg)
    ds = pipeline.build_dataset(src, "train", cfg, training=True, global_batch_size=6)
    batches = _take(ds, 6)  # 2 epochs of 18 examples
    self.assertTrue(all(b[0].shape == (6, 8, 8, 3) for b in batches))
    ids = np.concatenate([b[1]["example_id"] for b in batches])
    # Repeat-then-shuffle: every id twice in 2 epochs, up to buffer blending.
    counts = np.bincount(ids, minlength=18)
    self.assertBetween(counts.min(), 1, 2)
    self.assertBetween(counts.max(), 2, 3)
    self.assertNotAllEqual(ids[:18], np.arange(18))
    self.assertNotAllEqual(ids[:18], ids[18:])
    again = _take(pipeline.build_dataset(src, "train", cfg, training=True,
                                         global_batch_size=6), 6)
    for (x1, f1), (x2, f2) in zip(batches, again):
      self.assertAllEqual(x1, x2)
      self.assertAllEqual(f1["example_id"], f2["example_id"])
    other_cfg = _config(seed=5, shuffle_buffer_size=6)
    other = _take(pipeline.build_dataset(src, "train", other_cfg, training=True,
                                         global_batch_size=6), 3)
    self.assertNotAllEqual(np.concatenate([b[1]["example_id"] for b in other]), ids[:18])

  def test_start_record_passes_over_raw_records(self):
    cfg = _config()
    src = _source(cfg)
    whole = _take(pipeline.build_dataset(src, "train", cfg, training=False,
                                         global_batch_size=4), 10)
    rest = _take(pipeline.build_dataset(src, "train", cfg, training=False,
                                        global_batch_size=4, start_record=7), 10)
    self.assertAllEqual(np.concatenate([f["example_id"] for _, f in rest]),
                        np.arange(7, 18))
    self.assertAllEqual(rest[0][0][0], whole[1][0][3])  # record 7, same image
    with self.assertRaisesRegex(ValueError, "start_record is for a single"):
      pipeline.build_dataset(src, "train", cfg, training=True,
                             global_batch_size=4, start_record=7)

  def test_sharding_and_per_replica_batch(self):
    cfg = _config()
    src = _source(cfg)
    seen = []
    for pid in range(2):
      ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid,
                                       num_replicas_in_sync=2)
      batches = _take(pipeline.build_dataset(src, "train", cfg, training=False,
                                             global_batch_size=4, input_context=ctx), 20)
      self.assertEqual(batches[0][0].shape[0], 2)
      seen.append(np.concatenate([b[1]["example_id"] for b in batches]))
    self.assertAllEqual(seen[0], np.arange(0, 18, 2))
    self.assertAllEqual(seen[1], np.arange(1, 18, 2))

  def test_vertical_filter_local_ids(self):
    cfg = _config()
    src = _source(cfg)  # verticals: classes 0-2, 3-5, 6-8
    batches = _take(pipeline.build_dataset(src, "eval", cfg, training=False,
                                           global_batch_size=16, vertical=1), 5)
    f = batches[0][1]
    self.assertAllEqual(f["example_id"], [21, 22, 23])
    self.assertAllEqual(f["label_ids"][:, 0], [0, 1, 2])

  def test_vertical_filter_negatives(self):
    cfg = _config()
    cfg.override({"embedded": {"train_examples_per_class": 40}})
    src = _source(cfg)
    def count(fraction):
      ds = pipeline.build_dataset(src, "train", cfg, training=False,
                                  global_batch_size=1000, vertical=0,
                                  negatives_fraction=fraction)
      return np.concatenate([f["label_ids"][:, 0] for _, f in _take(ds, 10)])
    labels_all = count(0.5)
    self.assertEqual((labels_all >= 0).sum(), 120)
    negatives = (labels_all == -1).sum()
    self.assertBetween(negatives, 240 * 0.4, 240 * 0.6)
    self.assertAllEqual(labels_all, count(0.5))  # seeded
    self.assertEqual((count(0.0) == -1).sum(), 0)

  def test_extra_zip_and_mismatch(self):
    cfg = _config()
    src = _source(cfg)
    n = src.num_examples("eval")
    extra = tf.data.Dataset.from_tensor_slices({
        "example_id": np.arange(18, 18 + n, dtype=np.int64),
        "target_probs": np.arange(n, dtype=np.float32)[:, None] * [1.0, 0.5]})
    ds = pipeline.build_dataset(src, "eval", cfg, training=False, global_batch_size=9,
                                extra=extra)
    _, f = _take(ds, 1)[0]
    self.assertAllClose(f["target_probs"][:, 1], np.arange(9) * 0.5)
    bad = tf.data.Dataset.from_tensor_slices({
        "example_id": np.arange(n, dtype=np.int64)[::-1].copy(),
        "target_probs": np.zeros([n], np.float32)})
    ds = pipeline.build_dataset(src, "eval", cfg, training=False, global_batch_size=9,
                                extra=bad)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "example_id differs"):
      _take(ds, 1)
    with self.assertRaisesRegex(ValueError, "repeats keys of the source: \\['label_ids'\\]"):
      pipeline.build_dataset(src, "eval", cfg, training=False, global_batch_size=9,
                             extra=extra.map(lambda e: {**e, "label_ids": e["example_id"]}))
    with self.assertRaisesRegex(ValueError, "extra has 3 elements"):
      pipeline.build_dataset(src, "eval", cfg, training=False, global_batch_size=9,
                             extra=extra.take(3))

  def test_augmentation_reproducible_and_checkpointable(self):
    aug = {"augmentation": {"translation": 0.2, "rotation": 0.1, "zoom": 0.1,
                            "flip": "horizontal"}}
    cfg = _config(**aug)
    src = _source(cfg)
    plain = _take(pipeline.build_dataset(src, "train", _config(), training=True,
                                         global_batch_size=6), 2)
    make = lambda: pipeline.build_dataset(src, "train", cfg, training=True,
                                          global_batch_size=6)
    first = _take(make(), 6)
    second = _take(make(), 6)
    for (x1, f1), (x2, _) in zip(first, second):
      self.assertAllEqual(x1, x2)
    self.assertGreater(np.abs(first[0][0] - plain[0][0]).mean(), 1e-3)
    # Epoch 2 sees the same example with a different augmentation.
    by_id = {}
    for x, f in first:
      for img, eid in zip(x, f["example_id"]):
        by_id.setdefault(int(eid), []).append(img)
    pairs = [v[:2] for v in by_id.values() if len(v) >= 2]
    self.assertGreater(len(pairs), 10)
    self.assertGreater(np.mean([np.abs(a - b).mean() for a, b in pairs]), 1e-3)
    # Restoring an iterator checkpoint continues the same stream.
    it = iter(make())
    for _ in range(2):
      next(it)
    ckpt = tf.train.Checkpoint(iterator=it)
    path = ckpt.write(os.path.join(self.get_temp_dir(), "it"))
    expected = [next(it)[0].numpy() for _ in range(3)]
    it2 = iter(make())
    tf.train.Checkpoint(iterator=it2).read(path).assert_consumed()
    for want in expected:
      self.assertAllEqual(next(it2)[0].numpy(), want)
    self.assertAllEqual(expected[0], first[2][0])

  def test_empty_vertical_is_error_when_training(self):
    cfg = _config()
    src = _source(cfg)
    # A split without any example (cardinality unknown after the filter).
    empty = src.raw_dataset("eval").filter(lambda e: e["example_id"] < 0)
    src.raw_dataset = lambda split: empty
    with self.assertRaisesRegex(ValueError, "split 'eval' has no examples in vertical 0"):
      pipeline.build_dataset(src, "eval", cfg, training=True, global_batch_size=2,
                             vertical=0)

  def test_cache_decoded_same_stream(self):
    a = _take(pipeline.build_dataset(_source(_config()), "train", _config(), training=True,
                                     global_batch_size=6), 4)
    cfg = _config(cache_decoded=True)
    b = _take(pipeline.build_dataset(_source(cfg), "train", cfg, training=True,
                                     global_batch_size=6), 4)
    for (x1, _), (x2, _) in zip(a, b):
      self.assertAllEqual(x1, x2)


if __name__ == "__main__":
  tf.test.main()
