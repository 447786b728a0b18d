"""The registry from a layer type to its integer-friendly form, and the op names export matches.

A layer's integer-friendly form computes the same function as its `call`
up to float rounding, written so that TFLite converts it to ops whose int8
tensors can hold it (one scale per output unit instead of one per tensor,
norms on an O(1) scale, biases and ReLUs the converter fuses). The float
layers never know: training runs `call`; the exporter builds its graph from
`integer_call`, which looks the form up here by the layer's type.

Each form runs under its layer's name scope, so its ops carry the layer's
name as a path segment. Those names are the contract with the converter's
op selection (`export_tflite_lib.float_node_names`, the quantization
debugger's deny list): `LOGITS_LAYERS` and `SMALL_CNN_STEM` are defined
here and nowhere else.
"""

from typing import Callable, Dict, Tuple

import keras
from keras import ops
import numpy as np

from kc_keras.modeling import backbones
from kc_keras.modeling import heads
from kc_keras.modeling.layers import self_paced
from kc_keras.modeling.layers import structurally_connected
from kc_keras.modeling.models import classifier
from kc_keras.quantization import errors
from kc_keras.quantization import input_folding

# The layers that produce the logits (`HierarchicalClassifier`'s names):
# `int8_float_head` keeps their ops float. A trained model's logits span a
# wide range, so one int8 step exceeds many top-2 margins (docs/BENCHMARKS.md,
# "Variants").
LOGITS_LAYERS = ("classifier", "self_paced_scale")
# small_cnn's stem, for `float_layers`: the first conv's few weights per
# channel (3x3x1 on Omniglot) are the int8 kernels that cost most agreement
# (docs/history/BENCHMARKS_LOG.md, "Why int8 and dynamic miss their goals").
SMALL_CNN_STEM = (backbones.INPUT_SCALING, "block0_conv0", "block0_bn0",
                  "block0_relu0")
# The widest block (s2) the SC classifier's form takes as a depthwise
# filter: XNNPACK's int8 depthwise kernels do up to 25 taps in one pass;
# from 26 on the depthwise form measured 27-43x slower than the
# BATCH_MATMUL, up to 25 faster (`bench/sc_classifier_form_bench.py`).
DEPTHWISE_MAX_UNITS = 25

# layer type -> (form(layer, inputs) -> outputs, whether `integer_call`
# opens the layer's name scope; a form that calls the layer itself gets
# Keras's own).
_FORMS: Dict[type, Tuple[Callable, bool]] = {}


def register(layer_type: type, scoped: bool = True) -> Callable:
  """Decorator: registers `form(layer, inputs)` as `layer_type`'s integer-friendly form.

  Args:
    layer_type: a Keras layer class; subclasses inherit the form.
    scoped: run the form under the layer's name scope (False for a form
      that calls the layer, which opens its own).

  Returns:
    The decorator, which returns the form unchanged.

  Raises:
    QuantizationError: `layer_type` already has a form.
  """

  def decorator(form: Callable) -> Callable:
    if layer_type in _FORMS:
      raise errors.QuantizationError(
          f"{layer_type.__name__} already has an integer-friendly form")
    _FORMS[layer_type] = (form, scoped)
    return form

  return decorator


def registered_types() -> Tuple[type, ...]:
  """The layer types with a registered form, in registration order."""
  return tuple(_FORMS)


def _lookup(layer) -> Tuple[Callable, bool]:
  for cls in type(layer).__mro__:
    if cls in _FORMS:
      return _FORMS[cls]
  raise errors.QuantizationError(
      f"layer {layer.name!r} of type {type(layer).__name__} has no "
      "integer-friendly form; register one in "
      "kc_keras/quantization/integer_forms.py")


def has_form(layer) -> bool:
  """Whether `layer`'s type (or a base class) has a registered form."""
  return any(cls in _FORMS for cls in type(layer).__mro__)


