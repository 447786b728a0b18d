"""Tests for quantization.input_folding: small_cnn's input scaling folded into its first conv."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from kc_keras.modeling import backbones
from kc_keras.quantization import grids
from kc_keras.quantization import input_folding


class InputFoldingTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      # Odd, even (asymmetric 'same' padding) kernels; both poolings; RGB.
      (3, "flatten", 1, 1), (4, "avg", 1, 2), (5, "flatten", 3, 1))
  def test_folded_features_are_the_backbone(self, kernel_size, pooling,
                                            channels, convs):
    model = backbones.build_backbone(
        {"filters": [4, 6], "kernel_size": kernel_size, "pooling": pooling,
         "convs_per_block": convs}, (9, 7, channels))
    rng = np.random.default_rng(0)
    for layer in model.layers:  # BN statistics away from the identity.
      if isinstance(layer, keras.layers.BatchNormalization):
        layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
        layer.moving_variance.assign(
            rng.uniform(0.5, 2.0, size=layer.moving_variance.shape))
    conv = model.get_layer("block0_conv0")
    self.assertTrue(input_folding.has_input_scaling_conv(model))
    self.assertFalse(input_folding.foldable_input_scaling(model))  # Off grid.
    kernel = conv.kernel.numpy()
    scales = (np.abs(kernel).max(axis=(0, 1, 2))
              / grids.INT8_KERNEL_LEVELS)
    conv.kernel.assign(np.round(kernel / scales) * scales)
    # Dark and bright borders: the padded pixels are where a wrong fold
    # would differ from the 'same' convolution of the scaled image.
    images = rng.uniform(0, 1, (3, 9, 7, channels)).astype(np.float32)
    images[0], images[1] = 0.0, 1.0
    self.assertTrue(input_folding.foldable_input_scaling(model))
    folded = input_folding.folded_features(model, images)
    self.assertAllClose(folded, model(images, training=False), atol=1e-5)

  def test_folded_graph_has_no_scaling_op(self):
    model = backbones.build_backbone({"filters": [4]}, (8, 8, 1))
    conv = model.get_layer("block0_conv0")
    conv.kernel.assign(grids.fake_quantize_kernel(conv.kernel))
    function = tf.function(
        lambda x: input_folding.folded_features(model, x)
    ).get_concrete_function(tf.TensorSpec([None, 8, 8, 1], tf.float32))
    op_types = [op.type for op in function.graph.get_operations()]
    self.assertIn("Pad", op_types)
    names = [op.name for op in function.graph.get_operations()]
    # The first op on the images is the padding, not y = 2x - 1.
    self.assertEmpty([n for n in names if "input_scaling" in n
                      and not n.startswith("input_scaling/")])

  def test_applications_run_unchanged(self):
    model = backbones.build_backbone({"type": "mobilenet_v3_small"},
                                     (32, 32, 1))
    self.assertFalse(input_folding.has_input_scaling_conv(model))
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    self.assertAllClose(input_folding.folded_features(model, x),
                        model(x, training=False))
