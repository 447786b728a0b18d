"""The registered pipelines: the README demo and the paper's ablation rows, in one module."""

from typing import Dict, List, Optional

from kc_keras.configs import run_layout
from kc_keras.training.stage import FULL_STUDENT
from kc_keras.training.stage import GENERALIST
from kc_keras.training.stage import SPECIALISTS
from kc_keras.training.stage import Stage

# The student variants of the paper's ablation table (METHOD.md section 5):
# every row has the same backbone, data and schedule; only the head and the
# self-paced scaling differ.
STUDENT_ROWS = (
    ("FC-FC + D", {"head_type": "fc_fc"}, "none"),
    ("SC-SC + D", {"head_type": "sc_sc"}, "none"),
    ("FC-SC + D", {"head_type": "fc_sc"}, "none"),
    (FULL_STUDENT, {"head_type": "fc_sc"}, "vertical"),
    ("FC-SC + D + S (class)", {"head_type": "fc_sc"}, "class"),
)


def _paths(generalist_dir: str) -> Dict:
  return run_layout.teacher_paths("{workdir}", generalist_dir)


def _teacher_stages(student_experiment: str, generalist_dir: str,
                    teachers_from: Optional[str] = None) -> List[Stage]:
  paths = _paths(generalist_dir)
  return [
      Stage("specialists (train)", student_experiment, "train_specialists",
            "specialists", paths, row_of=SPECIALISTS,
            teachers_from=teachers_from),
      Stage(SPECIALISTS, student_experiment, "eval_specialists",
            "specialists", paths, report=True, teachers_from=teachers_from),
      # Students with online targets (the Omniglot ones) never read it.
      Stage("soft targets (cache)", student_experiment, "cache_targets",
            "specialists", paths, only_if_target_source="cache",
            teachers_from=teachers_from),
  ]


def _student_stage(name: str, student_experiment: str, head: Dict,
                   self_paced: str, generalist_dir: str,
                   teachers_from: Optional[str] = None) -> Stage:
  overrides = _paths(generalist_dir)
  overrides["task"]["model"] = {"head": head,
                                "self_paced": {"mode": self_paced}}
  slug = "".join(c if c.isalnum() else " " for c in name.lower()).split()
  model_dir = "_".join(["student"] + slug)
  return Stage(name, student_experiment, "train_and_eval", model_dir,
               overrides, report=True, teachers_from=teachers_from)


def _generalist_teachers_student(generalist_experiment: str,
                                 student_experiment: str) -> List[Stage]:
  """Generalist, specialists on it (its network), soft targets, the full student."""
  return ([Stage(GENERALIST, generalist_experiment, "train_and_eval",
                 "generalist", report=True)] +
          _teacher_stages(student_experiment, "generalist",
                          generalist_experiment) +
          [_student_stage(FULL_STUDENT, student_experiment,
                          {"head_type": "fc_sc"}, "vertical", "generalist",
                          generalist_experiment)])


def demo() -> List[Stage]:
  """README command 1 on the embedded demo data."""
  return _generalist_teachers_student("kc_generalist_demo", "kc_student_demo")


def own_data() -> List[Stage]:
  """Your own data (`--data`): the demo's stages on `kc_generalist` / `kc_student`."""
  return _generalist_teachers_student("kc_generalist", "kc_student")


def own_data_ablation() -> List[Stage]:
  """Your own data (`--data`), every row of the paper's table.

  The `kc` pipeline's stages (same directories, so a finished `kc` run is
  reused) plus the other four students of `STUDENT_ROWS`; the teachers
  start from the generalist row, as in `kc`.
  """
  stages = [Stage(GENERALIST, "kc_generalist", "train_and_eval", "generalist",
                  report=True)]
  stages += _teacher_stages("kc_student", "generalist", "kc_generalist")
  stages += [_student_stage(name, "kc_student", head, self_paced, "generalist",
                            "kc_generalist")
             for name, head, self_paced in STUDENT_ROWS]
  return stages


def ablation(generalist_experiment: str, trunk_experiment: str,
             student_experiment: str) -> List[Stage]:
  """The paper's rows: generalist, five students, specialists (upper bound).

  The teachers start from a "trunk" generalist trained longer than the
  student-size generalist row (its cost is added to the specialists' row).
  """
  stages = [
      Stage(GENERALIST, generalist_experiment, "train_and_eval", "generalist",
            report=True),
      Stage("teacher trunk", trunk_experiment, "train", "trunk",
            row_of=SPECIALISTS),
  ]
  stages += _teacher_stages(student_experiment, "trunk")
  stages += [_student_stage(name, student_experiment, head, self_paced, "trunk")
             for name, head, self_paced in STUDENT_ROWS]
  return stages


PIPELINES = {
    "demo": demo,
    "kc": own_data,
    "kc_ablation": own_data_ablation,
    "ablation_omniglot": lambda: ablation(
        "kc_generalist_omniglot", "kc_trunk_omniglot", "kc_student_omniglot"),
    "ablation_embedded_rich": lambda: ablation(
        "kc_generalist_embedded_rich", "kc_trunk_embedded_rich",
        "kc_student_embedded_rich"),
}


# Pipelines that read `--data`, and the stage whose network they export.
OWN_DATA_EXPORTS = {"kc": FULL_STUDENT, "kc_ablation": FULL_STUDENT}


def get_pipeline(name: str) -> List[Stage]:
  """The stages of the registered pipeline `name`.

  Raises:
    ValueError: for an unknown name, listing the registered ones.
  """
  if name not in PIPELINES:
    raise ValueError(
        f"Unknown pipeline {name!r}; registered: {', '.join(sorted(PIPELINES))}.")
  return PIPELINES[name]()
