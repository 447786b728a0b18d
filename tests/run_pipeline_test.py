"""The own-data command: `run_pipeline --pipeline=kc --data=...` on a folder tree made here."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from kc_keras.configs import data as data_cfg
from kc_keras.configs import derived_defaults
from kc_keras.dataloaders.sources import embedded
from kc_keras.dataloaders.sources import folder
from kc_keras.dataloaders.sources import tfrecord
from kc_keras.training import pipeline_lib
from kc_keras.training import pipelines
from export import run_export_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Names a user's tree has: spaces, non-ASCII letters, a class with one image.
TREE = {
    "Vögel am See": {"Grüner Specht": 4, "Blaue Meise": 4, "Kauz": 1},
    "cars and trucks": {"Fiat 500": 4, "camion à benne": 4, "bus": 4},
    "Café": {"crème brûlée": 4, "flat white": 4, "tè": 4},
}
TOY_OVERRIDE = ",".join([
    "task.data.folder.image_size=16",
    "task.model.backbone.filters=[8,16]",
    "task.model.head.s1=32", "task.model.head.s2=16",
    "task.train_batch_size=8", "task.eval_batch_size=16",
    "trainer.train_epochs=8",
    "task.specialists.train_batch_size=8",
    "task.specialists.trainer.train_steps=10",
    "task.specialists.trainer.steps_per_loop=5",
    "task.specialists.trainer.checkpoint_interval=10",
])


def write_tree(root, tree=None, image_size=16) -> str:
  """PNGs of the embedded generator, one class folder per entry of `tree`."""
  tree = tree or TREE
  sizes = [len(classes) for classes in tree.values()]
  config = data_cfg.EmbeddedConfig(num_verticals=len(tree),
                                   num_classes=sum(sizes),
                                   image_size=image_size)
  source = embedded.EmbeddedSource(config)
  class_id = 0
  for vertical, classes in tree.items():
    for name, count in classes.items():
      directory = os.path.join(root, vertical, name)
      os.makedirs(directory)
      for i in range(count):
        pixels = np.round(255 * source.render(class_id, i).numpy())
        Image.fromarray(pixels.astype(np.uint8)).save(
            os.path.join(directory, f"image {i}.png"))
      class_id += 1
  return str(root)


def test_holdout_is_stratified_deterministic_and_leaves_single_images(
    tmp_path):
  root = write_tree(tmp_path / "tree")
  config = data_cfg.FolderConfig(train_dir=root, holdout_fraction=0.2)
  source = folder.FolderSource(config)
  held = source.files("eval")
  train = source.files("train")
  # 4 images: round(0.8) = 1 held out; the one-image class only trains.
  assert len(held) == 8 and len(train) == 8 * 3 + 1
  assert not {p for p, _ in held} & {p for p, _ in train}
  kauz = source.hierarchy.class_names.index("Kauz")
  assert kauz not in {c for _, c in held}
  again = folder.FolderSource(data_cfg.FolderConfig(train_dir=root,
                                                    holdout_fraction=0.2))
  assert again.files("eval") == held


@pytest.mark.parametrize("n, fraction, held", [
    (1, 0.2, 0), (2, 0.2, 1), (4, 0.2, 1), (10, 0.2, 2), (10, 0.5, 5),
    (3, 0.9, 2), (10, 0.0, 0)])
def test_holdout_count(n, fraction, held):
  assert folder.holdout_count(n, fraction) == held


def test_data_spec(tmp_path):
  train, evaluation = str(tmp_path), str(tmp_path)
  assert data_cfg.data_spec_override(f"folder:{train},{evaluation}") == {
      "task": {"data": {"source": "folder", "folder": {
          "train_dir": train, "eval_dir": evaluation, "hierarchy_file": ""}}}}
  assert data_cfg.data_spec_override("tfds:omniglot")["task"]["data"] == {
      "source": "tfds", "tfds": {"name": "omniglot"}}
  spec = data_cfg.data_spec_override("tfrecord:a-*.rec,b-*.rec", "h.json")
  assert spec["task"]["data"]["tfrecord"] == {
      "train_pattern": "a-*.rec", "eval_pattern": "b-*.rec",
      "hierarchy_file": "h.json"}


@pytest.mark.parametrize("spec, hierarchy, message", [
    ("images/", "", "must be folder:TRAIN_DIR"),
    ("ftp:x", "", "must be folder:TRAIN_DIR"),
    ("folder:/no/such/dir", "", "training folder '/no/such/dir' does not"),
    ("folder:a,b,c", "", "at most one evaluation"),
    ("tfrecord:a-*,b-*", "", "needs --hierarchy_file"),
    ("tfrecord:a-*", "h.json", "needs an evaluation glob"),
    ("tfds:omniglot", "h.json", "not used with --data=tfds"),
])
def test_bad_data_spec_is_one_line(spec, hierarchy, message):
  with pytest.raises(ValueError, match=message) as error:
    data_cfg.data_spec_override(spec, hierarchy)
  assert "\n" not in str(error.value)


def test_record_data_lists_the_holdout_and_derives_from_the_tree(tmp_path):
  root = write_tree(tmp_path / "tree")
  stages = pipelines.get_pipeline("kc")
  params = pipeline_lib.stage_params(
      stages[-1], str(tmp_path / "run"),
      data_override=data_cfg.data_spec_override(f"folder:{root}"))
  info = pipeline_lib.record_data(params, str(tmp_path))
  assert (info["num_classes"], info["num_verticals"]) == (9, 3)
  assert (info["train_images"], info["eval_images"]) == (25, 8)
  assert len(info["holdout"]["eval_files"]) == 8
  assert os.path.exists(tmp_path / pipeline_lib.DATA_JSON)
  # 25 images // batch 64 -> 1 step per epoch: 24 epochs would be 24 steps,
  # so the default budget is the minimum of 1,000 steps (1,000 epochs).
  assert params.trainer.train_steps == derived_defaults.MIN_DEFAULT_STEPS
  assert params.trainer.train_epochs == 1000.0
  assert params.trainer.optimizer.epsilon == derived_defaults.adam_epsilon(9)
  assert params.task.model.self_paced.init == "sqrt_nv"
  assert params.task.distillation.top_k == 9
  assert params.task.specialists.freeze == derived_defaults.FROZEN_TRUNK


def test_run_name():
  assert run_export_lib.run_name("/x/my birds run/") == "my_birds_run"
  assert run_export_lib.run_name("/x/Vögel") == "V_gel"


def _run_pipeline(*args):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
      [sys.executable, "-m", "kc_keras.run_pipeline", "--pipeline=kc", *args],
      cwd=str(REPO_ROOT), env=env, capture_output=True, text=True,
      check=False)


def test_bad_input_fails_in_one_line_before_any_work(tmp_path):
  run = _run_pipeline(f"--workdir={tmp_path / 'run'}",
                      f"--data=folder:{tmp_path / 'missing'}")
  assert run.returncode == 1
  assert run.stderr.strip().splitlines() == [
      f"run_pipeline: error: --data: the training folder "
      f"'{tmp_path / 'missing'}' does not exist."]
  assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
def test_whole_command_on_a_folder_tree_exports_a_working_tflite(tmp_path):
  root = write_tree(tmp_path / "my data")
  workdir = tmp_path / "birds run"
  run = _run_pipeline(f"--workdir={workdir}", f"--data=folder:{root}",
                      f"--params_override={TOY_OVERRIDE}")
  assert run.returncode == 0, run.stderr[-3000:]
  for name in ("results.md", "data.json", pipeline_lib.CHART_PNG,
               pipeline_lib.CONFUSION_PNG, "birds_run.tflite",
               "serving/birds_run/1/saved_model.pb"):
    assert os.path.exists(workdir / name), name
  with open(workdir / run_export_lib.EXPORT_JSON) as f:
    record = json.load(f)
  assert len(record["top_classes"]) == 5
  all_classes = {c for classes in TREE.values() for c in classes}
  assert set(record["top_classes"]) <= all_classes
  with open(workdir / "results.md") as f:
    assert f.read().count("Premise: the specialists score") == 1
  # Rerunning resumes: nothing is trained or exported again, and the table
  # keeps the wall times of the run that trained.
  with open(workdir / pipeline_lib.STAGE_TIMES_JSON) as f:
    first = json.load(f)
  run = _run_pipeline(f"--workdir={workdir}", f"--data=folder:{root}",
                      f"--params_override={TOY_OVERRIDE}")
  assert run.returncode == 0, run.stderr[-3000:]
  with open(workdir / pipeline_lib.STAGE_TIMES_JSON) as f:
    assert json.load(f) == first
  assert not os.path.exists(workdir / "serving/birds_run/2")
  with open(workdir / "results.md") as f:
    assert "rerun (s)" in f.read()


def test_the_template_yaml_states_the_defaults(tmp_path):
  root = write_tree(tmp_path / "tree")
  data = data_cfg.data_spec_override(f"folder:{root}")
  template = str(REPO_ROOT / "official_configs" / "your_data.yaml")
  for stage in pipelines.get_pipeline("kc"):
    plain = pipeline_lib.stage_params(stage, str(tmp_path), data_override=data)
    with_template = pipeline_lib.stage_params(
        stage, str(tmp_path), config_files=[template], data_override=data)
    as_lists = lambda d: json.loads(json.dumps(d))  # tuples -> lists
    assert as_lists(with_template.as_dict()) == as_lists(plain.as_dict()), (
        stage.name)


def test_tfrecord_data_with_a_hierarchy_file(tmp_path):
  root = write_tree(tmp_path / "tree")
  source = folder.FolderSource(data_cfg.FolderConfig(train_dir=root))
  hierarchy = source.hierarchy
  with open(tmp_path / "hierarchy.json", "w") as f:
    json.dump({"verticals": [{"id": v, "name": n} for v, n in
                             enumerate(hierarchy.vertical_names)],
               "classes": [{"id": c, "name": n,
                            "vertical": int(hierarchy.class_to_vertical[c])}
                           for c, n in enumerate(hierarchy.class_names)]}, f)
  examples = [(pathlib.Path(path).read_bytes(), [label])
              for path, label in source.files("train")]
  tfrecord.write_tfrecord(str(tmp_path / "train-0.rec"), examples[:20])
  tfrecord.write_tfrecord(str(tmp_path / "eval-0.rec"), examples[20:])
  data = data_cfg.data_spec_override(
      f"tfrecord:{tmp_path}/train-*.rec,{tmp_path}/eval-*.rec",
      str(tmp_path / "hierarchy.json"))
  params = pipeline_lib.prepare(pipelines.get_pipeline("kc"),
                                str(tmp_path / "run"), data)
  info = pipeline_lib.record_data(params[0], str(tmp_path))
  assert (info["num_classes"], info["train_images"],
          info["eval_images"]) == (9, 20, 13)
  # 20 images // batch 64 -> 1 step per epoch: the minimum budget.
  assert params[-1].trainer.train_steps == derived_defaults.MIN_DEFAULT_STEPS
  # The glyph sets' file sets 32 px grey images on every stage.
  glyphs = str(REPO_ROOT / "official_configs" / "glyphs.yaml")
  for p in pipeline_lib.prepare(pipelines.get_pipeline("kc_ablation"),
                                str(tmp_path / "glyph_run"), data,
                                config_files=[glyphs]):
    assert (p.task.data.tfrecord.image_size,
            p.task.data.tfrecord.channels) == (32, 1)
