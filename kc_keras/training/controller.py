"""The step loop: `strategy.run` over the model's `train_step`, checkpoints, summaries, resume."""

import dataclasses
import math
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

from absl import logging
import keras
import tensorflow as tf

from kc_keras.configs import trainer as trainer_cfg


class NonFiniteLossError(FloatingPointError):
  """Raised when a loss term is NaN or infinite; names the step and the term."""


@dataclasses.dataclass
class TrainResult:
  """What a finished (or resumed-and-finished) training run reports."""

  step: int
  logs: Dict[str, float]
  history: List[Tuple[int, Dict[str, float]]]
  steps_per_second: float
  examples_per_second: float


class TrainController:
  """Runs a Keras 3 model's `train_step` for a number of steps under a strategy.

  A custom loop rather than `model.fit` so that it (a) runs unchanged under
  every `tf.distribute` strategy, multi-worker included, (b) checkpoints the
  model, the optimizer and the step together and, on restart with the same
  `model_dir`, asks the input pipeline to continue the same stream of batches
  from the restored step (the pipeline is a pure function of its config, so
  no iterator state, shuffle buffers included, needs saving), and (c) stops on
  a non-finite loss before it is checkpointed.

  Args:
    model: a compiled Keras model whose `train_step(data)` returns a dict of
      logs and updates `model.metrics`.
    strategy: the strategy the model and optimizer were built under.
    dataset_fn: `(input_context, start_batch) -> tf.data.Dataset` of training
      batches (per-replica batch size), infinite, starting after
      `start_batch` batches of the stream.
    config: the trainer config (steps, loop size, checkpoint interval).
    model_dir: where checkpoints (`ckpt-*`) and summaries (`train/`) go.
    global_batch_size: examples per step over all replicas (for throughput).
    checkpoint_items: extra trackables to checkpoint with the model.
    jit_compile: compile the per-replica step with XLA.
  """

  def __init__(
      self,
      model: keras.Model,
      strategy: tf.distribute.Strategy,
      dataset_fn: Callable[[tf.distribute.InputContext, int], tf.data.Dataset],
      config: trainer_cfg.TrainerConfig,
      model_dir: str,
      global_batch_size: int,
      checkpoint_items: Optional[dict] = None,
      jit_compile: bool = False,
  ):
    self.model = model
    self.strategy = strategy
    self.config = config
    self.model_dir = model_dir
    self.global_batch_size = global_batch_size
    self._dataset_fn = dataset_fn
    self.global_step = model.optimizer.iterations
    items = dict(model=model, optimizer=model.optimizer)
    items.update(checkpoint_items or {})
    self.checkpoint = tf.train.Checkpoint(**items)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint,
        directory=model_dir,
        max_to_keep=config.max_to_keep,
        step_counter=self.global_step,
    )
    self._summary_writer = tf.summary.create_file_writer(
        os.path.join(model_dir, "train")
    )
    step_fn = model.train_step
    if jit_compile:
      step_fn = tf.function(step_fn, jit_compile=True)
    self._loop_fn = self._make_loop_fn(step_fn)

  def _make_loop_fn(self, step_fn):
    strategy = self.strategy

    @tf.function
    def loop_fn(iterator, num_steps):
      for _ in tf.range(num_steps):
        strategy.run(step_fn, args=(next(iterator),))

    return loop_fn

  def _make_iterator(self, start_batch: int):
    dataset = self.strategy.distribute_datasets_from_function(
        lambda input_context: self._dataset_fn(input_context, start_batch))
    return iter(dataset)

  def restore(self) -> int:
    """Restores the latest checkpoint in `model_dir`, if any; returns the step."""
    latest = self.manager.latest_checkpoint
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      logging.info("Restored %s at step %d.", latest, int(self.global_step))
    return int(self.global_step.numpy())

  def _read_logs(self) -> Dict[str, float]:
    logs = {}
    for metric in self.model.metrics:
      result = metric.result()
      if isinstance(result, dict):
        logs.update({k: float(v) for k, v in result.items()})
      else:
        logs[metric.name] = float(result)
    return logs

  def _check_finite(self, logs: Dict[str, float], step: int) -> None:
    bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
    if bad:
      terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
      raise NonFiniteLossError(
          f"Non-finite training values at step {step}: {terms}. Training "
          f"stopped before checkpointing; the last good checkpoint is "
          f"{self.manager.latest_checkpoint or '(none)'} in {self.model_dir}."
      )

  def train(self, verbose: bool = True) -> TrainResult:
    """Trains until `config.train_steps`, resuming from the latest checkpoint.

    Returns:
      The final step, the logs of every loop run here, and the throughput.

    Raises:
      NonFiniteLossError: when any logged value becomes NaN or infinite.
    """
    step = self.restore()
    target = self.config.train_steps
    iterator = self._make_iterator(step) if step < target else None
    progbar = keras.utils.Progbar(target, verbose=1 if verbose else 0)
    progbar.update(step)
    logs: Dict[str, float] = {}
    history: List[Tuple[int, Dict[str, float]]] = []
    start_step, start_time = step, time.time()
    while step < target:
      num_steps = min(self.config.steps_per_loop, target - step)
      for metric in self.model.metrics:
        metric.reset_state()
      self._loop_fn(iterator, tf.constant(num_steps, tf.int32))
      step = int(self.global_step.numpy())
      logs = self._read_logs()
      self._check_finite(logs, step)
      history.append((step, logs))
      with self._summary_writer.as_default(step=step):
        for name, value in logs.items():
          tf.summary.scalar(name, value)
        tf.summary.scalar(
            "learning_rate", float(self.model.optimizer.learning_rate)
        )
      if step % self.config.checkpoint_interval == 0:
        self.manager.save(checkpoint_number=step, check_interval=False)
      progbar.update(step, values=sorted(logs.items()))
    latest = self.manager.latest_checkpoint
    if latest is None or not latest.endswith(f"-{step}"):
      self.manager.save(checkpoint_number=step, check_interval=False)
    self._summary_writer.flush()
    elapsed = max(time.time() - start_time, 1e-9)
    steps_done = step - start_step
    return TrainResult(
        step=step,
        logs=logs,
        history=history,
        steps_per_second=steps_done / elapsed,
        examples_per_second=steps_done * self.global_batch_size / elapsed,
    )


def restore_model_weights(model: keras.Model, checkpoint_path: str) -> str:
  """Restores only the model's variables from a training checkpoint.

  Args:
    model: a built model with the same structure as the checkpointed one.
    checkpoint_path: a checkpoint prefix or a directory (its latest).

  Returns:
    The checkpoint prefix that was restored.

  Raises:
    FileNotFoundError: when no checkpoint is found.
  """
  path = checkpoint_path
  if tf.io.gfile.isdir(path):
    path = tf.train.latest_checkpoint(path)
  if not path:
    raise FileNotFoundError(f"No checkpoint found at {checkpoint_path!r}.")
  tf.train.Checkpoint(model=model).restore(path).expect_partial(
  ).assert_existing_objects_matched()
  return path



def checkpoint_step(checkpoint_prefix: str) -> int:
  """The step number of a `CheckpointManager` prefix such as `.../ckpt-1200`."""
  suffix = checkpoint_prefix.rsplit("-", 1)[-1]
  if not suffix.isdigit():
    raise ValueError(f"{checkpoint_prefix!r} does not end with -<step>.")
  return int(suffix)
