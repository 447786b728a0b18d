"""TFLite's activation rounding, simulated in a Keras forward pass (straight-through)."""

from typing import Callable, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from kc_keras.modeling import backbones
from kc_keras.modeling.layers import structurally_connected
from kc_keras.quantization import errors
from kc_keras.quantization import input_folding
from kc_keras.quantization import integer_forms
from kc_keras.quantization import kernels
from kc_keras.quantization import layer_walk

# Layers TFLite fuses into the op before them (no rounding in between).
_FUSED = (keras.layers.BatchNormalization, keras.layers.ReLU)
# Layers whose int8 output keeps their input's scale.
_SAME_SCALE = (keras.layers.MaxPooling2D, keras.layers.Flatten)
ACTIVATION_MODES = ("none", "dynamic", "int8")
# Layers with an int8 kernel, which the `dynamic` file runs as hybrid ops.
_KERNEL_LAYERS = kernels.PER_CHANNEL_LAYERS + kernels.PER_TENSOR_LAYERS
# 8-bit activations: 2^8 - 1 steps between the range's ends.
ACTIVATION_BITS = 8
ACTIVATION_STEPS = 2 ** ACTIVATION_BITS - 1
# The dynamic-range converter leaves kernels with fewer weights in float
# (its `min_elements` default; e.g. the 3x3x1x16 Omniglot stem).
DYNAMIC_MIN_WEIGHTS = 1024
# Largest |walk - network(x)| accepted before training (the walk is exact
# today; float reassociation would stay far below this).
WALK_TOLERANCE = 1e-4
IMAGES_POINT = "images"


def check_activations(mode: str) -> str:
  """Returns `mode` if it is one of `ACTIVATION_MODES`.

  Raises:
    QuantizationError: any other value.
  """
  return errors.check_choice("activations", mode, ACTIVATION_MODES)


class ActivationSimulator:
  """`network(x)` at inference with TFLite's activation rounding (straight-through).

  mode='dynamic' (the `dynamic` file's hybrid ops): the input of each
  Conv2D / Dense / SC form whose kernel has >= `min_elements` weights (the
  converter leaves smaller ones float) is rounded per example to 8 bits
  over [min(x_i, 0), max(x_i, 0)], step (max - min) / 255; the input of a
  BATCH_MATMUL form (a block layer on [B, M, D] inputs, an SC classifier
  with s2 > 25) likewise per row (one example and vertical).
  mode='int8' (full integer): the images and the output of every fused op
  (conv+BN+ReLU, Dense with its activation, input scaling, pooling means)
  are rounded to 8 bits over the range the converter calibrates: min/max
  over the representative images (`calibrate`); the logits over
  [max(min, logit_floor), max] (the floored file's range). Layers of
  `float_layers` (ops the file keeps float) are not rounded.
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
      (`input_folding.has_input_scaling_conv`). False simulates a file
      without the fold (`bench/int8_rounding_probe.py` measures what the
      fold saves).
    float_layers: int8 only: names of layers whose outputs stay float.

  Raises:
    QuantizationError: unknown mode, or a backbone that is not a chain.
  """

  def __init__(self, network: keras.Model, mode: str = "none",
               logit_floor: Optional[float] = None,
               min_elements: int = DYNAMIC_MIN_WEIGHTS,
               fold_input_scaling: Optional[bool] = None,
               float_layers: Sequence[str] = ()):
    check_activations(mode)
    self.network = network
    self.mode = mode
    self.logit_floor = logit_floor
    self.min_elements = min_elements
    self.float_layers = frozenset(float_layers)
    self.fold_input_scaling = (
        input_folding.has_input_scaling_conv(network.backbone)
        if fold_input_scaling is None else fold_input_scaling)
    self.layers = (layer_walk.inference_layers(network) if mode != "none"
                   else [])
    self.points = self._int8_points() if mode == "int8" else []
    # Written inside a replica's step (the periodic recalibration of
    # fine-tuning): every replica computes the same ranges.
    self.ranges = {
        name: tuple(keras.Variable(0.0, trainable=False,
                                   aggregation="only_first_replica",
                                   name=f"{name}_{end}")
                    for end in ("low", "high"))
        for name in self.points}

  def _int8_points(self) -> List[str]:
    """'images' and each layer whose output TFLite rounds to int8."""
    points = [IMAGES_POINT]
    for layer, following in zip(self.layers, self.layers[1:] + [None]):
      if isinstance(following, _FUSED) or isinstance(layer, _SAME_SCALE):
        continue
      if layer is self.network.self_paced or layer.name in self.float_layers:
        continue
      # The export of the snapped network folds it into the first conv (no
      # rounding there; the kernel is on its grid once snapped).
      if layer.name == backbones.INPUT_SCALING and self.fold_input_scaling:
        continue
      points.append(layer.name)
    return points

  def variables(self) -> List[keras.Variable]:
    """The calibrated ranges' variables (low, high per point)."""
    return [v for pair in self.ranges.values() for v in pair]

  def _is_hybrid(self, layer) -> bool:
    """Whether the `dynamic` file runs `layer` as a hybrid (int8-weight) op."""
    if not isinstance(layer, _KERNEL_LAYERS):
      return False
    kernel = layer.kernel
    return (kernel is not None
            and int(np.prod(kernel.shape)) >= self.min_elements)

  def _walk(self, images, on_point: Callable, round_inputs: bool):
    """The layers in order; `on_point(name, x)` at each int8 point."""
    x = on_point(IMAGES_POINT, images) if self.points else images
    for layer in self.layers:
      if round_inputs and self._is_hybrid(layer):
        x = (round_per_row(x) if _is_batch_matmul(layer)
             else round_per_example(x))
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

  def calibrate(self, images, batch_size: int) -> None:
    """Sets the int8 ranges to min/max over `images` of the float network.

    As the converter calibrates: every range holds 0; the logits' minimum
    is raised to `logit_floor` when the floor is above it. TensorFlow ops
    only, so a training step can recalibrate inside its graph.

    Args:
      images: float32 `[E, H, W, C]` (an array or a tensor).
      batch_size: images per forward pass.
    """
    if self.mode != "int8":
      return
    images = tf.convert_to_tensor(images, tf.float32)
    low = {n: tf.constant(0.0) for n in self.points}
    high = {n: tf.constant(0.0) for n in self.points}

    def record(name, x):
      low[name] = tf.minimum(low[name], tf.reduce_min(x))
      high[name] = tf.maximum(high[name], tf.reduce_max(x))
      return x

    for start in range(0, int(images.shape[0]), batch_size):
      self._walk(images[start:start + batch_size], record, round_inputs=False)
    logits = self.network.head.classifier.name
    if self.logit_floor is not None and logits in low:
      low[logits] = tf.maximum(low[logits], float(self.logit_floor))
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
    return not integer_forms.has_dense_form(layer)
  if isinstance(layer, structurally_connected.StructurallyConnectedClassifier):
    return not integer_forms.has_depthwise_form(layer)
  return False


def round_per_row(x):
  """x rounded per row (last axis), as the hybrid BATCH_MATMUL rounds its left operand.

  One row = one example and vertical ([B, M, D] inputs of the
  BATCH_MATMUL forms: block layers, an SC classifier with s2 > 25).
  """
  return _round_over(x, [-1])


def round_per_example(x):
  """x rounded per example (all axes but the batch), as hybrid Conv2D / Dense / depthwise do."""
  return _round_over(x, list(range(1, len(x.shape))))

