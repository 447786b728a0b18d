"""image_decoding: real files written with PIL against hand-computed tensors."""

import io
import os

from absl.testing import parameterized
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from kc_keras.configs.data import DataConfig
from kc_keras.configs.data import FolderConfig
from kc_keras.configs.data import TFRecordConfig
from kc_keras.dataloaders import factory
from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.dataloaders import image_decoding
from kc_keras.dataloaders.sources import tfrecord

# float32 arithmetic of a * c + (1 - a) * b against the float64 value.
FLOAT_TOL = 1e-6
# A uniform-colour JPEG at quality 95 decodes within 2 levels of its colour
# (chroma subsampling and DCT rounding; measured 1 level here).
JPEG_TOL = 2.0 / 255.0
Y = np.array(image_decoding.LUMA_WEIGHTS)


def _bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def _decode(data: bytes, channels: int, background=(1.0, 1.0, 1.0)):
  """The model image at the file's own size (resize is then the identity)."""
  native = image_decoding.decode_native(tf.constant(data))
  return image_decoding.composite(native, channels, background).numpy()


# RGBA pixels: transparent with an arbitrary colour, opaque, half transparent.
RGBA = np.array([[[10, 200, 30, 0], [250, 100, 5, 255], [40, 80, 160, 128]]],
                np.uint8)


