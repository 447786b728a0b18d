"""Crashes, bad configs and bad data in training: stop clearly, lose nothing."""

import errno
import glob
import json
import os
import types
from unittest import mock

from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

from kc_keras.configs import checks
from kc_keras.dataloaders import data_errors
from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.dataloaders import pipeline
from kc_keras.training import controller as controller_lib
from kc_keras.training import experiment_runner
from kc_keras.training import modes
from kc_keras.training import restore as restore_lib
from kc_keras.training import specialists
from kc_keras.utils import files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(REPO, "official_configs", "generalist_demo_smoke.yaml")
# Steps per loop and per checkpoint in these tests.
LOOP = 5


def _params(override=""):
  base = (f"trainer.steps_per_loop={LOOP},trainer.checkpoint_interval={LOOP},"
          "trainer.max_to_keep=5")
  return experiment_runner.parse_configuration(types.SimpleNamespace(
      experiment="kc_generalist_demo", config_file=[SMOKE],
      params_override=",".join(o for o in (base, override) if o), tpu=None))


def _controller(session, model, poison_from=None):
  """A controller on the smoke data; batches from `poison_from` on are NaN."""
  params = session.params

  def dataset_fn(input_context, start_batch):
    ds = pipeline.build_dataset(
        session.source, "train", params.task.data, training=True,
        global_batch_size=params.task.train_batch_size,
        input_context=input_context, start_batch=start_batch)
    if poison_from is None:
      return ds

    def poison(index, batch):
      images, features = batch
      bad = tf.fill(tf.shape(images), float("nan"))
      return tf.where(index >= poison_from, bad, images), features

    return ds.enumerate(start=start_batch).map(poison)

  return controller_lib.TrainController(
      model=model, strategy=session.strategy, dataset_fn=dataset_fn,
      config=params.trainer, model_dir=session.model_dir,
      global_batch_size=params.task.train_batch_size)


def _weights(model):
  return [w.numpy() for w in model.weights]


class NonFiniteLossTest(tf.test.TestCase):

  @pytest.mark.slow
  def test_stops_naming_step_and_term_and_keeps_the_last_checkpoint(self):
    model_dir = self.create_tempdir().full_path
    session = modes.Session(_params(f"trainer.train_steps={LOOP}"), model_dir)
    model = session.build_model()
    _controller(session, model).train(verbose=False)
    good = _weights(model)

    session = modes.Session(_params(f"trainer.train_steps={4 * LOOP}"),
                            model_dir)
    model = session.build_model()
    # The second loop (steps 6..10) sees NaN images.
    controller = _controller(session, model, poison_from=LOOP + 1)
    with self.assertRaisesRegex(
        controller_lib.NonFiniteLossError,
        rf"at step {2 * LOOP}: .*\bloss=nan.*ckpt-{LOOP}"):
      controller.train(verbose=False)
    self.assertEqual(os.path.basename(tf.train.latest_checkpoint(model_dir)),
                     f"ckpt-{LOOP}")
    self.assertEmpty(glob.glob(os.path.join(model_dir, f"ckpt-{2 * LOOP}*")))

    fresh = modes.Session(_params(), model_dir).build_model()
    restore_lib.restore_model_weights(fresh, model_dir)
    for restored, expected in zip(_weights(fresh), good):
      self.assertAllEqual(restored, expected)


