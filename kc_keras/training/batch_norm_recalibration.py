"""Recomputes BatchNorm moving statistics for the final weights after training."""

from typing import Iterator, List

import keras
import numpy as np
import tensorflow as tf


def batch_norm_layers(model: keras.Model) -> List[keras.layers.BatchNormalization]:
  """Every BatchNormalization layer of `model`, nested models included."""
  return [
      layer
      for layer in model._flatten_layers(include_self=True, recursive=True)  # pylint: disable=protected-access
      if isinstance(layer, keras.layers.BatchNormalization)
  ]


def recalibrate_batch_norm(model: keras.Model,
                           strategy: tf.distribute.Strategy,
                           iterator: Iterator,
                           num_batches: int) -> int:
  """Replaces each BatchNorm's moving statistics by their average over batches.

  During training the moving statistics are exponential averages
  (momentum m) of batch statistics computed with weights that kept changing;
  with a constant learning rate they lag the final weights, and the eval
  accuracy of the same training run can swing by tens of points depending on
  where the last steps left them (docs/RESULTS.md, "BatchNorm recalibration").
  This runs the model in training mode (no gradient, no weight update) on
  `num_batches` batches and sets, for every BatchNorm layer,

    moving_mean     = (1 / n) sum_i mu_i
    moving_variance = (1 / n) sum_i sigma_i^2

  where mu_i and sigma_i^2 are the statistics that layer computes on batch
  i with the final weights (global-batch statistics for synchronized
  layers). Each layer runs with momentum 0 meanwhile, so after a batch its
  moving statistics ARE that batch's; the momentum is restored afterwards.

  Args:
    model: a built Keras model called as `model(images, training=True)`.
    strategy: the strategy the model was built under.
    iterator: a distributed iterator of `(images, features)` batches, e.g.
      the continuation of the training stream.
    num_batches: n >= 1.

  Returns:
    The number of BatchNorm layers recalibrated (0: nothing to do).

  Raises:
    ValueError: if `num_batches` < 1.
  """
  if num_batches < 1:
    raise ValueError(f"num_batches must be >= 1, got {num_batches}.")
  layers = batch_norm_layers(model)
  if not layers:
    return 0
  momenta = [layer.momentum for layer in layers]
  for layer in layers:
    layer.momentum = 0.0
  try:
    @tf.function
    def forward(data):
      strategy.run(lambda batch: model(batch[0], training=True), args=(data,))

    sums = [[np.zeros(layer.moving_mean.shape, np.float64),
             np.zeros(layer.moving_variance.shape, np.float64)]
            for layer in layers]
    for _ in range(num_batches):
      forward(next(iterator))
      for total, layer in zip(sums, layers):
        total[0] += np.asarray(layer.moving_mean.numpy(), np.float64)
        total[1] += np.asarray(layer.moving_variance.numpy(), np.float64)
    for (mean_sum, variance_sum), layer in zip(sums, layers):
      layer.moving_mean.assign((mean_sum / num_batches).astype(
          layer.moving_mean.dtype))
      layer.moving_variance.assign((variance_sum / num_batches).astype(
          layer.moving_variance.dtype))
  finally:
    for layer, momentum in zip(layers, momenta):
      layer.momentum = momentum
  return len(layers)
