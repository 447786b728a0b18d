"""Corrupt images and bad labels in folder and TFRecord sources: named or skipped."""

import os

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from kc_keras.configs import data as data_cfg
from kc_keras.dataloaders import data_errors
from kc_keras.dataloaders import factory
from kc_keras.dataloaders import pipeline
from kc_keras.dataloaders.hierarchy import Hierarchy
from kc_keras.dataloaders.sources import tfrecord

_SIZE = 6
_CLASSES = (("birds", "crow"), ("birds", "wren"), ("cars", "audi"))


def _png(value):
  return tf.io.encode_png(
      tf.fill([_SIZE, _SIZE, 3], tf.constant(value, tf.uint8))).numpy()


def _jpeg(value):
  return tf.io.encode_jpeg(
      tf.fill([_SIZE, _SIZE, 3], tf.constant(value, tf.uint8))).numpy()


def _bad_images():
  """A JPEG cut in half, a PNG cut in half, and random bytes, by file name."""
  jpeg, png = _jpeg(50), _png(60)
  rng = np.random.RandomState(0)
  return {"cut.jpg": jpeg[:len(jpeg) // 2], "cut.png": png[:len(png) // 2],
          "noise.png": rng.bytes(64)}


def _folder_config(root, on_decode_error):
  """Two good images per class, plus the three bad ones under `wren`."""
  for v, c in _CLASSES:
    os.makedirs(os.path.join(root, v, c), exist_ok=True)
    for i in range(2):
      with open(os.path.join(root, v, c, f"good{i}.png"), "wb") as f:
        f.write(_png(100 + i))
  for name, data in _bad_images().items():
    with open(os.path.join(root, "birds", "wren", name), "wb") as f:
      f.write(data)
  cfg = data_cfg.DataConfig(source="folder", on_decode_error=on_decode_error)
  cfg.override({"folder": {"train_dir": root, "image_size": 4}})
  return cfg


def _tfrecord_config(root, on_decode_error, labels=(0, 1, 2, 0, 1, 2)):
  """Records `good, bad, good, bad, good, bad` (labels as given) in one file."""
  hfile = os.path.join(root, "h.json")
  Hierarchy(tuple(c for _, c in _CLASSES), ("birds", "cars"), (0, 0, 1)).save(
      hfile)
  bad = list(_bad_images().values())
  images = [_png(10), bad[0], _png(20), bad[1], _png(30), bad[2]]
  tfrecord.write_tfrecord(os.path.join(root, "train-0.tfrecord"),
                          zip(images, labels))
  cfg = data_cfg.DataConfig(source="tfrecord", on_decode_error=on_decode_error)
  cfg.override({"tfrecord": {"train_pattern": os.path.join(root, "train-*"),
                             "hierarchy_file": hfile, "image_size": 4}})
  return cfg


def _read_all(cfg, counter=None, training=False, batch=2):
  src = factory.build_source(cfg)
  ds = pipeline.build_dataset(src, "train", cfg, training=training,
                              global_batch_size=batch, skip_counter=counter)
  with data_errors.named_data_errors("the test pipeline"):
    return [f["example_id"].numpy().tolist() for _, f in ds]


class DecodeErrorTest(tf.test.TestCase, parameterized.TestCase):

  def test_folder_error_names_the_file(self):
    root = self.create_tempdir().full_path
    cfg = _folder_config(root, "error")
    # Sorted order: crow (2 good), then wren's cut.jpg is the first bad one.
    with self.assertRaisesRegex(data_errors.DataError,
                                r"could not decode.*birds/wren/cut\.jpg"):
      _read_all(cfg)

  def test_folder_skip_drops_and_counts(self):
    root = self.create_tempdir().full_path
    cfg = _folder_config(root, "skip")
    counter = data_errors.SkipCounter()
    batches = _read_all(cfg, counter, batch=3)
    # Files: crow 0-1, wren cut.jpg 2, cut.png 3, good0 4, good1 5,
    # noise.png 6, audi 7-8.
    self.assertEqual(sum(batches, []), [0, 1, 4, 5, 7, 8])
    self.assertEqual(counter.value(), 3)

  def test_tfrecord_error_names_file_and_record(self):
    root = self.create_tempdir().full_path
    cfg = _tfrecord_config(root, "error")
    with self.assertRaisesRegex(
        data_errors.DataError, r"train-0\.tfrecord record 1\b"):
      _read_all(cfg)

  def test_tfrecord_skip_drops_and_counts(self):
    root = self.create_tempdir().full_path
    cfg = _tfrecord_config(root, "skip")
    counter = data_errors.SkipCounter()
    self.assertEqual(sum(_read_all(cfg, counter), []), [0, 2, 4])
    self.assertEqual(counter.value(), 3)

  def test_groups_keep_order_across_good_and_bad_groups(self):
    # More records than one decoding group: groups 0 and 2 hold only good
    # records (decoded whole), group 1 holds a bad one (decoded record by
    # record); every good record comes out, in input order, with its pixels.
    root = self.create_tempdir().full_path
    hfile = os.path.join(root, "h.json")
    Hierarchy(tuple(c for _, c in _CLASSES), ("birds", "cars"),
              (0, 0, 1)).save(hfile)
    n = 2 * data_errors._GROUP_SIZE + 5
    bad_at = data_errors._GROUP_SIZE + 7
    images = [_png(i % 250) for i in range(n)]
    images[bad_at] = _bad_images()["noise.png"]
    tfrecord.write_tfrecord(os.path.join(root, "train-0.tfrecord"),
                            zip(images, [i % 3 for i in range(n)]))
    cfg = data_cfg.DataConfig(source="tfrecord", on_decode_error="skip")
    cfg.override({"tfrecord": {"train_pattern": os.path.join(root, "train-*"),
                               "hierarchy_file": hfile, "image_size": _SIZE}})
    counter = data_errors.SkipCounter()
    src = factory.build_source(cfg)
    ds = pipeline.build_dataset(src, "train", cfg, training=False,
                                global_batch_size=n, skip_counter=counter)
    images_out, features = next(iter(ds))
    ids = features["example_id"].numpy().tolist()
    self.assertEqual(ids, [i for i in range(n) if i != bad_at])
    self.assertEqual(counter.value(), 1)
    self.assertAllClose(images_out[:, 0, 0, 0].numpy() * 255.0,
                        [i % 250 for i in ids], atol=0.5)
    with self.assertRaisesRegex(data_errors.DataError,
                                rf"train-0\.tfrecord record {bad_at}\b"):
      cfg.on_decode_error = "error"
      _read_all(cfg, batch=n)

  def test_skip_while_training_keeps_full_batches(self):
    root = self.create_tempdir().full_path
    cfg = _tfrecord_config(root, "skip")
    src = factory.build_source(cfg)
    ds = pipeline.build_dataset(src, "train", cfg, training=True,
                                global_batch_size=2)
    for _, features in ds.take(4):
      # Only the good records (even ids) ever reach a batch.
      self.assertAllEqual(features["example_id"].numpy() % 2, [0, 0])

  def test_tfrecord_label_outside_hierarchy_names_record_and_id(self):
    root = self.create_tempdir().full_path
    cfg = _tfrecord_config(root, "skip", labels=(0, 1, 2, 0, 9, 2))
    with self.assertRaisesRegex(
        data_errors.DataError,
        r"train-0\.tfrecord record 4 has ids outside 0\.\.2.*: 9"):
      _read_all(cfg)

  def test_other_errors_pass_through(self):
    with self.assertRaises(tf.errors.InvalidArgumentError):
      with data_errors.named_data_errors():
        tf.debugging.Assert(False, ["not ours"])

  def test_config_validates_policy(self):
    cfg = data_cfg.DataConfig(on_decode_error="ignore")
    with self.assertRaisesRegex(ValueError, "data.on_decode_error='ignore'"):
      cfg.validate()
    self.assertEqual(data_cfg.ON_DECODE_ERROR, data_errors.ON_DECODE_ERROR)


if __name__ == "__main__":
  tf.test.main()