class CompositeTest(parameterized.TestCase):

  @parameterized.parameters(((1.0, 1.0, 1.0),), ((0.2, 0.4, 0.6),))
  def test_rgba_into_rgb(self, background):
    out = _decode(_bytes(Image.fromarray(RGBA, "RGBA"), "PNG"), 3, background)
    b = np.array(background)
    # Fully transparent: exactly the background whatever the stored colour.
    np.testing.assert_array_equal(out[0, 0], np.float32(b))
    # Opaque: exactly the stored colour.
    np.testing.assert_array_equal(out[0, 1], np.float32(RGBA[0, 1, :3] / 255))
    a = 128 / 255
    np.testing.assert_allclose(out[0, 2], a * RGBA[0, 2, :3] / 255 + (1 - a) * b,
                               atol=FLOAT_TOL)

  def test_rgba_into_grey(self):
    b = np.array([0.2, 0.4, 0.6])
    out = _decode(_bytes(Image.fromarray(RGBA, "RGBA"), "PNG"), 1, b)
    c = RGBA[0, :, :3] / 255
    a = RGBA[0, :, 3:] / 255
    expected = a * (c @ Y)[:, None] + (1 - a) * (b @ Y)
    np.testing.assert_allclose(out[0], expected, atol=FLOAT_TOL)
    # Fully transparent: the background's luma, whatever the stored colour.
    self.assertAlmostEqual(out[0, 0, 0], b @ Y, delta=FLOAT_TOL)

  def test_grey_with_alpha(self):
    la = np.array([[[90, 0], [90, 255], [90, 51]]], np.uint8)
    data = _bytes(Image.fromarray(la, "LA"), "PNG")
    b = np.array([0.0, 0.5, 1.0])
    a = la[0, :, 1:] / 255
    grey = _decode(data, 1, b)
    np.testing.assert_allclose(grey[0], a * 90 / 255 + (1 - a) * (b @ Y),
                               atol=FLOAT_TOL)
    self.assertEqual(grey[0, 1, 0], np.float32(90 / 255))
    rgb = _decode(data, 3, b)
    np.testing.assert_allclose(rgb[0], a * 90 / 255 + (1 - a) * b, atol=FLOAT_TOL)
    np.testing.assert_array_equal(rgb[0, 0], np.float32(b))

  def _palette(self):
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 255, 0, 12, 34, 56] + [0] * (3 * 253))
    for x in range(3):
      image.putpixel((x, 0), x)
    return image

  def test_palette(self):
    out = _decode(_bytes(self._palette(), "PNG"), 3)
    np.testing.assert_array_equal(
        out[0], np.float32([[1, 0, 0], [0, 1, 0], [12 / 255, 34 / 255, 56 / 255]]))

  def test_palette_with_transparency(self):
    b = (0.25, 0.5, 0.75)
    out = _decode(_bytes(self._palette(), "PNG", transparency=1), 3, b)
    np.testing.assert_array_equal(
        out[0], np.float32([[1, 0, 0], b, [12 / 255, 34 / 255, 56 / 255]]))

  def test_colour_key_transparency(self):
    rgb = np.array([[[10, 20, 30], [1, 2, 3]]], np.uint8)
    data = _bytes(Image.fromarray(rgb, "RGB"), "PNG", transparency=(10, 20, 30))
    out = _decode(data, 3, (0.0, 0.0, 0.0))
    np.testing.assert_array_equal(
        out[0], np.float32([[0, 0, 0], [1 / 255, 2 / 255, 3 / 255]]))

  def test_sixteen_bit_grey_keeps_precision(self):
    values = np.array([[0, 1000, 65535, 32768]], "<u2")
    image = Image.frombytes("I;16", (4, 1), values.tobytes())
    data = _bytes(image, "PNG")
    self.assertEqual(Image.open(io.BytesIO(data)).mode, "I;16")
    grey = _decode(data, 1)
    np.testing.assert_array_equal(grey[0, :, 0], np.float32(values[0] / 65535))
    rgb = _decode(data, 3)
    np.testing.assert_array_equal(rgb[0], np.repeat(grey[0], 3, axis=-1))

  def test_cmyk_jpeg(self):
    # CMYK (0, 255, 255, 0): full magenta and yellow, i.e. red.
    data = _bytes(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG",
                  quality=95)
    self.assertEqual(Image.open(io.BytesIO(data)).mode, "CMYK")
    out = _decode(data, 3)
    self.assertEqual(out.shape, (16, 16, 3))
    np.testing.assert_allclose(out, np.broadcast_to([1.0, 0.0, 0.0], out.shape),
                               atol=JPEG_TOL)

  def test_grey_into_rgb_and_rgb_into_grey(self):
    grey = np.array([[0, 77, 255]], np.uint8)
    out = _decode(_bytes(Image.fromarray(grey, "L"), "PNG"), 3)
    np.testing.assert_array_equal(
        out[0], np.float32(np.repeat(grey[0, :, None] / 255, 3, -1)))
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [30, 60, 90]]], np.uint8)
    out = _decode(_bytes(Image.fromarray(rgb, "RGB"), "PNG"), 1)
    np.testing.assert_allclose(out[0, :, 0], rgb[0] / 255 @ Y, atol=FLOAT_TOL)
    # A grey file into a grey model is exactly its grey values.
    out = _decode(_bytes(Image.fromarray(grey, "L"), "PNG"), 1)
    np.testing.assert_array_equal(out[0, :, 0], np.float32(grey[0] / 255))

  @parameterized.parameters(range(1, 9))
  def test_exif_orientation(self, orientation):
    # 8 x 6 stored pixels, white, with a black marker at stored (row 0, col 0).
    stored = np.full((6, 8, 3), 255, np.uint8)
    stored[:2, :2] = 0
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    data = _bytes(image, "JPEG", quality=100, exif=exif.tobytes())
    plain = _bytes(image, "JPEG", quality=100)
    self.assertEqual(int(image_decoding.exif_orientation(tf.constant(data))),
                     orientation)
    out = _decode(data, 3)
    # Where a viewer shows the stored top-left corner (PIL exif_transpose).
    marker = {1: (0, 0), 2: (0, -1), 3: (-1, -1), 4: (-1, 0),
              5: (0, 0), 6: (0, -1), 7: (-1, -1), 8: (-1, 0)}[orientation]
    rotated = orientation >= 5
    self.assertEqual(out.shape, (8, 6, 3) if rotated else (6, 8, 3))
    self.assertLess(out[marker].max(), 0.1)
    self.assertGreater(out[0 if marker[0] else -1, 0 if marker[1] else -1].min(), 0.9)
    # Same compressed pixels: exactly the transposed decode of the plain file.
    base = _decode(plain, 3)
    transposed = {1: base, 2: base[:, ::-1], 3: base[::-1, ::-1],
                  4: base[::-1], 5: base.transpose(1, 0, 2),
                  6: base.transpose(1, 0, 2)[:, ::-1],
                  7: base.transpose(1, 0, 2)[::-1, ::-1],
                  8: base.transpose(1, 0, 2)[::-1]}[orientation]
    np.testing.assert_array_equal(out, transposed)

  def test_png_and_non_image_have_orientation_one(self):
    png = _bytes(Image.new("RGB", (3, 2)), "PNG")
    self.assertEqual(int(image_decoding.exif_orientation(tf.constant(png))), 1)
    self.assertEqual(int(image_decoding.exif_orientation(tf.constant(b"\xff\xd8"))), 1)

  @parameterized.parameters(((13, 7), 5, 3), ((3, 11), 9, 1), ((1, 1), 4, 3))
  def test_any_size_is_resized(self, size, target, channels):
    rng = np.random.RandomState(size[0])
    pixels = rng.randint(0, 256, (size[1], size[0], 3)).astype(np.uint8)
    data = _bytes(Image.fromarray(pixels), "PNG")
    out = image_decoding.decode_and_resize(tf.constant(data), target, channels)
    self.assertEqual(tuple(out.shape), (target, target, channels))
    full = _decode(data, channels)
    expected = np.clip(tf.image.resize(full, [target, target], antialias=True), 0, 1)
    np.testing.assert_array_equal(out.numpy(), expected)

  @parameterized.parameters((7, 3), (9, 1), (1, 3))
  def test_image_at_the_model_size_skips_the_resize_with_the_same_values(
      self, size, channels):
    # The skip is only sound because the antialiased resize at scale 1 is the
    # identity: the skipping decode, the formula with the resize and the
    # image without it are compared on random pixels, in graphs with
    # unknown shapes as tf.data runs them.
    rng = np.random.RandomState(size)
    pixels = rng.randint(0, 256, (size, size, 3)).astype(np.uint8)
    data = tf.constant(_bytes(Image.fromarray(pixels), "PNG"))

    def graph(fn):
      return tf.function(fn, input_signature=[tf.TensorSpec([], tf.string)])

    def composited(d):
      return image_decoding.composite(image_decoding.decode_native(d), channels)

    skipping = graph(lambda d: image_decoding.decode_and_resize(d, size, channels))
    with_resize = graph(lambda d: tf.clip_by_value(tf.image.resize(
        composited(d), [size, size], antialias=True), 0.0, 1.0))
    without = graph(composited)
    np.testing.assert_array_equal(with_resize(data).numpy(), without(data).numpy())
    np.testing.assert_array_equal(skipping(data).numpy(), without(data).numpy())

  def test_one_side_at_the_model_size_is_still_resized(self):
    pixels = np.random.RandomState(0).randint(0, 256, (5, 8, 3)).astype(np.uint8)
    data = _bytes(Image.fromarray(pixels), "PNG")
    out = image_decoding.decode_and_resize(tf.constant(data), 8, 3)
    expected = np.clip(tf.image.resize(_decode(data, 3), [8, 8], antialias=True), 0, 1)
    np.testing.assert_array_equal(out.numpy(), expected)

  def test_unreadable_bytes_fail(self):
    truncated = _bytes(Image.new("RGB", (8, 8)), "PNG")[:30]
    for data in (b"not an image", truncated):
      with self.assertRaises(tf.errors.InvalidArgumentError):
        image_decoding.decode_and_resize(tf.constant(data), 4, 3)

  def test_bad_background_is_refused(self):
    for bad in ((1.0, 1.0), (0.0, 0.0, 2.0), ("a", 0, 0)):
      with self.assertRaisesRegex(ValueError, "alpha_background"):
        image_decoding.check_background(bad)
    config = DataConfig()
    config.alpha_background = (0.0, 0.0, 1.5)
    with self.assertRaisesRegex(ValueError, r"data\.alpha_background"):
      config.validate()


