"""KnowledgeConcentrationModel: a student trained on teachers' soft targets."""

import keras
import numpy as np
import tensorflow as tf

from kc_keras.distillation import soft_targets as soft_targets_lib
from kc_keras.losses import sigmoid_cross_entropy
from kc_keras.utils import class_maps

TARGET_SOURCES = ("labels", "online", "cache")


@keras.saving.register_keras_serializable(package="kc_keras")
class KnowledgeConcentrationModel(keras.Model):
  """Wraps a student and trains it with Knowledge Concentration distillation.

  Per example i, with z* the dense top-K soft targets of the teacher(s) of
  its labelled vertical(s) and z its multi-hot hard labels:

    l_i = alpha * CE(z*_i, x_i) + (1 - alpha) * CE(z_i, x_i)
    loss = sum_i l_i / global_batch_size + sum(model.losses) / replicas

  For the sigmoid CE (linear in the target) this equals CE of the blended
  target alpha z* + (1 - alpha) z; for the softmax CE it is the blend of the
  two CE terms, each against its own renormalised target. alpha = 1 is the
  paper (Gao et al. 2017, arXiv:1711.07607); alpha = 0 with
  target_source='labels' trains a generalist or a specialist.

  `call()` is the student. The teacher bank is held untracked, so neither
  `weights`, a checkpoint nor a `.keras` file contains teacher variables (and
  `get_config` does not serialise it: set `teacher_bank` again after loading
  to resume online distillation).

  Args:
    student: keras.Model, images -> logits [B, N].
    class_to_vertical: int sequence [N].
    alpha: soft-target weight in [0, 1].
    loss_type: 'sigmoid' or 'softmax' (see SigmoidCrossEntropy).
    top_k: K; the soft targets carry T*K entries.
    target_source: 'labels' (hard labels only, needs alpha == 0), 'online'
      (teacher_bank on the same augmented images) or 'cache'
      (features['target_ids'] / ['target_probs'] from the input pipeline).
    teacher_bank: optional TeacherBank (required to train with 'online').
    global_batch_size: the batch size over all replicas for the loss
      reduction; None means per-replica batch * replicas in sync.
    **kwargs: keras.Model arguments (name, ...).

  Raises:
    ValueError: on bad arguments (each names the offending value).

  Example:
    >>> model = KnowledgeConcentrationModel(student, c2v, alpha=1.0,
    ...     target_source='online', teacher_bank=bank, top_k=100)
    >>> model.compile(optimizer=keras.optimizers.SGD(0.01))
    >>> model.fit(dataset_of_images_and_features)
  """

  def __init__(self,
               student,
               class_to_vertical,
               alpha=1.0,
               loss_type="sigmoid",
               top_k=100,
               target_source="labels",
               teacher_bank=None,
               global_batch_size=None,
               **kwargs):
    super().__init__(**kwargs)
    c2v = class_maps.validate_class_to_vertical(class_to_vertical)
    if not 0.0 <= float(alpha) <= 1.0:
      raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    if loss_type not in sigmoid_cross_entropy.LOSS_TYPES:
      raise ValueError(
          f"loss_type must be one of {sigmoid_cross_entropy.LOSS_TYPES}, got "
          f"{loss_type!r}.")
    if not isinstance(top_k, int) or top_k < 1:
      raise ValueError(f"top_k must be an int >= 1, got {top_k!r}.")
    if target_source not in TARGET_SOURCES:
      raise ValueError(
          f"target_source must be one of {TARGET_SOURCES}, got "
          f"{target_source!r}.")
    if target_source == "labels" and float(alpha) != 0.0:
      raise ValueError(
          f"alpha={alpha} needs soft targets but target_source='labels' has "
          "none; use alpha=0.0 or target_source 'online'/'cache'.")
    if global_batch_size is not None and (
        not isinstance(global_batch_size, int) or global_batch_size < 1):
      raise ValueError(
          f"global_batch_size must be None or an int >= 1, got "
          f"{global_batch_size!r}.")
    self.student = student
    self.class_to_vertical = [int(v) for v in c2v]
    self.num_classes = int(c2v.size)
    self.alpha = float(alpha)
    self.loss_type = loss_type
    self.top_k = top_k
    self.target_source = target_source
    self.global_batch_size = global_batch_size
    if target_source == "online":
      # The bank routes with tf.dynamic_partition (data-dependent shapes),
      # which XLA cannot compile; keeps compile(jit_compile='auto') off XLA.
      self.supports_jit = False
    self._bank_holder = _Untracked()
    self.teacher_bank = teacher_bank
    self.cross_entropy = sigmoid_cross_entropy.SigmoidCrossEntropy(loss_type)
    self.loss_tracker = keras.metrics.Mean(name="loss")
    self.soft_target_loss_tracker = keras.metrics.Mean(name="soft_target_loss")
    self.hard_label_loss_tracker = keras.metrics.Mean(name="hard_label_loss")
    self.top1_tracker = keras.metrics.Mean(name="top1_accuracy")

  @property
  def teacher_bank(self):
    """The TeacherBank used by target_source='online' (not tracked)."""
    return self._bank_holder.value

  @teacher_bank.setter
  def teacher_bank(self, bank):
    if bank is not None:
      if bank.top_k != self.top_k:
        raise ValueError(
            f"teacher_bank.top_k={bank.top_k} differs from top_k={self.top_k}.")
      if not np.array_equal(bank.class_to_vertical, self.class_to_vertical):
        raise ValueError(
            "teacher_bank.class_to_vertical differs from the model's.")
    self._bank_holder.value = bank

  @property
  def metrics(self):
    return [self.loss_tracker, self.soft_target_loss_tracker,
            self.hard_label_loss_tracker, self.top1_tracker]

  def call(self, inputs, training=None):
    return self.student(inputs, training=training)

  def _targets(self, images, features):
    """Padded soft targets (ids, probs) [B, T*K] for this batch."""
    if self.target_source == "cache":
      for key in ("target_ids", "target_probs"):
        if key not in features:
          raise ValueError(
              f"target_source='cache' needs features[{key!r}]; got keys "
              f"{sorted(features)}.")
      return features["target_ids"], features["target_probs"]
    if self.teacher_bank is None:
      raise ValueError(
          "target_source='online' needs a teacher_bank; set "
          "model.teacher_bank = TeacherBank(...) (it is not saved with the "
          "model).")
    return self.teacher_bank.soft_targets(images, features["label_ids"])

  def _unpack(self, data):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
      raise ValueError(
          "Expected data = (images, features) with features['label_ids'].")
    images, features = data
    if "label_ids" not in features:
      raise ValueError(
          f"features must contain 'label_ids'; got keys {sorted(features)}.")
    return images, features

  def _top1(self, logits, hard):
    """1.0 where the argmax class is one of the labels, float32 [B]."""
    best = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.gather(hard, best, axis=1, batch_dims=1)

  def _regularization(self):
    if not self.losses:
      return tf.constant(0.0, tf.float32)
    return tf.add_n([tf.cast(l, tf.float32) for l in self.losses])

  def train_step(self, data):
    """One optimisation step (works in `fit` and inside `strategy.run`).

    Args:
      data: (images, features); features['label_ids'] int [B, L], plus
        'target_ids'/'target_probs' [B, T*K] for target_source='cache'.

    Returns:
      dict of tracker results: loss, soft_target_loss, hard_label_loss,
      top1_accuracy.
    """
    images, features = self._unpack(data)
    hard = soft_targets_lib.multi_hot(features["label_ids"], self.num_classes)
    soft = None
    if self.alpha > 0.0:
      ids, probs = self._targets(images, features)
      soft = tf.stop_gradient(soft_targets_lib.dense_soft_targets(
          ids, probs, self.num_classes))
    with tf.GradientTape() as tape:
      # Loss in float32 even when the student computes in float16.
      logits = tf.cast(self(images, training=True), tf.float32)
      if soft is None:
        hard_loss = self.cross_entropy(hard, logits)
        soft_loss = tf.zeros_like(hard_loss)
        per_example = hard_loss
      else:
        # One call: the sigmoid loss's target-free part is shared.
        hard_loss, soft_loss = (
            sigmoid_cross_entropy.per_example_cross_entropies(
                [hard, soft], logits, self.loss_type))
        # alpha = 1 (the paper) keeps the hard loss out of the gradient: a
        # 0 * hard_loss term would still run its [B, N] backward pass.
        per_example = (soft_loss if self.alpha == 1.0 else
                       self.alpha * soft_loss + (1.0 - self.alpha) * hard_loss)
      regularization = self._regularization()
      loss = tf.nn.compute_average_loss(
          per_example, global_batch_size=self.global_batch_size)
      loss += tf.nn.scale_regularization_loss(regularization)
      scaled_loss = self.optimizer.scale_loss(loss)
    trainable = self.trainable_weights
    gradients = tape.gradient(scaled_loss, trainable)
    self.optimizer.apply_gradients(zip(gradients, trainable))

    self.loss_tracker.update_state(per_example + regularization)
    if soft is not None:
      self.soft_target_loss_tracker.update_state(soft_loss)
    self.hard_label_loss_tracker.update_state(hard_loss)
    self.top1_tracker.update_state(self._top1(logits, hard))
    return {m.name: m.result() for m in self.metrics}

  def test_step(self, data):
    """Hard-label loss and top-1 (soft targets are not used in evaluation).

    Args:
      data: (images, features) with features['label_ids'].

    Returns:
      dict: loss (hard-label loss + regularisation), hard_label_loss,
      top1_accuracy.
    """
    images, features = self._unpack(data)
    hard = soft_targets_lib.multi_hot(features["label_ids"], self.num_classes)
    logits = tf.cast(self(images, training=False), tf.float32)
    hard_loss = self.cross_entropy(hard, logits)
    self.loss_tracker.update_state(hard_loss + self._regularization())
    self.hard_label_loss_tracker.update_state(hard_loss)
    self.top1_tracker.update_state(self._top1(logits, hard))
    return {m.name: m.result() for m in (self.loss_tracker,
                                         self.hard_label_loss_tracker,
                                         self.top1_tracker)}

  def get_config(self):
    config = super().get_config()
    config.update({
        "student": keras.saving.serialize_keras_object(self.student),
        "class_to_vertical": list(self.class_to_vertical),
        "alpha": self.alpha,
        "loss_type": self.loss_type,
        "top_k": self.top_k,
        "target_source": self.target_source,
        "global_batch_size": self.global_batch_size,
    })
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["student"] = keras.saving.deserialize_keras_object(
        config["student"])
    return cls(**config)


class _Untracked:
  """A plain holder: Keras/TF tracking does not look inside it."""

  __slots__ = ("value",)

  def __init__(self):
    self.value = None
