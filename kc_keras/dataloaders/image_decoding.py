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
# The IHDR colour type (0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA) is
# byte 25 of a PNG file, the bit depth (1-16) byte 24.
_PNG_BIT_DEPTH_BYTE = 24
_PNG_COLOUR_TYPE_BYTE = 25
# A tRNS chunk follows IHDR and PLTE (<= 780 bytes) and any ancillary chunks
# before the first IDAT: look for it in this many leading bytes.
_PNG_HEADER_BYTES = 65536
# EXIF lives in an APP1 segment at the start of a JPEG (first, or after JFIF
# APP0 and a few others): look at the first `_MAX_JPEG_SEGMENTS` segments
# within the first `_EXIF_SEARCH_BYTES` (IFD0, which holds the orientation,
# starts a few bytes into APP1; an orientation beyond this reads as 1).
_MAX_JPEG_SEGMENTS = 4
_EXIF_SEARCH_BYTES = 65536
_MAX_IFD_ENTRIES = 64
_ORIENTATION_TAG = 0x0112


# These functions build tf ops with Python control flow on static values
# only: AutoGraph has nothing to convert, and skipping it makes tracing a
# decode (done several times per pipeline) a few times faster.
_graph_ops = tf.autograph.experimental.do_not_convert


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
  """`count` bytes of `data` (uint8 [n]) from `index(es)` as int32; 0 past the end.

  `index` is a scalar or a vector (then `[len(index), count]`).
  """
  positions = tf.expand_dims(index, -1) + tf.range(count)
  safe = tf.clip_by_value(positions, 0, tf.maximum(n - 1, 0))
  values = tf.cast(tf.gather(data, safe), tf.int32)
  return tf.where((positions >= 0) & (positions < n), values, 0)


def _uint(data, n, index, count, little_endian):
  """Unsigned `count`-byte integer(s) at `index` (int32, EXIF byte order)."""
  values = _bytes_at(data, n, index, count)
  little = [256 ** i for i in range(count)]
  weights = tf.where(little_endian, tf.constant(little), tf.constant(little[::-1]))
  return tf.reduce_sum(values * weights, axis=-1)


@_graph_ops
def exif_orientation(encoded: tf.Tensor) -> tf.Tensor:
  """The EXIF orientation (int32 1-8) of JPEG bytes; 1 when absent or not a JPEG.

  Follows the JPEG segments (at most `_MAX_JPEG_SEGMENTS`, EXIF comes first
  or right after JFIF) up to APP1 `Exif\\0\\0`, and reads tag 0x0112 of IFD0
  of its TIFF block (either byte order). Written without loops: the segment
  walk is unrolled and the IFD entries are read as one vector, which keeps
  the per-image cost to a few dozen small ops. Malformed or out-of-range
  values give 1 (no transpose), never an error: the pixels then decode as
  stored.
  """
  data = tf.io.decode_raw(
      tf.strings.substr(encoded, 0, _EXIF_SEARCH_BYTES), tf.uint8)
  n = tf.shape(data)[0]
  exif_id = tf.constant([0xFF, 0xE1, 0, 0, 0x45, 0x78, 0x69, 0x66, 0, 0],
                        tf.int32)  # APP1 marker, length (ignored), Exif\0\0
  exif_mask = tf.constant([True, True, False, False] + [True] * 6)
  pos = tf.constant(2)
  tiff = tf.constant(-1)
  for _ in range(_MAX_JPEG_SEGMENTS):
    head = _bytes_at(data, n, pos, 10)
    is_exif = tf.reduce_all(tf.equal(head, exif_id) | ~exif_mask)
    tiff = tf.where((tiff < 0) & is_exif, pos + 10, tiff)
    # Past the first scan (0xDA) or a non-marker byte the walk stays put.
    walking = tf.equal(head[0], 0xFF) & tf.not_equal(head[1], 0xDA)
    pos = tf.where(walking, pos + 2 + head[2] * 256 + head[3], pos)

  little = tf.equal(_bytes_at(data, n, tiff, 1)[0], 0x49)  # 'II', else 'MM'
  ifd = tiff + _uint(data, n, tiff + 4, 4, little)
  count = _uint(data, n, ifd, 2, little)
  entries = ifd + 2 + 12 * tf.range(_MAX_IFD_ENTRIES)
  tags = _uint(data, n, entries, 2, little)
  values = _uint(data, n, entries + 8, 2, little)
  hit = tf.equal(tags, _ORIENTATION_TAG) & (tf.range(_MAX_IFD_ENTRIES) < count)
  orientation = tf.where(tf.reduce_any(hit),
                         tf.gather(values, tf.argmax(tf.cast(hit, tf.int32),
                                                     output_type=tf.int32)), 1)
  is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 2), _JPEG_MAGIC)
  valid = (is_jpeg & (tiff >= 0) & (orientation >= 1) & (orientation <= 8))
  return tf.where(valid, orientation, 1)


