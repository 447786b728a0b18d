"""Omniglot from the npz files: 50 alphabets (verticals), 1,623 characters (classes)."""

import hashlib
import os
import threading
from typing import Optional

import numpy as np
import tensorflow as tf

from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.dataloaders import sources

FILES = ("images_background.npz", "images_evaluation.npz")
RANGES_FILE = "alphabet_ranges.tsv"
NUM_DRAWERS = 20
# Images resized per tf.image.resize call at load (bounds the float32 working set).
_RESIZE_CHUNK = 2048
# Resized images per (realpath, image_size), shared by every source instance.
_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


class OmniglotError(ValueError):
  """Omniglot files are missing, corrupt or inconsistent; the message names the file."""


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def verify_checksums(data_dir: str) -> dict:
  """Checks each `FILES[i].sha256` that exists; returns `{file: sha256}` of both npz.

  Raises:
    OmniglotError: a missing npz, or a mismatch, naming the file.
  """
  sums = {}
  for name in FILES:
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path):
      raise OmniglotError(f"Omniglot file not found: {path}")
    actual = _sha256(path)
    sums[name] = actual
    check = path + ".sha256"
    if os.path.isfile(check):
      with open(check, encoding="utf-8") as f:
        expected = f.read().split()[0].strip().lower()
      if expected != actual:
        raise OmniglotError(
            f"checksum mismatch for {path}: expected {expected}, got {actual}")
  return sums


def read_alphabet_ranges(path: str) -> list[tuple[int, int, str]]:
  """Parses `start<TAB>end<TAB>alphabet` rows (1-based, inclusive, contiguous).

  Raises:
    OmniglotError: malformed rows or ranges that do not tile 1..max, naming the row.
  """
  if not os.path.isfile(path):
    raise OmniglotError(f"Omniglot file not found: {path}")
  rows, expected_start = [], 1
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      parts = line.rstrip("\n").split("\t")
      try:
        start, end, name = int(parts[0]), int(parts[1]), parts[2]
      except (IndexError, ValueError) as e:
        raise OmniglotError(f"{path}:{line_no}: malformed row {line!r}") from e
      if start != expected_start or end < start:
        raise OmniglotError(
            f"{path}:{line_no}: range {start}..{end} for {name!r} does not continue "
            f"at {expected_start}")
      rows.append((start, end, name))
      expected_start = end + 1
  return rows


def _load_resized(data_dir: str, image_size: int) -> np.ndarray:
  """uint8 `[1623, 20, S, S]`, ink = 255, antialiased resize; cached in memory."""
  key = (os.path.realpath(data_dir), int(image_size))
  with _CACHE_LOCK:
    if key in _CACHE:
      return _CACHE[key]
    parts = []
    for name in FILES:
      path = os.path.join(data_dir, name)
      with np.load(path) as npz:
        if "images" not in npz:
          raise OmniglotError(f"{path} has no 'images' array")
        images = npz["images"]
        labels = npz["labels"] if "labels" in npz else None
      if images.ndim != 4 or images.shape[1] != NUM_DRAWERS:
        raise OmniglotError(
            f"{path}: images must be [classes, {NUM_DRAWERS}, H, W], got {images.shape}")
      n, d, h, w = images.shape
      # Row i must hold character i of the file: ids are derived from positions.
      if labels is not None and not np.array_equal(
          labels, np.broadcast_to(np.arange(n)[:, None], labels.shape)):
        raise OmniglotError(f"{path}: labels[i] is not i for every row")
      flat = images.reshape(n * d, h, w)
      out = np.empty((n * d, image_size, image_size), np.uint8)
      for i in range(0, n * d, _RESIZE_CHUNK):
        # True = white paper: invert so that ink is 1.0.
        ink = tf.constant(~flat[i:i + _RESIZE_CHUNK], tf.float32)[..., None]
        small = tf.image.resize(ink, [image_size, image_size], antialias=True)
        out[i:i + _RESIZE_CHUNK] = np.round(
            np.clip(small.numpy()[..., 0], 0.0, 1.0) * 255.0).astype(np.uint8)
      parts.append(out.reshape(n, d, image_size, image_size))
    result = np.concatenate(parts, axis=0)
    _CACHE[key] = result
    return result


