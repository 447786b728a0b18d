"""Example sources: the `ExampleSource` contract every data source implements."""

import abc
import hashlib
import json
from typing import Optional

import tensorflow as tf

from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.dataloaders import image_decoding

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

  Subclasses call `_init_decoded_source` in `__init__` (it validates and
  keeps the config, with `image_size` and `channels`) and set
  `self._hierarchy`. Images go
  through `image_decoding` (alpha composited onto `alpha_background`, EXIF
  orientation, 16-bit PNG, palettes); `alpha_notice` counts the decoded images
  with transparency so that a run can say once that it found some.
  """

  may_fail_decode = True

  def _init_decoded_source(self, config, max_labels: int,
                           alpha_background) -> None:
    """Validates and keeps `config`; `L = max_labels`; the alpha background."""
    config.validate()
    self._config = config
    self._max_labels = int(max_labels)
    self.alpha_background = image_decoding.check_background(alpha_background)
    self.alpha_notice = image_decoding.AlphaNotice(self.alpha_background)

  @property
  def hierarchy(self) -> hierarchy_lib.Hierarchy:
    return self._hierarchy

  @property
  def image_shape(self) -> tuple:
    return (self._config.image_size, self._config.image_size,
            self._config.channels)

  def decode_bytes(self, encoded: tf.Tensor) -> tf.Tensor:
    """Encoded image bytes -> the model image (`image_decoding.decode_and_resize`)."""
    return image_decoding.decode_and_resize(
        encoded, self._config.image_size, self._config.channels,
        self.alpha_background, self.alpha_notice)

  def decoding_fingerprint(self) -> dict:
    """What of the decode settings changes the images (for `fingerprint`)."""
    return dict(image_size=self._config.image_size,
                channels=self._config.channels,
                alpha_background=list(self.alpha_background))


def digest(**parts) -> str:
  """sha256 hex of a canonical JSON of `parts` (used by source fingerprints)."""
  text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()
