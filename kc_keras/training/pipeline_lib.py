"""Runs a whole Knowledge Concentration pipeline (generalist, specialists, targets, students) and reports it."""

import os
import time
import types
from typing import Dict, List, Optional, Sequence

from absl import logging

from kc_keras.training import experiment_runner
from kc_keras.training import modes
from kc_keras.training import stage_clock
from kc_keras.training.stage import FULL_STUDENT
from kc_keras.training.stage import GENERALIST
from kc_keras.training.stage import SPECIALISTS
from kc_keras.training.stage import Stage
from kc_keras.utils import files
from kc_keras.utils import peak_memory
from kc_keras.utils import records

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
CHART_PNG = "per_vertical_mpvap.png"
CONFUSION_PNG = "vertical_confusion.png"
STAGE_TIMES_JSON = "stage_times.json"
STAGE_MEMORY_JSON = "stage_peak_memory.json"
DATA_JSON = "data.json"
# Below this mpvap lead of the specialists over the generalist (a fraction:
# 2 points) the report does not read the student as closing a gap.
PREMISE_MIN_GAP = 0.02


def _fill(value, workdir: str):
  if isinstance(value, dict):
    return {k: _fill(v, workdir) for k, v in value.items()}
  if isinstance(value, str):
    return value.replace("{workdir}", workdir)
  return value


def stage_params(stage: Stage, workdir: str, config_files: Sequence[str] = (),
                 params_override: Optional[str] = None,
                 data_override: Optional[Dict] = None):
  """The locked config of a stage: experiment, data, files, stage overrides, user override."""
  def parse(experiment, overrides):
    flags_obj = types.SimpleNamespace(
        experiment=experiment, config_file=list(config_files),
        params_override=params_override, tpu=None)
    return experiment_runner.parse_configuration(
        flags_obj, extra_overrides=overrides,
        data_overrides=[data_override] if data_override else [])

  overrides = [_fill(stage.overrides, workdir)]
  if stage.teachers_from:
    trunk = parse(stage.teachers_from, []).task.model.as_dict()
    overrides.insert(0, {"task": {"specialists": {"model": trunk}}})
  return parse(stage.experiment, overrides)


def _metrics_file(stage: Stage) -> Optional[str]:
  if stage.mode in ("eval", "train_and_eval"):
    return modes.EVAL_METRICS_FILE
  if stage.mode == "eval_specialists":
    return modes.SPECIALISTS_METRICS_FILE
  return None


def _load_json(path: str, default):
  if not os.path.exists(path):
    return default
  return records.read_json(path)


