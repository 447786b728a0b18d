"""Runs a whole Knowledge Concentration pipeline (generalist, specialists, targets, students) and reports it."""

import dataclasses
import os
import time
import types
from typing import Dict, List, Optional, Sequence

from absl import logging

from kc_keras.training import experiment_runner
from kc_keras.training import modes
from kc_keras.utils import files
from kc_keras.utils import records

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
CHART_PNG = "per_vertical_mpvap.png"


@dataclasses.dataclass(frozen=True)
class Stage:
  """One step of a pipeline.

  Attributes:
    name: the row label in the report (e.g. 'FC-SC + D + S (vertical)').
    experiment: registered experiment name.
    mode: a `experiment_runner.MODES` entry.
    model_dir: run directory, relative to the pipeline's workdir.
    overrides: dict applied after the pipeline's config files, before the
      user's `params_override`; may use `{workdir}` in string values.
    report: whether the stage is a row of the results table.
    row_of: for a stage that only prepares a row (e.g. specialists training
      before their evaluation), the row it belongs to: its wall time is
      added to that row's.
    only_if_target_source: run the stage only when its config (experiment,
      files, overrides) has this `task.distillation.target_source`: the
      soft-target cache is written only for students that read it.
  """

  name: str
  experiment: str
  mode: str
  model_dir: str
  overrides: Dict = dataclasses.field(default_factory=dict)
  report: bool = False
  row_of: Optional[str] = None
  only_if_target_source: Optional[str] = None


def _fill(value, workdir: str):
  if isinstance(value, dict):
    return {k: _fill(v, workdir) for k, v in value.items()}
  if isinstance(value, str):
    return value.replace("{workdir}", workdir)
  return value


def stage_params(stage: Stage, workdir: str, config_files: Sequence[str] = (),
                 params_override: Optional[str] = None):
  """The locked config of a stage: experiment, files, stage overrides, user override."""
  flags_obj = types.SimpleNamespace(
      experiment=stage.experiment, config_file=list(config_files),
      params_override=params_override, tpu=None)
  return experiment_runner.parse_configuration(
      flags_obj, extra_overrides=[_fill(stage.overrides, workdir)])


def _metrics_file(stage: Stage) -> Optional[str]:
  if stage.mode in ("eval", "train_and_eval"):
    return modes.EVAL_METRICS_FILE
  if stage.mode == "eval_specialists":
    return modes.SPECIALISTS_METRICS_FILE
  return None


def run_pipeline(stages: Sequence[Stage], workdir: str,
                 config_files: Sequence[str] = (),
                 params_override: Optional[str] = None,
                 only: Optional[Sequence[str]] = None) -> List[Dict]:
  """Runs the stages in order and writes the results table, JSON and chart.

  Every stage resumes: a finished training is not repeated (its checkpoint
  is at the target step), finished teachers are skipped, so rerunning the
  same command after an interruption continues.

  Args:
    stages: the pipeline.
    workdir: root of every stage's model_dir.
    config_files: YAML files applied to every stage.
    params_override: applied to every stage, last.
    only: names of the stages to run (default all).

  Returns:
    The report rows (dicts), also written to `workdir/results.json`.
  """
  os.makedirs(workdir, exist_ok=True)
  seconds: Dict[str, float] = {}
  rows = []
  for stage in stages:
    if only and stage.name not in only:
      continue
    params = stage_params(stage, workdir, config_files, params_override)
    source = params.task.distillation.target_source
    if stage.only_if_target_source not in (None, source):
      logging.info("Skipping stage %s: target_source is %r, not %r.",
                   stage.name, source, stage.only_if_target_source)
      continue
    model_dir = os.path.join(workdir, stage.model_dir)
    print(f"=== {stage.name}: --experiment={stage.experiment} "
          f"--mode={stage.mode} --model_dir={model_dir}", flush=True)
    start = time.time()
    experiment_runner.run(params, stage.mode, model_dir)
    elapsed = time.time() - start
    row_name = stage.row_of or stage.name
    seconds[row_name] = seconds.get(row_name, 0.0) + elapsed
    logging.info("Stage %s took %.1f s", stage.name, elapsed)
    metrics_file = _metrics_file(stage)
    if stage.report and metrics_file:
      metrics = records.read_json(os.path.join(model_dir, metrics_file))
      rows.append(dict(
          name=stage.name, experiment=stage.experiment,
          model_dir=model_dir, metrics=metrics,
          params=metrics["params"]["total"]))
  for row in rows:
    row["wall_seconds"] = seconds.get(row["name"], 0.0)
  files.atomic_write_json(os.path.join(workdir, RESULTS_JSON), rows)
  files.atomic_write_text(os.path.join(workdir, RESULTS_MD),
                          results_table(rows) + "\n" + summarize(rows) + "\n")
  chart_rows = chart_row_names(rows)
  if chart_rows:
    plot_per_vertical(rows, chart_rows, os.path.join(workdir, CHART_PNG))
  return rows


