"""Builds the tf.distribute strategy and the mixed-precision policy from the runtime config."""

from typing import Dict, Optional, Tuple

import keras
import tensorflow as tf

from kc_keras.configs import runtime as runtime_cfg
from kc_keras.training import batch_norm_recalibration

# One strategy per setting per process: each strategy numbers its collective
# ops from the same start, so a second mirrored/multi-worker strategy in the
# same process (e.g. a pipeline running several modes) would reuse collective
# instance keys of the first and fail with shape mismatches.
_BUILT: Dict[Tuple, tf.distribute.Strategy] = {}


def _cpu_devices() -> list:
  return [d.name for d in tf.config.list_logical_devices("CPU")]


def _mirrored_cross_device_ops(all_reduce_alg: str):
  if not all_reduce_alg:
    return None
  if all_reduce_alg == "nccl":
    return tf.distribute.NcclAllReduce()
  return tf.distribute.HierarchicalCopyAllReduce()


def _collective_communication(all_reduce_alg: str):
  implementation = {
      "": tf.distribute.experimental.CommunicationImplementation.AUTO,
      "ring": tf.distribute.experimental.CommunicationImplementation.RING,
      "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
  }[all_reduce_alg]
  return tf.distribute.experimental.CommunicationOptions(
      implementation=implementation)


def build_strategy(runtime: runtime_cfg.RuntimeConfig,
                   cluster_resolver: Optional[
                       tf.distribute.cluster_resolver.ClusterResolver] = None
                   ) -> tf.distribute.Strategy:
  """Returns the strategy named by `runtime.distribution_strategy`.

  - `one_device`: `/gpu:0` when `num_gpus == 1`, else `/cpu:0`.
  - `mirrored`: `num_gpus` GPUs; with `num_gpus = 0` every visible logical
    CPU device, so that a CPU split into logical devices behaves like a
    multi-GPU host (the equivalence tests use this).
  - `multi_worker_mirrored`: the cluster of `TF_CONFIG` (or
    `cluster_resolver`); must be built before TensorFlow runs any op.
  - `tpu`: `TPUClusterResolver(tpu=runtime.tpu)`, connected and initialised.

  Strategies are built once per process and setting, then reused.

  Args:
    runtime: the validated runtime config.
    cluster_resolver: optional resolver for `multi_worker_mirrored` (default:
      `TFConfigClusterResolver`, i.e. the `TF_CONFIG` variable).

  Returns:
    A `tf.distribute.Strategy`.

  Raises:
    ValueError: an unknown strategy name, or `mirrored` over fewer devices
      than `num_gpus`.
  """
  key = (runtime.distribution_strategy, runtime.num_gpus, runtime.tpu,
         runtime.all_reduce_alg, id(cluster_resolver))
  if key not in _BUILT:
    _BUILT[key] = _build(runtime, cluster_resolver)
  return _BUILT[key]


def _build(runtime, cluster_resolver):
  name = runtime.distribution_strategy
  if name == "one_device":
    device = "/gpu:0" if runtime.num_gpus >= 1 else "/cpu:0"
    return tf.distribute.OneDeviceStrategy(device)
  if name == "mirrored":
    if runtime.num_gpus == 0:
      devices = _cpu_devices()
    else:
      gpus = tf.config.list_logical_devices("GPU")
      if len(gpus) < runtime.num_gpus:
        raise ValueError(
            f"runtime.num_gpus={runtime.num_gpus} but only {len(gpus)} GPU(s) "
            f"are visible: {[g.name for g in gpus]}.")
      devices = [g.name for g in gpus[:runtime.num_gpus]]
    return tf.distribute.MirroredStrategy(
        devices=devices,
        cross_device_ops=_mirrored_cross_device_ops(runtime.all_reduce_alg))
  if name == "multi_worker_mirrored":
    return tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=cluster_resolver,
        communication_options=_collective_communication(
            runtime.all_reduce_alg))
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu=runtime.tpu)
    if runtime.tpu not in ("", "local"):
      tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(
      f"runtime.distribution_strategy={name!r} is not one of "
      f"{runtime_cfg.STRATEGIES}.")


def set_precision_policy(runtime: runtime_cfg.RuntimeConfig) -> None:
  """Sets the global Keras dtype policy (must run before models are built)."""
  keras.mixed_precision.set_global_policy(runtime.mixed_precision_dtype)


def synchronize_batch_norm(model: keras.Model) -> int:
  """Makes every BatchNormalization layer of `model` use global-batch statistics.

  With `synchronized=True` a Keras 3 BatchNormalization computes, in replica
  context, mean = sum_r S_r / sum_r n_r and var = sum_r Q_r / sum_r n_r -
  mean^2 from each replica's sum S_r, sum of squares Q_r and count n_r
  (all-reduced), i.e. the statistics of the global batch: the forward pass,
  the gradients and the moving averages no longer depend on the number of
  replicas. With one replica it is the same formula without communication.

  Args:
    model: a Keras model (nested models and layers are searched).

  Returns:
    The number of BatchNormalization layers found (all now synchronized).
  """
  layers = batch_norm_recalibration.batch_norm_layers(model)
  for layer in layers:
    layer.synchronized = True
  return len(layers)


def needs_static_shapes(strategy: tf.distribute.Strategy) -> bool:
  """True for TPU strategies, whose XLA programs need fully known shapes."""
  return isinstance(strategy, tf.distribute.TPUStrategy)


def check_static_shapes(element_spec, where: str = "dataset") -> None:
  """Raises ValueError when any tensor of `element_spec` has an unknown dimension.

  A TPU compiles one XLA program per input shape; training batches must
  therefore be batched with `drop_remainder=True` and soft targets padded to
  `T*K` (see `dataloaders.pipeline.build_dataset`).

  Args:
    element_spec: a (nested) structure of `tf.TensorSpec`.
    where: names the dataset in the error message.

  Raises:
    ValueError: naming the path of every tensor whose shape is not static.
  """
  bad = []
  for path, spec in keras.tree.flatten_with_path(element_spec):
    if not spec.shape.is_fully_defined():
      name = "/".join(str(p) for p in path) or "<element>"
      bad.append(f"{name}: {spec.shape}")
  if bad:
    raise ValueError(
        f"{where} has non-static shapes, which a TPU cannot compile: "
        f"{'; '.join(bad)}. Batch with drop_remainder=True and pad targets.")
