"""Quantization-aware fine-tuning: trains a network on the int8 weight grid TFLite uses, then snaps it there."""

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from export import export_tflite_lib
from kc_keras.configs import kc_config
from kc_keras.configs import trainer as trainer_cfg
from kc_keras.dataloaders import factory
from kc_keras.dataloaders import labels as labels_lib
from kc_keras.dataloaders import pipeline
from kc_keras.losses import sigmoid_cross_entropy
from kc_keras.modeling import backbones
from kc_keras.modeling.layers import structurally_connected
from kc_keras.training import evaluate as evaluate_lib
from kc_keras.training import modes
from kc_keras.training import optimizers
from kc_keras.training import restore
from kc_keras.utils import files

# TFLite's int8 weights: symmetric, narrow range [-127, 127], one scale per
# output channel, scale = max|w| / 127 (measured on the converter's output,
# `tests/export/quantization_aware_lib_test.py`); the backbones' fold checks
# the same grid.
INT8_WEIGHT_MAX = backbones.INT8_KERNEL_LEVELS
# Keras layers whose kernel the converter quantizes per output channel (the
# kernel's last axis: CONV_2D and FULLY_CONNECTED, in `dynamic` and `int8`).
PER_CHANNEL_LAYERS = (keras.layers.Conv2D, keras.layers.Dense)
# The structurally connected layers' weights are BATCH_MATMUL operands and
# ADD constants, which the converter quantizes per tensor (measured on the
# converter's output, `tests/export/quantization_aware_lib_test.py`):
# `dynamic` stores their kernels symmetric (scale max|w| / 127, zero point
# 0; biases stay float); `int8` stores kernels and biases asymmetric over
# [min(w, 0), max(w, 0)] in 255 steps, levels [-128, 127], zero point
# round(-128 - min / scale). The two files need different grids, hence
# `WEIGHT_TARGETS`.
# The export converts a block layer that reads [B, D] features and an SC
# classifier with s2 <= 25 in their quantizable forms (`quantizable_call`):
# a FULLY_CONNECTED quantized per output unit (m, u) (`PER_BLOCK_CHANNEL`)
# and a DEPTHWISE_CONV_2D quantized per class (`PER_ROW`), in both files;
# a block layer on [B, M, D] inputs and a wider classifier stay per-tensor
# BATCH_MATMULs.
PER_TENSOR_LAYERS = (structurally_connected.VerticalBlockDense,
                     structurally_connected.StructurallyConnectedClassifier)
INT8_LEVEL_MIN = -128
INT8_LEVEL_MAX = 127
INT8_ASYMMETRIC_STEPS = INT8_LEVEL_MAX - INT8_LEVEL_MIN
# The file whose weights the snapped network reproduces exactly (they
# differ only on `PER_TENSOR_LAYERS`).
WEIGHT_TARGETS = ("dynamic", "int8")
PER_CHANNEL = "per_channel"
# A block kernel [M, D, U] as its dense form [D, M * U] is quantized:
# one scale per (m, u), over the input axis D.
PER_BLOCK_CHANNEL = "per_block_channel"
# The SC classifier's kernel [N, s2] as its depthwise filter: one scale per
# class (row), over s2.
PER_ROW = "per_row"
PER_TENSOR_SYMMETRIC = "per_tensor_symmetric"
PER_TENSOR_ASYMMETRIC = "per_tensor_asymmetric"
CHECKPOINT_NAME = "ckpt"
SUMMARY_FILE = "qat_summary.json"
# Metrics of `evaluate_scores` copied into the summary.
SUMMARY_METRICS = ("top1", "top5", "mpvap", "num_examples")


class QuantizationAwareError(ValueError):
  """A fine-tuning cannot run as asked; the message names the offending input."""


@dataclasses.dataclass(frozen=True)
class QuantizedKernel:
  """A weight the converter stores as int8, and the grid it uses.

  Attributes:
    layer: the Keras layer's name.
    variable: the weight (a kernel, or an `int8`-target SC bias).
    scheme: `PER_CHANNEL` (the last axis is the output channel),
      `PER_BLOCK_CHANNEL` (a [M, D, U] block kernel, channel (m, u)),
      `PER_ROW` (the SC classifier's [N, s2] kernel, channel = class),
      `PER_TENSOR_SYMMETRIC` or `PER_TENSOR_ASYMMETRIC`.
  """

  layer: str
  variable: keras.Variable
  scheme: str = PER_CHANNEL

  def quantize(self, value) -> tf.Tensor:
    """`value` rounded to this weight's grid, in float (`fake_quantize`)."""
    return fake_quantize(value, self.scheme)


@dataclasses.dataclass(frozen=True)
class FineTuneResult:
  """What `fine_tune` wrote: the run directory and its summary."""

  output_dir: str
  checkpoint: str
  summary: Dict


# ------------------------------------------------------------ the int8 grid
def _round_half_away(x):
  # TFLite rounds with std::round (half away from zero); tf.round rounds
  # half to even, which differs on exact halves.
  return tf.sign(x) * tf.floor(tf.abs(x) + 0.5)


