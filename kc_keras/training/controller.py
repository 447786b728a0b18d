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
from kc_keras.dataloaders import data_errors
from kc_keras.training import batch_norm_recalibration
from kc_keras.training import multi_worker
from kc_keras.training import restore as restore_lib
from kc_keras.training import strategy as strategy_lib


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


def rng_state_variables(model: keras.Model) -> list:
  """The model's random-generator state (`model.variables` minus its weights).

  Keras 3 lists every `SeedGenerator` state (dropout, random layers) in
  `model.variables` but not in `model.weights`.
  """
  weights = {id(w) for w in model.weights}
  return [v for v in model.variables if id(v) not in weights]


class TrainController:
  """Runs a Keras 3 model's `train_step` for a number of steps under a strategy.

  A custom loop rather than `model.fit` so that it (a) runs unchanged under
  every `tf.distribute` strategy, multi-worker included, (b) checkpoints the
  model, the optimizer, the step and the model's RNG state (dropout seeds)
  together and, on restart with the same
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
    run_eagerly: run the loop and the step eagerly, op by op (for debugging
      with Python breakpoints and prints; much slower).
    sync_batch_norm: make the model's BatchNormalization layers use
      global-batch statistics (`strategy.synchronize_batch_norm`), so that
      the result does not depend on the number of replicas.
    extra_logs: `() -> {name: value}` merged into the logs of every loop
      (e.g. the input pipeline's count of skipped records).

  Raises:
    ValueError: `jit_compile` for a model that cannot be compiled by XLA
      (`model.supports_jit` False, e.g. online teachers).
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
      run_eagerly: bool = False,
      sync_batch_norm: bool = True,
      extra_logs: Optional[Callable[[], Dict[str, float]]] = None,
  ):
    if jit_compile and not getattr(model, "supports_jit", True):
      raise ValueError(
          f"runtime.jit_compile=True but {model.name} cannot be compiled by "
          "XLA (online teachers route examples with data-dependent shapes); "
          "use cached targets or jit_compile=False.")
    if sync_batch_norm:
      strategy_lib.synchronize_batch_norm(model)
    if not model.optimizer.built:
      # compile() wraps the caller's (built) optimizer in a LossScaleOptimizer
      # under mixed_float16; its own variables must exist before the step is
      # traced, or the traced step creates them under a tf.cond.
      with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    self.model = model
    self.strategy = strategy
    self.config = config
    self.model_dir = model_dir
    self.global_batch_size = global_batch_size
    self._dataset_fn = dataset_fn
    self._extra_logs = extra_logs
    self.global_step = model.optimizer.iterations
    items = dict(model=model, optimizer=model.optimizer)
    rng_state = rng_state_variables(model)
    if rng_state:
      # Keras keeps dropout's SeedGenerator state out of `model.weights` and
      # so out of a checkpoint of the model; without it a resumed run would
      # replay the dropout masks of steps 1, 2, ... instead of continuing.
      items["rng_state"] = rng_state
    items.update(checkpoint_items or {})
    self.checkpoint = tf.train.Checkpoint(**items)
    # Every worker restores from the chief's `model_dir`; every worker saves
    # (a save may run collectives), non-chiefs into a temporary dir.
    self.manager = tf.train.CheckpointManager(
        self.checkpoint,
        directory=model_dir,
        max_to_keep=config.max_to_keep,
        step_counter=self.global_step,
    )
    self._is_chief = multi_worker.is_chief(strategy)
    self._write_manager = self.manager
    if not self._is_chief:
      self._write_manager = tf.train.CheckpointManager(
          self.checkpoint,
          directory=multi_worker.write_dir(model_dir, strategy),
          max_to_keep=1,
          step_counter=self.global_step,
      )
    self._summary_writer = (
        tf.summary.create_file_writer(os.path.join(model_dir, "train"))
        if self._is_chief else tf.summary.create_noop_writer())
    if jit_compile and run_eagerly:
      raise ValueError("runtime.jit_compile and runtime.run_eagerly exclude "
                       "each other.")
    step_fn = model.train_step
    if jit_compile:
      step_fn = tf.function(step_fn, jit_compile=True)
    self.run_eagerly = run_eagerly
    self._loop_fn = self._make_loop_fn(step_fn, run_eagerly)

  def _make_loop_fn(self, step_fn, run_eagerly):
    strategy = self.strategy

    def loop_fn(iterator, num_steps):
      for _ in tf.range(num_steps):
        strategy.run(step_fn, args=(next(iterator),))

    return loop_fn if run_eagerly else tf.function(loop_fn)

  def _make_iterator(self, start_step: int):
    static = strategy_lib.needs_static_shapes(self.strategy)

    def dataset_fn(input_context):
      # One input pipeline feeds num_replicas / num_pipelines replicas, so it
      # has served that many of its batches per step.
      per_pipeline = (input_context.num_replicas_in_sync //
                      input_context.num_input_pipelines)
      dataset = self._dataset_fn(input_context, start_step * per_pipeline)
      if static:
        strategy_lib.check_static_shapes(dataset.element_spec,
                                         "the training dataset")
      return dataset

    return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

  def _save(self, step: int) -> None:
    self._write_manager.save(checkpoint_number=step, check_interval=False)
    if not self._is_chief:
      multi_worker.remove_write_dir(self.model_dir, self.strategy)

  def _recalibrate_batch_norm(self, iterator) -> None:
    # Before the final checkpoint, on the continuation of the training
    # stream: a resumed run recalibrates on the same batches.
    batches = self.config.batch_norm_recalibration_batches
    if batches:
      with data_errors.named_data_errors("the training data"):
        count = batch_norm_recalibration.recalibrate_batch_norm(
            self.model, self.strategy, iterator, batches)
      logging.info("Recalibrated the moving statistics of %d layers on %d "
                   "batches.", count, batches)

  def restore(self) -> int:
    """Restores the newest usable checkpoint in `model_dir`; returns the step.

    Raises:
      CheckpointError: `model_dir` lists checkpoints but none can be read.
    """
    latest = restore_lib.restore_latest_usable(self.checkpoint, self.model_dir)
    if latest:
      logging.info("Restored %s at step %d.", latest,
                   int(self.global_step.numpy()))
    return int(self.global_step.numpy())

  def _read_logs(self) -> Dict[str, float]:
    logs = {}
    for metric in self.model.metrics:
      result = metric.result()
      if isinstance(result, dict):
        logs.update({k: float(v) for k, v in result.items()})
      else:
        logs[metric.name] = float(result)
    if self._extra_logs is not None:
      logs.update(self._extra_logs())
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
      data_errors.DataError: a training record cannot be decoded or has
        labels outside the hierarchy (named).
      CheckpointError: `model_dir` lists checkpoints but none can be read.
    """
    step = self.restore()
    target = self.config.train_steps
    iterator = self._make_iterator(step) if step < target else None
    progbar = keras.utils.Progbar(target, verbose=1 if verbose else 0)
    progbar.update(step)
    logs: Dict[str, float] = {}
    history: List[Tuple[int, Dict[str, float]]] = []
    start_step, start_time = step, time.time()
    saved_step = step if self.manager.latest_checkpoint else None
    while step < target:
      num_steps = min(self.config.steps_per_loop, target - step)
      for metric in self.model.metrics:
        metric.reset_state()
      with data_errors.named_data_errors("the training data"):
        self._loop_fn(iterator, tf.constant(num_steps, tf.int32))
      step = int(self.global_step.numpy())
      logs = self._read_logs()
      self._check_finite(logs, step)
      history.append((step, logs))
      with self._summary_writer.as_default(step=step):
        for name, value in logs.items():
          tf.summary.scalar(name, value)
        tf.summary.scalar(
            # A constant rate is a (possibly mirrored) variable: read it as
            # a tensor, which float() alone cannot do under a strategy.
            "learning_rate",
            float(tf.convert_to_tensor(self.model.optimizer.learning_rate))
        )
      if step == target:
        self._recalibrate_batch_norm(iterator)
      if step % self.config.checkpoint_interval == 0:
        self._save(step)
        saved_step = step
      progbar.update(step, values=sorted(logs.items()))
    # Decided from the step alone, so that every worker saves (or not) alike.
    if saved_step != step:
      self._save(step)
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
