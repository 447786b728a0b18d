"""Tests for the pipeline report: premise, footnote, wall times across resumes, charts."""

import json
import os
import shutil

import pytest

from kc_keras.training import modes
from kc_keras.training import pipeline_lib
from kc_keras.training import stage_clock
from kc_keras.training import stage as stage_lib
from kc_keras.training.stage import Stage


def _metrics(mpvap, top1, confusion=None):
  metrics = {"mpvap": mpvap, "top1": top1, "top5": min(1.0, top1 + 0.2),
             "per_vertical_ap": {"a": mpvap, "b": mpvap},
             "per_vertical_top1": {"a": 0.5, "b": 1.0},
             "params": {"total": 100}}
  if confusion is not None:
    metrics["vertical_confusion"] = confusion
  return metrics


CONFUSION = {"a": {"a": 3, "b": 1}, "b": {"b": 2}}


def _rows(generalist, specialists, student):
  return [
      dict(name=stage_lib.GENERALIST, params=1000, wall_seconds=10.0,
           metrics=_metrics(generalist, 0.40, CONFUSION)),
      dict(name=stage_lib.SPECIALISTS, params=20000, wall_seconds=20.0,
           assumes_true_vertical=True,
           metrics=_metrics(specialists, 0.60, {"a": {"a": 4}, "b": {"b": 2}})),
      dict(name=stage_lib.FULL_STUDENT, params=1500, wall_seconds=30.0,
           metrics=_metrics(student, 0.45, CONFUSION)),
  ]


def test_no_gap_report_states_the_premise_and_no_percentage():
  text = pipeline_lib.summarize(_rows(0.500, 0.501, 0.510))
  assert text == (
      "Premise: the specialists score 50.1 mpvap, the generalist 50.0 (+0.1). "
      "The specialists are not clearly better than the generalist (less than "
      "2 mpvap points). " + pipeline_lib.NO_GAP_ADVICE +
      " The student (FC-SC + D + S (vertical)) scores 51.0 mpvap (+1.0 over "
      "the generalist); top-1 over all classes 45.0% vs the generalist's "
      "40.0%.")


def test_specialists_below_the_generalist_is_no_gap_either():
  text = pipeline_lib.summarize(_rows(0.60, 0.55, 0.58))
  assert text.startswith(
      "Premise: the specialists score 55.0 mpvap, the generalist 60.0 (-5.0). "
      "The specialists are not clearly better")
  assert "closes" not in text


def test_clear_gap_reports_the_fraction_closed():
  text = pipeline_lib.summarize(_rows(0.50, 0.70, 0.55))
  assert text == (
      "Premise: the specialists score 70.0 mpvap, the generalist 50.0 "
      "(+20.0). The student (FC-SC + D + S (vertical)) closes 25% of that gap "
      "(50.0 -> 55.0) with 7.5% of the specialists' parameters; top-1 over "
      "all classes 45.0% vs the generalist's 40.0%.")


def test_student_below_the_generalist_says_so_without_a_negative_share():
  text = pipeline_lib.summarize(_rows(0.50, 0.70, 0.46))
  assert text == (
      "Premise: the specialists score 70.0 mpvap, the generalist 50.0 "
      "(+20.0). The student (FC-SC + D + S (vertical)) is 4.0 mpvap below the "
      "generalist (50.0 -> 46.0): distillation did not transfer the "
      "specialists' lead here; top-1 over all classes 45.0% vs the "
      "generalist's 40.0%.")


def test_student_above_the_specialists_says_so_without_a_share():
  text = pipeline_lib.summarize(_rows(0.50, 0.70, 0.80))
  assert text == (
      "Premise: the specialists score 70.0 mpvap, the generalist 50.0 "
      "(+20.0). The student (FC-SC + D + S (vertical)) scores 80.0 mpvap, "
      "above the specialists' 70.0 (the whole gap and more), with 7.5% of "
      "their parameters; top-1 over all classes 45.0% vs the generalist's "
      "40.0%.")


def test_premise_alone_without_a_student_row():
  text = pipeline_lib.summarize(_rows(0.50, 0.70, 0.55)[:2])
  assert text == ("Premise: the specialists score 70.0 mpvap, the generalist "
                  "50.0 (+20.0).")