def chart_row_names(rows: Sequence[Dict], generalist: str = "generalist FC-FC",
                    specialists: str = "specialists") -> List[str]:
  """[generalist, best other row by mpvap, specialists] when both ends exist.

  Returns:
    The three row names for `plot_per_vertical`, or [] when the results lack
    the generalist, the specialists or any third row.
  """
  names = [r["name"] for r in rows]
  others = [r for r in rows if r["name"] not in (generalist, specialists)]
  if generalist not in names or specialists not in names or not others:
    return []
  best = max(others, key=lambda r: r["metrics"]["mpvap"])
  return [generalist, best["name"], specialists]


def results_table(rows: Sequence[Dict]) -> str:
  """A markdown table: row, mpvap, top-1, top-5, params, wall time."""
  lines = ["| model | mpvap | top-1 | top-5 | params | wall time (s) |",
           "|---|---|---|---|---|---|"]
  for row in rows:
    m = row["metrics"]
    lines.append(
        f"| {row['name']} | {100 * m['mpvap']:.1f} | {100 * m['top1']:.1f} | "
        f"{100 * m['top5']:.1f} | {row['params']:,} | "
        f"{row['wall_seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def gap_closed(generalist: float, student: float, specialists: float) -> float:
  """Fraction of the generalist-to-specialists gap closed by the student.

  (student - generalist) / (specialists - generalist); the paper's full
  student closed (37.9 - 27.7) / (68.0 - 27.7) = 25%.
  """
  gap = specialists - generalist
  if gap == 0:
    raise ValueError("The specialists and the generalist score the same.")
  return (student - generalist) / gap


def summarize(rows: Sequence[Dict], generalist: str = "generalist FC-FC",
              student: str = "FC-SC + D + S (vertical)",
              specialists: str = "specialists") -> str:
  """One paragraph comparing the full student with the generalist and specialists.

  Returns '' when one of the three rows is missing.
  """
  by_name = {r["name"]: r for r in rows}
  if not all(n in by_name for n in (generalist, student, specialists)):
    return ""
  g, s, t = (by_name[n] for n in (generalist, student, specialists))
  closed = gap_closed(g["metrics"]["mpvap"], s["metrics"]["mpvap"],
                      t["metrics"]["mpvap"])
  return (
      f"The student ({student}) closes {100 * closed:.0f}% of the "
      f"generalist-to-specialists mpvap gap ({100 * g['metrics']['mpvap']:.1f}"
      f" -> {100 * s['metrics']['mpvap']:.1f}, specialists "
      f"{100 * t['metrics']['mpvap']:.1f}) with "
      f"{100 * s['params'] / t['params']:.1f}% of the specialists' "
      f"parameters; top-1 over all classes {100 * s['metrics']['top1']:.1f}% "
      f"vs the generalist's {100 * g['metrics']['top1']:.1f}%.")


def plot_per_vertical(rows: Sequence[Dict], names: Sequence[str],
                      path: str) -> str:
  """Writes a PNG of per-vertical AP (x: verticals sorted by the first row)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  by_name = {r["name"]: r for r in rows}
  series = [(n, by_name[n]["metrics"]["per_vertical_ap"]) for n in names
            if n in by_name]
  if not series:
    raise ValueError(f"None of {list(names)} is a row of the results.")
  verticals = sorted(series[0][1], key=lambda v: series[0][1][v])
  fig, ax = plt.subplots(figsize=(max(8, 0.22 * len(verticals)), 4.5))
  for name, ap in series:
    ax.plot(range(len(verticals)), [ap.get(v, float("nan")) for v in verticals],
            marker="o", markersize=3, linewidth=1, label=name)
  ax.set_xticks(range(len(verticals)))
  ax.set_xticklabels(verticals, rotation=90, fontsize=6)
  ax.set_ylabel("AP of the vertical (mpvap term)")
  ax.set_title("Per-vertical AP")
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)
  return path
