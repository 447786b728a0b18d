"""Tests for export.web_demo_lib without a browser: the site layout, refused models, the server's headers."""

import json
import os
import shutil
import urllib.request

import pytest

from export import web_compat_lib
from export import web_demo_lib


@pytest.fixture
def fake_node_modules(tmp_path):
  """Stand-ins for the vendored files (the build only copies them)."""
  root = tmp_path / "node_modules"
  for name in web_demo_lib.VENDOR_FILES:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("// vendored\n")
  return str(root)


def _run_dir(tmp_path, tflite_model, variants):
  run = tmp_path / "run"
  (run / "samples").mkdir(parents=True)
  for quantization in variants:
    source = tflite_model(quantization)
    for suffix in ("", ".labels.txt", ".verticals.txt"):
      shutil.copyfile(source + suffix,
                      str(run / f"m_{quantization}.tflite{suffix}"))
  (run / "samples" / "eval_0.png").write_bytes(b"png")
  return str(run)


def test_build_writes_the_site(tmp_path, tflite_model, fake_node_modules):
  run = _run_dir(tmp_path, tflite_model, ["fp16", "int8"])
  result = web_demo_lib.build(run, node_modules=fake_node_modules)
  assert result.output_dir == os.path.join(run, "web")
  assert [m.name for m in result.models] == ["m_fp16"]
  assert [s["name"] for s in result.skipped] == ["m_int8"]
  with open(os.path.join(result.output_dir, "config.json")) as f:
    config = json.load(f)
  assert config["models"][0]["file"] == "models/m_fp16.tflite"
  assert config["samples"] == [{"name": "eval_0.png",
                                "file": "samples/000_eval_0.png"}]
  for name in web_demo_lib.PAGE_FILES + tuple(
      "vendor/" + f for f in web_demo_lib.VENDOR_FILES):
    assert os.path.isfile(os.path.join(result.output_dir, name)), name
  with open(result.models[0].path, "rb") as f:
    assert web_compat_lib.problems(f.read()) == []
  # A second build replaces the first (no stale files).
  os.remove(os.path.join(run, "m_int8.tflite"))
  result = web_demo_lib.build(run, node_modules=fake_node_modules)
  assert result.skipped == []


def test_build_refuses_a_run_with_no_runnable_model(tmp_path, tflite_model,
                                                    fake_node_modules):
  run = _run_dir(tmp_path, tflite_model, ["int8"])
  with pytest.raises(web_demo_lib.WebDemoError, match="no model LiteRT.js"):
    web_demo_lib.build(run, node_modules=fake_node_modules)
  with pytest.raises(web_demo_lib.WebDemoError, match="no .tflite file"):
    web_demo_lib.build(str(tmp_path / "run" / "samples"),
                       node_modules=fake_node_modules)


def test_server_sends_isolation_headers(tmp_path, tflite_model,
                                        fake_node_modules):
  run = _run_dir(tmp_path, tflite_model, ["fp16"])
  result = web_demo_lib.build(run, node_modules=fake_node_modules)
  server, url = web_demo_lib.serve_in_thread(result.output_dir)
  try:
    with urllib.request.urlopen(url + "models/m_fp16.tflite") as response:
      for key, value in web_demo_lib.SERVE_HEADERS.items():
        assert response.headers[key] == value
  finally:
    server.shutdown()
    server.server_close()
  with pytest.raises(web_demo_lib.WebDemoError, match="no index.html"):
    web_demo_lib.make_server(str(tmp_path))
