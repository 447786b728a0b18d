"""Tests for quantization.batch_norm_folding against an explicit convolution."""

import keras
import numpy as np

from kc_keras.quantization import batch_norm_folding


def test_fold_batch_norm_equals_unfolded_network():
  rng = np.random.default_rng(1)
  inputs = keras.Input((6, 6, 3))
  conv = keras.layers.Conv2D(5, 3, padding="same", use_bias=False,
                             name="conv")
  bn = keras.layers.BatchNormalization(epsilon=1e-3, name="bn")
  model = keras.Model(inputs, bn(conv(inputs)))
  bn.set_weights([rng.uniform(-2, 2, 5), rng.normal(size=5),
                  rng.normal(size=5), rng.uniform(0.1, 3, 5)])
  images = rng.uniform(size=(2, 6, 6, 3)).astype(np.float32)
  kernel, bias = batch_norm_folding.fold_batch_norm(
      conv.kernel.numpy(), *[w.numpy() for w in bn.weights], bn.epsilon)
  # Dense reference: every output pixel as an explicit sum.
  padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
  expected = np.zeros((2, 6, 6, 5), np.float64)
  for i in range(6):
    for j in range(6):
      patch = padded[:, i:i + 3, j:j + 3, :]
      expected[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, kernel)
  expected += bias
  np.testing.assert_allclose(model(images, training=False), expected,
                             atol=1e-5)
  assert [(c.name, b.name)
          for c, b in batch_norm_folding.conv_batch_norm_pairs(model)] == [
              ("conv", "bn")]
  folded = batch_norm_folding.folded_kernels(model)
  np.testing.assert_array_equal(folded["conv"], kernel)
