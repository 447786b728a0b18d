"""Tests for quantization.floor: the floored logits of the floor parts, and the floor's checks."""

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from kc_keras.modeling.models import classifier
from kc_keras.quantization import errors
from kc_keras.quantization import floor

C2V = [0, 2, 1, 0, 2, 2, 0, 2, 2]  # sizes 3, 1, 5
SHAPE = (12, 12, 1)


def _network(head_type, mode):
  network = classifier.HierarchicalClassifier(
      C2V, SHAPE, backbone={"type": "small_cnn", "filters": [4, 8]},
      head={"head_type": head_type, "s1": 16, "s2": 4},
      self_paced={"mode": mode})
  network(np.zeros((1, *SHAPE), np.float32))
  return network


def _images(batch, seed):
  return np.random.default_rng(seed).random((batch, *SHAPE)).astype(
      np.float32)


class FloorPartsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(("fc_sc", "vertical"), ("fc_fc", "fixed"),
                            ("sc_sc", "class"))
  def test_floored_logits_of_the_floor_parts(self, head_type, mode):
    """floored_logits(floor_parts) = max(y, max(F, -c r_v)): y above the floor."""
    network = _network(head_type, mode)
    if network.self_paced.gamma is not None:
      network.self_paced.gamma.assign(
          np.linspace(0.5, 3.0, network.self_paced.gamma.shape[0]))
    classifier_layer = network.head.classifier
    classifier_layer.bias.assign(np.random.default_rng(8).normal(
        scale=3.0, size=classifier_layer.bias.shape))
    x = _images(4, seed=7)
    logits = np.asarray(network(x, training=False))
    # A shift (in k x units, y / r) and a floor inside the logits' range,
    # so both bite.
    unscaled = logits / np.asarray(floor.floor_parts(network, x)["scale"])
    shift = float(-np.percentile(unscaled, 30))
    lowest = float(np.percentile(logits, 20))
    parts = floor.floor_parts(network, x, shift)
    scale = np.asarray(parts["scale"])
    self.assertAllClose(np.asarray(parts["norm"]) * scale,
                        np.ones_like(scale), rtol=1e-5)
    floored = np.asarray(floor.floored_logits(parts, lowest))
    expected = np.maximum(logits, np.maximum(lowest, -shift * scale))
    self.assertAllClose(floored, expected, rtol=1e-5, atol=1e-5)
    above = logits > np.maximum(lowest, -shift * scale)
    self.assertTrue(above.any() and not above.all())
    self.assertAllClose(floored[above], logits[above], rtol=1e-5, atol=1e-5)

  def test_floor_parts_need_a_per_image_scale(self):
    self.assertTrue(floor.has_floor_parts(_network("fc_sc", "vertical")))
    per_batch = classifier.HierarchicalClassifier(
        C2V, SHAPE, backbone={"type": "small_cnn", "filters": [4, 8]},
        head={"head_type": "fc_sc", "s1": 16, "s2": 4},
        self_paced={"mode": "vertical", "normalization": "per_batch"})
    for network in (_network("fc_fc", "none"), per_batch):
      self.assertFalse(floor.has_floor_parts(network))
      with self.assertRaisesRegex(errors.QuantizationError,
                                  "needs a per-image self-paced scale"):
        floor.floor_parts(network, _images(1, seed=0))


def test_check_and_resolve_logit_floor():
  assert floor.check_logit_floor(None) is None
  assert floor.check_logit_floor(-16) == -16.0
  with pytest.raises(errors.QuantizationError, match="finite negative"):
    floor.check_logit_floor(1e-9)
  with pytest.raises(errors.QuantizationError, match="finite negative"):
    floor.check_logit_floor(float("-inf"))
  # Only the variants whose logits layer outputs int8 are floored by default.
  assert floor.resolve_logit_floor("default", "int8") == (
      floor.SUGGESTED_LOGIT_FLOOR)
  assert floor.resolve_logit_floor("default", "int8_float_head",
                                   float_head=False) == -16.0
  for quantization in ("none", "fp16", "dynamic", "int8_float_head",
                       "int16x8"):
    assert floor.resolve_logit_floor("default", quantization) is None
  assert floor.resolve_logit_floor("none", "int8") is None
  assert floor.resolve_logit_floor(None, "int8") is None
  assert floor.resolve_logit_floor("-4.5", "fp16") == -4.5
  with pytest.raises(errors.QuantizationError, match="not a number"):
    floor.resolve_logit_floor("lowest", "int8")