def integer_call(layer, inputs):
  """`layer(inputs, training=False)` in its integer-friendly form.

  Args:
    layer: a built layer whose type has a registered form.
    inputs: the layer's input.

  Returns:
    The layer's output, the same function as its `call` up to float
    rounding.

  Raises:
    QuantizationError: no form is registered for the layer's type.
  """
  form, scoped = _lookup(layer)
  if not scoped:
    return form(layer, inputs)
  with keras.name_scope(layer.name):
    return form(layer, inputs)


# ------------------------------------------------------------ Dense
@register(keras.layers.Dense, scoped=False)
def _dense(layer, inputs):
  """A Dense layer converts as it is: one FULLY_CONNECTED, a scale per unit."""
  return layer(inputs)


# ------------------------------------------------------------ block layers
def has_dense_form(layer: structurally_connected.VerticalBlockDense) -> bool:
  """Whether the block layer reads a [B, D] input (every block the same features)."""
  return getattr(layer, "input_rank", None) == 2


def dense_kernel(layer: structurally_connected.VerticalBlockDense):
  """The [D, M * U] kernel of the dense form; column m * U + u is block m's unit u.

  K_dense[:, m * U + u] = K_s[:, u] for u < x (the shared kernel, repeated
  in every block) and K[m, :, u - x] otherwise.

  Raises:
    QuantizationError: the layer reads a [B, M, D] input (no dense form).
  """
  if not has_dense_form(layer):
    raise errors.QuantizationError(
        f"{layer.name}: only a layer built on a [B, D] input has a dense "
        "form")
  parts = []
  if layer.shared_units:
    parts.append(ops.repeat(ops.expand_dims(layer.shared_kernel, 1),
                            layer.num_verticals, axis=1))
  if layer.kernel is not None:
    parts.append(ops.transpose(layer.kernel, (1, 0, 2)))
  blocks = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
  return ops.reshape(blocks, (-1, layer.num_verticals * layer.units))


def dense_bias(layer: structurally_connected.VerticalBlockDense):
  """The [M * U] bias of the dense form (None without biases)."""
  if not layer.use_bias:
    return None
  parts = []
  if layer.shared_units:
    parts.append(ops.repeat(ops.expand_dims(layer.shared_bias, 0),
                            layer.num_verticals, axis=0))
  if layer.bias is not None:
    parts.append(layer.bias)
  blocks = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
  return ops.reshape(blocks, (layer.num_verticals * layer.units,))


@register(structurally_connected.VerticalBlockDense)
def _vertical_block_dense(layer, inputs):
  """For a [B, D] input the blocks are one dense layer.

    out = reshape(act(x @ K_dense + b_dense), [B, M, U])
  (`dense_kernel`, `dense_bias`), which TFLite converts to a single
  FULLY_CONNECTED with its bias and ReLU fused and one int8 scale per
  output unit. `call`'s batched matmul converts to a BATCH_MATMUL (one
  scale for the whole kernel) whose output is rounded to int8 before the
  bias and the ReLU, over the pre-activation range: on the Omniglot
  student a step of 1.23 where the fused form rounds once over [0, max]
  (docs/BENCHMARKS.md, "The graph converted for int8"). A [B, M, D] input
  has no such form (a dense kernel would be M times larger); it runs
  `call`.
  """
  if len(inputs.shape) != 2:
    return layer.call(inputs)
  outputs = ops.matmul(inputs, dense_kernel(layer))
  if layer.use_bias:
    outputs = outputs + dense_bias(layer)
  return ops.reshape(layer.activation(outputs),
                     (-1, layer.num_verticals, layer.units))


# ------------------------------------------------------------ SC classifier
def has_depthwise_form(
    layer: structurally_connected.StructurallyConnectedClassifier) -> bool:
  """Whether the classifier converts to one depthwise convolution (s2 <= 25)."""
  return int(layer.kernel.shape[-1]) <= DEPTHWISE_MAX_UNITS


