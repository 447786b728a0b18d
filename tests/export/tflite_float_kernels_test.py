"""Tests for export.tflite_float_kernels and `dynamic` with `float_layers`."""

import os

from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools import flatbuffer_utils
import numpy as np
import pytest

from export import export_tflite_lib
from export import tflite_demo_lib
from export import tflite_float_kernels as lib

# The smoke model's only kernel with >= 1024 weights (3x3x8x16 = 1,152): the
# only op the `dynamic` file runs as a hybrid op.
HYBRID_LAYER = "block1_conv0"
# |float32 TFLite logit - Keras logit| of the `none` file: 1e-4 (the parity
# bound in export_tflite_lib_test).
FLOAT_DIFF = 1e-4


def _conv_kernels(path):
  """`[(dtype, values, scales, zero points)]` of each CONV_2D's kernel input."""
  interpreter = Interpreter(model_path=path)
  interpreter.allocate_tensors()
  tensors = interpreter.get_tensor_details()
  kernels = []
  for op in interpreter._get_ops_details():  # pylint: disable=protected-access
    if op["op_name"] == "CONV_2D":
      detail = tensors[op["inputs"][1]]
      quantization = detail["quantization_parameters"]
      kernels.append((detail["dtype"], interpreter.get_tensor(detail["index"]),
                      quantization["scales"], quantization["zero_points"]))
  return kernels


def _matches(layer):
  return lambda name: bool(
      export_tflite_lib.float_node_names([name], (), [layer]))


def test_restored_kernel_is_the_dequantized_int8_kernel(tflite_model,
                                                        tmp_path):
  source = tflite_model("dynamic")
  with open(source, "rb") as f:
    model, restored = lib.restore_float_kernels(f.read(),
                                                _matches(HYBRID_LAYER))
  assert len(restored) == 1 and HYBRID_LAYER in restored[0]
  path = str(tmp_path / "restored.tflite")
  with open(path, "wb") as f:
    f.write(model)
  before, after = _conv_kernels(source), _conv_kernels(path)
  # Conv 0 (216 weights) was float already; conv 1 was int8 per channel.
  assert before[0][0] == after[0][0] == np.float32
  np.testing.assert_array_equal(before[0][1], after[0][1])
  dtype, values, scales, zero_points = before[1]
  assert dtype == np.int8 and scales.size == values.shape[0] > 1
  assert after[1][0] == np.float32 and after[1][2].size == 0
  per_channel = lambda a: a.astype(np.float32)[:, None, None, None]  # noqa: E731
  expected = ((values.astype(np.float32) - per_channel(zero_points))
              * per_channel(scales))
  np.testing.assert_array_equal(after[1][1], expected)


def test_snapped_model_without_rounded_inputs_equals_keras(snapped_run,
                                                           reference, tmp_path):
  """Kernels on the int8 grid + no input rounding = the Keras function."""
  network, _, export = snapped_run
  keras_logits = np.asarray(network(reference.images, training=False))
  paths = {}
  for name, float_layers in (("plain", ()), ("float", [HYBRID_LAYER])):
    paths[name] = str(tmp_path / f"{name}.tflite")
    export_tflite_lib.export_tflite(export.version_dir, paths[name],
                                    "dynamic", float_layers=float_layers)
  diff = {name: np.abs(tflite_demo_lib.TFLiteClassifier(path).logits(
      reference.images) - keras_logits).max() for name, path in paths.items()}
  assert diff["float"] <= FLOAT_DIFF, diff
  # What is left in the plain file is the hybrid op's input rounding.
  assert diff["plain"] > 10 * FLOAT_DIFF, diff
  sizes = {name: os.path.getsize(path) for name, path in paths.items()}
  assert sizes["float"] > sizes["plain"]


def test_float_layers_naming_no_op_or_with_fp16_is_an_error(exported,
                                                           tmp_path):
  with pytest.raises(export_tflite_lib.TFLiteExportError,
                     match=r"\['no_such_layer'\] match no op"):
    export_tflite_lib.export_tflite(
        exported.version_dir, str(tmp_path / "m.tflite"), "dynamic",
        float_layers=[HYBRID_LAYER, "no_such_layer"])
  with pytest.raises(export_tflite_lib.TFLiteExportError,
                     match=r"only apply to dynamic and int8_float_head.*'fp16'"):
    export_tflite_lib.export_tflite(
        exported.version_dir, str(tmp_path / "m.tflite"), "fp16",
        float_layers=[HYBRID_LAYER])
  assert not os.listdir(tmp_path)


def test_kernel_shared_with_a_quantized_op_is_refused(tflite_model):
  with open(tflite_model("dynamic"), "rb") as f:
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(f.read()))
  subgraph = model.subgraphs[0]
  conv = next(op for op in subgraph.operators
              if HYBRID_LAYER in subgraph.tensors[op.outputs[0]].name.decode())
  # A second op reading the same int8 kernel, writing a tensor of its own.
  extra = schema.TensorT()
  extra.name, extra.type = b"other_op_output", schema.TensorType.FLOAT32
  extra.shape, extra.buffer = [1], 0
  subgraph.tensors.append(extra)
  twin = schema.OperatorT()
  twin.opcodeIndex, twin.inputs = conv.opcodeIndex, list(conv.inputs)
  twin.outputs = [len(subgraph.tensors) - 1]
  subgraph.operators.append(twin)
  shared = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
  with pytest.raises(ValueError, match="shared with an op that stays"):
    lib.restore_float_kernels(shared, _matches(HYBRID_LAYER))
