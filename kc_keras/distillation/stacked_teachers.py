"""Independent teachers of one architecture: one batched pass on stacked weights."""

import dataclasses
import json
from typing import Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from kc_keras.modeling import backbones

# `TeacherBank` layout of independent teachers, stacked by architecture.
LAYOUT = "stacked"
# Config keys that do not change what a layer computes at inference.
_INERT_CONFIG_KEYS = ("name", "trainable", "dtype")
_INERT_CONFIG_SUFFIXES = ("_initializer", "_regularizer", "_constraint")


class NotStackableError(ValueError):
  """A teacher that the stacked form cannot run (it is routed instead)."""


@dataclasses.dataclass(frozen=True)
class TeacherSplit:
  """A teacher as logits = classifier(trunk(x)).

  Attributes:
    trunk: the layers below the classifier, applied in order.
    shapes: each trunk layer's output shape for one image (no batch axis).
    classifier: the linear `Dense` on the trunk's output.
  """

  trunk: Tuple[keras.layers.Layer, ...]
  shapes: Tuple[Tuple[Optional[int], ...], ...]
  classifier: keras.layers.Dense


def split_teacher(teacher):
  """Splits a teacher into trunk layers and a linear classifier, or says why.

  A `HierarchicalClassifier` with an FC-FC head and no self-paced scaling
  splits into its backbone's layer chain plus the head's hidden layers, and
  the head's classifier; any other model must be a chain of layers (a
  Sequential or a functional chain) ending in a linear `Dense`. Every trunk
  layer must be a `Conv2D`, `BatchNormalization` or `Dense` that
  `stacked_layer_call` knows, or hold no weights (pooling, activations,
  rescaling, dropout: applied to every image on its own).

  Args:
    teacher: a built functional keras.Model mapping images to logits.

  Returns:
    A `TeacherSplit`.

  Raises:
    NotStackableError: why the teacher does not split (one line).
  """
  head = getattr(teacher, "head", None)
  try:
    if head is not None and getattr(teacher, "backbone", None) is not None:
      if getattr(head, "head_type", None) != "fc_fc":
        raise NotStackableError(
            f"head_type {head.head_type!r} is not 'fc_fc'")
      mode = getattr(getattr(teacher, "self_paced", None), "mode", None)
      if mode != "none":
        raise NotStackableError(f"self-paced mode {mode!r} is not 'none'")
      # Dropout is the identity at inference.
      layers = (backbones.chain_layers(teacher.backbone) +
                [head.hidden1, head.hidden2, head.classifier])
    else:
      layers = backbones.chain_layers(teacher)
    shape = tuple(teacher.inputs[0].shape[1:])
  except (ValueError, AttributeError, TypeError) as e:
    if isinstance(e, NotStackableError):
      raise
    raise NotStackableError(
        f"not a chain of layers ({type(e).__name__}: {e})") from None
  if not layers:
    raise NotStackableError("no layers")
  trunk, classifier = layers[:-1], layers[-1]
  shapes = []
  for layer in trunk:
    _check_stackable_layer(layer, shape)
    shape = tuple(layer.compute_output_shape((None,) + shape)[1:])
    shapes.append(shape)
  if (not isinstance(classifier, keras.layers.Dense) or len(shape) != 1 or
      classifier.activation is not keras.activations.linear or
      len(classifier.weights) != (2 if classifier.use_bias else 1)):
    raise NotStackableError(
        f"the last layer {classifier.name!r} is not a linear Dense on vectors")
  return TeacherSplit(tuple(trunk), tuple(shapes), classifier)