def channel_scales(kernel) -> tf.Tensor:
  """Per-output-channel int8 scales of a kernel, s_c = max|w[..., c]| / 127.

  Args:
    kernel: float `[..., C]`, the output channel last (Conv2D, Dense).

  Returns:
    float32 `[C]`.
  """
  kernel = tf.convert_to_tensor(kernel, tf.float32)
  axes = list(range(len(kernel.shape) - 1))
  return tf.reduce_max(tf.abs(kernel), axis=axes) / INT8_WEIGHT_MAX


def fake_quantize_kernel(kernel) -> tf.Tensor:
  """The kernel rounded to its per-channel int8 grid, in float.

  q(w)[..., c] = clip(round(w[..., c] / s_c), -127, 127) * s_c with
  s_c = max|w[..., c]| / 127 (a channel of zeros stays zero). Straight-
  through: used forward only; `QuantizationAwareTrainer` applies the
  gradient taken at q(w) to the float weights.

  Args:
    kernel: float `[..., C]`.

  Returns:
    float32, the shape of `kernel`.
  """
  kernel = tf.convert_to_tensor(kernel, tf.float32)
  scales = channel_scales(kernel)
  safe = tf.where(scales > 0, scales, tf.ones_like(scales))
  levels = tf.clip_by_value(_round_half_away(kernel / safe),
                            -INT8_WEIGHT_MAX, INT8_WEIGHT_MAX)
  return tf.where(scales > 0, levels * safe, tf.zeros_like(kernel))


def int8_kernel(kernel) -> Tuple[np.ndarray, np.ndarray]:
  """The int8 values and scales the converter stores for `kernel`.

  Args:
    kernel: float `[..., C]`.

  Returns:
    `(int8 [..., C], float32 scales [C])` with kernel ~ values * scales.
  """
  scales = channel_scales(kernel)
  safe = tf.where(scales > 0, scales, tf.ones_like(scales))
  levels = tf.clip_by_value(
      _round_half_away(tf.convert_to_tensor(kernel, tf.float32) / safe),
      -INT8_WEIGHT_MAX, INT8_WEIGHT_MAX)
  return levels.numpy().astype(np.int8), scales.numpy()


def tensor_quantization(weights, scheme: str) -> Tuple[tf.Tensor, tf.Tensor]:
  """The converter's per-tensor int8 scale and zero point of `weights`.

  symmetric: s = max|w| / 127, z = 0;
  asymmetric: lo = min(min w, 0), hi = max(max w, 0), s = (hi - lo) / 255,
  z = round(-128 - lo / s) (std::round), as the converter nudges it.

  Args:
    weights: float, any shape.
    scheme: `PER_TENSOR_SYMMETRIC` or `PER_TENSOR_ASYMMETRIC`.

  Returns:
    `(scale, zero_point)`, float32 scalars (the zero point is integral).

  Raises:
    QuantizationAwareError: another scheme.
  """
  weights = tf.convert_to_tensor(weights, tf.float32)
  if scheme == PER_TENSOR_SYMMETRIC:
    return (tf.reduce_max(tf.abs(weights)) / INT8_WEIGHT_MAX,
            tf.constant(0.0))
  if scheme != PER_TENSOR_ASYMMETRIC:
    raise QuantizationAwareError(
        f"scheme={scheme!r} is not a per-tensor scheme; use "
        f"{PER_TENSOR_SYMMETRIC!r} or {PER_TENSOR_ASYMMETRIC!r}")
  low = tf.minimum(tf.reduce_min(weights), 0.0)
  high = tf.maximum(tf.reduce_max(weights), 0.0)
  scale = (high - low) / INT8_ASYMMETRIC_STEPS
  safe = tf.where(scale > 0, scale, 1.0)
  zero_point = tf.clip_by_value(_round_half_away(INT8_LEVEL_MIN - low / safe),
                                INT8_LEVEL_MIN, INT8_LEVEL_MAX)
  return scale, zero_point


def _tensor_levels(weights, scheme: str):
  """(levels, scale, zero point) of a per-tensor scheme; levels float32."""
  weights = tf.convert_to_tensor(weights, tf.float32)
  scale, zero_point = tensor_quantization(weights, scheme)
  safe = tf.where(scale > 0, scale, 1.0)
  low = (-INT8_WEIGHT_MAX if scheme == PER_TENSOR_SYMMETRIC
         else INT8_LEVEL_MIN)
  levels = tf.clip_by_value(_round_half_away(weights / safe + zero_point),
                            low, INT8_LEVEL_MAX)
  return levels, scale, zero_point


