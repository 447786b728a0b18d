"""Two multi_worker_mirrored processes on 127.0.0.1 train the student like one process."""

import json
import os
import subprocess
import sys
import tempfile

import worker_env

# This file also runs as a worker script, without tests/conftest.py.
worker_env.prepare_process()

from absl.testing import absltest  # noqa: E402
from absl.testing import parameterized  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = worker_env.REPO_ROOT
SMOKE_YAML = worker_env.GENERALIST_SMOKE_YAML
NUM_WORKERS = 2
TOLERANCE = 1e-5
SETUP_TIMEOUT_S = 300
WORKER_TIMEOUT_S = 400
TRAIN_STEPS = 4
EXTRA_STEPS = 2
TRAINER = {
    "train_steps": TRAIN_STEPS, "steps_per_loop": 1, "checkpoint_interval": 2,
    "optimizer": {"type": "sgd", "learning_rate": 0.01, "momentum": 0.9,
                  "schedule": "constant"},
}
SMALL_MODEL = {"backbone": {"filters": [8, 16], "batch_norm_momentum": 0.9},
               "head": {"s1": 32, "s2": 16}}


def student_params(tmp: str, strategy: str, train_steps: int = TRAIN_STEPS):
  """The smoke student (cached targets) with teachers and cache under `tmp`."""
  from official.modeling import hyperparams  # pylint: disable=g-import-not-at-top
  from kc_keras.configs import experiments  # pylint: disable=g-import-not-at-top
  params = experiments.get_experiment("kc_student_demo")
  params = hyperparams.override_params_dict(params, SMOKE_YAML, is_strict=True)
  params.override({
      "trainer": dict(TRAINER, train_steps=train_steps),
      "runtime": {"distribution_strategy": strategy},
      "task": {
          "specialists": {
              "init_checkpoint": "", "freeze": "none", "model": SMALL_MODEL,
              "train_batch_size": 16,
              "trainer": dict(TRAINER, train_steps=2, steps_per_loop=2)},
          "distillation": {
              "top_k": 5, "target_source": "cache",
              "teachers_dir": os.path.join(tmp, "teachers"),
              "cache_dir": os.path.join(tmp, "cache")}}}, is_strict=True)
  params.validate()
  params.lock()
  return params


def _record_weights(path: str, when: str) -> None:
  """Patches TrainController so that it saves every variable to `path`.

  `when` is 'after_train' (the final weights of this process) or
  'after_restore' (what a restore produced).
  """
  from kc_keras.training import controller  # pylint: disable=g-import-not-at-top
  original = getattr(controller.TrainController,
                     "train" if when == "after_train" else "restore")

  def dump(self):
    variables = list(self.model.weights) + list(self.model.optimizer.variables)
    np.savez(path, **{f"{i:04d}_{v.path}".replace("/", "|"):
                      np.asarray(v.numpy()) for i, v in enumerate(variables)})

  def wrapped(self, *args, **kwargs):
    out = original(self, *args, **kwargs)
    dump(self)
    return out

  setattr(controller.TrainController,
          "train" if when == "after_train" else "restore", wrapped)


