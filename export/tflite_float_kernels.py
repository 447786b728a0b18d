"""Keeps chosen ops of a dynamic-range TFLite model in float by restoring float32 kernels.

A `dynamic` model stores int8 kernels, and each op reading one runs TFLite's
hybrid kernel: it rounds its float input to 8 bits on the fly, per example,
over that example's range. On small feature maps (Omniglot's 8-channel
`block1_conv0` input) that rounding, not the int8 weights, is what flips
close top-2 decisions (docs/BENCHMARKS.md). The converter has no deny-list
for dynamic-range quantization (the quantization debugger's works only for
full-integer models), so this rewrites the converted flatbuffer instead:
every int8 constant an op of the chosen set reads directly becomes the
float32 tensor

    w = (q - zero_point) * scale      (per output channel, or per tensor)

and the runtime then runs the float kernel for that op. The weights keep
their int8-grid values (the Keras kernels themselves once quantization-aware
fine-tuning has snapped them), so the only change is that the op's input is
no longer rounded. The file grows by 3 bytes per restored weight.
"""

import collections
from typing import Callable, List, Tuple

from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils
import numpy as np


def _name(tensor) -> str:
  name = tensor.name
  return name.decode() if isinstance(name, bytes) else str(name or "")


def _int8_constant(model, tensor) -> bool:
  """An int8 tensor with scales and stored data: a quantized weight."""
  quantization = tensor.quantization
  if tensor.type != schema.TensorType.INT8 or quantization is None:
    return False
  if quantization.scale is None or len(quantization.scale) == 0:
    return False
  data = model.buffers[tensor.buffer].data
  return data is not None and len(data) > 0


def _dequantized(model, tensor) -> np.ndarray:
  """(q - zero_point) * scale as float32, broadcast along the quantized axis."""
  quantization = tensor.quantization
  values = np.frombuffer(bytes(bytearray(model.buffers[tensor.buffer].data)),
                         dtype=np.int8).reshape(list(tensor.shape))
  scale = np.asarray(quantization.scale, np.float32)
  zero_point = np.asarray(
      quantization.zeroPoint if quantization.zeroPoint is not None else [0],
      np.float32)
  if scale.size > 1:
    shape = [1] * values.ndim
    shape[quantization.quantizedDimension] = scale.size
    scale = scale.reshape(shape)
    if zero_point.size > 1:
      zero_point = zero_point.reshape(shape)
  return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)


def restore_float_kernels(model_bytes: bytes,
                          op_is_float: Callable[[str], bool]
                          ) -> Tuple[bytes, List[str]]:
  """Turns the int8 kernels of the ops `op_is_float` selects back to float32.

  Args:
    model_bytes: a dynamic-range TFLite flatbuffer.
    op_is_float: called with each output tensor name of each op; an op is
      kept float when it returns True for any of them.

  Returns:
    `(new model bytes, output names of the ops whose kernels were restored)`.

  Raises:
    ValueError: a kernel to restore is also read by an op that stays
      quantized (restoring it would silently change that op too).
  """
  model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
  restored_ops = []
  for subgraph in model.subgraphs:
    readers = collections.defaultdict(set)
    for index, op in enumerate(subgraph.operators):
      for tensor_index in op.inputs:
        readers[tensor_index].add(index)
    float_ops = {
        index for index, op in enumerate(subgraph.operators)
        if any(op_is_float(_name(subgraph.tensors[o])) for o in op.outputs)}
    for index in sorted(float_ops):
      op = subgraph.operators[index]
      kernels = [t for t in op.inputs
                 if t >= 0 and _int8_constant(model, subgraph.tensors[t])]
      for tensor_index in kernels:
        tensor = subgraph.tensors[tensor_index]
        if not readers[tensor_index] <= float_ops:
          raise ValueError(
              f"kernel {_name(tensor)!r} is shared with an op that stays "
              f"quantized; keep every op reading it float or none")
        weights = _dequantized(model, tensor)
        model.buffers[tensor.buffer].data = np.frombuffer(
            weights.tobytes(), dtype=np.uint8)
        tensor.type = schema.TensorType.FLOAT32
        tensor.quantization = None
      if kernels:
        restored_ops.append(_name(subgraph.tensors[op.outputs[0]]))
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), restored_ops
