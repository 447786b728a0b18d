"""Trainer config: optimizer, schedule, step counts, checkpoints, summaries."""

import dataclasses
from typing import Optional

from official.modeling import hyperparams

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass
class OptimizerConfig(hyperparams.Config):
  """Keras 3 optimizer and learning-rate schedule.

  Attributes:
    type: one of `OPTIMIZERS`.
    learning_rate: peak learning rate.
    schedule: 'constant' or 'cosine' (decays to `final_learning_rate_ratio`
      times the peak over the training steps after warm-up).
    warmup_steps: linear warm-up from 0 to the peak.
    final_learning_rate_ratio: end value of the cosine decay, as a fraction.
    weight_decay: decoupled weight decay (adamw) or L2 via the optimizer.
    momentum: SGD momentum.
    global_clipnorm: clip the global gradient norm (None = off).
    epsilon: Adam/AdamW's epsilon in `m / (sqrt(v) + epsilon)`. It sets the
      gradient scale below which a parameter's step shrinks from the full
      learning rate to `lr * |g| / epsilon`; with a sigmoid loss summed over N
      classes, a class absent from the batch still gets a gradient of about
      its prior probability, and Keras' 1e-7 lets those steps run at the full
      rate (see docs/RESULTS.md, "Adam's epsilon"). None: derived from the
      data at parse time, 1e-7 * N (`configs/derived_defaults.py`).
  """

  type: str = "adam"
  learning_rate: float = 1e-3
  schedule: str = "cosine"
  warmup_steps: int = 0
  final_learning_rate_ratio: float = 0.0
  weight_decay: float = 0.0
  momentum: float = 0.9
  global_clipnorm: Optional[float] = None
  epsilon: Optional[float] = 1e-7

  def validate(self, prefix: str = "trainer.optimizer"):
    if self.type not in OPTIMIZERS:
      raise ValueError(f"{prefix}.type={self.type!r} is not one of {OPTIMIZERS}.")
    if self.schedule not in SCHEDULES:
      raise ValueError(
          f"{prefix}.schedule={self.schedule!r} is not one of {SCHEDULES}."
      )
    if self.learning_rate <= 0:
      raise ValueError(f"{prefix}.learning_rate={self.learning_rate} must be > 0.")
    if self.warmup_steps < 0:
      raise ValueError(f"{prefix}.warmup_steps={self.warmup_steps} must be >= 0.")
    if self.epsilon is not None and self.epsilon <= 0:
      raise ValueError(f"{prefix}.epsilon={self.epsilon} must be > 0.")


@dataclasses.dataclass
class TrainerConfig(hyperparams.Config):
  """Step-based training loop settings (as in model-garden trainers).

  A field that is None is derived from the data when the config is parsed
  (`configs/derived_defaults.py`); a set value is kept.

  Attributes:
    train_epochs: the budget in epochs (passes over the training split);
      sets `train_steps` = ceil(epochs * (images // batch)) when
      `train_steps` is None, and is ignored when `train_steps` is set.
    train_steps: total optimizer steps.
    steps_per_loop: steps run inside one compiled call; logs and summaries
      are written at this interval.
    checkpoint_interval: steps between checkpoints (a multiple of
      `steps_per_loop`); a final checkpoint is always written.
    max_to_keep: checkpoints kept in `model_dir`.
    validation_steps: eval batches (-1 = the whole eval split).
    batch_norm_recalibration_batches: n > 0 replaces the BatchNorm moving
      statistics of the final weights by their average over the next n
      training batches, before the final checkpoint
      (`training/batch_norm_recalibration.py`); 0 keeps the moving averages.
    optimizer: the optimizer and schedule.
  """

  train_epochs: Optional[float] = None
  train_steps: Optional[int] = 1000
  steps_per_loop: Optional[int] = 50
  checkpoint_interval: Optional[int] = 200
  max_to_keep: int = 3
  validation_steps: int = -1
  batch_norm_recalibration_batches: int = 0
  optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)

  def validate(self, prefix: str = "trainer"):
    for name in ("train_steps", "steps_per_loop", "checkpoint_interval",
                 "max_to_keep"):
      value = getattr(self, name)
      if value is not None and value < 1:
        raise ValueError(f"{prefix}.{name}={value} must be >= 1.")
    if self.train_epochs is not None and not self.train_epochs > 0:
      raise ValueError(
          f"{prefix}.train_epochs={self.train_epochs} must be > 0.")
    if (self.checkpoint_interval is not None and self.steps_per_loop is not None
        and self.checkpoint_interval % self.steps_per_loop):
      raise ValueError(
          f"{prefix}.checkpoint_interval={self.checkpoint_interval} must be a "
          f"multiple of {prefix}.steps_per_loop={self.steps_per_loop}."
      )
    if self.validation_steps == 0 or self.validation_steps < -1:
      raise ValueError(
          f"{prefix}.validation_steps={self.validation_steps} must be -1 "
          "(whole split) or >= 1."
      )
    if self.batch_norm_recalibration_batches < 0:
      raise ValueError(
          f"{prefix}.batch_norm_recalibration_batches="
          f"{self.batch_norm_recalibration_batches} must be >= 0.")
    self.optimizer.validate(f"{prefix}.optimizer")
