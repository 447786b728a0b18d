"""Reproducible per-example augmentation with Keras 3 preprocessing layers."""

import keras
import tensorflow as tf


class _StatelessSeedStream(keras.random.SeedGenerator):
  """A SeedGenerator whose draws are a pure function of a seed tensor.

  Keras 3.15 random ops accept an int or a `SeedGenerator`, not a tensor; the
  layers' `get_random_transformation(..., seed=...)` draw one or more seeds from
  it. This stream returns `fold_in(seed, k)` for the k-th draw, so a transform is
  fully determined by the per-example seed and works inside `tf.data` graphs
  without any variable state.

  Args:
    seed: int64 `[2]` tensor.
  """

  def __init__(self, seed):  # pylint: disable=super-init-not-called
    # No variable: the state is the seed tensor plus a trace-time counter.
    self._seed = tf.cast(seed, tf.int64)
    self._draws = 0

  def next(self, ordered=True):
    del ordered
    self._draws += 1
    return tf.random.experimental.stateless_fold_in(
        self._seed, self._draws, alg="philox"
    )


class Augmenter:
  """Applies the configured Keras 3 random layers to one image with a given seed.

  Layers, in order: RandomFlip, RandomRotation, RandomTranslation, RandomZoom (each
  only when its config value is non-zero). Each layer gets its own sub-seed
  `fold_in(seed, layer index)` and draws its transformation from a stateless stream,
  then `transform_images` applies it: same seed -> same output.

  Args:
    config: an `AugmentationConfig`.
  """

  def __init__(self, config):
    config.validate()
    self.config = config
    layers = []
    if config.flip:
      layers.append(keras.layers.RandomFlip(mode=config.flip, name="kc_aug_flip"))
    if config.rotation:
      layers.append(keras.layers.RandomRotation(
          factor=config.rotation, fill_mode=config.fill_mode, name="kc_aug_rotation"))
    if config.translation:
      layers.append(keras.layers.RandomTranslation(
          height_factor=config.translation, width_factor=config.translation,
          fill_mode=config.fill_mode, name="kc_aug_translation"))
    if config.zoom:
      layers.append(keras.layers.RandomZoom(
          height_factor=config.zoom, fill_mode=config.fill_mode, name="kc_aug_zoom"))
    self.layers = tuple(layers)

  @property
  def enabled(self) -> bool:
    return bool(self.layers)

  def __call__(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Augments `image` float32 `[H, W, C]` with int64 `[2]` `seed`."""
    shape = image.shape
    for index, layer in enumerate(self.layers):
      stream = _StatelessSeedStream(
          tf.random.experimental.stateless_fold_in(seed, index, alg="philox"))
      transformation = layer.get_random_transformation(
          image, training=True, seed=stream)
      image = layer.transform_images(image, transformation, training=True)
    image = tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 1.0)
    return tf.ensure_shape(image, shape)