def fake_quantize(weights, scheme: str = PER_CHANNEL) -> tf.Tensor:
  """`weights` rounded to the converter's int8 grid of `scheme`, in float.

  PER_CHANNEL: `fake_quantize_kernel`; PER_BLOCK_CHANNEL: the same on
  the [D, M * U] dense form of a [M, D, U] block kernel; PER_ROW: the same
  on the transpose (one scale per row). Per tensor, with s and z from
  `tensor_quantization`: q(w) = (clip(round(w / s + z), lo, 127) - z) * s,
  lo = -127 (symmetric) or -128 (asymmetric); all zeros stay zeros.

  Args:
    weights: float, any shape (`[..., C]` for PER_CHANNEL, `[M, D, U]` for
      PER_BLOCK_CHANNEL, `[N, s2]` for PER_ROW).
    scheme: one of PER_CHANNEL, PER_BLOCK_CHANNEL, PER_ROW,
      PER_TENSOR_SYMMETRIC, PER_TENSOR_ASYMMETRIC.

  Returns:
    float32, the shape of `weights`.
  """
  if scheme == PER_CHANNEL:
    return fake_quantize_kernel(weights)
  if scheme == PER_BLOCK_CHANNEL:
    # [M, D, U] -> [D, M, U]: the last two axes are the output units.
    blocks = tf.transpose(tf.convert_to_tensor(weights, tf.float32),
                          (1, 0, 2))
    dense = tf.reshape(blocks, (blocks.shape[0], -1))
    return tf.transpose(tf.reshape(fake_quantize_kernel(dense), blocks.shape),
                        (1, 0, 2))
  if scheme == PER_ROW:
    return tf.transpose(fake_quantize_kernel(
        tf.transpose(tf.convert_to_tensor(weights, tf.float32))))
  levels, scale, zero_point = _tensor_levels(weights, scheme)
  return tf.where(scale > 0, (levels - zero_point) * scale,
                  tf.zeros_like(levels))


def int8_tensor(weights, scheme: str) -> Tuple[np.ndarray, float, int]:
  """The int8 values, scale and zero point the converter stores per tensor.

  Args:
    weights: float, any shape.
    scheme: PER_TENSOR_SYMMETRIC or PER_TENSOR_ASYMMETRIC.

  Returns:
    `(int8 values, scale, zero_point)`, weights ~ (values - z) * s.
  """
  levels, scale, zero_point = _tensor_levels(weights, scheme)
  return (levels.numpy().astype(np.int8), float(scale),
          int(zero_point.numpy()))


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


# ------------------------------------------------------------ the network
def _all_layers(network: keras.Model) -> List[keras.layers.Layer]:
  # Nested models and custom layers (the head's hidden/classifier layers)
  # hold the kernels; Keras tracks them all in `_flatten_layers`.
  return list(network._flatten_layers(include_self=False, recursive=True))  # pylint: disable=protected-access


def check_weight_target(weight_target: str) -> str:
  """Returns `weight_target` if it is one of `WEIGHT_TARGETS`.

  Raises:
    QuantizationAwareError: any other value.
  """
  if weight_target not in WEIGHT_TARGETS:
    raise QuantizationAwareError(
        f"weight_target={weight_target!r}; use one of {WEIGHT_TARGETS}")
  return weight_target


def quantized_kernels(network: keras.Model, weight_target: str = "dynamic"
                      ) -> List[QuantizedKernel]:
  """The weights the converter rounds to int8 in the `weight_target` file.

  Conv2D / Dense kernels: PER_CHANNEL (both files). An SC classifier with
  a depthwise form (s2 <= 25; the export converts it to a
  DEPTHWISE_CONV_2D): its kernel PER_ROW. A `VerticalBlockDense` with a
  dense form (it reads [B, D] features; the export converts it to one
  FULLY_CONNECTED): its kernel PER_BLOCK_CHANNEL and its shared kernel
  PER_CHANNEL. In both files; their biases are int32 there (scale = input
  scale x weight scale) and are not snapped. The other SC layers
  (`PER_TENSOR_LAYERS` as BATCH_MATMULs: a block layer on [B, M, D] inputs,
  a wider classifier): their kernels PER_TENSOR_SYMMETRIC for `dynamic`;
  PER_TENSOR_ASYMMETRIC for `int8`, with their biases (int8 ADD
  constants); a block layer's shared kernel is not measured and stays
  float (`unsnapped_kernels` lists it).

  Args:
    network: a built network.
    weight_target: one of `WEIGHT_TARGETS`.

  Returns:
    `QuantizedKernel`s in layer order.

  Raises:
    QuantizationAwareError: an unknown `weight_target`.
  """
  check_weight_target(weight_target)
  per_tensor = (PER_TENSOR_SYMMETRIC if weight_target == "dynamic"
                else PER_TENSOR_ASYMMETRIC)
  kernels = []
  for layer in _all_layers(network):
    if isinstance(layer, PER_CHANNEL_LAYERS):
      kernels.append(QuantizedKernel(layer.name, layer.kernel))
    elif (isinstance(layer,
                     structurally_connected.StructurallyConnectedClassifier)
          and layer.has_depthwise_form):
      kernels.append(QuantizedKernel(layer.name, layer.kernel, PER_ROW))
    elif (isinstance(layer, structurally_connected.VerticalBlockDense)
          and layer.has_dense_form):
      kernels.extend(
          QuantizedKernel(layer.name, w, scheme) for w, scheme in (
              (layer.kernel, PER_BLOCK_CHANNEL),
              (layer.shared_kernel, PER_CHANNEL)) if w is not None)
    elif isinstance(layer, PER_TENSOR_LAYERS):
      weights = [layer.kernel]
      if weight_target == "int8":
        weights.append(layer.bias)
      kernels.extend(QuantizedKernel(layer.name, w, per_tensor)
                     for w in weights if w is not None)
  return kernels


def unsnapped_kernels(network: keras.Model, weight_target: str = "dynamic"
                      ) -> List[str]:
  """Paths of weights with >= 2 dims that `quantized_kernels` leaves float.

  E.g. a `VerticalBlockDense` bias for `dynamic` (float in that file too)
  or its shared kernel (not measured).
  """
  snapped = {id(k.variable)
             for k in quantized_kernels(network, weight_target)}
  return [w.path for w in network.weights
          if len(w.shape) >= 2 and id(w) not in snapped]