class ResumeTest(tf.test.TestCase):

  @pytest.mark.slow
  def test_resume_with_dropout_equals_an_uninterrupted_run(self):
    # Constant schedule: a cosine one spans train_steps, which differ here.
    override = ("task.model.head.dropout=0.5,"
                "trainer.optimizer.schedule=constant,trainer.train_steps=")
    straight, resumed = (self.create_tempdir().full_path for _ in range(2))
    modes.train(_params(f"{override}{2 * LOOP}"), straight, verbose=False)
    modes.train(_params(f"{override}{LOOP}"), resumed, verbose=False)
    result = modes.train(_params(f"{override}{2 * LOOP}"), resumed,
                         verbose=False)
    self.assertEqual([s for s, _ in result.history], [2 * LOOP])
    a, b = (tf.train.load_checkpoint(os.path.join(d, f"ckpt-{2 * LOOP}"))
            for d in (straight, resumed))
    names = sorted(a.get_variable_to_shape_map())
    # The dropout seed state is checkpointed with the weights.
    self.assertTrue(any(n.startswith("rng_state/") for n in names))
    for name in names:
      if "OBJECT_GRAPH" not in name:
        self.assertAllEqual(a.get_tensor(name), b.get_tensor(name), msg=name)


class CheckpointFallbackTest(tf.test.TestCase):

  def _train(self, model_dir, steps):
    return modes.train(_params(f"trainer.train_steps={steps}"), model_dir,
                       verbose=False)

  def _restore(self, model_dir):
    model = modes.Session(_params(), model_dir).build_model()
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    path = restore_lib.restore_latest_usable(checkpoint, model_dir)
    return path, int(model.optimizer.iterations.numpy())

  @pytest.mark.slow
  def test_a_broken_newest_checkpoint_falls_back_to_the_previous(self):
    model_dir = self.create_tempdir().full_path
    self._train(model_dir, 3 * LOOP)
    prefix = os.path.join(model_dir, "ckpt-")
    # A save cut short before its index was written.
    os.remove(f"{prefix}{3 * LOOP}.index")
    path, step = self._restore(model_dir)
    self.assertEqual((path, step), (f"{prefix}{2 * LOOP}", 2 * LOOP))
    # A data shard cut short.
    data = glob.glob(f"{prefix}{2 * LOOP}.data-*")[0]
    with open(data, "r+b") as f:
      f.truncate(os.path.getsize(data) // 2)
    path, step = self._restore(model_dir)
    self.assertEqual((path, step), (f"{prefix}{LOOP}", LOOP))
    # Training resumes from the usable one and still ends on time.
    result = self._train(model_dir, 3 * LOOP)
    self.assertEqual([s for s, _ in result.history], [2 * LOOP, 3 * LOOP])

  def test_relative_model_dir_restores(self):
    # Users pass relative model dirs (runs/omniglot/...); the state file's
    # entries then come back already prefixed with that relative dir.
    root = self.create_tempdir().full_path
    cwd = os.getcwd()
    os.chdir(root)
    try:
      self._train("run", LOOP)
      path, step = self._restore("run")
    finally:
      os.chdir(cwd)
    self.assertEqual((path, step), (os.path.join("run", f"ckpt-{LOOP}"), LOOP))

  def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(self):
    model_dir = self.create_tempdir().full_path
    self._train(model_dir, LOOP)
    for index in glob.glob(os.path.join(model_dir, "ckpt-*.index")):
      os.remove(index)
    with self.assertRaisesRegex(restore_lib.CheckpointError,
                                rf"No usable checkpoint.*ckpt-{LOOP}"):
      self._restore(model_dir)


class AtomicWriteTest(tf.test.TestCase):

  def test_crash_while_replacing_keeps_previous_params_and_metrics(self):
    model_dir = self.create_tempdir().full_path
    params = _params()
    modes.save_params(params, model_dir)
    metrics_path = os.path.join(model_dir, modes.EVAL_METRICS_FILE)
    files.atomic_write_json(metrics_path, {"top1": 0.5})
    before = sorted(os.listdir(model_dir))
    with open(os.path.join(model_dir, modes.PARAMS_FILE)) as f:
      params_text = f.read()

    with mock.patch.object(os, "replace", side_effect=OSError("killed")):
      with self.assertRaisesRegex(OSError, "killed"):
        modes.save_params(_params("trainer.train_steps=7"), model_dir)
      with self.assertRaisesRegex(OSError, "killed"):
        files.atomic_write_json(metrics_path, {"top1": 0.9})
    # The previous files, whole, and no temporary left behind.
    self.assertEqual(sorted(os.listdir(model_dir)), before)
    with open(os.path.join(model_dir, modes.PARAMS_FILE)) as f:
      self.assertEqual(f.read(), params_text)
    with open(metrics_path) as f:
      self.assertEqual(json.load(f), {"top1": 0.5})

  def test_crash_while_writing_bytes_leaves_no_partial_file(self):
    path = os.path.join(self.create_tempdir().full_path, "model.tflite")
    files.atomic_write_bytes(path, b"old")

    def fail_fsync(fd):
      raise OSError("power cut")

    with mock.patch.object(os, "fsync", fail_fsync):
      with self.assertRaisesRegex(OSError, "power cut"):
        files.atomic_write_bytes(path, b"new" * 1000)
    self.assertEqual(os.listdir(os.path.dirname(path)), ["model.tflite"])
    with open(path, "rb") as f:
      self.assertEqual(f.read(), b"old")

  def test_staged_directory_appears_whole_or_not_at_all(self):
    root = self.create_tempdir().full_path
    final = os.path.join(root, "run")
    with self.assertRaisesRegex(RuntimeError, "crash"):
      with files.staged_directory(final) as staging:
        files.atomic_write_text(os.path.join(staging, "a.txt"), "a")
        raise RuntimeError("crash")
    self.assertEqual(os.listdir(root), [])
    os.makedirs(final)  # An empty directory is replaced.
    with files.staged_directory(final) as staging:
      self.assertEqual(os.path.dirname(staging), root)
      files.atomic_write_text(os.path.join(staging, "a.txt"), "a")
      self.assertEqual(os.listdir(final), [])
    self.assertEqual(os.listdir(root), ["run"])
    self.assertEqual(os.listdir(final), ["a.txt"])
    with self.assertRaises(OSError):  # A non-empty one is not.
      with files.staged_directory(final) as staging:
        files.atomic_write_text(os.path.join(staging, "b.txt"), "b")
    self.assertEqual(os.listdir(root), ["run"])
    self.assertEqual(os.listdir(final), ["a.txt"])


class RunDirGuardTest(tf.test.TestCase):

  def test_rerun_with_another_config_names_the_keys(self):
    model_dir = self.create_tempdir().full_path
    modes.Session(_params(), model_dir)
    # Resume-safe changes pass.
    modes.Session(_params("trainer.train_steps=99,runtime.seed=3"), model_dir)
    changed = _params("trainer.optimizer.learning_rate=0.5,"
                      "task.data.seed=4")
    with self.assertRaisesRegex(
        checks.ConfigError,
        r"task.data.seed: was 0, now 4; "
        r"trainer.optimizer.learning_rate: was 0.01, now 0.5"):
      modes.Session(changed, model_dir)
    modes.Session(changed, model_dir, allow_config_change=True)
    # The new config is recorded: rerunning it is no longer a change.
    modes.Session(changed, model_dir)

  def test_a_labels_only_run_ignores_the_teachers_settings(self):
    # The generalist (hard labels) never reads the teachers' settings: a
    # changed teacher budget keeps its run; a student's run is strict.
    teachers = ("task.specialists.trainer.train_steps=7,"
                "task.distillation.teachers_dir=/elsewhere")
    model_dir = self.create_tempdir().full_path
    params = _params()
    self.assertEqual(params.task.distillation.target_source, "labels")
    modes.Session(params, model_dir,
                  unread=modes.keys_a_network_never_reads(params))
    changed = _params(teachers)
    modes.Session(changed, model_dir,
                  unread=modes.keys_a_network_never_reads(changed))
    with self.assertRaisesRegex(checks.ConfigError,
                                "task.specialists.trainer.train_steps"):
      modes.Session(_params("task.specialists.trainer.train_steps=8"),
                    model_dir)
    student = ("task.distillation.target_source=online,"
               "task.distillation.alpha=0.5")
    self.assertEqual(modes.keys_a_network_never_reads(_params(student)), ())

  def test_eval_of_a_model_dir_of_another_hierarchy_names_both(self):
    model_dir = self.create_tempdir().full_path
    modes.Session(_params(), model_dir)
    with self.assertRaisesRegex(hierarchy_lib.HierarchyError,
                                r"40 classes.*44 classes"):
      modes.evaluate(_params("task.data.embedded.num_classes=44"), model_dir)

  def test_checkpoint_of_a_run_of_another_hierarchy_is_refused(self):
    model_dir = self.create_tempdir().full_path
    other = self.create_tempdir().full_path
    modes.Session(_params("task.data.embedded.num_classes=44"), other)
    with mock.patch.object(restore_lib, "restore_model_weights") as restore:
      with self.assertRaisesRegex(
          hierarchy_lib.HierarchyError,
          rf"^{other} was trained with another hierarchy \(44 classes"):
        modes.evaluate(_params(), model_dir,
                       checkpoint_path=os.path.join(other, "ckpt-5"))
    restore.assert_not_called()

  def test_eval_of_a_read_only_model_dir_says_so_before_any_work(self):
    model_dir = self.create_tempdir().full_path
    # Root ignores permission bits: the failing write is simulated.
    with mock.patch.object(files, "_probe_write", side_effect=OSError(
        errno.EROFS, "Read-only file system")):
      with mock.patch.object(modes.Session, "build_model") as build:
        with self.assertRaisesRegex(
            files.StorageError,
            rf"^{model_dir} is not writable \(read-only file system; .*\): "
            r"every mode records params.yaml .*eval_metrics.json.*pass that "
            r"as --model_dir\.$"):
          modes.evaluate(_params(), model_dir)
    build.assert_not_called()
    self.assertEmpty(os.listdir(model_dir))

  def test_config_checks_that_need_the_hierarchy(self):
    cases = {
        "task.data.embedded.num_verticals=1,task.data.embedded.num_classes=5,"
        "task.model.self_paced.mode=vertical":
            r"task.model.self_paced.mode='vertical'.*1 vertical",
        "task.data.max_labels_per_example=9,"
        "task.distillation.max_teachers_per_example=5":
            r"task.distillation.max_teachers_per_example=5 exceeds the "
            r"hierarchy's 4 verticals",
        "task.specialists.verticals=[1,4]":
            r"task.specialists.verticals has ids \[4\]",
    }
    for override, message in cases.items():
      with self.assertRaisesRegex(ValueError, message):
        modes.Session(_params(override), self.create_tempdir().full_path)


class StorageErrorTest(tf.test.TestCase):

  def test_full_disk_ends_the_binary_with_one_line(self):
    from kc_keras import train  # pylint: disable=g-import-not-at-top
    model_dir = self.create_tempdir().full_path
    path = os.path.join(model_dir, "ckpt-3.index")

    def full_disk(*args, **kwargs):
      del args, kwargs
      raise OSError(errno.ENOSPC, "No space left on device", path)

    with flagsaver.flagsaver(experiment="kc_generalist_demo", mode="train",
                             model_dir=model_dir, config_file=[SMOKE]):
      train.FLAGS.mark_as_parsed()
      with mock.patch.object(experiment_runner, "run", full_disk):
        with self.assertRaises(SystemExit) as raised:
          train.main([])
    message = str(raised.exception)
    self.assertRegex(message, rf"^kc_keras.train: Cannot write {path}: no "
                              r"space left on device \(.* free on .*\)\.$")
    self.assertNotIn("\n", message)


class MissingTeachersTest(tf.test.TestCase):

  def test_online_targets_without_teachers_stop_before_training(self):
    root = self.create_tempdir().full_path
    params = _params("task.distillation.target_source=online,"
                     "task.distillation.alpha=0.5,"
                     f"task.distillation.teachers_dir={root}/teachers")
    with self.assertRaisesRegex(
        specialists.TeacherError,
        r"No teacher for vertical\(s\) \[0, 1, 2, 3\].*"
        r"task.distillation.teachers_dir"):
      modes.train(params, os.path.join(root, "run"), verbose=False)
    self.assertEmpty(glob.glob(os.path.join(root, "run", "ckpt-*")))


def _write_folder(root, bad_names):
  """4 verticals x 10 classes would be slow: 2 x 2, 3 good images each."""
  rng = np.random.RandomState(0)
  for v in ("va", "vb"):
    for c in (f"{v}_c0", f"{v}_c1"):
      os.makedirs(os.path.join(root, v, c))
      for i in range(3):
        image = (rng.rand(8, 8, 3) * 255).astype(np.uint8)
        with open(os.path.join(root, v, c, f"{i}.png"), "wb") as f:
          f.write(tf.io.encode_png(image).numpy())
  for name in bad_names:
    with open(os.path.join(root, "vb", "vb_c1", name), "wb") as f:
      f.write(rng.bytes(40))


class CorruptImagesInTrainingTest(tf.test.TestCase):

  def _folder_params(self, policy, model_dir, steps=2):
    train, evaluation = (os.path.join(model_dir, d) for d in ("train", "eval"))
    _write_folder(train, ["bad.jpg"])
    _write_folder(evaluation, ["bad1.png", "bad2.jpg"])
    return _params(
        f"task.data.source=folder,task.data.folder.train_dir={train},"
        f"task.data.folder.eval_dir={evaluation},"
        "task.data.folder.image_size=8,task.data.shuffle_buffer_size=16,"
        f"task.data.on_decode_error={policy},trainer.train_steps={steps},"
        f"trainer.steps_per_loop={steps},trainer.checkpoint_interval={steps},"
        "task.train_batch_size=4")

  def test_error_stops_naming_the_file(self):
    model_dir = self.create_tempdir().full_path
    # 8 batches of 4 > 2 epochs of 13 files through a 16-element shuffle
    # buffer: the whole first epoch, bad file included, must be read.
    params = self._folder_params("error", model_dir, steps=8)
    with self.assertRaisesRegex(data_errors.DataError,
                                r"training data: .*vb/vb_c1/bad\.jpg"):
      modes.train(params, os.path.join(model_dir, "run"), verbose=False)

  def test_skip_counts_in_the_summary_and_metrics_json(self):
    model_dir = self.create_tempdir().full_path
    # As above: the whole first epoch, with its one bad file, is read.
    params = self._folder_params("skip", model_dir, steps=8)
    run = os.path.join(model_dir, "run")
    result = modes.train(params, run, verbose=False)
    self.assertEqual(result.step, 8)
    with open(os.path.join(run, modes.TRAIN_SUMMARY_FILE)) as f:
      # Once per epoch read (prefetch may have started another).
      self.assertGreaterEqual(json.load(f)["logs"]["skipped_examples"], 1)
    with open(os.path.join(run, modes.TRAIN_SUMMARY_FILE)) as f:
      summary = json.load(f)
    self.assertGreater(summary["steps_per_second"], 0)
    # Rerunning a finished run trains nothing and keeps its summary.
    self.assertEqual(modes.train(params, run, verbose=False).history, [])
    with open(os.path.join(run, modes.TRAIN_SUMMARY_FILE)) as f:
      self.assertEqual(json.load(f), summary)
    modes.evaluate(params, run)
    with open(os.path.join(run, modes.EVAL_METRICS_FILE)) as f:
      metrics = json.load(f)
    self.assertEqual(metrics["skipped_examples"], 2)
    self.assertEqual(metrics["num_examples"], 12)


if __name__ == "__main__":
  tf.test.main()
