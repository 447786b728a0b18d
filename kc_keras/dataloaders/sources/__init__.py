"""Example sources: the `ExampleSource` contract every data source implements."""

import abc
import hashlib
import json
from typing import Optional

import tensorflow as tf

from kc_keras.dataloaders import hierarchy as hierarchy_lib

SPLITS = ("train", "eval")


class ExampleSource(abc.ABC):
  """A finite (or unbounded) set of labelled images, split into 'train' / 'eval'.

  Contract (docs/DESIGN.md): `raw_dataset(split)` yields dicts in a fixed order with
  `example_id: int64 []`, `label_ids: int32 [L]` (padded with -1, global class ids)
  and whatever `decode` needs; `decode(element)` adds `image: float32 [H, W, C]` in
  [0, 1] and drops the undecoded payload, passing every other key through.
  """

  #: the source's name in `DataConfig.source`.
  name: str = ""
  #: whether `decode` reads stored bytes that may be corrupt (see
  #: `data_errors.decode`, which then names or skips a bad record).
  may_fail_decode: bool = False

  @property
  @abc.abstractmethod
  def hierarchy(self) -> hierarchy_lib.Hierarchy:
    """The class -> vertical hierarchy of the label ids."""

  @property
  @abc.abstractmethod
  def image_shape(self) -> tuple:
    """`(H, W, C)` of decoded images."""

  @abc.abstractmethod
  def raw_dataset(self, split: str) -> tf.data.Dataset:
    """Undecoded examples of `split` in a deterministic order."""

  @abc.abstractmethod
  def decode(self, element: dict) -> dict:
    """Adds `image` (float32 [H, W, C] in [0, 1]) to one raw element (graph safe)."""

  @abc.abstractmethod
  def num_examples(self, split: str) -> Optional[int]:
    """Number of examples of `split` (None if unbounded)."""

  @abc.abstractmethod
  def fingerprint(self, split: str) -> str:
    """sha256 hex identifying the exact data (and labels) of `split`."""

  def describe(self, element: dict) -> tf.Tensor:
    """A scalar string naming one raw element in error messages (graph safe)."""
    return tf.strings.join(
        [f"{self.name} example ", tf.strings.as_string(element["example_id"])])

  def check_split(self, split: str) -> str:
    """Raises ValueError for a split name this source does not have."""
    if split not in SPLITS:
      raise ValueError(f"{type(self).__name__}: unknown split {split!r}; use one of {SPLITS}")
    return split


class DecodedImageSource(ExampleSource):
  """Base of the sources that decode stored images (folder, TFRecord, TFDS).

  Subclasses set `self._config` (with `image_size` and `channels`) and
  `self._hierarchy` in `__init__`.
  """

  may_fail_decode = True

  @property
  def hierarchy(self) -> hierarchy_lib.Hierarchy:
    return self._hierarchy

  @property
  def image_shape(self) -> tuple:
    return (self._config.image_size, self._config.image_size,
            self._config.channels)


def digest(**parts) -> str:
  """sha256 hex of a canonical JSON of `parts` (used by source fingerprints)."""
  text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def decode_and_resize(encoded: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
  """Encoded jpg/png/gif/bmp bytes -> float32 `[S, S, C]` in [0, 1] (bilinear, antialiased)."""
  image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
  image = tf.image.convert_image_dtype(image, tf.float32)
  image = tf.image.resize(image, [image_size, image_size], antialias=True)
  image = tf.clip_by_value(image, 0.0, 1.0)
  return tf.ensure_shape(image, [image_size, image_size, channels])
