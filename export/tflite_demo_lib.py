"""On-device inference without TensorFlow: PIL decoding, a LiteRT interpreter, top-k."""

import dataclasses
import os
import time
from typing import List, Optional, Sequence, Tuple

from ai_edge_litert.interpreter import Interpreter
import numpy as np
from PIL import Image
from PIL import ImageOps

from kc_keras.utils import files

LABELS_SUFFIX = ".labels.txt"
VERTICALS_SUFFIX = ".verticals.txt"
MANIFEST_SUFFIX = ".manifest.json"
IMAGES_INPUT = "images"
LOGITS_OUTPUT = "logits"
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
_UINT8_MAX = 255.0
_UINT16_MAX = 65535.0
# Equal to kc_keras.dataloaders.image_decoding's (tested): the demo imports
# no TensorFlow.
DEFAULT_ALPHA_BACKGROUND = (1.0, 1.0, 1.0)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
_INT8_RANGE = (-128, 127)


class DemoError(ValueError):
  """An input the demo cannot use; the message names the file or value."""


def load_image(path: str, image_size: int, channels: int,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
               alpha_background: Sequence[float] = DEFAULT_ALPHA_BACKGROUND
               ) -> np.ndarray:
  """Decodes and resizes an image the way training does, with PIL only.

  Mirrors `kc_keras.dataloaders.image_decoding.decode_and_resize` (its
  docstring has the formula): EXIF orientation applied to JPEGs, colour `c`
  and alpha `a` in [0, 1] (16-bit grey PNGs at full precision, palette and
  `tRNS` transparency as alpha), `o = a c + (1 - a) b` for 3 channels or
  `a Y(c) + (1 - a) Y(b)` for 1 (`Y` = BT.601 luma), then each channel
  resized in float ('F' mode) with PIL's bilinear filter, whose support
  widens with the downscale factor exactly as TF's antialiased bilinear
  (triangle) kernel does, then clipped to [0, 1].

  Args:
    path: an image file (JPEG, PNG, GIF, BMP; first frame).
    image_size: the square side `S` of the model input.
    channels: 1 or 3.
    max_image_pixels: images whose header claims more pixels are refused
      before their pixels are decoded.
    alpha_background: `(r, g, b)` in [0, 1] behind transparent pixels: the
      run's `task.data.alpha_background`.

  Returns:
    float32 `[S, S, channels]`.

  Raises:
    DemoError: unreadable, non-image, truncated or oversized file.
  """
  if channels not in (1, 3):
    raise DemoError(f"channels must be 1 or 3, got {channels}")
  try:
    with Image.open(path) as image:
      width, height = image.size
      if width * height > max_image_pixels:
        raise DemoError(
            f"{path}: {width} x {height} pixels exceeds max_image_pixels="
            f"{max_image_pixels}")
      image.load()
      colour, alpha = _colour_and_alpha(image)
  except DemoError:
    raise
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DemoError(f"{path}: not a decodable image ({e})") from e
  background = np.asarray(alpha_background, np.float32)
  luma = np.asarray(LUMA_WEIGHTS, np.float32)
  if channels == 3:
    pixels = alpha * (colour * np.ones(3, np.float32)) + (1 - alpha) * background
  else:
    grey = colour if colour.shape[-1] == 1 else np.sum(
        colour * luma, axis=-1, keepdims=True)
    pixels = alpha * grey + (1 - alpha) * np.sum(background * luma)
  planes = [
      np.asarray(Image.fromarray(np.ascontiguousarray(
          pixels[..., c], np.float32)).resize(
              (image_size, image_size), Image.BILINEAR), np.float32)
      for c in range(channels)
  ]
  return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)


