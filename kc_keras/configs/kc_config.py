"""The experiment config: task (data, model, distillation, specialists), trainer, runtime."""

import dataclasses
from typing import List, Optional

from official.modeling import hyperparams

from kc_keras.configs import data as data_cfg
from kc_keras.configs import distillation as distillation_cfg
from kc_keras.configs import model as model_cfg
from kc_keras.configs import runtime as runtime_cfg
from kc_keras.configs import trainer as trainer_cfg

FREEZE_MODES = ("none", "backbone", "backbone_and_hidden")


@dataclasses.dataclass
class SpecialistsConfig(hyperparams.Config):
  """How the per-vertical teachers are trained (`--mode=train_specialists`).

  Attributes:
    verticals: vertical ids to train (empty = all); `--verticals` overrides it
      so that a cluster can train disjoint subsets in parallel.
    model: the teacher network (may be larger than the student); its head is
      built over the vertical's classes only.
    init_checkpoint: the model_dir of a trained generalist whose backbone (and
      head hidden layers, when their shapes match) initialise every teacher
      (Hinton et al. 2015); '' trains from scratch.
    freeze: 'none', 'backbone' or 'backbone_and_hidden': what stays fixed at
      the generalist's values (cheap specialists on shared features); None:
      derived at parse time from the images per class.
    negatives_fraction: fraction of other verticals' images kept, with no
      positive label, as negatives for the sigmoid loss.
    train_batch_size: global batch size of each teacher's training.
    trainer: the per-teacher schedule.

  Teachers are written to `task.distillation.teachers_dir` (default
  `<model_dir>/teachers`), where the student later reads them.
  """

  verticals: List[int] = dataclasses.field(default_factory=list)
  model: model_cfg.ModelConfig = dataclasses.field(
      default_factory=model_cfg.ModelConfig
  )
  init_checkpoint: str = ""
  freeze: Optional[str] = "none"
  negatives_fraction: float = 0.0
  train_batch_size: int = 64
  trainer: trainer_cfg.TrainerConfig = dataclasses.field(
      default_factory=trainer_cfg.TrainerConfig
  )

  def validate(self):
    self.model.validate("task.specialists.model")
    self.trainer.validate("task.specialists.trainer")
    if not 0.0 <= self.negatives_fraction <= 1.0:
      raise ValueError(
          "task.specialists.negatives_fraction="
          f"{self.negatives_fraction} must be in [0, 1]."
      )
    if self.freeze is not None and self.freeze not in FREEZE_MODES:
      raise ValueError(
          f"task.specialists.freeze={self.freeze!r} is not one of "
          f"{FREEZE_MODES}."
      )
    if self.freeze not in (None, "none") and not self.init_checkpoint:
      raise ValueError(
          f"task.specialists.freeze={self.freeze!r} needs "
          "task.specialists.init_checkpoint (frozen random layers cannot "
          "specialise)."
      )
    if self.train_batch_size < 1:
      raise ValueError(
          "task.specialists.train_batch_size="
          f"{self.train_batch_size} must be >= 1."
      )
    if any(v < 0 for v in self.verticals):
      raise ValueError(
          f"task.specialists.verticals={self.verticals} has a negative id."
      )


@dataclasses.dataclass
class TaskConfig(hyperparams.Config):
  """What is trained and on which data.

  Attributes:
    data: the data source, augmentation and input pipeline.
    model: the generalist / student network.
    distillation: soft targets (alpha = 0 and target_source 'labels' trains
      a plain generalist on hard labels).
    specialists: the teachers.
    train_batch_size: global training batch size (all replicas together).
    eval_batch_size: global evaluation batch size.
  """

  data: data_cfg.DataConfig = dataclasses.field(
      default_factory=data_cfg.DataConfig
  )
  model: model_cfg.ModelConfig = dataclasses.field(
      default_factory=model_cfg.ModelConfig
  )
  distillation: distillation_cfg.DistillationConfig = dataclasses.field(
      default_factory=distillation_cfg.DistillationConfig
  )
  specialists: SpecialistsConfig = dataclasses.field(
      default_factory=SpecialistsConfig
  )
  train_batch_size: int = 64
  eval_batch_size: int = 256

  def validate(self):
    for name in ("train_batch_size", "eval_batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"task.{name}={getattr(self, name)} must be >= 1.")
    self.data.validate("task.data")
    self.model.validate("task.model")
    self.distillation.validate("task.distillation")
    self.specialists.validate()


def check_against_hierarchy(params: "ExperimentConfig", hierarchy) -> None:
  """The checks that need the data's hierarchy, run before any training step.

  Not an error: `task.distillation.top_k` larger than a vertical (or all of
  them). K caps what a teacher keeps, `min(K, N_v)` classes of vertical v,
  as in METHOD.md; one config can then serve datasets with small and large
  verticals (the demo's 10-class verticals with the paper's K = 100).

  Args:
    params: the validated experiment config.
    hierarchy: the data's `Hierarchy`.

  Raises:
    ValueError: naming the key path and the hierarchy's sizes, for
      self-paced scaling over fewer than 2 verticals, more teachers per
      example than verticals, or specialist vertical ids outside 0..M-1.
  """
  num_verticals = hierarchy.num_verticals
  mode = params.task.model.self_paced.mode
  if mode != "none" and num_verticals < 2:
    raise ValueError(
        f"task.model.self_paced.mode={mode!r} scales each vertical at its own "
        f"pace but the hierarchy has {num_verticals} vertical; set it to "
        "'none'.")
  teachers = params.task.distillation.max_teachers_per_example
  if teachers > num_verticals:
    raise ValueError(
        f"task.distillation.max_teachers_per_example={teachers} exceeds the "
        f"hierarchy's {num_verticals} verticals.")
  bad = [v for v in params.task.specialists.verticals
         if not 0 <= v < num_verticals]
  if bad:
    raise ValueError(
        f"task.specialists.verticals has ids {bad} outside "
        f"0..{num_verticals - 1} (the hierarchy's verticals).")


@dataclasses.dataclass
class ExperimentConfig(hyperparams.Config):
  """Top-level config, one per registered `kc_*` experiment."""

  task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
  trainer: trainer_cfg.TrainerConfig = dataclasses.field(
      default_factory=trainer_cfg.TrainerConfig
  )
  runtime: runtime_cfg.RuntimeConfig = dataclasses.field(
      default_factory=runtime_cfg.RuntimeConfig
  )

  def validate(self):
    """Checks every concern, then the combinations that span several.

    Raises:
      ValueError: naming the full key path of the offending value.
    """
    self.task.validate()
    self.trainer.validate()
    self.runtime.validate()
    distillation = self.task.distillation
    if distillation.target_source in ("online", "cache") and (
        distillation.alpha == 0.0):
      raise ValueError(
          f"task.distillation.target_source={distillation.target_source!r} "
          "runs the teachers but task.distillation.alpha=0.0 ignores their "
          "targets; use target_source='labels' for hard labels only.")
    max_labels = self.task.data.max_labels_per_example
    if distillation.max_teachers_per_example > max_labels:
      raise ValueError(
          "task.distillation.max_teachers_per_example="
          f"{distillation.max_teachers_per_example} exceeds "
          f"task.data.max_labels_per_example={max_labels} (an example spans "
          "at most one vertical per label).")
    # Static shapes on TPU need every batch full.
    num_replicas_hint = max(1, self.runtime.num_gpus)
    if self.task.train_batch_size % num_replicas_hint:
      raise ValueError(
          f"task.train_batch_size={self.task.train_batch_size} must be "
          f"divisible by runtime.num_gpus={self.runtime.num_gpus}."
      )