def run_pipeline(stages: Sequence[Stage], workdir: str,
                 config_files: Sequence[str] = (),
                 params_override: Optional[str] = None,
                 only: Optional[Sequence[str]] = None,
                 data_override: Optional[Dict] = None) -> List[Dict]:
  """Runs the stages in order and writes the report (`write_report`).

  Every stage resumes: a finished training is not repeated (its checkpoint
  is at the target step), finished teachers are skipped, so rerunning the
  same command after an interruption continues.

  A stage's wall time is recorded in `workdir/stage_times.json` when it
  first finishes, with the time of earlier sittings that were stopped
  before it finished (`stage_clock`); a later run keeps that time and reports its own time
  for the stage separately (`rerun_seconds`), so a resume that only checks
  finished stages does not replace the time they took to train. A stage
  whose model_dir is gone is timed afresh.

  Each stage's peak resident memory (`peak_memory`; the most any sitting of
  it took, reruns included) is kept in `workdir/stage_peak_memory.json` as
  {name: {"bytes": int, "stage_only": bool}}; `stage_only` is False where the
  OS gives only the process's lifetime peak, an upper bound.

  Args:
    stages: the pipeline.
    workdir: root of every stage's model_dir.
    config_files: YAML files applied to every stage.
    params_override: applied to every stage, last.
    only: names of the stages to run (default all).
    data_override: the data (`data_spec_override`), applied to every stage
      before the config files.

  Returns:
    The report rows (dicts), also written to `workdir/results.json`.
  """
  os.makedirs(workdir, exist_ok=True)
  times_path = os.path.join(workdir, STAGE_TIMES_JSON)
  first_times: Dict[str, float] = _load_json(times_path, {})
  memory_path = os.path.join(workdir, STAGE_MEMORY_JSON)
  peaks: Dict[str, Dict] = _load_json(memory_path, {})
  rerun_times: Dict[str, float] = {}
  row_stages: Dict[str, List[str]] = {}
  rows = []
  for stage in stages:
    if only and stage.name not in only:
      continue
    params = stage_params(stage, workdir, config_files, params_override,
                          data_override)
    source = params.task.distillation.target_source
    if stage.only_if_target_source not in (None, source):
      logging.info("Skipping stage %s: target_source is %r, not %r.",
                   stage.name, source, stage.only_if_target_source)
      continue
    model_dir = os.path.join(workdir, stage.model_dir)
    print(f"=== {stage.name}: --experiment={stage.experiment} "
          f"--mode={stage.mode} --model_dir={model_dir}", flush=True)
    if not os.path.exists(model_dir):
      # Deleted (or never run): this run trains it from the start.
      first_times.pop(stage.name, None)
      peaks.pop(stage.name, None)
      stage_clock.forget(workdir, stage.name)
    start = time.time()
    stage_only = peak_memory.reset_peak()
    if stage.name in first_times:
      try:
        experiment_runner.run(params, stage.mode, model_dir)
      finally:
        _record_peak(peaks, memory_path, stage.name, stage_only)
      elapsed = time.time() - start
      rerun_times[stage.name] = elapsed
    else:
      # Unfinished: its time so far in earlier sittings counts too.
      clock = stage_clock.StageClock(workdir, stage.name, now=time.time)
      try:
        experiment_runner.run(params, stage.mode, model_dir)
      except BaseException:
        clock.tick()
        clock.stop()
        raise
      finally:
        _record_peak(peaks, memory_path, stage.name, stage_only)
      elapsed = clock.stop()
      first_times[stage.name] = elapsed
      files.atomic_write_json(times_path, first_times)
      stage_clock.forget(workdir, stage.name)
    row_stages.setdefault(stage.row_of or stage.name, []).append(stage.name)
    logging.info("Stage %s took %.1f s", stage.name, elapsed)
    metrics_file = _metrics_file(stage)
    if stage.report and metrics_file:
      metrics = records.read_json(os.path.join(model_dir, metrics_file))
      rows.append(dict(
          name=stage.name, experiment=stage.experiment,
          model_dir=model_dir, metrics=metrics,
          params=metrics["params"]["total"],
          assumes_true_vertical=stage.mode == "eval_specialists"))
  for row in rows:
    names = row_stages.get(row["name"], [])
    row["wall_seconds"] = sum(first_times.get(n, 0.0) for n in names)
    recorded = [peaks[n] for n in names if n in peaks]
    if recorded:
      row["peak_memory_bytes"] = max(p["bytes"] for p in recorded)
      row["peak_memory_stage_only"] = all(p["stage_only"] for p in recorded)
    if any(n in rerun_times for n in names):
      row["rerun_seconds"] = sum(rerun_times.get(n, 0.0) for n in names)
  write_report(rows, workdir)
  return rows


def _record_peak(peaks: Dict[str, Dict], path: str, name: str,
                 stage_only: bool) -> None:
  """Keeps max(recorded, this sitting's) peak of stage `name` and writes `path`."""
  previous = peaks.get(name, {"bytes": 0, "stage_only": True})
  peaks[name] = {"bytes": max(previous["bytes"], peak_memory.peak_bytes()),
                 "stage_only": previous["stage_only"] and stage_only}
  files.atomic_write_json(path, peaks)


def prepare(stages: Sequence[Stage], workdir: str, data_override: Optional[Dict],
            config_files: Sequence[str] = (),
            params_override: Optional[str] = None) -> List:
  """Parses every stage's config and, with `data_override`, counts the data.

  Everything a user can get wrong (a key, a value, a folder, the hierarchy)
  fails here, before any training, with the error that names it.

  Returns:
    The locked config of each stage, in order.
  """
  params = [stage_params(s, workdir, config_files, params_override,
                         data_override) for s in stages]
  if data_override:
    os.makedirs(workdir, exist_ok=True)
    info = record_data(params[0], workdir)
    print(f"Data: {info['num_classes']} classes in {info['num_verticals']} "
          f"verticals, {info['train_images']} training and "
          f"{info['eval_images']} evaluation images"
          + (" (held out of the training folder)" if "holdout" in info
             else "") + ".", flush=True)
  return params


