"""Teachers and caches read back from disk are checked against what they claim."""

import glob
import json
import os
import shutil
import types
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.distillation import target_cache
from kc_keras.training import experiment_runner
from kc_keras.training import modes
from kc_keras.training import specialists

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "official_configs")
HIERARCHY = hierarchy_lib.Hierarchy(("a", "b", "c", "d"), ("v0", "v1"),
                                    (0, 0, 1, 1))


def _network(seed):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((3,))
  return keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs),
                     name="teacher")


def _save_teachers(teachers_dir, hierarchy=HIERARCHY, seed=0):
  for v in range(hierarchy.num_verticals):
    specialists.save_teacher(_network(seed + v), teachers_dir, v, hierarchy,
                             train_steps=1, final_logs={"loss": 0.5},
                             trained_on="images",
                             trunk=specialists.INDEPENDENT_TRUNK)
  specialists.write_manifest(teachers_dir)


def _info_path(teachers_dir, vertical):
  return os.path.join(specialists.teacher_dir(teachers_dir, vertical),
                      specialists.TEACHER_INFO_FILE)


def _edit_info(teachers_dir, vertical, **fields):
  path = _info_path(teachers_dir, vertical)
  with open(path) as f:
    info = json.load(f)
  info.update(fields)
  with open(path, "w") as f:
    json.dump(info, f)


def test_teachers_load_under_their_own_hierarchy(tmp_path):
  _save_teachers(str(tmp_path))
  teachers = specialists.load_teachers(str(tmp_path), HIERARCHY)
  assert sorted(teachers) == [0, 1]


def test_records_say_how_the_trunk_was_made(tmp_path):
  _save_teachers(str(tmp_path))
  infos = specialists.checked_teacher_infos(str(tmp_path), HIERARCHY)
  assert [info["trunk"] for info in infos.values()] == ["independent"] * 2
  assert "trunk_fingerprint" not in infos[0]
  with open(os.path.join(str(tmp_path), specialists.MANIFEST_FILE)) as f:
    manifest = json.load(f)
  assert manifest["teachers"]["1"]["trunk"] == "independent"
  assert specialists.teachers_layout(infos, HIERARCHY) == ("stacked", None)
  with pytest.raises(ValueError, match="trunk must be"):
    specialists.save_teacher(_network(0), str(tmp_path), 0, HIERARCHY,
                             train_steps=1, final_logs={},
                             trained_on="images", trunk="frozen")


def _trunk_infos(*trunks):
  """Records of vertical v = 0, 1, ...: (trunk, trunk fingerprint or None)."""
  infos = {}
  for v, (trunk, fingerprint) in enumerate(trunks):
    infos[v] = {"trunk": trunk}
    if fingerprint:
      infos[v]["trunk_fingerprint"] = fingerprint
  return infos


def test_layout_is_the_one_the_records_call_for():
  shared = specialists.SHARED_FROZEN_TRUNK
  independent = specialists.INDEPENDENT_TRUNK
  assert specialists.teachers_layout(
      _trunk_infos((shared, "a" * 64), (shared, "a" * 64)),
      HIERARCHY) == ("shared_trunk", "a" * 64)
  assert specialists.teachers_layout(
      _trunk_infos((shared, "a" * 64), (independent, None)),
      HIERARCHY) == ("stacked", None)
  with pytest.raises(
      specialists.TeacherError,
      match=r"vertical 1 \(v1\) was trained on trunk bbbbbbbbbbbb, that of "
            r"vertical 0 \(v0\) on aaaaaaaaaaaa"):
    specialists.teachers_layout(
        _trunk_infos((shared, "a" * 64), (shared, "b" * 64)), HIERARCHY)


def test_records_without_the_trunk_field_run_stacked_with_a_warning():
  infos = _trunk_infos((specialists.SHARED_FROZEN_TRUNK, "a" * 64),
                       (specialists.SHARED_FROZEN_TRUNK, "a" * 64))
  del infos[1]["trunk"]
  with mock.patch.object(specialists.logging, "warning") as warning:
    assert specialists.teachers_layout(infos, HIERARCHY) == ("stacked", None)
  assert "older version" in warning.call_args[0][0]
  assert warning.call_args[0][1] == [1]


def test_permuted_class_names_are_refused_naming_the_classes(tmp_path):
  _save_teachers(str(tmp_path))
  permuted = hierarchy_lib.Hierarchy(("b", "a", "c", "d"), ("v0", "v1"),
                                     (0, 0, 1, 1))
  with pytest.raises(
      specialists.TeacherError,
      match=r"vertical_00000/teacher.json does not belong to vertical 0 "
            r"\('v0'\) of this hierarchy: class_names teacher vs hierarchy: "
            r"\[0\] 'a' vs 'b', \[1\] 'b' vs 'a'; hierarchy_fingerprint"):
    specialists.load_teachers(str(tmp_path), permuted)


def test_renamed_vertical_is_refused(tmp_path):
  _save_teachers(str(tmp_path))
  renamed = hierarchy_lib.Hierarchy(HIERARCHY.class_names, ("w0", "v1"),
                                    HIERARCHY.class_to_vertical)
  with pytest.raises(specialists.TeacherError,
                     match=r"vertical_name: teacher 'v0', hierarchy 'w0'"):
    specialists.load_teachers(str(tmp_path), renamed)