def _colour_and_alpha(image: Image.Image) -> Tuple[np.ndarray, np.ndarray]:
  """`(colour [H, W, 1 or 3], alpha [H, W, 1])` in [0, 1], as training decodes."""
  if image.format == "JPEG":
    # Training applies EXIF orientation to JPEGs only.
    image = ImageOps.exif_transpose(image)
  if image.mode.startswith("I"):  # 16-bit grey PNG: keep its precision.
    colour = np.asarray(image, np.float32)[..., None] / _UINT16_MAX
    return colour, np.ones_like(colour)
  grey = image.mode in ("1", "L", "LA", "La")
  pixels = np.asarray(image.convert("LA" if grey else "RGBA"),
                      np.float32) / _UINT8_MAX
  return pixels[..., :-1], pixels[..., -1:]


def read_lines(path: str) -> List[str]:
  """The lines of a label file (without line ends)."""
  with open(path, encoding="utf-8") as f:
    return f.read().splitlines()


@dataclasses.dataclass(frozen=True)
class Prediction:
  """Top-k of one image: class ids, names, vertical names, sigmoid scores."""

  path: str
  class_ids: Tuple[int, ...]
  names: Tuple[str, ...]
  verticals: Tuple[str, ...]
  scores: Tuple[float, ...]
  latency_ms: float


