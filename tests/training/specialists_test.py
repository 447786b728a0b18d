"""End-to-end tests of specialists, the target cache, the student and their guards."""

import json
import os
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf

from kc_keras.configs import derived_defaults
from kc_keras.distillation import shared_trunk
from kc_keras.distillation import target_cache
from kc_keras.training import experiment_runner
from kc_keras.training import modes
from kc_keras.training import pipeline_lib
from kc_keras.training import specialists

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "official_configs")
SMOKE = [os.path.join(CONFIGS, "generalist_demo_smoke.yaml"),
         os.path.join(CONFIGS, "student_demo_smoke.yaml")]


def _params(experiment, root, override="", teachers_dir=None):
  paths = (f"task.specialists.init_checkpoint={root}/generalist,"
           f"task.distillation.teachers_dir={teachers_dir or root}/teachers,"
           f"task.distillation.cache_dir={root}/cache")
  return experiment_runner.parse_configuration(types.SimpleNamespace(
      experiment=experiment, config_file=SMOKE if experiment.startswith(
          "kc_student") else SMOKE[:1],
      params_override=",".join(p for p in (paths, override) if p), tpu=None))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Generalist -> specialists -> cache -> student, once for the module."""
  root = str(tmp_path_factory.mktemp("kc"))
  modes.train(_params("kc_generalist_demo", root), f"{root}/generalist",
              verbose=False)
  student = _params("kc_student_demo", root)
  manifest = modes.train_specialists(student, f"{root}/specialists",
                                     verbose=False)
  cache_manifest = modes.cache_targets(student, f"{root}/specialists")
  result = modes.train(student, f"{root}/student", verbose=False)
  return types.SimpleNamespace(root=root, params=student, manifest=manifest,
                               cache_manifest=cache_manifest, result=result)


def test_every_vertical_has_a_recorded_teacher(trained):
  teachers = trained.manifest["teachers"]
  assert sorted(int(v) for v in teachers) == [0, 1, 2, 3]
  info = json.load(open(os.path.join(
      trained.root, "teachers", "vertical_00002", "teacher.json")))
  assert info["vertical_id"] == 2
  assert len(info["class_ids"]) == 10
  assert info["fingerprint"] == teachers["2"]["fingerprint"]


def test_teacher_starts_from_the_generalist_with_frozen_layers(trained):
  from kc_keras.training import model_builder  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  generalist_params = _params("kc_generalist_demo", trained.root)
  session = modes.Session(generalist_params, f"{trained.root}/generalist")
  generalist = session.build_model()
  from kc_keras.training import restore  # pylint: disable=g-import-not-at-top
  restore.restore_model_weights(generalist, f"{trained.root}/generalist")
  teacher = keras.saving.load_model(os.path.join(
      trained.root, "teachers", "vertical_00001", "teacher.keras"))
  # freeze: backbone_and_hidden (the smoke default): identical to the trunk.
  for a, b in zip(generalist.student.backbone.weights,
                  teacher.backbone.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  np.testing.assert_array_equal(
      generalist.student.head.hidden1.weights[0].numpy(),
      teacher.head.hidden1.weights[0].numpy())
  assert teacher.num_classes == 10
  del model_builder


def test_shipped_recipe_runs_the_teachers_as_one_shared_trunk(trained):
  # The recipe derived for few images per class (here 10) is the frozen
  # trunk, and the demo's teachers (the fixture's) are made with it.
  derived = _params("kc_student", trained.root)
  assert derived.task.specialists.freeze == derived_defaults.FROZEN_TRUNK
  assert (trained.params.task.specialists.freeze ==
          derived.task.specialists.freeze)
  session = modes.Session(trained.params, f"{trained.root}/specialists")
  generalist_session = modes.Session(
      _params("kc_generalist_demo", trained.root), f"{trained.root}/generalist")
  generalist = generalist_session.build_model()
  from kc_keras.training import restore  # pylint: disable=g-import-not-at-top
  restore.restore_model_weights(generalist, f"{trained.root}/generalist")
  # Each record names the generalist's trunk, and the bank runs them as one.
  infos = specialists.checked_teacher_infos(
      os.path.join(trained.root, "teachers"), session.hierarchy)
  assert {info["trunk"] for info in infos.values()} == {"shared_frozen"}
  assert {info["trunk_fingerprint"] for info in infos.values()} == {
      shared_trunk.trunk_fingerprint(generalist.student)}
  assert trained.manifest["teachers"]["0"]["trunk"] == "shared_frozen"
  bank = specialists.load_teacher_bank(
      trained.params, f"{trained.root}/specialists", session.hierarchy)
  assert bank.layout == "shared_trunk"


def test_teachers_budget_in_epochs_counts_their_verticals_rows(trained,
                                                              tmp_path):
  # Each demo vertical has 10 classes x 10 training images = 100 rows:
  # 100 // 8 = 12 steps per epoch, 30 epochs = 360 steps (a whole number
  # of the smoke config's 10-step loops), above the 300-step floor.
  params = _params(
      "kc_student_demo", trained.root,
      "task.specialists.trainer.train_steps=null,"
      "task.specialists.trainer.train_epochs=30,"
      "task.specialists.train_batch_size=8,"
      "task.specialists.verticals=[1]", teachers_dir=str(tmp_path))
  teachers_dir = str(tmp_path / "teachers")
  modes.train_specialists(params, str(tmp_path / "specialists"),
                          verbose=False)
  info = json.load(open(os.path.join(teachers_dir, "vertical_00001",
                                     "teacher.json")))
  assert info["train_steps"] == 360
  # Twice the rows, twice the steps.
  assert derived_defaults.teacher_steps(
      params.task.specialists.trainer, 200, 8) == 750


def test_cache_is_bound_to_teachers_and_k(trained):
  manifest = trained.cache_manifest
  assert manifest["num_examples"] == 40 * 10
  assert manifest["top_k"] == trained.params.task.distillation.top_k
  session = modes.Session(trained.params, f"{trained.root}/student")
  expected = modes.cache_binding(session, f"{trained.root}/specialists")
  expected["top_k"] = 3
  with pytest.raises(target_cache.TargetCacheMismatchError, match="top_k"):
    target_cache.load_target_cache(f"{trained.root}/cache", expected=expected)


def _shard_bytes(cache_dir):
  manifest = target_cache.read_manifest(cache_dir)
  out = {}
  for shard in manifest["shards"]:
    with open(os.path.join(cache_dir, shard["file"]), "rb") as f:
      out[shard["file"]] = f.read()
  return manifest, out


def test_an_interrupted_cache_resumes_to_the_same_bytes_and_is_then_kept(
    trained, tmp_path, monkeypatch):
  from kc_keras.distillation import teacher_bank  # pylint: disable=g-import-not-at-top
  from kc_keras.dataloaders import pipeline  # pylint: disable=g-import-not-at-top

  def params(cache):
    # 400 examples in shards of 64, batches of 48: shard ends fall inside
    # batches, so resuming mid-batch is what is tested.
    return _params("kc_student_demo", trained.root,
                   f"task.distillation.cache_dir={tmp_path / 'caches' / cache},"
                   "task.distillation.cache_shard_size=64,"
                   "task.eval_batch_size=48")

  # Own model dirs: the fixture's specialists keep their params.yaml.
  whole = modes.cache_targets(params("whole"), str(tmp_path / "whole"))
  real_batches = teacher_bank.soft_target_batches
  starts = []
  real_build = pipeline.build_dataset

  def build(*args, **kwargs):
    starts.append(kwargs.get("start_record", 0))
    return real_build(*args, **kwargs)

  def killed_after_four_batches(bank, dataset):
    for i, batch in enumerate(real_batches(bank, dataset)):
      if i == 4:
        raise KeyboardInterrupt  # 192 examples written: shards 0-1 whole
      yield batch

  monkeypatch.setattr(pipeline, "build_dataset", build)
  monkeypatch.setattr(teacher_bank, "soft_target_batches",
                      killed_after_four_batches)
  with pytest.raises(KeyboardInterrupt):
    modes.cache_targets(params("resumed"), str(tmp_path / "resumed"))
  caches = tmp_path / "caches"
  assert not os.path.exists(caches / "resumed")
  staged = sorted(os.listdir(str(caches / "resumed") +
                             target_cache.STAGING_SUFFIX))
  # Two whole shards recorded; the third, cut short, is dropped on resuming.
  assert staged == [target_cache.PROGRESS_NAME, "shard-00000.tfrecord",
                    "shard-00001.tfrecord", "shard-00002.tfrecord"]
  monkeypatch.setattr(teacher_bank, "soft_target_batches", real_batches)
  resumed = modes.cache_targets(params("resumed"), str(tmp_path / "resumed"))
  assert starts == [0, 128]  # after the two whole shards, mid-batch
  assert resumed == whole
  assert (_shard_bytes(caches / "resumed")[1] ==
          _shard_bytes(caches / "whole")[1])
  assert sorted(os.listdir(caches)) == ["resumed", "whole"]

  def never(bank, dataset):
    raise AssertionError("a current cache was written again")
    yield  # pylint: disable=unreachable

  monkeypatch.setattr(teacher_bank, "soft_target_batches", never)
  assert modes.cache_targets(params("resumed"),
                             str(tmp_path / "resumed")) == whole


def test_student_trains_on_cached_targets_and_is_evaluated(trained):
  logs = trained.result.logs
  assert trained.result.step == trained.params.trainer.train_steps
  assert logs["soft_target_loss"] > 0  # targets reached the loss
  metrics = modes.evaluate(trained.params, f"{trained.root}/student")
  spec = modes.evaluate_specialists(trained.params,
                                    f"{trained.root}/specialists")
  for m in (metrics, spec):
    assert 0.0 <= m["mpvap"] <= 1.0 and m["num_examples"] == 40 * 3
  assert spec["params"]["num_teachers"] == 4
  # The specialists' params are four networks; the student is one.
  assert spec["params"]["total"] > metrics["params"]["total"]


def test_stale_or_foreign_teacher_is_refused(trained, tmp_path):
  teachers_dir = str(tmp_path / "teachers")
  shutil.copytree(os.path.join(trained.root, "teachers"), teachers_dir)
  session = modes.Session(trained.params, str(tmp_path))
  hierarchy = session.hierarchy
  # A teacher file replaced after training: its fingerprint no longer matches.
  shutil.copy(os.path.join(teachers_dir, "vertical_00000", "teacher.keras"),
              os.path.join(teachers_dir, "vertical_00001", "teacher.keras"))
  with pytest.raises(specialists.TeacherError, match="file sha256"):
    specialists.load_teachers(teachers_dir, hierarchy)
  # A teacher recorded for another vertical.
  shutil.rmtree(os.path.join(teachers_dir, "vertical_00001"))
  shutil.copytree(os.path.join(teachers_dir, "vertical_00000"),
                  os.path.join(teachers_dir, "vertical_00001"))
  with pytest.raises(specialists.TeacherError,
                     match="vertical_id: teacher 0, hierarchy 1"):
    specialists.load_teachers(teachers_dir, hierarchy)
  # A missing teacher names its vertical.
  shutil.rmtree(os.path.join(teachers_dir, "vertical_00003"))
  with pytest.raises(specialists.TeacherError, match=r"vertical\(s\) \[3\]"):
    specialists.load_teachers(teachers_dir, hierarchy, verticals=[3])


def test_pipeline_report_helpers():
  assert pipeline_lib.gap_closed(27.7, 37.9, 68.0) == pytest.approx(
      0.2531, abs=1e-4)
  rows = [dict(name=n, params=p, wall_seconds=1.0,
               metrics=dict(mpvap=a, top1=t, top5=t))
          for n, p, a, t in (("generalist FC-FC", 10, 0.5, 0.4),
                             ("specialists", 100, 0.9, 0.8),
                             ("FC-SC + D + S (vertical)", 5, 0.7, 0.6))]
  table = pipeline_lib.results_table(rows)
  assert "| specialists | 90.0 | 80.0 | 80.0 | 100 | 1 |" in table
  summary = pipeline_lib.summarize(rows)
  assert "closes 50% of that gap" in summary and "5.0% of the specialists" in summary
  rows.append(dict(name="FC-FC + D", params=10, wall_seconds=1.0,
                   metrics=dict(mpvap=0.6, top1=0.5, top5=0.5)))
  assert pipeline_lib.chart_row_names(rows) == [
      "generalist FC-FC", "FC-SC + D + S (vertical)", "specialists"]
  assert pipeline_lib.chart_row_names(rows[:1]) == []


def test_per_vertical_chart_is_a_png(tmp_path):
  rows = [dict(name=n, metrics=dict(per_vertical_ap={"a": x, "b": y}))
          for n, x, y in (("generalist FC-FC", 0.2, 0.5), ("student", 0.4, 0.6),
                          ("specialists", 0.9, 0.8))]
  path = pipeline_lib.plot_per_vertical(
      rows, ["generalist FC-FC", "student", "specialists"],
      str(tmp_path / "chart.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.listdir(tmp_path) == ["chart.png"]  # no temporary file left
  with pytest.raises(ValueError, match="None of"):
    pipeline_lib.plot_per_vertical(rows, ["nope"], str(tmp_path / "x.png"))


def test_eval_specialists_rerun_keeps_metrics_bound_to_the_same_teachers(
    trained, tmp_path, monkeypatch):
  from kc_keras.training import eval_binding  # pylint: disable=g-import-not-at-top
  from kc_keras.training import evaluate as evaluate_lib  # pylint: disable=g-import-not-at-top
  model_dir = f"{trained.root}/specialists"
  first = experiment_runner.run(trained.params, "eval_specialists", model_dir)
  fingerprints = {str(v): t["fingerprint"]
                  for v, t in trained.manifest["teachers"].items()}
  assert first["binding"]["weights"] == fingerprints

  def no_evaluation(*args, **kwargs):
    raise AssertionError("evaluated again")

  monkeypatch.setattr(evaluate_lib, "evaluate_scores", no_evaluation)
  kept = experiment_runner.run(trained.params, "eval_specialists", model_dir)
  assert kept["mpvap"] == first["mpvap"]
  # A retrained teacher (another fingerprint) is measured again.
  path = os.path.join(model_dir, modes.SPECIALISTS_METRICS_FILE)
  with open(path) as f:
    record = json.load(f)
  record["binding"]["weights"]["3"] = "0" * 64
  with open(path, "w") as f:
    json.dump(record, f)
  assert eval_binding.kept_metrics(path, first["binding"]) is None
  with pytest.raises(AssertionError, match="evaluated again"):
    experiment_runner.run(trained.params, "eval_specialists", model_dir)
