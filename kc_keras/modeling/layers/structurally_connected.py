"""Structurally connected layers: per-vertical blocks and the SC classifier."""

import math
from typing import Optional, Sequence

import keras
from keras import ops
import numpy as np
import tensorflow as tf

from kc_keras.utils import class_maps

# Auto chunk size targets about this many chunks per average vertical, so
# padding stays small while each chunk is a reasonably large matmul.
DEFAULT_CHUNKS_PER_VERTICAL = 8


def auto_chunk_size(
    class_to_vertical,
    chunks_per_vertical: int = DEFAULT_CHUNKS_PER_VERTICAL,
) -> int:
  """Picks the SC classifier chunk size C from the vertical sizes.

  C = 2^round(log2(N / (chunks_per_vertical * M))), at least 1 and at most the
  smallest power of two >= the largest vertical size (a larger C only pads).

  Args:
    class_to_vertical: sequence of N ints (the class -> vertical map).
    chunks_per_vertical: wanted number of chunks of an average vertical.

  Returns:
    The chunk size C (a power of two).

  Raises:
    ValueError: if `chunks_per_vertical` < 1 or the map is invalid.
  """
  if chunks_per_vertical < 1:
    raise ValueError(
        f"chunks_per_vertical must be >= 1, got {chunks_per_vertical}."
    )
  c2v = class_maps.validate_class_to_vertical(class_to_vertical)
  num_classes = c2v.size
  num_verticals = int(c2v.max()) + 1
  target = max(num_classes / (chunks_per_vertical * num_verticals), 1.0)
  size = 2 ** int(round(math.log2(target)))
  largest = int(np.bincount(c2v).max())
  cap = 2 ** int(math.ceil(math.log2(largest)))
  return int(max(1, min(size, cap)))


def chunk_layout(class_to_vertical, chunk_size: int):
  """Precomputes the padded chunk layout used by the SC classifier.

  Each vertical's classes (in class-id order) are cut into ceil(N_v / C)
  chunks of C slots; the last chunk of a vertical is padded. K chunks in all.

  Args:
    class_to_vertical: sequence of N ints (the class -> vertical map).
    chunk_size: C, slots per chunk.

  Returns:
    A tuple `(gather_index, chunk_vertical, class_position)`:
      gather_index: int32 [K*C], the class (kernel row) in each slot; padding
        slots hold the first class of the chunk's vertical (any valid row).
      chunk_vertical: int32 [K], the vertical of each chunk.
      class_position: int32 [N], the slot of each class in the flat [K*C].

  Raises:
    ValueError: if `chunk_size` < 1 or the map is invalid.
  """
  if int(chunk_size) != chunk_size or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive int, got {chunk_size}.")
  chunk_size = int(chunk_size)
  c2v = class_maps.validate_class_to_vertical(class_to_vertical)
  num_classes = c2v.size
  num_verticals = int(c2v.max()) + 1
  sizes = np.bincount(c2v, minlength=num_verticals)
  chunks = -(-sizes // chunk_size)
  first_chunk = np.cumsum(chunks) - chunks
  first_class = np.cumsum(sizes) - sizes
  order = np.argsort(c2v, kind="stable")
  ranks = np.arange(num_classes) - first_class[c2v[order]]
  class_position = np.empty(num_classes, dtype=np.int64)
  class_position[order] = first_chunk[c2v[order]] * chunk_size + ranks
  chunk_vertical = np.repeat(np.arange(num_verticals), chunks)
  # Padding slots read the first class of their vertical: a valid row whose
  # products are computed but never gathered into the logits.
  gather_index = np.repeat(order[first_class[chunk_vertical]], chunk_size)
  gather_index[class_position] = np.arange(num_classes)
  return (
      gather_index.astype(np.int32),
      chunk_vertical.astype(np.int32),
      class_position.astype(np.int32),
  )


def vertical_runs(class_to_vertical):
  """The class ids as runs of one vertical each, in class-id order.

  Args:
    class_to_vertical: sequence of N ints (the class -> vertical map).

  Returns:
    A list of `(vertical, size)`: classes [0, size_0) are in vertical_0,
    the next size_1 in vertical_1, and so on.

  Raises:
    ValueError: if the map is invalid.
  """
  c2v = class_maps.validate_class_to_vertical(class_to_vertical)
  starts = np.flatnonzero(np.diff(c2v)) + 1
  bounds = np.concatenate([[0], starts, [c2v.size]])
  return [(int(c2v[a]), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:])]


