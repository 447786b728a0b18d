"""Tests for the folder and TFRecord sources on tiny local images."""

import os

import numpy as np
import tensorflow as tf

from kc_keras.configs.data import DataConfig, FolderConfig, TFRecordConfig
from kc_keras.dataloaders import factory
from kc_keras.dataloaders import pipeline
from kc_keras.dataloaders.hierarchy import Hierarchy, HierarchyError
from kc_keras.dataloaders.sources import folder, tfrecord

# (vertical, class) -> grey value used for every pixel of its images.
_TREE = {("birds", "crow"): 40, ("birds", "wren"): 80, ("cars", "audi"): 160}


def _png(value, size=6, channels=3):
  return tf.io.encode_png(tf.fill([size, size, channels], tf.constant(value, tf.uint8))).numpy()


def _jpeg(value, size=6):
  return tf.io.encode_jpeg(tf.fill([size, size, 3], tf.constant(value, tf.uint8)),
                           quality=100).numpy()


def _write_tree(root, per_class=2):
  for (v, c), value in _TREE.items():
    os.makedirs(os.path.join(root, v, c), exist_ok=True)
    for i in range(per_class):
      data = _png(value) if i % 2 == 0 else _jpeg(value)
      ext = "png" if i % 2 == 0 else "jpg"
      with open(os.path.join(root, v, c, f"img{i}.{ext}"), "wb") as f:
        f.write(data)


class FolderSourceTest(tf.test.TestCase):

  def test_end_to_end(self):
    root = self.get_temp_dir()
    _write_tree(os.path.join(root, "train"), per_class=2)
    _write_tree(os.path.join(root, "eval"), per_class=1)
    cfg = DataConfig(source="folder")
    cfg.override({"folder": {"train_dir": os.path.join(root, "train"),
                             "eval_dir": os.path.join(root, "eval"), "image_size": 4}})
    src = factory.build_source(cfg)
    self.assertIsInstance(src, folder.FolderSource)
    self.assertEqual(src.hierarchy.class_names, ("crow", "wren", "audi"))
    self.assertEqual(src.num_examples("train"), 6)
    self.assertEqual(src.num_examples("eval"), 3)
    images, features = next(iter(pipeline.build_dataset(
        src, "train", cfg, training=False, global_batch_size=6)))
    self.assertEqual(images.shape, (6, 4, 4, 3))
    self.assertAllEqual(features["label_ids"][:, 0], [0, 0, 1, 1, 2, 2])
    expected = np.repeat([40, 40, 80, 80, 160, 160], 48).reshape(6, 4, 4, 3) / 255.0
    self.assertAllClose(images, expected, atol=2 / 255)
    self.assertLen(src.fingerprint("train"), 64)
    self.assertNotEqual(src.fingerprint("train"), src.fingerprint("eval"))

  def test_unknown_eval_class(self):
    root = self.get_temp_dir()
    _write_tree(os.path.join(root, "train"))
    os.makedirs(os.path.join(root, "eval", "birds", "owl"))
    with open(os.path.join(root, "eval", "birds", "owl", "a.png"), "wb") as f:
      f.write(_png(1))
    # Refused when the source is built, before any training.
    with self.assertRaisesRegex(HierarchyError, "class 'owl'.*not in the hierarchy"):
      folder.FolderSource(FolderConfig(train_dir=os.path.join(root, "train"),
                                       eval_dir=os.path.join(root, "eval")))

  def test_hierarchy_file_vertical_mismatch(self):
    root = self.get_temp_dir()
    _write_tree(os.path.join(root, "train"))
    hfile = os.path.join(root, "h.json")
    Hierarchy(("crow", "wren", "audi"), ("birds", "cars"), (0, 1, 1)).save(hfile)
    with self.assertRaisesRegex(HierarchyError, "class 'wren' is under vertical 'birds'"):
      folder.FolderSource(FolderConfig(train_dir=os.path.join(root, "train"),
                                       hierarchy_file=hfile))

  def test_hidden_folders_and_files_are_not_classes_or_images(self):
    root = self.get_temp_dir()
    train = os.path.join(root, "train")
    _write_tree(train)
    for junk in (os.path.join(train, "birds", ".ipynb_checkpoints"),
                 os.path.join(train, ".git", "objects")):
      os.makedirs(junk)
      with open(os.path.join(junk, "x.png"), "wb") as f:
        f.write(_png(1))
    # A macOS resource fork: named like an image, not one.
    with open(os.path.join(train, "birds", "crow", "._img0.png"), "wb") as f:
      f.write(b"\0\5\26\7")
    src = folder.FolderSource(FolderConfig(train_dir=train))
    self.assertEqual(src.hierarchy.class_names, ("crow", "wren", "audi"))
    self.assertEqual(src.hierarchy.vertical_names, ("birds", "cars"))
    self.assertEqual([os.path.relpath(p, train) for p, _ in src.files("train")],
                     ["birds/crow/img0.png", "birds/crow/img1.jpg",
                      "birds/wren/img0.png", "birds/wren/img1.jpg",
                      "cars/audi/img0.png", "cars/audi/img1.jpg"])

  def test_class_folders_without_images_are_refused_naming_them(self):
    root = self.get_temp_dir()
    train = os.path.join(root, "train")
    _write_tree(train)
    os.makedirs(os.path.join(train, "cars", "bmw"))
    os.makedirs(os.path.join(train, "cars", "fiat"))
    for name in ("a.webp", "b.WEBP", "notes.txt"):
      with open(os.path.join(train, "cars", "fiat", name), "wb") as f:
        f.write(b"x")
    with self.assertRaisesRegex(
        HierarchyError,
        r"^2 class folder\(s\) of .*train \(train\) hold no "
        r"\.jpg/\.jpeg/\.png image: .*cars/bmw is empty; "
        r".*cars/fiat holds only 3 \.txt/\.webp file\(s\)\. Add images"):
      folder.FolderSource(FolderConfig(train_dir=train))

  def test_hierarchy_class_without_train_images_is_refused(self):
    root = self.get_temp_dir()
    _write_tree(os.path.join(root, "train"))
    hfile = os.path.join(root, "h4.json")
    Hierarchy(("crow", "wren", "audi", "bmw"), ("birds", "cars"),
              (0, 0, 1, 1)).save(hfile)
    with self.assertRaisesRegex(
        HierarchyError,
        r"^1 class\(es\) of the hierarchy have no folder of images under "
        r".*train: 'bmw'\."):
      folder.FolderSource(FolderConfig(train_dir=os.path.join(root, "train"),
                                       hierarchy_file=hfile))

  def test_eval_only_class_is_refused_before_training(self):
    root = self.get_temp_dir()
    _write_tree(os.path.join(root, "train"))
    _write_tree(os.path.join(root, "eval"), per_class=1)
    os.makedirs(os.path.join(root, "eval", "cars", "bmw"))
    with open(os.path.join(root, "eval", "cars", "bmw", "a.png"), "wb") as f:
      f.write(_png(1))
    with self.assertRaisesRegex(HierarchyError,
                                r"class 'bmw' in .*eval/cars/bmw \(eval\) is "
                                r"not in the hierarchy"):
      factory.build_source(DataConfig(source="folder", folder=FolderConfig(
          train_dir=os.path.join(root, "train"),
          eval_dir=os.path.join(root, "eval"))))


