"""Tests for KnowledgeConcentrationModel: loss, targets, freezing, saving."""

import math
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from kc_keras.distillation import target_cache as tc
from kc_keras.distillation import teacher_bank as tb
from kc_keras.modeling.models import distiller

LN2, LN3 = math.log(2.0), math.log(3.0)
C2V = [0, 0, 0, 1, 1, 1]
# Images are the student's logits (identity student): see the loss test.
IMAGES = np.array([[0.0, LN3, 0.0, -LN3, 0.0, 0.0],
                   [0.0, 0.0, 0.0, 0.0, LN3, -LN3]], np.float32)
LABELS = np.array([[1], [5]], np.int32)


def _student(name="student"):
  return keras.Sequential([
      keras.Input([6]),
      keras.layers.Dense(6, kernel_initializer="identity", name="logits"),
  ], name=name)


def _teachers():
  # Fixed logits: teacher 0 probs over classes 0..2 = [.5, .75, .25],
  # teacher 1 over classes 3..5 = [.25, .75, .5].
  return {
      v: keras.Sequential([
          keras.Input([6]),
          keras.layers.Dense(3, kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant(b),
                             name=f"teacher_dense_{v}"),
      ], name=f"teacher_{v}")
      for v, b in ((0, [0.0, LN3, -LN3]), (1, [-LN3, LN3, 0.0]))
  }


def _model(alpha=0.5, source="online", lr=1.0, student=None, **kwargs):
  bank = None
  if source == "online":
    bank = tb.TeacherBank(_teachers(), C2V, top_k=2)
  model = distiller.KnowledgeConcentrationModel(
      student or _student(), C2V, alpha=alpha, top_k=2, target_source=source,
      teacher_bank=bank, **kwargs)
  model.compile(optimizer=keras.optimizers.SGD(lr))
  return model


def _features(**extra):
  return {"label_ids": tf.constant(LABELS), **extra}