def _concat_shards_pipeline() -> None:
  """Makes one process read, per step, the batches the two workers read.

  Each worker's pipeline is its `InputContext` shard with the per-replica
  batch; the patched pipeline zips both shards and concatenates them into
  the global batch of that step.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from kc_keras.dataloaders import pipeline  # pylint: disable=g-import-not-at-top
  original = pipeline.build_dataset

  def build_dataset(*args, training, input_context=None, **kwargs):
    if not training:
      return original(*args, training=training, input_context=input_context,
                      **kwargs)
    shards = [
        original(*args, training=True, input_context=tf.distribute.InputContext(
            NUM_WORKERS, i, NUM_WORKERS), **kwargs)
        for i in range(NUM_WORKERS)]

    def concat(*parts):
      return tf.nest.map_structure(lambda *xs: tf.concat(xs, axis=0), *parts)

    return tf.data.Dataset.zip(tuple(shards)).map(concat)

  pipeline.build_dataset = build_dataset


def run_role(role: str, tmp: str, arg: str) -> None:
  """One process of the test: setup, worker <i>, reference or resume."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()
  sys.path.insert(0, REPO_ROOT)
  if role == "worker":
    index = int(arg)
    os.environ["TF_CONFIG"] = os.environ["KC_TEST_TF_CONFIGS"].split(";")[index]
  from kc_keras.training import modes  # pylint: disable=g-import-not-at-top
  if role == "setup":
    params = student_params(tmp, "one_device")
    modes.train_specialists(params, os.path.join(tmp, "setup"), verbose=False)
    modes.cache_targets(params, os.path.join(tmp, "setup"))
    return
  if role == "worker":
    _record_weights(os.path.join(tmp, f"worker{arg}.npz"), "after_train")
    params = student_params(tmp, "multi_worker_mirrored")
    model_dir = os.path.join(tmp, "mwms")
  elif role == "reference":
    _record_weights(os.path.join(tmp, "reference.npz"), "after_train")
    _concat_shards_pipeline()
    params = student_params(tmp, "one_device")
    model_dir = os.path.join(tmp, "reference")
  elif role == "resume":
    _record_weights(os.path.join(tmp, "restored.npz"), "after_restore")
    params = student_params(tmp, "one_device", TRAIN_STEPS + EXTRA_STEPS)
    model_dir = arg
  else:
    raise ValueError(f"unknown role {role!r}")
  result = modes.train(params, model_dir, verbose=False)
  with open(os.path.join(tmp, f"{role}{arg if role == 'worker' else ''}.json"),
            "w") as f:
    json.dump({"history": result.history, "step": result.step}, f)


def _run(args, timeout, env=None):
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), *args],
                        cwd=REPO_ROOT, capture_output=True, text=True,
                        timeout=timeout, env=env, check=False)
  if proc.returncode != 0:
    raise AssertionError(f"{args} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-6000:]}")