def gather_with_dense_gradient(params, index, grad_index, axis=0):
  """`tf.gather(params, index, axis)` whose gradient is a dense gather.

  Forward: y = gather(params, index, axis). Backward, for upstream dy:
    dparams = gather(concat([dy, 0], axis), grad_index, axis)
  i.e. entry i of params takes the gradient of output position grad_index[i]
  (a value == index.size reads the appended zero). This equals the true
  gradient when every entry i is read by at most one output position with a
  non-zero gradient, and that position is grad_index[i]. TF's own gradient of
  gather is a sparse IndexedSlices whose densification (a single-threaded
  UnsortedSegmentSum on CPU) costs more than the whole SC contraction at
  N = 100K (docs/BENCHMARKS.md, profiling).

  Args:
    params: tensor to gather from.
    index: int32 [n], positions of params read by the output.
    grad_index: int32 [params.shape[axis]], the output position feeding each
      entry of params (or n for none).
    axis: the gathered axis.

  Returns:
    The gathered tensor, with the gradient above.
  """
  index = tf.constant(index, tf.int32)
  grad_index = tf.constant(grad_index, tf.int32)
  # A read of a variable, so the custom gradient sees a tensor input.
  params = tf.convert_to_tensor(params)

  @tf.custom_gradient
  def gather(x):
    def grad(dy):
      paddings = [[0, 0]] * dy.shape.rank
      paddings[axis] = [0, 1]
      padded = tf.pad(dy, paddings)
      return tf.gather(padded, grad_index, axis=axis)
    return tf.gather(x, index, axis=axis), grad

  return gather(params)


@keras.saving.register_keras_serializable(package="kc_keras")
class VerticalBlockDense(keras.layers.Layer):
  """One dense block of `units` per vertical, computed by a single einsum.

  For input x of shape [B, D] (every block sees the same input) or [B, M, D]
  (block m sees x[:, m]), with x shared units:
    shared[b, m, :]   = x_m[b] @ K_s            (K_s: [D, x], same for all m)
    own[b, m, :]      = x_m[b] @ K[m]           (K: [M, D, U - x])
    out[b, m, :]      = act(concat(shared, own) + concat(b_s, b[m]))
  Output [B, M, U]. Weights (bias omitted): D*x + M*D*(U - x).

  Args:
    num_verticals: M, the number of blocks.
    units: U, units per block.
    shared_units: x in [0, U], units shared by all verticals.
    activation: activation name or callable (None: linear).
    use_bias: whether to add biases.
    kernel_initializer: initializer for both kernels.
    bias_initializer: initializer for both biases.
    **kwargs: base Layer arguments (name defaults to 'kc_sc_block').

  Raises:
    ValueError: if M < 1, U < 1 or x is outside [0, U].
  """

  def __init__(
      self,
      num_verticals: int,
      units: int,
      shared_units: int = 0,
      activation=None,
      use_bias: bool = True,
      kernel_initializer="glorot_uniform",
      bias_initializer="zeros",
      **kwargs,
  ):
    kwargs.setdefault("name", "kc_sc_block")
    super().__init__(**kwargs)
    if num_verticals < 1:
      raise ValueError(f"num_verticals must be >= 1, got {num_verticals}.")
    if units < 1:
      raise ValueError(f"units must be >= 1, got {units}.")
    if not 0 <= shared_units <= units:
      raise ValueError(
          f"shared_units must be in [0, units={units}], got {shared_units}."
      )
    self.num_verticals = int(num_verticals)
    self.units = int(units)
    self.shared_units = int(shared_units)
    self.activation = keras.activations.get(activation)
    self.use_bias = use_bias
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.bias_initializer = keras.initializers.get(bias_initializer)

  def build(self, input_shape):
    if len(input_shape) == 3:
      if input_shape[1] != self.num_verticals:
        raise ValueError(
            f"{self.name}: a 3-D input must be [B, M={self.num_verticals}, D],"
            f" got {input_shape}."
        )
    elif len(input_shape) != 2:
      raise ValueError(
          f"{self.name}: input must be [B, D] or [B, M, D], got {input_shape}."
      )
    # 2: every block reads the same [B, D] features; 3: block m reads
    # x[:, m].
    self.input_rank = len(input_shape)
    in_dim = input_shape[-1]
    own_units = self.units - self.shared_units
    self.kernel = None
    self.bias = None
    self.shared_kernel = None
    self.shared_bias = None
    if own_units:
      self.kernel = self.add_weight(
          name="kernel",
          shape=(self.num_verticals, in_dim, own_units),
          initializer=self._per_block_initializer,
      )
      if self.use_bias:
        self.bias = self.add_weight(
            name="bias",
            shape=(self.num_verticals, own_units),
            initializer=self.bias_initializer,
        )
    if self.shared_units:
      self.shared_kernel = self.add_weight(
          name="shared_kernel",
          shape=(in_dim, self.shared_units),
          initializer=self.kernel_initializer,
      )
      if self.use_bias:
        self.shared_bias = self.add_weight(
            name="shared_bias",
            shape=(self.shared_units,),
            initializer=self.bias_initializer,
        )

  def _per_block_initializer(self, shape, dtype=None):
    """Initialises each vertical's [D, U] block as its own Dense kernel.

    Keras reads a 3-D shape as a convolution kernel and would count M into
    both fans, scaling a Glorot/He initialisation down by sqrt(M); every block
    is a separate D -> U layer, so its fans are D and U.
    """
    blocks = [self.kernel_initializer(shape[1:], dtype=dtype)
              for _ in range(shape[0])]
    return ops.stack(blocks, axis=0)

  def call(self, inputs):
    rank3 = len(inputs.shape) == 3
    parts = []
    if self.shared_units:
      shared = ops.matmul(inputs, self.shared_kernel)
      if self.use_bias:
        shared = shared + self.shared_bias
      if not rank3:
        shared = ops.repeat(
            ops.expand_dims(shared, 1), self.num_verticals, axis=1
        )
      parts.append(shared)
    if self.units - self.shared_units:
      # One batched matmul over verticals, [M, B, D] @ [M, D, U], with the
      # small activations transposed rather than the kernel: einsum
      # 'bd,mdu->bmu' lowers to one matmul against a transposed copy of the
      # whole [M, D, U] kernel in every step (docs/BENCHMARKS.md, profiling).
      per_vertical = (ops.transpose(inputs, (1, 0, 2)) if rank3
                      else ops.expand_dims(inputs, 0))
      own = ops.transpose(ops.matmul(per_vertical, self.kernel), (1, 0, 2))
      if self.use_bias:
        own = own + self.bias
      parts.append(own)
    outputs = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
    return self.activation(outputs)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.num_verticals, self.units)

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_verticals": self.num_verticals,
        "units": self.units,
        "shared_units": self.shared_units,
        "activation": keras.activations.serialize(self.activation),
        "use_bias": self.use_bias,
        "kernel_initializer": keras.initializers.serialize(
            self.kernel_initializer
        ),
        "bias_initializer": keras.initializers.serialize(self.bias_initializer),
    })
    return config


