"""A pipeline stage and the report's row names: plain data, no TensorFlow, so that the
pipeline registry (and `run_pipeline --help`) loads at once."""

import dataclasses
from typing import Dict, Optional

GENERALIST = "generalist FC-FC"
SPECIALISTS = "specialists"
FULL_STUDENT = "FC-SC + D + S (vertical)"


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
    teachers_from: the experiment whose network (`task.model`, after the
      same files and overrides) the teachers start from: it becomes the
      stage's `task.specialists.model`, so that a config file that changes
      the network changes the teachers with it.
  """

  name: str
  experiment: str
  mode: str
  model_dir: str
  overrides: Dict = dataclasses.field(default_factory=dict)
  report: bool = False
  row_of: Optional[str] = None
  only_if_target_source: Optional[str] = None
  teachers_from: Optional[str] = None
