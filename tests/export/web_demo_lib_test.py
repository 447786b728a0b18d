"""Tests for export.web_demo_lib without a browser: the site layout, refused models, the server's headers."""

import json
import os
import shutil
import urllib.request

import pytest
import yaml

from export import web_compat_lib
from export import web_demo_lib
from kc_keras.dataloaders import image_decoding


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
  # No SavedModel export beside the file: the default, said to be one.
  assert config["models"][0]["alpha_background"] == [1.0, 1.0, 1.0]
  assert config["models"][0]["alpha_background_source"].startswith(
      "default (kc_keras.dataloaders.image_decoding.DEFAULT_ALPHA_BACKGROUND)")
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


def test_default_background_is_image_decodings():
  assert (web_demo_lib.DEFAULT_ALPHA_BACKGROUND
          == image_decoding.DEFAULT_ALPHA_BACKGROUND)


def _write_params(run, name, version, exported, background):
  """Writes `run/serving/<name>/<version>/assets.extra/params.yaml`.

  The test export's params with `task.data.alpha_background` set to
  `background` (removed when None).
  """
  with open(os.path.join(exported.version_dir,
                         web_demo_lib.EXPORT_PARAMS)) as f:
    params = yaml.safe_load(f)
  assert params["task"]["data"]["alpha_background"] == [1.0, 1.0, 1.0]
  if background is None:
    del params["task"]["data"]["alpha_background"]
  else:
    params["task"]["data"]["alpha_background"] = background
  path = os.path.join(run, "serving", name, str(version),
                      web_demo_lib.EXPORT_PARAMS)
  os.makedirs(os.path.dirname(path))
  with open(path, "w") as f:
    yaml.safe_dump(params, f)
  return path


def test_background_comes_from_the_runs_export(tmp_path, tflite_model,
                                               exported, fake_node_modules):
  """`m_fp16.tflite` takes `serving/m/<latest>`'s; `m_fp16` beats `m`."""
  run = _run_dir(tmp_path, tflite_model, ["fp16", "none"])
  _write_params(run, "m", 1, exported, [0.5, 0.5, 0.5])
  _write_params(run, "m", 2, exported, [0.2, 0.4, 0.6])
  _write_params(run, "m_fp16", 1, exported, [0.0, 0.0, 0.0])
  _write_params(run, "other", 3, exported, [0.9, 0.9, 0.9])
  result = web_demo_lib.build(run, node_modules=fake_node_modules)
  with open(os.path.join(result.output_dir, "config.json")) as f:
    entries = {e["name"]: e for e in json.load(f)["models"]}
  assert entries["m_fp16"]["alpha_background"] == [0.0, 0.0, 0.0]
  assert entries["m_fp16"]["alpha_background_source"] == os.path.join(
      "serving", "m_fp16", "1", "assets.extra", "params.yaml")
  assert entries["m_none"]["alpha_background"] == [0.2, 0.4, 0.6]
  assert entries["m_none"]["alpha_background_source"] == os.path.join(
      "serving", "m", "2", "assets.extra", "params.yaml")
  by_name = {m.name: m for m in result.models}
  assert by_name["m_none"].alpha_background == (0.2, 0.4, 0.6)
  # A build-wide background replaces every model's.
  result = web_demo_lib.build(run, node_modules=fake_node_modules,
                              background=(0.1, 0.2, 0.3))
  assert [m.alpha_background for m in result.models] == [(0.1, 0.2, 0.3)] * 2
  assert {m.alpha_background_source for m in result.models} == {
      "given to the build"}


def test_background_of_an_older_or_bad_export(tmp_path, tflite_model,
                                              exported, fake_node_modules):
  run = _run_dir(tmp_path, tflite_model, ["fp16"])
  path = _write_params(run, "m", 1, exported, None)
  result = web_demo_lib.build(run, node_modules=fake_node_modules)
  assert result.models[0].alpha_background == (1.0, 1.0, 1.0)
  assert result.models[0].alpha_background_source.endswith(
      "params.yaml has no task.data.alpha_background")
  for bad in ([0.2, 0.4], [0.2, 0.4, 1.5], "white"):
    with open(path) as f:
      params = yaml.safe_load(f)
    params["task"]["data"]["alpha_background"] = bad
    with open(path, "w") as f:
      yaml.safe_dump(params, f)
    with pytest.raises(web_demo_lib.WebDemoError,
                       match="params.yaml: alpha_background=.*must be 3"):
      web_demo_lib.build(run, node_modules=fake_node_modules)
  with open(path, "w") as f:
    f.write("task: [unclosed\n")
  with pytest.raises(web_demo_lib.WebDemoError, match="could not be read"):
    web_demo_lib.build(run, node_modules=fake_node_modules)
  with pytest.raises(web_demo_lib.WebDemoError, match="build.background"):
    web_demo_lib.build(run, node_modules=fake_node_modules,
                       background=(2, 0, 0))