def depthwise_logits(layer, inputs, kernel, bias, order, relu=False):
  """[relu](kernel[:, c] . h[v(c)] + bias[c]) for the classes c in `order`.

  One VALID 1 x s2 depthwise convolution: image[b, 0, s, i] =
  h[b, v(order[i]), s], filter [1, s2, N, 1] = kernel[:, order]; the bias
  and the ReLU apply to the convolution's own output, so the converter
  fuses them. Returns [B, N] in `order`.
  """
  units = inputs.shape[-1]
  image = ops.transpose(
      ops.take(inputs, np.asarray(layer.class_to_vertical, np.int32)[order],
               axis=1), (0, 2, 1))
  image = ops.reshape(image, (-1, 1, units, layer.num_classes))
  filters = ops.expand_dims(
      ops.expand_dims(ops.take(kernel, order, axis=1), 0), -1)
  logits = ops.depthwise_conv(image, filters, strides=1, padding="valid")
  if bias is not None:
    logits = logits + ops.take(bias, order)
  if relu:
    logits = ops.relu(logits)
  return ops.reshape(logits, (-1, layer.num_classes))


@register(structurally_connected.StructurallyConnectedClassifier)
def _structurally_connected_classifier(layer, inputs):
  """For s2 <= `DEPTHWISE_MAX_UNITS`, one depthwise convolution over the classes.

  Each class's block activations are one channel of a 1 x s2 image,
    image[b, 0, s, c] = h[b, v(c), s],
    logit[b, c] = sum_s image[b, 0, s, c] W[c, s] + bias[c]
  (a VALID 1 x s2 depthwise filter W^T). TFLite converts it to one
  DEPTHWISE_CONV_2D with the bias fused and one int8 scale per class;
  `chunked_logits`' einsum converts to a BATCH_MATMUL with one scale for the whole
  kernel whose output is rounded to int8 before a separate bias ADD is
  rounded again (docs/BENCHMARKS.md, "The graph converted for int8").
  Wider blocks run `chunked_logits` (`call`'s training form splits the
  kernel per vertical; the chunked form is the one whose converted ops the
  quantization package models): XNNPACK runs depthwise filters of more than 25
  taps 27-43x slower than the BATCH_MATMUL.
  """
  if not has_depthwise_form(layer):
    return layer.chunked_logits(inputs)
  return depthwise_logits(
      layer, inputs, ops.transpose(layer.kernel),
      layer.bias if layer.use_bias else None,
      np.arange(layer.num_classes, dtype=np.int32))


def shifted_logits(layer, hidden, shift: float, factors=None):
  """max(k_c * logits_c, -shift) of a classifier layer, as a graph of its own.

  Computed as relu(k x + shift) - shift, with k x + shift one op whose ReLU
  TFLite fuses: in int8 its output is rounded over [0, max + shift]
  instead of the logits' full range, whose negative end (~-150 on the
  Omniglot student) sets a step of ~0.6 (docs/BENCHMARKS.md, "The graph
  converted for int8"). The classes run in reverse order (kernel columns
  and output gathers reversed): the same kernel as the logits' own op would
  let the converter merge the two and round their shared product over the
  full range.
    SC classifier with a depthwise form: the depthwise convolution, kernel
      rows times k_c, biases k_c b_c + shift.
    SC classifier without it: from `chunked_logits` (no precision gained).
    Dense classifier: relu(h (W k) + k b + shift) - shift.

  Args:
    layer: the head's classifier (a `StructurallyConnectedClassifier` or a
      Dense layer).
    hidden: the classifier's input.
    shift: c > 0.
    factors: optional k [N] (1 when None).

  Returns:
    [B, N], float32.

  Raises:
    QuantizationError: another layer type.
  """
  num_classes = int(layer.kernel.shape[-1] if isinstance(
      layer, keras.layers.Dense) else layer.num_classes)
  reverse = np.arange(num_classes - 1, -1, -1, dtype=np.int32)
  if isinstance(layer, structurally_connected.StructurallyConnectedClassifier):
    if not has_depthwise_form(layer):
      logits = ops.cast(layer.chunked_logits(hidden), "float32")
      if factors is not None:
        logits = logits * factors
      return ops.relu(logits + shift) - shift
    kernel = ops.transpose(layer.kernel)
    bias = (layer.bias if layer.use_bias
            else ops.zeros((num_classes,), "float32"))
    if factors is not None:
      kernel = kernel * factors[None, :]
      bias = bias * factors
    shifted = depthwise_logits(layer, hidden, kernel, bias + shift, reverse,
                                relu=True)
    return ops.take(shifted, reverse, axis=1) - shift
  if not isinstance(layer, keras.layers.Dense):
    raise errors.QuantizationError(
        f"layer {layer.name!r} of type {type(layer).__name__} has no shifted "
        "form; the floor needs a Dense or structurally connected classifier")
  kernel = ops.cast(layer.kernel, "float32")
  bias = ops.cast(layer.bias, "float32")
  if factors is not None:
    kernel = kernel * factors[None, :]
    bias = bias * factors
  shifted = ops.relu(
      ops.matmul(ops.cast(hidden, "float32"),
                 ops.take(kernel, reverse, axis=1))
      + ops.take(bias + shift, reverse))
  return ops.take(shifted, reverse, axis=1) - shift