def record_data(params, workdir: str) -> Dict:
  """Counts the classes and both splits' images, before any training.

  A folder, file or split that cannot be read fails here, with its error.
  Writes `workdir/data.json`; when 'eval' is a hold-out of the training
  folder, it lists the held-out files (relative to the folder).

  Returns:
    The dict written.
  """
  from kc_keras.dataloaders import factory  # pylint: disable=g-import-not-at-top

  source = factory.build_source(params.task.data)
  hierarchy = source.hierarchy
  info = dict(source=params.task.data.source,
              num_classes=hierarchy.num_classes,
              num_verticals=hierarchy.num_verticals,
              train_images=source.num_examples("train"),
              eval_images=source.num_examples("eval"))
  if getattr(source, "holds_out", False):
    folder = params.task.data.folder
    info["holdout"] = dict(
        fraction=folder.holdout_fraction,
        eval_files=sorted(os.path.relpath(path, folder.train_dir)
                          for path, _ in source.files("eval")))
  files.atomic_write_json(os.path.join(workdir, DATA_JSON), info)
  return info


def write_report(rows: Sequence[Dict], workdir: str) -> List[str]:
  """Writes results.json, results.md and the charts beside them.

  Returns:
    The paths written.
  """
  written = [os.path.join(workdir, RESULTS_JSON),
             os.path.join(workdir, RESULTS_MD)]
  files.atomic_write_json(written[0], list(rows))
  charts = []
  chart_rows = chart_row_names(rows)
  if chart_rows:
    charts.append(plot_per_vertical(rows, chart_rows,
                                    os.path.join(workdir, CHART_PNG)))
  confusion_row = confusion_row_name(rows)
  if confusion_row:
    charts.append(plot_vertical_confusion(
        next(r for r in rows if r["name"] == confusion_row),
        os.path.join(workdir, CONFUSION_PNG)))
  text = results_table(rows) + "\n" + summarize(rows) + "\n"
  if charts:
    text += "\nCharts: " + ", ".join(
        f"`{os.path.basename(c)}`" for c in charts) + ".\n"
  files.atomic_write_text(written[1], text)
  return written + charts


def chart_row_names(rows: Sequence[Dict], generalist: str = GENERALIST,
                    specialists: str = SPECIALISTS) -> List[str]:
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


def confusion_row_name(rows: Sequence[Dict],
                       student: str = FULL_STUDENT) -> Optional[str]:
  """The row whose errors `plot_vertical_confusion` shows: the full student, else the best one-model row.

  Returns None when no row chooses among all classes or none recorded
  `vertical_confusion`.
  """
  usable = [r for r in rows if not r.get("assumes_true_vertical")
            and "vertical_confusion" in r["metrics"]]
  if not usable:
    return None
  names = [r["name"] for r in usable]
  if student in names:
    return student
  return max(usable, key=lambda r: r["metrics"]["mpvap"])["name"]


TRUE_VERTICAL_FOOTNOTE = (
    "\\* The specialists' top-1 / top-5 assume the true vertical is known: "
    "each image is scored only by the teacher of its own vertical. The "
    "other rows choose among all classes.")