@keras.saving.register_keras_serializable(package="kc_keras")
class StructurallyConnectedClassifier(keras.layers.Layer):
  """Classifier where class c sees only its vertical's block.

  logit[b, c] = h[b, v(c), :] . W[c] + bias[c], W: [N, s2] in class-id order
  (exactly s2*N kernel weights), computed in one of two ways:

  - **contiguous** (each vertical's classes are consecutive ids, as folder
    trees, the registered datasets and the glyph builder number them): W is
    split by rows into the verticals' blocks
    (views of the variable, no copy) and
      logits = concat_v(h[:, v, :] @ W_v^T) + bias   -> [B, N]
    one matmul per vertical; the kernel's gradient is the blocks'
    gradients concatenated once. No padding and no gather of W.
  - **chunked** (`chunked_logits`, any class order): one padded batched
    matmul,
      W_chunks = gather(W, gather_index)            -> [K, C, s2]
      h_chunks = gather(h, chunk_vertical, axis=1)  -> [B, K, s2]
      flat     = einsum('bks,kcs->bkc')             -> [B, K*C]
      logits   = gather(flat, class_position) + bias -> [B, N]
    no loop over verticals and no N x (M*s2) matrix; cost B*K*C*s2
    multiply-adds with K*C = N plus per-vertical padding (< C per
    vertical), and a copy of W into the chunk layout each pass. Export
    converts this form (`quantization.integer_forms`), whose TFLite ops the
    quantization package models.

  Both give the same logits up to float summation order.

  Args:
    class_to_vertical: sequence of N ints, the vertical of each class.
    chunk_size: C, classes per chunk of the chunked form; None picks
      `auto_chunk_size`.
    use_bias: whether to add a per-class bias.
    kernel_initializer: initializer of W.
    bias_initializer: initializer of the bias.
    **kwargs: base Layer arguments (name defaults to 'kc_sc_classifier').

  Raises:
    ValueError: for an invalid map or chunk size, or an input that is not
      [B, M, s2].
  """

  def __init__(
      self,
      class_to_vertical: Sequence[int],
      chunk_size: Optional[int] = None,
      use_bias: bool = True,
      kernel_initializer="glorot_uniform",
      bias_initializer="zeros",
      **kwargs,
  ):
    kwargs.setdefault("name", "kc_sc_classifier")
    super().__init__(**kwargs)
    c2v = class_maps.validate_class_to_vertical(class_to_vertical)
    self.class_to_vertical = [int(v) for v in c2v]
    self.num_classes = c2v.size
    self.num_verticals = int(c2v.max()) + 1
    self.chunk_size = chunk_size
    self.resolved_chunk_size = (
        auto_chunk_size(c2v) if chunk_size is None else chunk_size
    )
    self.use_bias = use_bias
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.bias_initializer = keras.initializers.get(bias_initializer)
    # Plain numpy constants (not weights): they derive from class_to_vertical,
    # which get_config already carries.
    (self._gather_index, self._chunk_vertical,
     self._class_position) = chunk_layout(c2v, self.resolved_chunk_size)
    self.num_chunks = int(self._chunk_vertical.size)
    # Inverse of _class_position for the logits gather's gradient: the class
    # in each slot, or N (a zero) for a padding slot.
    self._slot_class = np.full(
        self.num_chunks * self.resolved_chunk_size, self.num_classes,
        np.int32)
    self._slot_class[self._class_position] = np.arange(self.num_classes)
    runs = vertical_runs(c2v)
    # No vertical in two runs: the contiguous form applies (a vertical
    # without classes has no run).
    self.contiguous = len({v for v, _ in runs}) == len(runs)
    self._run_verticals = [v for v, _ in runs]
    self._run_sizes = [n for _, n in runs]

  def build(self, input_shape):
    if len(input_shape) != 3 or input_shape[1] != self.num_verticals:
      raise ValueError(
          f"{self.name}: input must be [B, M={self.num_verticals}, s2], got "
          f"{input_shape}."
      )
    units = input_shape[-1]
    self.kernel = self.add_weight(
        name="kernel",
        shape=(self.num_classes, units),
        initializer=self.kernel_initializer,
    )
    self.bias = None
    if self.use_bias:
      self.bias = self.add_weight(
          name="bias",
          shape=(self.num_classes,),
          initializer=self.bias_initializer,
      )

  def call(self, inputs):
    if not self.contiguous:
      return self.chunked_logits(inputs)
    # Row blocks of the kernel along its first axis: TensorFlow's split
    # returns views of the variable's buffer there, and its gradient is one
    # concat of the blocks' gradients. Unstack (not slicing) gives the input
    # gradient as one stack instead of a zero-padded tensor per vertical.
    if len(self._run_sizes) == 1:
      blocks = [self.kernel]
    else:
      blocks = tf.split(self.kernel, self._run_sizes, axis=0)
    per_vertical = tf.unstack(inputs, num=self.num_verticals, axis=1)
    logits = tf.concat([
        tf.matmul(per_vertical[v], block, transpose_b=True)
        for v, block in zip(self._run_verticals, blocks)
    ], axis=1)
    if self.use_bias:
      logits = logits + self.bias
    return logits

  def chunked_logits(self, inputs):
    """The logits by the chunked form (any class order; see the class docstring)."""
    units = inputs.shape[-1]
    # Both gathers get dense-gather gradients: a padding slot's kernel row
    # and logit never reach the output, so each kernel row's gradient is the
    # one at its own slot and each slot's is its class's.
    w_chunks = ops.reshape(
        gather_with_dense_gradient(
            self.kernel, self._gather_index, self._class_position, axis=0),
        (self.num_chunks, self.resolved_chunk_size, units),
    )
    h_chunks = ops.take(inputs, self._chunk_vertical, axis=1)
    flat = ops.einsum("bks,kcs->bkc", h_chunks, w_chunks)
    flat = ops.reshape(
        flat, (-1, self.num_chunks * self.resolved_chunk_size)
    )
    logits = gather_with_dense_gradient(
        flat, self._class_position, self._slot_class, axis=1)
    if self.use_bias:
      logits = logits + self.bias
    return logits

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.num_classes)

  def get_config(self):
    config = super().get_config()
    config.update({
        "class_to_vertical": list(self.class_to_vertical),
        "chunk_size": self.chunk_size,
        "use_bias": self.use_bias,
        "kernel_initializer": keras.initializers.serialize(
            self.kernel_initializer
        ),
        "bias_initializer": keras.initializers.serialize(self.bias_initializer),
    })
    return config
