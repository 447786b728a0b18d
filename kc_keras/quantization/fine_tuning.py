"""Quantization-aware fine-tuning as a training mode: a trained run in, a new run on the int8 grid out."""

import dataclasses
import os
from typing import Callable, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from kc_keras.configs import kc_config
from kc_keras.configs import trainer as trainer_cfg
from kc_keras.dataloaders import pipeline
from kc_keras.quantization import activation_simulator as simulator_lib
from kc_keras.quantization import calibration
from kc_keras.quantization import equalization
from kc_keras.quantization import errors
from kc_keras.quantization import floor
from kc_keras.quantization import integer_forms
from kc_keras.quantization import kernels
from kc_keras.quantization import qat_model
from kc_keras.quantization import recipe as recipe_lib
from kc_keras.training import controller as controller_lib
from kc_keras.training import evaluate as evaluate_lib
from kc_keras.training import modes
from kc_keras.training import optimizers
from kc_keras.training import restore
from kc_keras.utils import files
from kc_keras.utils import records

SUMMARY_FILE = "qat_summary.json"
# Written when a fine-tuning starts: a rerun on the same directory resumes
# only with the same settings.
SETTINGS_FILE = "qat_settings.json"
# Metrics of `evaluate_scores` copied into the summary.
SUMMARY_METRICS = ("top1", "top5", "mpvap", "num_examples")
LOCK_PURPOSE = "quantization-aware fine-tuning"


@dataclasses.dataclass(frozen=True)
class FineTuneResult:
  """What `fine_tune` wrote: the run directory, its last checkpoint, summary and recipe."""

  output_dir: str
  checkpoint: str
  summary: Dict
  recipe: recipe_lib.QuantizationRecipe


def evaluate_network(network: keras.Model, params: kc_config.ExperimentConfig,
                     session: modes.Session) -> Dict:
  """Eval-split top-1 / top-5 / mpvap of `network` (as `kc_keras.train --mode=eval`)."""
  score = tf.function(lambda images, features: network(images,
                                                       training=False))
  metrics = evaluate_lib.evaluate_scores(
      score, session.eval_dataset(), session.hierarchy,
      steps=params.trainer.validation_steps)
  return {k: float(metrics[k]) for k in SUMMARY_METRICS if k in metrics}


def build_optimizer(params: kc_config.ExperimentConfig, steps: int,
                    learning_rate: float) -> keras.optimizers.Optimizer:
  """The run's optimizer (type, epsilon, clipping) at `learning_rate`, cosine to 0."""
  values = params.trainer.optimizer.as_dict()
  values.update(learning_rate=learning_rate, schedule="cosine",
                warmup_steps=0, final_learning_rate_ratio=0.0)
  return optimizers.build_optimizer(trainer_cfg.OptimizerConfig(**values),
                                    steps)


def resolve_targets(quantization: Optional[str], weight_target: Optional[str],
                    activations: str):
  """(quantization, weight_target): the file fine-tuned for and its weight grid.

  Args:
    quantization: one of `recipe.QUANTIZATIONS`, or None: `weight_target`
      when given, else 'int8' with int8 activations and 'dynamic' otherwise.
    weight_target: None (the quantization's: 'dynamic' for dynamic, 'int8'
      for the int8 variants) or one of `kernels.WEIGHT_TARGETS`.
    activations: the simulated activation rounding.

  Returns:
    The pair.

  Raises:
    QuantizationError: an unknown value, or a weight target that is not the
      quantization's.
  """
  if weight_target is not None:
    kernels.check_weight_target(weight_target)
  if quantization is None:
    quantization = weight_target or ("int8" if activations == "int8"
                                     else "dynamic")
  errors.check_choice("quantization", quantization, recipe_lib.QUANTIZATIONS)
  implied = "dynamic" if quantization == "dynamic" else "int8"
  if weight_target is not None and weight_target != implied:
    raise errors.QuantizationError(
        f"weight_target={weight_target!r} is not the grid of "
        f"quantization={quantization!r} ({implied!r})")
  return quantization, implied