def conv_batch_norm_pairs(network: keras.Model
                          ) -> List[Tuple[keras.layers.Conv2D,
                                          keras.layers.BatchNormalization]]:
  """Each bias-free Conv2D whose output feeds only a BatchNormalization.

  These are the pairs the converter folds (`fold_batch_norm`).
  """
  layers = _all_layers(network)
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
             for layer in _all_layers(network)
             if isinstance(layer, PER_CHANNEL_LAYERS)}
  for conv, bn in conv_batch_norm_pairs(network):
    kernels[conv.name], _ = fold_batch_norm(
        kernels[conv.name], bn.gamma.numpy(), bn.beta.numpy(),
        bn.moving_mean.numpy(), bn.moving_variance.numpy(), bn.epsilon)
  return kernels


def snap_to_int8_grid(network: keras.Model,
                      weight_target: str = "dynamic") -> float:
  """Rounds every `quantized_kernels` weight to its int8 grid, in place.

  After this the converter's int8 rounding of these weights (BN folded or
  not) reproduces them: the `weight_target` file holds the Keras weights
  (the other file too, except the structurally connected layers').

  Args:
    network: a built network.
    weight_target: one of `WEIGHT_TARGETS`.

  Returns:
    The largest |change| of a weight.
  """
  change = 0.0
  for kernel in quantized_kernels(network, weight_target):
    before = kernel.variable.numpy()
    after = kernel.quantize(before).numpy()
    change = max(change, float(np.max(np.abs(after - before), initial=0.0)))
    kernel.variable.assign(after)
  return change


# ------------------------------------------------------------ equalization
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
    QuantizationAwareError: the backbone is not a chain (`inference_layers`).
  """
  chain = inference_layers(network)
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
  in their quantizable forms (one scale per output unit or class)
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
    QuantizationAwareError: `strength` outside [0, 1], no images, or a
      backbone that is not a chain.
  """
  if not 0.0 <= strength <= 1.0:
    raise QuantizationAwareError(
        f"equalize strength must be in [0, 1], got {strength!r}")
  if len(images) == 0:
    raise QuantizationAwareError("equalize_ranges needs images, got none")
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


# ------------------------------------------------------------ activations
def inference_layers(network: keras.Model) -> List[keras.layers.Layer]:
  """The network's layers in inference order, for a layer-by-layer forward.

  Backbone layers (a chain: each consumes the previous one's output), then
  the head's hidden1, hidden2 and classifier (its dropouts are the identity
  in inference), then the self-paced scale: `ClassificationHead.call` and
  `HierarchicalClassifier` at inference. `ActivationSimulator` checks the
  walk against `network(x)` once (`check_walk`).

  Raises:
    QuantizationAwareError: the backbone is not a chain of single layers
      (keras.applications backbones): name of the first layer that is not.
  """
  try:
    chain = backbones.chain_layers(network.backbone)
  except ValueError as e:
    raise QuantizationAwareError(
        f"activation simulation needs a chain backbone (small_cnn); {e}; use "
        "activations='none'") from None
  head = network.head
  return chain + [head.hidden1, head.hidden2, head.classifier,
                  network.self_paced]


# Layers TFLite fuses into the op before them (no rounding in between).
_FUSED = (keras.layers.BatchNormalization, keras.layers.ReLU)
# Layers whose int8 output keeps their input's scale.
_SAME_SCALE = (keras.layers.MaxPooling2D, keras.layers.Flatten)
ACTIVATION_MODES = ("none", "dynamic", "int8")
# Layers with an int8 kernel, which the `dynamic` file runs as hybrid ops.
_KERNEL_LAYERS = PER_CHANNEL_LAYERS + PER_TENSOR_LAYERS
# 8-bit activations: 2^8 - 1 steps between the range's ends.
ACTIVATION_BITS = 8
ACTIVATION_STEPS = 2 ** ACTIVATION_BITS - 1
# The dynamic-range converter leaves kernels with fewer weights in float
# (its `min_elements` default; e.g. the 3x3x1x16 Omniglot stem).
DYNAMIC_MIN_WEIGHTS = 1024
# Largest |walk - network(x)| accepted before training (the walk is exact
# today; float reassociation would stay far below this).
WALK_TOLERANCE = 1e-4