class TFLiteClassifier:
  """A converted `serve_image` model with its label files.

  Args:
    model_path: the `.tflite` file.
    labels_path: class names, one per line (default `<model>.labels.txt`).
    verticals_path: vertical name per class (default `<model>.verticals.txt`).
    num_threads: interpreter threads.

  Raises:
    DemoError: missing files, a set that differs from its
      `<model>.manifest.json` (an interrupted export), a model that is not a
      `serve_image` conversion, or label files of another length than the
      model's N.
  """

  def __init__(self, model_path: str, labels_path: Optional[str] = None,
               verticals_path: Optional[str] = None, num_threads: int = 1):
    for path in (model_path, labels_path or model_path + LABELS_SUFFIX,
                 verticals_path or model_path + VERTICALS_SUFFIX):
      if not os.path.isfile(path):
        raise DemoError(f"{path} not found")
    # An export killed part-way leaves a model and labels of different runs.
    files.check_file_set(model_path + MANIFEST_SUFFIX, DemoError)
    self.model_path = model_path
    try:
      self.interpreter = Interpreter(model_path=model_path,
                                     num_threads=num_threads)
      self.runner = self.interpreter.get_signature_runner()
    except (ValueError, RuntimeError) as e:
      raise DemoError(f"{model_path}: not a usable TFLite model ({e})") from e
    inputs = self.runner.get_input_details()
    outputs = self.runner.get_output_details()
    if IMAGES_INPUT not in inputs or LOGITS_OUTPUT not in outputs:
      raise DemoError(
          f"{model_path}: expected input {IMAGES_INPUT!r} and output "
          f"{LOGITS_OUTPUT!r}, got {sorted(inputs)} -> {sorted(outputs)}")
    self.input_detail = inputs[IMAGES_INPUT]
    self.logits_detail = outputs[LOGITS_OUTPUT]
    _, height, width, channels = (int(d) for d in self.input_detail["shape"])
    self.image_shape = (height, width, channels)
    self.class_names = read_lines(labels_path or model_path + LABELS_SUFFIX)
    self.vertical_names = read_lines(
        verticals_path or model_path + VERTICALS_SUFFIX)
    num_classes = int(self.logits_detail["shape"][-1])
    for what, names in (("labels", self.class_names),
                        ("verticals", self.vertical_names)):
      if len(names) != num_classes:
        raise DemoError(f"{model_path}: the {what} file has {len(names)} "
                        f"lines but the model has {num_classes} classes")

  def _quantize(self, images: np.ndarray) -> np.ndarray:
    """float [0, 1] -> the input dtype (int8: q = round(x / scale) + zero)."""
    dtype = self.input_detail["dtype"]
    if dtype == np.float32:
      return images.astype(np.float32)
    scale, zero = self.input_detail["quantization"]
    info = np.iinfo(dtype)
    q = np.round(images / scale) + zero
    return np.clip(q, info.min, info.max).astype(dtype)

  def _dequantize(self, values: np.ndarray, detail) -> np.ndarray:
    """The output dtype -> float32 (int8: x = scale * (q - zero))."""
    if detail["dtype"] == np.float32:
      return values.astype(np.float32)
    scale, zero = detail["quantization"]
    return (scale * (values.astype(np.float32) - zero)).astype(np.float32)

  def _checked_images(self, images) -> np.ndarray:
    """float32 `[B, H, W, C]` of the model's input size, else DemoError."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
      raise DemoError(f"images must be [B, {', '.join(map(str, self.image_shape))}]"
                      f", got {list(images.shape)}")
    return images

  def logits(self, images: np.ndarray) -> np.ndarray:
    """float32 `[B, H, W, C]` in [0, 1] -> float32 logits `[B, N]`.

    Raises:
      DemoError: images of another shape than the model's input.
    """
    images = self._checked_images(images)
    rows = []
    # The converted graph has batch 1; one invoke per image keeps the
    # interpreter's tensors fixed (no reallocation).
    for image in images:
      out = self.runner(**{IMAGES_INPUT: self._quantize(image[None])})
      rows.append(self._dequantize(out[LOGITS_OUTPUT], self.logits_detail))
    if not rows:
      return np.zeros((0, len(self.class_names)), np.float32)
    return np.concatenate(rows, axis=0)

  def batch_logits(self, images: np.ndarray) -> np.ndarray:
    """Like `logits` but one invoke for the whole batch.

    The interpreter resizes its input to `[B, H, W, C]` (reallocating when B
    changes), so keep B fixed across calls to time throughput.

    Raises:
      DemoError: images of another shape than the model's input.
    """
    images = self._checked_images(images)
    out = self.runner(**{IMAGES_INPUT: self._quantize(images)})
    return self._dequantize(out[LOGITS_OUTPUT], self.logits_detail)

  def classify(self, path: str, top_k: int) -> Prediction:
    """Decodes `path`, runs the model, returns the top-k (ranked by logit)."""
    height, _, channels = self.image_shape
    image = load_image(path, height, channels)
    start = time.perf_counter()
    logits = self.logits(image[None])[0]
    latency_ms = (time.perf_counter() - start) * 1000.0
    ids = np.argsort(-logits, kind="stable")[:top_k]
    scores = 1.0 / (1.0 + np.exp(-logits[ids]))
    return Prediction(
        path=path, class_ids=tuple(int(i) for i in ids),
        names=tuple(self.class_names[i] for i in ids),
        verticals=tuple(self.vertical_names[i] for i in ids),
        scores=tuple(float(s) for s in scores), latency_ms=latency_ms)


def format_prediction(prediction: Prediction) -> str:
  """Human-readable lines: the file, latency, then one line per class."""
  lines = [f"{prediction.path}  ({prediction.latency_ms:.2f} ms)"]
  for rank, (name, vertical, score) in enumerate(zip(
      prediction.names, prediction.verticals, prediction.scores), start=1):
    lines.append(f"  {rank}. {name}  [{vertical}]  {score:.4f}")
  return "\n".join(lines)


def run(model: str, images: Sequence[str], top_k: int,
        num_threads: int = 1) -> Tuple[List[Prediction], List[str]]:
  """Classifies every image; returns `(predictions, errors)`.

  Raises:
    DemoError: no images, `top_k < 1`, or an unusable model.
  """
  if not images:
    raise DemoError("no images given: pass one or more image paths")
  if top_k < 1:
    raise DemoError(f"top_k must be >= 1, got {top_k}")
  classifier = TFLiteClassifier(model, num_threads=num_threads)
  predictions, errors = [], []
  for path in images:
    try:
      predictions.append(classifier.classify(path, top_k))
    except DemoError as e:
      errors.append(str(e))
  return predictions, errors