@pytest.mark.parametrize("field,value", [
    ("hierarchy_fingerprint", "0" * 64), ("vertical_name", "v9"),
    ("class_ids", [3, 2])])
def test_edited_teacher_json_is_refused(tmp_path, field, value):
  _save_teachers(str(tmp_path))
  _edit_info(str(tmp_path), 1, **{field: value})
  with pytest.raises(specialists.TeacherError,
                     match=r"vertical_00001/teacher.json: its fields were "
                           r"changed after it was written"):
    specialists.load_teachers(str(tmp_path), HIERARCHY)


def test_teacher_of_another_vertical_names_both_verticals(tmp_path):
  _save_teachers(str(tmp_path))
  shutil.rmtree(specialists.teacher_dir(str(tmp_path), 1))
  shutil.copytree(specialists.teacher_dir(str(tmp_path), 0),
                  specialists.teacher_dir(str(tmp_path), 1))
  with pytest.raises(
      specialists.TeacherError,
      match=r"does not belong to vertical 1 \('v1'\) of this hierarchy: "
            r"vertical_id: teacher 0, hierarchy 1; vertical_name: teacher "
            r"'v0', hierarchy 'v1'"):
    specialists.load_teachers(str(tmp_path), HIERARCHY)


def test_truncated_teacher_json_names_the_file(tmp_path):
  _save_teachers(str(tmp_path))
  path = _info_path(str(tmp_path), 1)
  with open(path, "r+") as f:
    f.truncate(40)
  with pytest.raises(specialists.TeacherError,
                     match=r"vertical_00001/teacher.json: not valid JSON"):
    specialists.load_teachers(str(tmp_path), HIERARCHY)
  with pytest.raises(specialists.TeacherError, match=r"teacher.json: not"):
    specialists.write_manifest(str(tmp_path))


def test_replaced_model_file_is_refused_before_loading(tmp_path):
  _save_teachers(str(tmp_path))
  other = str(tmp_path / "other")
  _save_teachers(other, seed=7)
  shutil.copy(os.path.join(specialists.teacher_dir(other, 1),
                           specialists.TEACHER_MODEL_FILE),
              os.path.join(specialists.teacher_dir(str(tmp_path), 1),
                           specialists.TEACHER_MODEL_FILE))
  with pytest.raises(specialists.TeacherError,
                     match=r"vertical_00001/teacher.keras does not match .*"
                           r"file sha256"):
    specialists.load_teachers(str(tmp_path), HIERARCHY)


def _session(teachers_dir):
  """What `modes.cache_binding` reads from a session, without data."""
  params = types.SimpleNamespace(task=types.SimpleNamespace(
      distillation=types.SimpleNamespace(
          teachers_dir=teachers_dir, top_k=2, max_teachers_per_example=1,
          temperature=1.0)))
  source = types.SimpleNamespace(fingerprint=lambda split: "data")
  return types.SimpleNamespace(params=params, source=source,
                               hierarchy=HIERARCHY)


def test_cache_is_stale_once_a_teacher_folder_is_replaced(tmp_path):
  teachers_dir, cache_dir = str(tmp_path / "teachers"), str(tmp_path / "c")
  _save_teachers(teachers_dir)
  binding = modes.cache_binding(_session(teachers_dir), str(tmp_path))
  batches = [(np.arange(2), np.zeros((2, 2), np.int32),
              np.zeros((2, 2), np.float32))]
  target_cache.write_target_cache(cache_dir, batches,
                                  manifest_fields=binding)
  # Another run's teacher of the same vertical, teachers_manifest.json kept.
  other = str(tmp_path / "other")
  _save_teachers(other, seed=7)
  shutil.rmtree(specialists.teacher_dir(teachers_dir, 1))
  shutil.copytree(specialists.teacher_dir(other, 1),
                  specialists.teacher_dir(teachers_dir, 1))
  expected = modes.cache_binding(_session(teachers_dir), str(tmp_path))
  with pytest.raises(target_cache.TargetCacheMismatchError,
                     match=r"teacher_fingerprints: vertical 1 cached=\w{12} "
                           r"expected=\w{12}$"):
    target_cache.load_target_cache(cache_dir, expected=expected)


def test_rerun_retrains_a_teacher_whose_file_does_not_match(tmp_path):
  _save_teachers(str(tmp_path))
  model_path = os.path.join(specialists.teacher_dir(str(tmp_path), 1),
                            specialists.TEACHER_MODEL_FILE)
  with open(model_path, "ab") as f:  # as if killed before teacher.json
    f.write(b"x")
  trained = []
  session = types.SimpleNamespace(
      params=types.SimpleNamespace(task=types.SimpleNamespace(
          specialists=types.SimpleNamespace(verticals=[]))),
      hierarchy=HIERARCHY, is_chief=True)
  with mock.patch.object(specialists, "train_one_specialist",
                         lambda s, v, *a, **k: trained.append(v)):
    with mock.patch.object(specialists, "teachers_dir_of",
                           lambda *a: str(tmp_path)):
      specialists.train_specialists(session, str(tmp_path), verbose=False)
  assert trained == [1]


