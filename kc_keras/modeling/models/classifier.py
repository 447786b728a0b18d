"""HierarchicalClassifier: backbone + head + self-paced scaling -> logits."""

from typing import Dict, Mapping, Optional, Sequence

import keras
from keras import ops

from kc_keras.configs import model as model_config
from kc_keras.modeling import backbones
from kc_keras.modeling import heads
from kc_keras.modeling.layers import self_paced as self_paced_lib
from kc_keras.utils import class_maps

# c of `floor_parts`: the shifted logits keep int8 precision over [-c, max]
# (a smaller c, a finer step). The per-vertical floor max(F, -c r_v) it
# implies equals the asked floor F wherever r_v >= |F| / c; a smaller c
# raises the floor of low-scale verticals towards their top logits. On the
# Omniglot student (r_v in [0.13, 2.1]) c = 32 gives a step of 0.19 where
# the logits' own was 0.64 (docs/BENCHMARKS.md, "The graph converted for int8").
FLOOR_SHIFT = 32.0


def floored_logits(parts: Mapping[str, object], floor: float):
  """max(shifted, floor * norm) * scale: the floored logits of `floor_parts`.

  With shifted = max(k x, -c), scale = r and norm = 1 / r this is
    max(y, max(floor, -c r_v)),   y = k x r the self-paced logits,
  so every logit above the floor is y itself.

  Args:
    parts: `HierarchicalClassifier.floor_parts` outputs.
    floor: F < 0.

  Returns:
    [B, N] float32.
  """
  return (ops.maximum(parts["shifted"], floor * parts["norm"])
          * parts["scale"])


