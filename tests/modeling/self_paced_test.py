"""Tests for SelfPacedScale against y_v = gamma_v * x_v / ||x_v|| per mode."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

import kc_test_case
import layer_references
from kc_keras.modeling.layers import self_paced

# Sizes N_v = 3, 1, 4 with classes interleaved.
C2V = [0, 2, 1, 0, 2, 2, 0, 2]


class SelfPacedScaleTest(kc_test_case.TestCase):

  def setUp(self):
    super().setUp()
    self.x = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)

  @parameterized.parameters(("none", False, "per_image"),
                            ("fixed", False, "per_image"),
                            ("vertical", True, "per_image"),
                            ("class", True, "per_image"),
                            ("vertical", True, "per_batch"),
                            ("class", True, "per_batch"))
  def test_layer_harness(self, mode, learned, normalization):
    self.run_layer_test(
        self_paced.SelfPacedScale,
        dict(class_to_vertical=C2V, mode=mode, seed=2,
             learning_rate_multiplier=3.0, normalization=normalization),
        self.x, (3, 8), expect_trainable_weights=learned)

  def test_none_is_identity(self):
    layer = self_paced.SelfPacedScale(C2V, mode="none")
    self.assertAllEqual(layer(self.x), self.x)
    self.assertEmpty(layer.weights)

  def test_fixed(self):
    layer = self_paced.SelfPacedScale(C2V, mode="fixed")
    out = layer(self.x)
    self.assertEmpty(layer.trainable_weights)
    gamma = np.sqrt(np.array([3.0, 1.0, 4.0]))[C2V]
    self.assertAllClose(out, layer_references.self_paced_reference(self.x, gamma, C2V), atol=1e-6)
    # Hand check: the single class of vertical 1 becomes sign(x) * sqrt(1).
    self.assertAllClose(out[:, 2], np.sign(self.x[:, 2]), atol=1e-6)

  @parameterized.parameters(("vertical", 3), ("class", 8))
  def test_learned_modes(self, mode, size):
    layer = self_paced.SelfPacedScale(C2V, mode=mode)
    out = layer(self.x)
    self.assertLen(layer.trainable_weights, 1)
    self.assertEqual(layer.gamma.shape, (size,))
    gamma = layer.gamma.numpy()
    per_class = gamma[C2V] if mode == "vertical" else gamma
    self.assertAllClose(out, layer_references.self_paced_reference(self.x, per_class, C2V), atol=1e-5)

  @parameterized.parameters("vertical", "class")
  def test_sqrt_nv_init(self, mode):
    layer = self_paced.SelfPacedScale(C2V, mode=mode, init_stddev=1e-3, seed=1)
    layer.build((None, 8))
    mean = np.sqrt(np.array([3.0, 1.0, 4.0]))
    mean = mean if mode == "vertical" else mean[C2V]
    self.assertAllClose(layer.gamma.numpy(), mean, atol=5e-3)
    self.assertNotAllClose(layer.gamma.numpy(), mean, atol=1e-9)

  def test_constant_init(self):
    layer = self_paced.SelfPacedScale(
        C2V, mode="class", init="constant", init_value=10.0, init_stddev=0.0
    )
    layer.build((None, 8))
    self.assertAllEqual(layer.gamma.numpy(), np.full(8, 10.0))

  @parameterized.parameters("vertical", "class")
  def test_prior_init_reproduces_prior_logits(self, mode):
    # N = 8, p = 1/8: |log(p / (1 - p))| = log(7); gamma_v = sqrt(N_v) log 7.
    layer = self_paced.SelfPacedScale(C2V, mode=mode, init="prior",
                                      init_stddev=0.0)
    layer.build((None, 8))
    mean = np.sqrt(np.array([3.0, 1.0, 4.0])) * np.log(7.0)
    mean = mean if mode == "vertical" else mean[C2V]
    self.assertAllClose(layer.gamma.numpy(), mean, atol=1e-5)
    # Logits at the prior logit -log 7 pass through unchanged: y = x.
    prior_logits = np.full((2, 8), -np.log(7.0), np.float32)
    self.assertAllClose(layer(prior_logits), prior_logits, atol=1e-5)

  @parameterized.parameters("vertical", "class")
  def test_per_batch_normalises_by_the_batch_rms_norm(self, mode):
    # Training: y = gamma x / sqrt(mean_b ||x_bv||^2 + eps), one factor per
    # vertical for the whole batch, so each image keeps its own norm; the
    # moving average follows with the momentum; inference uses it.
    layer = self_paced.SelfPacedScale(C2V, mode=mode, init="constant",
                                      init_value=2.0, init_stddev=0.0,
                                      normalization="per_batch", momentum=0.75)
    layer.build((None, 8))
    self.assertAllClose(layer.moving_squared_norm, np.full(3, 4.0))
    x = self.x * 3.0
    out = layer(x, training=True).numpy()
    one_hot = np.eye(3)[C2V]
    mean_sq = ((x.astype(np.float64) ** 2) @ one_hot).mean(axis=0)
    self.assertAllClose(out, x * 2.0 / np.sqrt(mean_sq)[C2V], rtol=1e-5)
    moving = 0.75 * 4.0 + 0.25 * mean_sq
    self.assertAllClose(layer.moving_squared_norm, moving, rtol=1e-5)
    ratio = np.linalg.norm(out[0, [0, 3, 6]]) / np.linalg.norm(out[1, [0, 3, 6]])
    self.assertAllClose(ratio, np.linalg.norm(x[0, [0, 3, 6]])
                        / np.linalg.norm(x[1, [0, 3, 6]]), rtol=1e-5)
    self.assertAllClose(layer(x, training=False),
                        x * 2.0 / np.sqrt(moving)[C2V], rtol=1e-5)
    self.assertAllClose(layer.moving_squared_norm, moving, rtol=1e-5)

  def test_per_batch_gradient_flows_through_the_batch_norm(self):
    # The batch's squared norm is part of the function (as BatchNorm's batch
    # statistics are): scaling every x of a vertical leaves y unchanged, so
    # d sum(y * x) / d x has no component along x per vertical and batch.
    layer = self_paced.SelfPacedScale(C2V, mode="vertical",
                                      normalization="per_batch")
    x = tf.constant(self.x)
    y = layer(x, training=True)
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(layer(x, training=True) * tf.stop_gradient(y))
    grad = tape.gradient(loss, x).numpy()
    for v in range(3):
      idx = np.flatnonzero(np.asarray(C2V) == v)
      self.assertAllClose(np.sum(grad[:, idx] * self.x[:, idx]), 0.0,
                          atol=1e-4)

  def test_bad_normalization_and_momentum_are_named(self):
    with self.assertRaisesRegex(ValueError, "normalization must be one of"):
      self_paced.SelfPacedScale(C2V, normalization="per_class")
    with self.assertRaisesRegex(ValueError, r"momentum must be in \[0, 1\)"):
      self_paced.SelfPacedScale(C2V, normalization="per_batch", momentum=1.0)

  def test_zero_vector_maps_to_zero(self):
    x = np.zeros((1, 8), np.float32)
    x[0, 1] = 2.0  # vertical 2 non-zero, verticals 0 and 1 all zero.
    out = self_paced.SelfPacedScale(C2V, mode="fixed")(x).numpy()
    self.assertTrue(np.all(np.isfinite(out)))
    self.assertAllClose(out[0], [0, 2.0, 0, 0, 0, 0, 0, 0], atol=1e-6)

  def test_per_vertical_norm_equals_gamma(self):
    layer = self_paced.SelfPacedScale(C2V, mode="vertical")
    out = layer(self.x).numpy()
    gamma = layer.gamma.numpy()
    for v in range(3):
      idx = np.flatnonzero(np.asarray(C2V) == v)
      self.assertAllClose(np.linalg.norm(out[:, idx], axis=1),
                          np.full(3, gamma[v]), rtol=1e-5)

  def test_gradient_to_gamma(self):
    # d sum(y) / d gamma_v = sum_b sum_{c in v} x_bc / ||x_bv||.
    layer = self_paced.SelfPacedScale(C2V, mode="vertical")
    layer.build((None, 8))
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(self.x))
    grad = tape.gradient(loss, layer.gamma).numpy()
    expected = layer_references.self_paced_reference(self.x, np.ones(8), C2V)
    expected = [expected[:, np.asarray(C2V) == v].sum() for v in range(3)]
    self.assertAllClose(grad, expected, atol=1e-5)

  def test_float16_input_float32_compute(self):
    layer = self_paced.SelfPacedScale(C2V, mode="fixed", dtype="float32")
    x = tf.constant(self.x * 1000.0, tf.float16)  # squares overflow float16.
    out = layer(x)
    self.assertEqual(out.dtype, tf.float32)
    self.assertTrue(np.all(np.isfinite(out.numpy())))

  def test_same_step_with_and_without_strategy(self):
    def sgd_step(layer, optimizer):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(self.x) * tf.range(8.0))
      grads = tape.gradient(loss, layer.trainable_weights)
      optimizer.apply_gradients(zip(grads, layer.trainable_weights))

    plain = self_paced.SelfPacedScale(C2V, mode="vertical", seed=3)
    plain.build((None, 8))
    sgd_step(plain, keras.optimizers.SGD(0.1))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
      mirrored = self_paced.SelfPacedScale(C2V, mode="vertical", seed=3)
      mirrored.build((None, 8))
      optimizer = keras.optimizers.SGD(0.1)
    self.assertIsInstance(mirrored.gamma.value, tf.distribute.DistributedValues)
    strategy.run(tf.function(lambda: sgd_step(mirrored, optimizer)))
    self.assertAllClose(mirrored.gamma.numpy(), plain.gamma.numpy())
    self.assertNotAllClose(plain.gamma.numpy(), np.sqrt([3.0, 1.0, 4.0]),
                           atol=1e-2)

  def test_config_round_trip(self):
    layer = self_paced.SelfPacedScale(
        C2V, mode="class", init="constant", init_value=3.0, init_stddev=0.5,
        seed=4,
    )
    config = layer.get_config()
    self.assertEqual(
        self_paced.SelfPacedScale.from_config(config).get_config(), config
    )

  @parameterized.parameters(
      (dict(mode="node"), "mode"), (dict(init="ones"), "init"),
      (dict(init_stddev=-1.0), "init_stddev"), (dict(epsilon=0.0), "epsilon"),
  )
  def test_bad_args(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      self_paced.SelfPacedScale(C2V, **kwargs)

  def test_bad_input_width(self):
    with self.assertRaisesRegex(ValueError, "N=8"):
      self_paced.SelfPacedScale(C2V)(tf.zeros((2, 7)))


if __name__ == "__main__":
  tf.test.main()