class OmniglotSource(sources.ExampleSource):
  """Omniglot split by drawer: all 1,623 classes in both splits.

  Example ids: `example_id = class_id * 20 + drawer` (unique over both splits);
  order: class-major, drawers in the order of the config list. Images are resized
  once per process (uint8 in memory, ~25 MB at 28 px) and decoded to
  `float32 [S, S, 1]` with ink = 1.0.

  Args:
    config: an `OmniglotConfig`.
    max_labels: `L`.

  Raises:
    OmniglotError: missing files or checksum mismatch (naming the file).
  """

  name = "omniglot"

  def __init__(self, config, max_labels: int = 1):
    config.validate()
    self._config = config
    self._max_labels = int(max_labels)
    self._dir = os.fspath(config.data_dir)
    ranges = read_alphabet_ranges(os.path.join(self._dir, RANGES_FILE))
    if config.verify_checksums:
      self._sums = verify_checksums(self._dir)
    else:
      self._sums = {n: str(os.path.getsize(os.path.join(self._dir, n))) for n in FILES}
    c2v, names = [], []
    for v, (start, end, alphabet) in enumerate(ranges):
      for k in range(end - start + 1):
        c2v.append(v)
        names.append(f"{alphabet}/character{k + 1:02d}")
    self._hierarchy = hierarchy_lib.Hierarchy(
        tuple(names), tuple(r[2] for r in ranges), tuple(c2v))

  @property
  def hierarchy(self) -> hierarchy_lib.Hierarchy:
    return self._hierarchy

  @property
  def image_shape(self) -> tuple:
    return (self._config.image_size, self._config.image_size, 1)

  def _drawers(self, split: str) -> tuple:
    if self.check_split(split) == "train":
      return tuple(int(d) for d in self._config.train_drawers)
    return tuple(int(d) for d in self._config.eval_drawers)

  def num_examples(self, split: str) -> Optional[int]:
    return self._hierarchy.num_classes * len(self._drawers(split))

  def fingerprint(self, split: str) -> str:
    return sources.digest(
        source=self.name, files=self._sums, drawers=self._drawers(split),
        image_size=self._config.image_size, hierarchy=self._hierarchy.fingerprint,
        max_labels=self._max_labels)

  def images(self) -> np.ndarray:
    """uint8 `[1623, 20, S, S]` (ink = 255), in global class order."""
    images = _load_resized(self._dir, self._config.image_size)
    if images.shape[0] != self._hierarchy.num_classes:
      raise OmniglotError(
          f"{self._dir}: npz files hold {images.shape[0]} classes but "
          f"{RANGES_FILE} lists {self._hierarchy.num_classes}")
    return images

  def raw_dataset(self, split: str) -> tf.data.Dataset:
    drawers = np.asarray(self._drawers(split), np.int64)
    images = self.images()[:, drawers]  # [N, D, S, S]
    n, d = images.shape[:2]
    class_ids = np.repeat(np.arange(n, dtype=np.int32), d)
    labels = np.full((n * d, self._max_labels), -1, np.int32)
    labels[:, 0] = class_ids
    example_ids = class_ids.astype(np.int64) * NUM_DRAWERS + np.tile(drawers, n)
    return tf.data.Dataset.from_tensor_slices({
        "example_id": example_ids,
        "label_ids": labels,
        "pixels": images.reshape(n * d, *images.shape[2:], 1),
    })

  def decode(self, element: dict) -> dict:
    out = dict(element)
    out["image"] = tf.cast(out.pop("pixels"), tf.float32) / 255.0
    return out
