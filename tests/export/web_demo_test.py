"""Tests for the web demo in headless Chromium: same top-k as the Python interpreter, training-equal preprocessing, clear errors."""

import base64
import io
import json
import os
import shutil

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import yaml

from export import run_export_lib
from export import tflite_demo_lib
from export import web_demo_lib
from kc_keras.dataloaders import image_decoding

CHROMIUM = os.environ.get("KC_CHROMIUM", web_demo_lib.CHROMIUM)
CHROMIUM_ARGS = web_demo_lib.CHROMIUM_ARGS
PAGE_TIMEOUT_MS = 60_000
NUM_SAMPLES = 8
TOP_K = 5
# The page runs the Python interpreter's file (batch fixed to 1) in the
# same XNNPACK kernels compiled to WASM; measured <= 4.8e-7 on the logits
# of a 200-class student. The bound leaves room for a different summation
# order in WASM SIMD, far below a logit gap that could reorder the top-k.
MAX_LOGIT_DIFF = 1e-4
# `dynamic` quantizes activations on the fly, and XNNPACK's WASM kernels
# round them differently from the Python interpreter's hybrid kernels:
# measured 4.5e-3 on the demo student (bench/web_demo_bench.py).
MAX_DYNAMIC_LOGIT_DIFF = 2e-2
# Preprocessing bounds (image_decoding's formula on both sides): PNG, with
# or without alpha, colour or grey: float math on both sides from the same
# 8-bit values (the page in double, TF in float32); JPEG decoders differ
# (TF's fast integer IDCT vs Chromium's accurate one).
MAX_RESIZE_DIFF = 1e-5
MAX_JPEG_DIFF = 4.0 / 255.0
# Without ImageDecoder (a Blob with no type) the page reads a canvas, which
# stores 8-bit premultiplied colour: a semi-transparent pixel's a * c is off
# by up to 1/255 after un- and re-premultiplying (measured 0.965 / 255 =
# 3.8e-3 in test_canvas_fallback_bound; the other PNG cases measure
# <= 6.6e-7, JPEG <= 2.2 / 255).
MAX_CANVAS_ALPHA_DIFF = 1.0 / 255.0 + MAX_RESIZE_DIFF
# A background that is not white, grey or symmetric in its channels.
OTHER_BACKGROUND = (0.2, 0.4, 0.6)
# Variants whose logits the page must reproduce (the slow test).
WEB_VARIANTS = ("none", "fp16", "dynamic", "int8_float_head", "int16x8")

playwright_api = pytest.importorskip(
    "playwright.sync_api",
    reason="the python playwright package is not installed (pip install "
           "-e '.[test]')")


def _skip_without_browser():
  if "TEST_SRCDIR" in os.environ:
    pytest.skip("browser tests run under pytest (scripts/run_tests.sh), not "
                "in Bazel's test sandbox (no vendored npm packages, no "
                "browser profile directory)")
  if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium "
                "(.ci/run does) or set KC_CHROMIUM")


def _node_modules():
  """The vendored npm packages, or a skip with the reason."""
  try:
    return web_demo_lib.vendor_npm_packages()
  except web_demo_lib.WebDemoError as e:
    pytest.skip(f"LiteRT.js packages not vendored: {e}")
  except OSError as e:  # A read-only checkout, e.g. Bazel's runfiles.
    pytest.skip(f"LiteRT.js packages not vendored ({e}): run "
                "`python -m export.web_demo --build_only` once")


@pytest.fixture(scope="module")
def playwright():
  _skip_without_browser()
  with playwright_api.sync_playwright() as instance:
    yield instance


@pytest.fixture(scope="module")
def browser(playwright):
  chromium = playwright.chromium.launch(executable_path=CHROMIUM,
                                        args=list(CHROMIUM_ARGS))
  yield chromium
  chromium.close()


@pytest.fixture(scope="module")
def node_modules():
  _skip_without_browser()
  return _node_modules()


@pytest.fixture(scope="module")
def samples(reference, tmp_path_factory):
  """The first eval images as PNG files (as export.sample_images writes)."""
  return run_export_lib.write_pngs(reference.images[:NUM_SAMPLES],
                                   str(tmp_path_factory.mktemp("samples")))


@pytest.fixture(scope="module")
def site(tflite_model, samples, node_modules, tmp_path_factory):
  """The built page for the fp16 student, served on loopback: `(result, url)`."""
  result = web_demo_lib.build(
      output_dir=str(tmp_path_factory.mktemp("site") / "web"),
      models=[tflite_model("fp16")], samples=samples,
      node_modules=node_modules)
  server, url = web_demo_lib.serve_in_thread(result.output_dir)
  yield result, url
  server.shutdown()
  server.server_close()


