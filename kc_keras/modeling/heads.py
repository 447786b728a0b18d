"""Classification heads: FC-FC baseline and structurally connected variants."""

import math
from typing import Optional, Sequence

import keras
import numpy as np

from kc_keras.configs import model as model_config
from kc_keras.modeling.layers import structurally_connected
from kc_keras.utils import class_maps


def expected_head_params(
    head_type: str,
    feature_dim: int,
    s1: int,
    s2: int,
    num_classes: int,
    num_verticals: int,
    shared_units: int = 0,
) -> int:
  """Head kernel parameter count (bias omitted), METHOD.md section 2.

  With s_b = feature_dim, N = num_classes, M = num_verticals, x = shared_units:
    fc_fc:        s_b*s1 + s1*s2 + s2*N
    fc_sc (x=0):  s_b*s1 + M*s1*s2 + s2*N
    sc_sc:        s_b*s1*M + M*s1*s2 + s2*N
    fc_sc (x>0):  s_b*s1 + s1*x + M*s1*(s2 - x) + s2*N

  Args:
    head_type: one of 'fc_fc', 'fc_sc', 'sc_sc'.
    feature_dim: s_b, the backbone feature size.
    s1: units of the first hidden layer (per vertical for 'sc_sc').
    s2: units of the second hidden layer (per vertical for SC heads).
    num_classes: N.
    num_verticals: M.
    shared_units: x, shared units of the 'fc_sc' SC layer.

  Returns:
    The number of kernel weights.

  Raises:
    ValueError: for an unknown head type or shared units outside [0, s2] (or
      non-zero for a head other than 'fc_sc').
  """
  model_config.check_head_args(head_type, s1, s2, shared_units)
  sb, n, m, x = feature_dim, num_classes, num_verticals, shared_units
  if head_type == "fc_fc":
    return sb * s1 + s1 * s2 + s2 * n
  if head_type == "sc_sc":
    return sb * s1 * m + m * s1 * s2 + s2 * n
  return sb * s1 + s1 * x + m * s1 * (s2 - x) + s2 * n


def kernel_param_count(layer: keras.layers.Layer) -> int:
  """Counts the weights of `layer` whose name contains 'kernel' (no biases).

  Args:
    layer: a built Keras layer or model.

  Returns:
    The total number of kernel entries.
  """
  return int(
      sum(np.prod(w.shape) for w in layer.weights if "kernel" in w.name)
  )


