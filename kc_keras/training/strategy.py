"""Builds the tf.distribute strategy and the mixed-precision policy from the runtime config."""

import keras
import tensorflow as tf
from official.common import distribute_utils

from kc_keras.configs import runtime as runtime_cfg


def build_strategy(runtime: runtime_cfg.RuntimeConfig) -> tf.distribute.Strategy:
  """Returns the strategy named by `runtime.distribution_strategy`.

  `mirrored` with `num_gpus=0` mirrors over every visible logical CPU device,
  so that a CPU split into logical devices behaves like a multi-GPU host
  (used by the equivalence tests).

  Args:
    runtime: the runtime config.

  Returns:
    A `tf.distribute.Strategy`.
  """
  name = runtime.distribution_strategy
  if name == "mirrored" and runtime.num_gpus == 0:
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)
  return distribute_utils.get_distribution_strategy(
      distribution_strategy=name,
      num_gpus=runtime.num_gpus,
      tpu_address=runtime.tpu,
  )


def set_precision_policy(runtime: runtime_cfg.RuntimeConfig) -> None:
  """Sets the global Keras dtype policy (must run before models are built)."""
  keras.mixed_precision.set_global_policy(runtime.mixed_precision_dtype)
