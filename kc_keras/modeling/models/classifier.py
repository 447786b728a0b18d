"""HierarchicalClassifier: backbone + head + self-paced scaling -> logits."""

from typing import Mapping, Optional, Sequence

import keras

from kc_keras.configs import model as model_config
from kc_keras.modeling import backbones
from kc_keras.modeling import heads
from kc_keras.modeling.layers import self_paced as self_paced_lib
from kc_keras.utils import class_maps

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
