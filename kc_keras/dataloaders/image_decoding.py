"""The one image decode of training, evaluation and serving: bytes -> float32 [S, S, C].

Every source that stores encoded images (folder, TFRecord) and the SavedModel's
bytes signature call `decode_and_resize`; the TFDS source, whose images arrive
already decoded, calls `to_model_image`. A demo that reimplements the decode
(the TFLite demo with PIL, a browser demo with a canvas) must reproduce the
formula below to get the same input tensor.

Formula. The file is decoded in graph (no Python, so it runs in parallel in
tf.data and is saved in the SavedModel) to colour values `c` and alpha `a`, all
in [0, 1]:

- 8-bit images: `v / 255`; 16-bit PNG: `v / 65535` (full precision kept);
- JPEG: the EXIF orientation tag (1-8) is applied first (the transpose a viewer
  applies, as PIL's `ImageOps.exif_transpose`); CMYK JPEGs are converted to
  RGB by the JPEG decoder;
- palette PNGs are expanded through the palette; transparency (alpha channel,
  palette `tRNS`, or `tRNS` colour key) becomes `a`; `a = 1` without it;
- grey images have `c = g` (one value), colour images `c = (r, g, b)`.

With background `b = (b_r, b_g, b_b)` (`task.data.alpha_background`), the model
image before resizing is, per pixel:

    C = 3:  o = a * c + (1 - a) * b          (a grey c is used as (g, g, g))
    C = 1:  o = a * Y(c) + (1 - a) * Y(b)    Y(r, g, b) = 0.299 r + 0.587 g + 0.114 b
                                             (ITU-R BT.601 luma; Y(g) = g for grey)

Then `o` is resized to `S x S` with `tf.image.resize(method='bilinear',
antialias=True)` (a triangle filter widened by the downscale factor; PIL's
`BILINEAR` resize of float images computes the same) and clipped to [0, 1].
"""

from typing import Optional, Sequence

from absl import logging
import tensorflow as tf

#: `task.data.alpha_background` default: white (see docs/DATA.md).
DEFAULT_ALPHA_BACKGROUND = (1.0, 1.0, 1.0)
#: ITU-R BT.601 luma weights of `Y` (sum 1; PIL's `convert('L')` uses them too).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

_PNG_MAGIC = b"\x89PNG"
_JPEG_MAGIC = b"\xff\xd8"
# IHDR colour types 0 (grey) and 4 (grey + alpha): byte 25 of a PNG file.
_PNG_COLOUR_TYPE_BYTE = 25
_PNG_GREY_TYPES = (0, 4)
# EXIF lives in an APP1 segment near the start of a JPEG: read at most this
# many bytes of the file to find it (an APP segment is at most 64 KiB, and the
# APP0/APP1 segments that precede it are small).
_EXIF_SEARCH_BYTES = 3 * 65536
_MAX_JPEG_SEGMENTS = 32
_MAX_IFD_ENTRIES = 256
_ORIENTATION_TAG = 0x0112


def check_background(background: Sequence[float], where: str = "alpha_background"
                     ) -> tuple:
  """`background` as a tuple of 3 floats in [0, 1].

  Raises:
    ValueError: not 3 values in [0, 1], naming `where`.
  """
  values = tuple(background) if background is not None else ()
  if len(values) != 3 or not all(
      isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0 for v in values):
    raise ValueError(
        f"{where}={list(values)!r} must be 3 values (r, g, b) in [0, 1].")
  return tuple(float(v) for v in values)


def luma(rgb: tf.Tensor) -> tf.Tensor:
  """`Y` of the module formula: `[..., 3]` -> `[..., 1]`."""
  return tf.reduce_sum(rgb * tf.constant(LUMA_WEIGHTS, rgb.dtype), axis=-1,
                       keepdims=True)