class ActivationSimulator:
  """`network(x)` at inference with TFLite's activation rounding (straight-through).

  mode='dynamic' (the `dynamic` file's hybrid ops): the input of each
  Conv2D / Dense / quantizable SC form whose kernel has >= `min_elements`
  weights (the converter leaves smaller ones float) is rounded per example
  to 8 bits over [min(x_i, 0), max(x_i, 0)], step (max - min) / 255; the
  input of a BATCH_MATMUL form (a block layer on [B, M, D] inputs, an SC
  classifier with s2 > 25) likewise per row (one example and vertical).
  mode='int8' (full integer): the images and the output of every fused op
  (conv+BN+ReLU, Dense with its activation, input scaling, pooling means)
  are rounded to 8 bits over the range the converter calibrates: min/max
  over the representative images (`calibrate`); the logits over
  [max(min, logit_floor), max] (the floored file's range).
  Forward value: the rounded one; gradient: the identity inside the range
  (`keras.quantizers.fake_quant_with_min_max_vars` for int8).

  Args:
    network: a `HierarchicalClassifier` with a chain backbone.
    mode: one of `ACTIVATION_MODES` ('none': the plain network).
    logit_floor: int8 only: the logit floor of the exported file, or None.
    min_elements: dynamic only: the converter's weight-count threshold.
    fold_input_scaling: int8 only: whether the simulated file folds
      small_cnn's input scaling into the first conv (no rounding of its
      output); None: as the export of a snapped network does
      (`backbones.has_input_scaling_conv`). False simulates a file without
      the fold (`bench/int8_rounding_probe.py` measures what the fold saves).

  Raises:
    QuantizationAwareError: unknown mode, or a backbone that is not a chain.
  """

  def __init__(self, network: keras.Model, mode: str = "none",
               logit_floor: Optional[float] = None,
               min_elements: int = DYNAMIC_MIN_WEIGHTS,
               fold_input_scaling: Optional[bool] = None):
    if mode not in ACTIVATION_MODES:
      raise QuantizationAwareError(
          f"activations={mode!r}; use one of {ACTIVATION_MODES}")
    self.network = network
    self.mode = mode
    self.logit_floor = logit_floor
    self.min_elements = min_elements
    self.fold_input_scaling = (
        backbones.has_input_scaling_conv(network.backbone)
        if fold_input_scaling is None else fold_input_scaling)
    self.layers = inference_layers(network) if mode != "none" else []
    self.points = self._int8_points() if mode == "int8" else []
    self.ranges = {name: (keras.Variable(0.0, trainable=False),
                          keras.Variable(0.0, trainable=False))
                   for name in self.points}

  def _int8_points(self) -> List[str]:
    """'images' and each layer whose output TFLite rounds to int8."""
    points = ["images"]
    for layer, following in zip(self.layers, self.layers[1:] + [None]):
      if isinstance(following, _FUSED) or isinstance(layer, _SAME_SCALE):
        continue
      if layer is self.network.self_paced:
        continue
      # The export of the snapped network folds it into the first conv (no
      # rounding there; the kernel is on its grid once snapped).
      if layer.name == backbones.INPUT_SCALING and self.fold_input_scaling:
        continue
      points.append(layer.name)
    return points

  def _is_hybrid(self, layer) -> bool:
    """Whether the `dynamic` file runs `layer` as a hybrid (int8-weight) op."""
    if not isinstance(layer, _KERNEL_LAYERS):
      return False
    kernel = layer.kernel
    return (kernel is not None
            and int(np.prod(kernel.shape)) >= self.min_elements)

  def _walk(self, images, on_point: Callable, round_inputs: bool):
    """The layers in order; `on_point(name, x)` at each int8 point."""
    x = on_point("images", images) if self.points else images
    for layer in self.layers:
      if round_inputs and self._is_hybrid(layer):
        x = (_round_per_row(x) if _is_batch_matmul(layer)
             else _round_per_example(x))
      x = layer(x, training=False)
      if layer.name in self.ranges:
        x = on_point(layer.name, x)
    return x

  def __call__(self, images):
    """Logits `[B, N]` with the simulated rounding."""
    if self.mode == "none":
      return self.network(images, training=False)

    def fake_quant(name, x):
      low, high = self.ranges[name]
      return keras.quantizers.fake_quant_with_min_max_vars(
          x, low, high, num_bits=ACTIVATION_BITS)

    return self._walk(images, fake_quant, self.mode == "dynamic")

  def calibrate(self, images: np.ndarray, batch_size: int) -> None:
    """Sets the int8 ranges to min/max over `images` of the float network.

    As the converter calibrates: every range holds 0; the logits' minimum
    is raised to `logit_floor` when the floor is above it.
    """
    if self.mode != "int8":
      return
    low = {n: 0.0 for n in self.points}
    high = {n: 0.0 for n in self.points}

    def record(name, x):
      low[name] = min(low[name], float(tf.reduce_min(x)))
      high[name] = max(high[name], float(tf.reduce_max(x)))
      return x

    for start in range(0, len(images), batch_size):
      self._walk(tf.constant(images[start:start + batch_size]), record,
                 round_inputs=False)
    logits = self.points[-1]
    if self.logit_floor is not None:
      low[logits] = max(low[logits], float(self.logit_floor))
    for name, (low_var, high_var) in self.ranges.items():
      low_var.assign(low[name])
      high_var.assign(high[name])

  def check_walk(self, images) -> float:
    """max |walk without rounding - network(images)| (0 when the walk is right)."""
    if self.mode == "none":
      return 0.0
    walked = self._walk(images, lambda name, x: x, round_inputs=False)
    return float(tf.reduce_max(tf.abs(
        walked - self.network(images, training=False))))


def _round_over(x, axes):
  """x rounded to 8 bits over [min(x, 0), max(x, 0)] taken over `axes` (STE).

  round((x - low) / step) * step + low with step = (high - low) / 255: the
  hybrid kernels' on-the-fly input quantization; the gradient passes
  straight through.
  """
  low = tf.minimum(tf.reduce_min(x, axis=axes, keepdims=True), 0.0)
  high = tf.maximum(tf.reduce_max(x, axis=axes, keepdims=True), 0.0)
  step = tf.where(high > low, (high - low) / ACTIVATION_STEPS,
                  tf.ones_like(high))
  rounded = tf.round((x - low) / step) * step + low
  return x + tf.stop_gradient(rounded - x)


