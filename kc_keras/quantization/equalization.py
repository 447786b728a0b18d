"""Cross-layer range equalization: per-channel rescaling that keeps the float function and evens int8 ranges."""

import dataclasses
from typing import List, Tuple

import keras
import numpy as np

from kc_keras.quantization import errors
from kc_keras.quantization import layer_walk

# Layers between a BatchNormalization and the next Conv2D that commute with
# a positive per-channel scale (ReLU without a cap or threshold is checked
# separately): y(s x) = s y(x).
_SCALE_COMMUTING = (keras.layers.MaxPooling2D, keras.layers.Dropout)
# A channel whose range is below this fraction of the largest is left as is
# (a dead channel would otherwise get an unbounded scale).
EQUALIZE_MIN_RANGE_FRACTION = 1e-3


@dataclasses.dataclass(frozen=True)
class EqualizedPair:
  """One pair of layers `equalize_ranges` rescaled.

  Attributes:
    producer: the layer whose output channels were scaled by s (a
      BatchNormalization's gamma and beta, or a ReLU Dense layer's kernel
      columns and bias).
    consumer: the next layer, whose input channels were divided by s (a
      Conv2D, or the next Dense layer).
    scales: s, float32 `[C]`.
  """

  producer: str
  consumer: str
  scales: np.ndarray


def _positively_homogeneous(layer) -> bool:
  if isinstance(layer, keras.layers.ReLU):
    return layer.max_value is None and not layer.threshold
  return isinstance(layer, _SCALE_COMMUTING)


def equalizable_pairs(network: keras.Model
                      ) -> List[Tuple[keras.layers.BatchNormalization,
                                      List[keras.layers.Layer],
                                      keras.layers.Conv2D]]:
  """(BN, layers in between, Conv2D) in the backbone chain, in order.

  The BN feeds the Conv2D through layers that commute with a positive
  per-channel scale only (uncapped ReLU, max pooling, dropout), so scaling
  the BN's output channels by s and the Conv2D's input channels by 1 / s
  leaves the network's function unchanged.

  Raises:
    QuantizationError: the backbone is not a chain (`inference_layers`).
  """
  chain = layer_walk.inference_layers(network)
  pairs = []
  for i, layer in enumerate(chain):
    if not (isinstance(layer, keras.layers.BatchNormalization)
            and layer.scale and layer.center):
      continue
    between = []
    for following in chain[i + 1:]:
      if isinstance(following, keras.layers.Conv2D):
        pairs.append((layer, between, following))
        break
      if not _positively_homogeneous(following):
        break
      between.append(following)
  return pairs


def _is_relu_layer(layer) -> bool:
  return getattr(layer, "activation", None) is keras.activations.relu


def equalizable_head_pairs(network: keras.Model
                           ) -> List[Tuple[keras.layers.Dense,
                                           keras.layers.Dense]]:
  """(producer, consumer) Dense pairs of the head whose channels can be rescaled.

  A Dense producer with a ReLU activation (relu(s z) = s relu(z) for
  s > 0) feeding a Dense consumer directly (dropout is the identity at
  inference): the FC-FC head's fc1 -> fc2 -> classifier. The int8 file
  rounds each of these activations over one range per tensor; equal
  channel ranges make that range fit every channel. Structurally connected
  layers are left out. When their kernels were per-tensor BATCH_MATMULs,
  dividing some input rows by s up to ~100 rounded those rows to a few
  int8 levels (the Omniglot FC-SC student's int8 agreement fell sharply);
  in their integer-friendly forms (one scale per output unit or class)
  equalizing fc1 -> sc2 -> classifier still bought nothing measurable
  (docs/history/BENCHMARKS_LOG.md).
  """
  head = network.head
  layers = [head.hidden1, head.hidden2, head.classifier]
  return [(producer, consumer)
          for producer, consumer in zip(layers, layers[1:])
          if isinstance(producer, keras.layers.Dense)
          and isinstance(consumer, keras.layers.Dense)
          and _is_relu_layer(producer)]


def _scale_head_pair(producer: keras.layers.Dense,
                     consumer: keras.layers.Dense,
                     scales: np.ndarray) -> None:
  """Producer channel c (kernel column, bias) times s_c, consumer kernel row c over s_c."""
  producer.kernel.assign(producer.kernel.numpy() * scales[None, :])
  if producer.use_bias:
    producer.bias.assign(producer.bias.numpy() * scales)
  consumer.kernel.assign(consumer.kernel.numpy() / scales[:, None])