class TFRecordSourceTest(tf.test.TestCase):

  def _setup(self, labels):
    root = self.get_temp_dir()
    hfile = os.path.join(root, "h.csv")
    Hierarchy(("crow", "wren", "audi"), ("birds", "cars"), (0, 0, 1)).save(hfile)
    for shard, part in enumerate([labels[:2], labels[2:]]):
      tfrecord.write_tfrecord(os.path.join(root, f"train-{shard}.tfrecord"),
                              [(_png(10 * i + 10, channels=1), lab) for i, lab in part])
    return root, hfile

  def test_end_to_end_multi_label(self):
    root, hfile = self._setup([(0, 2), (1, [0, 1]), (2, [2]), (3, 1)])
    cfg = DataConfig(source="tfrecord", max_labels_per_example=2)
    cfg.override({"tfrecord": {"train_pattern": os.path.join(root, "train-*.tfrecord"),
                               "hierarchy_file": hfile, "image_size": 6, "channels": 1}})
    src = factory.build_source(cfg)
    self.assertEqual(src.num_examples("train"), 4)
    images, features = next(iter(pipeline.build_dataset(
        src, "train", cfg, training=False, global_batch_size=4)))
    self.assertAllEqual(features["example_id"], [0, 1, 2, 3])
    self.assertAllEqual(features["label_ids"], [[2, -1], [0, 1], [2, -1], [1, -1]])
    self.assertAllClose(images[:, 0, 0, 0], np.array([10, 20, 30, 40]) / 255.0)
    self.assertEqual(images.shape, (4, 6, 6, 1))

  def test_record_count_spans_batches_and_follows_a_rewritten_file(self):
    root = self.get_temp_dir()
    path = os.path.join(root, "many.tfrecord")
    # More records than one counting batch, and not a multiple of it.
    n = tfrecord._COUNT_BATCH + 3  # pylint: disable=protected-access
    tfrecord.write_tfrecord(path, [(b"x", 0)] * n)
    self.assertEqual(tfrecord.count_records([path, path]), 2 * n)
    tfrecord.write_tfrecord(path, [(b"yy", 1)] * 5)  # other size: recounted
    self.assertEqual(tfrecord.count_records([path]), 5)
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) - 2)  # the last record cut short
    with self.assertRaisesRegex(ValueError, "many.tfrecord is not a readable "
                                r"TFRecord file \(truncated or corrupt\): "
                                r"truncated record at \d+\S* failed with "
                                "Read less bytes than requested$"):
      tfrecord.count_records([path])

  def test_label_outside_hierarchy(self):
    root, hfile = self._setup([(0, 2), (1, 7), (2, 0), (3, 0)])
    src = tfrecord.TFRecordSource(TFRecordConfig(
        train_pattern=os.path.join(root, "train-*"), hierarchy_file=hfile))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"outside 0..2.*\b7\b"):
      list(src.raw_dataset("train"))

  def test_too_many_labels_and_encode_checks(self):
    root, hfile = self._setup([(0, [0, 1]), (1, 1), (2, 0), (3, 0)])
    src = tfrecord.TFRecordSource(TFRecordConfig(
        train_pattern=os.path.join(root, "train-*"), hierarchy_file=hfile))
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "more labels than"):
      list(src.raw_dataset("train"))
    with self.assertRaisesRegex(ValueError, "must be >= 0"):
      tfrecord.encode_example(b"x", [-3])
    with self.assertRaisesRegex(ValueError, "matches no file"):
      tfrecord.TFRecordSource(TFRecordConfig(
          train_pattern=os.path.join(root, "nope-*"), hierarchy_file=hfile)).files("train")


if __name__ == "__main__":
  tf.test.main()
