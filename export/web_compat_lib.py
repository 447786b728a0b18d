"""Whether a TFLite file runs in LiteRT.js (the web demo), and the batch-1 rewrite it needs.

LiteRT.js (`@litertjs/core` 2.5) runs the builtin TFLite ops in WebAssembly
(XNNPACK) or WebGPU, with three limits that the Python interpreter lacks:

* its tensors are float32, int32 or uint8 only: a model whose input or
  output is int8 (the full-integer `int8` export) or int16 cannot be fed
  or read;
* it has no custom ops, so no Flex (TensorFlow) ops;
* it has no input resize: a model whose `shape_signature` keeps a dynamic
  batch (-1, as every converted `serve_image` does) rejects a `[1, H, W, C]`
  input. `fix_batch_dimension` rewrites -1 to 1 in every tensor's
  `shape_signature`, which the web demo does to its copy of the model.
"""

from typing import List

from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

# TensorType codes LiteRT.js can create and read (its DATATYPES).
WEB_TENSOR_TYPES = {
    schema.TensorType.FLOAT32: "float32",
    schema.TensorType.INT32: "int32",
    schema.TensorType.UINT8: "uint8",
}
_TYPE_NAMES = {value: name.lower() for name, value in
               vars(schema.TensorType).items() if not name.startswith("_")}


class WebCompatError(ValueError):
  """A TFLite file LiteRT.js cannot run; the message says why."""


def _read(model_bytes: bytes):
  try:
    return flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
  except Exception as e:  # pylint: disable=broad-except
    # The flatbuffer reader raises whatever its parse trips on.
    raise WebCompatError(f"not a TFLite flatbuffer ({e})") from e


def _name(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value or "")


def problems(model_bytes: bytes) -> List[str]:
  """Reasons LiteRT.js cannot run this model; empty when it can.

  A dynamic batch dimension is not listed: `fix_batch_dimension` removes it.

  Raises:
    WebCompatError: bytes that are not a TFLite model.
  """
  model = _read(model_bytes)
  found = []
  custom = sorted({
      _name(code.customCode) for code in model.operatorCodes
      if max(code.builtinCode, code.deprecatedBuiltinCode)
      == schema.BuiltinOperator.CUSTOM})
  if custom:
    found.append(
        f"custom ops {custom} (Flex/TensorFlow ops): LiteRT.js runs builtin "
        "TFLite ops only; convert without SELECT_TF_OPS")
  subgraph = model.subgraphs[0]
  unsupported = [
      f"{kind} {_name(subgraph.tensors[i].name)!r} is "
      f"{_TYPE_NAMES.get(subgraph.tensors[i].type, subgraph.tensors[i].type)}"
      for kind, indices in (("input", subgraph.inputs),
                            ("output", subgraph.outputs))
      for i in indices if subgraph.tensors[i].type not in WEB_TENSOR_TYPES]
  if unsupported:
    found.append(
        f"{', '.join(unsupported)}: LiteRT.js tensors are "
        f"{'/'.join(WEB_TENSOR_TYPES.values())} (export a variant with float "
        "input and outputs, e.g. int8_float_head instead of int8)")
  return found


def check(model_bytes: bytes, what: str = "model") -> None:
  """Raises WebCompatError naming `what` and every problem, if any."""
  found = problems(model_bytes)
  if found:
    raise WebCompatError(f"{what} cannot run in LiteRT.js: "
                         + "; ".join(found))


def fix_batch_dimension(model_bytes: bytes) -> bytes:
  """The model with every -1 of every tensor's `shape_signature` set to 1.

  Only the signature changes: the converted `shape` of a `serve_image`
  model already has batch 1, so the numerics are those of the Python
  interpreter running the original file on one image.
  """
  model = _read(model_bytes)
  for subgraph in model.subgraphs:
    for tensor in subgraph.tensors:
      signature = tensor.shapeSignature
      if signature is not None and len(signature) and min(signature) < 0:
        tensor.shapeSignature = [1 if d < 0 else int(d) for d in signature]
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def describe(model_path: str) -> str:
  """One line for an exporter: whether the web demo can run `model_path`."""
  with open(model_path, "rb") as f:
    found = problems(f.read())
  if found:
    return "web demo (LiteRT.js): cannot run it: " + "; ".join(found)
  return "web demo (LiteRT.js): runs it (python -m export.web_demo)"