@keras.saving.register_keras_serializable(package="kc_keras")
class ClassificationHead(keras.layers.Layer):
  """Maps backbone features [B, s_b] to class logits [B, N].

  head_type:
    'fc_fc': Dense(s1) -> Dense(s2) -> Dense(N)  (the paper's baseline);
    'fc_sc': Dense(s1) -> VerticalBlockDense(M x s2, x shared) -> SC classifier;
    'sc_sc': VerticalBlockDense(M x s1) -> VerticalBlockDense(M x s2) -> SC.
  Hidden layers use `activation`, then dropout if `dropout` > 0. Kernel
  count (bias omitted) equals `expected_head_params`.

  Args:
    class_to_vertical: sequence of N ints, the vertical of each class.
    head_type: one of 'fc_fc', 'fc_sc', 'sc_sc'.
    s1: first hidden layer units (per vertical for 'sc_sc').
    s2: second hidden layer units (per vertical for SC heads).
    shared_units: x, units of the 'fc_sc' SC layer shared by all verticals.
    activation: activation of the hidden layers.
    dropout: dropout rate after each hidden layer.
    chunk_size: SC classifier chunk size, None for automatic.
    kernel_initializer: initializer of every kernel.
    classifier_bias_init: 'zeros', or 'prior': every class logit starts at
      b = log(p / (1 - p)) with p = 1 / N, the probability of one positive
      among N. With a sigmoid loss over many classes, a zero start spends the
      first steps only pushing N - 1 negatives down (Lin et al. 2017, focal
      loss, section 3.3).
    **kwargs: base Layer arguments (name defaults to 'kc_head').

  Raises:
    ValueError: for an invalid head type, sizes, shared units or dropout.
  """

  def __init__(
      self,
      class_to_vertical: Sequence[int],
      head_type: str = "fc_sc",
      s1: int = 4096,
      s2: int = 512,
      shared_units: int = 0,
      activation="relu",
      dropout: float = 0.0,
      chunk_size: Optional[int] = None,
      kernel_initializer="glorot_uniform",
      classifier_bias_init: str = "prior",
      **kwargs,
  ):
    kwargs.setdefault("name", "kc_head")
    super().__init__(**kwargs)
    model_config.check_head_args(head_type, s1, s2, shared_units, dropout,
                                 chunk_size, classifier_bias_init)
    c2v = class_maps.validate_class_to_vertical(class_to_vertical)
    self.class_to_vertical = [int(v) for v in c2v]
    self.num_classes = c2v.size
    self.num_verticals = int(c2v.max()) + 1
    self.head_type = head_type
    self.s1 = int(s1)
    self.s2 = int(s2)
    self.shared_units = int(shared_units)
    self.activation = keras.activations.get(activation)
    self.dropout = float(dropout)
    self.chunk_size = chunk_size
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.classifier_bias_init = classifier_bias_init
    self.feature_dim = None
    classifier_bias = "zeros"
    if classifier_bias_init == "prior" and self.num_classes > 1:
      prior = 1.0 / self.num_classes
      classifier_bias = keras.initializers.Constant(
          math.log(prior / (1.0 - prior)))

    # A serialized initializer gives each sub-layer its own instance.
    common = dict(
        kernel_initializer=keras.initializers.serialize(
            self.kernel_initializer
        ),
        dtype=self.dtype_policy,
    )
    m = self.num_verticals
    if head_type == "sc_sc":
      self.hidden1 = structurally_connected.VerticalBlockDense(
          m, self.s1, activation=activation, name="sc1", **common
      )
    else:
      self.hidden1 = keras.layers.Dense(
          self.s1, activation=activation, name="fc1", **common
      )
    if head_type == "fc_fc":
      self.hidden2 = keras.layers.Dense(
          self.s2, activation=activation, name="fc2", **common
      )
      self.classifier = keras.layers.Dense(
          self.num_classes, name="classifier",
          bias_initializer=classifier_bias, **common
      )
    else:
      self.hidden2 = structurally_connected.VerticalBlockDense(
          m, self.s2, shared_units=self.shared_units, activation=activation,
          name="sc2", **common
      )
      self.classifier = structurally_connected.StructurallyConnectedClassifier(
          self.class_to_vertical, chunk_size=chunk_size, name="classifier",
          bias_initializer=classifier_bias, **common
      )
    self.dropout1 = self.dropout2 = None
    if self.dropout:
      self.dropout1 = keras.layers.Dropout(
          self.dropout, name="dropout1", dtype=self.dtype_policy
      )
      self.dropout2 = keras.layers.Dropout(
          self.dropout, name="dropout2", dtype=self.dtype_policy
      )

  def build(self, input_shape):
    if len(input_shape) != 2:
      raise ValueError(
          f"{self.name}: input must be features [B, s_b], got {input_shape}."
      )
    self.feature_dim = int(input_shape[-1])
    shape = tuple(input_shape)
    for layer in (self.hidden1, self.hidden2, self.classifier):
      layer.build(shape)
      shape = layer.compute_output_shape(shape)

  def call(self, inputs, training=None):
    x = self.hidden1(inputs)
    if self.dropout1 is not None:
      x = self.dropout1(x, training=training)
    x = self.hidden2(x)
    if self.dropout2 is not None:
      x = self.dropout2(x, training=training)
    return self.classifier(x)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.num_classes)

  def kernel_param_count(self) -> int:
    """Real kernel parameter count of this built head (bias omitted)."""
    return kernel_param_count(self)

  def expected_param_count(self) -> int:
    """METHOD.md section 2 formula for this head (needs a built head).

    Raises:
      ValueError: if the head is not built yet (feature size unknown).
    """
    if self.feature_dim is None:
      raise ValueError(
          f"{self.name} is not built: the feature size is unknown."
      )
    return expected_head_params(
        self.head_type, self.feature_dim, self.s1, self.s2, self.num_classes,
        self.num_verticals, self.shared_units,
    )

  def get_config(self):
    config = super().get_config()
    config.update({
        "class_to_vertical": list(self.class_to_vertical),
        "head_type": self.head_type,
        "s1": self.s1,
        "s2": self.s2,
        "shared_units": self.shared_units,
        "activation": keras.activations.serialize(self.activation),
        "dropout": self.dropout,
        "chunk_size": self.chunk_size,
        "kernel_initializer": keras.initializers.serialize(
            self.kernel_initializer
        ),
        "classifier_bias_init": self.classifier_bias_init,
    })
    return config