def _equal_range_scales(ranges: np.ndarray, strength: float) -> np.ndarray:
  """s_c = (max range / range_c) ** strength; 1 for dead channels."""
  largest = float(ranges.max())
  live = ranges > EQUALIZE_MIN_RANGE_FRACTION * largest
  scales = np.ones_like(ranges)
  scales[live] = (largest / ranges[live]) ** strength
  return scales


def equalize_ranges(network: keras.Model, images: np.ndarray,
                    strength: float, batch_size: int
                    ) -> List[EqualizedPair]:
  """Cross-layer range equalization, in place.

  For every `equalizable_pairs` (BN, ..., Conv2D), with r_c the largest
  value of channel c at the Conv2D's input over `images` (the float
  network, in inference mode):
    s_c = (max_c' r_c' / r_c) ** strength   (s_c = 1 where r_c is below
          `EQUALIZE_MIN_RANGE_FRACTION` of the largest),
    gamma_c, beta_c <- s_c gamma_c, s_c beta_c;  K[..., c, :] <- K[..., c, :] / s_c.
  Then, likewise, for every `equalizable_head_pairs` (Dense, Dense):
  the producer's kernel column and bias of channel c times s_c, the
  consumer's kernel rows of input channel c over s_c, with r_c measured at
  the producer's output (after the earlier pairs are rescaled).
  The float network computes the same function (the layers in between
  commute with a positive scale); the channels' ranges move towards the
  largest one, so an 8-bit rounding of the whole tensor (the `dynamic`
  file's per example, the `int8` file's calibrated one), whose step the
  largest channel sets, costs the small channels less. BN folding keeps
  the earlier conv on its per-channel grid, and a per-column scale keeps a
  Dense producer on its grid; the consumers' kernels leave theirs and are
  snapped again by the fine-tuning.

  Args:
    network: a `HierarchicalClassifier` with a chain backbone.
    images: float32 `[E, H, W, C]` measuring the ranges.
    strength: the exponent in [0, 1] (0: no change, 1: equal ranges).
    batch_size: images per forward pass.

  Returns:
    One `EqualizedPair` per rescaled pair.

  Raises:
    QuantizationError: `strength` outside [0, 1], no images, or a
      backbone that is not a chain.
  """
  if not 0.0 <= strength <= 1.0:
    raise errors.QuantizationError(
        f"equalize strength must be in [0, 1], got {strength!r}")
  if len(images) == 0:
    raise errors.QuantizationError("equalize_ranges needs images, got none")
  pairs = equalizable_pairs(network)
  backbone = network.backbone
  equalized = []
  for batch_norm, between, conv in pairs:
    last = between[-1] if between else batch_norm
    probe = keras.Model(backbone.inputs, last.output)
    ranges = np.zeros(int(conv.kernel.shape[-2]), np.float32)
    for start in range(0, len(images), batch_size):
      outputs = np.asarray(probe(images[start:start + batch_size],
                                 training=False))
      ranges = np.maximum(ranges, outputs.reshape(-1, ranges.size).max(0))
    scales = _equal_range_scales(ranges, strength)
    batch_norm.gamma.assign(batch_norm.gamma.numpy() * scales)
    batch_norm.beta.assign(batch_norm.beta.numpy() * scales)
    conv.kernel.assign(conv.kernel.numpy() / scales[:, None])
    equalized.append(EqualizedPair(batch_norm.name, conv.name, scales))
  for producer, consumer in equalizable_head_pairs(network):
    ranges = None
    for start in range(0, len(images), batch_size):
      x = backbone(images[start:start + batch_size], training=False)
      for layer in (network.head.hidden1, network.head.hidden2):
        x = layer(x)
        if layer is producer:
          break
      batch_max = np.asarray(x).max(0)
      ranges = batch_max if ranges is None else np.maximum(ranges, batch_max)
    scales = _equal_range_scales(ranges, strength)
    _scale_head_pair(producer, consumer, scales)
    equalized.append(EqualizedPair(producer.name, consumer.name, scales))
  return equalized
