"""Runtime config: where and how the computation runs (strategy, precision, XLA)."""

import dataclasses
from typing import Optional

from official.modeling import hyperparams

STRATEGIES = ("one_device", "mirrored", "multi_worker_mirrored", "tpu")
MIXED_PRECISION_DTYPES = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass
class RuntimeConfig(hyperparams.Config):
  """Model-garden style runtime settings.

  Attributes:
    distribution_strategy: one of `STRATEGIES`.
    num_gpus: GPUs to use with `one_device`/`mirrored` (0 = CPU).
    tpu: TPU address for the `tpu` strategy ('' or 'local' for a local TPU).
    mixed_precision_dtype: Keras dtype policy; losses and sigmoids stay float32.
    jit_compile: compile the train step with XLA.
    run_eagerly: run the step eagerly (debugging only).
    seed: global seed for weights initialisation (`keras.utils.set_random_seed`).
  """

  distribution_strategy: str = "one_device"
  num_gpus: int = 0
  tpu: Optional[str] = None
  mixed_precision_dtype: str = "float32"
  jit_compile: bool = False
  run_eagerly: bool = False
  seed: int = 42

  def validate(self):
    if self.distribution_strategy not in STRATEGIES:
      raise ValueError(
          f"runtime.distribution_strategy={self.distribution_strategy!r} is "
          f"not one of {STRATEGIES}."
      )
    if self.mixed_precision_dtype not in MIXED_PRECISION_DTYPES:
      raise ValueError(
          f"runtime.mixed_precision_dtype={self.mixed_precision_dtype!r} is "
          f"not one of {MIXED_PRECISION_DTYPES}."
      )
    if self.num_gpus < 0:
      raise ValueError(f"runtime.num_gpus={self.num_gpus} must be >= 0.")
    if self.distribution_strategy == "tpu" and self.tpu is None:
      raise ValueError(
          "runtime.tpu must be set (flag --tpu) when "
          "runtime.distribution_strategy='tpu'."
      )
