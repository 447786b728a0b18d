"""Which weights the converter stores as int8, on which grid, and snapping them there."""

import dataclasses
from typing import List

import keras
import numpy as np
import tensorflow as tf

from kc_keras.modeling.layers import structurally_connected
from kc_keras.quantization import errors
from kc_keras.quantization import grids
from kc_keras.quantization import integer_forms
from kc_keras.quantization import layer_walk

# Keras layers whose kernel the converter quantizes per output channel (the
# kernel's last axis: CONV_2D and FULLY_CONNECTED, in `dynamic` and `int8`).
PER_CHANNEL_LAYERS = (keras.layers.Conv2D, keras.layers.Dense)
# The structurally connected layers' weights are BATCH_MATMUL operands and
# ADD constants when they run `call` / `chunked_logits` (a block layer on
# [B, M, D] inputs, a classifier wider than `integer_forms.DEPTHWISE_MAX_UNITS`), which the
# converter quantizes per tensor (measured on the converter's output,
# tests/quantization/kernels_test.py): `dynamic` stores their kernels
# symmetric (biases stay float); `int8` stores kernels and biases
# asymmetric. The two files need different grids, hence `WEIGHT_TARGETS`.
# In their integer-friendly forms (`integer_forms`) they are a
# FULLY_CONNECTED quantized per output unit (m, u) (`PER_BLOCK_CHANNEL`)
# and a DEPTHWISE_CONV_2D quantized per class (`PER_ROW`), in both files.
PER_TENSOR_LAYERS = (structurally_connected.VerticalBlockDense,
                     structurally_connected.StructurallyConnectedClassifier)
# The file whose weights the snapped network reproduces exactly (they
# differ only on `PER_TENSOR_LAYERS`).
WEIGHT_TARGETS = ("dynamic", "int8")


@dataclasses.dataclass(frozen=True)
class QuantizedKernel:
  """A weight the converter stores as int8, and the grid it uses.

  Attributes:
    layer: the Keras layer's name.
    variable: the weight (a kernel, or an `int8`-target SC bias).
    scheme: one of `grids.SCHEMES`.
  """

  layer: str
  variable: keras.Variable
  scheme: str = grids.PER_CHANNEL

  def quantize(self, value) -> tf.Tensor:
    """`value` rounded to this weight's grid, in float (`grids.fake_quantize`)."""
    return grids.fake_quantize(value, self.scheme)


def check_weight_target(weight_target: str) -> str:
  """Returns `weight_target` if it is one of `WEIGHT_TARGETS`.

  Raises:
    QuantizationError: any other value.
  """
  return errors.check_choice("weight_target", weight_target, WEIGHT_TARGETS)


def quantized_kernels(network: keras.Model, weight_target: str = "dynamic"
                      ) -> List[QuantizedKernel]:
  """The weights the converter rounds to int8 in the `weight_target` file.

  Conv2D / Dense kernels: PER_CHANNEL (both files). An SC classifier with
  a depthwise form (`integer_forms.has_depthwise_form`): its kernel
  PER_ROW. A `VerticalBlockDense` with a dense form
  (`integer_forms.has_dense_form`): its kernel PER_BLOCK_CHANNEL and its
  shared kernel PER_CHANNEL. In both files; their biases are int32 there
  (scale = input scale x weight scale) and are not snapped. The other SC
  layers (`PER_TENSOR_LAYERS` as BATCH_MATMULs): their kernels
  PER_TENSOR_SYMMETRIC for `dynamic`; PER_TENSOR_ASYMMETRIC for `int8`,
  with their biases (int8 ADD constants); a block layer's shared kernel is
  not measured and stays float (`unsnapped_kernels` lists it).

  Args:
    network: a built network.
    weight_target: one of `WEIGHT_TARGETS`.

  Returns:
    `QuantizedKernel`s in layer order.

  Raises:
    QuantizationError: an unknown `weight_target`.
  """
  check_weight_target(weight_target)
  per_tensor = (grids.PER_TENSOR_SYMMETRIC if weight_target == "dynamic"
                else grids.PER_TENSOR_ASYMMETRIC)
  kernels = []
  for layer in layer_walk.all_layers(network):
    if isinstance(layer, PER_CHANNEL_LAYERS):
      kernels.append(QuantizedKernel(layer.name, layer.kernel))
    elif (isinstance(layer,
                     structurally_connected.StructurallyConnectedClassifier)
          and integer_forms.has_depthwise_form(layer)):
      kernels.append(QuantizedKernel(layer.name, layer.kernel, grids.PER_ROW))
    elif (isinstance(layer, structurally_connected.VerticalBlockDense)
          and integer_forms.has_dense_form(layer)):
      kernels.extend(
          QuantizedKernel(layer.name, w, scheme) for w, scheme in (
              (layer.kernel, grids.PER_BLOCK_CHANNEL),
              (layer.shared_kernel, grids.PER_CHANNEL)) if w is not None)
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