def _check_stackable_layer(layer, shape):
  """Raises NotStackableError unless `stacked_layer_call` runs `layer` exactly.

  Args:
    layer: a trunk layer.
    shape: its input shape for one image.
  """
  if not layer.weights:
    return
  own_weights = len(layer.weights) == (2 if getattr(layer, "use_bias", False)
                                       else 1)
  if isinstance(layer, keras.layers.Conv2D):
    if (layer.groups != 1 or layer.data_format != "channels_last" or
        tuple(layer.dilation_rate) != (1, 1) or len(shape) != 3 or
        layer.padding not in ("same", "valid") or not own_weights):
      raise NotStackableError(
          f"Conv2D {layer.name!r} is grouped, dilated, channels-first or "
          "holds extra weights")
    return
  if isinstance(layer, keras.layers.BatchNormalization):
    if layer.axis not in (-1, len(shape)):
      raise NotStackableError(
          f"BatchNormalization {layer.name!r} normalises axis {layer.axis}, "
          "not the last")
    return
  if isinstance(layer, keras.layers.Dense):
    if len(shape) != 1 or not own_weights:
      raise NotStackableError(
          f"Dense {layer.name!r} takes rank-{len(shape) + 1} inputs or holds "
          "extra weights")
    return
  raise NotStackableError(
      f"layer {layer.name!r} ({type(layer).__name__}) holds weights and has "
      "no stacked form")


def architecture_signature(split):
  """What must agree for teachers to stack: layer types, configs, shapes.

  The classifier contributes only its input width: classifiers of any
  width concatenate into one [d, N] kernel.

  Args:
    split: a `TeacherSplit`.

  Returns:
    A hashable signature; equal signatures stack.
  """
  parts = []
  for layer, shape in zip(split.trunk, split.shapes):
    config = {k: v for k, v in layer.get_config().items()
              if k not in _INERT_CONFIG_KEYS and
              not k.endswith(_INERT_CONFIG_SUFFIXES)}
    parts.append((type(layer).__name__,
                  json.dumps(config, sort_keys=True, default=str),
                  tuple(tuple(w.shape) for w in layer.weights), shape))
  parts.append(("classifier_input", int(split.classifier.kernel.shape[0])))
  return tuple(parts)


def chunk_layout(members, num_members):
  """Slots sorted by teacher and cut into chunks of one teacher each.

  With S_g slots in the group and G teachers, every chunk holds up to
  r = max(1, ceil(S_g / G)) slots of one teacher: a teacher with c slots
  fills ceil(c / r) chunks. Hence at most S_g / r + G <= 2 G chunks (the
  gathered weights stay within twice the stack) and at most
  S_g + G (r - 1) <= 2 S_g padded rows (the compute stays within twice the
  routed one), whatever the split of the slots.

  Args:
    members: int32 [S], each slot's teacher in the group, -1 for a slot of
      another group or an empty slot.
    num_members: G.

  Returns:
    dict of int32 tensors: `slots` [S_g] (positions in `members`, sorted by
    teacher), `chunk` and `place` [S_g] (each slot's chunk and row in it),
    `chunk_member` [P] (each chunk's teacher) and `rows_per_chunk` (r).
  """
  members = tf.cast(members, tf.int32)
  slots = tf.cast(tf.where(members >= 0)[:, 0], tf.int32)
  member = tf.gather(members, slots)
  order = tf.argsort(member, stable=True)
  slots = tf.gather(slots, order)
  member = tf.gather(member, order)
  size = tf.size(member)
  rows = tf.maximum(1, (size + num_members - 1) // num_members)
  counts = tf.math.bincount(member, minlength=num_members,
                            maxlength=num_members, dtype=tf.int32)
  chunks = (counts + rows - 1) // rows
  rank = tf.range(size) - tf.gather(tf.cumsum(counts, exclusive=True), member)
  chunk = tf.gather(tf.cumsum(chunks, exclusive=True), member) + rank // rows
  return {"slots": slots, "chunk": chunk, "place": rank % rows,
          "chunk_member": tf.repeat(tf.range(num_members), chunks),
          "rows_per_chunk": rows}


def stacked_layer_call(layer, x, weights):
  """`layer` on every chunk with that chunk's own weights.

  Conv2D: the chunks' kernels form one grouped convolution (chunk p reads
  input channels [p C, (p+1) C) and writes output channels [p O, (p+1) O)).
  Dense: a batched matmul. BatchNormalization (inference):
  y = x inv + (beta - mean inv), inv = gamma / sqrt(var + eps), the form of
  `tf.nn.batch_normalization`. A layer without weights runs on all rows at
  once.

  Args:
    layer: a layer accepted by `split_teacher`.
    x: float32 [P, R, ...], chunk p's R rows.
    weights: list of [P, ...] tensors, chunk p's copy of `layer.weights`.

  Returns:
    float32 [P, R, ...] outputs.
  """
  shape = tf.shape(x)
  p, r = shape[0], shape[1]
  if not weights:
    y = layer(tf.reshape(x, tf.concat([[p * r], shape[2:]], 0)),
              training=False)
    # Under a mixed-precision policy the layer computes in float16; the
    # stacked weights are float32.
    y = tf.cast(y, tf.float32)
    y_shape = tf.shape(y)
    return tf.reshape(y, tf.concat([[p, r], y_shape[1:]], 0))
  if isinstance(layer, keras.layers.Conv2D):
    kernel = weights[0]
    kh, kw, c, o = (int(d) for d in layer.kernel.shape)
    grouped = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]),
                         tf.stack([r, shape[2], shape[3], p * c]))
    kernel = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]),
                        tf.stack([kh, kw, c, p * o]))
    y = tf.nn.conv2d(grouped, kernel, strides=list(layer.strides),
                     padding=layer.padding.upper())
    y_shape = tf.shape(y)
    y = tf.transpose(
        tf.reshape(y, tf.stack([r, y_shape[1], y_shape[2], p, o])),
        [3, 0, 1, 2, 4])
    if layer.use_bias:
      y = y + weights[1][:, None, None, None, :]
    return layer.activation(y)
  if isinstance(layer, keras.layers.Dense):
    y = tf.matmul(x, weights[0])
    if layer.use_bias:
      y = y + weights[1][:, None, :]
    return layer.activation(y)
  # BatchNormalization: weights in layer order (gamma, beta when present,
  # then the moving mean and variance).
  named = dict(zip([w.name for w in layer.weights], weights))
  extra = [1] * (x.shape.rank - 3)

  def per_channel(name):
    value = named[name]
    return tf.reshape(value, tf.concat([[p, 1], extra, [-1]], 0))

  inv = tf.math.rsqrt(per_channel("moving_variance") + layer.epsilon)
  if layer.scale:
    inv = inv * per_channel("gamma")
  offset = -per_channel("moving_mean") * inv
  if layer.center:
    offset = offset + per_channel("beta")
  return x * inv + offset


