"""Mixed precision and XLA: a student step stays finite and close to float32."""

import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from official.modeling import hyperparams

from kc_keras.configs import experiments
from kc_keras.dataloaders import factory
from kc_keras.dataloaders import pipeline
from kc_keras.training import controller as controller_lib
from kc_keras.training import model_builder

from smoke_configs import GENERALIST_SMOKE as SMOKE_YAML
BATCH = 8
TOP_K = 5
SEED = 7
# bfloat16 keeps 8 mantissa bits (relative step 2^-8), float16 11 (2^-11);
# the loss is a sum over 40 classes of float32 terms from rounded logits.
RELATIVE_TOLERANCE = {"mixed_bfloat16": 2e-2, "mixed_float16": 3e-3}
JIT_TOLERANCE = 1e-5


def _params(target_source: str):
  params = experiments.get_experiment("kc_student_demo")
  params = hyperparams.override_params_dict(params, SMOKE_YAML, is_strict=True)
  overrides = {"top_k": TOP_K, "target_source": target_source}
  if target_source == "labels":
    overrides["alpha"] = 0.0
  params.override({"task": {"distillation": overrides,
                            "specialists": {"init_checkpoint": "",
                                            "freeze": "none"}}},
                  is_strict=True)
  params.validate()
  return params


def _fake_cache(source):
  """Soft targets in the source's order: 0.9 on the first label, K wide."""
  def targets(element):
    label = tf.cast(element["label_ids"][:1], tf.int32)
    return {
        "example_id": element["example_id"],
        "target_ids": tf.concat([label, tf.fill([TOP_K - 1], -1)], 0),
        "target_probs": tf.concat([[0.9], tf.zeros([TOP_K - 1])], 0),
    }
  return source.raw_dataset("train").map(targets)


def _dataset(params, source, input_context=None, start_batch=0):
  return pipeline.build_dataset(
      source, "train", params.task.data, training=True,
      global_batch_size=BATCH, input_context=input_context,
      extra=_fake_cache(source), start_batch=start_batch)


def _build(params, source, strategy, make_optimizer=None):
  keras.utils.set_random_seed(SEED)
  with strategy.scope():
    model = model_builder.build_kc_model(
        params.task, source.hierarchy, source.image_shape,
        global_batch_size=BATCH)
    # Keras optimizers belong to the strategy they are created under.
    optimizer = (make_optimizer or (lambda: keras.optimizers.SGD(0.05)))()
    model.compile(optimizer=optimizer)
    model_builder.build_variables(model, source.image_shape)
  return model


class MixedPrecisionStepTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.params = _params("cache")
    cls.source = factory.build_source(cls.params.task.data)
    cls.batch = next(iter(_dataset(cls.params, cls.source)))

  def tearDown(self):
    keras.mixed_precision.set_global_policy("float32")
    super().tearDown()

  def _first_step(self, policy):
    keras.mixed_precision.set_global_policy(policy)
    model = _build(self.params, self.source, tf.distribute.get_strategy())
    logits = model(self.batch[0], training=False)
    logs = model.train_step(self.batch)
    return model, logits, {k: float(v) for k, v in logs.items()}

  @parameterized.parameters("mixed_bfloat16", "mixed_float16")
  def test_student_step_close_to_float32(self, policy):
    _, _, reference = self._first_step("float32")
    model, logits, logs = self._first_step(policy)
    self.assertEqual(model.student.compute_dtype, policy.split("_")[1])
    self.assertEqual(model.student.variable_dtype, "float32")
    # The student's logits (and so the sigmoids and the loss) are float32.
    self.assertEqual(logits.dtype, tf.float32)
    for name in ("loss", "soft_target_loss", "hard_label_loss"):
      self.assertTrue(np.isfinite(logs[name]), msg=name)
      self.assertAllClose(logs[name], reference[name],
                          rtol=RELATIVE_TOLERANCE[policy], msg=name)
    print(f"{policy}: loss {logs['loss']:.6f} vs float32 "
          f"{reference['loss']:.6f}")

  def test_float16_trains_through_a_loss_scale_optimizer(self):
    model, _, _ = self._first_step("mixed_float16")
    self.assertIsInstance(model.optimizer,
                          keras.optimizers.LossScaleOptimizer)
    self.assertEqual(int(model.optimizer.iterations.numpy()), 1)


class JitCompileTest(tf.test.TestCase, parameterized.TestCase):
  """jit_compile=True gives the float32 numbers of the plain graph."""

  def _train(self, target_source, jit_compile, policy="float32", steps=2):
    keras.mixed_precision.set_global_policy(policy)
    try:
      params = _params(target_source)
      source = factory.build_source(params.task.data)
      strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
      model = _build(params, source, strategy,
                     make_optimizer=lambda: keras.optimizers.SGD(
                         0.05, momentum=0.9))
      config = params.trainer
      config.override({"train_steps": steps, "steps_per_loop": steps,
                       "checkpoint_interval": steps})
      controller = controller_lib.TrainController(
          model=model, strategy=strategy,
          dataset_fn=lambda ctx, start: _dataset(params, source, ctx, start),
          config=config, model_dir=tempfile.mkdtemp(dir=self.create_tempdir()),
          global_batch_size=BATCH, jit_compile=jit_compile)
      result = controller.train(verbose=False)
      return result, [np.asarray(w) for w in model.weights]
    finally:
      keras.mixed_precision.set_global_policy("float32")

  @parameterized.parameters("labels", "cache")
  def test_jit_equals_graph(self, target_source):
    plain, plain_weights = self._train(target_source, jit_compile=False)
    jit, jit_weights = self._train(target_source, jit_compile=True)
    diff = max(float(np.max(np.abs(a - b)))
               for a, b in zip(plain_weights, jit_weights))
    print(f"jit vs graph ({target_source}): max abs diff {diff:.3g}")
    self.assertLess(diff, JIT_TOLERANCE)
    self.assertAllClose(jit.logs["loss"], plain.logs["loss"],
                        atol=JIT_TOLERANCE)

  def test_jit_with_bfloat16_is_finite(self):
    result, _ = self._train("cache", jit_compile=True,
                            policy="mixed_bfloat16", steps=1)
    self.assertTrue(np.isfinite(result.logs["loss"]))

  def test_online_teachers_refuse_jit(self):
    params = _params("cache")
    source = factory.build_source(params.task.data)
    model = _build(params, source, tf.distribute.get_strategy())
    model.supports_jit = False  # what target_source='online' sets
    with self.assertRaisesRegex(ValueError, "jit_compile"):
      controller_lib.TrainController(
          model=model, strategy=tf.distribute.get_strategy(),
          dataset_fn=lambda ctx, start: None, config=params.trainer,
          model_dir=self.create_tempdir().full_path, global_batch_size=BATCH,
          jit_compile=True)