def _open(browser, url, errors=None):
  page = browser.new_page()
  page.set_default_timeout(PAGE_TIMEOUT_MS)
  if errors is not None:
    page.on("pageerror", lambda e: errors.append(str(e)))
  page.goto(url)
  page.wait_for_function(
      "['ready', 'error'].includes(document.body.dataset.state)")
  return page


def _wait_done(page):
  page.wait_for_function(
      "['done', 'error'].includes(document.body.dataset.state)")
  return page.locator("#status").inner_text()


def _reset(page):
  """Forgets the last result, so that waiting sees only the next one."""
  page.evaluate("document.body.dataset.state = 'pending'; "
                "window.kcDemo.last = null")


def _click_sample(page, index):
  _reset(page)
  page.locator(".sample").nth(index).click()
  status = _wait_done(page)
  assert page.evaluate("document.body.dataset.state") == "done", status
  return page.evaluate("window.kcDemo.last")


def test_page_classifies_samples_as_the_python_demo(browser, site, samples,
                                                    tmp_path):
  result, url = site
  errors = []
  page = _open(browser, url, errors)
  assert page.locator("#status").get_attribute("class") == "status ready", (
      page.locator("#status").inner_text())
  model_path = result.models[0].path
  classifier = tflite_demo_lib.TFLiteClassifier(model_path)
  assert page.locator(".sample").count() == len(samples)
  for index, path in enumerate(samples):
    shown = _click_sample(page, index)
    expected = classifier.classify(path, TOP_K)
    image = tflite_demo_lib.load_image(path, *classifier.image_shape[1:])
    logits = classifier.logits(image[None])[0]
    assert np.abs(np.asarray(shown["logits"]) - logits).max() <= MAX_LOGIT_DIFF
    assert shown["top"][0]["id"] == expected.class_ids[0], path
    assert [row["id"] for row in shown["top"]] == list(expected.class_ids)
    np.testing.assert_allclose([row["score"] for row in shown["top"]],
                               expected.scores, atol=MAX_LOGIT_DIFF)
    # What a person reads: the table's first row and the accelerator.
    first = page.locator("#top5 tr").first.locator("td")
    assert first.nth(1).inner_text() == expected.names[0]
    assert first.nth(2).inner_text() == expected.verticals[0]
  assert page.locator("#accelerator").inner_text() in ("WASM (XNNPACK)",
                                                       "WebGPU")
  assert "ms inference" in page.locator("#latency").inner_text()
  screenshot = tmp_path / "web_demo.png"
  page.screenshot(path=str(screenshot), full_page=True)
  assert Image.open(screenshot).size[0] > 0
  assert not errors
  page.close()


def test_batch_fix_keeps_the_python_numerics(site, tflite_model, samples):
  """The page's file (batch 1) gives the exported file's logits exactly."""
  result, _ = site
  original = tflite_demo_lib.TFLiteClassifier(tflite_model("fp16"))
  fixed = tflite_demo_lib.TFLiteClassifier(result.models[0].path)
  images = np.stack([tflite_demo_lib.load_image(p, *original.image_shape[1:])
                     for p in samples])
  np.testing.assert_array_equal(original.logits(images), fixed.logits(images))


def _encode(pixels, mode, fmt, exif=None):
  buffer = io.BytesIO()
  extra = {} if exif is None else {"exif": exif}
  Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels,
                  mode).save(buffer, format=fmt, **extra)
  return buffer.getvalue()


_DEPTH = {"RGB": 3, "L": 1, "RGBA": 4, "LA": 2}


def _pixels(size, mode):
  """Seeded random 8-bit pixels of `mode`.

  With alpha: every 4th row fully transparent, the next fully opaque, the
  rest uniform in [0, 255], i.e. mostly semi-transparent.
  """
  rng = np.random.RandomState(sum(size))
  pixels = (rng.rand(size[0], size[1], _DEPTH[mode]) * 255).astype(np.uint8)
  if mode in ("RGBA", "LA"):
    pixels[::4, :, -1] = 0  # fully transparent: the background alone
    pixels[1::4, :, -1] = 255
    alpha = pixels[..., -1]
    assert ((alpha > 0) & (alpha < 255)).sum() > alpha.size // 3
  return pixels


