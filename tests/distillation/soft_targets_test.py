"""Tests for top-K soft targets, dense scatter, multi-hot and the blend."""

import math

import tensorflow as tf

from kc_keras.distillation import soft_targets as st

LN3 = math.log(3.0)


class SoftTargetsTest(tf.test.TestCase):

  def test_top_k_truncates_and_maps_to_global_ids(self):
    # sigmoid(0) = .5, sigmoid(ln3) = .75, sigmoid(-ln3) = .25.
    logits = [[0.0, LN3, -LN3]]
    ids, probs = st.top_k_soft_targets(logits, [3, 4, 5], k=2)
    self.assertAllEqual(ids, [[4, 3]])
    self.assertAllClose(probs, [[0.75, 0.5]])
    self.assertEqual(ids.dtype, tf.int32)

  def test_temperature_divides_the_logits(self):
    # tau = 2: sigmoid(2 ln3 / 2) = .75, sigmoid(0) = .5, sigmoid(-ln3) = .25.
    logits = [[0.0, 2 * LN3, -2 * LN3]]
    ids, probs = st.top_k_soft_targets(logits, [3, 4, 5], k=3, temperature=2.0)
    self.assertAllEqual(ids, [[4, 3, 5]])
    self.assertAllClose(probs, [[0.75, 0.5, 0.25]])

  def test_top_k_pads_when_k_exceeds_vertical(self):
    ids, probs = st.top_k_soft_targets([[0.0, LN3]], [7, 2], k=4)
    self.assertAllEqual(ids, [[2, 7, -1, -1]])
    self.assertAllClose(probs, [[0.75, 0.5, 0.0, 0.0]])

  def test_top_k_in_tf_function_with_unknown_batch(self):
    fn = tf.function(
        lambda x: st.top_k_soft_targets(x, [0, 1, 2], k=2),
        input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    ids, _ = fn(tf.constant([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]]))
    self.assertAllEqual(ids, [[2, 1], [0, 1]])

  def test_top_k_bad_args(self):
    with self.assertRaisesRegex(ValueError, "k must be"):
      st.top_k_soft_targets([[0.0]], [0], k=0)
    for tau in (0.0, -1.0, float("inf"), float("nan"), "2"):
      with self.assertRaisesRegex(ValueError, "temperature must be"):
        st.top_k_soft_targets([[0.0]], [0], k=1, temperature=tau)
    with self.assertRaisesRegex(ValueError, "3 columns"):
      st.top_k_soft_targets([[0.0, 0.0, 0.0]], [0, 1], k=1)

  def test_dense_ignores_padding(self):
    dense = st.dense_soft_targets([[4, 3, -1], [0, -1, -1]],
                                  [[0.75, 0.5, 0.0], [0.9, 0.0, 0.0]], 6)
    self.assertAllClose(dense, [[0, 0, 0, 0.5, 0.75, 0],
                                [0.9, 0, 0, 0, 0, 0]])

  def test_dense_compiles_under_xla(self):
    fn = tf.function(lambda i, p: st.dense_soft_targets(i, p, 4),
                     jit_compile=True)
    dense = fn(tf.constant([[2, -1], [3, 0]]),
               tf.constant([[.5, 0], [.25, .75]]))
    self.assertAllClose(dense, [[0, 0, .5, 0], [.75, 0, 0, .25]])

  def test_multi_hot(self):
    hard = st.multi_hot([[1, -1], [5, 3]], 6)
    self.assertAllClose(hard, [[0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 1]])


if __name__ == "__main__":
  tf.test.main()