def _check_args(steps: int, learning_rate: float, batch_size: Optional[int],
                calibration_interval: int, representative_examples: int,
                equalize_strength: float, quantization: str,
                float_layers: Sequence[str], float_head: bool) -> None:
  if not isinstance(steps, int) or steps < 1:
    raise errors.QuantizationError(f"steps must be an int >= 1, got {steps!r}")
  if not learning_rate > 0:
    raise errors.QuantizationError(
        f"learning_rate must be > 0, got {learning_rate!r}")
  if batch_size is not None and batch_size < 1:
    raise errors.QuantizationError(
        f"batch_size must be >= 1, got {batch_size!r}")
  if calibration_interval < 1 or representative_examples < 1:
    raise errors.QuantizationError(
        f"calibration_interval={calibration_interval} and "
        f"representative_examples={representative_examples} must be >= 1")
  if not 0.0 <= equalize_strength <= 1.0:
    raise errors.QuantizationError(
        f"equalize_strength must be in [0, 1], got {equalize_strength!r}")
  if float_layers and quantization not in recipe_lib.FLOAT_LAYER_QUANTIZATIONS:
    raise errors.QuantizationError(
        f"float_layers={list(float_layers)} only apply to "
        f"{recipe_lib.FLOAT_LAYER_QUANTIZATIONS}, not "
        f"quantization={quantization!r}")
  if not float_head and quantization != "int8_float_head":
    raise errors.QuantizationError(
        f"float_head=False only applies to int8_float_head, not "
        f"quantization={quantization!r}")


def _check_output_dir(output_dir: str, settings: Dict) -> bool:
  """Whether `output_dir` holds an unfinished fine-tuning with `settings` (resume).

  Raises:
    QuantizationError: a finished fine-tuning, one started with other
      settings, or any other non-empty directory.
  """
  if not (tf.io.gfile.exists(output_dir) and tf.io.gfile.listdir(output_dir)):
    return False
  if tf.io.gfile.exists(os.path.join(output_dir, SUMMARY_FILE)):
    raise errors.QuantizationError(
        f"output_dir={output_dir!r} holds a finished fine-tuning; runs are "
        "never overwritten, pick a new directory")
  path = os.path.join(output_dir, SETTINGS_FILE)
  if not tf.io.gfile.exists(path):
    raise errors.QuantizationError(
        f"output_dir={output_dir!r} exists and is not empty; runs are never "
        "overwritten, pick a new directory")
  recorded = records.check_seal(records.read_json(path, errors.QuantizationError),
                                path, errors.QuantizationError)
  differ = sorted(k for k in set(recorded) | set(settings)
                  if k != records.SEAL_KEY
                  and recorded.get(k) != settings.get(k))
  if differ:
    raise errors.QuantizationError(
        f"output_dir={output_dir!r} holds a fine-tuning started with other "
        "settings (" + ", ".join(
            f"{k}: {recorded.get(k)!r} there, {settings.get(k)!r} now"
            for k in differ) + "); rerun it as it was or pick a new directory")
  return True


