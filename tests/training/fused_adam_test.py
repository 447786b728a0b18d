"""FusedAdam computes Keras' Adam, in one kernel per variable."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from kc_keras.training import fused_adam

SHAPES = ((7, 5), (5,), (3, 4, 2))
STEPS = 6
# float32 rounding of the two update orders over STEPS steps of size ~lr (measured
# up to 2e-6); a wrong bias correction or epsilon placement is off by > 1e-3.
TOLERANCE = 1e-5


def _run(optimizer, steps=STEPS, sparse=False):
  """Variables after `steps` updates with fixed, step-dependent gradients."""
  rng = np.random.default_rng(0)
  variables = [keras.Variable(rng.normal(size=s).astype(np.float32))
               for s in SHAPES]
  grads = [[rng.normal(size=s).astype(np.float32) for s in SHAPES]
           for _ in range(steps)]
  for step_grads in grads:
    pairs = []
    for g, v in zip(step_grads, variables):
      g = tf.constant(g)
      if sparse and g.shape.rank == 2:
        g = tf.IndexedSlices(g, tf.range(g.shape[0]), tf.constant(g.shape))
      pairs.append((g, v))
    optimizer.apply_gradients(pairs)
  return [v.numpy() for v in variables]


def _reference(variables0, grads, lr, beta_1=0.9, beta_2=0.999, eps=1e-7):
  """Adam by hand (NumPy, float64), the formula of `FusedAdam`'s docstring."""
  theta = [v.astype(np.float64) for v in variables0]
  m = [np.zeros_like(t) for t in theta]
  v = [np.zeros_like(t) for t in theta]
  for t, step_grads in enumerate(grads, start=1):
    lr_t = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    for i, g in enumerate(step_grads):
      m[i] = beta_1 * m[i] + (1 - beta_1) * g
      v[i] = beta_2 * v[i] + (1 - beta_2) * g * g
      theta[i] = theta[i] - lr_t * m[i] / (np.sqrt(v[i]) + eps)
  return theta


class FusedAdamTest(tf.test.TestCase, parameterized.TestCase):

  def test_matches_the_formula_by_hand(self):
    rng = np.random.default_rng(0)
    variables0 = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    grads = [[rng.normal(size=s).astype(np.float32) for s in SHAPES]
             for _ in range(STEPS)]
    got = _run(fused_adam.FusedAdam(learning_rate=0.05, epsilon=1e-3))
    want = _reference(variables0, grads, lr=0.05, eps=1e-3)
    for g, w in zip(got, want):
      self.assertAllClose(g, w, rtol=TOLERANCE, atol=TOLERANCE)

  @parameterized.named_parameters(
      ("constant", dict(learning_rate=0.05, epsilon=1e-3)),
      ("schedule_and_clipnorm", dict(
          learning_rate=keras.optimizers.schedules.CosineDecay(0.1, 4),
          global_clipnorm=0.5, epsilon=2e-2)),
      ("weight_decay", dict(learning_rate=0.01, weight_decay=0.1)),
  )
  def test_equals_keras_adam(self, kwargs):
    got = _run(fused_adam.FusedAdam(**kwargs))
    want = _run(keras.optimizers.Adam(**kwargs))
    for g, w in zip(got, want):
      self.assertAllClose(g, w, rtol=TOLERANCE, atol=TOLERANCE)

  def test_sparse_gradients_are_applied_dense(self):
    got = _run(fused_adam.FusedAdam(learning_rate=0.05), sparse=True)
    want = _run(keras.optimizers.Adam(learning_rate=0.05))
    for g, w in zip(got, want):
      self.assertAllClose(g, w, rtol=TOLERANCE, atol=TOLERANCE)

  def test_amsgrad_falls_back_to_keras(self):
    got = _run(fused_adam.FusedAdam(learning_rate=0.05, amsgrad=True))
    want = _run(keras.optimizers.Adam(learning_rate=0.05, amsgrad=True))
    for g, w in zip(got, want):
      self.assertAllClose(g, w, rtol=TOLERANCE, atol=TOLERANCE)

  def test_checkpoint_restores_into_keras_adam(self):
    # The same slots: a run trained with either optimizer resumes with the other.
    variables = [keras.Variable(np.ones(s, np.float32)) for s in SHAPES]
    fused = fused_adam.FusedAdam(learning_rate=0.05)
    fused.apply_gradients([(tf.ones(s), v) for s, v in zip(SHAPES, variables)])
    path = tf.train.Checkpoint(optimizer=fused).save(
        self.create_tempdir().full_path + "/ckpt")
    plain = keras.optimizers.Adam(learning_rate=0.05)
    plain.build(variables)
    tf.train.Checkpoint(optimizer=plain).restore(path).assert_consumed()
    self.assertEqual(int(plain.iterations), 1)
    for a, b in zip(fused.variables, plain.variables):
      self.assertAllEqual(np.asarray(a), np.asarray(b))

  def test_in_a_tf_function_under_mirrored_strategy(self):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
      w = keras.Variable(np.ones(3, np.float32))
      fused = fused_adam.FusedAdam(learning_rate=0.1)
      fused.build([w])

    @tf.function
    def step():
      def replica_fn():
        fused.apply_gradients([(tf.constant([1.0, -1.0, 0.0]), w)])
      strategy.run(replica_fn)

    step()
    # First step from zero moments: theta - lr * g / (|g| + eps / sqrt(1 - beta_2)).
    expected = 1.0 - 0.1 * np.array([1.0, -1.0, 0.0]) / (
        np.abs([1.0, -1.0, 0.0]) + 1e-7 / np.sqrt(1 - 0.999))
    self.assertAllClose(w.numpy(), expected, rtol=1e-5)


if __name__ == "__main__":
  tf.test.main()
