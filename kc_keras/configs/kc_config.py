"""The experiment config: task (data, model, distillation, specialists), trainer, runtime."""

import dataclasses
from typing import List

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
      the generalist's values (cheap specialists on shared features).
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
  freeze: str = "none"
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
    if self.freeze not in FREEZE_MODES:
      raise ValueError(
          f"task.specialists.freeze={self.freeze!r} is not one of "
          f"{FREEZE_MODES}."
      )
    if self.freeze != "none" and not self.init_checkpoint:
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
    # Static shapes on TPU need every batch full.
    num_replicas_hint = max(1, self.runtime.num_gpus)
    if self.task.train_batch_size % num_replicas_hint:
      raise ValueError(
          f"task.train_batch_size={self.task.train_batch_size} must be "
          f"divisible by runtime.num_gpus={self.runtime.num_gpus}."
      )