@keras.saving.register_keras_serializable(package="kc_keras")
class HierarchicalClassifier(keras.Model):
  """Images [B, H, W, C] in [0, 1] -> logits [B, N] (float32).

  logits = SelfPacedScale(ClassificationHead(Backbone(images))). The same
  network serves as generalist, specialist (teacher) and student. Under a
  mixed-precision policy the backbone and head compute in float16/bfloat16;
  the self-paced layer runs in float32, so the returned logits are float32.

  Args:
    class_to_vertical: sequence of N ints, the vertical of each class.
    input_shape: (H, W, C) of one image.
    backbone: dict of BackboneConfig fields (None: defaults).
    head: dict of ClassificationHead arguments (head_type, s1, s2,
      shared_units, activation, dropout, chunk_size, ...; None: defaults).
    self_paced: dict of SelfPacedScale arguments (mode, init, init_value,
      init_stddev, epsilon, seed; None: defaults).
    **kwargs: base Model arguments (name defaults to 'kc_classifier').

  Raises:
    ValueError: for any invalid piece (named by the sub-layer that rejects it).

  Example:
  ```python
  model = HierarchicalClassifier(
      class_to_vertical=[0, 0, 1], input_shape=(28, 28, 1),
      backbone={"type": "small_cnn", "filters": [8, 16]},
      head={"head_type": "fc_sc", "s1": 32, "s2": 8},
      self_paced={"mode": "vertical"})
  logits = model(images)  # [B, 3] float32
  ```
  """

  def __init__(
      self,
      class_to_vertical: Sequence[int],
      input_shape: Sequence[int],
      backbone: Optional[Mapping] = None,
      head: Optional[Mapping] = None,
      self_paced: Optional[Mapping] = None,
      **kwargs,
  ):
    kwargs.setdefault("name", "kc_classifier")
    c2v = class_maps.validate_class_to_vertical(class_to_vertical)
    c2v = [int(v) for v in c2v]
    input_shape = tuple(int(d) for d in input_shape)
    backbone_cfg = model_config.BackboneConfig(**dict(backbone or {}))
    backbone_dict = backbone_cfg.as_dict()
    head_dict = dict(head or {})
    self_paced_dict = dict(self_paced or {})

    # Functional construction (keras-hub style): the graph gives build,
    # summary and .keras loading for free.
    backbone_model = backbones.build_backbone(backbone_cfg, input_shape)
    head_layer = heads.ClassificationHead(c2v, name="kc_head", **head_dict)
    # float32 whatever the global policy: norms and logits stay full precision.
    scale_layer = self_paced_lib.SelfPacedScale(
        c2v, name="self_paced_scale", dtype="float32", **self_paced_dict
    )
    inputs = keras.Input(shape=input_shape, name="images")
    features = backbone_model(inputs)
    logits = scale_layer(head_layer(features))
    super().__init__(inputs=inputs, outputs=logits, **kwargs)

    self.class_to_vertical = c2v
    self.image_shape = input_shape
    self.backbone_config = backbone_dict
    self.head_config = head_dict
    self.self_paced_config = self_paced_dict
    self.backbone = backbone_model
    self.head = head_layer
    self.self_paced = scale_layer

  @property
  def num_classes(self) -> int:
    return len(self.class_to_vertical)

  @property
  def num_verticals(self) -> int:
    return max(self.class_to_vertical) + 1

  @property
  def feature_dim(self) -> int:
    return int(self.backbone.output.shape[-1])

  def quantizable_logits(self, images):
    """`self(images, training=False)` as the graph TFLite converts.

    The same function up to float rounding, written so int8 tensors can hold
    it: the backbone with its input scaling folded into the first
    convolution (`backbones.quantizable_features`), the head with its
    first block layer in dense form (`ClassificationHead.quantizable_call`),
    and the self-paced scale with its norm relative to gamma
    (`SelfPacedScale.quantizable_call`), each under its layer's own name
    scope so its ops keep the names (`sc2`, `self_paced_scale`) that
    `float_layers` and `int8_float_head` match.

    Args:
      images: [B, H, W, C] float images in [0, 1].

    Returns:
      Logits [B, N], float32.
    """
    features = backbones.quantizable_features(self.backbone, images)
    with keras.name_scope(self.head.name):
      logits = self.head.quantizable_call(features)
    with keras.name_scope(self.self_paced.name):
      return self.self_paced.quantizable_call(logits)

  def floor_parts(self, images, shift: float = FLOOR_SHIFT
                  ) -> Dict[str, object]:
    """The pieces of the floored self-paced logits, as int8 can hold them.

    Logits y = k x r (x the classifier's output, r the self-paced scale,
    k the 'class' mode's factors) have a negative end (~-150 before the
    scale on the Omniglot student) that sets the int8 step of x and of y.
    A floor F on y keeps the top: y' = r max(k x, F / r). Here k x comes
    from its own copy of the classifier, shifted by c (`FLOOR_SHIFT`) and
    rectified (`ClassificationHead.shifted_logits`), so its int8 range is
    [-c, max]; x itself only feeds the norm. `floored_logits` composes
      y' = max(shifted, F norm) scale = max(y, max(F, -c r_v)).
    `export_tflite_lib` converts that composition for the int8 files of
    self-paced networks (the floor is chosen at conversion).

    Args:
      images: [B, H, W, C] float images in [0, 1].
      shift: c > 0.

    Returns:
      dict of [B, N] float32: shifted = max(k x, -c), scale = r,
      norm = 1 / r.

    Raises:
      ValueError: a network without self-paced scaling (mode 'none').
    """
    if self.self_paced.mode == "none":
      raise ValueError(
          f"{self.name}: floor_parts needs self-paced scaling; without it "
          "the logits op takes the floor itself")
    features = backbones.quantizable_features(self.backbone, images)
    with keras.name_scope(self.head.name):
      hidden = self.head.quantizable_hidden(features)
      logits = self.head.quantizable_logits_of(hidden)
      with keras.name_scope(self.head.classifier.name):
        shifted = self.head.shifted_logits(
            hidden, shift, self.self_paced.class_factors())
    with keras.name_scope(self.self_paced.name):
      scale, norm = self.self_paced.quantizable_scales(logits)
    return {"shifted": ops.cast(shifted, "float32"), "scale": scale,
            "norm": norm}

  def classifier_inputs(self, images, training=False):
    """phi(x): the head's last hidden activations, the classifier's input.

    Args:
      images: [B, H, W, C] float images.
      training: passed to the backbone and the hidden layers.

    Returns:
      [B, s2] for FC-FC (for SC heads, the [B, M * s2] block activations).
    """
    x = self.backbone(images, training=training)
    x = self.head.hidden1(x, training=training)
    return self.head.hidden2(x, training=training)

  def head_param_count(self) -> int:
    """Real kernel weights of the head (bias omitted)."""
    return self.head.kernel_param_count()

  def expected_head_param_count(self) -> int:
    """The METHOD.md section 2 formula for this head (bias omitted)."""
    return self.head.expected_param_count()

  def get_config(self):
    return {
        "name": self.name,
        "trainable": self.trainable,
        "class_to_vertical": list(self.class_to_vertical),
        "input_shape": list(self.image_shape),
        "backbone": dict(self.backbone_config),
        "head": dict(self.head_config),
        "self_paced": dict(self.self_paced_config),
    }

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def build_classifier(
    config: model_config.ModelConfig,
    class_to_vertical: Sequence[int],
    input_shape: Sequence[int],
    name: str = "kc_classifier",
) -> HierarchicalClassifier:
  """Builds a HierarchicalClassifier from a validated ModelConfig.

  Args:
    config: the model config (validated here).
    class_to_vertical: sequence of N ints, e.g. `hierarchy.class_to_vertical`.
    input_shape: (H, W, C) of one image.
    name: the model name.

  Returns:
    The built classifier.

  Raises:
    ValueError: if the config is invalid (naming its key path) or the map is.
  """
  config.validate()
  return HierarchicalClassifier(
      class_to_vertical=class_to_vertical,
      input_shape=input_shape,
      # The head and self-paced configs' fields are their layers'
      # constructor arguments.
      backbone=config.backbone.as_dict(),
      head=config.head.as_dict(),
      self_paced=config.self_paced.as_dict(),
      name=name,
  )
