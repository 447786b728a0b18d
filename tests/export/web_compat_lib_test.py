"""Tests for export.web_compat_lib: which TFLite files LiteRT.js can run, and the batch-1 rewrite."""

from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils
import numpy as np
import pytest

from export import tflite_demo_lib
from export import web_compat_lib


def _read(path):
  with open(path, "rb") as f:
    return f.read()


@pytest.mark.parametrize("quantization", ["none", "fp16", "dynamic"])
def test_float_io_variants_run(tflite_model, quantization):
  assert web_compat_lib.problems(_read(tflite_model(quantization))) == []


def test_int8_io_is_refused_with_the_reason(tflite_model):
  found = web_compat_lib.problems(_read(tflite_model("int8")))
  assert len(found) == 1
  assert "is int8" in found[0] and "int8_float_head" in found[0]
  with pytest.raises(web_compat_lib.WebCompatError, match="int8"):
    web_compat_lib.check(_read(tflite_model("int8")), "model_int8")


def test_custom_ops_are_refused(tflite_model):
  model = flatbuffer_utils.read_model_from_bytearray(
      bytearray(_read(tflite_model("none"))))
  code = model.operatorCodes[0]
  code.builtinCode = code.deprecatedBuiltinCode = (
      schema.BuiltinOperator.CUSTOM)
  code.customCode = "FlexConv2D"
  content = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
  found = web_compat_lib.problems(content)
  assert any("FlexConv2D" in p for p in found), found


def test_not_a_model():
  with pytest.raises(web_compat_lib.WebCompatError, match="not a TFLite"):
    web_compat_lib.problems(b"\x00" * 3)


def test_fix_batch_dimension_keeps_outputs(tflite_model, reference, tmp_path):
  original = _read(tflite_model("fp16"))
  fixed = web_compat_lib.fix_batch_dimension(original)
  model = flatbuffer_utils.read_model_from_bytearray(bytearray(fixed))
  signatures = [list(t.shapeSignature) for g in model.subgraphs
                for t in g.tensors if t.shapeSignature is not None]
  assert signatures and min(min(s) for s in signatures if s) >= 0
  for name, content in (("a", original), ("b", fixed)):
    (tmp_path / f"{name}.tflite").write_bytes(content)
    for suffix in (".labels.txt", ".verticals.txt"):
      (tmp_path / f"{name}.tflite{suffix}").write_bytes(
          _read(tflite_model("fp16") + suffix))
  images = reference.images[:4]
  a = tflite_demo_lib.TFLiteClassifier(str(tmp_path / "a.tflite"))
  b = tflite_demo_lib.TFLiteClassifier(str(tmp_path / "b.tflite"))
  np.testing.assert_array_equal(a.logits(images), b.logits(images))


def test_describe(tflite_model):
  assert "runs it" in web_compat_lib.describe(tflite_model("fp16"))
  assert "cannot run" in web_compat_lib.describe(tflite_model("int8"))


def test_exporter_says_when_the_page_cannot_run_a_variant(exported, tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import export_test_utils  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, PYTHONPATH=str(export_test_utils.REPO_ROOT))
  result = subprocess.run(
      [sys.executable, "-m", "export.export_tflite",
       f"--saved_model_dir={exported.version_dir}",
       f"--output={tmp_path / 'm.tflite'}", "--quantization=int8",
       "--representative_examples=8"],
      capture_output=True, text=True, cwd=str(export_test_utils.REPO_ROOT),
      env=env, timeout=300, check=True)
  assert "web demo (LiteRT.js): cannot run it" in result.stdout
  assert "is int8" in result.stdout
