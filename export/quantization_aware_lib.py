"""Quantization-aware fine-tuning: trains a network on the int8 weight grid TFLite uses, then snaps it there."""

import dataclasses
import os
import shutil
import tempfile
from typing import Callable, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from export import export_saved_model_lib as saved_model_lib
from export import export_tflite_lib
from kc_keras.configs import kc_config
from kc_keras.configs import trainer as trainer_cfg
from kc_keras.dataloaders import factory
from kc_keras.dataloaders import labels as labels_lib
from kc_keras.dataloaders import pipeline
from kc_keras.losses import sigmoid_cross_entropy
from kc_keras.training import evaluate as evaluate_lib
from kc_keras.training import modes
from kc_keras.training import optimizers
from kc_keras.utils import files

# TFLite's int8 weights: symmetric, narrow range [-127, 127], one scale per
# output channel, scale = max|w| / 127 (measured on the converter's output,
# `tests/export/quantization_aware_lib_test.py`).
INT8_WEIGHT_MAX = 127
# Keras layers whose kernel the converter quantizes per output channel (the
# kernel's last axis: CONV_2D and FULLY_CONNECTED, in `dynamic` and `int8`).
PER_CHANNEL_LAYERS = (keras.layers.Conv2D, keras.layers.Dense)
CHECKPOINT_NAME = "ckpt"
SUMMARY_FILE = "qat_summary.json"
# Metrics of `evaluate_scores` copied into the summary.
SUMMARY_METRICS = ("top1", "top5", "mpvap", "num_examples")


class QuantizationAwareError(ValueError):
  """A fine-tuning cannot run as asked; the message names the offending input."""


@dataclasses.dataclass(frozen=True)
class QuantizedKernel:
  """A kernel the converter stores as int8, with one scale per output channel.

  Attributes:
    layer: the Keras layer's name.
    variable: the kernel; its last axis is the output channel.
  """

  layer: str
  variable: keras.Variable


@dataclasses.dataclass(frozen=True)
class FineTuneResult:
  """What `fine_tune` wrote: the run directory and its summary."""

  output_dir: str
  checkpoint: str
  summary: Dict


# ------------------------------------------------------------ the int8 grid
def _round_half_away(x):
  # TFLite rounds with std::round (half away from zero); tf.round rounds
  # half to even, which differs on exact halves.
  return tf.sign(x) * tf.floor(tf.abs(x) + 0.5)


def channel_scales(kernel) -> tf.Tensor:
  """Per-output-channel int8 scales of a kernel, s_c = max|w[..., c]| / 127.

  Args:
    kernel: float `[..., C]`, the output channel last (Conv2D, Dense).

  Returns:
    float32 `[C]`.
  """
  kernel = tf.convert_to_tensor(kernel, tf.float32)
  axes = list(range(len(kernel.shape) - 1))
  return tf.reduce_max(tf.abs(kernel), axis=axes) / INT8_WEIGHT_MAX


def fake_quantize_kernel(kernel) -> tf.Tensor:
  """The kernel rounded to its per-channel int8 grid, in float.

  q(w)[..., c] = clip(round(w[..., c] / s_c), -127, 127) * s_c with
  s_c = max|w[..., c]| / 127 (a channel of zeros stays zero). Straight-
  through: used forward only; `QuantizationAwareTrainer` applies the
  gradient taken at q(w) to the float weights.

  Args:
    kernel: float `[..., C]`.

  Returns:
    float32, the shape of `kernel`.
  """
  kernel = tf.convert_to_tensor(kernel, tf.float32)
  scales = channel_scales(kernel)
  safe = tf.where(scales > 0, scales, tf.ones_like(scales))
  levels = tf.clip_by_value(_round_half_away(kernel / safe),
                            -INT8_WEIGHT_MAX, INT8_WEIGHT_MAX)
  return tf.where(scales > 0, levels * safe, tf.zeros_like(kernel))


