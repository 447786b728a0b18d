"""Backbones: images in [0, 1] -> pooled feature vectors [B, s_b]."""

from typing import List, Mapping, Sequence, Union

import keras

from kc_keras.configs import model as model_config

# keras.applications refuse inputs smaller than this with include_top=False.
MIN_APPLICATION_SIZE = 32
# keras.applications' own preprocessing expects pixel values in [0, 255].
PIXEL_MAX = 255.0
# ResNet50's 'caffe' preprocessing: per-channel ImageNet means on [0, 255]
# (RGB order; the BGR flip is irrelevant without ImageNet weights).
RESNET_MEAN_RGB = (123.68, 116.779, 103.939)
# small_cnn halves the resolution between blocks.
POOL_SIZE = 2
# small_cnn's first layer: y = 2x - 1, from [0, 1] to [-1, 1].
INPUT_SCALING = "input_scaling"


def _as_config(config) -> model_config.BackboneConfig:
  if isinstance(config, model_config.BackboneConfig):
    return config
  if isinstance(config, Mapping):
    return model_config.BackboneConfig(**dict(config))
  raise ValueError(
      f"backbone config must be a BackboneConfig or a dict, got {type(config)}."
  )


def _to_three_channels(x, channels: int):
  """Repeats a grey channel three times; keras.applications want RGB."""
  if channels == 3:
    return x
  if channels == 1:
    return keras.layers.Concatenate(axis=-1, name="grey_to_rgb")([x, x, x])
  raise ValueError(
      f"keras.applications backbones take 1 or 3 channels, got {channels}."
  )


def _small_cnn(inputs, config: model_config.BackboneConfig):
  """conv-BN-ReLU blocks, max-pool between blocks, then `config.pooling`.

  'avg' is a global average pool (s_b = filters[-1]); 'flatten' max-pools the
  last block too and flattens it, keeping where the strokes are (s_b =
  filters[-1] * ceil(H / 2^len(filters))^2), which matters for characters.
  """
  # Centre [0, 1] to [-1, 1]; BN after each conv handles the rest.
  x = keras.layers.Rescaling(2.0, offset=-1.0, name=INPUT_SCALING)(inputs)
  filters = [int(f) for f in config.filters]
  for i, f in enumerate(filters):
    for j in range(config.convs_per_block):
      x = keras.layers.Conv2D(
          f, config.kernel_size, padding="same", use_bias=False,
          name=f"block{i}_conv{j}",
      )(x)
      x = keras.layers.BatchNormalization(
          momentum=config.batch_norm_momentum, name=f"block{i}_bn{j}"
      )(x)
      x = keras.layers.ReLU(name=f"block{i}_relu{j}")(x)
    if i < len(filters) - 1:
      x = keras.layers.MaxPooling2D(
          POOL_SIZE, padding="same", name=f"block{i}_pool"
      )(x)
  if config.pooling == "flatten":
    x = keras.layers.MaxPooling2D(
        POOL_SIZE, padding="same", name=f"block{len(filters) - 1}_pool")(x)
    return keras.layers.Flatten(name="flatten")(x)
  return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)


def _application(inputs, config: model_config.BackboneConfig, input_shape):
  """A keras.applications network (weights=None, include_top=False, avg)."""
  height, width, channels = input_shape
  if height < MIN_APPLICATION_SIZE or width < MIN_APPLICATION_SIZE:
    raise ValueError(
        f"backbone {config.type!r} needs images of at least "
        f"{MIN_APPLICATION_SIZE}x{MIN_APPLICATION_SIZE}, got {input_shape}."
    )
  x = _to_three_channels(inputs, channels)
  x = keras.layers.Rescaling(PIXEL_MAX, name="to_pixel_range")(x)
  app_shape = (height, width, 3)
  common = dict(
      include_top=False, weights=None, input_shape=app_shape, pooling="avg"
  )
  if config.type == "resnet50":
    x = keras.layers.Normalization(
        mean=list(RESNET_MEAN_RGB), variance=[1.0, 1.0, 1.0],
        name="caffe_mean",
    )(x)
    net = keras.applications.ResNet50(name="resnet50", **common)
  elif config.type == "mobilenet_v3_small":
    # include_preprocessing maps [0, 255] to the net's own range.
    net = keras.applications.MobileNetV3Small(
        include_preprocessing=True, name="mobilenet_v3_small", **common
    )
  else:
    # Keeps keras' default name: EfficientNetV2 looks its blocks up by it.
    net = keras.applications.EfficientNetV2B0(
        include_preprocessing=True, **common
    )
  return net(x)


def build_backbone(
    config: Union[model_config.BackboneConfig, Mapping],
    input_shape: Sequence[int],
) -> keras.Model:
  """Builds the feature extractor named by `config.type`.

  Input: float32 images [B, H, W, C] with values in [0, 1]. Scaling happens
  inside: small_cnn maps to [-1, 1]; keras.applications nets get 1-channel
  images repeated to RGB, then values x 255 and their own preprocessing
  (MobileNetV3 / EfficientNetV2 built-in rescaling; ResNet50 caffe mean
  subtraction). Output: features [B, s_b], optionally after dropout.

  Args:
    config: a BackboneConfig, or a dict of its fields.
    input_shape: (H, W, C) of one image.

  Returns:
    A functional keras.Model named 'kc_backbone'.

  Raises:
    ValueError: for an invalid config, input shape or channel count.
  """
  config = _as_config(config)
  config.validate("backbone")
  input_shape = tuple(int(d) for d in input_shape)
  if len(input_shape) != 3 or min(input_shape) < 1:
    raise ValueError(f"input_shape must be (H, W, C) > 0, got {input_shape}.")
  inputs = keras.Input(shape=input_shape, name="images")
  if config.type == "small_cnn":
    features = _small_cnn(inputs, config)
  else:
    features = _application(inputs, config, input_shape)
  if config.dropout:
    features = keras.layers.Dropout(config.dropout, name="feature_dropout")(
        features
    )
  return keras.Model(inputs, features, name="kc_backbone")


def chain_layers(backbone: keras.Model) -> List[keras.layers.Layer]:
  """The backbone's layers in order, each taking the previous one's output.

  Calling them one after the other is `backbone(x)` (small_cnn).

  Args:
    backbone: a `build_backbone` model.

  Returns:
    The layers, the input layer left out.

  Raises:
    ValueError: a layer that does not take the previous layer's output
      (keras.applications backbones), named.
  """
  layers = [layer for layer in backbone.layers
            if not isinstance(layer, keras.layers.InputLayer)]
  previous = backbone.inputs[0]
  for layer in layers:
    if len(layer._inbound_nodes) != 1 or layer.input is not previous:  # pylint: disable=protected-access
      raise ValueError(
          f"layer {layer.name!r} of {backbone.name!r} does not take the "
          "previous layer's output")
    previous = layer.output
  return layers