def fine_tune(params: kc_config.ExperimentConfig, checkpoint_path: str,
              output_dir: str, steps: int, learning_rate: float = 1e-4,
              batch_size: Optional[int] = None, evaluate: bool = True,
              activations: str = "none",
              logit_floor: Optional[float] = None,
              representative_examples: int = 200,
              calibration_interval: int = 50,
              consistency_weight: float = 0.0,
              weight_target: Optional[str] = None,
              equalize_strength: float = 0.0,
              quantization: Optional[str] = None,
              float_layers: Sequence[str] = (),
              float_head: bool = True,
              log: Callable[[str], None] = print,
              log_every: int = 50,
              verbose: bool = False) -> FineTuneResult:
  """Fine-tunes a trained network on its int8 grid into a new run directory.

  Restores the network as the exporters do (`restore.load_network`: only
  the checkpoint's `model.student` branch), optionally equalizes its
  ranges (`equalization.equalize_ranges`), then trains `steps` steps of
  `QuantizationAwareModel` with `TrainController` on the TRAINING split
  (the run's augmentation, hard labels, the run's loss type and optimizer
  type at `learning_rate` with a cosine decay to 0). The controller gives
  the run training's guarantees: checkpoints every `log_every` steps in
  training's layout, resume from the newest usable one, a stop on a
  non-finite loss, the run lock; `output_dir` also gets the source run's
  `hierarchy.json` and `params.yaml`. Every checkpoint holds the network
  with its kernels on their int8 grid (their int8 values times their
  scales, which the converter's own rounding reproduces), so
  `export.export_saved_model` takes the run as is.

  When training is done it writes `qat_summary.json` (eval metrics before
  and after, losses, what was snapped) and `quantization_recipe.json`
  (`recipe.QuantizationRecipe`, which `export.export_tflite` follows).

  A run that stops part-way resumes when the same call is made again on the
  same `output_dir` (the settings are recorded in `qat_settings.json` and
  must match); a finished run, or any other non-empty directory, is never
  overwritten.

  Args:
    params: the experiment config the checkpoint was trained with.
    checkpoint_path: a `ckpt-N` prefix or a run directory.
    output_dir: the new run directory.
    steps: optimisation steps (>= 1).
    learning_rate: the peak learning rate.
    batch_size: default `task.train_batch_size`.
    evaluate: compute eval metrics before and after (the summary has them).
    activations: `ActivationSimulator` mode of the training forward pass:
      'none' (weights only), 'dynamic' or 'int8'.
    logit_floor: the floor the file will be converted with (int8: also the
      simulated logits' range); recorded in the recipe.
    representative_examples: training images calibrating the 'int8' ranges
      and measuring `equalize_ranges` (`calibration.training_images`, the
      converter's set).
    calibration_interval: 'int8' only: steps between recalibrations.
    consistency_weight: see `QuantizationAwareModel`.
    weight_target: the file whose weight grid is trained on and snapped to
      (`kernels.WEIGHT_TARGETS`); default: the quantization's.
    equalize_strength: > 0: `equalize_ranges` with this exponent on the
      `representative_examples` images before fine-tuning (0: off).
    quantization: the TFLite variant the run is fine-tuned for
      (`recipe.QUANTIZATIONS`; see `resolve_targets` for the default).
    float_layers: layers the file keeps float (dynamic, int8_float_head);
      int8 activations of these layers are not rounded in training.
    float_head: int8_float_head: keep the logits layers float.
    log: progress lines.
    log_every: steps per training loop (a progress line, a checkpoint).
    verbose: show the controller's progress bar.

  Returns:
    A `FineTuneResult`.

  Raises:
    QuantizationError: bad steps, learning rate, batch size, interval,
      strength, floor, quantization or weight target, float layers or
      float head for another quantization, an unknown `activations` mode,
      a backbone it cannot simulate, or an `output_dir` it may not write.
    restore.RestoreError: no checkpoint at `checkpoint_path`.
    hierarchy_lib.HierarchyError: the checkpoint's run records another
      hierarchy than the config.
  """
  simulator_lib.check_activations(activations)
  quantization, weight_target = resolve_targets(quantization, weight_target,
                                                activations)
  _check_args(steps, learning_rate, batch_size, calibration_interval,
              representative_examples, equalize_strength, quantization,
              float_layers, float_head)
  logit_floor = floor.check_logit_floor(logit_floor)
  prefix = restore.resolve_checkpoint(checkpoint_path)
  batch_size = batch_size or params.task.train_batch_size
  settings = dict(
      source_checkpoint=prefix, steps=steps, learning_rate=learning_rate,
      batch_size=batch_size, activations=activations,
      logit_floor=logit_floor, representative_examples=representative_examples,
      calibration_interval=calibration_interval,
      consistency_weight=consistency_weight, weight_target=weight_target,
      equalize_strength=equalize_strength, quantization=quantization,
      float_layers=list(float_layers), float_head=float_head,
      log_every=log_every)
  resuming = _check_output_dir(output_dir, settings)
  with modes.Session(params, output_dir, lock=LOCK_PURPOSE) as session:
    if not resuming and session.is_chief:
      files.atomic_write_json(os.path.join(output_dir, SETTINGS_FILE),
                              records.seal(settings))
    return _fine_tune(session, prefix, settings, evaluate, log, verbose)


def _float_layer_names(settings: Dict):
  """The layers an int8 file keeps float, for the simulator."""
  names = list(settings["float_layers"])
  if settings["quantization"] == "int8_float_head" and settings["float_head"]:
    names += list(integer_forms.LOGITS_LAYERS)
  return names


