"""Multi-worker helpers: who is the chief, where each worker writes, TF_CONFIG for a local cluster."""

import json
import os
import socket
from typing import Dict, List, Sequence

import tensorflow as tf

WORKER_TEMP_PREFIX = ".worker_tmp_"


def task_of(strategy: tf.distribute.Strategy):
  """This process's place in the cluster.

  Args:
    strategy: the training strategy.

  Returns:
    `(task_type, task_id)` from the strategy's cluster resolver, or
    `(None, None)` for a strategy without a cluster (one device, mirrored).
  """
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return None, None
  return resolver.task_type, resolver.task_id


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True when this process writes checkpoints and summaries.

  The chief is task `chief` when the cluster has one, else `worker` 0; any
  process not in a cluster (one device, mirrored, a TPU host driver) is it.

  Args:
    strategy: the training strategy.

  Returns:
    Whether this process is the chief.
  """
  task_type, task_id = task_of(strategy)
  if task_type is None:
    return True
  if task_type == "chief":
    return True
  cluster = strategy.cluster_resolver.cluster_spec().as_dict()
  return task_type == "worker" and task_id == 0 and "chief" not in cluster


def write_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
  """Where this process writes checkpoints: `model_dir` on the chief.

  Every worker must take part in a save under `MultiWorkerMirroredStrategy`
  (it may run collectives), but only the chief's files are kept: the others
  write under `model_dir/.worker_tmp_<type>_<id>` and delete it afterwards
  (`remove_write_dir`), so that workers never overwrite each other's files
  on a shared filesystem.

  Args:
    model_dir: the run directory.
    strategy: the training strategy.

  Returns:
    A directory path (created by the checkpoint manager when saving).
  """
  if is_chief(strategy):
    return model_dir
  task_type, task_id = task_of(strategy)
  return os.path.join(model_dir, f"{WORKER_TEMP_PREFIX}{task_type}_{task_id}")


def remove_write_dir(model_dir: str, strategy: tf.distribute.Strategy) -> None:
  """Deletes a non-chief's temporary write dir (no-op on the chief).

  Args:
    model_dir: the run directory.
    strategy: the training strategy.
  """
  directory = write_dir(model_dir, strategy)
  if directory != model_dir and tf.io.gfile.exists(directory):
    tf.io.gfile.rmtree(directory)


def free_ports(count: int, host: str = "127.0.0.1") -> List[int]:
  """`count` distinct TCP ports free on `host` right now (bound, then released).

  Args:
    count: number of ports.
    host: interface to probe.

  Returns:
    The port numbers.

  Raises:
    ValueError: `count < 1`.
  """
  if count < 1:
    raise ValueError(f"count={count} must be >= 1.")
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      s.bind((host, 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def local_tf_config(ports: Sequence[int], index: int,
                    host: str = "127.0.0.1") -> Dict:
  """The `TF_CONFIG` dict of worker `index` of a cluster on `host`.

  Example (worker 0 of two):
    {"cluster": {"worker": ["127.0.0.1:23456", "127.0.0.1:23457"]},
     "task": {"type": "worker", "index": 0}}

  Args:
    ports: one port per worker.
    index: this worker's index.
    host: the hosts' address.

  Returns:
    The dict; `json.dumps` it into the `TF_CONFIG` environment variable.

  Raises:
    ValueError: `index` outside `0..len(ports)-1`.
  """
  if not 0 <= index < len(ports):
    raise ValueError(f"index={index} is not in 0..{len(ports) - 1}.")
  return {
      "cluster": {"worker": [f"{host}:{p}" for p in ports]},
      "task": {"type": "worker", "index": int(index)},
  }


def local_tf_config_json(ports: Sequence[int], index: int,
                         host: str = "127.0.0.1") -> str:
  """`json.dumps(local_tf_config(ports, index, host))`."""
  return json.dumps(local_tf_config(ports, index, host))

