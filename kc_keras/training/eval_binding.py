"""What a run's eval metrics were measured on, and keeping them when it is unchanged.

A pipeline rerun (the next sitting of a long run) passes through every
finished stage again. Evaluating a finished network again gives the same
numbers and, at 100K classes, costs minutes per stage; so the metrics file
records its binding (the weights, the eval data, the hierarchy and the
config) and a rerun keeps the file when all of them are what it would
evaluate now. Anything else (another checkpoint, retrained teachers, a
changed config or eval file, an old file without a binding, an unreadable
one) evaluates again.
"""

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import logging
import tensorflow as tf

from kc_keras.configs import checks
from kc_keras.configs import kc_config
from kc_keras.dataloaders import sources
from kc_keras.utils import records

BINDING_KEY = "binding"
# How long and how often a network trained, not what it computes: the
# checkpoint's identity already says which weights are evaluated.
TRAINING_SCHEDULE_KEYS = (
    "trainer.train_epochs",
    "trainer.train_steps",
    "trainer.steps_per_loop",
    "trainer.checkpoint_interval",
    "trainer.max_to_keep",
)


def config_digest(params: kc_config.ExperimentConfig,
                  ignore: Sequence[str] = ()) -> str:
  """sha256 hex of the resolved config's key paths and values, minus `ignore`.

  Args:
    params: the config.
    ignore: key paths, or prefixes ending in '.', left out (with
      `TRAINING_SCHEDULE_KEYS`).
  """
  ignore = TRAINING_SCHEDULE_KEYS + tuple(ignore)
  leaves = {k: v for k, v in checks.flatten(params.as_dict()).items()
            if not checks.is_ignored(k, ignore)}
  return sources.digest(config=leaves)


def checkpoint_identity(prefix: str) -> Dict[str, str]:
  """{name, index_sha256} of a TensorFlow checkpoint.

  The `.index` file holds every tensor's checksum, so its sha256 identifies
  the weights without reading the (large) data shards.

  Raises:
    FileNotFoundError: no `<prefix>.index`.
  """
  index = prefix + ".index"
  if not tf.io.gfile.exists(index):
    raise FileNotFoundError(f"Checkpoint index {index} is missing.")
  return dict(name=os.path.basename(prefix),
              index_sha256=records.file_sha256(index))


def newest_checkpoint(model_dir: str) -> Optional[Dict[str, str]]:
  """`checkpoint_identity` of the newest checkpoint listed in `model_dir`, or None."""
  state = tf.train.get_checkpoint_state(model_dir)
  if state is None or not state.model_checkpoint_path:
    return None
  try:
    return checkpoint_identity(state.model_checkpoint_path)
  except FileNotFoundError:
    return None  # Restoring will say what is wrong with it.


def binding(params: kc_config.ExperimentConfig,
            source: sources.ExampleSource, weights: Any,
            unread: Sequence[str] = ()) -> Dict[str, Any]:
  """What an evaluation of `weights` on `source`'s eval split under `params` depends on.

  Args:
    params: the resolved config (preprocessing, validation_steps, network).
    source: the data; its eval split and hierarchy are fingerprinted.
    weights: a JSON-able identity of the weights (`checkpoint_identity`, or
      the teachers' fingerprints).
    unread: config key paths the evaluated network never reads.

  Returns:
    {eval_data, hierarchy, config, weights}.
  """
  return dict(eval_data=source.fingerprint("eval"),
              hierarchy=source.hierarchy.fingerprint,
              config=config_digest(params, unread),
              weights=_json_round_trip(weights))


def _json_round_trip(value: Any) -> Any:
  # What is compared is what a JSON file gives back (int keys become str).
  return json.loads(json.dumps(value, sort_keys=True))


def differing_fields(recorded: Any, expected: Mapping[str, Any]) -> List[str]:
  """Names of the binding fields that differ (all of them when none is recorded)."""
  if not isinstance(recorded, dict):
    return sorted(expected)
  return sorted(k for k in expected if recorded.get(k) != expected[k])


def kept_metrics(path: str, expected: Mapping[str, Any]) -> Optional[Dict]:
  """The metrics at `path` when they are bound to `expected`, else None.

  Args:
    path: a metrics JSON written with `BINDING_KEY`.
    expected: `binding(...)` of the evaluation about to run.

  Returns:
    The metrics dict to reuse, or None (logged: missing, unreadable, or which
    fields differ) when the evaluation must run.
  """
  if not tf.io.gfile.exists(path):
    return None
  try:
    metrics = records.read_json(path)
  except ValueError as e:
    logging.warning("Evaluating again: %s", e)
    return None
  if not isinstance(metrics, dict):
    logging.warning("Evaluating again: %s is not a metrics object.", path)
    return None
  differing = differing_fields(metrics.get(BINDING_KEY), expected)
  if differing:
    logging.info("Evaluating again: %s was measured on another %s.", path,
                 ", ".join(differing))
    return None
  logging.info("Kept %s: measured on the same weights, eval data, hierarchy "
               "and config.", path)
  return metrics
