"""Tests for quantization.integer_forms: every form is its layer's function, and the registry's contract."""

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

import kc_test_case
import layer_references
from kc_keras.modeling import heads
from kc_keras.modeling.layers import self_paced
from kc_keras.modeling.layers import structurally_connected as sc
from kc_keras.modeling.models import classifier
from kc_keras.quantization import errors
from kc_keras.quantization import grids
from kc_keras.quantization import integer_forms

# Uneven verticals, classes interleaved: sizes 4, 1, 6.
UNEVEN = [2, 0, 2, 1, 0, 2, 2, 0, 2, 0, 2]
# Self-paced sizes N_v = 3, 1, 4.
C2V = [0, 2, 1, 0, 2, 2, 0, 2]
SHAPE = (12, 12, 1)


def _network(head_type="fc_sc", mode="vertical", on_grid=True):
  network = classifier.HierarchicalClassifier(
      [0, 2, 1, 0, 2, 2, 0, 2, 2], SHAPE,
      backbone={"type": "small_cnn", "filters": [4, 8]},
      head={"head_type": head_type, "s1": 16, "s2": 4},
      self_paced={"mode": mode, "init_stddev": 0.5, "seed": 1})
  network(np.zeros((1, *SHAPE), np.float32))
  if on_grid:
    conv = network.backbone.get_layer("block0_conv0")
    conv.kernel.assign(grids.fake_quantize_kernel(conv.kernel))
  return network


def _instances():
  """One built instance of every registered layer type, with an input."""
  rng = np.random.default_rng(0)
  dense = keras.layers.Dense(3, activation="relu")
  features = rng.normal(size=(4, 6)).astype(np.float32)
  dense.build(features.shape)
  block = sc.VerticalBlockDense(3, 5, shared_units=2, activation="relu",
                                bias_initializer="random_normal")
  block.build(features.shape)
  sc_classifier = sc.StructurallyConnectedClassifier(
      UNEVEN, chunk_size=2, bias_initializer="random_normal")
  blocks = rng.normal(size=(4, 3, 5)).astype(np.float32)
  sc_classifier.build(blocks.shape)
  scale = self_paced.SelfPacedScale(C2V, mode="class", init_stddev=0.5,
                                    seed=2)
  logits = (rng.normal(size=(4, 8)) * 5.0 - 20.0).astype(np.float32)
  scale.build(logits.shape)
  head = heads.ClassificationHead(UNEVEN, head_type="sc_sc", s1=4, s2=3)
  head.build(features.shape)
  network = _network()
  images = rng.uniform(size=(3, *SHAPE)).astype(np.float32)
  return {keras.layers.Dense: (dense, features),
          sc.VerticalBlockDense: (block, features),
          sc.StructurallyConnectedClassifier: (sc_classifier, blocks),
          self_paced.SelfPacedScale: (scale, logits),
          heads.ClassificationHead: (head, features),
          classifier.HierarchicalClassifier: (network, images)}


class RegistryTest(kc_test_case.TestCase):

  def test_every_registered_form_is_the_layers_function(self):
    instances = _instances()
    self.assertCountEqual(integer_forms.registered_types(), instances)
    for layer, inputs in instances.values():
      self.run_quantization_test(layer, inputs, atol=1e-5, rtol=1e-5)

  def test_an_unregistered_layer_is_named(self):
    layer = keras.layers.Conv2D(2, 3, name="lonely_conv")
    with self.assertRaisesRegex(
        errors.QuantizationError,
        "'lonely_conv' of type Conv2D has no integer-friendly form"):
      integer_forms.integer_call(layer, np.zeros((1, 4, 4, 1), np.float32))
    self.assertFalse(integer_forms.has_form(layer))
    with self.assertRaisesRegex(errors.QuantizationError, "already has"):
      integer_forms.register(keras.layers.Dense)(lambda layer, x: x)

  def test_ops_carry_the_names_export_matches(self):
    network = _network("fc_sc")
    function = tf.function(
        lambda x: integer_forms.integer_call(network, x)
    ).get_concrete_function(tf.TensorSpec([None, *SHAPE], tf.float32))
    names = [op.name for op in function.graph.get_operations()]
    for layer in (integer_forms.LOGITS_LAYERS
                  + integer_forms.SMALL_CNN_STEM[:2] + ("sc2",)):
      self.assertTrue(any(f"{layer}/" in n for n in names), layer)