def _page_preprocess(page, encoded, mime, target, channels):
  """The page's tensor for `encoded` (its model's background), [S, S, C]."""
  return np.asarray(page.evaluate(
      """async ([b64, type, size, channels]) => {
           const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
           return window.kcDemo.preprocess(new Blob([bytes], {type}), size,
                                           channels);
         }""",
      [base64.b64encode(encoded).decode(), mime, target, channels]),
                    np.float32).reshape(target, target, channels)


def _training(encoded, target, channels,
              background=image_decoding.DEFAULT_ALPHA_BACKGROUND):
  return image_decoding.decode_and_resize(
      tf.constant(encoded), target, channels, background).numpy()


@pytest.mark.parametrize("size, channels, target, mode, fmt", [
    ((40, 50), 3, 16, "RGB", "PNG"),     # downscale, colour
    ((9, 7), 3, 16, "RGB", "PNG"),       # upscale
    ((105, 105), 1, 28, "L", "PNG"),     # Omniglot-like
    ((30, 30), 1, 16, "RGB", "PNG"),     # colour file to grey: float luma
    ((20, 24), 3, 16, "L", "PNG"),       # grey file to colour
    ((16, 16), 3, 16, "RGBA", "PNG"),    # alpha composited onto white
    ((33, 17), 3, 16, "RGBA", "PNG"),    # alpha, resized
    ((31, 26), 1, 16, "RGBA", "PNG"),    # grey model, RGBA file
    ((18, 22), 3, 16, "LA", "PNG"),      # grey + alpha file to colour
    ((300, 200), 3, 32, "RGB", "JPEG"),
    ((120, 90), 1, 16, "RGB", "JPEG"),   # colour JPEG to grey
])
def test_preprocessing_matches_training(browser, site, size, channels, target,
                                        mode, fmt):
  """Default (white) background: the fp16 test export's params have it."""
  _, url = site
  assert site[0].models[0].alpha_background == (
      image_decoding.DEFAULT_ALPHA_BACKGROUND)
  encoded = _encode(_pixels(size, mode), mode, fmt)
  page = _open(browser, url)
  assert page.evaluate("window.kcDemo.state.background") == list(
      image_decoding.DEFAULT_ALPHA_BACKGROUND)
  ours = _page_preprocess(page, encoded, f"image/{fmt.lower()}", target,
                          channels)
  page.close()
  theirs = _training(encoded, target, channels)
  tolerance = MAX_JPEG_DIFF if fmt == "JPEG" else MAX_RESIZE_DIFF
  assert np.abs(ours - theirs).max() <= tolerance


@pytest.fixture(scope="module")
def other_background_site(tflite_model, exported, node_modules,
                          tmp_path_factory):
  """A run whose export trained with `OTHER_BACKGROUND`: the page's config takes it from its params.yaml."""
  run = tmp_path_factory.mktemp("other_background_run")
  for suffix in ("", web_demo_lib.LABELS_SUFFIX,
                 web_demo_lib.VERTICALS_SUFFIX):
    shutil.copyfile(tflite_model("fp16") + suffix,
                    str(run / f"kc_other_fp16.tflite{suffix}"))
  params_path = run / "serving" / "kc_other" / "1" / web_demo_lib.EXPORT_PARAMS
  params_path.parent.mkdir(parents=True)
  with open(os.path.join(exported.version_dir,
                         web_demo_lib.EXPORT_PARAMS)) as f:
    params = yaml.safe_load(f)
  params["task"]["data"]["alpha_background"] = list(OTHER_BACKGROUND)
  params_path.write_text(yaml.safe_dump(params))
  result = web_demo_lib.build(str(run), node_modules=node_modules)
  server, url = web_demo_lib.serve_in_thread(result.output_dir)
  yield result, url
  server.shutdown()
  server.server_close()


@pytest.mark.parametrize("size, channels, mode", [
    ((33, 17), 3, "RGBA"),
    ((31, 26), 1, "RGBA"),   # background through Y(b)
    ((18, 22), 3, "LA"),
    ((20, 20), 3, "RGB"),    # opaque: no blend
])
def test_preprocessing_with_the_runs_background(browser, other_background_site,
                                                size, channels, mode):
  result, url = other_background_site
  with open(os.path.join(result.output_dir, "config.json")) as f:
    entry = json.load(f)["models"][0]
  assert entry["alpha_background"] == list(OTHER_BACKGROUND)
  assert entry["alpha_background_source"] == os.path.join(
      "serving", "kc_other", "1", web_demo_lib.EXPORT_PARAMS)
  encoded = _encode(_pixels(size, mode), mode, "PNG")
  page = _open(browser, url)
  assert page.evaluate("document.body.dataset.state") == "ready"
  assert page.evaluate("window.kcDemo.state.background") == list(
      OTHER_BACKGROUND)
  assert "transparency onto (0.2, 0.4, 0.6)" in page.locator(
      "#model-info").inner_text()
  ours = _page_preprocess(page, encoded, "image/png", 16, channels)
  page.close()
  theirs = _training(encoded, 16, channels, OTHER_BACKGROUND)
  assert np.abs(ours - theirs).max() <= MAX_RESIZE_DIFF
  if mode != "RGB":  # The background matters: white would be far off.
    assert np.abs(ours - _training(encoded, 16, channels)).max() > 0.1


