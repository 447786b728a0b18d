"""Tests for the optimizer and learning-rate schedule built from the trainer config."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from kc_keras.configs import trainer as trainer_cfg
from kc_keras.training import fused_adam
from kc_keras.training import optimizers


class OptimizersTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(("adam", fused_adam.FusedAdam),
                            ("adamw", keras.optimizers.AdamW))
  def test_epsilon_reaches_adam(self, kind, cls):
    config = trainer_cfg.OptimizerConfig(type=kind, epsilon=1.6e-4,
                                         schedule="constant")
    optimizer = optimizers.build_optimizer(config, train_steps=10)
    self.assertIsInstance(optimizer, cls)
    self.assertAllClose(optimizer.epsilon, 1.6e-4)

  def test_epsilon_damps_tiny_gradients(self):
    # Keras' Adam adds eps to the uncorrected sqrt(v_t): its first step from
    # zero moments is lr * g / (|g| + eps / sqrt(1 - beta_2)), about lr for
    # |g| >> eps and proportional to g for |g| << eps.
    lr, eps = 0.1, 1e-3
    config = trainer_cfg.OptimizerConfig(learning_rate=lr, epsilon=eps,
                                         schedule="constant")
    optimizer = optimizers.build_optimizer(config, train_steps=1)
    w = keras.Variable(np.zeros(2, np.float32))
    grads = np.array([1.0, 1e-5], np.float32)
    optimizer.apply_gradients([(tf.constant(grads), w)])
    expected = -lr * grads / (np.abs(grads) + eps / np.sqrt(1.0 - 0.999))
    self.assertAllClose(w.numpy(), expected, rtol=1e-4)

  def test_cosine_with_warmup(self):
    # Linear warm-up to the peak over 2 steps, then cosine to 0 over 8.
    config = trainer_cfg.OptimizerConfig(learning_rate=1.0, warmup_steps=2,
                                         schedule="cosine")
    schedule = optimizers.build_learning_rate(config, train_steps=10)
    self.assertAllClose(float(schedule(1)), 0.5)
    self.assertAllClose(float(schedule(2)), 1.0)
    self.assertAllClose(float(schedule(6)), 0.5, atol=1e-6)
    self.assertAllClose(float(schedule(10)), 0.0, atol=1e-6)

  def test_constant_without_warmup_is_a_float(self):
    config = trainer_cfg.OptimizerConfig(learning_rate=0.3, schedule="constant")
    self.assertEqual(optimizers.build_learning_rate(config, 100), 0.3)

  def test_invalid_epsilon_names_its_key(self):
    config = trainer_cfg.OptimizerConfig(epsilon=0.0)
    with self.assertRaisesRegex(ValueError, r"trainer\.optimizer\.epsilon"):
      config.validate()


if __name__ == "__main__":
  tf.test.main()