def run_workers(tmp: str, timeout: float) -> None:
  """Starts NUM_WORKERS workers on free local ports; waits, always kills them."""
  from kc_keras.training import multi_worker  # pylint: disable=g-import-not-at-top
  ports = multi_worker.free_ports(NUM_WORKERS)
  env = dict(os.environ, KC_TEST_TF_CONFIGS=";".join(
      multi_worker.local_tf_config_json(ports, i) for i in range(NUM_WORKERS)))
  env.pop("TF_CONFIG", None)
  logs = [open(os.path.join(tmp, f"worker{i}.log"), "w")
          for i in range(NUM_WORKERS)]
  procs = []
  try:
    for i in range(NUM_WORKERS):
      procs.append(subprocess.Popen(
          [sys.executable, os.path.abspath(__file__), "worker", tmp, str(i)],
          cwd=REPO_ROOT, env=env, stdout=logs[i], stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for log in logs:
      log.close()
  for i, code in enumerate(codes):
    if code != 0:
      with open(os.path.join(tmp, f"worker{i}.log")) as f:
        raise AssertionError(f"worker {i} failed ({code}):\n{f.read()[-6000:]}")


def _load(path):
  with np.load(path) as data:
    return {k: data[k].astype(np.float64) for k in data.files
            if np.issubdtype(data[k].dtype, np.floating)}


def _max_abs_diff(a, b):
  if set(a) != set(b):
    raise AssertionError(f"Different variables: {sorted(set(a) ^ set(b))}")
  return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def _losses(path):
  with open(path) as f:
    return [logs["loss"] for _, logs in json.load(f)["history"]]


@pytest.mark.slow
class MultiWorkerTest(parameterized.TestCase):
  """Setup, 2 workers, the one-process reference and a resume, once."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    tmp = cls.tmp = cls._tmp.name
    _run(["setup", tmp, "-"], SETUP_TIMEOUT_S)
    run_workers(tmp, WORKER_TIMEOUT_S)
    _run(["reference", tmp, "-"], SETUP_TIMEOUT_S)
    cls.mwms_dir = os.path.join(tmp, "mwms")
    cls.mwms_files = sorted(os.listdir(cls.mwms_dir))
    # Resume in a copy, so the checks above see the workers' files.
    resume_dir = os.path.join(tmp, "resume_dir")
    subprocess.run(["cp", "-r", cls.mwms_dir, resume_dir], check=True)
    _run(["resume", tmp, resume_dir], SETUP_TIMEOUT_S)
    cls.workers = [_load(os.path.join(tmp, f"worker{i}.npz"))
                   for i in range(NUM_WORKERS)]
    cls.reference = _load(os.path.join(tmp, "reference.npz"))
    figures = {
        "workers_max_abs_diff": _max_abs_diff(*cls.workers),
        "worker_vs_one_process_max_abs_diff": _max_abs_diff(
            cls.workers[0], cls.reference),
        "loss_curve_max_abs_diff": max(
            abs(a - b) for a, b in zip(_losses(os.path.join(tmp, "worker0.json")),
                                       _losses(os.path.join(tmp,
                                                            "reference.json")))),
    }
    print("multi-worker figures:", json.dumps(figures))
    cls.figures = figures

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def test_workers_hold_identical_weights(self):
    self.assertEqual(self.figures["workers_max_abs_diff"], 0.0)

  def test_workers_equal_one_process_on_the_same_batches(self):
    self.assertLess(self.figures["worker_vs_one_process_max_abs_diff"],
                    TOLERANCE)

  def test_loss_curve_is_the_one_process_curve(self):
    worker_losses = [_losses(os.path.join(self.tmp, f"worker{i}.json"))
                     for i in range(NUM_WORKERS)]
    reference = _losses(os.path.join(self.tmp, "reference.json"))
    self.assertLen(reference, TRAIN_STEPS)
    self.assertEqual(worker_losses[0], worker_losses[1])
    np.testing.assert_allclose(worker_losses[0], reference, atol=TOLERANCE)

  def test_only_the_chief_wrote_checkpoints(self):
    leftovers = [n for n in self.mwms_files if n.startswith(".worker_tmp_")]
    self.assertEmpty(leftovers)
    indexes = sorted({n.split(".")[0] for n in self.mwms_files
                      if n.startswith("ckpt-")})
    self.assertEqual(indexes, ["ckpt-2", "ckpt-4"])

  def test_restores_under_another_number_of_replicas(self):
    restored = _load(os.path.join(self.tmp, "restored.npz"))
    # One replica restores what two workers trained, bit for bit.
    self.assertEqual(_max_abs_diff(restored, self.workers[0]), 0.0)
    with open(os.path.join(self.tmp, "resume.json")) as f:
      self.assertEqual(json.load(f)["step"], TRAIN_STEPS + EXTRA_STEPS)


class LocalClusterConfigTest(absltest.TestCase):
  """TF_CONFIG and ports for a local cluster (fast, no TensorFlow run)."""

  def test_tf_config_of_each_worker(self):
    from kc_keras.training import multi_worker  # pylint: disable=g-import-not-at-top
    config = multi_worker.local_tf_config([1001, 1002], 1)
    self.assertEqual(config, {
        "cluster": {"worker": ["127.0.0.1:1001", "127.0.0.1:1002"]},
        "task": {"type": "worker", "index": 1}})
    with self.assertRaisesRegex(ValueError, "index=2"):
      multi_worker.local_tf_config([1001, 1002], 2)

  def test_free_ports_are_distinct(self):
    from kc_keras.training import multi_worker  # pylint: disable=g-import-not-at-top
    ports = multi_worker.free_ports(3)
    self.assertLen(set(ports), 3)
    with self.assertRaisesRegex(ValueError, "count=0"):
      multi_worker.free_ports(0)

  def test_chief_and_write_dirs(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from kc_keras.training import multi_worker  # pylint: disable=g-import-not-at-top

    class FakeStrategy:
      def __init__(self, task_type, task_id, cluster):
        self.cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)

    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    chief = FakeStrategy("worker", 0, workers)
    other = FakeStrategy("worker", 1, workers)
    self.assertTrue(multi_worker.is_chief(chief))
    self.assertFalse(multi_worker.is_chief(other))
    self.assertEqual(multi_worker.write_dir("/m", chief), "/m")
    self.assertEqual(multi_worker.write_dir("/m", other),
                     "/m/.worker_tmp_worker_1")
    with_chief = dict(workers, chief=["127.0.0.1:3"])
    self.assertFalse(multi_worker.is_chief(FakeStrategy("worker", 0,
                                                        with_chief)))
    self.assertTrue(multi_worker.is_chief(FakeStrategy("chief", 0,
                                                       with_chief)))
    self.assertTrue(multi_worker.is_chief(tf.distribute.get_strategy()))


if __name__ == "__main__":
  run_role(sys.argv[1], sys.argv[2], sys.argv[3])