@_graph_ops
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


def _byte(encoded: tf.Tensor, index: int) -> tf.Tensor:
  """Byte `index` of a string as int32 (-1 past its end)."""
  data = tf.io.decode_raw(tf.strings.substr(encoded, index, 1), tf.uint8)
  return tf.cast(tf.concat([data, [255]], 0)[0], tf.int32) - tf.cast(
      tf.equal(tf.size(data), 0), tf.int32) * 256


@_graph_ops
def _png_colour_key(encoded: tf.Tensor) -> tf.Tensor:
  """Whether a PNG is grey or RGB with a `tRNS` colour key (scalar bool).

  `decode_image` ignores such a key (it turns only palette `tRNS` into
  alpha); these files need a 4-channel decode. The chunk must come before
  the first IDAT, whose compressed bytes could contain the letters by chance.
  """
  colour_type = _byte(encoded, _PNG_COLOUR_TYPE_BYTE)
  header = tf.strings.split(
      tf.strings.substr(encoded, 0, _PNG_HEADER_BYTES), "IDAT")[0]
  has_trns = tf.size(tf.strings.split(header, "tRNS")) > 1
  return ((tf.equal(colour_type, 0) | tf.equal(colour_type, 2)) & has_trns)


@_graph_ops
def decode_native(encoded: tf.Tensor) -> tf.Tensor:
  """Encoded bytes -> float32 `[H, W, k]` in [0, 1], `k` the file's channels.

  `k` = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA (alpha last when `k` is even).
  `tf.io.decode_image` with a float32 result keeps 16-bit PNG precision,
  expands palettes (palette `tRNS` becomes alpha) and converts CMYK JPEGs;
  grey/RGB PNGs with a `tRNS` colour key are decoded as RGBA by libpng (grey
  ones keep one colour channel); JPEGs get their EXIF orientation.
  """
  magic = tf.strings.substr(encoded, 0, 4)
  is_png = tf.equal(magic, _PNG_MAGIC)
  is_jpeg = tf.equal(tf.strings.substr(magic, 0, 2), _JPEG_MAGIC)

  def colour_key():
    rgba = tf.cast(tf.io.decode_png(encoded, channels=4, dtype=tf.uint16),
                   tf.float32) / 65535.0
    colour_type = _byte(encoded, _PNG_COLOUR_TYPE_BYTE)
    # A grey PNG decodes as (g, g, g, a): keep g itself so that grey stays
    # exactly grey (Y(g, g, g) is g only up to rounding).
    return tf.cond(tf.equal(colour_type, 0),
                   lambda: tf.gather(rgba, [0, 3], axis=-1), lambda: rgba)

  def plain():
    # 16-bit PNGs decode straight to float (full precision); everything else
    # decodes to 8 bits first, which is cheaper than libpng's 16-bit path.
    image = tf.cond(
        is_png & tf.equal(_byte(encoded, _PNG_BIT_DEPTH_BYTE), 16),
        lambda: tf.io.decode_image(encoded, channels=0, dtype=tf.float32,
                                   expand_animations=False),
        lambda: tf.cast(tf.io.decode_image(encoded, channels=0,
                                           expand_animations=False),
                        tf.float32) / 255.0)
    return tf.cond(is_jpeg,
                   lambda: apply_orientation(image, exif_orientation(encoded)),
                   lambda: image)

  # Nested conds: the chunk search only runs for PNGs, the EXIF walk for JPEGs.
  image = tf.cond(
      is_png,
      lambda: tf.cond(_png_colour_key(encoded), colour_key, plain),
      plain)
  return tf.ensure_shape(image, [None, None, None])


