"""BatchNorm folded into the conv before it, as the converter does before rounding kernels."""

from typing import Dict, List, Tuple

import keras
import numpy as np

from kc_keras.quantization import kernels as kernels_lib
from kc_keras.quantization import layer_walk


def fold_batch_norm(kernel: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                    mean: np.ndarray, variance: np.ndarray, epsilon: float
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """Folds an inference-mode BatchNorm into the conv before it.

  BN(conv(x, W)) = conv(x, W * m) + (beta - mean * m) with
  m = gamma / sqrt(variance + epsilon), per output channel: what the TFLite
  converter computes before it rounds the conv kernel to int8. m scales
  each output channel, so a kernel on its per-channel int8 grid stays on
  the grid of the folded kernel (s_c becomes |m_c| s_c).

  Args:
    kernel: `[..., C]` conv kernel without bias.
    gamma, beta, mean, variance: `[C]` BN weights and moving statistics.
    epsilon: the BN epsilon.

  Returns:
    `(folded kernel [..., C], bias [C])`, float32.
  """
  multiplier = (np.asarray(gamma, np.float32)
                / np.sqrt(np.asarray(variance, np.float32)
                          + np.float32(epsilon)))
  folded = np.asarray(kernel, np.float32) * multiplier
  bias = np.asarray(beta, np.float32) - np.asarray(mean, np.float32) * multiplier
  return folded.astype(np.float32), bias.astype(np.float32)


def conv_batch_norm_pairs(network: keras.Model
                          ) -> List[Tuple[keras.layers.Conv2D,
                                          keras.layers.BatchNormalization]]:
  """Each bias-free Conv2D whose output feeds only a BatchNormalization.

  These are the pairs the converter folds (`fold_batch_norm`).
  """
  layers = layer_walk.all_layers(network)
  pairs = []
  for layer in layers:
    if not isinstance(layer, keras.layers.BatchNormalization):
      continue
    for conv in layers:
      if (isinstance(conv, keras.layers.Conv2D) and not conv.use_bias
          and len(conv._inbound_nodes) == 1  # pylint: disable=protected-access
          and layer.input is conv.output):
        pairs.append((conv, layer))
  return pairs


def folded_kernels(network: keras.Model) -> Dict[str, np.ndarray]:
  """Layer name -> the kernel as the converter quantizes it (BN folded in).

  Conv2D layers followed by a BatchNormalization get `fold_batch_norm`;
  every other Conv2D / Dense kernel is returned as is (block layers'
  dense forms are not included).
  """
  kernels = {layer.name: np.asarray(layer.kernel.numpy(), np.float32)
             for layer in layer_walk.all_layers(network)
             if isinstance(layer, kernels_lib.PER_CHANNEL_LAYERS)}
  for conv, bn in conv_batch_norm_pairs(network):
    kernels[conv.name], _ = fold_batch_norm(
        kernels[conv.name], bn.gamma.numpy(), bn.beta.numpy(),
        bn.moving_mean.numpy(), bn.moving_variance.numpy(), bn.epsilon)
  return kernels