class StackedGroup:
  """Teachers of one architecture signature, their weights stacked [G, ...].

  Each trunk weight is held once as a non-trainable variable [G, ...]
  (variables, not graph constants: teachers can be large). The classifiers
  concatenate into one kernel [d, N] and bias [N], column c holding class
  c's weights from its vertical's teacher and zeros for classes of other
  teachers, so that a slot's logits over all N classes are
  trunk_{t(s)}(x_s) W + b, exact on its own vertical's columns.

  The trunk runs layer by layer on the stacked weights (`stacked_layer_call`)
  rather than as `tf.vectorized_map` over the teacher's `stateless_call`:
  both give the same values, and this form was the faster of the two on the
  teachers of `bench/distillation_overhead_bench.py`.

  Args:
    splits: dict vertical id -> `TeacherSplit`, all of one
      `architecture_signature`.
    class_ids_of: dict vertical id -> int array of its global class ids.
    num_classes: N.
    describe: fn(vertical id) -> the vertical as messages name it.

  Raises:
    ValueError: a classifier whose width is neither N_v nor N (names the
      vertical).
  """

  def __init__(self, splits, class_ids_of, num_classes, describe):
    self.verticals = tuple(sorted(splits))
    ordered = [splits[v] for v in self.verticals]
    self._layers = ordered[0].trunk
    self._shapes = ordered[0].shapes
    self._stacked = []
    for index, layer in enumerate(self._layers):
      stacked = []
      for w in range(len(layer.weights)):
        value = np.stack([np.asarray(split.trunk[index].weights[w].numpy(),
                                     np.float32) for split in ordered])
        stacked.append(tf.Variable(value, trainable=False,
                                   name=f"stacked_{layer.name}_{w}"))
      self._stacked.append(stacked)
    width = int(ordered[0].classifier.kernel.shape[0])
    kernel = np.zeros((width, num_classes), np.float32)
    bias = np.zeros((num_classes,), np.float32)
    for v, split in zip(self.verticals, ordered):
      columns = class_ids_of[v]
      units = int(split.classifier.units)
      if units not in (columns.size, num_classes):
        raise ValueError(
            f"Teacher of vertical {describe(v)} emits {units} logits; "
            f"expected {columns.size} (its classes) or {num_classes} (all "
            "classes).")
      take = slice(None) if units == columns.size else columns
      kernel[:, columns] = np.asarray(split.classifier.kernel)[:, take]
      if split.classifier.use_bias:
        bias[columns] = np.asarray(split.classifier.bias)[take]
    self.feature_dim = width
    self._kernel = tf.Variable(kernel, trainable=False,
                               name="stacked_classifier_kernel")
    self._bias = tf.Variable(bias, trainable=False,
                             name="stacked_classifier_bias")
    member = np.full(len(class_ids_of), -1, np.int32)
    member[list(self.verticals)] = np.arange(len(self.verticals))
    self._member_of_vertical = member

  @property
  def variables(self):
    """The stacked trunk weights [G, ...] in layer order, then W and b."""
    return ([w for stacked in self._stacked for w in stacked] +
            [self._kernel, self._bias])

  def slot_logits(self, images, slot_verticals):
    """Every slot's logits from its own teacher, over all N classes.

    Args:
      images: [B, ...] images.
      slot_verticals: int32 [B, T], -1 for an empty slot.

    Returns:
      float32 [B * T, N]: trunk_{t(s)}(x_s) W + b for slots of this group
      (exact on the slot's vertical's columns), b for the others.
    """
    t = slot_verticals.shape[1]
    flat = tf.reshape(slot_verticals, [-1])
    table = tf.constant(self._member_of_vertical)
    members = tf.where(flat >= 0, tf.gather(table, tf.maximum(flat, 0)), -1)
    layout = chunk_layout(members, len(self.verticals))
    num_slots = tf.size(flat)

    def features():
      rows = layout["slots"] // t
      picked = tf.cast(tf.gather(images, rows), tf.float32)
      where = tf.stack([layout["chunk"], layout["place"]], axis=1)
      num_chunks = tf.size(layout["chunk_member"])
      x = tf.scatter_nd(where, picked, tf.concat(
          [[num_chunks, layout["rows_per_chunk"]], tf.shape(picked)[1:]], 0))
      for layer, shape, stacked in zip(self._layers, self._shapes,
                                       self._stacked):
        x = stacked_layer_call(
            layer, x, [tf.gather(w, layout["chunk_member"]) for w in stacked])
        x = tf.ensure_shape(x, (None, None) + shape)
      per_slot = tf.gather_nd(x, where)
      return tf.scatter_nd(layout["slots"][:, None], per_slot,
                           tf.stack([num_slots, self.feature_dim]))

    # A group absent from the batch runs nothing (CPU conv kernels reject
    # an empty batch).
    phi = tf.cond(tf.size(layout["slots"]) > 0, features,
                  lambda: tf.zeros(tf.stack([num_slots, self.feature_dim])))
    phi = tf.ensure_shape(phi, [None, self.feature_dim])
    return tf.matmul(phi, self._kernel) + self._bias


def group_teachers(teachers, class_ids_of, num_classes, describe):
  """Stacks the teachers that split, grouped by architecture signature.

  Args:
    teachers: dict vertical id -> teacher.
    class_ids_of: dict vertical id -> int array of its global class ids
      (every vertical).
    num_classes: N.
    describe: fn(vertical id) -> the vertical as messages name it.

  Returns:
    (list of `StackedGroup`, dict vertical id -> why its teacher does not
    stack, for the teachers left to routing).
  """
  by_signature = {}
  unstackable = {}
  for v in sorted(teachers):
    try:
      split = split_teacher(teachers[v])
    except NotStackableError as e:
      unstackable[v] = str(e)
      continue
    by_signature.setdefault(architecture_signature(split), {})[v] = split
  groups = [StackedGroup(splits, class_ids_of, num_classes, describe)
            for splits in by_signature.values()]
  return groups, unstackable
