"""Tests for TeacherBank routing, freezing, errors and specialist scores."""

import math

import keras
import numpy as np
import tensorflow as tf

from kc_keras.distillation import shared_trunk
from kc_keras.distillation import stacked_teachers
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

  def _banks(self, **extra):
    kwargs = dict(top_k=4, max_teachers_per_example=2, **extra)
    return (tb.TeacherBank(self.teachers, self.c2v, layout="shared_trunk",
                           **kwargs),
            tb.TeacherBank(self.teachers, self.c2v, layout="routed", **kwargs))

  def test_same_targets_as_routing_each_teacher(self):
    shared, routed = self._banks()
    self.assertEqual(shared.layout, "shared_trunk")
    self.assertEqual(routed.layout, "routed")
    ids_s, probs_s = tf.function(shared.soft_targets)(self.images, self.labels)
    ids_r, probs_r = tf.function(routed.soft_targets)(self.images, self.labels)
    self.assertAllEqual(ids_s, ids_r)
    self.assertAllClose(probs_s, probs_r, atol=1e-6)
    # Row 3 has no label: all padding; row 1 (vertical 1, one class) keeps 1.
    self.assertAllEqual(ids_s[3], [-1] * 8)
    self.assertAllEqual(ids_s[1], [3, -1, -1, -1, -1, -1, -1, -1])

  def test_temperature_softens_targets_on_both_paths(self):
    shared, routed = self._banks(temperature=3.0)
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

  def test_recorded_fingerprint_is_checked(self):
    recorded = shared_trunk.trunk_fingerprint(self.teachers[0])
    bank = tb.TeacherBank(self.teachers, self.c2v, top_k=2,
                          layout="shared_trunk", trunk_fingerprint=recorded)
    self.assertEqual(bank.layout, "shared_trunk")
    with self.assertRaisesRegex(
        ValueError, r"vertical 0 \(a\) .* is not the recorded shared trunk"):
      tb.TeacherBank(self.teachers, self.c2v, top_k=2, layout="shared_trunk",
                     trunk_fingerprint="0" * 64,
                     vertical_names=["a", "b", "c"])
    with self.assertRaisesRegex(ValueError, "trunk_fingerprint is for"):
      tb.TeacherBank(self.teachers, self.c2v, top_k=2,
                     trunk_fingerprint=recorded)

  def test_a_teacher_with_its_own_trunk_is_refused_by_name(self):
    teachers = dict(self.teachers)
    hidden = teachers[1].head.hidden2
    hidden.set_weights([w + 1e-3 for w in hidden.get_weights()])
    with self.assertRaisesRegex(
        ValueError, r"trunk of the teacher of vertical 1 .* is not the trunk "
        r"of vertical 0"):
      tb.TeacherBank(teachers, self.c2v, top_k=4, layout="shared_trunk")
    # Told nothing, the same teachers are stacked: no weights compared.
    self.assertEqual(tb.TeacherBank(teachers, self.c2v, top_k=4).layout,
                     "stacked")

  def test_a_head_the_shared_trunk_cannot_run_is_refused(self):
    teachers = dict(self.teachers)
    teachers[2] = classifier.HierarchicalClassifier(
        [0] * 5, (8, 8, 1), backbone={"type": "small_cnn", "filters": [4, 8]},
        head={"head_type": "fc_sc", "s1": 8, "s2": 6},
        self_paced={"mode": "none"})
    with self.assertRaisesRegex(ValueError,
                                "vertical 2 has head_type 'fc_sc'"):
      tb.TeacherBank(teachers, self.c2v, top_k=4, layout="shared_trunk")

  def test_teachers_for_some_verticals_only(self):
    kwargs = dict(top_k=2, expected_verticals=[0, 2])
    teachers = {v: self.teachers[v] for v in (0, 2)}
    shared = tb.TeacherBank(teachers, self.c2v, layout="shared_trunk",
                            **kwargs)
    routed = tb.TeacherBank(teachers, self.c2v, layout="routed", **kwargs)
    labels = tf.constant([[1], [0], [4], [-1], [5], [8]])
    ids_s, probs_s = shared.soft_targets(self.images, labels)
    ids_r, probs_r = routed.soft_targets(self.images, labels)
    self.assertAllEqual(ids_s, ids_r)
    self.assertAllClose(probs_s, probs_r, atol=1e-6)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                "No teacher for vertical 1"):
      shared.soft_targets(self.images, tf.constant([[3]] * 6))


def _randomize(model, rng):
  """Random weights everywhere; BatchNorm variances stay positive."""
  for weight in model.weights:
    shape = tuple(weight.shape)
    if "variance" in weight.path:
      weight.assign(rng.uniform(0.5, 2.0, size=shape).astype(np.float32))
    else:
      weight.assign(rng.normal(0.0, 0.5, size=shape).astype(np.float32))
  return model


def _independent_teachers(sizes, filters, seed, **head):
  """Teacher v: small_cnn FC-FC over sizes[v] classes, its own random weights.

  The teachers of one call share an architecture, not their weights.
  """
  rng = np.random.default_rng(seed)
  head = dict({"head_type": "fc_fc", "s1": 8, "s2": 6}, **head)
  return {v: _randomize(classifier.HierarchicalClassifier(
      [0] * size, (8, 8, 1),
      backbone={"type": "small_cnn", "filters": filters},
      head=head, self_paced={"mode": "none"}), rng)
          for v, size in sizes.items()}


class StackedTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    # Six verticals of 4, 1, 3, 2, 5 and 2 classes with interleaved ids.
    self.c2v = np.array([0, 2, 1, 0, 3, 4, 0, 2, 4, 4, 3, 2, 0, 4, 4, 5, 5])
    rng = np.random.default_rng(1)
    self.images = tf.constant(rng.uniform(size=(7, 8, 8, 1)), tf.float32)
    # T = 2: rows 0 and 5 span two verticals; vertical 2 appears in no
    # label; vertical 5 has no teacher (and no label here); row 6 is empty.
    self.labels = tf.constant([[0, 4], [6, -1], [2, -1], [13, 9], [3, -1],
                               [10, 12], [-1, -1]])

  def _compare(self, teachers, labels=None, **kwargs):
    labels = self.labels if labels is None else labels
    kwargs = dict(top_k=3, max_teachers_per_example=2, **kwargs)
    stacked = tb.TeacherBank(teachers, self.c2v, **kwargs)
    routed = tb.TeacherBank(teachers, self.c2v, layout="routed", **kwargs)
    ids_s, probs_s = tf.function(stacked.soft_targets)(self.images, labels)
    ids_r, probs_r = tf.function(routed.soft_targets)(self.images, labels)
    self.assertAllEqual(ids_s, ids_r)
    self.assertAllClose(probs_s, probs_r, atol=1e-5, rtol=0)
    self.assertAllClose(
        tf.function(stacked.specialist_scores)(self.images, labels),
        routed.specialist_scores(self.images, labels), atol=1e-5, rtol=0)
    return stacked, ids_s

  def test_independent_teachers_of_one_architecture_give_routed_targets(self):
    teachers = _independent_teachers(
        {0: 4, 1: 1, 2: 3, 3: 2, 4: 5}, [4, 8], seed=0)
    stacked, ids = self._compare(teachers, expected_verticals=range(5))
    self.assertEqual(stacked.layout, "stacked")
    self.assertEqual(stacked.stacked_groups, ((0, 1, 2, 3, 4),))
    self.assertEqual(stacked.routed_verticals, ())
    # Stacked once, as non-trainable variables: G = 5 copies of each trunk
    # weight, then the [d, N] classifier of all teachers.
    trunk = stacked_teachers.split_teacher(teachers[0]).trunk
    expected = [(5,) + tuple(w.shape) for layer in trunk
                for w in layer.weights] + [(6, 17), (17,)]
    self.assertEqual([tuple(w.shape) for w in stacked.stacked_variables],
                     expected)
    self.assertFalse(any(w.trainable for w in stacked.stacked_variables))
    # Row 0: vertical 0 (classes 0, 3, 6, 12: K = 3 kept), vertical 3
    # (classes 4, 10: two kept, one pad).
    self.assertTrue(set(ids.numpy()[0, :3]) <= {0, 3, 6, 12})
    self.assertEqual(sorted(ids.numpy()[0, 3:]), [-1, 4, 10])

  def test_architectures_form_groups_and_the_rest_is_routed(self):
    teachers = _independent_teachers({0: 4, 2: 3, 3: 2}, [4, 8], seed=2)
    teachers.update(_independent_teachers({1: 1, 4: 5}, [4, 6], seed=3))
    # An FC-SC head has no stacked form: routed within the stacked layout.
    teachers.update(_independent_teachers({5: 2}, [4, 8], seed=4,
                                          head_type="fc_sc"))
    # Row 6 now needs vertical 5's routed teacher.
    labels = tf.concat([self.labels[:6], [[15, 1]]], axis=0)
    stacked, ids = self._compare(teachers, labels)
    # Slots ascend by vertical: 2 (classes 1, 7, 11), then 5 (15, 16).
    self.assertEqual(sorted(ids.numpy()[6, 3:5]), [15, 16])
    self.assertEqual(stacked.stacked_groups, ((0, 2, 3), (1, 4)))
    self.assertEqual(stacked.routed_verticals, (5,))

  def test_a_vertical_without_a_teacher_fails_in_graph_by_name(self):
    teachers = _independent_teachers({v: 1 for v in range(5)}, [4, 8], seed=5)
    c2v = np.arange(6)
    bank = tb.TeacherBank(teachers, c2v, top_k=1, expected_verticals=range(5),
                          vertical_names=list("abcdef"))
    ids, _ = bank.soft_targets(self.images[:2], tf.constant([[4], [0]]))
    self.assertAllEqual(ids, [[4], [0]])
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r"No teacher for vertical 5 \(f\)"):
      bank.soft_targets(self.images[:2], tf.constant([[5], [0]]))

  def test_chunk_layout(self):
    # Teachers of slots 0..6: 1, -, 0, 1, 1, 2, 1 (G = 3, S_g = 6, r = 2).
    layout = stacked_teachers.chunk_layout(
        tf.constant([1, -1, 0, 1, 1, 2, 1]), 3)
    self.assertEqual(int(layout["rows_per_chunk"]), 2)
    self.assertAllEqual(layout["slots"], [2, 0, 3, 4, 6, 5])
    self.assertAllEqual(layout["chunk"], [0, 1, 1, 2, 2, 3])
    self.assertAllEqual(layout["place"], [0, 0, 1, 0, 1, 0])
    self.assertAllEqual(layout["chunk_member"], [0, 1, 1, 2])

  def test_split_says_why_a_teacher_does_not_stack(self):
    sc = _independent_teachers({0: 3}, [4, 8], seed=6, head_type="fc_sc")[0]
    with self.assertRaisesRegex(stacked_teachers.NotStackableError,
                                "head_type 'fc_sc'"):
      stacked_teachers.split_teacher(sc)
    with self.assertRaisesRegex(stacked_teachers.NotStackableError,
                                "not a chain of layers"):
      stacked_teachers.split_teacher(_teachers()[0])