@_graph_ops
def composite(image: tf.Tensor, channels: int,
              background: Sequence[float] = DEFAULT_ALPHA_BACKGROUND,
              alpha_notice: Optional["AlphaNotice"] = None) -> tf.Tensor:
  """The module formula before resizing: `[H, W, k]` -> `o [H, W, channels]`.

  Opaque images (`k` odd) skip the blend, whose result would be `c` anyway.

  Args:
    image: float32 `[H, W, k]` from `decode_native` (or decoded pixels).
    channels: 1 or 3, the model's.
    background: `(r, g, b)` in [0, 1].
    alpha_notice: counts images with a pixel that is not fully opaque.
  """
  b = tf.constant(check_background(background), tf.float32)
  if channels not in (1, 3):
    raise ValueError(f"channels={channels} must be 1 or 3.")
  if channels == 1:
    b = luma(b)

  def colour(c, grey):
    if channels == 1:
      return c if grey else luma(c)
    # Broadcasting a grey [H, W, 1] against [3] repeats it exactly.
    return c * tf.ones([3], tf.float32) if grey else c

  def blend(c, a, grey):
    out = a * colour(c, grey) + (1.0 - a) * b
    if alpha_notice is None:
      return out
    with tf.control_dependencies([alpha_notice.record(tf.reduce_any(a < 1.0))]):
      return tf.identity(out)

  branches = [
      lambda: colour(image[..., :1], True),
      lambda: blend(image[..., :1], image[..., 1:2], True),
      lambda: colour(image, False),  # k = 3: no slice, no copy
      lambda: blend(image[..., :3], image[..., 3:4], False),
  ]
  if image.shape[-1] is not None:  # Known when the pixels come decoded (TFDS).
    if not 1 <= image.shape[-1] <= 4:
      raise ValueError(f"an image must have 1 to 4 channels, got {image.shape}")
    return branches[image.shape[-1] - 1]()
  k = tf.shape(image)[-1]
  checked = tf.debugging.assert_less_equal(
      k, 4, message="an image must have 1 to 4 channels")
  with tf.control_dependencies([checked]):
    return tf.switch_case(tf.clip_by_value(k, 1, 4) - 1, branches)


def resize(image: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
  """Antialiased bilinear resize to `[S, S, channels]`, clipped to [0, 1].

  An image that is already `S x S` skips the resize: at scale 1 the
  antialiased bilinear kernel samples each pixel at its own centre with
  weight 1, so the resize would return the same values, and it is the most
  expensive op of decoding a dataset stored at the model's size.
  """
  shape = tf.shape(image)
  same_size = tf.logical_and(tf.equal(shape[0], image_size),
                             tf.equal(shape[1], image_size))
  image = tf.cond(
      same_size, lambda: image,
      lambda: tf.image.resize(image, [image_size, image_size], antialias=True))
  return tf.ensure_shape(tf.clip_by_value(image, 0.0, 1.0),
                         [image_size, image_size, channels])


@_graph_ops
def to_model_image(image: tf.Tensor, image_size: int, channels: int,
                   background: Sequence[float] = DEFAULT_ALPHA_BACKGROUND,
                   alpha_notice: Optional["AlphaNotice"] = None) -> tf.Tensor:
  """Composite, convert channels, resize: float32 `[S, S, channels]` in [0, 1].

  Args:
    image: float32 `[H, W, k]` in [0, 1] (see `decode_native`).
    image_size: `S`.
    channels: 1 or 3.
    background: `(r, g, b)` in [0, 1].
    alpha_notice: counts images with transparency (see `AlphaNotice`).
  """
  return resize(composite(image, channels, background, alpha_notice),
                image_size, channels)


@_graph_ops
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
  return to_model_image(decode_native(encoded), image_size, channels,
                        background, alpha_notice)


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
