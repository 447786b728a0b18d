"""Tests for export.tflite_demo: TF-free import chain, training-equal resize, CLI errors."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import export_test_utils as test_utils
from export import tflite_demo_lib
from kc_keras.dataloaders import image_decoding
from kc_keras.utils import files

# PIL's float bilinear vs TF's antialiased bilinear on PNGs (measured
# <= 9e-7 on the cases below: float math on both sides).
MAX_RESIZE_DIFF = 1e-5
# JPEG: the decoders differ (TF's libjpeg-turbo fast integer IDCT vs PIL's
# accurate one); measured <= 0.015 (3.7 grey levels) on the cases below.
MAX_JPEG_DIFF = 4.0 / 255.0
SUBPROCESS_TIMEOUT_S = 120


def _run(args, **kwargs):
  return subprocess.run(
      [sys.executable, *args], capture_output=True, text=True,
      cwd=str(test_utils.REPO_ROOT), timeout=SUBPROCESS_TIMEOUT_S, **kwargs)


@pytest.mark.parametrize("size, channels, target, mode, ext", [
    ((40, 50), 3, 16, "RGB", "png"),   # downscale, colour
    ((9, 7), 3, 16, "RGB", "png"),     # upscale
    ((105, 105), 1, 28, "L", "png"),   # Omniglot-like
    ((30, 30), 1, 16, "RGB", "png"),   # colour file to grey
    ((20, 24), 3, 16, "L", "png"),     # grey file to colour
    ((16, 16), 3, 16, "RGBA", "png"),  # alpha composited
    ((16, 16), 1, 16, "RGBA", "png"),
    ((12, 10), 3, 16, "LA", "png"),
    ((300, 200), 3, 32, "RGB", "jpg"),
    ((105, 105), 1, 28, "L", "jpg"),
])
def test_resize_matches_training(tmp_path, size, channels, target, mode, ext):
  rng = np.random.RandomState(sum(size))
  depth = {"RGB": 3, "L": 1, "RGBA": 4, "LA": 2}[mode]
  pixels = (rng.rand(size[0], size[1], depth) * 255).astype(np.uint8)
  path = str(tmp_path / f"image.{ext}")
  Image.fromarray(pixels[..., 0] if depth == 1 else pixels, mode).save(path)
  ours = tflite_demo_lib.load_image(path, target, channels)
  with open(path, "rb") as f:
    theirs = image_decoding.decode_and_resize(tf.constant(f.read()), target,
                                              channels).numpy()
  assert ours.shape == theirs.shape == (target, target, channels)
  tolerance = MAX_JPEG_DIFF if ext == "jpg" else MAX_RESIZE_DIFF
  assert np.abs(ours - theirs).max() <= tolerance


def _special_image(kind):
  """(PIL image, save kwargs, extension) of a file that needs more than RGB decoding."""
  rng = np.random.RandomState(7)
  if kind == "palette_transparency":
    image = Image.fromarray(rng.randint(0, 6, (21, 17)).astype(np.uint8), "P")
    image.putpalette(list(rng.randint(0, 256, 18)) + [0] * 750)
    return image, dict(transparency=2), "png"
  if kind == "colour_key":
    image = Image.fromarray(rng.randint(0, 2, (15, 19, 3)).astype(np.uint8) * 200)
    return image, dict(transparency=(200, 0, 200)), "png"
  if kind == "sixteen_bit":
    values = rng.randint(0, 65536, (13, 11)).astype("<u2")
    return Image.frombytes("I;16", (11, 13), values.tobytes()), {}, "png"
  if kind == "exif_rotated":
    # Smooth ramps, distinct along each axis: a wrong turn shows, and the two
    # JPEG decoders agree as on photos (noise would test their upsampling).
    rows, cols = np.mgrid[0:24, 0:40]
    image = Image.fromarray(np.stack(
        [rows * 10, cols * 6, 255 - cols * 3], -1).astype(np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    return image, dict(exif=exif.tobytes(), quality=95), "jpg"
  raise ValueError(kind)


@pytest.mark.parametrize("kind", ["palette_transparency", "colour_key",
                                  "sixteen_bit", "exif_rotated"])
@pytest.mark.parametrize("channels", [1, 3])
def test_special_files_match_training(tmp_path, kind, channels):
  image, kwargs, ext = _special_image(kind)
  path = str(tmp_path / f"image.{ext}")
  image.save(path, **kwargs)
  background = (0.1, 0.6, 0.3)
  ours = tflite_demo_lib.load_image(path, 16, channels,
                                    alpha_background=background)
  with open(path, "rb") as f:
    theirs = image_decoding.decode_and_resize(
        tf.constant(f.read()), 16, channels, background).numpy()
  tolerance = MAX_JPEG_DIFF if ext == "jpg" else MAX_RESIZE_DIFF
  assert np.abs(ours - theirs).max() <= tolerance


def test_decode_constants_equal_training():
  assert tflite_demo_lib.LUMA_WEIGHTS == image_decoding.LUMA_WEIGHTS
  assert (tflite_demo_lib.DEFAULT_ALPHA_BACKGROUND
          == image_decoding.DEFAULT_ALPHA_BACKGROUND)


def test_no_tensorflow_in_the_import_chain(tflite_model, tmp_path):
  model = tflite_model("int8")
  image = str(tmp_path / "x.png")
  Image.new("RGB", (20, 20), (200, 10, 10)).save(image)
  code = (
      "import sys, runpy\n"
      f"sys.argv = ['tflite_demo', '--model={model}', '{image}']\n"
      "try:\n"
      "  runpy.run_module('export.tflite_demo', run_name='__main__')\n"
      "except SystemExit as e:\n"
      "  code = e.code\n"
      "print('TF_LOADED' if any(m == 'tensorflow' or m.startswith("
      "'tensorflow.') for m in sys.modules) else 'TF_FREE', code)\n")
  result = _run(["-c", code])
  assert "TF_FREE 0" in result.stdout, result.stdout + result.stderr


def test_cli_prints_top_k_and_agrees_with_saved_model(
    tflite_model, reference, exported, tmp_path):
  paths = []
  for i in range(4):
    path = str(tmp_path / f"eval{i}.png")
    with open(path, "wb") as f:
      f.write(test_utils.encode_png(reference.images[i]))
    paths.append(path)
  result = _run(["-m", "export.tflite_demo", f"--model={tflite_model('none')}",
                 "--top_k=3", *paths])
  assert result.returncode == 0, result.stderr
  loaded = tf.saved_model.load(exported.version_dir)
  encoded = [open(p, "rb").read() for p in paths]
  served = loaded.signatures["serving_default"](image_bytes=tf.constant(
      encoded))["top_k_names"].numpy().astype(str)
  blocks = result.stdout.strip().split("\n")
  for i, path in enumerate(paths):
    header = blocks[4 * i]
    assert header.startswith(path) and header.endswith("ms)")
    assert blocks[4 * i + 1].split()[1] == served[i, 0]


def test_cli_bad_inputs(tflite_model, tmp_path):
  model = f"--model={tflite_model('int8')}"
  good = str(tmp_path / "good.jpg")
  Image.new("RGB", (30, 30), (0, 90, 200)).save(good)
  truncated = str(tmp_path / "truncated.jpg")
  with open(good, "rb") as f:
    data = f.read()
  with open(truncated, "wb") as f:
    f.write(data[:len(data) // 3])
  text = str(tmp_path / "notes.txt")
  with open(text, "w") as f:
    f.write("not an image")
  result = _run(["-m", "export.tflite_demo", model, good, truncated, text])
  assert result.returncode == 1
  assert "truncated.jpg: not a decodable image" in result.stderr
  assert "notes.txt: not a decodable image" in result.stderr
  assert good in result.stdout
  assert "Traceback" not in result.stderr
  result = _run(["-m", "export.tflite_demo", model])
  assert result.returncode == 2
  assert "no images given" in result.stderr
  result = _run(["-m", "export.tflite_demo", f"--model={text}", good])
  assert result.returncode == 2 and "Traceback" not in result.stderr


def test_int8_quantization_round_trip(tflite_model):
  classifier = tflite_demo_lib.TFLiteClassifier(tflite_model("int8"))
  scale, zero = classifier.input_detail["quantization"]
  images = np.linspace(0, 1, 16 * 16 * 3, dtype=np.float32).reshape(
      1, 16, 16, 3)
  q = classifier._quantize(images)  # pylint: disable=protected-access
  assert q.dtype == np.int8
  np.testing.assert_allclose(scale * (q.astype(np.float32) - zero), images,
                             atol=scale / 2 + 1e-7)
  with pytest.raises(tflite_demo_lib.DemoError, match=r"\[B, 16, 16, 3\]"):
    classifier.logits(np.zeros((1, 8, 8, 3), np.float32))


@pytest.mark.parametrize("quantization", ["none", "int8", "int8_float_head"])
def test_batch_logits_equal_per_image_logits(tflite_model, reference,
                                             quantization):
  classifier = tflite_demo_lib.TFLiteClassifier(tflite_model(quantization))
  images = reference.images[:5]
  batched = classifier.batch_logits(images)
  assert batched.shape == (5, reference.logits.shape[1])
  # One invoke over the batch computes each row as the per-image invokes do.
  np.testing.assert_allclose(batched, classifier.logits(images), atol=1e-5)
  with pytest.raises(tflite_demo_lib.DemoError, match=r"got \[5, 16, 16\]"):
    classifier.batch_logits(images[..., 0])


def test_a_set_mixed_by_an_interrupted_export_is_refused(tmp_path):
  model = str(tmp_path / "m.tflite")
  labels = model + tflite_demo_lib.LABELS_SUFFIX
  verticals = model + tflite_demo_lib.VERTICALS_SUFFIX
  files.write_file_set({labels: b"a\n", verticals: b"v\n", model: b"old"},
                       model + tflite_demo_lib.MANIFEST_SUFFIX)
  # What an export killed after its labels and before its model leaves.
  with open(labels, "wb") as f:
    f.write(b"b\n")
  with pytest.raises(tflite_demo_lib.DemoError,
                     match=r"m.tflite.manifest.json: the files are not the "
                           r"set it lists \(m.tflite.labels.txt differs\)"):
    tflite_demo_lib.TFLiteClassifier(model)
