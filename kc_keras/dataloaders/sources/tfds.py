"""A prepared TFDS dataset with a label and a vertical ClassLabel feature (never downloads)."""

from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.dataloaders import image_decoding
from kc_keras.dataloaders import labels as labels_lib
from kc_keras.dataloaders import sources


class TFDSSource(sources.DecodedImageSource):
  """TFDS source, shaped like `omniglot` (image, label, alphabet).

  Hierarchy: class names = the ClassLabel names of `label_key`, vertical names =
  those of `vertical_key`; one pass over `hierarchy_splits` maps each label to its
  vertical. Examples are read with `shuffle_files=False` in a deterministic order;
  `example_id` = position within the split.

  Args:
    config: a `TFDSConfig`.
    max_labels: `L`.
    builder: an already constructed, prepared `tfds.core.DatasetBuilder` to use
      instead of `tfds.builder(config.name, data_dir=config.data_dir)`.
    alpha_background: `(r, g, b)` behind transparent pixels.

  Raises:
    ValueError: dataset unknown or not prepared in `data_dir`, missing features, a
      label seen with two verticals or never seen (naming the class).
  """

  name = "tfds"

  def __init__(self, config, max_labels: int = 1, builder=None,
               alpha_background=image_decoding.DEFAULT_ALPHA_BACKGROUND):
    self._init_decoded_source(config, max_labels, alpha_background)
    self._builder = builder if builder is not None else self._make_builder(config)
    if not self._builder.is_prepared():
      raise ValueError(
          f"TFDS dataset {config.name!r} is not prepared in "
          f"{self._builder.data_dir!r}; prepare it first (this source never downloads)")
    features = self._builder.info.features
    for key in (config.image_key, config.label_key, config.vertical_key):
      if key not in features:
        raise ValueError(
            f"TFDS dataset {config.name!r} has no feature {key!r}; it has {list(features)}")
    for key in (config.label_key, config.vertical_key):
      if not isinstance(features[key], tfds.features.ClassLabel):
        raise ValueError(f"TFDS feature {key!r} of {config.name!r} must be a ClassLabel")
    self._hierarchy = self._build_hierarchy()

  @staticmethod
  def _make_builder(config):
    try:
      return tfds.builder(config.name, data_dir=config.data_dir or None)
    except Exception as e:  # TFDS raises several types for unknown names.
      if "FieldDescriptor" in str(e) and "label" in str(e):
        # tensorflow-datasets 4.9.9 reads `FieldDescriptor.label`, which
        # protobuf >= 7 removed: every prepared dataset fails to load.
        raise ValueError(
            f"data.tfds.name={config.name!r}: this tensorflow-datasets cannot read "
            "prepared datasets with the installed protobuf (>= 7 removed "
            f"FieldDescriptor.label); pin protobuf<7. Original error: {e}") from e
      raise ValueError(
          f"data.tfds.name={config.name!r}: cannot build the TFDS dataset ({e})") from e

  def _build_hierarchy(self) -> hierarchy_lib.Hierarchy:
    c = self._config
    features = self._builder.info.features
    class_names = features[c.label_key].names
    vertical_names = features[c.vertical_key].names
    c2v = np.full(len(class_names), -1, np.int64)
    for split in c.hierarchy_splits:
      ds = self._builder.as_dataset(split=split, shuffle_files=False).map(
          lambda x: (x[c.label_key], x[c.vertical_key]))
      for label, vertical in ds.batch(4096).as_numpy_iterator():
        for lab, ver in zip(label.tolist(), vertical.tolist()):
          if c2v[lab] == -1:
            c2v[lab] = ver
          elif c2v[lab] != ver:
            raise hierarchy_lib.HierarchyError(
                f"TFDS {c.name!r}: class {class_names[lab]!r} (id {lab}) appears with "
                f"verticals {vertical_names[c2v[lab]]!r} and {vertical_names[ver]!r}")
    unseen = np.flatnonzero(c2v < 0)
    if unseen.size:
      raise hierarchy_lib.HierarchyError(
          f"TFDS {c.name!r}: classes never seen in {list(c.hierarchy_splits)}, so "
          f"their vertical is unknown: {[class_names[i] for i in unseen[:10]]}")
    return hierarchy_lib.Hierarchy(
        tuple(class_names), tuple(vertical_names), tuple(int(v) for v in c2v))

  def _split(self, split: str) -> str:
    return (self._config.train_split if self.check_split(split) == "train"
            else self._config.eval_split)

  def num_examples(self, split: str) -> Optional[int]:
    return int(self._builder.info.splits[self._split(split)].num_examples)

  def fingerprint(self, split: str) -> str:
    info = self._builder.info
    tfds_split = self._split(split)
    files = [str(f) for f in info.splits[tfds_split].filenames] if hasattr(
        info.splits[tfds_split], "filenames") else []
    return sources.digest(
        source=self.name, name=info.full_name, split=tfds_split,
        num_examples=self.num_examples(split), files=files,
        hierarchy=self._hierarchy.fingerprint, max_labels=self._max_labels,
        **self.decoding_fingerprint())

  def raw_dataset(self, split: str) -> tf.data.Dataset:
    c = self._config
    read_config = tfds.ReadConfig(interleave_cycle_length=1, shuffle_seed=None)
    ds = self._builder.as_dataset(
        split=self._split(split), shuffle_files=False, read_config=read_config)
    n_classes = self._hierarchy.num_classes
    max_labels = self._max_labels

    def select(index, x):
      ids = tf.reshape(tf.cast(x[c.label_key], tf.int32), [-1])
      ids = labels_lib.assert_label_ids(ids, n_classes, source=c.label_key)
      return {
          "example_id": index,
          "label_ids": labels_lib.pad_label_ids(ids, max_labels, source=c.label_key),
          "pixels": x[c.image_key],
      }

    return ds.enumerate().map(select)

  def decode(self, element: dict) -> dict:
    """TFDS decodes the file; the pixels then follow `image_decoding`'s formula."""
    out = dict(element)
    out["image"] = image_decoding.to_model_image(
        tf.image.convert_image_dtype(out.pop("pixels"), tf.float32),
        self._config.image_size, self._config.channels,
        self.alpha_background, self.alpha_notice)
    return out