def int8_kernel(kernel) -> Tuple[np.ndarray, np.ndarray]:
  """The int8 values and scales the converter stores for `kernel`.

  Args:
    kernel: float `[..., C]`.

  Returns:
    `(int8 [..., C], float32 scales [C])` with kernel ~ values * scales.
  """
  scales = channel_scales(kernel)
  safe = tf.where(scales > 0, scales, tf.ones_like(scales))
  levels = tf.clip_by_value(
      _round_half_away(tf.convert_to_tensor(kernel, tf.float32) / safe),
      -INT8_WEIGHT_MAX, INT8_WEIGHT_MAX)
  return levels.numpy().astype(np.int8), scales.numpy()


def fold_batch_norm(kernel: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                    mean: np.ndarray, variance: np.ndarray, epsilon: float
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """Folds an inference-mode BatchNorm into the conv before it.

  BN(conv(x, W)) = conv(x, W * m) + (beta - mean * m) with
  m = gamma / sqrt(variance + epsilon), per output channel: what the TFLite
  converter computes before it rounds the conv kernel to int8. m scales
  each output channel, so a kernel on its per-channel int8 grid stays on
  the grid of the folded kernel (s_c becomes |m_c| s_c).

  Args:
    kernel: `[..., C]` conv kernel without bias.
    gamma, beta, mean, variance: `[C]` BN weights and moving statistics.
    epsilon: the BN epsilon.

  Returns:
    `(folded kernel [..., C], bias [C])`, float32.
  """
  multiplier = (np.asarray(gamma, np.float32)
                / np.sqrt(np.asarray(variance, np.float32)
                          + np.float32(epsilon)))
  folded = np.asarray(kernel, np.float32) * multiplier
  bias = np.asarray(beta, np.float32) - np.asarray(mean, np.float32) * multiplier
  return folded.astype(np.float32), bias.astype(np.float32)


# ------------------------------------------------------------ the network
def _all_layers(network: keras.Model) -> List[keras.layers.Layer]:
  # Nested models and custom layers (the head's hidden/classifier layers)
  # hold the kernels; Keras tracks them all in `_flatten_layers`.
  return list(network._flatten_layers(include_self=False, recursive=True))  # pylint: disable=protected-access


def quantized_kernels(network: keras.Model) -> List[QuantizedKernel]:
  """The kernels the converter rounds per output channel (Conv2D, Dense).

  Args:
    network: a built network.

  Returns:
    One `QuantizedKernel` per Conv2D / Dense layer, in layer order.
  """
  return [QuantizedKernel(layer=layer.name, variable=layer.kernel)
          for layer in _all_layers(network)
          if isinstance(layer, PER_CHANNEL_LAYERS)]


def unsnapped_kernels(network: keras.Model) -> List[str]:
  """Paths of weights with >= 2 dims that `quantized_kernels` leaves float.

  The structurally connected layers' kernels (BATCH_MATMUL / gathered
  constants in TFLite) are not snapped: their quantization in the
  converter is not the per-channel scheme above.
  """
  snapped = {id(k.variable) for k in quantized_kernels(network)}
  return [w.path for w in network.weights
          if len(w.shape) >= 2 and id(w) not in snapped]


def conv_batch_norm_pairs(network: keras.Model
                          ) -> List[Tuple[keras.layers.Conv2D,
                                          keras.layers.BatchNormalization]]:
  """Each bias-free Conv2D whose output feeds only a BatchNormalization.

  These are the pairs the converter folds (`fold_batch_norm`).
  """
  layers = _all_layers(network)
  pairs = []
  for layer in layers:
    if not isinstance(layer, keras.layers.BatchNormalization):
      continue
    for conv in layers:
      if (isinstance(conv, keras.layers.Conv2D) and not conv.use_bias
          and len(conv._inbound_nodes) == 1  # pylint: disable=protected-access
          and layer.input is conv.output):
        pairs.append((conv, layer))
  return pairs


def folded_kernels(network: keras.Model) -> Dict[str, np.ndarray]:
  """Layer name -> the kernel as the converter quantizes it (BN folded in).

  Conv2D layers followed by a BatchNormalization get `fold_batch_norm`;
  every other Conv2D / Dense kernel is returned as is.
  """
  kernels = {k.layer: np.asarray(k.variable.numpy(), np.float32)
             for k in quantized_kernels(network)}
  for conv, bn in conv_batch_norm_pairs(network):
    kernels[conv.name], _ = fold_batch_norm(
        kernels[conv.name], bn.gamma.numpy(), bn.beta.numpy(),
        bn.moving_mean.numpy(), bn.moving_variance.numpy(), bn.epsilon)
  return kernels


def snap_to_int8_grid(network: keras.Model) -> float:
  """Rounds every `quantized_kernels` kernel to its int8 grid, in place.

  After this the converter's int8 rounding of these kernels (BN folded or
  not) reproduces them: `dynamic` and `int8` files hold the Keras weights.

  Returns:
    The largest |change| of a weight.
  """
  change = 0.0
  for kernel in quantized_kernels(network):
    before = kernel.variable.numpy()
    after = fake_quantize_kernel(before).numpy()
    change = max(change, float(np.max(np.abs(after - before), initial=0.0)))
    kernel.variable.assign(after)
  return change


# ------------------------------------------------------------ activations
def inference_layers(network: keras.Model) -> List[keras.layers.Layer]:
  """The network's layers in inference order, for a layer-by-layer forward.

  Backbone layers (a chain: each consumes the previous one's output), then
  the head's hidden1, hidden2 and classifier (its dropouts are the identity
  in inference), then the self-paced scale: `ClassificationHead.call` and
  `HierarchicalClassifier` at inference. `ActivationSimulator` checks the
  walk against `network(x)` once (`check_walk`).

  Raises:
    QuantizationAwareError: the backbone is not a chain of single layers
      (keras.applications backbones): name of the first layer that is not.
  """
  backbone = network.backbone
  chain = [l for l in backbone.layers
           if not isinstance(l, keras.layers.InputLayer)]
  previous = backbone.inputs[0]
  for layer in chain:
    if len(layer._inbound_nodes) != 1 or layer.input is not previous:  # pylint: disable=protected-access
      raise QuantizationAwareError(
          f"activation simulation needs a chain backbone (small_cnn); layer "
          f"{layer.name!r} of {backbone.name!r} does not take the previous "
          "layer's output; use activations='none'")
    previous = layer.output
  head = network.head
  return chain + [head.hidden1, head.hidden2, head.classifier,
                  network.self_paced]


# Layers TFLite fuses into the op before them (no rounding in between).
_FUSED = (keras.layers.BatchNormalization, keras.layers.ReLU)
# Layers whose int8 output keeps their input's scale.
_SAME_SCALE = (keras.layers.MaxPooling2D, keras.layers.Flatten)
ACTIVATION_MODES = ("none", "dynamic", "int8")
# 8-bit activations: 2^8 - 1 steps between the range's ends.
ACTIVATION_BITS = 8
ACTIVATION_STEPS = 2 ** ACTIVATION_BITS - 1
# The dynamic-range converter leaves kernels with fewer weights in float
# (its `min_elements` default; e.g. the 3x3x1x16 Omniglot stem).
DYNAMIC_MIN_WEIGHTS = 1024
# Largest |walk - network(x)| accepted before training (the walk is exact
# today; float reassociation would stay far below this).
WALK_TOLERANCE = 1e-4


class ActivationSimulator:
  """`network(x)` at inference with TFLite's activation rounding (straight-through).

  mode='dynamic' (the `dynamic` file's hybrid ops): the input of each
  Conv2D / Dense whose kernel has >= `min_elements` weights (the
  converter leaves smaller ones float) is rounded per example to 8 bits
  over [min(x_i, 0), max(x_i, 0)], step (max - min) / 255.
  mode='int8' (full integer): the images and the output of every fused op
  (conv+BN+ReLU, Dense with its activation, input scaling, pooling means)
  are rounded to 8 bits over the range the converter calibrates: min/max
  over the representative images (`calibrate`); the logits over
  [max(min, logit_floor), max] (the floored file's range).
  Forward value: the rounded one; gradient: the identity inside the range
  (`keras.quantizers.fake_quant_with_min_max_vars` for int8).

  Args:
    network: a `HierarchicalClassifier` with a chain backbone.
    mode: one of `ACTIVATION_MODES` ('none': the plain network).
    logit_floor: int8 only: the logit floor of the exported file, or None.
    min_elements: dynamic only: the converter's weight-count threshold.

  Raises:
    QuantizationAwareError: unknown mode, or a backbone that is not a chain.
  """

  def __init__(self, network: keras.Model, mode: str = "none",
               logit_floor: Optional[float] = None,
               min_elements: int = DYNAMIC_MIN_WEIGHTS):
    if mode not in ACTIVATION_MODES:
      raise QuantizationAwareError(
          f"activations={mode!r}; use one of {ACTIVATION_MODES}")
    self.network = network
    self.mode = mode
    self.logit_floor = logit_floor
    self.min_elements = min_elements
    self.layers = inference_layers(network) if mode != "none" else []
    self.points = self._int8_points() if mode == "int8" else []
    self.ranges = {name: (keras.Variable(0.0, trainable=False),
                          keras.Variable(0.0, trainable=False))
                   for name in self.points}

  def _int8_points(self) -> List[str]:
    """'images' and each layer whose output TFLite rounds to int8."""
    points = ["images"]
    for layer, following in zip(self.layers, self.layers[1:] + [None]):
      if isinstance(following, _FUSED) or isinstance(layer, _SAME_SCALE):
        continue
      if layer is self.network.self_paced:
        continue
      points.append(layer.name)
    return points

  def _walk(self, images, on_point: Callable, round_inputs: bool):
    """The layers in order; `on_point(name, x)` at each int8 point."""
    x = on_point("images", images) if self.points else images
    for layer in self.layers:
      if (round_inputs and isinstance(layer, PER_CHANNEL_LAYERS)
          and int(np.prod(layer.kernel.shape)) >= self.min_elements):
        x = _round_per_example(x)
      x = layer(x, training=False)
      if layer.name in self.ranges:
        x = on_point(layer.name, x)
    return x

  def __call__(self, images):
    """Logits `[B, N]` with the simulated rounding."""
    if self.mode == "none":
      return self.network(images, training=False)

    def fake_quant(name, x):
      low, high = self.ranges[name]
      return keras.quantizers.fake_quant_with_min_max_vars(
          x, low, high, num_bits=ACTIVATION_BITS)

    return self._walk(images, fake_quant, self.mode == "dynamic")

  def calibrate(self, images: np.ndarray, batch_size: int) -> None:
    """Sets the int8 ranges to min/max over `images` of the float network.

    As the converter calibrates: every range holds 0; the logits' minimum
    is raised to `logit_floor` when the floor is above it.
    """
    if self.mode != "int8":
      return
    low = {n: 0.0 for n in self.points}
    high = {n: 0.0 for n in self.points}

    def record(name, x):
      low[name] = min(low[name], float(tf.reduce_min(x)))
      high[name] = max(high[name], float(tf.reduce_max(x)))
      return x

    for start in range(0, len(images), batch_size):
      self._walk(tf.constant(images[start:start + batch_size]), record,
                 round_inputs=False)
    logits = self.points[-1]
    if self.logit_floor is not None:
      low[logits] = max(low[logits], float(self.logit_floor))
    for name, (low_var, high_var) in self.ranges.items():
      low_var.assign(low[name])
      high_var.assign(high[name])

  def check_walk(self, images) -> float:
    """max |walk without rounding - network(images)| (0 when the walk is right)."""
    if self.mode == "none":
      return 0.0
    walked = self._walk(images, lambda name, x: x, round_inputs=False)
    return float(tf.reduce_max(tf.abs(
        walked - self.network(images, training=False))))


def _round_per_example(x):
  """x rounded per example to 8 bits over [min(x_i, 0), max(x_i, 0)] (STE).

  round((x - low) / step) * step + low with step = (high - low) / 255: the
  hybrid kernels' on-the-fly input quantization.
  """
  axes = list(range(1, len(x.shape)))
  low = tf.minimum(tf.reduce_min(x, axis=axes, keepdims=True), 0.0)
  high = tf.maximum(tf.reduce_max(x, axis=axes, keepdims=True), 0.0)
  step = tf.where(high > low, (high - low) / ACTIVATION_STEPS,
                  tf.ones_like(high))
  rounded = tf.round((x - low) / step) * step + low
  return x + tf.stop_gradient(rounded - x)


# ------------------------------------------------------------ training
class QuantizationAwareTrainer:
  """Straight-through fine-tuning on the int8 weight grid.

  Each step sets every `quantized_kernels` kernel to q(w) of its float
  copy w (`fake_quantize_kernel`), computes the loss of the network as
  it runs in inference mode (BatchNorm on its moving statistics, which
  the converter folds; no dropout), and applies the gradient taken at
  q(w) to w (the straight-through estimator: dq/dw := 1); the other
  trainable weights (biases, BN gamma/beta, self-paced scales) train as
  usual. BN's per-channel multiplier leaves the folded kernel on its grid,
  so freezing the statistics is what makes q(w) the converter's weights.

  loss = mean_i [CE(z_i, f_q(x_i)) + c * CE(p(f(x_i)), f_q(x_i))]
         + sum(network.losses),
  z the multi-hot labels, CE the run's `loss_type` (sigmoid or softmax),
  f_q the network in inference mode at the quantized weights, or
  `forward` (an `ActivationSimulator`: the activations rounded as well);
  the optional consistency term (weight c = `consistency_weight`) pulls
  f_q towards the float network's own probabilities p(f) (sigmoid or
  softmax of f at the quantized weights without activation rounding, no
  gradient through the target), which is what top-1 agreement between
  the float model and its TFLite file measures.

  Args:
    network: the trained network (modified in place).
    optimizer: a Keras optimizer (not built).
    loss_type: 'sigmoid' or 'softmax'.
    forward: images -> logits; default `network(x, training=False)`.
    consistency_weight: c >= 0 (0: labels only).

  Raises:
    QuantizationAwareError: a negative `consistency_weight`.
  """

  def __init__(self, network: keras.Model,
               optimizer: keras.optimizers.Optimizer,
               loss_type: str = "sigmoid",
               forward: Optional[Callable] = None,
               consistency_weight: float = 0.0):
    if not consistency_weight >= 0:
      raise QuantizationAwareError(
          f"consistency_weight must be >= 0, got {consistency_weight!r}")
    self.consistency_weight = float(consistency_weight)
    self.network = network
    self.forward = forward or (lambda x: network(x, training=False))
    self.optimizer = optimizer
    self.loss_type = loss_type
    self.num_classes = int(network.output.shape[-1])
    self.kernels = quantized_kernels(network)
    self.shadows = [keras.Variable(k.variable.numpy(), trainable=True,
                                   name=f"{k.layer}_float_kernel")
                    for k in self.kernels]
    shadow_of = {id(k.variable): s for k, s in zip(self.kernels,
                                                   self.shadows)}
    self.trainable = list(network.trainable_variables)
    self.targets = [shadow_of.get(id(v), v) for v in self.trainable]
    optimizer.build(self.targets)
    self._step = tf.function(self._train_step)

  def _quantize(self):
    for kernel, shadow in zip(self.kernels, self.shadows):
      kernel.variable.assign(fake_quantize_kernel(shadow))

  def _train_step(self, images, label_ids):
    self._quantize()
    targets = labels_lib.multi_hot(label_ids, self.num_classes)
    with tf.GradientTape() as tape:
      logits = tf.cast(self.forward(images), tf.float32)
      per_example = sigmoid_cross_entropy.per_example_cross_entropy(
          targets, logits, self.loss_type)
      if self.consistency_weight:
        reference = tf.stop_gradient(tf.cast(
            self.network(images, training=False), tf.float32))
        probs = (tf.sigmoid(reference) if self.loss_type == "sigmoid"
                 else tf.nn.softmax(reference))
        per_example += self.consistency_weight * (
            sigmoid_cross_entropy.per_example_cross_entropy(
                probs, logits, self.loss_type))
      loss = tf.reduce_mean(per_example)
      if self.network.losses:
        loss += tf.add_n([tf.cast(l, tf.float32)
                          for l in self.network.losses])
    gradients = tape.gradient(loss, self.trainable)
    self.optimizer.apply_gradients(zip(gradients, self.targets))
    return loss

  def step(self, images, label_ids) -> float:
    """One optimisation step; returns the loss (at the quantized weights)."""
    return float(self._step(images, label_ids))

  def quantize(self) -> None:
    """Sets the network's kernels to q(w) of their float copies."""
    self._quantize()

  def finish(self) -> None:
    """Leaves the network with q(w) of the trained float weights."""
    self._quantize()


# ------------------------------------------------------------ the run
def check_checkpoint(checkpoint_path: str) -> str:
  """The checkpoint prefix `checkpoint_path` names (a prefix or a model_dir).

  Raises:
    QuantizationAwareError: no such checkpoint.
  """
  if tf.io.gfile.isdir(checkpoint_path):
    latest = tf.train.latest_checkpoint(checkpoint_path)
    if not latest:
      raise QuantizationAwareError(
          f"checkpoint_path={checkpoint_path!r} is a directory without a "
          "checkpoint")
    return latest
  if not tf.io.gfile.exists(checkpoint_path + ".index"):
    raise QuantizationAwareError(
        f"checkpoint_path={checkpoint_path!r}: no checkpoint there "
        f"({checkpoint_path}.index not found)")
  return checkpoint_path


def evaluate_network(network: keras.Model, params: kc_config.ExperimentConfig,
                     hierarchy) -> Dict:
  """Eval-split top-1 / top-5 / mpvap of `network` (as `kc_keras.train --mode=eval`)."""
  source = factory.build_source(params.task.data)
  dataset = pipeline.build_dataset(
      source, "eval", params.task.data, training=False,
      global_batch_size=params.task.eval_batch_size)
  score = tf.function(lambda images, features: network(images,
                                                       training=False))
  metrics = evaluate_lib.evaluate_scores(
      score, dataset, hierarchy, steps=params.trainer.validation_steps)
  return {k: float(metrics[k]) for k in SUMMARY_METRICS if k in metrics}


def build_optimizer(params: kc_config.ExperimentConfig, steps: int,
                    learning_rate: float) -> keras.optimizers.Optimizer:
  """The run's optimizer (type, epsilon, clipping) at `learning_rate`, cosine to 0."""
  values = params.trainer.optimizer.as_dict()
  values.update(learning_rate=learning_rate, schedule="cosine",
                warmup_steps=0, final_learning_rate_ratio=0.0)
  return optimizers.build_optimizer(trainer_cfg.OptimizerConfig(**values),
                                    steps)


def _check_args(output_dir: str, steps: int, learning_rate: float,
                batch_size: Optional[int]) -> None:
  if not isinstance(steps, int) or steps < 1:
    raise QuantizationAwareError(f"steps must be an int >= 1, got {steps!r}")
  if not learning_rate > 0:
    raise QuantizationAwareError(
        f"learning_rate must be > 0, got {learning_rate!r}")
  if batch_size is not None and batch_size < 1:
    raise QuantizationAwareError(
        f"batch_size must be >= 1, got {batch_size!r}")
  if tf.io.gfile.exists(output_dir) and tf.io.gfile.listdir(output_dir):
    raise QuantizationAwareError(
        f"output_dir={output_dir!r} exists and is not empty; runs are never "
        "overwritten, pick a new directory")


def fine_tune(params: kc_config.ExperimentConfig, checkpoint_path: str,
              output_dir: str, steps: int, learning_rate: float = 1e-4,
              batch_size: Optional[int] = None, evaluate: bool = True,
              activations: str = "none",
              logit_floor: Optional[float] = None,
              representative_examples: int = 200,
              calibration_interval: int = 50,
              consistency_weight: float = 0.0,
              log: Callable[[str], None] = print,
              log_every: int = 50) -> FineTuneResult:
  """Fine-tunes a trained network on its int8 weight grid and writes a run dir.

  Restores the network exactly as the exporters do
  (`export_saved_model_lib.load_network`: only the checkpoint's
  `model.student` branch), trains `steps` steps of
  `QuantizationAwareTrainer` on the TRAINING split (the run's
  augmentation, hard labels, the run's loss type and optimizer type at
  `learning_rate` with a cosine decay to 0), snaps the kernels to the grid,
  and writes `output_dir` with `ckpt-<source step + steps>` (same variable
  layout: `export.export_saved_model` and `export.parity_benchmark` take it
  as is), `checkpoint`, `hierarchy.json`, `params.yaml` and
  `qat_summary.json` (eval metrics before and after, loss, what was
  snapped). The saved network is plain float: its kernels are int8 values
  times their scales, which the converter's own rounding reproduces.

  The directory is written as a hidden sibling and renamed when complete,
  so a failure never leaves a half-written run.

  Args:
    params: the experiment config the checkpoint was trained with.
    checkpoint_path: a `ckpt-N` prefix or a model_dir.
    output_dir: the new run directory (must not exist, or be empty).
    steps: optimisation steps (>= 1).
    learning_rate: the peak learning rate.
    batch_size: default `task.train_batch_size`.
    evaluate: compute eval metrics before and after (the summary has them).
    activations: `ActivationSimulator` mode of the training forward pass:
      'none' (weights only), 'dynamic' or 'int8'.
    logit_floor: 'int8' only: the floor the file will be exported with.
    representative_examples: 'int8' only: training images calibrating the
      ranges (`export_tflite_lib.training_images`, the converter's set).
    calibration_interval: 'int8' only: steps between recalibrations.
    consistency_weight: see `QuantizationAwareTrainer`.
    log: progress lines.
    log_every: steps between progress lines.

  Returns:
    A `FineTuneResult`.

  Raises:
    QuantizationAwareError: `steps < 1`, `learning_rate <= 0`, a bad batch
      size, an existing non-empty `output_dir`, a missing checkpoint, an
      unknown `activations` mode or a backbone it cannot simulate.
    export_saved_model_lib.ExportError: the checkpoint's run records
      another hierarchy than the config.
  """
  _check_args(output_dir, steps, learning_rate, batch_size)
  if calibration_interval < 1 or representative_examples < 1:
    raise QuantizationAwareError(
        f"calibration_interval={calibration_interval} and "
        f"representative_examples={representative_examples} must be >= 1")
  prefix = check_checkpoint(checkpoint_path)
  network, hierarchy, restored, _ = saved_model_lib.load_network(params,
                                                                 prefix)
  simulator = ActivationSimulator(network, activations, logit_floor)
  summary = dict(source_checkpoint=restored, steps=steps,
                 learning_rate=learning_rate, activations=activations,
                 consistency_weight=consistency_weight,
                 logit_floor=logit_floor,
                 batch_size=batch_size or params.task.train_batch_size,
                 snapped_kernels=[k.layer for k in quantized_kernels(network)],
                 float_kernels=unsnapped_kernels(network))
  if evaluate:
    summary["eval_before"] = evaluate_network(network, params, hierarchy)
    log(f"eval before: {summary['eval_before']}")
  trainer = QuantizationAwareTrainer(
      network, build_optimizer(params, steps, learning_rate),
      params.task.distillation.loss_type, forward=simulator,
      consistency_weight=consistency_weight)
  calibration = None
  if activations == "int8":
    calibration = np.concatenate(list(export_tflite_lib.training_images(
        params.task.data, representative_examples)))
  source = factory.build_source(params.task.data)
  dataset = pipeline.build_dataset(
      source, "train", params.task.data, training=True,
      global_batch_size=summary["batch_size"])
  losses = []
  for step, (images, features) in enumerate(dataset.take(steps), 1):
    if step == 1 and simulator.check_walk(images) > WALK_TOLERANCE:
      raise QuantizationAwareError(
          "the layer-by-layer forward of --activations differs from the "
          f"network by {simulator.check_walk(images)}: the network's call "
          "order changed; use activations='none'")
    if calibration is not None and (step - 1) % calibration_interval == 0:
      trainer.quantize()
      simulator.calibrate(calibration, params.task.eval_batch_size)
    losses.append(trainer.step(images, features["label_ids"]))
    if step % log_every == 0 or step == steps:
      log(f"step {step}/{steps}: loss {np.mean(losses[-log_every:]):.4f}")
  trainer.finish()
  summary["loss_first"] = losses[0]
  summary["loss_last"] = float(np.mean(losses[-log_every:]))
  if evaluate:
    summary["eval_after"] = evaluate_network(network, params, hierarchy)
    log(f"eval after: {summary['eval_after']}")
  step_number = _source_step(restored) + steps
  checkpoint = write_run_dir(network, params, hierarchy, output_dir,
                             step_number, summary)
  return FineTuneResult(output_dir=output_dir, checkpoint=checkpoint,
                        summary=summary)


def _source_step(prefix: str) -> int:
  suffix = prefix.rsplit("-", 1)[-1]
  return int(suffix) if suffix.isdigit() else 0


def write_run_dir(network: keras.Model, params: kc_config.ExperimentConfig,
                  hierarchy, output_dir: str, step: int, summary: Dict) -> str:
  """Writes the run directory atomically (a hidden sibling, then a rename).

  The checkpoint mirrors training's layout, `model/student/...`, so every
  reader of training checkpoints (`controller.restore_model_weights`)
  restores the network from it.

  Returns:
    The checkpoint prefix inside `output_dir`.
  """
  parent = os.path.dirname(os.path.abspath(output_dir))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(
      prefix=f".tmp-{os.path.basename(os.path.abspath(output_dir))}-",
      dir=parent)
  try:
    holder = tf.train.Checkpoint(model=tf.train.Checkpoint(student=network))
    manager = tf.train.CheckpointManager(holder, staging, max_to_keep=1,
                                         checkpoint_name=CHECKPOINT_NAME)
    manager.save(checkpoint_number=step)
    hierarchy.save(os.path.join(staging, saved_model_lib.HIERARCHY_FILE))
    modes.save_params(params, staging)
    files.atomic_write_json(os.path.join(staging, SUMMARY_FILE), summary)
    if tf.io.gfile.exists(output_dir):
      os.rmdir(output_dir)  # empty (checked): replaced by the rename.
    os.rename(staging, output_dir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return os.path.join(output_dir, f"{CHECKPOINT_NAME}-{step}")
