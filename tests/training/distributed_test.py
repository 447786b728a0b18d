"""Every training mode under `mirrored` on 2 logical CPUs ends where one device ends."""

import json
import os
import re
import subprocess
import sys
import tempfile

import worker_env

# This file also runs as a worker script, without tests/conftest.py.
worker_env.prepare_process()

from absl.testing import parameterized  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

REPO_ROOT = worker_env.REPO_ROOT
SMOKE_YAML = worker_env.GENERALIST_SMOKE_YAML
TOLERANCE = 1e-5
ADAM_TOLERANCE = 1e-4
# float16 keeps 11 mantissa bits; 4 steps of a loss summed over 40 classes.
MIXED_FLOAT16_RTOL = 1e-2
SCENARIO_TIMEOUT_S = 900
# Plain SGD with momentum: Adam divides each gradient by its own magnitude,
# which turns float re-association noise on near-zero gradients (the conv
# kernels before BatchNorm) into visible weight differences; measured and
# reported separately below ('generalist_adam').
TRAINER = {
    "train_steps": 4, "steps_per_loop": 2, "checkpoint_interval": 2,
    "optimizer": {"type": "sgd", "learning_rate": 0.05, "momentum": 0.9,
                  "schedule": "constant"},
}
SMALL_MODEL = {"backbone": {"filters": [8, 16], "batch_norm_momentum": 0.9},
               "head": {"s1": 32, "s2": 16}}


def checkpoint_tensors(directory: str) -> dict:
  """Every float tensor of the latest checkpoint in `directory` by key."""
  reader = tf.train.load_checkpoint(directory)
  out = {}
  for key in reader.get_variable_to_shape_map():
    if key.startswith("_CHECKPOINTABLE") or key.startswith("save_counter"):
      continue
    value = reader.get_tensor(key)
    if np.issubdtype(np.asarray(value).dtype, np.floating):
      out[key] = np.asarray(value, np.float64)
  return out


def max_abs_diff(a: dict, b: dict) -> float:
  """max |a - b| over every tensor; the key sets must be equal."""
  if set(a) != set(b):
    raise AssertionError(f"Different variables: {sorted(set(a) ^ set(b))}")
  return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def _params_unlocked(experiment: str):
  from official.modeling import hyperparams  # pylint: disable=g-import-not-at-top
  from kc_keras.configs import experiments  # pylint: disable=g-import-not-at-top
  params = experiments.get_experiment(experiment)
  params = hyperparams.override_params_dict(params, SMOKE_YAML, is_strict=True)
  params.override({"trainer": TRAINER}, is_strict=True)
  return params


def _params(experiment: str, tmp: str, overrides: dict):
  params = _params_unlocked(experiment)
  if experiment == "kc_student_demo":
    params.override({"task": {
        "specialists": {
            "init_checkpoint": "", "freeze": "none", "model": SMALL_MODEL,
            "train_batch_size": 16,
            "trainer": dict(TRAINER, train_steps=2, checkpoint_interval=2)},
        "distillation": {
            "top_k": 5,
            "teachers_dir": os.path.join(tmp, "teachers"),
            "cache_dir": os.path.join(tmp, "cache")}}}, is_strict=True)
  params.override(overrides, is_strict=True)
  params.validate()
  params.lock()
  return params


def _runtime(strategy: str) -> dict:
  return {"runtime": {"distribution_strategy": strategy}}


