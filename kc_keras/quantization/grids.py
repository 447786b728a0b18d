"""The int8 grids TFLite stores weights on, and rounding to them in float."""

from typing import Tuple

from keras import ops
import numpy as np
import tensorflow as tf

from kc_keras.quantization import errors

# TFLite's int8 kernels: symmetric, narrow range [-127, 127], one scale per
# output channel, s_c = max|w_c| / 127 (measured on the converter's output in
# tests/quantization/kernels_test.py).
INT8_KERNEL_LEVELS = 127
# The full int8 range, used by the asymmetric per-tensor grid.
INT8_LEVEL_MIN = -128
INT8_LEVEL_MAX = 127
INT8_ASYMMETRIC_STEPS = INT8_LEVEL_MAX - INT8_LEVEL_MIN
# Relative tolerance of "the kernel lies on its int8 grid".
GRID_TOLERANCE = 1e-5

# Schemes: how a weight is cut into channels that each get one scale.
# The last axis is the output channel (Conv2D, Dense kernels).
PER_CHANNEL = "per_channel"
# A block kernel [M, D, U] as its dense form [D, M * U]: one scale per
# (m, u), over the input axis D.
PER_BLOCK_CHANNEL = "per_block_channel"
# A [N, s2] kernel as its depthwise filter: one scale per row, over s2.
PER_ROW = "per_row"
# One scale for the whole tensor: symmetric (zero point 0, levels
# [-127, 127]) or asymmetric over [min(w, 0), max(w, 0)] (levels
# [-128, 127], zero point round(-128 - min / scale)).
PER_TENSOR_SYMMETRIC = "per_tensor_symmetric"
PER_TENSOR_ASYMMETRIC = "per_tensor_asymmetric"
SCHEMES = (PER_CHANNEL, PER_BLOCK_CHANNEL, PER_ROW, PER_TENSOR_SYMMETRIC,
           PER_TENSOR_ASYMMETRIC)


def round_half_away(x):
  """round(x) with halves away from zero: sign(x) floor(|x| + 0.5).

  TFLite rounds with std::round; tf.round rounds half to even, which
  differs on exact halves.
  """
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
  return tf.reduce_max(tf.abs(kernel), axis=axes) / INT8_KERNEL_LEVELS


def _channel_levels(kernel):
  """(levels clip(round(w / s_c), -127, 127), scales s_c, safe scales)."""
  kernel = tf.convert_to_tensor(kernel, tf.float32)
  scales = channel_scales(kernel)
  safe = tf.where(scales > 0, scales, tf.ones_like(scales))
  levels = tf.clip_by_value(round_half_away(kernel / safe),
                            -INT8_KERNEL_LEVELS, INT8_KERNEL_LEVELS)
  return levels, scales, safe


def fake_quantize_kernel(kernel) -> tf.Tensor:
  """The kernel rounded to its per-channel int8 grid, in float.

  q(w)[..., c] = clip(round(w[..., c] / s_c), -127, 127) * s_c with
  s_c = max|w[..., c]| / 127 (a channel of zeros stays zero).

  Args:
    kernel: float `[..., C]`.

  Returns:
    float32, the shape of `kernel`.
  """
  levels, scales, safe = _channel_levels(kernel)
  return tf.where(scales > 0, levels * safe, tf.zeros_like(levels))


def int8_kernel(kernel) -> Tuple[np.ndarray, np.ndarray]:
  """The int8 values and scales the converter stores for `kernel` (per channel).

  Args:
    kernel: float `[..., C]`.

  Returns:
    `(int8 [..., C], float32 scales [C])` with kernel ~ values * scales.
  """
  levels, scales, _ = _channel_levels(kernel)
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
    QuantizationError: another scheme.
  """
  weights = tf.convert_to_tensor(weights, tf.float32)
  if scheme == PER_TENSOR_SYMMETRIC:
    return (tf.reduce_max(tf.abs(weights)) / INT8_KERNEL_LEVELS,
            tf.constant(0.0))
  if scheme != PER_TENSOR_ASYMMETRIC:
    raise errors.QuantizationError(
        f"scheme={scheme!r} is not a per-tensor scheme; use "
        f"{PER_TENSOR_SYMMETRIC!r} or {PER_TENSOR_ASYMMETRIC!r}")
  low = tf.minimum(tf.reduce_min(weights), 0.0)
  high = tf.maximum(tf.reduce_max(weights), 0.0)
  scale = (high - low) / INT8_ASYMMETRIC_STEPS
  safe = tf.where(scale > 0, scale, 1.0)
  zero_point = tf.clip_by_value(round_half_away(INT8_LEVEL_MIN - low / safe),
                                INT8_LEVEL_MIN, INT8_LEVEL_MAX)
  return scale, zero_point


def _tensor_levels(weights, scheme: str):
  """(levels, scale, zero point) of a per-tensor scheme; levels float32."""
  weights = tf.convert_to_tensor(weights, tf.float32)
  scale, zero_point = tensor_quantization(weights, scheme)
  safe = tf.where(scale > 0, scale, 1.0)
  low = (-INT8_KERNEL_LEVELS if scheme == PER_TENSOR_SYMMETRIC
         else INT8_LEVEL_MIN)
  levels = tf.clip_by_value(round_half_away(weights / safe + zero_point),
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
    scheme: one of `SCHEMES`.

  Returns:
    float32, the shape of `weights`.

  Raises:
    QuantizationError: an unknown scheme.
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

  Raises:
    QuantizationError: another scheme.
  """
  levels, scale, zero_point = _tensor_levels(weights, scheme)
  return (levels.numpy().astype(np.int8), float(scale),
          int(zero_point.numpy()))


def kernel_on_int8_grid(kernel) -> bool:
  """Whether every output channel c of `kernel` is a multiple of s_c = max|w_c| / 127.

  True after quantization-aware fine-tuning, which snaps kernels to the grid
  the TFLite converter rounds them to.

  Args:
    kernel: float `[..., C]` (a variable or an array).

  Returns:
    True when every entry is within `GRID_TOLERANCE` levels of its grid.
  """
  # Eager even while a tf.function traces the caller: the decision depends
  # on the weights' values, fixed at export.
  with tf.init_scope():
    kernel = np.asarray(ops.convert_to_numpy(kernel), np.float64)
  flat = kernel.reshape(-1, kernel.shape[-1])
  scales = np.abs(flat).max(axis=0) / INT8_KERNEL_LEVELS
  scales[scales == 0] = 1.0
  levels = flat / scales
  return bool(np.all(np.abs(levels - np.round(levels))
                     <= GRID_TOLERANCE * INT8_KERNEL_LEVELS))
