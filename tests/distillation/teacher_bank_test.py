"""Tests for TeacherBank routing, freezing, errors and specialist scores."""

import math

import keras
import numpy as np
import tensorflow as tf

from kc_keras.distillation import teacher_bank as tb
from kc_keras.modeling.models import classifier

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


def _frozen_trunk_teachers(sizes, seed=0):
  """One random trunk; teacher v = that trunk + its own random classifier."""
  keras.utils.set_random_seed(seed)
  arch = dict(backbone={"type": "small_cnn", "filters": [4, 8]},
              head={"head_type": "fc_fc", "s1": 8, "s2": 6},
              self_paced={"mode": "none"})
  trunk = classifier.HierarchicalClassifier([0], (8, 8, 1), **arch)
  teachers = {}
  for v, size in enumerate(sizes):
    teacher = classifier.HierarchicalClassifier([0] * size, (8, 8, 1), **arch)
    for layer, source in ((teacher.backbone, trunk.backbone),
                          (teacher.head.hidden1, trunk.head.hidden1),
                          (teacher.head.hidden2, trunk.head.hidden2)):
      layer.set_weights(source.get_weights())
    teachers[v] = teacher
  return teachers


class SharedTrunkTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    # Verticals of 3, 1 and 5 classes, interleaved ids; K = 4 > N_1.
    self.c2v = np.array([2, 0, 2, 1, 0, 2, 2, 0, 2])
    self.teachers = _frozen_trunk_teachers([3, 1, 5])
    rng = np.random.default_rng(0)
    self.images = tf.constant(rng.uniform(size=(6, 8, 8, 1)), tf.float32)
    # One empty label row (-1), two labels spanning two verticals.
    self.labels = tf.constant([[1, -1], [3, -1], [0, 8], [-1, -1], [5, 6],
                               [4, 3]])

  def _banks(self):
    kwargs = dict(top_k=4, max_teachers_per_example=2)
    return (tb.TeacherBank(self.teachers, self.c2v, **kwargs),
            tb.TeacherBank(self.teachers, self.c2v, share_trunk=False,
                           **kwargs))

  def test_same_targets_as_routing_each_teacher(self):
    shared, routed = self._banks()
    self.assertTrue(shared.shares_trunk)
    self.assertFalse(routed.shares_trunk)
    ids_s, probs_s = tf.function(shared.soft_targets)(self.images, self.labels)
    ids_r, probs_r = tf.function(routed.soft_targets)(self.images, self.labels)
    self.assertAllEqual(ids_s, ids_r)
    self.assertAllClose(probs_s, probs_r, atol=1e-6)
    # Row 3 has no label: all padding; row 1 (vertical 1, one class) keeps 1.
    self.assertAllEqual(ids_s[3], [-1] * 8)
    self.assertAllEqual(ids_s[1], [3, -1, -1, -1, -1, -1, -1, -1])

  def test_temperature_softens_targets_on_both_paths(self):
    kwargs = dict(top_k=4, max_teachers_per_example=2, temperature=3.0)
    shared = tb.TeacherBank(self.teachers, self.c2v, **kwargs)
    routed = tb.TeacherBank(self.teachers, self.c2v, share_trunk=False,
                            **kwargs)
    plain, _ = self._banks()
    ids_s, probs_s = shared.soft_targets(self.images, self.labels)
    ids_r, probs_r = routed.soft_targets(self.images, self.labels)
    ids_1, probs_1 = plain.soft_targets(self.images, self.labels)
    # Same order (ids); p_tau = sigmoid(logit(p_1) / tau) for every target.
    self.assertAllEqual(ids_s, ids_1)
    self.assertAllEqual(ids_r, ids_1)
    kept = ids_1.numpy() >= 0
    p1 = np.where(kept, probs_1.numpy().astype(np.float64), 0.5)
    logit = np.log(p1) - np.log1p(-p1)
    expected = np.where(kept, 1 / (1 + np.exp(-logit / 3.0)), 0.0)
    self.assertAllClose(probs_s, expected, atol=1e-5)
    self.assertAllClose(probs_r, expected, atol=1e-5)
    # Evaluation of the teachers is not tempered.
    self.assertAllClose(
        shared.specialist_scores(self.images, self.labels, floor=-1.0),
        plain.specialist_scores(self.images, self.labels, floor=-1.0))
    with self.assertRaisesRegex(ValueError, "temperature must be"):
      tb.TeacherBank(self.teachers, self.c2v, top_k=4, temperature=-1.0)

  def test_same_specialist_scores_as_routing(self):
    shared, routed = self._banks()
    self.assertAllClose(
        shared.specialist_scores(self.images, self.labels, floor=-1.0),
        routed.specialist_scores(self.images, self.labels, floor=-1.0),
        atol=1e-6)

  def test_a_teacher_with_its_own_trunk_is_routed(self):
    teachers = dict(self.teachers)
    hidden = teachers[1].head.hidden2
    hidden.set_weights([w + 1e-3 for w in hidden.get_weights()])
    bank = tb.TeacherBank(teachers, self.c2v, top_k=4)
    self.assertFalse(bank.shares_trunk)

  def test_teachers_for_some_verticals_only_are_routed(self):
    bank = tb.TeacherBank({0: self.teachers[0]}, self.c2v, top_k=2,
                          expected_verticals=[0])
    self.assertFalse(bank.shares_trunk)