def _is_batch_matmul(layer) -> bool:
  """Whether the export converts `layer` to a BATCH_MATMUL (its hybrid rounds per row)."""
  if isinstance(layer, structurally_connected.VerticalBlockDense):
    return not layer.has_dense_form
  if isinstance(layer, structurally_connected.StructurallyConnectedClassifier):
    return not layer.has_depthwise_form
  return False


def _round_per_row(x):
  """x rounded per row (last axis), as the hybrid BATCH_MATMUL rounds its left operand.

  One row = one example and vertical ([B, M, D] inputs of the
  BATCH_MATMUL forms: block layers, an SC classifier with s2 > 25).
  """
  return _round_over(x, [-1])


def _round_per_example(x):
  """x rounded per example (all axes but the batch), as hybrid Conv2D / Dense / depthwise do."""
  return _round_over(x, list(range(1, len(x.shape))))


# ------------------------------------------------------------ training
class QuantizationAwareTrainer:
  """Straight-through fine-tuning on the int8 weight grid.

  Each step sets every `quantized_kernels` weight to q(w) of its float
  copy w (`QuantizedKernel.quantize`: per channel for Conv2D / Dense, per
  tensor for the structurally connected layers), computes the loss of the network as
  it runs in inference mode (BatchNorm on its moving statistics, which
  the converter folds; no dropout), and applies the gradient taken at
  q(w) to w (the straight-through estimator: dq/dw := 1); the other
  trainable weights (biases, BN gamma/beta, self-paced scales) train as
  usual. BN's per-channel multiplier leaves the folded kernel on its grid,
  so freezing the statistics is what makes q(w) the converter's weights.

  loss = mean_i [CE(z_i, f_q(x_i)) + c * CE(p(f(x_i)), f_q(x_i))]
         + sum(network.losses),
  z the multi-hot labels, CE the run's `loss_type` (sigmoid or softmax),
  f_q the network in inference mode at the quantized weights, or
  `forward` (an `ActivationSimulator`: the activations rounded as well);
  the optional consistency term (weight c = `consistency_weight`) pulls
  f_q towards the float network's own probabilities p(f) (sigmoid or
  softmax of f at the quantized weights without activation rounding, no
  gradient through the target), which is what top-1 agreement between
  the float model and its TFLite file measures.

  Args:
    network: the trained network (modified in place).
    optimizer: a Keras optimizer (not built).
    loss_type: 'sigmoid' or 'softmax'.
    forward: images -> logits; default `network(x, training=False)`.
    consistency_weight: c >= 0 (0: labels only).
    weight_target: the file whose grid the weights train on
      (`quantized_kernels`).

  Raises:
    QuantizationAwareError: a negative `consistency_weight`, an unknown
      `weight_target`.
  """

  def __init__(self, network: keras.Model,
               optimizer: keras.optimizers.Optimizer,
               loss_type: str = "sigmoid",
               forward: Optional[Callable] = None,
               consistency_weight: float = 0.0,
               weight_target: str = "dynamic"):
    if not consistency_weight >= 0:
      raise QuantizationAwareError(
          f"consistency_weight must be >= 0, got {consistency_weight!r}")
    self.consistency_weight = float(consistency_weight)
    self.network = network
    self.forward = forward or (lambda x: network(x, training=False))
    self.optimizer = optimizer
    self.loss_type = loss_type
    self.num_classes = int(network.output.shape[-1])
    self.kernels = quantized_kernels(network, weight_target)
    self.shadows = [keras.Variable(k.variable.numpy(), trainable=True,
                                   name=f"{k.layer}_float_{k.variable.name}")
                    for k in self.kernels]
    shadow_of = {id(k.variable): s for k, s in zip(self.kernels,
                                                   self.shadows)}
    self.trainable = list(network.trainable_variables)
    self.targets = [shadow_of.get(id(v), v) for v in self.trainable]
    optimizer.build(self.targets)
    self._step = tf.function(self._train_step)

  def _quantize(self):
    for kernel, shadow in zip(self.kernels, self.shadows):
      kernel.variable.assign(kernel.quantize(shadow))

  def _train_step(self, images, label_ids):
    self._quantize()
    targets = labels_lib.multi_hot(label_ids, self.num_classes)
    with tf.GradientTape() as tape:
      logits = tf.cast(self.forward(images), tf.float32)
      per_example = sigmoid_cross_entropy.per_example_cross_entropy(
          targets, logits, self.loss_type)
      if self.consistency_weight:
        reference = tf.stop_gradient(tf.cast(
            self.network(images, training=False), tf.float32))
        probs = (tf.sigmoid(reference) if self.loss_type == "sigmoid"
                 else tf.nn.softmax(reference))
        per_example += self.consistency_weight * (
            sigmoid_cross_entropy.per_example_cross_entropy(
                probs, logits, self.loss_type))
      loss = tf.reduce_mean(per_example)
      if self.network.losses:
        loss += tf.add_n([tf.cast(l, tf.float32)
                          for l in self.network.losses])
    gradients = tape.gradient(loss, self.trainable)
    self.optimizer.apply_gradients(zip(gradients, self.targets))
    return loss

  def step(self, images, label_ids) -> float:
    """One optimisation step; returns the loss (at the quantized weights)."""
    return float(self._step(images, label_ids))

  def quantize(self) -> None:
    """Sets the network's kernels to q(w) of their float copies."""
    self._quantize()

  def finish(self) -> None:
    """Leaves the network with q(w) of the trained float weights."""
    self._quantize()


