"""Backbones: images in [0, 1] -> pooled feature vectors [B, s_b]."""

from typing import List, Mapping, Sequence, Union

import keras
from keras import ops
import numpy as np
import tensorflow as tf

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
# small_cnn's first layer, which `quantizable_features` folds into the conv
# after it.
INPUT_SCALING = "input_scaling"
# TFLite's int8 kernels: symmetric, per output channel, levels [-127, 127]
# (measured on the converter's output in
# tests/export/quantization_aware_lib_test.py; export's QAT snaps to it).
INT8_KERNEL_LEVELS = 127
# Relative tolerance of "the kernel lies on its int8 grid".
GRID_TOLERANCE = 1e-5


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


def kernel_on_int8_grid(kernel) -> bool:
  """Whether every output channel c of `kernel` is a multiple of s_c = max|w_c| / 127.

  True after `export.quantization_aware_finetune`, which snaps kernels to
  the grid the TFLite converter rounds them to.
  """
  # Eager even while a tf.function traces the caller: the decision depends
  # on the weights' values, fixed at export.
  with tf.init_scope():
    kernel = np.asarray(ops.convert_to_numpy(kernel), np.float64)
  flat = kernel.reshape(-1, kernel.shape[-1])
  scales = np.abs(flat).max(axis=0) / INT8_KERNEL_LEVELS
  scales[scales == 0] = 1.0
  levels = flat / scales
  return bool(np.all(np.abs(levels - np.round(levels))
                     <= GRID_TOLERANCE * INT8_KERNEL_LEVELS))


def has_input_scaling_conv(backbone: keras.Model) -> bool:
  """Whether the backbone starts with an input scaling `quantizable_features` can fold.

  True for a chain that starts with the `INPUT_SCALING` Rescaling (a scalar
  scale and offset) followed by a stride-1, undilated Conv2D with 'same'
  padding: small_cnn.
  """
  try:
    chain = chain_layers(backbone)
  except ValueError:
    return False
  if len(chain) < 2 or chain[0].name != INPUT_SCALING:
    return False
  scaling, conv = chain[0], chain[1]
  return (isinstance(scaling, keras.layers.Rescaling)
          and all(np.size(v) == 1 for v in (scaling.scale, scaling.offset))
          and isinstance(conv, keras.layers.Conv2D)
          and conv.padding == "same"
          and tuple(conv.strides) == (1, 1)
          and tuple(conv.dilation_rate) == (1, 1)
          and conv.data_format == "channels_last"
          and conv.groups == 1)


def foldable_input_scaling(backbone: keras.Model) -> bool:
  """Whether `quantizable_features` folds the backbone's input scaling.

  `has_input_scaling_conv`, and the conv's kernel lies on its int8 grid
  (`kernel_on_int8_grid`, as after `export.quantization_aware_finetune`).
  Off the grid the fold's constant b sum(W) is computed from the float
  kernel while an int8 file convolves with the rounded one: a per-channel
  offset on every pixel (on the demo generalist before fine-tuning it
  lowered int8 agreement; docs/BENCHMARKS.md, "The graph converted for
  int8"); on the grid the two sums are equal.
  """
  return (has_input_scaling_conv(backbone)
          and kernel_on_int8_grid(chain_layers(backbone)[1].kernel))


def quantizable_features(backbone: keras.Model, images):
  """`backbone(images, training=False)` as a graph integer arithmetic can hold.

  small_cnn starts with y = a x + b (a = 2, b = -1: [0, 1] -> [-1, 1]) and
  a 'same' convolution of y. In int8 y cannot be held exactly: its 256
  values (2k - 255) / 255 fall half-way between the points of any int8
  grid over [-1, 1] (step 2 / 255), so every pixel moves by 1 / 255 before
  the first convolution; on the Omniglot generalist that rounding was the
  largest single loss of top-1 agreement (docs/BENCHMARKS.md, "The graph
  converted for int8"). Folded:
    conv_same(a x + b; W) = conv_valid(pad(x, -b / a); a W) + b sum(W),
  exact in float (the zero padding of y is x = -b / a = 0.5: padded with
  zeros, then a constant border of 0.5 added), so the images enter the
  first convolution on their own grid (k / 255); only the border value
  0.5 is rounded, to 128 / 255. The sum runs
  over the kernel's height, width and input channels; a conv bias adds as
  usual. Other backbones (keras.applications) run unchanged.

  Args:
    backbone: a `build_backbone` model.
    images: float32 [B, H, W, C] in [0, 1].

  Returns:
    The features [B, s_b], equal to `backbone(images, training=False)` up
    to float rounding.
  """
  if not foldable_input_scaling(backbone):
    return backbone(images, training=False)
  chain = chain_layers(backbone)
  scaling, conv = chain[0], chain[1]
  scale = float(np.reshape(scaling.scale, ()))
  offset = float(np.reshape(scaling.offset, ()))
  kernel = ops.convert_to_tensor(conv.kernel)
  padding = [[0, 0]]
  for size in conv.kernel_size:
    padding.append([(size - 1) // 2, size - 1 - (size - 1) // 2])
  padding.append([0, 0])
  # Zero padding plus a constant border, not a pad with value 0.5: TFLite's
  # int16x8 converter leaves a PADV2 pad value float32 and the file then
  # fails to load; PAD and ADD convert in every mode.
  _, height, width, channels = backbone.inputs[0].shape
  border = np.full((1, height + sum(padding[1]), width + sum(padding[2]),
                    channels), -offset / scale, np.float32)
  border[:, padding[1][0]:padding[1][0] + height,
         padding[2][0]:padding[2][0] + width, :] = 0.0
  # Name scopes keep the layers' names on the ops (TFLite `float_layers`).
  with keras.name_scope(scaling.name):
    x = ops.pad(ops.cast(images, "float32"), padding) + border
  with keras.name_scope(conv.name):
    x = ops.conv(x, kernel * scale, strides=1, padding="valid")
    bias = offset * ops.sum(kernel, axis=(0, 1, 2))
    if conv.use_bias:
      bias = bias + conv.bias
    x = x + bias
  for layer in chain[2:]:
    x = layer(x, training=False)
  return x