def _folder_run(root, csv_rows, override=""):
  """A 2 x 2-class folder tree with a CSV hierarchy, and the student's config."""
  rng = np.random.RandomState(0)
  for split in ("train", "eval"):
    for vertical, classes in (("va", ("a0", "a1")), ("vb", ("b0", "b1"))):
      for name in classes:
        os.makedirs(os.path.join(root, split, vertical, name))
        for i in range(2):
          image = (rng.rand(8, 8, 3) * 255).astype(np.uint8)
          with open(os.path.join(root, split, vertical, name, f"{i}.png"),
                    "wb") as f:
            f.write(tf.io.encode_png(image).numpy())
  hierarchy_file = os.path.join(root, "hierarchy.csv")
  with open(hierarchy_file, "w") as f:
    f.write("class_id,class_name,vertical_id,vertical_name\n")
    f.write("".join(f"{i},{c},{v},{vn}\n"
                    for i, (c, v, vn) in enumerate(csv_rows)))
  return experiment_runner.parse_configuration(types.SimpleNamespace(
      experiment="kc_student_demo",
      config_file=[os.path.join(CONFIGS, "generalist_demo_smoke.yaml"),
                   os.path.join(CONFIGS, "student_demo_smoke.yaml")],
      params_override=(
          f"task.data.source=folder,"
          f"task.data.folder.train_dir={root}/train,"
          f"task.data.folder.eval_dir={root}/eval,"
          f"task.data.folder.hierarchy_file={hierarchy_file},"
          "task.data.folder.image_size=8,task.data.shuffle_buffer_size=8,"
          "task.specialists.init_checkpoint='',task.specialists.freeze=none,"
          "task.specialists.train_batch_size=4,"
          "task.specialists.trainer.train_steps=1,"
          "task.specialists.trainer.steps_per_loop=1,"
          "task.specialists.trainer.checkpoint_interval=1,"
          "task.distillation.target_source=online,"
          f"task.distillation.teachers_dir={root}/teachers,"
          "task.train_batch_size=4,trainer.train_steps=1,"
          "trainer.steps_per_loop=1,trainer.checkpoint_interval=1,"
          f"task.distillation.cache_dir={root}/cache" +
          (f",{override}" if override else "")),
      tpu=None))


def test_permuted_csv_stops_eval_specialists_and_online_student(tmp_path):
  root = str(tmp_path)
  rows = [("a0", 0, "va"), ("a1", 0, "va"), ("b0", 1, "vb"), ("b1", 1, "vb")]
  params = _folder_run(root, rows)
  modes.train_specialists(params, f"{root}/specialists", verbose=False)
  # Two class names swapped in the CSV, the folders unchanged.
  rows[0], rows[1] = ("a1", 0, "va"), ("a0", 0, "va")
  with open(os.path.join(root, "hierarchy.csv"), "w") as f:
    f.write("class_id,class_name,vertical_id,vertical_name\n")
    f.write("".join(f"{i},{c},{v},{vn}\n"
                    for i, (c, v, vn) in enumerate(rows)))
  message = (r"class_names teacher vs hierarchy: \[0\] 'a0' vs 'a1', "
             r"\[1\] 'a1' vs 'a0'")
  # The CSV is read when each run starts; fresh run directories, so that
  # only the teachers (in task.distillation.teachers_dir) hold the old one.
  with pytest.raises(specialists.TeacherError, match=message):
    modes.evaluate_specialists(params, f"{root}/specialists_eval")
  with pytest.raises(specialists.TeacherError, match=message):
    modes.train(params, f"{root}/student", verbose=False)
  assert not glob.glob(f"{root}/student/ckpt-*")


@pytest.mark.slow
def test_cache_of_replaced_teacher_stops_the_student_before_training(
    tmp_path):
  rows = [("a0", 0, "va"), ("a1", 0, "va"), ("b0", 1, "vb"), ("b1", 1, "vb")]
  root, other = str(tmp_path / "run"), str(tmp_path / "other")
  params = _folder_run(root, rows, "task.distillation.target_source=cache")
  modes.train_specialists(params, f"{root}/specialists", verbose=False)
  modes.cache_targets(params, f"{root}/specialists")
  # Another run's teacher of vertical 1 (another seed), the manifests kept.
  modes.train_specialists(_folder_run(other, rows, "runtime.seed=7"),
                          f"{other}/specialists", verticals=[1],
                          verbose=False)
  shutil.rmtree(specialists.teacher_dir(f"{root}/teachers", 1))
  shutil.copytree(specialists.teacher_dir(f"{other}/teachers", 1),
                  specialists.teacher_dir(f"{root}/teachers", 1))
  with pytest.raises(target_cache.TargetCacheMismatchError,
                     match=r"teacher_fingerprints: vertical 1 cached=\w{12} "
                           r"expected=\w{12}$"):
    modes.train(params, f"{root}/student", verbose=False)
  assert not glob.glob(f"{root}/student/ckpt-*")