# ------------------------------------------------------------ the run
def evaluate_network(network: keras.Model, params: kc_config.ExperimentConfig,
                     hierarchy) -> Dict:
  """Eval-split top-1 / top-5 / mpvap of `network` (as `kc_keras.train --mode=eval`)."""
  source = factory.build_source(params.task.data)
  dataset = pipeline.build_dataset(
      source, "eval", params.task.data, training=False,
      global_batch_size=params.task.eval_batch_size)
  score = tf.function(lambda images, features: network(images,
                                                       training=False))
  metrics = evaluate_lib.evaluate_scores(
      score, dataset, hierarchy, steps=params.trainer.validation_steps)
  return {k: float(metrics[k]) for k in SUMMARY_METRICS if k in metrics}


def build_optimizer(params: kc_config.ExperimentConfig, steps: int,
                    learning_rate: float) -> keras.optimizers.Optimizer:
  """The run's optimizer (type, epsilon, clipping) at `learning_rate`, cosine to 0."""
  values = params.trainer.optimizer.as_dict()
  values.update(learning_rate=learning_rate, schedule="cosine",
                warmup_steps=0, final_learning_rate_ratio=0.0)
  return optimizers.build_optimizer(trainer_cfg.OptimizerConfig(**values),
                                    steps)


def _check_args(output_dir: str, steps: int, learning_rate: float,
                batch_size: Optional[int]) -> None:
  if not isinstance(steps, int) or steps < 1:
    raise QuantizationAwareError(f"steps must be an int >= 1, got {steps!r}")
  if not learning_rate > 0:
    raise QuantizationAwareError(
        f"learning_rate must be > 0, got {learning_rate!r}")
  if batch_size is not None and batch_size < 1:
    raise QuantizationAwareError(
        f"batch_size must be >= 1, got {batch_size!r}")
  if tf.io.gfile.exists(output_dir) and tf.io.gfile.listdir(output_dir):
    raise QuantizationAwareError(
        f"output_dir={output_dir!r} exists and is not empty; runs are never "
        "overwritten, pick a new directory")