def results_table(rows: Sequence[Dict]) -> str:
  """A markdown table: row, mpvap, top-1, top-5, params, wall time, peak memory.

  Top-k of rows that assume the true vertical (the specialists) carry a
  footnote mark; a `rerun (s)` column appears when this run resumed stages
  that had finished before (their wall time is the run that trained them);
  the peak memory column appears when rows recorded it, marked `<=` where it
  is the process's lifetime peak rather than the stage's own.
  """
  rerun = any("rerun_seconds" in r for r in rows)
  memory = any("peak_memory_bytes" in r for r in rows)
  header = "| model | mpvap | top-1 | top-5 | params | wall time (s) |"
  rule = "|---|---|---|---|---|---|"
  if rerun:
    header += " rerun (s) |"
    rule += "---|"
  if memory:
    header += " peak memory (GiB) |"
    rule += "---|"
  lines = [header, rule]
  for row in rows:
    m = row["metrics"]
    mark = " \\*" if row.get("assumes_true_vertical") else ""
    line = (f"| {row['name']} | {100 * m['mpvap']:.1f} | "
            f"{100 * m['top1']:.1f}{mark} | {100 * m['top5']:.1f}{mark} | "
            f"{row['params']:,} | {row['wall_seconds']:.0f} |")
    if rerun:
      line += (f" {row['rerun_seconds']:.0f} |" if "rerun_seconds" in row
               else " |")
    if memory:
      line += (f" {_peak_text(row)} |" if "peak_memory_bytes" in row
               else " |")
    lines.append(line)
  text = "\n".join(lines) + "\n"
  if any(r.get("assumes_true_vertical") for r in rows):
    text += "\n" + TRUE_VERTICAL_FOOTNOTE + "\n"
  return text


def _peak_text(row: Dict) -> str:
  bound = "" if row["peak_memory_stage_only"] else "<= "
  return f"{bound}{row['peak_memory_bytes'] / 2**30:.2f}"


def gap_closed(generalist: float, student: float, specialists: float) -> float:
  """Fraction of the generalist-to-specialists gap closed by the student.

  (student - generalist) / (specialists - generalist); the paper's full
  student closed (37.9 - 27.7) / (68.0 - 27.7) = 25%.
  """
  gap = specialists - generalist
  if gap == 0:
    raise ValueError("The specialists and the generalist score the same.")
  return (student - generalist) / gap


NO_GAP_ADVICE = (
    "Distillation has nothing to transfer here: a student can at best match "
    "the generalist. To give it something, train stronger teachers (more "
    "passes over their images, `task.specialists.trainer.train_epochs`; the "
    "whole trunk "
    "fine-tuned, `task.specialists.freeze: none`; or a bigger teachers' "
    "trunk, as the ablation pipelines' trunk stage does) or collect more "
    "training images per class.")


def summarize(rows: Sequence[Dict], generalist: str = GENERALIST,
              student: str = FULL_STUDENT,
              specialists: str = SPECIALISTS) -> str:
  """The premise (specialists vs generalist) first, then what the student did with it.

  When the specialists lead the generalist by less than `PREMISE_MIN_GAP`
  mpvap, there is no gap to close: the summary says so and what to try,
  and reports the student against the generalist only.

  Returns '' when the generalist or the specialists row is missing.
  """
  by_name = {r["name"]: r for r in rows}
  if generalist not in by_name or specialists not in by_name:
    return ""
  g, t = by_name[generalist], by_name[specialists]
  g_ap, t_ap = g["metrics"]["mpvap"], t["metrics"]["mpvap"]
  lead = t_ap - g_ap
  text = (f"Premise: the specialists score {100 * t_ap:.1f} mpvap, the "
          f"generalist {100 * g_ap:.1f} ({100 * lead:+.1f}).")
  clear = lead >= PREMISE_MIN_GAP
  if not clear:
    text += (f" The specialists are not clearly better than the generalist "
             f"(less than {100 * PREMISE_MIN_GAP:.0f} mpvap points). "
             + NO_GAP_ADVICE)
  if student not in by_name:
    return text
  s = by_name[student]
  s_ap = s["metrics"]["mpvap"]
  if clear and s_ap < g_ap:
    # A negative share of the gap reads as a measurement; say what it is.
    text += (
        f" The student ({student}) is {100 * (g_ap - s_ap):.1f} mpvap below "
        f"the generalist ({100 * g_ap:.1f} -> {100 * s_ap:.1f}): distillation "
        "did not transfer the specialists' lead here;")
  elif clear and s_ap >= t_ap:
    # A share above 100% of a small gap says little; the comparison does.
    text += (
        f" The student ({student}) scores {100 * s_ap:.1f} mpvap, above the "
        f"specialists' {100 * t_ap:.1f} (the whole gap and more), with "
        f"{100 * s['params'] / t['params']:.1f}% of their parameters;")
  elif clear:
    text += (
        f" The student ({student}) closes "
        f"{100 * gap_closed(g_ap, s_ap, t_ap):.0f}% of that gap "
        f"({100 * g_ap:.1f} -> {100 * s_ap:.1f}) with "
        f"{100 * s['params'] / t['params']:.1f}% of the specialists' "
        "parameters;")
  else:
    text += (f" The student ({student}) scores {100 * s_ap:.1f} mpvap "
             f"({100 * (s_ap - g_ap):+.1f} over the generalist);")
  text += (f" top-1 over all classes {100 * s['metrics']['top1']:.1f}% vs "
           f"the generalist's {100 * g['metrics']['top1']:.1f}%.")
  return text


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
  return _save_figure(fig, path)