def _bytes_at(data: tf.Tensor, n: tf.Tensor, index: tf.Tensor, count: int
              ) -> tf.Tensor:
  """`count` bytes of `data` (uint8 [n]) from `index` as int32; 0 past the end."""
  positions = index + tf.range(count)
  safe = tf.clip_by_value(positions, 0, tf.maximum(n - 1, 0))
  values = tf.cast(tf.gather(data, safe), tf.int32)
  return tf.where((positions >= 0) & (positions < n), values, 0)


def _uint(data, n, index, count, little_endian):
  """An unsigned `count`-byte integer at `index` (int64, EXIF byte order)."""
  values = tf.cast(_bytes_at(data, n, index, count), tf.int64)
  weights = tf.constant([256 ** i for i in range(count)], tf.int64)
  return tf.reduce_sum(values * tf.where(little_endian, weights, weights[::-1]))


def exif_orientation(encoded: tf.Tensor) -> tf.Tensor:
  """The EXIF orientation (int32 1-8) of JPEG bytes; 1 when absent or not a JPEG.

  Walks the JPEG segments up to the first scan, finds APP1 `Exif\\0\\0`, and
  reads tag 0x0112 of IFD0 of its TIFF block (either byte order). Malformed
  or out-of-range values give 1 (no transpose), never an error: the pixels
  then decode as stored.
  """
  data = tf.io.decode_raw(
      tf.strings.substr(encoded, 0, _EXIF_SEARCH_BYTES), tf.uint8)
  n = tf.shape(data)[0]

  def byte(i):
    return _bytes_at(data, n, i, 1)[0]

  def tiff_orientation(tiff):
    little = tf.equal(byte(tiff), 0x49)  # 'II' little endian, 'MM' big
    ifd = tiff + tf.cast(_uint(data, n, tiff + 4, 4, little), tf.int32)
    entries = tf.minimum(tf.cast(_uint(data, n, ifd, 2, little), tf.int32),
                         _MAX_IFD_ENTRIES)

    def body(i, found):
      entry = ifd + 2 + 12 * i
      tag = _uint(data, n, entry, 2, little)
      value = tf.cast(_uint(data, n, entry + 8, 2, little), tf.int32)
      found = tf.where(tf.equal(tag, _ORIENTATION_TAG) & tf.equal(found, 0),
                       value, found)
      return i + 1, found

    _, found = tf.while_loop(lambda i, found: i < entries, body,
                             (tf.constant(0), tf.constant(0)))
    return found

  exif_id = tf.constant([0x45, 0x78, 0x69, 0x66, 0, 0], tf.int32)  # Exif\0\0

  def segment(k, pos, orientation):
    marker = byte(pos + 1)
    length = _bytes_at(data, n, pos + 2, 2)
    length = length[0] * 256 + length[1]
    is_exif = (tf.equal(marker, 0xE1)
               & tf.reduce_all(tf.equal(_bytes_at(data, n, pos + 4, 6), exif_id)))
    orientation = tf.cond(is_exif, lambda: tiff_orientation(pos + 10),
                          lambda: orientation)
    return k + 1, pos + 2 + length, orientation

  def more(k, pos, orientation):
    marker = byte(pos + 1)
    # Stop at the first scan (SOS 0xDA) or image end (EOI 0xD9): EXIF precedes them.
    return ((k < _MAX_JPEG_SEGMENTS) & (pos + 4 <= n) & tf.equal(byte(pos), 0xFF)
            & tf.not_equal(marker, 0xDA) & tf.not_equal(marker, 0xD9)
            & tf.equal(orientation, 0))

  is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 2), _JPEG_MAGIC)
  _, _, orientation = tf.while_loop(
      more, segment, (tf.constant(0), tf.constant(2), tf.constant(0)))
  valid = is_jpeg & (orientation >= 1) & (orientation <= 8)
  return tf.where(valid, orientation, 1)


