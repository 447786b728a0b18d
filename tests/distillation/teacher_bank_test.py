"""Tests for TeacherBank routing, freezing, errors and specialist scores."""

import math

import keras
import numpy as np
import tensorflow as tf

from kc_keras.distillation import teacher_bank as tb

LN3 = math.log(3.0)
C2V = np.array([0, 0, 0, 1, 1, 1])


class _OwnRowsOnly(keras.Model):
  """A teacher that fails on any row not marked with its vertical.

  Images are flat [b, 2] with the vertical id in column 0; logits are a
  fixed bias (zero kernel).
  """

  def __init__(self, vertical, bias, **kwargs):
    super().__init__(name=f"teacher_{vertical}", **kwargs)
    self.vertical = vertical
    self.dense = keras.layers.Dense(
        len(bias), kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(bias))
    self.rows_seen = tf.Variable(0, trainable=False)

  def call(self, x, training=None):
    tf.debugging.assert_equal(
        x[:, 0], tf.cast(self.vertical, x.dtype),
        message=f"teacher {self.vertical} got a foreign row")
    self.rows_seen.assign_add(tf.shape(x)[0])
    return self.dense(x)


def _teachers():
  t0 = _OwnRowsOnly(0, [0.0, LN3, -LN3])
  t1 = _OwnRowsOnly(1, [-LN3, LN3, 0.0])
  t0(tf.zeros([1, 2]))
  t1(tf.ones([1, 2]))
  t0.rows_seen.assign(0)
  t1.rows_seen.assign(0)
  return {0: t0, 1: t1}


class TeacherBankTest(tf.test.TestCase):

  def test_routes_each_sample_to_its_teacher_only(self):
    teachers = _teachers()
    bank = tb.TeacherBank(teachers, C2V, top_k=2)
    # Rows 0, 2 belong to vertical 0 (labels 1, 0); rows 1, 3 to vertical 1.
    images = tf.constant([[0.0, 0], [1, 0], [0, 0], [1, 0]])
    labels = tf.constant([[1], [5], [0], [3]])
    ids, probs = tf.function(bank.soft_targets)(images, labels)
    # Teacher 0 probs over classes 0..2: [.5, .75, .25]; teacher 1 over 3..5:
    # [.25, .75, .5]; top-2 each.
    self.assertAllEqual(ids, [[1, 0], [4, 5], [1, 0], [4, 5]])
    self.assertAllClose(probs, [[0.75, 0.5], [0.75, 0.5]] * 2)
    self.assertEqual(int(teachers[0].rows_seen), 2)
    self.assertEqual(int(teachers[1].rows_seen), 2)

  def test_multi_vertical_sample_gets_both_teachers(self):
    # A two-vertical sample must reach both teachers, so these ignore the
    # row marker.
    plain = {v: keras.Sequential([keras.Input([2]), keras.layers.Dense(
        3, kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(b))])
             for v, b in ((0, [0.0, LN3, -LN3]), (1, [-LN3, LN3, 0.0]))}
    bank = tb.TeacherBank(plain, C2V, top_k=1, max_teachers_per_example=2)
    ids, probs = bank.soft_targets(tf.zeros([3, 2]),
                                   tf.constant([[5, 0], [2, -1], [-1, -1]]))
    self.assertAllEqual(ids, [[1, 4], [1, -1], [-1, -1]])
    self.assertAllClose(probs, [[0.75, 0.75], [0.75, 0.0], [0.0, 0.0]])

  def test_too_many_verticals_is_an_error(self):
    bank = tb.TeacherBank(_teachers(), C2V, top_k=1)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                "max_teachers_per_example=1"):
      bank.soft_targets(tf.zeros([1, 2]), tf.constant([[0, 3]]))

  def test_missing_teacher_at_construction_names_vertical(self):
    with self.assertRaisesRegex(ValueError, r"vertical\(s\) 1 \(fish\)"):
      tb.TeacherBank({0: _teachers()[0]}, C2V, top_k=2,
                     vertical_names=["bird", "fish"])

  def test_missing_teacher_in_graph_names_vertical(self):
    bank = tb.TeacherBank({0: _teachers()[0]}, C2V, top_k=2,
                          expected_verticals=[0],
                          vertical_names=["bird", "fish"])
    ids, _ = bank.soft_targets(tf.zeros([1, 2]), tf.constant([[2]]))
    self.assertAllEqual(ids, [[1, 0]])
    fn = tf.function(bank.soft_targets)
    ids, _ = fn(tf.zeros([1, 2]), tf.constant([[2]]))
    self.assertAllEqual(ids, [[1, 0]])
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r"No teacher for vertical 1 \(fish\)"):
      fn(tf.constant([[0.0, 0], [1, 0]]), tf.constant([[2], [4]]))

  def test_teachers_frozen(self):
    teachers = _teachers()
    tb.TeacherBank(teachers, C2V, top_k=2)
    self.assertFalse(teachers[0].trainable)
    self.assertEmpty(teachers[1].trainable_weights)

  def test_full_width_teacher_and_specialist_scores(self):
    # A teacher with all N = 6 outputs: its vertical's columns are used.
    full = keras.Sequential([keras.Input([2]), keras.layers.Dense(
        6, kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(
            [9.0, 9, 9, -LN3, LN3, 0.0]))])
    teachers = {0: _teachers()[0], 1: full}
    bank = tb.TeacherBank(teachers, C2V, top_k=2)
    images = tf.constant([[1.0, 0], [0, 0]])
    labels = tf.constant([[3], [1]])
    ids, _ = bank.soft_targets(images, labels)
    self.assertAllEqual(ids, [[4, 5], [1, 0]])
    scores = bank.specialist_scores(images, labels, floor=-1.0)
    self.assertAllClose(scores, [[-1, -1, -1, 0.25, 0.75, 0.5],
                                 [0.5, 0.75, 0.25, -1, -1, -1]])

  def test_fingerprints_change_with_weights(self):
    teachers = _teachers()
    bank = tb.TeacherBank(teachers, C2V, top_k=2)
    before = bank.fingerprints()
    self.assertEqual(sorted(before), [0, 1])
    teachers[1].dense.bias.assign([1.0, 2.0, 3.0])
    after = bank.fingerprints()
    self.assertEqual(before[0], after[0])
    self.assertNotEqual(before[1], after[1])

  def test_bad_args(self):
    with self.assertRaisesRegex(ValueError, "top_k"):
      tb.TeacherBank(_teachers(), C2V, top_k=0)
    with self.assertRaisesRegex(ValueError, "Teacher key 7"):
      tb.TeacherBank({**_teachers(), 7: None}, C2V, top_k=1)
    with self.assertRaisesRegex(ValueError, "emits 4 logits"):
      bad = keras.Sequential([keras.Input([2]), keras.layers.Dense(4)])
      bank = tb.TeacherBank({0: bad, 1: _teachers()[1]}, C2V, top_k=1)
      bank.soft_targets(tf.zeros([1, 2]), tf.constant([[0]]))


