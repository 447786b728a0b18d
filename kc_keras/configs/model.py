"""Model configs: backbone, head, self-paced scaling."""

import dataclasses
from typing import Optional, Tuple

import keras
from official.modeling import hyperparams

# The choices a model config offers. Configs import nothing from the
# library; the layers that implement the choices read them from here.
BACKBONE_TYPES = ("small_cnn", "resnet50", "mobilenet_v3_small",
                  "efficientnet_v2_b0")
HEAD_TYPES = ("fc_fc", "fc_sc", "sc_sc")
CLASSIFIER_BIAS_INITS = ("zeros", "prior")
POOLINGS = ("avg", "flatten")
SELF_PACED_MODES = ("none", "fixed", "vertical", "class")
SELF_PACED_INITS = ("sqrt_nv", "constant", "prior")
SELF_PACED_NORMALIZATIONS = ("per_image", "per_batch")


def _key(prefix: str, name: str) -> str:
  return f"{prefix}.{name}" if prefix else name


def check_head_args(head_type: str, s1: int, s2: int, shared_units: int = 0,
                    dropout: float = 0.0, chunk_size: Optional[int] = None,
                    classifier_bias_init: str = "prior",
                    prefix: str = "") -> None:
  """The one check of a head's arguments (config and layer alike).

  Args:
    head_type, s1, s2, shared_units, dropout, chunk_size,
    classifier_bias_init: as `HeadConfig`.
    prefix: key path of the head config in errors ('' for a layer's
      arguments).

  Raises:
    ValueError: naming the first bad argument by its key path.
  """
  if head_type not in HEAD_TYPES:
    raise ValueError(f"{_key(prefix, 'head_type')} must be one of "
                     f"{HEAD_TYPES}, got {head_type!r}.")
  for name, value in (("s1", s1), ("s2", s2)):
    if value < 1:
      raise ValueError(f"{_key(prefix, name)} must be >= 1, got {value}.")
  if not 0 <= shared_units <= s2:
    raise ValueError(
        f"{_key(prefix, 'shared_units')} must be in "
        f"[0, {_key(prefix, 's2')}={s2}], got {shared_units}.")
  if shared_units and head_type != "fc_sc":
    raise ValueError(
        f"{_key(prefix, 'shared_units')}={shared_units} needs "
        f"{_key(prefix, 'head_type')} 'fc_sc', got {head_type!r}.")
  if not 0.0 <= dropout < 1.0:
    raise ValueError(
        f"{_key(prefix, 'dropout')} must be in [0, 1), got {dropout}.")
  if chunk_size is not None and chunk_size < 1:
    raise ValueError(f"{_key(prefix, 'chunk_size')} must be None (auto) or "
                     f">= 1, got {chunk_size}.")
  if classifier_bias_init not in CLASSIFIER_BIAS_INITS:
    raise ValueError(
        f"{_key(prefix, 'classifier_bias_init')} must be one of "
        f"{CLASSIFIER_BIAS_INITS}, got {classifier_bias_init!r}.")


@dataclasses.dataclass
class BackboneConfig(hyperparams.Config):
  """Feature extractor: images [B, H, W, C] in [0, 1] -> features [B, s_b].

  Attributes:
    type: one of BACKBONE_TYPES ('small_cnn' or a keras.applications net).
    filters: small_cnn output channels per block (s_b = filters[-1]).
    convs_per_block: small_cnn conv-BN-ReLU layers per block.
    kernel_size: small_cnn conv kernel size.
    batch_norm_momentum: small_cnn BatchNormalization momentum.
    dropout: dropout rate on the pooled features (all types).
    pooling: small_cnn features: 'avg' (global average pool) or 'flatten'
      (max-pool the last block and flatten: keeps spatial layout).
  """
  type: str = "small_cnn"
  filters: Tuple[int, ...] = (64, 128, 256)
  convs_per_block: int = 1
  kernel_size: int = 3
  batch_norm_momentum: float = 0.99
  dropout: float = 0.0
  pooling: str = "avg"

  def validate(self, prefix: str = "model.backbone"):
    """Raises ValueError naming the full key path of a bad field."""
    if self.type not in BACKBONE_TYPES:
      raise ValueError(
          f"{prefix}.type must be one of {BACKBONE_TYPES}, got {self.type!r}."
      )
    filters = list(self.filters or ())
    if not filters or any(int(f) < 1 for f in filters):
      raise ValueError(
          f"{prefix}.filters must be a non-empty list of positive ints, got "
          f"{self.filters!r}."
      )
    if self.convs_per_block < 1:
      raise ValueError(
          f"{prefix}.convs_per_block must be >= 1, got {self.convs_per_block}."
      )
    if self.kernel_size < 1:
      raise ValueError(
          f"{prefix}.kernel_size must be >= 1, got {self.kernel_size}."
      )
    if not 0.0 <= self.batch_norm_momentum < 1.0:
      raise ValueError(
          f"{prefix}.batch_norm_momentum must be in [0, 1), got "
          f"{self.batch_norm_momentum}."
      )
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(
          f"{prefix}.dropout must be in [0, 1), got {self.dropout}."
      )


