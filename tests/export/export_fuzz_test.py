"""Bounded fuzzing of the serving signatures and the demo decoder with hostile bytes."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import export_test_utils as test_utils
from export import tflite_demo_lib

NUM_CASES = 24
SEED = 1234
HUGE_SIDE = 100_000


def _jpeg(rng, size=(20, 24)):
  pixels = (rng.rand(*size, 3) * 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="JPEG")
  return buffer.getvalue()


def _huge_png_header():
  return (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" +
          HUGE_SIDE.to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00" +
          b"\x00" * 32)


def _huge_jpeg_header(rng):
  # A valid JPEG whose SOF0 marker is rewritten to claim 65000 x 65000.
  data = bytearray(_jpeg(rng))
  sof = data.index(b"\xff\xc0")
  data[sof + 5:sof + 9] = (65000).to_bytes(2, "big") * 2
  return bytes(data)


def _cases():
  rng = np.random.RandomState(SEED)
  good = _jpeg(rng)
  cases = [b"", good[:2], good[:len(good) // 2], _huge_png_header(),
           _huge_jpeg_header(rng), b"\x89PNG\r\n\x1a\n" + b"\x00" * 40]
  while len(cases) < NUM_CASES:
    kind = len(cases) % 3
    if kind == 0:
      cases.append(rng.bytes(rng.randint(1, 200)))
    elif kind == 1:  # a valid image with flipped bytes
      data = bytearray(good)
      for i in rng.randint(0, len(data), size=8):
        data[i] = rng.randint(256)
      cases.append(bytes(data))
    else:  # a valid image cut short
      cases.append(good[:rng.randint(1, len(good))])
  return good, cases


@pytest.fixture(scope="module")
def loaded(exported):
  return tf.saved_model.load(exported.version_dir)


def test_serving_default_fuzz(loaded):
  good, cases = _cases()
  serve = loaded.signatures["serving_default"]
  reference = serve(image_bytes=tf.constant([good]))["top_k_classes"].numpy()
  for case in cases:
    try:
      out = serve(image_bytes=tf.constant([good, case]))
    except tf.errors.InvalidArgumentError as e:
      assert "Invalid" in e.message or "JPEG" in e.message or (
          "PNG" in e.message), e.message
      continue
    # Accepted (e.g. a flipped byte inside pixel data): a full, sane answer.
    ids = out["top_k_classes"].numpy()
    assert ids.shape == (2, 5)
    np.testing.assert_array_equal(ids[0], reference[0])
    assert np.all(np.isfinite(out["top_k_scores"].numpy()))


def test_serve_image_fuzz(loaded, reference):
  serve = loaded.signatures["serve_image"]
  shape = reference.image_shape
  assert serve(images=tf.zeros([0, *shape]))["logits"].shape[0] == 0
  for bad_shape in ([1, 1, 1, 3], [2, shape[0], shape[1], 1],
                    [1, 2 * shape[0], shape[1], 3]):
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected shape"):
      serve(images=tf.zeros(bad_shape))
  bounds = np.stack([np.full(shape, v, np.float32) for v in (0, 1)])
  out = serve(images=tf.constant(bounds))["probs"].numpy()
  assert out.shape == (2, reference.hierarchy.num_classes)
  assert np.all(np.isfinite(out))
  # Outside [0, 1] (overflow, NaN, a 0..255 scale): an error, never scores.
  for value in (1e30, -1e3, np.nan, np.inf, 255.0):
    images = np.stack([np.zeros(shape, np.float32),
                       np.full(shape, value, np.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"Invalid images: values must be float32 in "
                             r"\[0, 1\]; batch indices[^\n]*\[1\]"):
      serve(images=tf.constant(images))


def test_examples_fuzz(loaded):
  rng = np.random.RandomState(SEED)
  serve = loaded.signatures["serve_examples"]
  valid = tf.train.Example(features=tf.train.Features(feature={
      "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[_jpeg(rng)]))})).SerializeToString()
  for case in [b"\xff\xfe\x80\xc3", valid[:-1], valid + b"\x00"] + [
      b"\xff" + rng.bytes(rng.randint(1, 64)) for _ in range(4)]:
    # Refused before ParseExample, whose message would quote the raw,
    # non-UTF-8 bytes (a UnicodeDecodeError in TF's Python layer).
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"Invalid examples: not serialized tf.Example "
                             r"protos at batch indices[^\n]*\[1\]"):
      serve(examples=tf.constant([valid, case]))
  assert serve(examples=tf.constant([valid]))["top_k_classes"].shape == (1, 5)
  assert serve(examples=tf.constant([], tf.string))[
      "top_k_classes"].shape == (0, 5)


def test_demo_decoder_fuzz(tmp_path):
  good, cases = _cases()
  path = str(tmp_path / "case.bin")
  for case in cases:
    with open(path, "wb") as f:
      f.write(case)
    try:
      image = tflite_demo_lib.load_image(path, 16, 3)
    except tflite_demo_lib.DemoError as e:
      assert path in str(e)
      continue
    assert image.shape == (16, 16, 3)
    assert np.all((image >= 0) & (image <= 1))
  with open(path, "wb") as f:
    f.write(good)
  assert tflite_demo_lib.load_image(path, 16, 3).shape == (16, 16, 3)


def test_serving_default_empty_batch(loaded):
  out = loaded.signatures["serving_default"](image_bytes=tf.constant([], tf.string))
  assert out["top_k_classes"].shape[0] == 0
  assert out["top_k_scores"].shape[0] == 0


def test_tflite_demo_on_fuzzed_files_and_shapes(tflite_model, tmp_path):
  classifier = tflite_demo_lib.TFLiteClassifier(tflite_model("none"))
  good, cases = _cases()
  path = str(tmp_path / "case.bin")
  num_classes = len(classifier.class_names)
  for case in cases + [good]:
    with open(path, "wb") as f:
      f.write(case)
    try:
      prediction = classifier.classify(path, top_k=3)
    except tflite_demo_lib.DemoError as e:
      assert path in str(e)
      continue
    assert len(prediction.class_ids) == 3
    assert all(0 <= c < num_classes for c in prediction.class_ids)
    assert np.all(np.isfinite(prediction.scores))
  shape = classifier.image_shape
  assert classifier.logits(np.zeros([0, *shape])).shape == (0, num_classes)
  # Huge (bounded: 12 MB) and wrongly shaped inputs are refused, not run.
  for bad in ([1, 1000, 1000, shape[2]], [2, shape[0], shape[1], 5], [3]):
    with pytest.raises(tflite_demo_lib.DemoError, match="images must be"):
      classifier.logits(np.zeros(bad, np.float32))