class SourcesTest(tf.test.TestCase):
  """Folder and TFRecord sources share the decode and the background."""

  @pytest.mark.slow  # two sources traced: about 10 s on 2 busy cores
  def test_folder_and_tfrecord_decode_alike_and_notice_alpha(self):
    root = self.create_tempdir().full_path
    rgba = _bytes(Image.fromarray(RGBA, "RGBA"), "PNG")
    opaque = _bytes(Image.fromarray(RGBA[..., :3], "RGB"), "PNG")
    for cls, data in (("a", rgba), ("b", opaque)):
      os.makedirs(os.path.join(root, "v", cls))
      with open(os.path.join(root, "v", cls, "x.png"), "wb") as f:
        f.write(data)
    background = (0.0, 0.5, 1.0)
    hierarchy = hierarchy_lib.Hierarchy.from_folder_tree(root)
    hierarchy_file = os.path.join(root, "..", "h.json")
    hierarchy.save(hierarchy_file)
    records = os.path.join(root, "..", "x.tfrecord")
    tfrecord.write_tfrecord(records, [(rgba, 0), (opaque, 1)])

    images = {}
    for name, sub in (
        ("folder", FolderConfig(train_dir=root, image_size=3, channels=3)),
        ("tfrecord", TFRecordConfig(train_pattern=records,
                                    hierarchy_file=hierarchy_file,
                                    image_size=3, channels=3))):
      config = DataConfig(source=name, alpha_background=background)
      setattr(config, name, sub)
      source = factory.build_source(config)
      decoded = source.raw_dataset("train").map(source.decode).batch(2)
      images[name] = next(iter(decoded))["image"].numpy()
      self.assertEqual(source.alpha_notice.count(), 1)
      self.assertTrue(source.alpha_notice.log_once())
      self.assertFalse(source.alpha_notice.log_once())
    self.assertAllEqual(images["folder"], images["tfrecord"])
    # Resized 3 x 1 -> 3 x 3: the transparent column stays the background.
    self.assertAllClose(images["folder"][0, :, 0], np.tile(background, (3, 1)),
                        atol=FLOAT_TOL)


if __name__ == "__main__":
  tf.test.main()