if __name__ == "__main__":
  tf.test.main()


class AbsentVerticalTest(tf.test.TestCase):

  def test_conv_teachers_skip_verticals_absent_from_the_batch(self):
    """With many verticals most are absent from a batch; their conv+BN
    teachers must not run on an empty batch (TF's CPU kernels reject it)."""

    def conv_teacher(num_classes):
      inputs = keras.Input([8, 8, 1])
      x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
      x = keras.layers.BatchNormalization()(x)
      x = keras.layers.GlobalAveragePooling2D()(x)
      return keras.Model(inputs, keras.layers.Dense(num_classes)(x))

    c2v = np.repeat(np.arange(5), 3)  # 5 verticals x 3 classes
    teachers = {v: conv_teacher(3) for v in range(5)}
    bank = tb.TeacherBank(teachers, c2v, top_k=2)
    images = tf.random.normal([4, 8, 8, 1], seed=1)
    labels = tf.constant([[0], [3], [4], [12]])  # verticals 0, 1, 1, 4
    ids, probs = tf.function(bank.soft_targets)(images, labels)
    self.assertAllEqual(tf.reduce_all(ids >= 0, axis=1), [True] * 4)
    self.assertAllEqual(c2v[ids.numpy()[:, 0]], [0, 1, 1, 4])
    scores = tf.function(bank.specialist_scores)(images, labels)
    expected = tf.sigmoid(teachers[1](images[1:2], training=False))
    self.assertAllClose(scores[1, 3:6], expected[0])
    self.assertAllClose(probs[:, :1] > 0, np.ones([4, 1], bool))
