"""Tests for the registered pipelines: which stages run, and where."""

import pytest

from kc_keras.configs import experiments
from kc_keras.training import pipelines


def _stage_names(name):
  return [stage.name for stage in pipelines.get_pipeline(name)]


@pytest.mark.parametrize("name, student, caches", [
    ("ablation_omniglot", "kc_student_omniglot", False),
    ("ablation_embedded_rich", "kc_student_embedded_rich", True),
    ("demo", "kc_student_demo", True),
])
def test_cache_stage_runs_only_for_students_that_read_the_cache(
    name, student, caches):
  source = experiments.get_experiment(student).task.distillation.target_source
  assert source == ("cache" if caches else "online")
  assert ("soft targets (cache)" in _stage_names(name)) == caches


def test_ablation_has_the_papers_rows_in_order():
  reported = [s.name for s in pipelines.get_pipeline("ablation_omniglot")
              if s.report]
  assert reported == [
      "generalist FC-FC", "specialists", "FC-FC + D", "SC-SC + D",
      "FC-SC + D", "FC-SC + D + S (vertical)", "FC-SC + D + S (class)"]


def test_every_student_row_shares_backbone_and_schedule():
  student_names = [row[0] for row in pipelines.STUDENT_ROWS]
  rows = [s for s in pipelines.get_pipeline("ablation_omniglot")
          if s.name in student_names]
  assert len(rows) == len(pipelines.STUDENT_ROWS)
  assert {s.experiment for s in rows} == {"kc_student_omniglot"}
  heads = [s.overrides["task"]["model"]["head"]["head_type"] for s in rows]
  assert heads == ["fc_fc", "sc_sc", "fc_sc", "fc_sc", "fc_sc"]


def test_unknown_pipeline_lists_registered_ones():
  with pytest.raises(ValueError,
                     match="ablation_embedded_rich, ablation_omniglot, demo"):
    pipelines.get_pipeline("nope")
