"""Tests for quantization.grids: the int8 grids against hand-computed values."""

import numpy as np
import pytest

from kc_keras.quantization import errors
from kc_keras.quantization import grids


def test_fake_quantize_kernel_hand_values():
  # Channel 0: max 1.27 -> scale 0.01; 0.005 / 0.01 = 0.5 rounds away
  # from zero (TFLite's std::round), -0.014 -> -1. Channel 1: all zero.
  kernel = np.array([[1.27, 0.0], [0.005, 0.0], [-0.014, 0.0]], np.float32)
  got = grids.fake_quantize_kernel(kernel).numpy()
  np.testing.assert_allclose(got, [[1.27, 0.0], [0.01, 0.0], [-0.01, 0.0]],
                             atol=1e-7)
  values, scales = grids.int8_kernel(kernel)
  np.testing.assert_array_equal(values, [[127, 0], [1, 0], [-1, 0]])
  np.testing.assert_allclose(scales, [0.01, 0.0])


def test_round_half_away_from_zero():
  np.testing.assert_array_equal(
      grids.round_half_away(np.array([0.5, 1.5, -0.5, -2.5, 0.49],
                                     np.float32)),
      [1.0, 2.0, -1.0, -3.0, 0.0])


def test_grid_is_idempotent_and_scale_invariant():
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
  snapped = grids.fake_quantize_kernel(kernel).numpy()
  values, _ = grids.int8_kernel(snapped)
  # A per-channel multiplier (BN folding) keeps the same int8 values.
  multiplier = rng.uniform(-2.0, 2.0, size=6).astype(np.float32)
  scaled_values, _ = grids.int8_kernel(snapped * multiplier)
  np.testing.assert_array_equal(values, grids.int8_kernel(kernel)[0])
  np.testing.assert_array_equal(scaled_values, values * np.sign(multiplier))
  np.testing.assert_allclose(grids.fake_quantize_kernel(snapped), snapped,
                             rtol=1e-6, atol=0)
  assert grids.kernel_on_int8_grid(snapped)
  assert grids.kernel_on_int8_grid(snapped * multiplier)
  assert not grids.kernel_on_int8_grid(kernel)


def test_per_tensor_grids_hand_values():
  weights = np.array([[0.5, -1.27], [0.004, 0.0]], np.float32)
  # Symmetric: s = 1.27 / 127 = 0.01, 0.004 / 0.01 = 0.4 -> 0.
  values, scale, zero_point = grids.int8_tensor(weights,
                                                grids.PER_TENSOR_SYMMETRIC)
  np.testing.assert_array_equal(values, [[50, -127], [0, 0]])
  assert (scale, zero_point) == (pytest.approx(0.01), 0)
  # Asymmetric over [-1.27, 0.5]: s = 1.77 / 255, z = round(-128 + 1.27 / s)
  # = round(54.97) = 55.
  values, scale, zero_point = grids.int8_tensor(weights,
                                                grids.PER_TENSOR_ASYMMETRIC)
  assert (scale, zero_point) == (pytest.approx(1.77 / 255), 55)
  np.testing.assert_array_equal(values, [[127, -128], [56, 55]])
  for scheme in (grids.PER_TENSOR_SYMMETRIC, grids.PER_TENSOR_ASYMMETRIC):
    _, scale, _ = grids.int8_tensor(weights, scheme)
    snapped = grids.fake_quantize(weights, scheme).numpy()
    np.testing.assert_allclose(grids.fake_quantize(snapped, scheme), snapped,
                               rtol=1e-6, atol=1e-7)
    assert np.abs(snapped - weights).max() <= scale / 2 + 1e-7
  with pytest.raises(errors.QuantizationError, match="per_channel"):
    grids.tensor_quantization(weights, grids.PER_CHANNEL)


def test_block_and_row_grids_are_their_forms_per_channel_grids():
  rng = np.random.default_rng(5)
  blocks = rng.normal(size=(3, 4, 2)).astype(np.float32)  # [M, D, U]
  dense = np.transpose(blocks, (1, 0, 2)).reshape(4, 6)
  snapped = grids.fake_quantize(blocks, grids.PER_BLOCK_CHANNEL).numpy()
  np.testing.assert_allclose(
      np.transpose(snapped, (1, 0, 2)).reshape(4, 6),
      grids.fake_quantize_kernel(dense), rtol=1e-6)
  rows = rng.normal(size=(5, 3)).astype(np.float32)  # [N, s2]
  np.testing.assert_allclose(grids.fake_quantize(rows, grids.PER_ROW),
                             grids.fake_quantize_kernel(rows.T).numpy().T,
                             rtol=1e-6)
  # One scale per (m, u) / per row: the largest entry of each is on +-127.
  levels = np.abs(snapped) / (np.abs(blocks).max(axis=1, keepdims=True) / 127)
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
