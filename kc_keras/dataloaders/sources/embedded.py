"""The embedded default data: seeded, stateless renderer of hierarchical stroke images."""

import math
from typing import Optional

import numpy as np
import tensorflow as tf

from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.dataloaders import labels as labels_lib
from kc_keras.dataloaders import sources

# Bump when the renderer changes: it is part of the fingerprint, so caches of
# soft targets computed on older pixels are refused.
GENERATOR_VERSION = 1
# Salts separating the random streams of verticals, classes and instances.
_VERTICAL_STREAM, _CLASS_STREAM, _INSTANCE_STREAM = 1, 2, 3


def vertical_sizes(num_classes: int, num_verticals: int, distribution: str,
                   seed: int, zipf_exponent: float = 1.0) -> np.ndarray:
  """Classes per vertical, `int64 [M]` summing to `N`, each >= 1.

  'uniform': `N // M`, the first `N % M` verticals get one more.
  'uneven': `1 + ` a largest-remainder share of `N - M` with weights
  `1 / rank**zipf_exponent`, ranks shuffled over verticals with `seed`.

  Raises:
    ValueError: `N < M`, `M < 1` or an unknown distribution.
  """
  if num_verticals < 1 or num_classes < num_verticals:
    raise ValueError(
        f"need 1 <= num_verticals <= num_classes, got num_verticals={num_verticals}, "
        f"num_classes={num_classes}"
    )
  if distribution == "uniform":
    sizes = np.full(num_verticals, num_classes // num_verticals, np.int64)
    sizes[: num_classes % num_verticals] += 1
    return sizes
  if distribution != "uneven":
    raise ValueError(f"unknown vertical size distribution {distribution!r}")
  ranks = np.random.RandomState(seed).permutation(num_verticals) + 1
  weights = 1.0 / ranks.astype(np.float64) ** zipf_exponent
  share = weights / weights.sum() * (num_classes - num_verticals)
  extra = np.floor(share).astype(np.int64)
  left = (num_classes - num_verticals) - int(extra.sum())
  # Largest remainders first; ties broken by vertical id for determinism.
  order = np.lexsort((np.arange(num_verticals), -(share - extra)))
  extra[order[:left]] += 1
  return extra + 1


class EmbeddedSource(sources.ExampleSource):
  """M verticals x N classes of procedurally drawn images, no files.

  Each vertical has a template: background and ink colours, a background grating
  (frequency, orientation) and `P` strokes (centre, angle, length, width). A class
  moves each stroke of its vertical's template by up to `class_jitter`, turns it by
  up to 0.6 rad, rescales its length and ink; an instance adds a global shift, small
  per-stroke jitter, brightness and pixel noise. So verticals differ coarsely
  (colours, texture, layout) and classes inside a vertical differ by finer stroke
  geometry, which is what specialists specialise in.

  Pixels are a pure function of `(seed, class id, instance index)` computed in
  `decode` with stateless random ops; nothing of size `N x images` is stored, and
  the only table is the `M + 1` vertical boundaries (classes of a vertical are
  contiguous ids). Train uses instances `0..T-1`, eval `T..T+E-1`.

  Args:
    config: an `EmbeddedConfig`.
    max_labels: `L`, width of padded `label_ids`.
  """

  name = "embedded"

  def __init__(self, config, max_labels: int = 1):
    config.validate()
    self._config = config
    self._max_labels = int(max_labels)
    self._sizes = vertical_sizes(
        config.num_classes, config.num_verticals, config.vertical_sizes,
        config.seed, config.zipf_exponent,
    )
    self._bounds = np.concatenate([[0], np.cumsum(self._sizes)]).astype(np.int64)
    self._hierarchy = None

  @property
  def config(self):
    return self._config

  @property
  def hierarchy(self) -> hierarchy_lib.Hierarchy:
    if self._hierarchy is None:
      c = self._config
      vwidth = len(str(c.num_verticals - 1))
      cwidth = len(str(c.num_classes - 1))
      c2v = np.repeat(np.arange(c.num_verticals), self._sizes)
      self._hierarchy = hierarchy_lib.Hierarchy(
          class_names=tuple(
              f"v{v:0{vwidth}d}/c{i:0{cwidth}d}" for i, v in enumerate(c2v)
          ),
          vertical_names=tuple(f"v{v:0{vwidth}d}" for v in range(c.num_verticals)),
          class_to_vertical=tuple(int(v) for v in c2v),
      )
    return self._hierarchy

  @property
  def image_shape(self) -> tuple:
    c = self._config
    return (c.image_size, c.image_size, c.channels)

  def _instances(self, split: str) -> tuple[int, int]:
    """(first instance index, instances per class) of `split`."""
    c = self._config
    if self.check_split(split) == "train":
      return 0, c.train_examples_per_class
    return c.train_examples_per_class, c.eval_examples_per_class

  def num_examples(self, split: str) -> Optional[int]:
    return self._config.num_classes * self._instances(split)[1]

  def fingerprint(self, split: str) -> str:
    first, count = self._instances(split)
    return sources.digest(
        source=self.name, version=GENERATOR_VERSION, split=split,
        config=self._config.as_dict(), first_instance=first, instances=count,
        max_labels=self._max_labels,
    )

  def raw_dataset(self, split: str) -> tf.data.Dataset:
    """Example `i` is instance `first + i // N` of class `i % N` (classes interleaved).

    `example_id` = `i` for train and `N*T + i` for eval, so ids never collide.
    """
    first, count = self._instances(split)
    n = self._config.num_classes
    id_offset = 0 if split == "train" else n * self._config.train_examples_per_class
    max_labels = self._max_labels

    def make(i):
      class_id = tf.cast(i % n, tf.int32)
      label_ids = tf.concat(
          [[class_id], tf.fill([max_labels - 1], labels_lib.PAD_ID)], axis=0
      )
      return {
          "example_id": i + id_offset,
          "label_ids": label_ids,
          "class_id": class_id,
          "instance": tf.cast(first + i // n, tf.int32),
      }

    return tf.data.Dataset.range(n * count).map(make)

  def decode(self, element: dict) -> dict:
    out = dict(element)
    class_id = out.pop("class_id")
    instance = out.pop("instance")
    out["image"] = self.render(class_id, instance)
    return out

  # ------------------------------------------------------------------ render
  def _stream(self, salt: int, index) -> tf.Tensor:
    base = tf.constant([self._config.seed, salt], tf.int64)
    return tf.random.experimental.stateless_fold_in(
        base, tf.cast(index, tf.int64), alg="philox"
    )

  def vertical_of(self, class_id) -> tf.Tensor:
    """Vertical id of global `class_id` (int32, graph safe)."""
    return tf.cast(
        tf.searchsorted(
            tf.constant(self._bounds[1:], tf.int64),
            tf.reshape(tf.cast(class_id, tf.int64), [1]), side="right",
        )[0],
        tf.int32,
    )

  def render(self, class_id, instance) -> tf.Tensor:
    """float32 `[S, S, C]` in [0, 1] for one `(class_id, instance)` (graph safe)."""
    c = self._config
    p = c.strokes_per_vertical
    size, channels = c.image_size, c.channels
    u = lambda seed, shape, lo, hi: tf.random.stateless_uniform(  # noqa: E731
        shape, seed=seed, minval=lo, maxval=hi, alg="philox")
    vertical = self.vertical_of(class_id)

    # Vertical template.
    vs = tf.random.experimental.stateless_split(
        self._stream(_VERTICAL_STREAM, vertical), 9, alg="philox")
    background = u(vs[0], [channels], 0.0, 0.4)
    ink = u(vs[1], [channels], 0.6, 1.0)
    grating_freq = u(vs[2], [], 2.0, 5.0)
    grating_angle = u(vs[3], [], 0.0, math.pi)
    centres = u(vs[4], [p, 2], 0.25, 0.75)
    angles = u(vs[5], [p], 0.0, math.pi)
    lengths = u(vs[6], [p], 0.12, 0.3)
    widths = u(vs[7], [p], 0.03, 0.06)

    # Class details inside the vertical's template.
    cs = tf.random.experimental.stateless_split(
        self._stream(_CLASS_STREAM, class_id), 5, alg="philox")
    centres += u(cs[0], [p, 2], -c.class_jitter, c.class_jitter)
    angles += u(cs[1], [p], -0.6, 0.6)
    lengths *= u(cs[2], [p], 0.7, 1.3)
    stroke_ink = u(cs[3], [p], 0.6, 1.0)
    tint = u(cs[4], [channels], -0.1, 0.1)

    # Instance variation.
    instance_seed = tf.random.experimental.stateless_fold_in(
        self._stream(_INSTANCE_STREAM, class_id), tf.cast(instance, tf.int64),
        alg="philox")
    ins = tf.random.experimental.stateless_split(instance_seed, 5, alg="philox")
    centres += u(ins[0], [1, 2], -c.instance_shift, c.instance_shift)
    centres += c.instance_jitter * tf.random.stateless_normal(
        [p, 2], seed=ins[1], alg="philox")
    angles += u(ins[2], [p], -0.1, 0.1)
    brightness = u(ins[3], [], 0.9, 1.1)

    # Distance of each pixel to each stroke segment -> soft ink alpha.
    coords = (tf.range(size, dtype=tf.float32) + 0.5) / size
    yy, xx = tf.meshgrid(coords, coords, indexing="ij")
    grid = tf.stack([xx, yy], axis=-1)[None]  # [1, S, S, 2]
    direction = tf.stack([tf.cos(angles), tf.sin(angles)], axis=-1)  # [P, 2]
    rel = grid - centres[:, None, None, :]  # [P, S, S, 2]
    along = tf.reduce_sum(rel * direction[:, None, None, :], axis=-1)
    half = (lengths / 2.0)[:, None, None]
    along = tf.clip_by_value(along, -half, half)
    dist = tf.norm(rel - along[..., None] * direction[:, None, None, :], axis=-1)
    alpha = stroke_ink[:, None, None] * tf.exp(
        -tf.square(dist / widths[:, None, None]))
    alpha = tf.reduce_max(alpha, axis=0)[..., None]  # [S, S, 1]

    grating = 0.08 * tf.sin(
        2.0 * math.pi * grating_freq
        * (xx * tf.cos(grating_angle) + yy * tf.sin(grating_angle)))[..., None]
    image = (background + grating) * (1.0 - alpha) + tf.clip_by_value(
        ink + tint, 0.0, 1.0) * alpha
    image = image * brightness + c.noise_stddev * tf.random.stateless_normal(
        [size, size, channels], seed=ins[4], alg="philox")
    return tf.ensure_shape(
        tf.clip_by_value(image, 0.0, 1.0), [size, size, channels])
