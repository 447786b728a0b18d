"""Model-garden classification TFRecords plus a hierarchy file."""

import os
import re
from typing import Iterable, Optional, Sequence

import tensorflow as tf

from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.dataloaders import image_decoding
from kc_keras.dataloaders import labels as labels_lib
from kc_keras.dataloaders import sources

IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"


def encode_example(image_bytes: bytes, label_ids, image_key: str = IMAGE_KEY,
                   label_key: str = LABEL_KEY) -> bytes:
  """A serialized `tf.train.Example` with the encoded image and int64 label id(s).

  Args:
    image_bytes: encoded jpg/png.
    label_ids: one int or a sequence of ints (multi-label).

  Returns:
    The serialized example.

  Raises:
    ValueError: a negative label id.
  """
  ids = [int(label_ids)] if isinstance(label_ids, int) else [int(x) for x in label_ids]
  if any(i < 0 for i in ids):
    raise ValueError(f"label ids must be >= 0, got {ids}")
  example = tf.train.Example(features=tf.train.Features(feature={
      image_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
      label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=ids)),
  }))
  return example.SerializeToString()


# Records counted per file state (path, size, mtime) in this process: a
# pipeline builds several sources over the same files.
_RECORD_COUNTS = {}
# Records per counted batch: counting batch by batch, not record by record,
# takes the per-element cost of tf.data off a million-record count.
_COUNT_BATCH = 4096


def _add_batch_size(total, batch):
  return total + tf.shape(batch, out_type=tf.int64)[0]


def count_records(paths: Sequence[str]) -> int:
  """Number of records in TFRecord files (each record's CRC checked as read).

  Args:
    paths: TFRecord files.

  Returns:
    The total count; a file unchanged since it was last counted in this
    process (same size and mtime) is not read again.

  Raises:
    ValueError: a file that cannot be read to its end, named.
  """
  total = 0
  for path in paths:
    stat = tf.io.gfile.stat(path)
    key = (path, stat.length, stat.mtime_nsec)
    if key not in _RECORD_COUNTS:
      try:
        _RECORD_COUNTS[key] = int(
            tf.data.TFRecordDataset(path).batch(_COUNT_BATCH).reduce(
                tf.constant(0, tf.int64), _add_batch_size))
      except tf.errors.OpError as e:
        # TF wraps the reader's words in the function node and op names.
        first_line = re.sub(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:.*$", "",
                            (e.message or type(e).__name__).splitlines()[0])
        raise ValueError(f"{path} is not a readable TFRecord file "
                         f"(truncated or corrupt): {first_line}") from e
    total += _RECORD_COUNTS[key]
  return total


def write_tfrecord(path: str, examples: Iterable[tuple]) -> int:
  """Writes `(image_bytes, label_ids)` pairs to `path`; returns the count."""
  count = 0
  with tf.io.TFRecordWriter(os.fspath(path)) as writer:
    for image_bytes, label_ids in examples:
      writer.write(encode_example(image_bytes, label_ids))
      count += 1
  return count


class TFRecordSource(sources.DecodedImageSource):
  """Reads sorted files matching each split's pattern(s), in file then record order.

  `example_id` = record position within the split. Variable-length labels become
  `label_ids [L]` padded with -1 (more than `L` labels, or an id outside the
  hierarchy, fails at run time with a message naming the ids).

  Args:
    config: a `TFRecordConfig`.
    max_labels: `L`.
    alpha_background: `(r, g, b)` behind transparent pixels.

  Raises:
    ValueError: a split pattern matching no file.
  """

  name = "tfrecord"

  def __init__(self, config, max_labels: int = 1,
               alpha_background=image_decoding.DEFAULT_ALPHA_BACKGROUND):
    self._init_decoded_source(config, max_labels, alpha_background)
    self._hierarchy = hierarchy_lib.Hierarchy.load(config.hierarchy_file)
    self._counts = {}

  def files(self, split: str) -> list[str]:
    pattern = (self._config.train_pattern if self.check_split(split) == "train"
               else self._config.eval_pattern)
    if not pattern:
      raise ValueError(f"tfrecord source has no pattern for split {split!r}")
    files = sorted({f for p in pattern.split(",") if p.strip()
                    for f in tf.io.gfile.glob(p.strip())})
    if not files:
      raise ValueError(f"tfrecord pattern {pattern!r} ({split}) matches no file")
    return files

  def num_examples(self, split: str) -> Optional[int]:
    if split not in self._counts:
      self._counts[split] = count_records(self.files(split))
    return self._counts[split]

  def fingerprint(self, split: str) -> str:
    """File names, sizes and mtimes + hierarchy (contents are not re-hashed)."""
    entries = []
    for path in self.files(split):
      st = tf.io.gfile.stat(path)
      entries.append([os.path.basename(path), st.length, st.mtime_nsec])
    return sources.digest(
        source=self.name, files=entries, hierarchy=self._hierarchy.fingerprint,
        max_labels=self._max_labels, **self.decoding_fingerprint())

  def raw_dataset(self, split: str) -> tf.data.Dataset:
    c = self._config
    n_classes = self._hierarchy.num_classes
    spec = {
        c.image_key: tf.io.FixedLenFeature([], tf.string),
        c.label_key: tf.io.VarLenFeature(tf.int64),
    }
    max_labels = self._max_labels

    def read(path):
      # Each record keeps "<file> record <index in file>" for error messages.
      return tf.data.TFRecordDataset(path).enumerate().map(
          lambda i, record: (tf.strings.join(
              [path, " record ", tf.strings.as_string(i)]), record))

    def parse(index, item):
      where, record = item
      parsed = tf.io.parse_single_example(record, spec)
      ids = tf.cast(tf.sparse.to_dense(parsed[c.label_key]), tf.int32)
      ids = labels_lib.assert_label_ids(
          ids, n_classes, where=where,
          source=f"{c.label_key} ({split}, hierarchy of {n_classes})")
      return {
          "example_id": index,
          "label_ids": labels_lib.pad_label_ids(
              ids, max_labels, source=c.label_key, where=where),
          "encoded": parsed[c.image_key],
          "record": where,
      }

    files = tf.data.Dataset.from_tensor_slices(self.files(split))
    return files.flat_map(read).enumerate().map(parse)

  def describe(self, element: dict) -> tf.Tensor:
    """`<file> record <index in that file>`."""
    return element["record"]

  def decode(self, element: dict) -> dict:
    out = dict(element)
    del out["record"]
    out["image"] = self.decode_bytes(out.pop("encoded"))
    return out