def fine_tune(params: kc_config.ExperimentConfig, checkpoint_path: str,
              output_dir: str, steps: int, learning_rate: float = 1e-4,
              batch_size: Optional[int] = None, evaluate: bool = True,
              activations: str = "none",
              logit_floor: Optional[float] = None,
              representative_examples: int = 200,
              calibration_interval: int = 50,
              consistency_weight: float = 0.0,
              weight_target: Optional[str] = None,
              equalize_strength: float = 0.0,
              log: Callable[[str], None] = print,
              log_every: int = 50) -> FineTuneResult:
  """Fine-tunes a trained network on its int8 weight grid and writes a run dir.

  Restores the network exactly as the exporters do
  (`restore.load_network`: only the checkpoint's
  `model.student` branch), trains `steps` steps of
  `QuantizationAwareTrainer` on the TRAINING split (the run's
  augmentation, hard labels, the run's loss type and optimizer type at
  `learning_rate` with a cosine decay to 0), snaps the kernels to the grid,
  and writes `output_dir` with `ckpt-<source step + steps>` (same variable
  layout: `export.export_saved_model` and `export.parity_benchmark` take it
  as is), `checkpoint`, `hierarchy.json`, `params.yaml` and
  `qat_summary.json` (eval metrics before and after, loss, what was
  snapped). The saved network is plain float: its kernels are int8 values
  times their scales, which the converter's own rounding reproduces.

  The directory is written as a hidden sibling and renamed when complete,
  so a failure never leaves a half-written run.

  Args:
    params: the experiment config the checkpoint was trained with.
    checkpoint_path: a `ckpt-N` prefix or a model_dir.
    output_dir: the new run directory (must not exist, or be empty).
    steps: optimisation steps (>= 1).
    learning_rate: the peak learning rate.
    batch_size: default `task.train_batch_size`.
    evaluate: compute eval metrics before and after (the summary has them).
    activations: `ActivationSimulator` mode of the training forward pass:
      'none' (weights only), 'dynamic' or 'int8'.
    logit_floor: 'int8' only: the floor the file will be exported with.
    representative_examples: training images calibrating the 'int8' ranges
      and measuring `equalize_ranges` (`export_tflite_lib.training_images`,
      the converter's set).
    calibration_interval: 'int8' only: steps between recalibrations.
    consistency_weight: see `QuantizationAwareTrainer`.
    weight_target: the file whose weight grid is trained on and snapped to
      (`WEIGHT_TARGETS`; they differ only for structurally connected
      layers); default 'int8' when `activations='int8'`, else 'dynamic'.
    equalize_strength: > 0: `equalize_ranges` with this exponent on the
      `representative_examples` images before fine-tuning (0: off).
    log: progress lines.
    log_every: steps between progress lines.

  Returns:
    A `FineTuneResult`.

  Raises:
    QuantizationAwareError: `steps < 1`, `learning_rate <= 0`, a bad batch
      size, an existing non-empty `output_dir`, an unknown `activations`
      mode or `weight_target`, or a backbone it cannot simulate.
    restore.RestoreError: no checkpoint at `checkpoint_path`.
    hierarchy_lib.HierarchyError: the checkpoint's run records another
      hierarchy than the config.
  """
  _check_args(output_dir, steps, learning_rate, batch_size)
  if calibration_interval < 1 or representative_examples < 1:
    raise QuantizationAwareError(
        f"calibration_interval={calibration_interval} and "
        f"representative_examples={representative_examples} must be >= 1")
  if weight_target is None:
    weight_target = "int8" if activations == "int8" else "dynamic"
  check_weight_target(weight_target)
  if not 0.0 <= equalize_strength <= 1.0:
    raise QuantizationAwareError(
        f"equalize_strength must be in [0, 1], got {equalize_strength!r}")
  prefix = restore.resolve_checkpoint(checkpoint_path)
  network, hierarchy, restored, _ = restore.load_network(params, prefix)
  calibration = None
  if activations == "int8" or equalize_strength > 0:
    calibration = np.concatenate(list(export_tflite_lib.training_images(
        params.task.data, representative_examples)))
  equalized = []
  if equalize_strength > 0:
    equalized = equalize_ranges(network, calibration, equalize_strength,
                                params.task.eval_batch_size)
  simulator = ActivationSimulator(network, activations, logit_floor)
  summary = dict(source_checkpoint=restored, steps=steps,
                 learning_rate=learning_rate, activations=activations,
                 consistency_weight=consistency_weight,
                 logit_floor=logit_floor,
                 batch_size=batch_size or params.task.train_batch_size,
                 weight_target=weight_target,
                 equalize_strength=equalize_strength,
                 equalized=[dict(producer=e.producer, consumer=e.consumer,
                                 scale_min=float(e.scales.min()),
                                 scale_max=float(e.scales.max()))
                            for e in equalized],
                 snapped_kernels=[
                     k.variable.path
                     for k in quantized_kernels(network, weight_target)],
                 float_kernels=unsnapped_kernels(network, weight_target))
  if evaluate:
    summary["eval_before"] = evaluate_network(network, params, hierarchy)
    log(f"eval before: {summary['eval_before']}")
  trainer = QuantizationAwareTrainer(
      network, build_optimizer(params, steps, learning_rate),
      params.task.distillation.loss_type, forward=simulator,
      consistency_weight=consistency_weight, weight_target=weight_target)
  source = factory.build_source(params.task.data)
  dataset = pipeline.build_dataset(
      source, "train", params.task.data, training=True,
      global_batch_size=summary["batch_size"])
  losses = []
  for step, (images, features) in enumerate(dataset.take(steps), 1):
    if step == 1 and simulator.check_walk(images) > WALK_TOLERANCE:
      raise QuantizationAwareError(
          "the layer-by-layer forward of --activations differs from the "
          f"network by {simulator.check_walk(images)}: the network's call "
          "order changed; use activations='none'")
    if activations == "int8" and (step - 1) % calibration_interval == 0:
      trainer.quantize()
      simulator.calibrate(calibration, params.task.eval_batch_size)
    losses.append(trainer.step(images, features["label_ids"]))
    if step % log_every == 0 or step == steps:
      log(f"step {step}/{steps}: loss {np.mean(losses[-log_every:]):.4f}")
  trainer.finish()
  summary["loss_first"] = losses[0]
  summary["loss_last"] = float(np.mean(losses[-log_every:]))
  if evaluate:
    summary["eval_after"] = evaluate_network(network, params, hierarchy)
    log(f"eval after: {summary['eval_after']}")
  step_number = _source_step(restored) + steps
  checkpoint = write_run_dir(network, params, hierarchy, output_dir,
                             step_number, summary)
  return FineTuneResult(output_dir=output_dir, checkpoint=checkpoint,
                        summary=summary)


def _source_step(prefix: str) -> int:
  suffix = prefix.rsplit("-", 1)[-1]
  return int(suffix) if suffix.isdigit() else 0


def write_run_dir(network: keras.Model, params: kc_config.ExperimentConfig,
                  hierarchy, output_dir: str, step: int, summary: Dict) -> str:
  """Writes the run directory atomically (a hidden sibling, then a rename).

  The checkpoint mirrors training's layout, `model/student/...`, so every
  reader of training checkpoints (`restore.restore_model_weights`)
  restores the network from it.

  Returns:
    The checkpoint prefix inside `output_dir`.
  """
  with files.staged_directory(output_dir) as staging:
    holder = tf.train.Checkpoint(model=tf.train.Checkpoint(student=network))
    manager = tf.train.CheckpointManager(holder, staging, max_to_keep=1,
                                         checkpoint_name=CHECKPOINT_NAME)
    manager.save(checkpoint_number=step)
    hierarchy.save(os.path.join(staging, restore.HIERARCHY_FILE))
    modes.save_params(params, staging)
    files.atomic_write_json(os.path.join(staging, SUMMARY_FILE), summary)
  return os.path.join(output_dir, f"{CHECKPOINT_NAME}-{step}")