def run_scenarios(tmp: str) -> dict:
  """Runs each case on one device and on `mirrored` (2 CPUs); the figures.

  Returns:
    {case: {"max_abs_diff": float, "loss_diff": float, "replicas": int}}.
  """
  from kc_keras.training import modes  # pylint: disable=g-import-not-at-top
  results = {}

  def train_both(case, experiment, overrides, train_fn, ckpt_subdir=""):
    dirs, losses = {}, {}
    for strategy in ("one_device", "mirrored"):
      params = _params(experiment, tmp,
                       {**overrides, **_runtime(strategy)})
      model_dir = os.path.join(tmp, case, strategy)
      out = train_fn(params, model_dir)
      dirs[strategy] = os.path.join(model_dir, ckpt_subdir)
      losses[strategy] = out
    results[case] = {
        "max_abs_diff": max_abs_diff(checkpoint_tensors(dirs["one_device"]),
                                     checkpoint_tensors(dirs["mirrored"])),
        "loss_diff": max(abs(a - b) for a, b in zip(losses["one_device"],
                                                    losses["mirrored"])),
        "losses": losses["one_device"],
    }

  def train(params, model_dir):
    result = modes.train(params, model_dir, verbose=False)
    return [logs["loss"] for _, logs in result.history]

  def train_specialist(params, model_dir):
    teachers = os.path.join(model_dir, "teachers")
    modes.train_specialists(params, model_dir, verticals=[1], verbose=False)
    with open(os.path.join(teachers, "vertical_00001", "teacher.json")) as f:
      return [json.load(f)["final_logs"]["loss"]]

  train_both("generalist", "kc_generalist_demo", {}, train)
  train_both("generalist_adam", "kc_generalist_demo", {"trainer": {
      "optimizer": {"type": "adam", "learning_rate": 0.01}}}, train)
  # teachers_dir '' = <model_dir>/teachers, one per strategy.
  train_both("specialist", "kc_student_demo", {"task": {"distillation": {
      "teachers_dir": ""}}}, train_specialist,
             ckpt_subdir="teachers/vertical_00001/train")

  # Teachers and cache once, on one device; both students read them.
  setup = _params("kc_student_demo", tmp, _runtime("one_device"))
  modes.train_specialists(setup, os.path.join(tmp, "setup"), verbose=False)
  modes.cache_targets(setup, os.path.join(tmp, "setup"))
  for source in ("online", "cache"):
    train_both(f"student_{source}", "kc_student_demo", {
        "task": {"distillation": {"target_source": source}}}, train)

  # mixed_float16 (LossScaleOptimizer) on 2 replicas: runs, stays finite.
  mixed = _params("kc_student_demo", tmp, {
      "runtime": {"distribution_strategy": "mirrored",
                  "mixed_precision_dtype": "mixed_float16"}})
  mixed_result = modes.train(mixed, os.path.join(tmp, "mixed"), verbose=False)
  results["student_cache_mixed_float16_mirrored"] = {
      "losses": [logs["loss"] for _, logs in mixed_result.history],
      "float32_losses": results["student_cache"]["losses"],
  }

  # Half the steps on one device, the rest on 2 replicas in the same dir.
  resume_dir = os.path.join(tmp, "resume")
  first = _params("kc_generalist_demo", tmp, {
      "trainer": {"train_steps": 2}, **_runtime("one_device")})
  modes.train(first, resume_dir, verbose=False)
  second = _params("kc_generalist_demo", tmp, _runtime("mirrored"))
  resumed = modes.train(second, resume_dir, verbose=False)
  results["resume_one_device_to_mirrored"] = {
      "max_abs_diff": max_abs_diff(
          checkpoint_tensors(os.path.join(tmp, "generalist", "one_device")),
          checkpoint_tensors(resume_dir)),
      "loss_diff": abs(resumed.history[-1][1]["loss"] -
                       results["generalist"]["losses"][-1]),
      "first_step_after_resume": resumed.history[0][0],
  }
  return results


