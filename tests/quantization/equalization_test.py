"""Tests for quantization.equalization: range equalization keeps the float function."""

import keras
import numpy as np
import pytest

from kc_keras.quantization import equalization
from kc_keras.quantization import errors
from kc_keras.quantization import layer_walk


def test_equalize_ranges_preserves_the_function():
  from export_test_utils import smoke_params  # pylint: disable=g-import-not-at-top
  from kc_keras.dataloaders import factory  # pylint: disable=g-import-not-at-top
  from kc_keras.training import model_builder  # pylint: disable=g-import-not-at-top
  params = smoke_params()
  source = factory.build_source(params.task.data)
  network = model_builder.build_network(params.task.model, source.hierarchy,
                                        source.image_shape)
  rng = np.random.default_rng(3)
  images = rng.uniform(size=(16, *source.image_shape)).astype(np.float32)
  network(images[:1], training=False)
  # Unequal channel ranges: random BN weights and moving statistics.
  for layer in layer_walk.all_layers(network):  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.BatchNormalization):
      channels = layer.gamma.shape[0]
      layer.set_weights([rng.uniform(0.1, 3.0, channels),
                         rng.normal(size=channels),
                         rng.normal(size=channels),
                         rng.uniform(0.1, 3.0, channels)])
  before = np.asarray(network(images, training=False))
  pairs = equalization.equalizable_pairs(network)
  assert [(b.name, [l.name for l in between], c.name)
          for b, between, c in pairs] == [
              ("block0_bn0", ["block0_relu0", "block0_pool"], "block1_conv0")]
  probe = keras.Model(network.backbone.inputs,
                      network.backbone.get_layer("block0_pool").output)
  equalized = equalization.equalize_ranges(network, images, strength=1.0,
                                  batch_size=8)
  after = np.asarray(network(images, training=False))
  np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
  assert [(e.producer, e.consumer) for e in equalized][:1] == [
      ("block0_bn0", "block1_conv0")]
  assert equalized[0].scales.min() >= 1.0
  # strength 1: every live channel now reaches the largest range.
  ranges = np.asarray(probe(images, training=False)).max(axis=(0, 1, 2))
  live = ranges > equalization.EQUALIZE_MIN_RANGE_FRACTION * ranges.max()
  np.testing.assert_allclose(ranges[live], ranges.max(), rtol=1e-4)
  # The FC-FC head's pairs follow; fc2's output channels now share a range.
  assert [(e.producer, e.consumer) for e in equalized][1:] == [
      ("fc1", "fc2"), ("fc2", "classifier")]
  features = network.backbone(images, training=False)
  fc2 = np.asarray(network.head.hidden2(network.head.hidden1(features)))
  ranges = fc2.max(axis=0)
  live = ranges > equalization.EQUALIZE_MIN_RANGE_FRACTION * ranges.max()
  np.testing.assert_allclose(ranges[live], ranges.max(), rtol=1e-4)
  with pytest.raises(errors.QuantizationError, match="strength"):
    equalization.equalize_ranges(network, images, strength=1.5, batch_size=8)


@pytest.mark.parametrize("head_type", ["fc_sc", "sc_sc"])
def test_structurally_connected_heads_are_not_equalized(head_type):
  from kc_keras.modeling.models import classifier  # pylint: disable=g-import-not-at-top
  network = classifier.HierarchicalClassifier(
      [0, 0, 1, 2, 2, 2], (8, 8, 1),
      backbone={"type": "small_cnn", "filters": [4]},
      head={"head_type": head_type, "s1": 6, "s2": 3},
      self_paced={"mode": "vertical"})
  images = np.random.default_rng(4).uniform(size=(12, 8, 8, 1)).astype(
      np.float32)
  network(images[:1], training=False)
  weights = [w.copy() for w in network.head.get_weights()]
  # Not equalized (see the docstring: no gain measured).
  assert equalization.equalizable_head_pairs(network) == []
  assert equalization.equalize_ranges(network, images, strength=1.0,
                             batch_size=4) == []
  for before, after in zip(weights, network.head.get_weights()):
    np.testing.assert_array_equal(before, after)
