"""Self-paced per-vertical logit scaling: y_v = gamma_v * x_v / ||x_v||.

With `normalization='per_batch'` ||x_v|| is the batch's root mean square
norm in training and its moving average at inference.
"""

from typing import Optional, Sequence

import keras
from keras import ops
import numpy as np
import tensorflow as tf

from kc_keras.configs import model as model_config
from kc_keras.utils import class_maps

# One source of truth for the choices: the model config.
MODES = model_config.SELF_PACED_MODES
INITS = model_config.SELF_PACED_INITS
NORMALIZATIONS = model_config.SELF_PACED_NORMALIZATIONS


def _global_batch_mean(values):
  """mean over the global batch of `values` [b, M] -> [1, M].

  Under a multi-replica strategy each replica holds b of the global batch's
  images: the sums and counts are all-reduced (as synchronized BatchNorm
  does), so every replica divides by the same norm, the one a single device
  computes on the whole batch; gradients flow through the all-reduce.
  """
  total = ops.sum(values, axis=0, keepdims=True)
  count = ops.cast(ops.shape(values)[0], values.dtype)
  context = tf.distribute.get_replica_context()
  if context is not None and context.num_replicas_in_sync > 1:
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, total)
    count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
  return total / count


@keras.saving.register_keras_serializable(package="kc_keras")
class SelfPacedScale(keras.layers.Layer):
  """Per-vertical L2 normalisation of logits times a scale gamma.

  For each example and vertical v with logit sub-vector x_v (v's classes):
    y_v = gamma * x_v / sqrt(||x_v||^2 + epsilon)
  where gamma depends on `mode`:
    'none':     identity, y = x (no weights);
    'fixed':    gamma_v = sqrt(N_v), a constant (no weights);
    'vertical': one learned gamma_v per vertical (weight [M]);
    'class':    one learned gamma_c per class (weight [N]).
  Learned gammas start at N(mean, init_stddev) with mean sqrt(N_v(c)) for
  `init='sqrt_nv'` (the paper), `init_value` for `init='constant'`, or
  sqrt(N_v(c)) * |log(p / (1 - p))|, p = 1 / N, for `init='prior'` (ours):
  when the classifier's biases start at that prior logit, x_v starts near
  the constant vector log(p / (1 - p)) and y = x at initialisation, so the
  scaled network starts from the same loss as the unscaled one instead of
  from logits near -1 (a sigmoid of 0.27 on every class). Norms are computed
  in float32 as (x * x) @ onehot[N, M]: no loop over verticals.

  Since ||y_v|| = gamma_v, a vertical's logits can only reach magnitudes of
  about gamma_v / sqrt(N_v): with a sigmoid loss over all N classes, pushing
  the classes of the other verticals to "no" needs gamma_v to grow well past
  its sqrt(N_v) start. The paper had ~30M steps for that; a short schedule
  does not, so `learning_rate_multiplier` m stores gamma / m as the weight:
  an optimizer step then moves gamma m times as far (our choice, m = 1 is
  the paper).

  `normalization='per_batch'` (ours) divides by one norm per vertical for
  the whole batch instead of each image's own:
    training:  n_v^2 = mean_b ||x_bv||^2 over the global batch (all
               replicas; gradients flow through it, as through synchronized
               BatchNorm's batch statistics), and
               moving_squared_norm_v <- momentum * moving + (1 - momentum) n_v^2;
    inference: n_v^2 = moving_squared_norm_v, so y = x * k_c, a constant
               k_c = gamma_c / sqrt(moving_squared_norm_v(c) + epsilon).
  A per-image norm makes ||y_v|| = gamma_v on every image, so a vertical's
  block can no longer say "not my vertical" with its size: a student
  without the scale gives other verticals' images a block 1.7-2.4 times
  the norm of its own images' (docs/RESULTS.md, "Self-paced scaling").
  The per-batch norm keeps each image's norm relative to the batch and
  still gives each vertical its own learned scale and pace. The moving
  statistic starts at the init's gamma_v^2, so that y = x at
  initialisation when ||x_v|| has the init's norm (the 'prior' init).

  Args:
    class_to_vertical: sequence of N ints, the vertical of each class.
    mode: one of 'none', 'fixed', 'vertical', 'class'.
    init: 'sqrt_nv' or 'constant' (learned modes only).
    init_value: mean of the 'constant' initialisation.
    init_stddev: stddev of the initialisation noise.
    epsilon: added to the squared norm so a zero vector maps to zero.
    seed: optional int seed of the initialisation noise.
    learning_rate_multiplier: m > 0; the weight holds gamma / m.
    normalization: 'per_image' (the paper) or 'per_batch'.
    momentum: of the moving squared norm ('per_batch').
    **kwargs: base Layer arguments (name defaults to 'self_paced_scale').

  Raises:
    ValueError: for an unknown mode, init or normalization, a negative
      stddev, a non-positive epsilon or a momentum outside [0, 1).

  Reference:
    Gao et al., "Knowledge Concentration", arXiv:1711.07607, section 3.3.
  """

  def __init__(
      self,
      class_to_vertical: Sequence[int],
      mode: str = "vertical",
      init: str = "sqrt_nv",
      init_value: float = 10.0,
      init_stddev: float = 1e-3,
      epsilon: float = 1e-12,
      seed: Optional[int] = None,
      learning_rate_multiplier: float = 1.0,
      normalization: str = "per_image",
      momentum: float = 0.99,
      **kwargs,
  ):
    kwargs.setdefault("name", "self_paced_scale")
    super().__init__(**kwargs)
    if mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if init not in INITS:
      raise ValueError(f"init must be one of {INITS}, got {init!r}.")
    if normalization not in NORMALIZATIONS:
      raise ValueError(f"normalization must be one of {NORMALIZATIONS}, "
                       f"got {normalization!r}.")
    if not 0.0 <= momentum < 1.0:
      raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
    if init_stddev < 0:
      raise ValueError(f"init_stddev must be >= 0, got {init_stddev}.")
    if epsilon <= 0:
      raise ValueError(f"epsilon must be > 0, got {epsilon}.")
    if learning_rate_multiplier <= 0:
      raise ValueError(
          f"learning_rate_multiplier must be > 0, got {learning_rate_multiplier}.")
    self.learning_rate_multiplier = float(learning_rate_multiplier)
    c2v = class_maps.validate_class_to_vertical(class_to_vertical)
    self.class_to_vertical = [int(v) for v in c2v]
    self.num_classes = c2v.size
    self.num_verticals = int(c2v.max()) + 1
    self.mode = mode
    self.init = init
    self.init_value = float(init_value)
    self.init_stddev = float(init_stddev)
    self.epsilon = float(epsilon)
    self.normalization = normalization
    self.momentum = float(momentum)
    self.seed = seed
    self._c2v = c2v.astype(np.int32)
    sizes = np.bincount(c2v, minlength=self.num_verticals)
    self._sqrt_sizes = np.sqrt(sizes).astype(np.float32)
    self._one_hot = np.eye(self.num_verticals, dtype=np.float32)[c2v]

  def _initial_vertical_mean(self) -> np.ndarray:
    """The init's mean gamma per vertical [M]."""
    mean = self._initial_mean()
    if mean.size == self.num_verticals:
      return mean
    return (self._one_hot.T @ mean) / self._sqrt_sizes**2

  def _initial_mean(self) -> np.ndarray:
    if self.init == "constant":
      size = self.num_verticals if self.mode == "vertical" else self.num_classes
      return np.full((size,), self.init_value, np.float32)
    per_vertical = self._sqrt_sizes
    if self.init == "prior" and self.num_classes > 1:
      prior = 1.0 / self.num_classes
      per_vertical = per_vertical * np.float32(abs(np.log(prior / (1.0 - prior))))
    if self.mode == "vertical":
      return per_vertical
    return per_vertical[self._c2v]

  def build(self, input_shape):
    if input_shape[-1] != self.num_classes:
      raise ValueError(
          f"{self.name}: input must be [B, N={self.num_classes}], got "
          f"{input_shape}."
      )
    self.gamma = None
    self.moving_squared_norm = None
    if self.mode != "none" and self.normalization == "per_batch":
      # Starts at sqrt(N_v)^2 * (the init's gamma_v / sqrt(N_v))^2, so that
      # y = x at initialisation when x_v has the init's norm.
      start = (self._sqrt_sizes**2 if self.mode == "fixed"
               else self._initial_vertical_mean()**2)
      self.moving_squared_norm = self.add_weight(
          name="moving_squared_norm", shape=start.shape,
          initializer=keras.initializers.Constant(start), trainable=False,
          autocast=False, dtype="float32")
    if self.mode not in ("vertical", "class"):
      return
    mean = self._initial_mean()
    noise = keras.initializers.RandomNormal(
        mean=0.0, stddev=self.init_stddev, seed=self.seed
    )

    multiplier = self.learning_rate_multiplier

    def initializer(shape, dtype=None):
      return (ops.convert_to_tensor(mean, dtype) + noise(shape, dtype)) / multiplier

    # Keras' default synchronization/aggregation, as for any Dense kernel: a
    # MirroredStrategy mirrors gamma and the optimizer applies the all-reduced
    # gradient, so replicas stay in sync.
    self.gamma = self.add_weight(
        name="gamma",
        shape=mean.shape,
        initializer=initializer,
        dtype="float32",
        trainable=True,
    )

  def scale_values(self):
    """gamma as used in the formula ([M] or [N]), or None without weights."""
    if self.gamma is None:
      return None
    return ops.cast(self.gamma, "float32") * self.learning_rate_multiplier

  def call(self, inputs, training=None):
    if self.mode == "none":
      return inputs
    # Norms in float32 even under mixed precision: squared logits overflow
    # float16 quickly.
    x = ops.cast(inputs, "float32")
    sq_norms = ops.matmul(ops.square(x), self._one_hot)
    if self.normalization == "per_batch":
      if training:
        sq_norms = _global_batch_mean(sq_norms)
        self.moving_squared_norm.assign(
            self.momentum * self.moving_squared_norm
            + (1.0 - self.momentum) * ops.stop_gradient(sq_norms[0]))
      else:
        sq_norms = self.moving_squared_norm[None, :]
    inv_norm = ops.rsqrt(sq_norms + self.epsilon)
    if self.mode == "class":
      scale = ops.take(inv_norm, self._c2v, axis=1) * self.scale_values()
    else:
      # Scale per vertical [B, M] before expanding to classes, so the
      # gradient of gamma_v is dense (no N-row IndexedSlices for M weights).
      gamma = (self._sqrt_sizes if self.mode == "fixed"
               else self.scale_values())
      scale = ops.take(inv_norm * gamma, self._c2v, axis=1)
    outputs = x * scale
    return ops.cast(outputs, self.compute_dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update({
        "class_to_vertical": list(self.class_to_vertical),
        "mode": self.mode,
        "init": self.init,
        "init_value": self.init_value,
        "init_stddev": self.init_stddev,
        "epsilon": self.epsilon,
        "seed": self.seed,
        "learning_rate_multiplier": self.learning_rate_multiplier,
        "normalization": self.normalization,
        "momentum": self.momentum,
    })
    return config
