"""Reading trained networks back: checkpoints, and the run they belong to.

One API for every reader of a training checkpoint (resume, `--mode=eval`,
the teachers' generalist, the exporters, quantization-aware fine-tuning):

- `resolve_checkpoint`: a prefix or a run directory -> the prefix to read;
- `check_recorded_hierarchy`: the run's `hierarchy.json` is the data's
  (a checkpoint's output columns mean the classes it was trained with;
  read against another hierarchy it would mislabel every prediction);
- `restore_latest_usable` / `restore_model_weights`: restore, skipping
  checkpoints whose save was cut short;
- `load_network`: builds the network of an experiment and restores just it.
"""

import os
from typing import List, Optional, Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from kc_keras.configs import kc_config
from kc_keras.dataloaders import factory
from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.training import model_builder

# Every run directory records the hierarchy its checkpoints were trained with.
HIERARCHY_FILE = "hierarchy.json"


class RestoreError(ValueError):
  """A checkpoint is missing, or cannot be read back; the message names it."""


class CheckpointError(RestoreError):
  """No checkpoint of a directory that lists some can be restored."""


def run_dir_of(checkpoint_path: str) -> str:
  """The run directory of a checkpoint prefix (or the directory itself)."""
  if tf.io.gfile.isdir(checkpoint_path):
    return checkpoint_path
  return os.path.dirname(checkpoint_path)


def checkpoint_step(checkpoint_prefix: str) -> int:
  """The step number of a `CheckpointManager` prefix such as `.../ckpt-1200`.

  Raises:
    ValueError: the prefix does not end with `-<step>`.
  """
  suffix = checkpoint_prefix.rsplit("-", 1)[-1]
  if not suffix.isdigit():
    raise ValueError(f"{checkpoint_prefix!r} does not end with -<step>.")
  return int(suffix)


def resolve_checkpoint(checkpoint_path: str) -> str:
  """The checkpoint prefix `checkpoint_path` names (a prefix, or a run directory).

  Args:
    checkpoint_path: a `ckpt-N` prefix, or a directory (its latest checkpoint).

  Returns:
    The prefix.

  Raises:
    RestoreError: a directory without a checkpoint, or no `<prefix>.index`.
  """
  if tf.io.gfile.isdir(checkpoint_path):
    latest = tf.train.latest_checkpoint(checkpoint_path)
    if not latest:
      raise RestoreError(
          f"checkpoint_path={checkpoint_path!r} is a directory without a "
          "checkpoint")
    return latest
  if not tf.io.gfile.exists(checkpoint_path + ".index"):
    raise RestoreError(
        f"checkpoint_path={checkpoint_path!r}: no checkpoint there "
        f"({checkpoint_path}.index not found)")
  return checkpoint_path


def check_recorded_hierarchy(run_dir: str,
                             hierarchy: hierarchy_lib.Hierarchy,
                             record: bool = False,
                             required: bool = True
                             ) -> Optional[hierarchy_lib.Hierarchy]:
  """Checks that `run_dir/hierarchy.json` is `hierarchy` (or records it).

  Args:
    run_dir: a training run directory.
    hierarchy: the data's hierarchy.
    record: write it when `run_dir` has none (the chief of a new run).
    required: a missing file is an error (every reader of a finished run);
      False for a run being started, or a worker that may see the
      directory before the chief records it.

  Returns:
    The recorded hierarchy (None when it was missing and not required).

  Raises:
    hierarchy_lib.HierarchyError: the run records another hierarchy (sizes
      and fingerprints of both named), or none when `required`.
  """
  path = os.path.join(run_dir, HIERARCHY_FILE)
  if not tf.io.gfile.exists(path):
    if record:
      hierarchy.save(path)
      return hierarchy
    if required:
      raise hierarchy_lib.HierarchyError(
          f"{path} not found: a checkpoint must sit in the run directory "
          "its training wrote (which records the hierarchy it was trained "
          "with).")
    return None
  recorded = hierarchy_lib.Hierarchy.load(path)
  if recorded.fingerprint != hierarchy.fingerprint:
    raise hierarchy_lib.HierarchyError(
        f"{run_dir} was trained with another hierarchy "
        f"({recorded.num_classes} classes, {recorded.num_verticals} "
        f"verticals, fingerprint {recorded.fingerprint[:12]}) than the "
        f"data's ({hierarchy.num_classes} classes, {hierarchy.num_verticals} "
        f"verticals, fingerprint {hierarchy.fingerprint[:12]}); pass the "
        "experiment and config the run was trained with, or use a new "
        "--model_dir.")
  return recorded


def _listed_checkpoints(directory: str) -> List[str]:
  """Prefixes in the `checkpoint` state file of `directory`, newest first."""
  state = tf.train.get_checkpoint_state(directory)
  if state is None:
    return []
  paths = list(state.all_model_checkpoint_paths) or [
      state.model_checkpoint_path]
  # get_checkpoint_state already prefixes relative entries with `directory`
  # (itself relative when the model_dir is): joining again would double it.
  return list(reversed([p for p in paths if p]))


