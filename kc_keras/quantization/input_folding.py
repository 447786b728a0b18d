"""small_cnn's input scaling folded into its first convolution, for int8 files."""

import keras
from keras import ops
import numpy as np

from kc_keras.modeling import backbones
from kc_keras.quantization import grids


def has_input_scaling_conv(backbone: keras.Model) -> bool:
  """Whether the backbone starts with an input scaling `folded_features` can fold.

  True for a chain that starts with the `backbones.INPUT_SCALING` Rescaling
  (a scalar scale and offset) followed by a stride-1, undilated Conv2D with
  'same' padding: small_cnn.

  Args:
    backbone: a `backbones.build_backbone` model.

  Returns:
    Whether the first two layers have that shape.
  """
  try:
    chain = backbones.chain_layers(backbone)
  except ValueError:
    return False
  if len(chain) < 2 or chain[0].name != backbones.INPUT_SCALING:
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
  """Whether `folded_features` folds the backbone's input scaling.

  `has_input_scaling_conv`, and the conv's kernel lies on its int8 grid
  (`grids.kernel_on_int8_grid`, as after quantization-aware fine-tuning).
  Off the grid the fold's constant b sum(W) is computed from the float
  kernel while an int8 file convolves with the rounded one: a per-channel
  offset on every pixel (docs/BENCHMARKS.md, "The graph converted for
  int8"); on the grid the two sums are equal.
  """
  return (has_input_scaling_conv(backbone)
          and grids.kernel_on_int8_grid(
              backbones.chain_layers(backbone)[1].kernel))


def folded_features(backbone: keras.Model, images):
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
  0.5 is rounded, to 128 / 255. The sum runs over the kernel's height,
  width and input channels; a conv bias adds as usual. Backbones the fold
  does not apply to (`foldable_input_scaling` False: keras.applications,
  a kernel off its grid) run unchanged.

  Args:
    backbone: a `backbones.build_backbone` model.
    images: float32 [B, H, W, C] in [0, 1].

  Returns:
    The features [B, s_b], equal to `backbone(images, training=False)` up
    to float rounding.
  """
  if not foldable_input_scaling(backbone):
    return backbone(images, training=False)
  chain = backbones.chain_layers(backbone)
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