def test_jpeg_exif_orientation_is_applied(browser, site):
  """A JPEG whose EXIF orientation (6: rotate 90 clockwise) turns 60 x 40 into 40 x 60, as training decodes it."""
  _, url = site
  pixels = np.zeros((40, 60, 3), np.uint8)
  pixels[:, :20] = (250, 30, 30)  # a red left third, a green top band
  pixels[:8] = (30, 250, 30)
  exif = Image.Exif()
  exif[0x0112] = 6
  encoded = _encode(pixels, "RGB", "JPEG", exif=exif.tobytes())
  page = _open(browser, url)
  ours = _page_preprocess(page, encoded, "image/jpeg", 16, 3)
  page.close()
  theirs = _training(encoded, 16, 3)
  stored = _training(_encode(pixels, "RGB", "JPEG"), 16, 3)
  assert np.abs(theirs - stored).max() > 0.5  # The orientation matters.
  assert np.abs(ours - theirs).max() <= MAX_JPEG_DIFF


def test_canvas_fallback_bound(browser, site):
  """Without ImageDecoder (a Blob with no type) semi-transparent pixels go through the canvas's 8-bit premultiplied storage."""
  _, url = site
  encoded = _encode(_pixels((24, 24), "RGBA"), "RGBA", "PNG")
  page = _open(browser, url)
  ours = _page_preprocess(page, encoded, "", 24, 3)  # same size: per pixel
  page.close()
  theirs = _training(encoded, 24, 3)
  diff = np.abs(ours - theirs).max()
  print(f"canvas fallback: max |page - training| = {diff:.3e} "
        f"({diff * 255:.3f} / 255)")
  assert diff <= MAX_CANVAS_ALPHA_DIFF


def _status_after_upload(page, name, content, mime):
  _reset(page)
  page.locator("#file").set_input_files(
      files=[{"name": name, "mimeType": mime, "buffer": content}])
  _wait_done(page)
  return (page.evaluate("document.body.dataset.state"),
          page.locator("#status").inner_text())


def _png_header(width, height):
  """A PNG signature and IHDR claiming `width x height` (no pixel data)."""
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  chunk = b"IHDR" + ihdr
  return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
          + struct.pack(">I", zlib.crc32(chunk)))


def test_bad_inputs_show_a_message(browser, site, samples):
  _, url = site
  page = _open(browser, url)
  state, text = _status_after_upload(page, "notes.txt", b"not an image",
                                     "text/plain")
  assert state == "error" and "not an image" in text, text
  state, text = _status_after_upload(page, "huge.png",
                                     _png_header(20000, 20000), "image/png")
  assert state == "error" and "20000 x 20000 pixels" in text, text
  state, text = _status_after_upload(page, "truncated.png",
                                     _png_header(16, 16), "image/png")
  assert state == "error" and "not an image" in text, text
  # The page still works after the errors.
  with open(samples[0], "rb") as f:
    state, text = _status_after_upload(page, "ok.png", f.read(), "image/png")
  assert state == "done", text
  page.close()


def test_dropped_image_is_classified(browser, site, samples):
  _, url = site
  page = _open(browser, url)
  with open(samples[1], "rb") as f:
    encoded = base64.b64encode(f.read()).decode()
  _reset(page)
  page.evaluate(
      """(b64) => {
           const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
           const transfer = new DataTransfer();
           transfer.items.add(new File([bytes], 'dropped.png',
                                       {type: 'image/png'}));
           document.getElementById('drop').dispatchEvent(
               new DragEvent('drop', {dataTransfer: transfer, bubbles: true,
                                      cancelable: true}));
         }""", encoded)
  assert _wait_done(page) == "Classified dropped.png."
  classifier = tflite_demo_lib.TFLiteClassifier(site[0].models[0].path)
  assert page.evaluate("window.kcDemo.last.top[0].id") == (
      classifier.classify(samples[1], 1).class_ids[0])
  page.close()


