"""Keras 3 optimizers and learning-rate schedules from the trainer config."""

import keras

from kc_keras.configs import trainer as trainer_cfg
from kc_keras.training import fused_adam


def build_learning_rate(config: trainer_cfg.OptimizerConfig, train_steps: int):
  """Returns a float or a `keras.optimizers.schedules.LearningRateSchedule`.

  cosine: lr(t) = peak * (r + (1 - r) * (1 + cos(pi * t' / T')) / 2) after a
  linear warm-up of `warmup_steps`, with t' = t - warmup, T' = steps - warmup
  and r = `final_learning_rate_ratio`.

  Args:
    config: optimizer config.
    train_steps: total optimizer steps.
  """
  if config.schedule == "constant" and not config.warmup_steps:
    return config.learning_rate
  decay_steps = max(1, train_steps - config.warmup_steps)
  if config.schedule == "constant":
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=decay_steps,
        alpha=1.0,
        warmup_target=config.learning_rate,
        warmup_steps=config.warmup_steps,
    )
  if config.warmup_steps:
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=decay_steps,
        alpha=config.final_learning_rate_ratio,
        warmup_target=config.learning_rate,
        warmup_steps=config.warmup_steps,
    )
  return keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=config.learning_rate,
      decay_steps=decay_steps,
      alpha=config.final_learning_rate_ratio,
  )


def build_optimizer(
    config: trainer_cfg.OptimizerConfig, train_steps: int
) -> keras.optimizers.Optimizer:
  """Builds the Keras 3 optimizer named by `config.type`.

  Args:
    config: optimizer config.
    train_steps: total optimizer steps (for the schedule).

  Returns:
    A `keras.optimizers.Optimizer`.
  """
  learning_rate = build_learning_rate(config, train_steps)
  common = dict(learning_rate=learning_rate,
                global_clipnorm=config.global_clipnorm)
  if config.type == "adam":
    return fused_adam.FusedAdam(epsilon=config.epsilon, **common)
  if config.type == "adamw":
    return keras.optimizers.AdamW(weight_decay=config.weight_decay,
                                  epsilon=config.epsilon, **common)
  return keras.optimizers.SGD(momentum=config.momentum, **common)
