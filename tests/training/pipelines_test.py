"""Tests for the registered pipelines and the stages `run_pipeline` runs."""

import pytest

from kc_keras.configs import experiments
from kc_keras.training import pipeline_lib
from kc_keras.training import pipelines

CACHE_STAGE = "soft targets (cache)"


def test_ablation_reports_the_papers_rows_in_order():
  reported = [s.name for s in pipelines.get_pipeline("ablation_omniglot")
              if s.report]
  assert reported == [
      "generalist FC-FC", "specialists", "FC-FC + D", "SC-SC + D",
      "FC-SC + D", "FC-SC + D + S (vertical)", "FC-SC + D + S (class)"]


def test_student_rows_differ_only_in_head_and_self_paced_scaling():
  names = [row[0] for row in pipelines.STUDENT_ROWS]
  rows = [s for s in pipelines.get_pipeline("ablation_omniglot")
          if s.name in names]
  assert {s.experiment for s in rows} == {"kc_student_omniglot"}
  assert [(s.overrides["task"]["model"]["head"]["head_type"],
           s.overrides["task"]["model"]["self_paced"]["mode"])
          for s in rows] == [("fc_fc", "none"), ("sc_sc", "none"),
                             ("fc_sc", "none"), ("fc_sc", "vertical"),
                             ("fc_sc", "class")]


def test_own_data_ablation_extends_kc_in_the_same_directories():
  kc = pipelines.get_pipeline("kc")
  ablation = pipelines.get_pipeline("kc_ablation")
  by_name = {s.name: s for s in ablation}
  # Every stage of `kc` is a stage of the ablation, in the same model_dir
  # with the same overrides: a finished `kc` run is resumed, not redone.
  for stage in kc:
    assert by_name[stage.name] == stage
  assert [s.name for s in ablation if s.report] == [
      "generalist FC-FC", "specialists", "FC-FC + D", "SC-SC + D",
      "FC-SC + D", "FC-SC + D + S (vertical)", "FC-SC + D + S (class)"]
  # The teachers start from the generalist row, as in `kc`.
  students = [s for s in ablation if s.name in dict(
      (r[0], r) for r in pipelines.STUDENT_ROWS)]
  assert {s.overrides["task"]["specialists"]["init_checkpoint"]
          for s in students} == {"{workdir}/generalist"}
  assert set(pipelines.OWN_DATA_EXPORTS) == {"kc", "kc_ablation"}


def test_unknown_pipeline_lists_registered_ones():
  with pytest.raises(ValueError,
                     match="ablation_embedded_rich, ablation_omniglot, demo"):
    pipelines.get_pipeline("nope")


@pytest.fixture
def runs(monkeypatch):
  """Records each stage's mode instead of running it."""
  calls = []
  monkeypatch.setattr(pipeline_lib.experiment_runner, "run",
                      lambda params, mode, model_dir: calls.append(mode))
  return calls


@pytest.mark.parametrize("pipeline, student, override, writes_cache", [
    # Omniglot's student trains on online targets: no cache to write...
    ("ablation_omniglot", "kc_student_omniglot", None, False),
    # ...unless the user switches it to the cache.
    ("ablation_omniglot", "kc_student_omniglot",
     "task.distillation.target_source=cache", True),
    ("ablation_embedded_rich", "kc_student_embedded_rich", None, True),
    ("demo", "kc_student_demo", None, True),
])
def test_cache_stage_runs_only_when_the_students_read_the_cache(
    runs, tmp_path, request, pipeline, student, override, writes_cache):
  default = experiments.get_experiment(student).task.distillation.target_source
  assert default == ("online" if pipeline == "ablation_omniglot" else "cache")
  if pipeline == "ablation_omniglot":
    # Parsing derives the defaults from the data: the hierarchy and counts.
    data_dir = request.getfixturevalue("omniglot_path")
    override = ",".join(filter(None, [
        override, f"task.data.omniglot.data_dir={data_dir}"]))
  pipeline_lib.run_pipeline(pipelines.get_pipeline(pipeline), str(tmp_path),
                            params_override=override, only=[CACHE_STAGE])
  assert runs == (["cache_targets"] if writes_cache else [])