def test_table_footnotes_the_specialists_top_k_and_shows_reruns():
  rows = _rows(0.5, 0.7, 0.55)
  rows[2]["rerun_seconds"] = 3.0
  table = pipeline_lib.results_table(rows)
  lines = table.splitlines()
  assert lines[0].endswith("| wall time (s) | rerun (s) |")
  assert lines[3] == "| specialists | 70.0 | 60.0 \\* | 80.0 \\* | 20,000 | 20 | |"
  assert lines[4].endswith("| 1,500 | 30 | 3 |")
  assert lines[-1] == pipeline_lib.TRUE_VERTICAL_FOOTNOTE


def test_confusion_by_vertical():
  summary = pipeline_lib.confusion_by_vertical(_metrics(0.5, 0.5, CONFUSION))
  assert summary[0] == dict(vertical="a", examples=4, correct=0.5,
                            same_vertical=0.25, other_vertical=0.25,
                            destinations=[("b", 0.25)])
  assert summary[1]["other_vertical"] == 0.0


def test_report_writes_both_charts(tmp_path):
  written = pipeline_lib.write_report(_rows(0.5, 0.7, 0.55), str(tmp_path))
  assert sorted(os.path.basename(p) for p in written) == [
      pipeline_lib.CHART_PNG, "results.json", "results.md",
      pipeline_lib.CONFUSION_PNG]
  for name in (pipeline_lib.CHART_PNG, pipeline_lib.CONFUSION_PNG):
    with open(tmp_path / name, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert pipeline_lib.confusion_row_name(
      _rows(0.5, 0.7, 0.55)) == stage_lib.FULL_STUDENT


@pytest.fixture
def fake_stages(monkeypatch):
  """Stages that write their metrics; the clock advances 100 s per stage run."""
  clock = {"now": 0.0, "per_run": 100.0}

  def run(params, mode, model_dir):
    del params
    clock["now"] += clock["per_run"]
    os.makedirs(model_dir, exist_ok=True)
    name = (modes.SPECIALISTS_METRICS_FILE if mode == "eval_specialists"
            else modes.EVAL_METRICS_FILE)
    with open(os.path.join(model_dir, name), "w") as f:
      json.dump(_metrics(0.5, 0.5, CONFUSION), f)

  monkeypatch.setattr(pipeline_lib.experiment_runner, "run", run)
  monkeypatch.setattr(pipeline_lib.time, "time", lambda: clock["now"])
  return clock


def test_a_resume_keeps_the_wall_time_of_the_run_that_trained(
    fake_stages, tmp_path):
  stages = [Stage(stage_lib.GENERALIST, "kc_generalist_demo",
                  "train_and_eval", "generalist", report=True)]
  rows = pipeline_lib.run_pipeline(stages, str(tmp_path))
  assert rows[0]["wall_seconds"] == 100.0 and "rerun_seconds" not in rows[0]
  fake_stages["per_run"] = 2.0  # the resume only finds the finished run
  rows = pipeline_lib.run_pipeline(stages, str(tmp_path))
  assert (rows[0]["wall_seconds"], rows[0]["rerun_seconds"]) == (100.0, 2.0)
  with open(tmp_path / "results.md") as f:
    assert "| 100 | 2 |" in f.read()


def test_a_deleted_run_is_timed_afresh(fake_stages, tmp_path):
  stages = [Stage(stage_lib.GENERALIST, "kc_generalist_demo",
                  "train_and_eval", "generalist", report=True)]
  pipeline_lib.run_pipeline(stages, str(tmp_path))
  shutil.rmtree(tmp_path / "generalist")
  fake_stages["per_run"] = 50.0
  rows = pipeline_lib.run_pipeline(stages, str(tmp_path))
  assert rows[0]["wall_seconds"] == 50.0 and "rerun_seconds" not in rows[0]


def test_time_of_a_stopped_sitting_counts(fake_stages, tmp_path, monkeypatch):
  stages = [Stage(stage_lib.GENERALIST, "kc_generalist_demo",
                  "train_and_eval", "generalist", report=True)]
  finish = pipeline_lib.experiment_runner.run

  def stopped(params, mode, model_dir):
    del params, mode
    os.makedirs(model_dir, exist_ok=True)
    fake_stages["now"] += 70.0
    raise KeyboardInterrupt  # the sitting ends 70 s into the stage

  monkeypatch.setattr(pipeline_lib.experiment_runner, "run", stopped)
  with pytest.raises(KeyboardInterrupt):
    pipeline_lib.run_pipeline(stages, str(tmp_path))
  assert stage_clock.earlier_seconds(str(tmp_path), stage_lib.GENERALIST) == 70.0
  monkeypatch.setattr(pipeline_lib.experiment_runner, "run", finish)
  rows = pipeline_lib.run_pipeline(stages, str(tmp_path))  # 100 s more
  assert rows[0]["wall_seconds"] == 170.0 and "rerun_seconds" not in rows[0]
  assert stage_clock.earlier_seconds(str(tmp_path), stage_lib.GENERALIST) == 0.0


def test_stage_clock_counts_earlier_sittings(tmp_path):
  now = {"t": 1000.0}
  clock = stage_clock.StageClock(str(tmp_path), "a", interval=None,
                                 now=lambda: now["t"])
  now["t"] += 30.0
  clock.tick()  # then the process is killed: no stop()
  other = stage_clock.StageClock(str(tmp_path), "b", interval=None,
                                 now=lambda: now["t"])
  now["t"] += 5.0
  other.tick()
  resumed = stage_clock.StageClock(str(tmp_path), "a", interval=None,
                                   now=lambda: now["t"])
  now["t"] += 12.0
  assert resumed.stop() == 42.0
  resumed.tick()  # stopped: writes nothing
  assert stage_clock.earlier_seconds(str(tmp_path), "a") == 30.0
  assert stage_clock.earlier_seconds(str(tmp_path), "b") == 5.0
  stage_clock.forget(str(tmp_path), "a")
  assert stage_clock.earlier_seconds(str(tmp_path), "a") == 0.0
  assert stage_clock.earlier_seconds(str(tmp_path), "b") == 5.0


def test_peak_memory_is_the_most_any_sitting_took(fake_stages, tmp_path,
                                                   monkeypatch):
  stages = [Stage(stage_lib.GENERALIST, "kc_generalist_demo",
                  "train_and_eval", "generalist", report=True)]
  sitting = {"peak": 3 * 2**30, "stage_only": True}
  monkeypatch.setattr(pipeline_lib.peak_memory, "reset_peak",
                      lambda: sitting["stage_only"])
  monkeypatch.setattr(pipeline_lib.peak_memory, "peak_bytes",
                      lambda: sitting["peak"])
  rows = pipeline_lib.run_pipeline(stages, str(tmp_path))
  assert rows[0]["peak_memory_bytes"] == 3 * 2**30
  sitting.update(peak=2**30, stage_only=False)  # a rerun that only evaluates
  fake_stages["per_run"] = 2.0
  rows = pipeline_lib.run_pipeline(stages, str(tmp_path))
  assert rows[0]["peak_memory_bytes"] == 3 * 2**30
  with open(tmp_path / "results.md") as f:
    lines = f.read().splitlines()
  assert lines[0].endswith("| rerun (s) | peak memory (GiB) |")
  # The rerun only had the lifetime peak: the stage's figure is a bound now.
  assert lines[2].endswith("| 100 | 2 | <= 3.00 |")
  shutil.rmtree(tmp_path / "generalist")
  sitting.update(peak=2**29, stage_only=True)
  rows = pipeline_lib.run_pipeline(stages, str(tmp_path))
  assert rows[0]["peak_memory_bytes"] == 2**29  # retrained: measured afresh
  assert pipeline_lib.results_table(rows).splitlines()[2].endswith(
      "| 2 | 0.50 |")


def test_a_stopped_sitting_records_its_peak(fake_stages, tmp_path,
                                            monkeypatch):
  stages = [Stage(stage_lib.GENERALIST, "kc_generalist_demo",
                  "train_and_eval", "generalist", report=True)]
  monkeypatch.setattr(pipeline_lib.peak_memory, "reset_peak", lambda: True)
  monkeypatch.setattr(pipeline_lib.peak_memory, "peak_bytes", lambda: 5 * 2**30)

  def stopped(params, mode, model_dir):
    del params, mode
    os.makedirs(model_dir, exist_ok=True)
    raise KeyboardInterrupt

  monkeypatch.setattr(pipeline_lib.experiment_runner, "run", stopped)
  with pytest.raises(KeyboardInterrupt):
    pipeline_lib.run_pipeline(stages, str(tmp_path))
  with open(tmp_path / pipeline_lib.STAGE_MEMORY_JSON) as f:
    assert json.load(f) == {stage_lib.GENERALIST: {"bytes": 5 * 2**30,
                                                   "stage_only": True}}