@dataclasses.dataclass
class HeadConfig(hyperparams.Config):
  """Classification head (METHOD.md section 2).

  Attributes:
    head_type: 'fc_fc' (baseline), 'fc_sc' (FC(s1)-SC(s2), with
      `shared_units` x for variant (d)) or 'sc_sc'.
    s1: first hidden layer units (per vertical for 'sc_sc').
    s2: second hidden layer units (per vertical for SC heads).
    shared_units: x in [0, s2], 'fc_sc' only.
    activation: hidden activation name.
    dropout: dropout rate after each hidden layer.
    chunk_size: SC classifier chunk size; None picks one automatically.
    classifier_bias_init: 'prior' (logits start at log(p/(1-p)), p = 1/N) or
      'zeros'.
  """
  head_type: str = "fc_sc"
  s1: int = 4096
  s2: int = 512
  shared_units: int = 0
  activation: str = "relu"
  dropout: float = 0.0
  chunk_size: Optional[int] = None
  classifier_bias_init: str = "prior"

  def validate(self, prefix: str = "model.head"):
    """Raises ValueError naming the full key path of a bad field."""
    check_head_args(self.head_type, self.s1, self.s2, self.shared_units,
                    self.dropout, self.chunk_size, self.classifier_bias_init,
                    prefix=prefix)
    try:
      keras.activations.get(self.activation)
    except (ValueError, TypeError) as e:
      raise ValueError(
          f"{prefix}.activation {self.activation!r} is not a Keras activation."
      ) from e


@dataclasses.dataclass
class SelfPacedConfig(hyperparams.Config):
  """Self-paced per-vertical scaling (METHOD.md section 3).

  Attributes:
    mode: 'none', 'fixed' (sqrt(N_v)), 'vertical' (paper's best) or 'class'.
    init: 'sqrt_nv' -> N(sqrt(N_v), init_stddev) (the paper), 'constant' ->
      N(init_value, init_stddev), or 'prior' -> N(sqrt(N_v) |log(p/(1-p))|,
      init_stddev) with p = 1/N, so that y = x at initialisation when the
      classifier's biases start at the prior logit (see SelfPacedScale).
      None: derived from the number of classes at parse time
      (`configs/derived_defaults.py`).
    init_value: mean of the 'constant' initialisation.
    init_stddev: stddev of the initialisation.
    epsilon: added to the squared per-vertical norm.
    learning_rate_multiplier: gamma moves this many times faster than other
      weights (the weight stores gamma / m); 1.0 is the paper.
    normalization: 'per_image' (||x_v|| of each image, the paper) or
      'per_batch' (the root mean square of ||x_v|| over the batch in
      training, its moving average at inference; see SelfPacedScale).
    momentum: of that moving average ('per_batch').
  """
  mode: str = "vertical"
  init: Optional[str] = "sqrt_nv"
  init_value: float = 10.0
  init_stddev: float = 1e-3
  epsilon: float = 1e-12
  learning_rate_multiplier: float = 1.0
  normalization: str = "per_image"
  momentum: float = 0.99

  def validate(self, prefix: str = "model.self_paced"):
    """Raises ValueError naming the full key path of a bad field."""
    if self.mode not in SELF_PACED_MODES:
      raise ValueError(
          f"{prefix}.mode must be one of {SELF_PACED_MODES}, got {self.mode!r}."
      )
    if self.init is not None and self.init not in SELF_PACED_INITS:
      raise ValueError(
          f"{prefix}.init must be one of {SELF_PACED_INITS}, got {self.init!r}."
      )
    if self.normalization not in SELF_PACED_NORMALIZATIONS:
      raise ValueError(
          f"{prefix}.normalization must be one of "
          f"{SELF_PACED_NORMALIZATIONS}, got {self.normalization!r}.")
    if not 0.0 <= self.momentum < 1.0:
      raise ValueError(
          f"{prefix}.momentum must be in [0, 1), got {self.momentum}.")
    if self.init_stddev < 0:
      raise ValueError(
          f"{prefix}.init_stddev must be >= 0, got {self.init_stddev}."
      )
    if self.epsilon <= 0:
      raise ValueError(f"{prefix}.epsilon must be > 0, got {self.epsilon}.")
    if self.learning_rate_multiplier <= 0:
      raise ValueError(
          f"{prefix}.learning_rate_multiplier must be > 0, got "
          f"{self.learning_rate_multiplier}.")


@dataclasses.dataclass
class ModelConfig(hyperparams.Config):
  """The classifier network: backbone + head + self-paced scaling.

  Attributes:
    backbone: the feature extractor.
    head: the classification head.
    self_paced: the per-vertical logit scaling.
  """
  backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
  head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
  self_paced: SelfPacedConfig = dataclasses.field(
      default_factory=SelfPacedConfig
  )

  def validate(self, prefix: str = "model"):
    """Validates every sub-config; errors name the full key path.

    Args:
      prefix: key path of this config inside the experiment.

    Raises:
      ValueError: naming the first bad field, e.g. 'model.head.shared_units'.
    """
    super().validate()
    self.backbone.validate(f"{prefix}.backbone")
    self.head.validate(f"{prefix}.head")
    self.self_paced.validate(f"{prefix}.self_paced")
