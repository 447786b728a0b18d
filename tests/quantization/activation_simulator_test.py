"""Tests for quantization.activation_simulator: TFLite's activation rounding in a Keras forward pass."""

import numpy as np
import pytest
import tensorflow as tf

from kc_keras.quantization import activation_simulator
from kc_keras.quantization import errors


def test_round_per_example_hand_values():
  x = tf.constant([[0.0, 0.301, 1.0], [-1.0, 0.61, 2.0]])
  got = activation_simulator.round_per_example(x).numpy()
  # Row 0: step 1/255 over [0, 1], 0.301 * 255 = 76.755 -> 77; row 1:
  # step 3/255 over [-1, 2], (0.61 + 1) * 85 = 136.85 -> 137.
  np.testing.assert_allclose(got[0], [0.0, 77 / 255, 1.0], rtol=1e-6)
  np.testing.assert_allclose(got[1], [-1.0, 137 / 85 - 1.0, 2.0], atol=1e-6)


def test_activation_simulator_walk_and_ranges(reference):
  network = reference.network
  images = reference.images[:16]
  for mode in ("dynamic", "int8"):
    simulator = activation_simulator.ActivationSimulator(network, mode,
                                                         logit_floor=-1.0)
    assert simulator.check_walk(tf.constant(images)) == 0.0
  simulator.calibrate(images, batch_size=8)
  low, high = (float(v.numpy()) for v in simulator.ranges["images"])
  assert (low, high) == (0.0, float(images.max()))
  logits = np.asarray(network(images, training=False))
  low, high = (float(v.numpy()) for v in simulator.ranges["classifier"])
  assert low == max(-1.0, float(logits.min()))
  assert high == pytest.approx(max(0.0, float(logits.max())), rel=1e-6)
  assert simulator.points[0] == "images"
  # conv -> BN -> ReLU is one int8 op: its output is rounded once.
  assert "block0_conv0" not in simulator.points
  assert "block0_relu0" in simulator.points
  # The exported graph folds the input scaling into the first conv.
  assert "input_scaling" not in simulator.points
  # A file without the fold (bench/int8_rounding_probe.py) rounds it.
  unfolded = activation_simulator.ActivationSimulator(
      network, "int8", fold_input_scaling=False)
  assert unfolded.points[:2] == ["images", "input_scaling"]
  rounded = np.asarray(simulator(tf.constant(images)))
  assert np.abs(rounded - logits).max() > 0.0


def test_activation_simulation_needs_a_chain_backbone():
  from kc_keras.modeling.models import classifier  # pylint: disable=g-import-not-at-top
  network = classifier.HierarchicalClassifier(
      [0, 1], (32, 32, 1), backbone={"type": "mobilenet_v3_small"},
      head={"head_type": "fc_fc", "s1": 4, "s2": 4})
  with pytest.raises(errors.QuantizationError,
                     match="chain backbone.*does not take the previous"):
    activation_simulator.ActivationSimulator(network, "int8")


def _tiny_network():
  from kc_keras.modeling.models import classifier  # pylint: disable=g-import-not-at-top
  network = classifier.HierarchicalClassifier(
      [0, 0, 1, 2, 2, 2], (8, 8, 1),
      backbone={"type": "small_cnn", "filters": [4]},
      head={"head_type": "fc_fc", "s1": 6, "s2": 5},
      self_paced={"mode": "vertical"})
  network(np.zeros((1, 8, 8, 1), np.float32))
  return network


def test_calibration_in_a_graph_equals_eager():
  network = _tiny_network()
  images = np.random.default_rng(0).uniform(size=(10, 8, 8, 1)).astype(
      np.float32)
  eager = activation_simulator.ActivationSimulator(network, "int8",
                                                   logit_floor=-0.5)
  eager.calibrate(images, batch_size=4)
  graph = activation_simulator.ActivationSimulator(network, "int8",
                                                   logit_floor=-0.5)
  tf.function(lambda: graph.calibrate(images, batch_size=4))()
  for name in eager.points:
    for a, b in zip(eager.ranges[name], graph.ranges[name]):
      assert float(a.numpy()) == float(b.numpy()), name
  low, high = (float(v.numpy()) for v in eager.ranges["classifier"])
  assert low >= -0.5 and high > low


def test_float_layers_are_not_rounded():
  network = _tiny_network()
  images = np.random.default_rng(1).uniform(size=(6, 8, 8, 1)).astype(
      np.float32)
  simulator = activation_simulator.ActivationSimulator(
      network, "int8", logit_floor=-0.5,
      float_layers=("fc2", "classifier"))
  assert "fc2" not in simulator.points
  assert "classifier" not in simulator.points
  assert simulator.points[-1] == "fc1"
  simulator.calibrate(images, batch_size=3)
  # The floor applies to the logits' range only, never to a hidden layer.
  low, _ = (float(v.numpy()) for v in simulator.ranges["fc1"])
  assert low == 0.0
  with pytest.raises(errors.QuantizationError, match="activations='int4'"):
    activation_simulator.ActivationSimulator(network, "int4")
