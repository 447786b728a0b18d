"""Runtime config: where and how the computation runs (strategy, precision, XLA)."""

import dataclasses
from typing import Optional

from official.modeling import hyperparams

STRATEGIES = ("one_device", "mirrored", "multi_worker_mirrored", "tpu")
MIXED_PRECISION_DTYPES = ("float32", "mixed_float16", "mixed_bfloat16")
# '' lets TensorFlow choose (NCCL on GPUs, ring on CPUs).
ALL_REDUCE_ALGS = {
    "mirrored": ("", "nccl", "hierarchical_copy"),
    "multi_worker_mirrored": ("", "ring", "nccl"),
}


@dataclasses.dataclass
class RuntimeConfig(hyperparams.Config):
  """Model-garden style runtime settings.

  Batch sizes elsewhere in the config are **global** (over all replicas of
  all workers); each replica gets `global_batch_size / num_replicas_in_sync`.

  Attributes:
    distribution_strategy: one of `STRATEGIES`. `multi_worker_mirrored` reads
      the cluster from the `TF_CONFIG` environment variable; `tpu` connects to
      `tpu` with `TPUClusterResolver`.
    num_gpus: GPUs to use with `one_device`/`mirrored` (0 = CPU; `mirrored`
      with 0 GPUs mirrors over every logical CPU device).
    tpu: TPU address for the `tpu` strategy ('' or 'local' for a local TPU);
      flag `--tpu`.
    all_reduce_alg: cross-replica reduction, '' for TensorFlow's choice;
      `mirrored`: 'nccl' or 'hierarchical_copy'; `multi_worker_mirrored`:
      'ring' or 'nccl'.
    mixed_precision_dtype: Keras dtype policy; losses and sigmoids stay
      float32, and 'mixed_float16' trains through a `LossScaleOptimizer`.
    jit_compile: compile the per-replica train step with XLA (not with
      online teachers, whose routing has data-dependent shapes).
    sync_batch_norm: BatchNormalization statistics over the global batch
      (all replicas) rather than each replica's share, so that training does
      not depend on the number of replicas.
    run_eagerly: run the training loop and step eagerly, op by op, so that
      Python breakpoints and prints inside `train_step` work (debugging
      only: much slower).
    seed: global seed for weights initialisation (`keras.utils.set_random_seed`).
  """

  distribution_strategy: str = "one_device"
  num_gpus: int = 0
  tpu: Optional[str] = None
  all_reduce_alg: str = ""
  mixed_precision_dtype: str = "float32"
  jit_compile: bool = False
  sync_batch_norm: bool = True
  run_eagerly: bool = False
  seed: int = 42

  def validate(self):
    """Raises ValueError naming the `runtime.*` key of an impossible setting."""
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
    if self.distribution_strategy == "one_device" and self.num_gpus > 1:
      raise ValueError(
          f"runtime.num_gpus={self.num_gpus} needs "
          "runtime.distribution_strategy='mirrored' (one_device uses one).")
    if self.distribution_strategy == "tpu" and self.tpu is None:
      raise ValueError(
          "runtime.tpu must be set (flag --tpu) when "
          "runtime.distribution_strategy='tpu'."
      )
    if self.distribution_strategy != "tpu" and self.tpu:
      raise ValueError(
          f"runtime.tpu={self.tpu!r} is set but "
          f"runtime.distribution_strategy={self.distribution_strategy!r}; "
          "use 'tpu' or clear runtime.tpu.")
    if self.all_reduce_alg:
      allowed = ALL_REDUCE_ALGS.get(self.distribution_strategy, ("",))
      if self.all_reduce_alg not in allowed:
        raise ValueError(
            f"runtime.all_reduce_alg={self.all_reduce_alg!r} is not one of "
            f"{allowed} for runtime.distribution_strategy="
            f"{self.distribution_strategy!r}.")
    if self.distribution_strategy == "tpu" and (
        self.mixed_precision_dtype == "mixed_float16"):
      raise ValueError(
          "runtime.mixed_precision_dtype='mixed_float16' is not supported on "
          "TPUs; use 'mixed_bfloat16'.")
    if self.run_eagerly and self.jit_compile:
      raise ValueError(
          "runtime.run_eagerly=True and runtime.jit_compile=True exclude each "
          "other.")