# ------------------------------------------------------------ self-paced
def _vertical_layout(layer: self_paced.SelfPacedScale):
  """(c2v int32 [N], one-hot float32 [N, M], sqrt(N_v) float32 [M])."""
  c2v = np.asarray(layer.class_to_vertical, np.int32)
  sizes = np.bincount(c2v, minlength=layer.num_verticals)
  one_hot = np.eye(layer.num_verticals, dtype=np.float32)[c2v]
  return c2v, one_hot, np.sqrt(sizes).astype(np.float32)


def reference_scale(layer: self_paced.SelfPacedScale):
  """g_v [M]: gamma_v ('fixed', 'vertical') or the mean gamma_c of v ('class')."""
  _, one_hot, sqrt_sizes = _vertical_layout(layer)
  if layer.mode == "fixed":
    return ops.convert_to_tensor(sqrt_sizes)
  if layer.mode == "vertical":
    return layer.scale_values()
  # Mean gamma_c per vertical: one_hot^T gamma / N_v.
  return (ops.matmul(layer.scale_values()[None, :], one_hot)[0]
          / ops.convert_to_tensor(sqrt_sizes ** 2))


def relative_squared_norms(layer: self_paced.SelfPacedScale, x):
  """u_v = ||x_v||^2 / g_v^2 + eps / g_v^2, [B, M] (`reference_scale` g_v)."""
  _, one_hot, _ = _vertical_layout(layer)
  inverse_square = 1.0 / ops.square(reference_scale(layer))
  return (ops.matmul(ops.square(x), one_hot * inverse_square[None, :])
          + layer.epsilon * inverse_square[None, :])


def class_factors(layer: self_paced.SelfPacedScale):
  """gamma_c / g_v(c) [N] for 'class' (None in the other modes: 1)."""
  if layer.mode != "class":
    return None
  c2v, _, _ = _vertical_layout(layer)
  return layer.scale_values() / ops.take(reference_scale(layer), c2v)


def inference_scale(layer: self_paced.SelfPacedScale):
  """k_c = gamma_c / sqrt(moving_squared_norm_v(c) + eps) [N], 'per_batch'.

  Raises:
    QuantizationError: a per-image scale (it depends on the image).
  """
  if layer.normalization != "per_batch" or layer.mode == "none":
    raise errors.QuantizationError(
        f"{layer.name}: only a per-batch scale is a constant at inference")
  c2v, _, sqrt_sizes = _vertical_layout(layer)
  gamma = (ops.convert_to_tensor(sqrt_sizes) if layer.mode == "fixed"
           else layer.scale_values())
  if layer.mode != "class":
    gamma = ops.take(gamma, c2v)
  return gamma * ops.take(
      ops.rsqrt(ops.cast(layer.moving_squared_norm, "float32")
                + layer.epsilon), c2v)


