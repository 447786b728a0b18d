"""Image folder trees `root/<vertical>/<class>/<image>` (jpg/png), one per split."""

import hashlib
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.dataloaders import image_decoding
from kc_keras.dataloaders import sources

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def holdout_count(num_images: int, fraction: float) -> int:
  """Images of a class held out: round(fraction * n), at least 1, leaving at least 1.

  A class with a single image stays in training only (it cannot be both
  learned and tested); every class with two or more images gets at least
  one test image, so that its AP is measured.
  """
  if fraction <= 0 or num_images < 2:
    return 0
  return min(num_images - 1, max(1, round(fraction * num_images)))


def _holdout_rank(class_name: str, file_name: str) -> str:
  # A hash of the names, not a seeded shuffle: adding or removing one image
  # never moves the others between the splits.
  return hashlib.sha256(f"{class_name}/{file_name}".encode()).hexdigest()


class FolderSource(sources.DecodedImageSource):
  """Labelled images from folder trees.

  The hierarchy is `hierarchy_file` when set, else derived from `train_dir`
  (`Hierarchy.from_folder_tree`). Files are listed in sorted
  (vertical, class, file name) order; `example_id` is the position in that list.
  Single-label: `label_ids = [class id, -1, ...]`.

  With no `eval_dir` and `holdout_fraction` > 0, 'eval' is a hold-out of
  `train_dir`: per class, the `holdout_count` images of smallest
  sha256("<class>/<file name>"), and 'train' is the rest.

  Args:
    config: a `FolderConfig`.
    max_labels: `L`.
    alpha_background: `(r, g, b)` behind transparent pixels.

  Raises:
    hierarchy_lib.HierarchyError: a class folder unknown to the hierarchy, or
      filed under another vertical than the hierarchy's (naming it).
    ValueError: a split without a directory or without images.
  """

  name = "folder"

  def __init__(self, config, max_labels: int = 1,
               alpha_background=image_decoding.DEFAULT_ALPHA_BACKGROUND):
    config.validate()
    self._config = config
    self._max_labels = int(max_labels)
    self._init_decoding(alpha_background)
    if config.hierarchy_file:
      self._hierarchy = hierarchy_lib.Hierarchy.load(config.hierarchy_file)
    else:
      self._hierarchy = hierarchy_lib.Hierarchy.from_folder_tree(config.train_dir)
    self._ids = {n: i for i, n in enumerate(self._hierarchy.class_names)}
    self._files = {}

  @property
  def holds_out(self) -> bool:
    """Whether 'eval' is a hold-out of `train_dir`."""
    return not self._config.eval_dir and self._config.holdout_fraction > 0

  def _root(self, split: str) -> str:
    root = (self._config.train_dir
            if self.check_split(split) == "train" or self.holds_out
            else self._config.eval_dir)
    if not root:
      raise ValueError(f"folder source has no directory for split {split!r}")
    if not os.path.isdir(root):
      raise ValueError(f"folder for split {split!r} not found: {root}")
    return root

  def files(self, split: str) -> list[tuple[str, int]]:
    """Sorted `(path, class id)` of `split`."""
    if split in self._files:
      return self._files[split]
    root = self._root(split)
    h, out = self._hierarchy, []
    keep_held_out = split == "eval"
    for vname in sorted(os.listdir(root)):
      vdir = os.path.join(root, vname)
      if not os.path.isdir(vdir):
        continue
      for cname in sorted(os.listdir(vdir)):
        cdir = os.path.join(vdir, cname)
        if not os.path.isdir(cdir):
          continue
        if cname not in self._ids:
          raise hierarchy_lib.HierarchyError(
              f"class {cname!r} in {cdir} ({split}) is not in the hierarchy")
        cid = self._ids[cname]
        expected = h.vertical_names[h.class_to_vertical[cid]]
        if vname != expected:
          raise hierarchy_lib.HierarchyError(
              f"class {cname!r} is under vertical {vname!r} in {root} but the "
              f"hierarchy puts it in {expected!r}")
        names = [f for f in sorted(os.listdir(cdir))
                 if f.lower().endswith(IMAGE_EXTENSIONS)]
        if self.holds_out:
          held = set(sorted(names, key=lambda f: _holdout_rank(cname, f))[
              :holdout_count(len(names), self._config.holdout_fraction)])
          names = [f for f in names if (f in held) == keep_held_out]
        out.extend((os.path.join(cdir, f), cid) for f in names)
    if not out:
      if self.holds_out and split == "eval":
        raise ValueError(
            f"no class under {root} has two images, so nothing can be held "
            "out for evaluation: give an eval folder")
      raise ValueError(f"no {IMAGE_EXTENSIONS} images under {root}")
    self._files[split] = out
    return out

  def num_examples(self, split: str) -> Optional[int]:
    return len(self.files(split))

  def fingerprint(self, split: str) -> str:
    """Relative paths, sizes and mtimes of the files + labels + hierarchy."""
    root = self._root(split)
    entries = []
    for path, cid in self.files(split):
      st = os.stat(path)
      entries.append([os.path.relpath(path, root), cid, st.st_size, st.st_mtime_ns])
    return sources.digest(
        source=self.name, files=entries, hierarchy=self._hierarchy.fingerprint,
        max_labels=self._max_labels, **self.decoding_fingerprint())

  def raw_dataset(self, split: str) -> tf.data.Dataset:
    files = self.files(split)
    labels = np.full((len(files), self._max_labels), -1, np.int32)
    labels[:, 0] = [cid for _, cid in files]
    return tf.data.Dataset.from_tensor_slices({
        "example_id": np.arange(len(files), dtype=np.int64),
        "label_ids": labels,
        "path": [p for p, _ in files],
    })

  def describe(self, element: dict) -> tf.Tensor:
    """The image file's path."""
    return element["path"]

  def decode(self, element: dict) -> dict:
    out = dict(element)
    encoded = tf.io.read_file(out.pop("path"))
    out["image"] = self.decode_bytes(encoded)
    return out