def _save_figure(fig, path: str) -> str:
  """Writes `fig` to `path` as a PNG atomically (a temporary name, then a rename)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)
  return path


def confusion_by_vertical(metrics: Dict) -> List[Dict]:
  """Per vertical: correct, wrong class of the same vertical, other verticals.

  Args:
    metrics: an evaluation's metrics with `per_vertical_top1` and
      `vertical_confusion`.

  Returns:
    One dict per vertical (in `vertical_confusion` order): `vertical`,
    `examples`, the fractions `correct`, `same_vertical`, `other_vertical`,
    and `destinations`: [(vertical, fraction)] of the other-vertical errors,
    largest first.
  """
  out = []
  for vertical, row in metrics["vertical_confusion"].items():
    examples = sum(row.values())
    correct = metrics["per_vertical_top1"][vertical]
    inside = row.get(vertical, 0) / examples
    destinations = sorted(
        ((u, n / examples) for u, n in row.items() if u != vertical),
        key=lambda d: (-d[1], str(d[0])))
    out.append(dict(vertical=vertical, examples=examples, correct=correct,
                    same_vertical=inside - correct,
                    other_vertical=1.0 - inside, destinations=destinations))
  return out


def plot_vertical_confusion(row: Dict, path: str) -> str:
  """Writes a PNG of where one row's top-1 errors fall, per vertical.

  Left: per vertical, the fraction of its test images classified correctly,
  as another class of the same vertical, or as a class of another vertical.
  Right: which verticals the wrong-vertical answers went to (row-normalised).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  summary = sorted(confusion_by_vertical(row["metrics"]),
                   key=lambda d: d["correct"])
  names = [d["vertical"] for d in summary]
  index = {n: i for i, n in enumerate(names)}
  matrix = np.zeros((len(names), len(names)))
  for i, d in enumerate(summary):
    for u, fraction in d["destinations"]:
      if u in index:
        matrix[i, index[u]] = fraction
  size = max(5.0, 0.18 * len(names))
  fig, (bars, heat) = plt.subplots(1, 2, figsize=(2 * size + 2, size),
                                   gridspec_kw={"width_ratios": [1, 1.2]})
  y = np.arange(len(names))
  left = np.zeros(len(names))
  for key, label, color in (("correct", "correct", "tab:green"),
                            ("same_vertical", "wrong class, same vertical",
                             "tab:orange"),
                            ("other_vertical", "another vertical", "tab:red")):
    values = np.array([d[key] for d in summary])
    bars.barh(y, values, left=left, color=color, label=label)
    left += values
  bars.set_yticks(y)
  bars.set_yticklabels([str(n) for n in names], fontsize=7)
  # Row i at the top in both panels, as imshow draws the matrix.
  bars.invert_yaxis()
  bars.set_xlim(0, 1)
  bars.set_xlabel("fraction of the vertical's test images (top-1)")
  bars.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3,
              fontsize=7)
  bars.set_title(f"{row['name']}: top-1 answers per vertical")
  image = heat.imshow(matrix, cmap="Reds", aspect="auto", vmin=0)
  heat.set_yticks(y)
  heat.set_yticklabels([str(n) for n in names], fontsize=7)
  heat.set_xticks(y)
  heat.set_xticklabels([str(n) for n in names], rotation=90, fontsize=7)
  heat.set_xlabel("vertical of the predicted class")
  heat.set_title("errors into other verticals")
  fig.colorbar(image, ax=heat, fraction=0.046)
  return _save_figure(fig, path)
