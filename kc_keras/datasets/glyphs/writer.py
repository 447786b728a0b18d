"""Writes a glyph dataset: PNG-in-TFRecord shards the `tfrecord` source reads, plus tables."""

import hashlib
import io
import json
import math
import os
import struct
import tempfile
from typing import Sequence
import zlib

import numpy as np
import tensorflow as tf

from kc_keras.dataloaders.sources import tfrecord as tfrecord_lib

CODEPOINT_KEY = "image/glyph/codepoint"
DESIGN_KEY = "image/glyph/design"
# zlib level of the PNGs: fixed, so the same pixels give the same bytes.
PNG_COMPRESS_LEVEL = 6


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack(">I", len(data)) + kind + data
          + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode_png(bitmap: np.ndarray) -> bytes:
  """8-bit grayscale PNG of a `uint8 [H, W]` bitmap (deterministic bytes).

  Written directly (signature, IHDR, one IDAT of zlib level `PNG_COMPRESS_LEVEL`
  with filter 0 on every row, IEND): 20x faster than going through Pillow for
  32 px glyphs, and any PNG decoder reads it.
  """
  bitmap = np.ascontiguousarray(bitmap, dtype=np.uint8)
  h, w = bitmap.shape
  rows = np.zeros((h, w + 1), np.uint8)
  rows[:, 1:] = bitmap
  header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit grayscale
  return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
          + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), PNG_COMPRESS_LEVEL))
          + _png_chunk(b"IEND", b""))


def serialize(png: bytes, label: int, codepoint: int, design: int) -> bytes:
  """A `tf.train.Example` with the `tfrecord` source's keys and two glyph keys.

  Features: `image/encoded` (PNG), `image/class/label` (class id),
  `image/glyph/codepoint` and `image/glyph/design` (row of designs.tsv).
  """
  int64 = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
  example = tf.train.Example(features=tf.train.Features(feature={
      tfrecord_lib.IMAGE_KEY: tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[png])),
      tfrecord_lib.LABEL_KEY: int64(int(label)),
      CODEPOINT_KEY: int64(int(codepoint)),
      DESIGN_KEY: int64(int(design)),
  }))
  return example.SerializeToString(deterministic=True)


def shard_names(split: str, num_records: int, per_shard: int) -> list[str]:
  """`<split>-00000-of-0000N.tfrecord` names, `ceil(num_records / per_shard)` (>= 1)."""
  n = max(1, math.ceil(num_records / per_shard))
  return [f"{split}-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]


def write_shards(output_dir: str, split: str, records: Sequence[bytes],
                 per_shard: int) -> list[str]:
  """Writes serialized records in order, `per_shard` per file.

  Args:
    output_dir: existing directory.
    split: 'train' or 'eval' (file name prefix).
    records: serialized examples, already in their final order.
    per_shard: records per file (the last file holds the rest).

  Returns:
    The file names written.
  """
  names = shard_names(split, len(records), per_shard)
  for i, name in enumerate(names):
    with tf.io.TFRecordWriter(os.path.join(output_dir, name)) as w:
      for record in records[i * per_shard:(i + 1) * per_shard]:
        w.write(record)
  return names


def write_text(path: str, text: str) -> None:
  """Writes UTF-8 text atomically (temp file + os.replace)."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                             prefix=".glyphs-", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
      f.write(text)
    # mkstemp creates 0600; give the file the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, data) -> None:
  """Atomic JSON with sorted keys and one-space indent (stable bytes)."""
  write_text(path, json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False)
             + "\n")


def file_sha256(path: str) -> str:
  """sha256 hex of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def fingerprint(output_dir: str, names: Sequence[str]) -> str:
  """sha256 of `name:sha256(file)` lines of `names` in sorted order."""
  lines = "".join(f"{n}:{file_sha256(os.path.join(output_dir, n))}\n"
                  for n in sorted(names))
  return hashlib.sha256(lines.encode("utf-8")).hexdigest()