def test_camera_frame_is_classified(playwright, site):
  """Chromium's fake camera (a generated test pattern) through the camera button."""
  _, url = site
  chromium = playwright.chromium.launch(
      executable_path=CHROMIUM,
      args=list(CHROMIUM_ARGS) + ["--use-fake-device-for-media-stream",
                                  "--use-fake-ui-for-media-stream"])
  try:
    page = _open(chromium, url)
    page.locator("#camera-button").click()
    page.locator("#snap").wait_for(state="visible")
    page.wait_for_function(
        "document.getElementById('camera').videoWidth > 0")
    _reset(page)
    page.locator("#snap").click()
    assert _wait_done(page) == "Classified camera frame."
    assert len(page.evaluate("window.kcDemo.last.top")) == TOP_K
  finally:
    chromium.close()


def test_model_that_fails_to_load_shows_a_message(browser, site,
                                                  tmp_path):
  result, _ = site
  broken = str(tmp_path / "web")
  shutil.copytree(result.output_dir, broken)
  with open(os.path.join(broken, "config.json")) as f:
    config = json.load(f)
  with open(os.path.join(broken, config["models"][0]["file"]), "wb") as f:
    f.write(b"TFL3 but not a model" * 10)
  server, url = web_demo_lib.serve_in_thread(broken)
  try:
    page = _open(browser, url)
    assert page.evaluate("document.body.dataset.state") == "error"
    text = page.locator("#status").inner_text()
    assert "failed to load" in text, text
    assert page.locator("header h1").is_visible()
    page.close()
  finally:
    server.shutdown()
    server.server_close()


def test_served_with_isolation_headers(site):
  import urllib.request  # pylint: disable=g-import-not-at-top
  _, url = site
  with urllib.request.urlopen(url + "vendor/@litertjs/core/wasm/"
                              "litert_wasm_internal.wasm") as response:
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert response.headers["Content-Type"] == "application/wasm"


@pytest.mark.slow
def test_variants_in_the_browser(browser, tflite_model, reference, samples,
                                 node_modules, tmp_path):
  """Every variant LiteRT.js runs gives the interpreter's logits; int8 is refused at build time.

  Prints a table (size, load, latency, top-1 agreement with Keras on the
  sample images) for docs/SERVING.md: run with `-s`.
  """
  models = [tflite_model(q) for q in WEB_VARIANTS + ("int8",)]
  result = web_demo_lib.build(output_dir=str(tmp_path / "web"),
                              models=models, samples=samples,
                              node_modules=node_modules)
  assert [s["name"] for s in result.skipped] == ["model_int8"]
  assert "int8" in result.skipped[0]["reason"]
  keras_top1 = np.argmax(reference.logits[:len(samples)], axis=-1)
  server, url = web_demo_lib.serve_in_thread(result.output_dir)
  rows = []
  try:
    for model in result.models:
      page = _open(browser, f"{url}?model={model.name}")
      assert page.evaluate("document.body.dataset.state") == "ready", (
          page.locator("#status").inner_text())
      load_ms = float(page.evaluate("document.body.dataset.loadMs"))
      classifier = tflite_demo_lib.TFLiteClassifier(model.path)
      latencies, agree = [], 0
      for index, path in enumerate(samples):
        shown = _click_sample(page, index)
        image = tflite_demo_lib.load_image(path, *classifier.image_shape[1:])
        logits = classifier.logits(image[None])[0]
        bound = (MAX_DYNAMIC_LOGIT_DIFF if model.name.endswith("_dynamic")
                 else MAX_LOGIT_DIFF)
        assert np.abs(np.asarray(shown["logits"]) - logits).max() <= bound, (
            model.name)
        assert shown["top"][0]["id"] == int(np.argmax(logits)), model.name
        agree += shown["top"][0]["id"] == keras_top1[index]
        latencies.append(shown["latencyMs"])
      rows.append((model.name, model.bytes, load_ms,
                   float(np.median(latencies[1:] or latencies)),
                   agree / len(samples)))
      page.close()
  finally:
    server.shutdown()
    server.server_close()
  print("\n| variant | bytes | load ms | median ms/image | top-1 = Keras |")
  for name, size, load_ms, latency, agreement in rows:
    print(f"| {name} | {size} | {load_ms:.0f} | {latency:.2f} | "
          f"{agreement:.0%} |")