def _fine_tune(session: modes.Session, prefix: str, settings: Dict,
               evaluate: bool, log: Callable[[str], None],
               verbose: bool) -> FineTuneResult:
  """`fine_tune` in an open session of `output_dir`."""
  params, output_dir = session.params, session.model_dir
  steps, activations = settings["steps"], settings["activations"]
  with session.strategy.scope():
    network, hierarchy, restored, _ = restore.load_network(params, prefix)
  calibration_images = None
  if activations == "int8" or settings["equalize_strength"] > 0:
    calibration_images = np.concatenate(list(calibration.training_images(
        params.task.data, settings["representative_examples"])))
  equalized = []
  if settings["equalize_strength"] > 0:
    equalized = equalization.equalize_ranges(
        network, calibration_images, settings["equalize_strength"],
        params.task.eval_batch_size)
  summary = dict(settings, source_checkpoint=restored,
                 equalized=[dict(producer=e.producer, consumer=e.consumer,
                                 scale_min=float(e.scales.min()),
                                 scale_max=float(e.scales.max()))
                            for e in equalized],
                 snapped_kernels=[
                     k.variable.path for k in kernels.quantized_kernels(
                         network, settings["weight_target"])],
                 float_kernels=kernels.unsnapped_kernels(
                     network, settings["weight_target"]))
  if evaluate:
    summary["eval_before"] = evaluate_network(network, params, session)
    log(f"eval before: {summary['eval_before']}")

  def dataset_fn(input_context, start_batch):
    return pipeline.build_dataset(
        session.source, "train", params.task.data, training=True,
        global_batch_size=settings["batch_size"], input_context=input_context,
        start_batch=start_batch)

  with session.strategy.scope():
    simulator = simulator_lib.ActivationSimulator(
        network, activations, settings["logit_floor"],
        float_layers=_float_layer_names(settings))
    if activations != "none":
      images, _ = next(iter(dataset_fn(None, 0)))
      walk = simulator.check_walk(images)
      if walk > simulator_lib.WALK_TOLERANCE:
        raise errors.QuantizationError(
            "the layer-by-layer forward of activations="
            f"{activations!r} differs from the network by {walk}: the "
            "network's call order changed; use activations='none'")
    model = qat_model.QuantizationAwareModel(
        network, params.task.distillation.loss_type,
        settings["weight_target"], simulator,
        settings["consistency_weight"], calibration_images,
        settings["calibration_interval"], params.task.eval_batch_size)
    model.compile(optimizer=build_optimizer(params, steps,
                                            settings["learning_rate"]),
                  jit_compile=False)
    model.optimizer.build(model.optimizer_variables)
  loop = min(settings["log_every"], steps)
  controller = controller_lib.TrainController(
      model=model, strategy=session.strategy, dataset_fn=dataset_fn,
      config=trainer_cfg.TrainerConfig(
          train_steps=steps, steps_per_loop=loop, checkpoint_interval=loop,
          max_to_keep=params.trainer.max_to_keep,
          batch_norm_recalibration_batches=0),
      model_dir=output_dir, global_batch_size=settings["batch_size"],
      checkpoint_items=model.checkpoint_items(),
      run_eagerly=params.runtime.run_eagerly,
      # The network runs in inference mode: BatchNorm is never updated.
      sync_batch_norm=False)
  result = controller.train(verbose=verbose)
  for step, logs in result.history:
    log(f"step {step}/{steps}: loss {logs['loss']:.4f}")
  checkpoint = controller.manager.latest_checkpoint
  if result.history:
    summary["loss_first"] = result.history[0][1]["loss"]
    summary["loss_last"] = result.history[-1][1]["loss"]
  if evaluate:
    summary["eval_after"] = evaluate_network(network, params, session)
    log(f"eval after: {summary['eval_after']}")
  recipe = recipe_lib.QuantizationRecipe(
      quantization=settings["quantization"],
      weight_target=settings["weight_target"], activations=activations,
      logit_floor=settings["logit_floor"],
      float_layers=tuple(settings["float_layers"]),
      float_head=settings["float_head"],
      equalize_strength=float(settings["equalize_strength"]),
      source_checkpoint=restored, checkpoint=os.path.basename(checkpoint),
      hierarchy_fingerprint=hierarchy.fingerprint)
  if session.is_chief:
    recipe_lib.write(recipe, output_dir)
    # Last: its presence marks the run finished.
    files.atomic_write_json(os.path.join(output_dir, SUMMARY_FILE), summary)
  return FineTuneResult(output_dir=output_dir, checkpoint=checkpoint,
                        summary=summary, recipe=recipe)