def apply_orientation(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
  """Transposes `[H, W, C]` as a viewer shows EXIF `orientation` (1-8)."""
  def transpose(x):
    return tf.transpose(x, [1, 0, 2])

  branches = [
      lambda: image,                                        # 1
      lambda: tf.reverse(image, [1]),                       # 2 mirror left-right
      lambda: tf.reverse(image, [0, 1]),                    # 3 rotate 180
      lambda: tf.reverse(image, [0]),                       # 4 mirror top-bottom
      lambda: transpose(image),                             # 5 transpose
      lambda: tf.reverse(transpose(image), [1]),            # 6 rotate 90 clockwise
      lambda: tf.reverse(transpose(image), [0, 1]),         # 7 transverse
      lambda: tf.reverse(transpose(image), [0]),            # 8 rotate 90 counter-cw
  ]
  return tf.switch_case(tf.clip_by_value(orientation, 1, 8) - 1, branches)


def decode_colour_and_alpha(encoded: tf.Tensor) -> tuple:
  """Encoded bytes -> `(colour [H, W, 1 or 3], alpha [H, W, 1])`, float32 in [0, 1].

  PNG is decoded as 16-bit RGBA (libpng expands palettes and turns `tRNS`
  into alpha, adding an opaque alpha otherwise) and grey PNGs keep one colour
  channel; other formats (JPEG, GIF first frame, BMP, WebP) go through
  `tf.io.decode_image`, with EXIF orientation applied to JPEGs.
  """
  is_png = tf.equal(tf.strings.substr(encoded, 0, 4), _PNG_MAGIC)

  def png():
    rgba = tf.cast(tf.io.decode_png(encoded, channels=4, dtype=tf.uint16),
                   tf.float32) / 65535.0
    colour_type = tf.io.decode_raw(
        tf.strings.substr(encoded, _PNG_COLOUR_TYPE_BYTE, 1), tf.uint8)[0]
    grey = tf.reduce_any(tf.equal(tf.cast(colour_type, tf.int32),
                                  list(_PNG_GREY_TYPES)))
    # A grey PNG is decoded as (g, g, g, a): keep g itself so that grey stays
    # exactly grey (Y(g, g, g) is g only up to rounding).
    colour = tf.cond(grey, lambda: rgba[..., :1], lambda: rgba[..., :3])
    return colour, rgba[..., 3:]

  def other():
    image = tf.io.decode_image(encoded, channels=0, dtype=tf.float32,
                               expand_animations=False)
    return split_alpha(apply_orientation(image, exif_orientation(encoded)))

  colour, alpha = tf.cond(is_png, png, other)
  return tf.ensure_shape(colour, [None, None, None]), tf.ensure_shape(
      alpha, [None, None, 1])


def split_alpha(image: tf.Tensor) -> tuple:
  """Decoded float `[H, W, 1-4]` -> `(colour [H, W, 1 or 3], alpha [H, W, 1])`.

  An even channel count carries alpha last (2 = grey + alpha, 4 = RGBA);
  without it `alpha = 1`.
  """
  channels = tf.shape(image)[-1]
  has_alpha = tf.equal(channels % 2, 0)
  colour = image[..., :channels - tf.cast(has_alpha, tf.int32)]
  alpha = tf.cond(has_alpha, lambda: image[..., -1:],
                  lambda: tf.ones_like(image[..., :1]))
  return colour, alpha


def composite(colour: tf.Tensor, alpha: tf.Tensor, channels: int,
              background: Sequence[float] = DEFAULT_ALPHA_BACKGROUND
              ) -> tf.Tensor:
  """The module formula before resizing: `o [H, W, channels]`.

  Args:
    colour: float32 `[H, W, 1 or 3]` (grey or RGB).
    alpha: float32 `[H, W, 1]`.
    channels: 1 or 3, the model's.
    background: `(r, g, b)` in [0, 1].
  """
  b = tf.constant(check_background(background), tf.float32)
  if channels == 3:
    # Broadcasting a grey [H, W, 1] against [3] repeats it exactly.
    c = colour * tf.ones([3], tf.float32)
  elif channels == 1:
    c = tf.cond(tf.equal(tf.shape(colour)[-1], 1), lambda: colour[..., :1],
                lambda: luma(colour[..., :3]))
    b = luma(b)
  else:
    raise ValueError(f"channels={channels} must be 1 or 3.")
  return alpha * c + (1.0 - alpha) * b


def transparent(alpha: tf.Tensor) -> tf.Tensor:
  """Whether any pixel is not fully opaque (scalar bool)."""
  return tf.reduce_any(alpha < 1.0)


def resize(image: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
  """Antialiased bilinear resize to `[S, S, channels]`, clipped to [0, 1]."""
  image = tf.image.resize(image, [image_size, image_size], antialias=True)
  return tf.ensure_shape(tf.clip_by_value(image, 0.0, 1.0),
                         [image_size, image_size, channels])


def to_model_image(colour: tf.Tensor, alpha: tf.Tensor, image_size: int,
                   channels: int,
                   background: Sequence[float] = DEFAULT_ALPHA_BACKGROUND,
                   alpha_notice: Optional["AlphaNotice"] = None) -> tf.Tensor:
  """Composite, convert channels, resize: float32 `[S, S, channels]` in [0, 1].

  Args:
    colour / alpha: from `decode_colour_and_alpha` (or a decoded array).
    image_size: `S`.
    channels: 1 or 3.
    background: `(r, g, b)` in [0, 1].
    alpha_notice: counts images with transparency (see `AlphaNotice`).
  """
  image = composite(colour, alpha, channels, background)
  if alpha_notice is not None:
    with tf.control_dependencies([alpha_notice.record(transparent(alpha))]):
      image = tf.identity(image)
  return resize(image, image_size, channels)


def decode_and_resize(encoded: tf.Tensor, image_size: int, channels: int,
                      background: Sequence[float] = DEFAULT_ALPHA_BACKGROUND,
                      alpha_notice: Optional["AlphaNotice"] = None) -> tf.Tensor:
  """Encoded bytes -> float32 `[S, S, channels]` in [0, 1] (the module formula).

  Args:
    encoded: scalar string, a PNG, JPEG, GIF, BMP or WebP file's bytes.
    image_size: `S`.
    channels: 1 or 3.
    background: `(r, g, b)` in [0, 1] behind transparent pixels.
    alpha_notice: counts images with transparency (see `AlphaNotice`).

  Raises:
    tf.errors.InvalidArgumentError: at run time, for bytes that are not a
      decodable image (the pipeline names or skips the record, see
      `data_errors.decode`).
  """
  colour, alpha = decode_colour_and_alpha(encoded)
  return to_model_image(colour, alpha, image_size, channels, background,
                        alpha_notice)


class AlphaNotice:
  """Counts decoded images with transparency, to say once per run that alpha was found.

  A host-side int64 variable incremented inside the tf.data pipeline (as
  `data_errors.SkipCounter`; create it outside any strategy scope). Training
  decodes an image once per epoch, so the count is of decodes, not files.

  Args:
    background: the configured `(r, g, b)`, named in the log line.
  """

  def __init__(self, background: Sequence[float] = DEFAULT_ALPHA_BACKGROUND):
    self.background = check_background(background)
    self._logged = False
    with tf.device("/cpu:0"):
      self.variable = tf.Variable(0, dtype=tf.int64, trainable=False,
                                  name="images_with_alpha")

  def record(self, found: tf.Tensor) -> tf.Operation:
    """Adds 1 when `found` (graph side); returns the update op."""
    return self.variable.assign_add(tf.cast(found, tf.int64)).op

  def count(self) -> int:
    return int(self.variable.numpy())

  def log_once(self) -> bool:
    """Logs one line the first time images with transparency were decoded."""
    if self._logged or not self.count():
      return False
    logging.info(
        "Images with transparency (alpha) found: composited onto "
        "task.data.alpha_background=%s.", list(self.background))
    self._logged = True
    return True