def restore_latest_usable(checkpoint: tf.train.Checkpoint, directory: str,
                          expect_partial: bool = False) -> Optional[str]:
  """Restores the newest checkpoint of `directory` that reads back whole.

  A checkpoint whose save was cut short (a missing `.index`, a truncated or
  missing data shard) raises while being read; it is skipped, with a warning
  naming it and why, and the next older one is tried. Every variable is
  assigned again by the checkpoint that finally succeeds, so a half-read
  one leaves nothing behind.

  Args:
    checkpoint: what to restore into.
    directory: a `CheckpointManager` directory.
    expect_partial: restore only the objects of `checkpoint` (e.g. the model
      alone from a training checkpoint).

  Returns:
    The restored prefix, or None when the directory lists no checkpoint.

  Raises:
    CheckpointError: every listed checkpoint failed (named, with reasons);
      training from scratch instead would silently lose the run.
  """
  failures = []
  for path in _listed_checkpoints(directory):
    try:
      status = checkpoint.restore(path)
      if expect_partial:
        status.expect_partial()
      status.assert_existing_objects_matched()
      if failures:
        logging.warning("Restored %s after skipping unusable checkpoints: %s",
                        path, "; ".join(failures))
      return path
    # Readers fail in many ways on a cut-short file (NotFoundError,
    # DataLossError, IndexError from the reader, ...); all mean "unusable".
    except Exception as e:  # pylint: disable=broad-except
      reason = getattr(e, "message", None) or str(e)
      failures.append(f"{path} ({type(e).__name__}: "
                      f"{reason.splitlines()[0][:200]})")
      logging.warning("Checkpoint %s is unusable: %s", path, failures[-1])
  if failures:
    raise CheckpointError(
        f"No usable checkpoint in {directory}: " + "; ".join(failures) +
        ". Remove them (or the directory) to start over.")
  return None


def restore_model_weights(model: keras.Model, checkpoint_path: str) -> str:
  """Restores only the model's variables from a training checkpoint.

  Training checkpoints are `Checkpoint(model=<KnowledgeConcentrationModel>,
  optimizer=..., ...)`; this reads the `model` branch alone.

  Args:
    model: a built model with the same structure as the checkpointed one.
    checkpoint_path: a checkpoint prefix, or a directory (its newest usable
      checkpoint, see `restore_latest_usable`).

  Returns:
    The checkpoint prefix that was restored.

  Raises:
    FileNotFoundError: when no checkpoint is found.
    CheckpointError: the directory's checkpoints are all unusable.
  """
  checkpoint = tf.train.Checkpoint(model=model)
  if tf.io.gfile.isdir(checkpoint_path):
    path = restore_latest_usable(checkpoint, checkpoint_path,
                                 expect_partial=True)
    if not path:
      raise FileNotFoundError(f"No checkpoint found at {checkpoint_path!r}.")
    return path
  checkpoint.restore(checkpoint_path).expect_partial(
  ).assert_existing_objects_matched()
  return checkpoint_path


def load_network(params: kc_config.ExperimentConfig, checkpoint_path: str
                 ) -> Tuple[keras.Model, hierarchy_lib.Hierarchy, str,
                            Tuple[int, ...]]:
  """Builds the network of `params` and restores it from a training checkpoint.

  Only the network is built: the checkpoint's `model.student` branch is read
  into it (teachers and optimizer slots are never loaded, so they cannot
  leak into an export). Works for a generalist and a student.

  Args:
    params: the experiment config the checkpoint was trained with.
    checkpoint_path: a `ckpt-N` prefix or a run directory (its newest usable
      checkpoint).

  Returns:
    `(network, hierarchy, restored checkpoint prefix, image_shape)`.

  Raises:
    hierarchy_lib.HierarchyError: the run records no hierarchy, or another
      (see `check_recorded_hierarchy`).
    FileNotFoundError: no checkpoint at `checkpoint_path`.
    CheckpointError: the run's checkpoints are all unusable.
  """
  source = factory.build_source(params.task.data)
  image_shape = tuple(int(d) for d in source.image_shape)
  hierarchy = check_recorded_hierarchy(run_dir_of(checkpoint_path),
                                       source.hierarchy)
  network = model_builder.build_network(params.task.model, hierarchy,
                                        image_shape)
  network(np.zeros((1, *image_shape), np.float32), training=False)
  # The trainer checkpoints `Checkpoint(model=KnowledgeConcentrationModel)`
  # whose network is the attribute `student`: mirror just that path.
  holder = tf.train.Checkpoint(student=network)
  restored = restore_model_weights(holder, checkpoint_path)
  return network, hierarchy, restored, image_shape
