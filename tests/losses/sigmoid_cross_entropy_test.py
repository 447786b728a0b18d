"""Tests for the per-example sigmoid / softmax cross-entropy."""

import math

import keras
import numpy as np
import tensorflow as tf

from kc_keras.losses import sigmoid_cross_entropy as ce_lib

LN2, LN3 = math.log(2.0), math.log(3.0)


class SigmoidCrossEntropyTest(tf.test.TestCase):

  def test_hand_computed_sigmoid(self):
    # Per element: -[z log s(x) + (1-z) log(1-s(x))] = softplus(x) - z x, with
    # softplus(0) = ln2, softplus(ln3) = ln4, softplus(-ln3) = ln(4/3).
    logits = [[0.0, LN3, 0.0, -LN3, 0.0, 0.0],
              [0.0, 0.0, 0.0, 0.0, LN3, -LN3]]
    targets = [[0.5, 0.75, 0.0, 0.0, 0.0, 0.0],
               [0.0, 0.0, 0.0, 0.0, 0.75, 0.5]]
    # Row softplus sum: 4 ln2 + ln4 + ln(4/3) = 8 ln2 - ln3 (both rows).
    # Row 0: minus 0.75 ln3; row 1: minus (0.75 ln3 - 0.5 ln3).
    expected = [8 * LN2 - 1.75 * LN3, 8 * LN2 - 1.25 * LN3]
    loss = ce_lib.SigmoidCrossEntropy("sigmoid")
    self.assertAllClose(loss(targets, logits), expected, atol=1e-6)

  def test_linear_in_target(self):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5)).astype(np.float32)
    a, b = rng.uniform(size=(2, 3, 5)).astype(np.float32)
    fn = lambda z: ce_lib.per_example_cross_entropy(z, logits, "sigmoid")
    self.assertAllClose(fn(0.3 * a + 0.7 * b), 0.3 * fn(a) + 0.7 * fn(b),
                        atol=1e-5)

  def test_gradient_is_sigmoid_minus_target_including_at_zero(self):
    # dl/dx = s(x) - z, as for tf.nn.sigmoid_cross_entropy_with_logits: at
    # x = 0 that is 1/2 - z (a relu/abs form would give -z there).
    logits = tf.constant([[0.0, 0.0, 2.0, -3.0, 40.0, -40.0]])
    targets = tf.constant([[0.0, 1.0, 0.25, 0.5, 1.0, 0.0]])
    with tf.GradientTape() as tape:
      tape.watch(logits)
      loss = ce_lib.per_example_cross_entropy(targets, logits, "sigmoid")
    self.assertAllClose(tape.gradient(loss, logits),
                        tf.sigmoid(logits) - targets, atol=1e-7)
    reference = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=targets, logits=logits), axis=-1)
    self.assertAllClose(loss, reference, rtol=1e-6)
    # F is the loss against an all-zero target.
    self.assertAllClose(ce_lib.sigmoid_target_free_term(logits),
                        ce_lib.per_example_cross_entropy(
                            tf.zeros_like(targets), logits), rtol=1e-6)

  def test_hand_computed_softmax_renormalises(self):
    # Target [1, 1] -> q = [.5, .5]; log softmax([0, ln3]) = [-ln4, ln3 - ln4].
    # CE = ln4 - 0.5 ln3. An all-zero target row gives 0.
    loss = ce_lib.SigmoidCrossEntropy("softmax")
    out = loss([[1.0, 1.0], [0.0, 0.0]], [[0.0, LN3], [5.0, -1.0]])
    self.assertAllClose(out, [2 * LN2 - 0.5 * LN3, 0.0], atol=1e-6)

  def test_stable_at_large_logits(self):
    out = ce_lib.per_example_cross_entropy([[1.0, 0.0]], [[200.0, -200.0]])
    self.assertAllClose(out, [0.0], atol=1e-6)
    out = ce_lib.per_example_cross_entropy([[0.0]], [[200.0]])
    self.assertAllClose(out, [200.0], rtol=1e-6)

  def test_float16_logits_give_float32(self):
    logits = tf.constant([[0.0, LN3]], tf.float16)
    out = ce_lib.SigmoidCrossEntropy()([[0.0, 1.0]], logits)
    self.assertEqual(out.dtype, tf.float32)
    self.assertAllClose(out, [LN2 + 2 * LN2 - LN3], atol=1e-3)

  def test_config_round_trip(self):
    loss = ce_lib.SigmoidCrossEntropy("softmax", name="ce")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    self.assertIsInstance(clone, ce_lib.SigmoidCrossEntropy)
    self.assertEqual(clone.loss_type, "softmax")
    self.assertEqual(clone.name, "ce")

  def test_bad_args(self):
    with self.assertRaisesRegex(ValueError, "'hinge'"):
      ce_lib.SigmoidCrossEntropy("hinge")
    with self.assertRaisesRegex(ValueError, "float16"):
      ce_lib.SigmoidCrossEntropy(dtype="float16")
    with self.assertRaisesRegex(ValueError, "does not match"):
      ce_lib.per_example_cross_entropy(tf.zeros([2, 3]), tf.zeros([2, 4]))


if __name__ == "__main__":
  tf.test.main()
