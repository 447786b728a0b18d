"""QuantizationAwareModel: a network's straight-through int8 fine-tuning as a Keras `train_step`."""

from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from kc_keras.dataloaders import labels as labels_lib
from kc_keras.losses import sigmoid_cross_entropy
from kc_keras.quantization import activation_simulator as simulator_lib
from kc_keras.quantization import errors
from kc_keras.quantization import kernels as kernels_lib


class _Untracked:
  """Holds a value out of Keras' and the checkpoint's tracking."""

  def __init__(self, value):
    self.value = value


class QuantizationAwareModel(keras.Model):
  """Straight-through fine-tuning on the int8 weight grid, run by `TrainController`.

  The network is the attribute `student`, so a checkpoint of this model has
  training's layout (`model/student/...`) and every reader of training
  checkpoints (`restore.load_network`) restores the network from it; the
  float copies of the quantized kernels (`shadows`) and the calibrated
  activation ranges (`checkpoint_items`) and the optimizer sit beside it,
  so an interrupted run resumes exactly.

  Each step computes the loss of the network as it runs in inference mode
  (BatchNorm on its moving statistics, which the converter folds; no
  dropout) at the quantized weights q(w), and applies the gradient taken at
  q(w) to the float copies w (the straight-through estimator: dq/dw := 1);
  the other trainable weights (biases, BN gamma/beta, self-paced scales)
  train as usual. Then every `kernels.quantized_kernels` weight of the
  network is set to q(w) of its float copy (`QuantizedKernel.quantize`),
  so the network always holds the weights its TFLite file will. BN's
  per-channel multiplier leaves a folded kernel on its grid, so freezing
  the statistics is what makes q(w) the converter's weights.

  loss = mean_i [CE(z_i, f_q(x_i)) + c * CE(p(f(x_i)), f_q(x_i))]
         + sum(student.losses),
  z the multi-hot labels, CE the run's `loss_type` (sigmoid or softmax),
  f_q the network in inference mode at the quantized weights, or
  `simulator` (an `ActivationSimulator`: the activations rounded as well);
  the optional consistency term (weight c = `consistency_weight`) pulls
  f_q towards the network's own probabilities p(f) (sigmoid or softmax of
  f at the quantized weights without activation rounding, no gradient
  through the target), which is what top-1 agreement between the float
  model and its TFLite file measures. With int8 activations the ranges are
  recalibrated on `calibration_images` before every `calibration_interval`
  steps (the first included), inside the step.

  Args:
    student: the trained network (modified in place).
    loss_type: 'sigmoid' or 'softmax'.
    weight_target: the file whose grid the weights train on
      (`kernels.WEIGHT_TARGETS`).
    simulator: the forward pass with activation rounding (None: the
      network alone).
    consistency_weight: c >= 0 (0: labels only).
    calibration_images: float32 `[E, H, W, C]`, needed by an int8
      simulator.
    calibration_interval: steps between recalibrations.
    calibration_batch_size: images per calibration forward pass.
    **kwargs: keras.Model arguments.

  Raises:
    QuantizationError: a negative `consistency_weight`, an unknown
      `weight_target`, an int8 simulator without calibration images, or a
      `calibration_interval` below 1.
  """

  def __init__(self, student: keras.Model, loss_type: str = "sigmoid",
               weight_target: str = "dynamic",
               simulator: Optional[simulator_lib.ActivationSimulator] = None,
               consistency_weight: float = 0.0,
               calibration_images: Optional[np.ndarray] = None,
               calibration_interval: int = 50,
               calibration_batch_size: int = 64, **kwargs):
    kwargs.setdefault("name", "kc_quantization_aware")
    super().__init__(**kwargs)
    if not consistency_weight >= 0:
      raise errors.QuantizationError(
          f"consistency_weight must be >= 0, got {consistency_weight!r}")
    if calibration_interval < 1:
      raise errors.QuantizationError(
          f"calibration_interval must be >= 1, got {calibration_interval!r}")
    self.recalibrates = simulator is not None and simulator.mode == "int8"
    if self.recalibrates and calibration_images is None:
      raise errors.QuantizationError(
          "int8 activations need calibration_images")
    self.student = student
    self.loss_type = loss_type
    self.consistency_weight = float(consistency_weight)
    self.num_classes = int(student.output.shape[-1])
    self.calibration_interval = int(calibration_interval)
    self.calibration_batch_size = int(calibration_batch_size)
    self._simulator = _Untracked(simulator)
    self._calibration_images = _Untracked(
        None if calibration_images is None
        else tf.constant(calibration_images, tf.float32))
    self._kernels = _Untracked(
        kernels_lib.quantized_kernels(student, weight_target))
    self.shadows = [
        keras.Variable(k.variable.numpy(), trainable=True,
                       name=f"{k.layer}_float_{k.variable.name}")
        for k in self._kernels.value]
    self.activation_ranges = (simulator.variables() if simulator is not None
                              else [])
    shadow_of = {id(k.variable): s for k, s in zip(self._kernels.value,
                                                   self.shadows)}
    trained = list(student.trainable_variables)
    self._trained = _Untracked(trained)
    self._targets = _Untracked([shadow_of.get(id(v), v) for v in trained])
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.snap_kernels()

  @property
  def kernels(self):
    """The `QuantizedKernel`s, in the order of `shadows`."""
    return list(self._kernels.value)

  @property
  def optimizer_variables(self):
    """What the optimizer updates: the float copies in place of the quantized kernels."""
    return list(self._targets.value)

  def checkpoint_items(self) -> dict:
    """What a checkpoint holds beside the model: `{'quantization': ...}`.

    The float copies and the calibrated ranges, so a resumed run continues
    exactly (Keras keeps plain lists of variables out of a TensorFlow
    checkpoint of the model).
    """
    return {"quantization": tf.train.Checkpoint(
        shadows=list(self.shadows),
        activation_ranges=list(self.activation_ranges))}

  @property
  def metrics(self):
    return [self.loss_tracker]

  def call(self, inputs, training=None):
    del training  # The network always runs in inference mode.
    return self.student(inputs, training=False)

  def snap_kernels(self) -> None:
    """Sets the network's kernels to q(w) of their float copies."""
    for kernel, shadow in zip(self._kernels.value, self.shadows):
      kernel.variable.assign(kernel.quantize(shadow))

  def _forward(self, images):
    simulator = self._simulator.value
    if simulator is None:
      return self.student(images, training=False)
    return simulator(images)

  def _recalibrate(self):
    """Recalibrates the int8 ranges when the step count is a multiple of the interval."""
    if not self.recalibrates:
      return

    def calibrate():
      self._simulator.value.calibrate(self._calibration_images.value,
                                      self.calibration_batch_size)
      return tf.constant(True)

    tf.cond(self.optimizer.iterations % self.calibration_interval == 0,
            calibrate, lambda: tf.constant(False))

  def train_step(self, data):
    """One straight-through step (works inside `strategy.run`).

    Args:
      data: (images, features) with features['label_ids'].

    Returns:
      {'loss': the running mean of the loss at the quantized weights}.
    """
    images, features = data
    self._recalibrate()
    targets = labels_lib.multi_hot(features["label_ids"], self.num_classes)
    with tf.GradientTape() as tape:
      logits = tf.cast(self._forward(images), tf.float32)
      per_example = sigmoid_cross_entropy.per_example_cross_entropy(
          targets, logits, self.loss_type)
      if self.consistency_weight:
        reference = tf.stop_gradient(tf.cast(
            self.student(images, training=False), tf.float32))
        probs = (tf.sigmoid(reference) if self.loss_type == "sigmoid"
                 else tf.nn.softmax(reference))
        per_example += self.consistency_weight * (
            sigmoid_cross_entropy.per_example_cross_entropy(
                probs, logits, self.loss_type))
      loss = tf.nn.compute_average_loss(per_example)
      if self.student.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(
            [tf.cast(l, tf.float32) for l in self.student.losses]))
      scaled_loss = self.optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled_loss, self._trained.value)
    self.optimizer.apply_gradients(zip(gradients, self._targets.value))
    self.snap_kernels()
    self.loss_tracker.update_state(loss)
    return {m.name: m.result() for m in self.metrics}