def _split_cpu_in_two() -> None:
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.mark.slow
class MirroredEqualsOneDeviceTest(parameterized.TestCase):
  """One subprocess (2 logical CPUs set before TF starts) runs every case."""

  results = None

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    out = os.path.join(cls._tmp.name, "results.json")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), cls._tmp.name, out],
        cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=SCENARIO_TIMEOUT_S, check=False)
    if proc.returncode != 0:
      raise AssertionError(
          f"scenario process failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    with open(out) as f:
      cls.results = json.load(f)
    print("mirrored vs one device:", json.dumps(cls.results, indent=1))

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  @parameterized.parameters("generalist", "specialist", "student_online",
                            "student_cache", "resume_one_device_to_mirrored")
  def test_same_weights(self, case):
    result = self.results[case]
    self.assertLess(result["max_abs_diff"], TOLERANCE, msg=case)
    self.assertLess(result["loss_diff"], TOLERANCE, msg=case)

  def test_training_moved_the_weights(self):
    losses = self.results["generalist"]["losses"]
    self.assertLen(losses, 2)
    self.assertTrue(all(np.isfinite(losses)))

  def test_resume_continues_after_the_restored_step(self):
    self.assertEqual(
        self.results["resume_one_device_to_mirrored"]["first_step_after_resume"],
        TRAINER["train_steps"])

  def test_mixed_float16_on_two_replicas_tracks_float32(self):
    result = self.results["student_cache_mixed_float16_mirrored"]
    self.assertTrue(all(np.isfinite(result["losses"])))
    np.testing.assert_allclose(result["losses"], result["float32_losses"],
                               rtol=MIXED_FLOAT16_RTOL)

  def test_adam_differs_only_by_rounding(self):
    # Adam's per-coordinate normalisation amplifies rounding (see TRAINER).
    self.assertLess(self.results["generalist_adam"]["max_abs_diff"],
                    ADAM_TOLERANCE)
    self.assertLess(self.results["generalist_adam"]["loss_diff"], TOLERANCE)


class RuntimeConfigTest(parameterized.TestCase):
  """`runtime.validate()` names the key of every impossible setting."""

  @parameterized.parameters(
      ({"distribution_strategy": "horovod"}, "runtime.distribution_strategy"),
      ({"mixed_precision_dtype": "float16"}, "runtime.mixed_precision_dtype"),
      ({"num_gpus": -1}, "runtime.num_gpus=-1"),
      ({"num_gpus": 2}, "runtime.num_gpus=2"),
      ({"distribution_strategy": "tpu"}, "runtime.tpu must be set"),
      ({"tpu": "grpc://1.2.3.4:8470"}, "runtime.tpu="),
      ({"distribution_strategy": "tpu", "tpu": "local",
        "mixed_precision_dtype": "mixed_float16"}, "mixed_bfloat16"),
      ({"all_reduce_alg": "ring"}, "runtime.all_reduce_alg='ring'"),
      ({"distribution_strategy": "mirrored", "all_reduce_alg": "ring"},
       "runtime.all_reduce_alg"),
      ({"run_eagerly": True, "jit_compile": True}, "exclude each other"),
  )
  def test_rejects(self, overrides, message):
    from kc_keras.configs import runtime  # pylint: disable=g-import-not-at-top
    config = runtime.RuntimeConfig(overrides)
    with self.assertRaisesRegex(ValueError, re.escape(message)):
      config.validate()

  @parameterized.parameters(
      {"distribution_strategy": "one_device"},
      {"distribution_strategy": "mirrored", "num_gpus": 4,
       "all_reduce_alg": "nccl"},
      {"distribution_strategy": "multi_worker_mirrored",
       "all_reduce_alg": "ring", "mixed_precision_dtype": "mixed_float16"},
      {"distribution_strategy": "tpu", "tpu": "",
       "mixed_precision_dtype": "mixed_bfloat16", "jit_compile": True},
  )
  def test_accepts(self, **overrides):
    from kc_keras.configs import runtime  # pylint: disable=g-import-not-at-top
    runtime.RuntimeConfig(overrides).validate()


class BuildStrategyTest(tf.test.TestCase):

  def test_one_device_and_mirrored_on_cpu(self):
    from kc_keras.configs import runtime  # pylint: disable=g-import-not-at-top
    from kc_keras.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
    one = strategy_lib.build_strategy(runtime.RuntimeConfig())
    self.assertIsInstance(one, tf.distribute.OneDeviceStrategy)
    mirrored = strategy_lib.build_strategy(
        runtime.RuntimeConfig({"distribution_strategy": "mirrored"}))
    self.assertIsInstance(mirrored, tf.distribute.MirroredStrategy)
    self.assertEqual(mirrored.num_replicas_in_sync,
                     len(tf.config.list_logical_devices("CPU")))
    # Built once per process: a second strategy would reuse collective keys.
    self.assertIs(mirrored, strategy_lib.build_strategy(
        runtime.RuntimeConfig({"distribution_strategy": "mirrored"})))

  def test_mirrored_refuses_missing_gpus(self):
    from kc_keras.configs import runtime  # pylint: disable=g-import-not-at-top
    from kc_keras.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
    wanted = len(tf.config.list_logical_devices("GPU")) + 1
    with self.assertRaisesRegex(ValueError, f"num_gpus={wanted}"):
      strategy_lib.build_strategy(runtime.RuntimeConfig(
          {"distribution_strategy": "mirrored", "num_gpus": wanted}))

  def test_synchronize_batch_norm(self):
    import keras  # pylint: disable=g-import-not-at-top
    from kc_keras.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
    inner = keras.Sequential([keras.layers.BatchNormalization(name="bn1")])
    model = keras.Sequential([inner, keras.layers.BatchNormalization(
        name="bn2"), keras.layers.Dense(2, name="dense")])
    self.assertEqual(strategy_lib.synchronize_batch_norm(model), 2)
    self.assertTrue(inner.layers[0].synchronized)
    self.assertTrue(model.layers[1].synchronized)


class TpuStaticShapesTest(tf.test.TestCase):
  """What a TPU needs and this machine can check: static training shapes."""

  def _student(self):
    return _params_unlocked("kc_student_demo")

  def test_training_batches_and_targets_are_static(self):
    from kc_keras.dataloaders import factory  # pylint: disable=g-import-not-at-top
    from kc_keras.dataloaders import pipeline  # pylint: disable=g-import-not-at-top
    from kc_keras.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
    params = self._student()
    source = factory.build_source(params.task.data)
    top_k = 5
    cache = source.raw_dataset("train").map(lambda e: {
        "example_id": e["example_id"],
        "target_ids": tf.fill([top_k], -1),
        "target_probs": tf.zeros([top_k])})
    # Host 1 of 2, 4 replicas in all: a per-replica batch of 16 / 4.
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4)
    dataset = pipeline.build_dataset(
        source, "train", params.task.data, training=True,
        global_batch_size=16, input_context=context, extra=cache)
    strategy_lib.check_static_shapes(dataset.element_spec)
    images, features = dataset.element_spec
    self.assertEqual(images.shape, [4, 16, 16, 3])
    self.assertEqual(features["target_ids"].shape, [4, top_k])
    self.assertEqual(features["target_probs"].shape, [4, top_k])
    images, features = next(iter(dataset))
    self.assertEqual(images.shape, [4, 16, 16, 3])

  def test_eval_batches_are_refused(self):
    from kc_keras.dataloaders import factory  # pylint: disable=g-import-not-at-top
    from kc_keras.dataloaders import pipeline  # pylint: disable=g-import-not-at-top
    from kc_keras.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
    params = self._student()
    source = factory.build_source(params.task.data)
    dataset = pipeline.build_dataset(source, "eval", params.task.data,
                                     training=False, global_batch_size=16)
    with self.assertRaisesRegex(ValueError, r"0: \(None, 16, 16, 3\)"):
      strategy_lib.check_static_shapes(dataset.element_spec)

  def test_needs_static_shapes_only_on_tpu(self):
    from kc_keras.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
    self.assertFalse(strategy_lib.needs_static_shapes(
        tf.distribute.get_strategy()))
    self.assertFalse(strategy_lib.needs_static_shapes(
        tf.distribute.OneDeviceStrategy("/cpu:0")))


if __name__ == "__main__":
  _split_cpu_in_two()
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  sys.path.insert(0, REPO_ROOT)
  figures = run_scenarios(sys.argv[1])
  with open(sys.argv[2], "w") as f:
    json.dump(figures, f)
