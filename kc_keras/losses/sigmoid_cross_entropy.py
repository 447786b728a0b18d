"""Per-example multi-label sigmoid (or softmax) cross-entropy."""

import keras
import tensorflow as tf

LOSS_TYPES = ("sigmoid", "softmax")


@keras.saving.register_keras_serializable(package="kc_keras")
class SigmoidCrossEntropy(keras.losses.Loss):
  """Cross-entropy between dense targets `z` [B, N] and logits `x` [B, N].

  `loss_type='sigmoid'` (the paper's loss, Gao et al. 2017, "Knowledge
  Concentration: Learning 100K Object Classifiers in a Single CNN",
  arXiv:1711.07607, section 3.1) treats every class as an independent binary
  problem, so hierarchical multi-labels and soft targets are both valid:

    l_i = -sum_j [ z_ij log s(x_ij) + (1 - z_ij) log(1 - s(x_ij)) ]
        =  sum_j [ max(x_ij, 0) - x_ij z_ij + log(1 + exp(-|x_ij|)) ]

  (the second, numerically stable form is what is computed). It is linear in
  `z`, so the loss of a blended target equals the blend of the losses.

  `loss_type='softmax'` is the single-label alternative:

    l_i = -sum_j q_ij log softmax(x_i)_j,   q_ij = z_ij / sum_j z_ij

  i.e. the target row is renormalised to a distribution first; a row whose
  targets are all zero has q = 0 and contributes a loss of 0.

  Targets and logits are cast to float32 before the loss (mixed precision
  students emit float16 logits, whose log-sum-exp would lose precision at
  100K classes). With the default `reduction=None` the call returns the
  per-example loss [B]; reduce it over the GLOBAL batch with
  `tf.nn.compute_average_loss(per_example, global_batch_size=...)`.

  Args:
    loss_type: 'sigmoid' or 'softmax'.
    name: loss name.
    reduction: Keras reduction; keep None to get per-example values.
    dtype: computation dtype; must be float32 (kept as an argument so the
      Keras base class can round-trip it).

  Raises:
    ValueError: on an unknown `loss_type` or a non-float32 dtype.

  Example:
    >>> loss = SigmoidCrossEntropy('sigmoid')
    >>> per_example = loss(targets, logits)   # [B]
  """

  def __init__(self,
               loss_type="sigmoid",
               name="sigmoid_cross_entropy",
               reduction=None,
               dtype="float32"):
    if loss_type not in LOSS_TYPES:
      raise ValueError(
          f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}.")
    if dtype not in ("float32", None):
      raise ValueError(
          f"SigmoidCrossEntropy computes in float32; got dtype={dtype!r}.")
    super().__init__(name=name, reduction=reduction, dtype="float32")
    self.loss_type = loss_type

  def call(self, y_true, y_pred):
    """Returns the per-example loss [B] (see the class docstring).

    Args:
      y_true: dense targets [B, N] in [0, 1].
      y_pred: logits [B, N].

    Returns:
      float32 [B].
    """
    return per_example_cross_entropy(y_true, y_pred, self.loss_type)

  def get_config(self):
    config = super().get_config()
    config.update({"loss_type": self.loss_type})
    return config


def per_example_cross_entropy(targets, logits, loss_type="sigmoid"):
  """Per-example cross-entropy in float32; the function form of the loss.

  Args:
    targets: dense targets [B, N].
    logits: logits [B, N], any float dtype.
    loss_type: 'sigmoid' (sum over classes of the binary CE) or 'softmax'
      (CE against the renormalised target row).

  Returns:
    float32 [B].

  Raises:
    ValueError: on an unknown `loss_type` or mismatched static shapes.
  """
  return per_example_cross_entropies([targets], logits, loss_type)[0]


def per_example_cross_entropies(targets_list, logits, loss_type="sigmoid"):
  """The per-example cross-entropy of one logit row against several targets.

  For 'sigmoid' the target-free part F (`sigmoid_target_free_term`) is
  computed once: l(z) = F(x) - x . z for each target z.

  Args:
    targets_list: dense targets, each [B, N].
    logits: logits [B, N], any float dtype.
    loss_type: as in `per_example_cross_entropy`.

  Returns:
    A list of float32 [B], one per target.

  Raises:
    ValueError: on an unknown `loss_type` or mismatched static shapes.
  """
  if loss_type not in LOSS_TYPES:
    raise ValueError(
        f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}.")
  logits = tf.cast(logits, tf.float32)
  targets_list = [tf.cast(t, tf.float32) for t in targets_list]
  for targets in targets_list:
    if not targets.shape.is_compatible_with(logits.shape):
      raise ValueError(
          f"targets shape {targets.shape} does not match logits shape "
          f"{logits.shape}.")
  if loss_type == "sigmoid":
    free = sigmoid_target_free_term(logits)
    return [free - tf.reduce_sum(logits * targets, axis=-1)
            for targets in targets_list]
  losses = []
  for targets in targets_list:
    row_sum = tf.reduce_sum(targets, axis=-1, keepdims=True)
    normalised = tf.math.divide_no_nan(targets, row_sum)
    losses.append(tf.nn.softmax_cross_entropy_with_logits(
        labels=normalised, logits=logits))
  return losses


def sigmoid_target_free_term(logits):
  """The part of the sigmoid cross-entropy that does not depend on the target.

    l_i(z) = F_i - sum_j x_ij z_ij,   F_i = sum_j [max(x_ij, 0) + log(1 + exp(-|x_ij|))]

  F holds every transcendental op of the loss; the rest is linear in z. A
  student that scores one logit row against two targets (soft and hard)
  computes F once and two cheap products, instead of two full losses over
  the N classes.

  Args:
    logits: [B, N], any float dtype.

  Returns:
    float32 [B].
  """
  logits = tf.cast(logits, tf.float32)
  # Both pieces switch on x >= 0, as tf.nn.sigmoid_cross_entropy_with_logits
  # does: relu and abs would each have gradient 0 at x = 0, so dF/dx would be
  # 0 there instead of s(0) = 1/2.
  positive = logits >= 0.0
  relu = tf.where(positive, logits, tf.zeros_like(logits))
  neg_abs = tf.where(positive, -logits, logits)
  return tf.reduce_sum(relu + tf.math.log1p(tf.exp(neg_abs)), axis=-1)
