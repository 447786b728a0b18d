"""Recomputes moving statistics for the final weights after training.

The layers with moving statistics: every BatchNormalization, and every
`SelfPacedScale` with `normalization='per_batch'` (its moving mean of the
per-vertical squared norms).
"""

from typing import Iterator, List

import keras
import numpy as np
import tensorflow as tf

from kc_keras.modeling.layers import self_paced


def batch_norm_layers(model: keras.Model) -> List[keras.layers.BatchNormalization]:
  """Every BatchNormalization layer of `model`, nested models included."""
  return [
      layer
      for layer in model._flatten_layers(include_self=True, recursive=True)  # pylint: disable=protected-access
      if isinstance(layer, keras.layers.BatchNormalization)
  ]


def moving_statistics(layer) -> List:
  """The moving-statistic variables of `layer` (empty for other layers)."""
  if isinstance(layer, keras.layers.BatchNormalization):
    return [layer.moving_mean, layer.moving_variance]
  if (isinstance(layer, self_paced.SelfPacedScale)
      and getattr(layer, "moving_squared_norm", None) is not None):
    return [layer.moving_squared_norm]
  return []


def layers_with_moving_statistics(model: keras.Model) -> List:
  """Every layer of `model` with moving statistics, nested models included."""
  return [
      layer
      for layer in model._flatten_layers(include_self=True, recursive=True)  # pylint: disable=protected-access
      if moving_statistics(layer)
  ]


def recalibrate_batch_norm(model: keras.Model,
                           strategy: tf.distribute.Strategy,
                           iterator: Iterator,
                           num_batches: int) -> int:
  """Replaces moving statistics by their average over batches.

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
  layers), and for every per-batch self-paced scale

    moving_squared_norm_v = (1 / n) sum_i mean_b ||x_bv||^2   (batch i).

  Each layer runs with momentum 0 meanwhile, so after a batch its moving
  statistics ARE that batch's; the momentum is restored afterwards.

  Args:
    model: a built Keras model called as `model(images, training=True)`.
    strategy: the strategy the model was built under.
    iterator: a distributed iterator of `(images, features)` batches, e.g.
      the continuation of the training stream.
    num_batches: n >= 1.

  Returns:
    The number of layers recalibrated (0: nothing to do).

  Raises:
    ValueError: if `num_batches` < 1.
  """
  if num_batches < 1:
    raise ValueError(f"num_batches must be >= 1, got {num_batches}.")
  layers = layers_with_moving_statistics(model)
  if not layers:
    return 0
  momenta = [layer.momentum for layer in layers]
  for layer in layers:
    layer.momentum = 0.0
  try:
    @tf.function
    def forward(data):
      strategy.run(lambda batch: model(batch[0], training=True), args=(data,))

    variables = [moving_statistics(layer) for layer in layers]
    sums = [[np.zeros(v.shape, np.float64) for v in group]
            for group in variables]
    for _ in range(num_batches):
      forward(next(iterator))
      for total, group in zip(sums, variables):
        for i, variable in enumerate(group):
          total[i] += np.asarray(variable.numpy(), np.float64)
    for total, group in zip(sums, variables):
      for value, variable in zip(total, group):
        variable.assign((value / num_batches).astype(variable.dtype))
  finally:
    for layer, momentum in zip(layers, momenta):
      layer.momentum = momentum
  return len(layers)
