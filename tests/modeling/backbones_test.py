"""Tests for build_backbone: shapes, input handling, errors."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from kc_keras.configs import model as model_config
from kc_keras.modeling import backbones


class SmallCnnTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(((28, 28, 1), (8, 16), 1), ((32, 24, 3), (4,), 2))
  def test_shapes_and_layers(self, input_shape, filters, convs):
    config = model_config.BackboneConfig(
        type="small_cnn", filters=filters, convs_per_block=convs
    )
    model = backbones.build_backbone(config, input_shape)
    self.assertEqual(model.name, "kc_backbone")
    out = model(np.random.rand(2, *input_shape).astype(np.float32))
    self.assertEqual(out.shape, (2, filters[-1]))
    convs_found = [l for l in model.layers if "conv" in l.name]
    self.assertLen(convs_found, len(filters) * convs)

  def test_accepts_dict_and_dropout(self):
    model = backbones.build_backbone(
        {"type": "small_cnn", "filters": [4, 8], "dropout": 0.5}, (16, 16, 1)
    )
    x = np.random.rand(3, 16, 16, 1).astype(np.float32)
    self.assertAllClose(model(x, training=False), model(x, training=False))
    self.assertNotAllClose(model(x, training=True), model(x, training=False))

  def test_input_is_centred(self):
    # Rescaling maps [0, 1] to [-1, 1] before the first conv.
    model = backbones.build_backbone({"filters": [4]}, (8, 8, 1))
    scaling = model.get_layer("input_scaling")
    self.assertAllClose(scaling(np.array([[0.0, 0.5, 1.0]])), [[-1, 0, 1]])

  @parameterized.parameters(
      ({"type": "vgg"}, (16, 16, 1), "backbone.type"),
      ({"filters": []}, (16, 16, 1), "backbone.filters"),
      ({"filters": [4]}, (16, 16), "input_shape"),
      ({"type": "mobilenet_v3_small"}, (28, 28, 1), "at least 32x32"),
      ({"type": "mobilenet_v3_small"}, (32, 32, 2), "1 or 3 channels"),
  )
  def test_errors(self, config, input_shape, message):
    with self.assertRaisesRegex(ValueError, message):
      backbones.build_backbone(config, input_shape)


class ApplicationBackboneTest(tf.test.TestCase, parameterized.TestCase):

  def test_chain_layers(self):
    chain = backbones.chain_layers(
        backbones.build_backbone({"filters": [4, 8]}, (8, 8, 1)))
    self.assertEqual(
        [layer.name for layer in chain],
        ["input_scaling", "block0_conv0", "block0_bn0", "block0_relu0",
         "block0_pool", "block1_conv0", "block1_bn0", "block1_relu0",
         "avg_pool"])
    rgb = backbones.build_backbone({"type": "mobilenet_v3_small"}, (32, 32, 1))
    with self.assertRaisesRegex(ValueError, "does not take the previous"):
      backbones.chain_layers(rgb)

  def test_mobilenet_grey_equals_repeated_rgb(self):
    grey = backbones.build_backbone({"type": "mobilenet_v3_small"}, (32, 32, 1))
    rgb = backbones.build_backbone({"type": "mobilenet_v3_small"}, (32, 32, 3))
    rgb.set_weights(grey.get_weights())
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    out = grey(x)
    self.assertEqual(out.shape, (2, 576))
    self.assertAllClose(out, rgb(np.repeat(x, 3, axis=-1)), atol=1e-5)

  @parameterized.parameters(("resnet50", 2048), ("efficientnet_v2_b0", 1280))
  def test_large_applications(self, backbone_type, feature_dim):
    model = backbones.build_backbone({"type": backbone_type}, (32, 32, 1))
    out = model(np.random.rand(1, 32, 32, 1).astype(np.float32))
    self.assertEqual(out.shape, (1, feature_dim))
    self.assertTrue(np.all(np.isfinite(out.numpy())))


if __name__ == "__main__":
  tf.test.main()