class DistillerTest(tf.test.TestCase):

  def test_hand_computed_loss_alpha_half(self):
    # Top-2 soft targets: ex0 z* = [.5, .75, 0, 0, 0, 0] (vertical 0 only),
    # ex1 z* = [0, 0, 0, 0, .75, .5] (class 3's .25 truncated).
    # Per-example sigmoid CE = sum_j softplus(x_j) - z_j x_j with row
    # softplus sum 8 ln2 - ln3 for both rows:
    #   soft: ex0 8ln2 - 1.75ln3, ex1 8ln2 - 1.25ln3 -> mean 8ln2 - 1.5ln3
    #   hard: ex0 8ln2 - 2ln3,    ex1 8ln2           -> mean 8ln2 - ln3
    #   loss (alpha .5): mean 8ln2 - 1.25ln3
    # top-1: ex0 argmax 1 = label; ex1 argmax 4 != 5 -> 0.5.
    model = _model(alpha=0.5)
    logs = model.train_step((tf.constant(IMAGES), _features()))
    self.assertAllClose(logs["soft_target_loss"], 8 * LN2 - 1.5 * LN3)
    self.assertAllClose(logs["hard_label_loss"], 8 * LN2 - LN3)
    self.assertAllClose(logs["loss"], 8 * LN2 - 1.25 * LN3)
    self.assertAllClose(logs["top1_accuracy"], 0.5)

  def test_gradient_reaches_student_not_teachers(self):
    model = _model(alpha=0.5, lr=1.0)
    teachers = model.teacher_bank.teachers
    before = {v: [w.numpy() for w in t.weights] for v, t in teachers.items()}
    tf.function(model.train_step)((tf.constant(IMAGES), _features()))
    # dL/dbias_j = (1/B) sum_i (s(x_ij) - z_ij), z = .5 z* + .5 z_hard.
    soft = np.array([[.5, .75, 0, 0, 0, 0], [0, 0, 0, 0, .75, .5]])
    hard = np.array([[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1.0]])
    grad = np.mean(1 / (1 + np.exp(-IMAGES)) - (0.5 * soft + 0.5 * hard), 0)
    self.assertAllClose(model.student.get_layer("logits").bias, -grad,
                        atol=1e-6)
    for v, t in teachers.items():
      for w, b in zip(t.weights, before[v]):
        self.assertAllEqual(w.numpy(), b)

  def test_online_equals_cache(self):
    online = _model(alpha=1.0)
    dataset = tf.data.Dataset.from_tensor_slices(
        (IMAGES, {"label_ids": LABELS,
                  "example_id": np.array([10, 11], np.int64)})).batch(1)
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root, ignore_errors=True)
    fields = {"dataset_fingerprint": "d", "hierarchy_fingerprint": "h",
              "teacher_fingerprints": online.teacher_bank.fingerprints(),
              "top_k": 2, "max_teachers_per_example": 1, "temperature": 1.0}
    cache_dir = os.path.join(root, "cache")
    tc.write_target_cache(
        cache_dir, tb.soft_target_batches(online.teacher_bank, dataset),
        manifest_fields=fields)
    cached = next(iter(
        tc.load_target_cache(cache_dir, expected=fields).batch(2)))
    self.assertAllEqual(cached["example_id"], [10, 11])

    from_cache = _model(alpha=1.0, source="cache")
    logs_cache = from_cache.train_step((tf.constant(IMAGES), _features(
        target_ids=cached["target_ids"],
        target_probs=cached["target_probs"])))
    logs_online = online.train_step((tf.constant(IMAGES), _features()))
    self.assertAllClose(logs_cache["loss"], 8 * LN2 - 1.5 * LN3)
    self.assertAllClose(logs_online["loss"], logs_cache["loss"])
    self.assertAllClose(online.student.weights[0],
                        from_cache.student.weights[0])

  def test_no_teacher_variables_in_weights_or_checkpoint(self):
    model = _model()
    model.train_step((tf.constant(IMAGES), _features()))
    teacher_ids = {id(w) for t in model.teacher_bank.teachers.values()
                   for w in t.weights}
    self.assertTrue(teacher_ids)
    self.assertFalse(teacher_ids & {id(w) for w in model.weights})
    self.assertLen(model.weights, 2)

    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root, ignore_errors=True)
    plain = _model(alpha=0.0, source="labels")
    plain.train_step((tf.constant(IMAGES), _features()))
    names = []
    for m, sub in ((model, "with_bank"), (plain, "plain")):
      path = tf.train.Checkpoint(model=m).write(os.path.join(root, sub, "ckpt"))
      names.append(sorted(n for n, _ in tf.train.list_variables(path)))
    self.assertEqual(names[0], names[1])
    self.assertFalse([n for n in names[0] if "teacher" in n or "bank" in n])

  def test_keras_save_load_round_trip(self):
    model = _model(alpha=0.5, global_batch_size=2)
    model.train_step((tf.constant(IMAGES), _features()))
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root, ignore_errors=True)
    path = os.path.join(root, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    self.assertIsInstance(loaded, distiller.KnowledgeConcentrationModel)
    self.assertAllClose(loaded(IMAGES), model(IMAGES))
    self.assertIsNone(loaded.teacher_bank)
    for key in ("alpha", "top_k", "target_source", "loss_type",
                "global_batch_size", "class_to_vertical"):
      self.assertEqual(loaded.get_config()[key], model.get_config()[key])

  def test_fit_and_custom_loop(self):
    model = _model(alpha=1.0, lr=0.1)
    dataset = tf.data.Dataset.from_tensor_slices(
        (IMAGES, {"label_ids": LABELS})).repeat(2).batch(2)
    history = model.fit(dataset, epochs=1, verbose=0)
    self.assertEqual(
        sorted(history.history),
        ["hard_label_loss", "loss", "soft_target_loss", "top1_accuracy"])
    evaluated = model.evaluate(dataset, return_dict=True, verbose=0)
    self.assertIn("hard_label_loss", evaluated)

    loop_model = _model(alpha=1.0, lr=0.1)
    strategy = tf.distribute.get_strategy()
    loop_model.optimizer.build(loop_model.trainable_variables)

    @tf.function
    def step(batch):
      return strategy.run(loop_model.train_step, args=(batch,))

    for batch in dataset:
      logs = step(batch)
    self.assertAllClose(loop_model.student.weights[0], model.student.weights[0])
    self.assertTrue(np.isfinite(logs["loss"].numpy()))

  def test_cache_train_step_compiles_under_xla(self):
    model = _model(alpha=0.5, source="cache")
    self.assertTrue(model.supports_jit)
    self.assertFalse(_model(source="online").supports_jit)
    model.optimizer.build(model.trainable_variables)
    logs = tf.function(model.train_step, jit_compile=True)(
        (tf.constant(IMAGES), _features(
            target_ids=tf.constant([[1, 0], [4, 5]]),
            target_probs=tf.constant([[.75, .5], [.75, .5]]))))
    self.assertAllClose(logs["loss"], 8 * LN2 - 1.25 * LN3)

  def test_mixed_precision_loss_in_float32(self):
    student = keras.Sequential([
        keras.Input([6]),
        keras.layers.Dense(6, kernel_initializer="identity", name="logits",
                           dtype="mixed_float16"),
    ])
    model = distiller.KnowledgeConcentrationModel(
        student, C2V, alpha=0.5, top_k=2, target_source="online",
        teacher_bank=tb.TeacherBank(_teachers(), C2V, top_k=2))
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(0.1)))
    logs = tf.function(model.train_step)((tf.constant(IMAGES), _features()))
    self.assertEqual(logs["loss"].dtype, tf.float32)
    self.assertAllClose(logs["loss"], 8 * LN2 - 1.25 * LN3, atol=2e-3)

  def test_bad_args(self):
    with self.assertRaisesRegex(ValueError, "alpha=0.5 needs soft targets"):
      distiller.KnowledgeConcentrationModel(_student(), C2V, alpha=0.5,
                                            target_source="labels")
    with self.assertRaisesRegex(ValueError, "'teachers'"):
      distiller.KnowledgeConcentrationModel(_student(), C2V,
                                            target_source="teachers")
    with self.assertRaisesRegex(ValueError, "alpha must be in"):
      distiller.KnowledgeConcentrationModel(_student(), C2V, alpha=2.0)
    with self.assertRaisesRegex(ValueError, "teacher_bank.top_k=3"):
      distiller.KnowledgeConcentrationModel(
          _student(), C2V, top_k=2, target_source="online",
          teacher_bank=tb.TeacherBank(_teachers(), C2V, top_k=3))
    model = distiller.KnowledgeConcentrationModel(
        _student(), C2V, top_k=2, target_source="online")
    model.compile(optimizer="sgd")
    with self.assertRaisesRegex(ValueError, "needs a teacher_bank"):
      model.train_step((tf.constant(IMAGES), _features()))
    model = _model(source="cache")
    with self.assertRaisesRegex(ValueError, "features\\['target_ids'\\]"):
      model.train_step((tf.constant(IMAGES), _features()))


if __name__ == "__main__":
  tf.test.main()