class StructurallyConnectedFormsTest(kc_test_case.TestCase):

  @parameterized.parameters(
      (UNEVEN, True, 5), ([0, 1, 1, 2, 2, 2], False, 5),
      (UNEVEN, True, integer_forms.DEPTHWISE_MAX_UNITS + 1))
  def test_classifier_form_and_shifted_logits(self, c2v, use_bias, units):
    layer = sc.StructurallyConnectedClassifier(
        c2v, chunk_size=2, use_bias=use_bias,
        bias_initializer="random_normal")
    h = np.random.default_rng(3).normal(
        size=(4, max(c2v) + 1, units)).astype(np.float32)
    logits = np.asarray(layer(h))
    self.assertEqual(integer_forms.has_depthwise_form(layer),
                     units <= integer_forms.DEPTHWISE_MAX_UNITS)
    self.run_quantization_test(layer, h)
    factors = np.linspace(0.5, 2.0, len(c2v)).astype(np.float32)
    shift = float(np.median(np.abs(logits)))
    self.assertAllClose(
        integer_forms.shifted_logits(layer, h, shift, factors),
        np.maximum(logits * factors, -shift), atol=1e-5)
    self.assertAllClose(integer_forms.shifted_logits(layer, h, shift),
                        np.maximum(logits, -shift), atol=1e-5)

  @parameterized.named_parameters(
      ("2d_no_shared", 2, 0, True), ("2d_shared", 2, 2, True),
      ("2d_all_shared", 2, 5, True), ("2d_no_bias", 2, 2, False),
      ("3d_shared", 3, 3, True),
  )
  def test_block_form(self, rank, shared_units, use_bias):
    x = np.random.default_rng(1).normal(
        size=(4, 6) if rank == 2 else (4, 3, 6)).astype(np.float32)
    layer = sc.VerticalBlockDense(
        3, 5, shared_units=shared_units, activation="relu",
        use_bias=use_bias, bias_initializer="random_normal")
    layer(x)
    self.run_quantization_test(layer, x)
    self.assertEqual(integer_forms.has_dense_form(layer), rank == 2)

  def test_dense_form_layout(self):
    # Column m * U + u of the dense kernel is block m's unit u.
    layer = sc.VerticalBlockDense(3, 4, shared_units=1,
                                  bias_initializer="random_normal")
    layer(tf.zeros((1, 5)))
    kernel = np.asarray(integer_forms.dense_kernel(layer))
    bias = np.asarray(integer_forms.dense_bias(layer))
    self.assertEqual(kernel.shape, (5, 12))
    for m in range(3):
      self.assertAllEqual(kernel[:, 4 * m], layer.shared_kernel.numpy()[:, 0])
      self.assertAllEqual(kernel[:, 4 * m + 1:4 * m + 4],
                          layer.kernel.numpy()[m])
      self.assertAllEqual(bias[4 * m + 1:4 * m + 4], layer.bias.numpy()[m])
    block_input = sc.VerticalBlockDense(3, 4)
    block_input(tf.zeros((1, 3, 5)))
    with self.assertRaisesRegex(errors.QuantizationError,
                                r"only a layer built on a \[B, D\]"):
      integer_forms.dense_kernel(block_input)