def self_paced_scales(layer: self_paced.SelfPacedScale, logits):
  """(r, s) per class [B, N]: r = g_v / sqrt(||x_v||^2 + eps), s = 1 / r.

  The scale the layer's form applies (y = x k_c r, k_c = `class_factors`)
  and its inverse, both from u_v = `relative_squared_norms` (O(1) in int8):
  r = rsqrt(u), s = sqrt(u), gathered from verticals to classes.

  Raises:
    QuantizationError: mode 'none' (no scale).
  """
  if layer.mode == "none":
    raise errors.QuantizationError(f"{layer.name}: mode 'none' has no scale")
  c2v, _, _ = _vertical_layout(layer)
  u = relative_squared_norms(layer, ops.cast(logits, "float32"))
  return (ops.take(ops.rsqrt(u), c2v, axis=1),
          ops.take(ops.sqrt(u), c2v, axis=1))


@register(self_paced.SelfPacedScale)
def _self_paced_scale(layer, inputs):
  """The norm taken relative to a per-vertical reference g_v (`reference_scale`).

    u_v = sum_{c in v} x_c^2 / g_v^2 + epsilon / g_v^2,
    r_v = rsqrt(u_v) = g_v / sqrt(||x_v||^2 + epsilon),
    y_c = x_c * (gamma_c / g_v) * r_v      ('class'; gamma_c / g_v = 1 else).
  With `normalization='per_batch'` the scale is a constant at inference
  (`inference_scale`): y = x k, one multiply.
  `call` computes rsqrt(||x_v||^2) first: squared norms of logits reach
  1e5 while 1 / ||x_v|| is ~1e-2, so in int8 (one range per tensor) the
  norms round to multiples of ~1e3 and the inverse norms to one or two
  steps (docs/BENCHMARKS.md, "The graph converted for int8"). Here 1 / g_v^2
  is folded into the norm's one-hot matrix, so r_v is the scale the layer
  applies (the same order as the logits' own scale) and u_v = 1 / r_v^2:
  both O(1).
  """
  if layer.mode == "none":
    return inputs
  c2v, _, _ = _vertical_layout(layer)
  x = ops.cast(inputs, "float32")
  if layer.normalization == "per_batch":
    return ops.cast(x * inference_scale(layer)[None, :], layer.compute_dtype)
  scale = ops.take(ops.rsqrt(relative_squared_norms(layer, x)), c2v, axis=1)
  factors = class_factors(layer)
  if factors is not None:
    x = x * factors
  return ops.cast(x * scale, layer.compute_dtype)


# ------------------------------------------------------------ head, network
def head_hidden(head: heads.ClassificationHead, features):
  """The classifier's input, each hidden layer in its form (dropout is the identity)."""
  x = features
  for layer in (head.hidden1, head.hidden2):
    x = integer_call(layer, x)
  return x


def head_logits_of(head: heads.ClassificationHead, hidden):
  """The head's classifier on `head_hidden`'s output, in its form."""
  return integer_call(head.classifier, hidden)


@register(heads.ClassificationHead)
def _classification_head(layer, inputs):
  """`head_hidden`, then the classifier in its form (depthwise or Dense)."""
  return head_logits_of(layer, head_hidden(layer, inputs))


@register(classifier.HierarchicalClassifier, scoped=False)
def _hierarchical_classifier(layer, inputs):
  """The backbone with its input scaling folded (`input_folding.folded_features`),
  the head and the self-paced scale in their forms, each under its layer's
  own name scope (`sc2`, `classifier`, `self_paced_scale`: what
  `float_layers` and `int8_float_head` match).
  """
  features = input_folding.folded_features(layer.backbone, inputs)
  logits = integer_call(layer.head, features)
  return ops.cast(integer_call(layer.self_paced, logits), "float32")