class SelfPacedFormTest(kc_test_case.TestCase):

  def setUp(self):
    super().setUp()
    self.x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)

  @parameterized.parameters("none", "fixed", "vertical", "class")
  def test_form_is_the_same_function(self, mode):
    # Trained-like values: logits around -20 (norms ~1e2 per vertical),
    # gammas far from their init and a learning-rate multiplier.
    layer = self_paced.SelfPacedScale(C2V, mode=mode, init_stddev=0.0,
                                      learning_rate_multiplier=30.0)
    layer.build((None, 8))
    if layer.gamma is not None:
      layer.gamma.assign(np.linspace(1.0, 4.0, layer.gamma.shape[0]))
    x = self.x * 5.0 - 20.0
    x[0, [0, 3, 6]] = 0.0  # a zero vertical stays zero and finite.
    form = self.run_quantization_test(layer, x, atol=1e-5, rtol=1e-5)
    self.assertEqual(form.dtype, np.float32)
    if mode != "none":
      gamma = (np.sqrt([3.0, 1.0, 4.0])[C2V] if mode == "fixed"
               else np.asarray(layer.scale_values()))
      gamma = gamma[C2V] if mode == "vertical" else gamma
      self.assertAllClose(form, layer_references.self_paced_reference(x, gamma, C2V),
                          rtol=1e-5, atol=1e-5)
      self.assertAllEqual(form[0, [0, 3, 6]], np.zeros(3))

  @parameterized.parameters("fixed", "vertical", "class")
  def test_per_batch_form_is_a_constant_scale(self, mode):
    # At inference y_c = x_c gamma_c / sqrt(moving_squared_norm_v(c) + eps).
    layer = self_paced.SelfPacedScale(C2V, mode=mode, init_stddev=0.3, seed=4,
                                      normalization="per_batch",
                                      learning_rate_multiplier=3.0)
    layer.build((None, 8))
    layer.moving_squared_norm.assign([900.0, 25.0, 1600.0])
    x = self.x * 5.0 - 20.0
    form = self.run_quantization_test(layer, x, atol=1e-5, rtol=1e-5)
    gamma = (np.sqrt([3.0, 1.0, 4.0]) if mode == "fixed"
             else np.asarray(layer.scale_values()))
    gamma = gamma if mode == "class" else gamma[C2V]
    expected = x * gamma / np.sqrt(np.array([900.0, 25.0, 1600.0]) + 1e-12)[C2V]
    self.assertAllClose(form, expected, rtol=1e-5)
    self.assertAllClose(integer_forms.inference_scale(layer),
                        expected[0] / x[0], rtol=1e-5)
    with self.assertRaisesRegex(errors.QuantizationError,
                                "only a per-batch scale"):
      integer_forms.inference_scale(self_paced.SelfPacedScale(C2V))

  @parameterized.parameters("fixed", "vertical", "class")
  def test_scales(self, mode):
    layer = self_paced.SelfPacedScale(C2V, mode=mode, init_stddev=0.5,
                                      seed=1)
    layer.build((None, 8))
    x = self.x * 5.0 - 20.0
    scale, norm = (np.asarray(t)
                   for t in integer_forms.self_paced_scales(layer, x))
    factors = integer_forms.class_factors(layer)
    self.assertEqual(factors is None, mode != "class")
    factors = 1.0 if factors is None else np.asarray(factors)
    # y = k x r, and s = 1 / r.
    self.assertAllClose(x * factors * scale, np.asarray(layer(x)), rtol=1e-5,
                        atol=1e-5)
    self.assertAllClose(norm * scale, np.ones_like(scale), rtol=1e-5)
    with self.assertRaisesRegex(errors.QuantizationError, "no scale"):
      integer_forms.self_paced_scales(
          self_paced.SelfPacedScale(C2V, mode="none"), x)


class HeadAndNetworkFormsTest(kc_test_case.TestCase):

  @parameterized.parameters("fc_fc", "fc_sc", "sc_sc")
  def test_head_form_and_shifted_logits(self, head_type):
    head = heads.ClassificationHead([0, 1, 1, 2, 2, 2], head_type=head_type,
                                    s1=6, s2=4, dropout=0.3)
    x = np.random.default_rng(4).normal(size=(5, 7)).astype(np.float32)
    logits = np.asarray(head(x, training=False))
    self.run_quantization_test(head, x)
    hidden = integer_forms.head_hidden(head, x)
    factors = np.linspace(0.5, 2.0, 6).astype(np.float32)
    shift = float(np.median(np.abs(logits)))
    self.assertAllClose(
        integer_forms.shifted_logits(head.classifier, hidden, shift, factors),
        np.maximum(logits * factors, -shift), atol=1e-5)

  @parameterized.parameters(("fc_sc", "vertical", True),
                            ("fc_fc", "none", True),
                            ("sc_sc", "class", False))
  def test_network_form_is_the_same_function(self, head_type, mode, on_grid):
    """The self-paced tail relative to gamma and, when the stem kernel is on
    its int8 grid, the input scaling folded."""
    network = _network(head_type, mode, on_grid)
    x = np.random.default_rng(5).random((3, *SHAPE)).astype(np.float32)
    self.run_quantization_test(network, x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["fixed", "class"])
def test_forms_compile_in_a_graph(mode):
  network = _network("sc_sc", mode)
  function = tf.function(lambda x: integer_forms.integer_call(network, x))
  x = np.random.default_rng(6).random((2, *SHAPE)).astype(np.float32)
  np.testing.assert_allclose(function(x), network(x, training=False),
                             atol=1e-5, rtol=1e-5)
