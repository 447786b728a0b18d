"""Exports a trained network as a TF Serving SavedModel (signatures, assets, warmup)."""

import dataclasses
import json
import os
import re
import tempfile
from typing import List, Optional, Sequence

import keras
import numpy as np
from official.modeling import hyperparams
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
import yaml

from kc_keras.configs import kc_config
from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.dataloaders import image_decoding
from kc_keras.quantization import floor
from kc_keras.quantization import integer_forms
from kc_keras.quantization import recipe as recipe_lib
from kc_keras.training import restore as restore_lib
from kc_keras.utils import files

PARAMS_FILE = "params.yaml"
LABELS_ASSET = "labels.txt"
VERTICALS_ASSET = "verticals.txt"
ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
EXPORT_INFO_FILE = "export_info.json"
MODELS_CONFIG_FILE = "models.config"

# Signature names and their input keys (clients and docs rely on these).
SERVING_DEFAULT = "serving_default"
SERVE_IMAGE = "serve_image"
SERVE_IMAGE_UINT8 = "serve_image_uint8"
SERVE_EXAMPLES = "serve_examples"
BYTES_INPUT = "image_bytes"
IMAGES_INPUT = "images"
EXAMPLES_INPUT = "examples"
EXAMPLE_IMAGE_KEY = "image/encoded"

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# PNG: 8-byte signature, IHDR length + type, then big-endian width, height.
_PNG_DIMS_OFFSET = 16
_PNG_HEADER_BYTES = 24
_UINT8_MAX = 255.0
_VERSION_DIR = re.compile(r"^[0-9]+$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class ExportError(ValueError):
  """An export cannot be made as asked; the message names the offending input."""


@dataclasses.dataclass
class ServingConfig(hyperparams.Config):
  """What the exported signatures compute and what is written with them.

  Attributes:
    top_k: classes returned per image by the bytes/Example signatures
      (clipped to N).
    max_image_pixels: encoded images whose header claims more pixels
      (width * height) are refused before decoding, so a forged header cannot
      make the server allocate gigabytes.
    num_warmup_requests: PredictionLog records in
      `assets.extra/tf_serving_warmup_requests` (each one a 2-image batch).
    serving_base_path: the directory TF Serving sees the export under
      (`base_path` of the written `models.config` is `<it>/<model_name>`).
  """

  top_k: int = 5
  max_image_pixels: int = 64_000_000
  num_warmup_requests: int = 1
  serving_base_path: str = "/models"

  def validate(self):
    if not isinstance(self.top_k, int) or self.top_k < 1:
      raise ValueError(f"serving.top_k must be an int >= 1, got {self.top_k!r}")
    if self.max_image_pixels < 1:
      raise ValueError(
          f"serving.max_image_pixels must be >= 1, got {self.max_image_pixels}")
    if self.num_warmup_requests < 0:
      raise ValueError("serving.num_warmup_requests must be >= 0, got "
                       f"{self.num_warmup_requests}")
    if not self.serving_base_path:
      raise ValueError("serving.serving_base_path must not be empty")


@dataclasses.dataclass(frozen=True)
class ExportResult:
  """Where an export went: `<export_dir>/<model_name>/<version>`."""

  version_dir: str
  model_name: str
  version: int
  checkpoint: str
  models_config: str


# ------------------------------------------------------------ decoding
def _check_names(names: Sequence[str], what: str) -> None:
  bad = [i for i, n in enumerate(names) if "\n" in n or "\r" in n]
  if bad:
    raise ExportError(f"{what} {bad[:10]} contain a line break; they cannot "
                      "be stored one per line as a label asset.")


def _check(condition: tf.Tensor, message: str, index: tf.Tensor, *values):
  """An Assert whose InvalidArgumentError names the problem and batch index."""
  return tf.debugging.Assert(
      condition, [f"Invalid image: {message}; batch index", index, *values])


def _header_pixels(encoded: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """Width * height claimed by a JPEG/PNG header (int64), before decoding.

  Raises (at run time):
    InvalidArgumentError: empty bytes, a format other than JPEG/PNG, or a
      truncated header; the message names the batch `index`.
  """
  length = tf.strings.length(encoded)
  is_png = tf.equal(tf.strings.substr(encoded, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
  is_jpeg = tf.equal(tf.strings.substr(encoded, 0, len(_JPEG_MAGIC)),
                     _JPEG_MAGIC)
  checks = [
      _check(length > 0, "the encoded bytes are empty", index),
      _check(tf.logical_or(is_png, is_jpeg),
             "the bytes are neither JPEG nor PNG", index),
  ]
  with tf.control_dependencies(checks):

    def png_pixels():
      with tf.control_dependencies([_check(
          length >= _PNG_HEADER_BYTES, "truncated PNG header", index)]):
        dims = tf.io.decode_raw(
            tf.strings.substr(encoded, _PNG_DIMS_OFFSET, 8), tf.uint8,
            fixed_length=8)
      dims = tf.cast(dims, tf.int64)
      width = ((dims[0] * 256 + dims[1]) * 256 + dims[2]) * 256 + dims[3]
      height = ((dims[4] * 256 + dims[5]) * 256 + dims[6]) * 256 + dims[7]
      return width * height

    def jpeg_pixels():
      shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
      return shape[0] * shape[1]

    return tf.cond(is_png, png_pixels, jpeg_pixels)


def decode_images(encoded: tf.Tensor, image_shape: Sequence[int],
                  max_image_pixels: int,
                  alpha_background: Sequence[float] = (
                      image_decoding.DEFAULT_ALPHA_BACKGROUND)) -> tf.Tensor:
  """A batch of JPEG/PNG bytes -> float32 `[B, H, W, C]` in [0, 1].

  Each image goes through `image_decoding.decode_and_resize`, the decode
  training uses (alpha composited onto `alpha_background`), after a header check that refuses empty, non-JPEG/PNG and oversized
  (`width * height > max_image_pixels`) images with an InvalidArgumentError
  that names the problem and the batch index.

  Args:
    encoded: string `[B]`.
    image_shape: `(H, W, C)` with `H == W`.
    max_image_pixels: largest accepted `width * height`.
    alpha_background: the run's `task.data.alpha_background`.

  Returns:
    float32 `[B, H, W, C]`.
  """
  height, width, channels = image_shape
  if height != width:
    raise ExportError(f"image_shape {tuple(image_shape)} is not square; the "
                      "training decode resizes to S x S")

  def one(args):
    data, index = args
    pixels = _header_pixels(data, index)
    with tf.control_dependencies([_check(
        pixels <= max_image_pixels,
        f"its header claims more than max_image_pixels={max_image_pixels} "
        "pixels (width * height)", index, "pixels", pixels)]):
      data = tf.identity(data)
    return image_decoding.decode_and_resize(data, height, channels,
                                            alpha_background)

  encoded = tf.reshape(encoded, [-1])
  return tf.map_fn(
      one, (encoded, tf.range(tf.shape(encoded)[0])),
      fn_output_signature=tf.TensorSpec(image_shape, tf.float32))


_EXAMPLE_FEATURES_TAG = 0x0A  # tf.Example field 1 (features), length-delimited.
_MAX_VARINT_BYTES = 5  # Lengths below 2**35: more than any request.


def _example_is_framed(serialized: tf.Tensor) -> tf.Tensor:
  """Whether a serialized tf.Example (scalar string) is framed as one.

  An Example holds one field, `features`: the bytes are empty, or the tag
  0x0A, a varint length, and exactly that many bytes. Checked before
  ParseExample because its error quotes the raw bytes, which TF's Python
  layer cannot decode as UTF-8 (a UnicodeDecodeError instead of
  INVALID_ARGUMENT). Bytes framed correctly but corrupt inside still reach
  ParseExample's own error.
  """
  length = tf.strings.length(serialized)
  head = tf.io.decode_raw(tf.strings.substr(serialized, 0,
                                            1 + _MAX_VARINT_BYTES), tf.uint8)
  head = tf.cast(tf.pad(head, [[0, 1 + _MAX_VARINT_BYTES - tf.size(head)]]),
                 tf.int64)
  value = tf.constant(0, tf.int64)
  used = tf.constant(0, tf.int64)
  done = tf.constant(False)
  for i in range(_MAX_VARINT_BYTES):
    byte = head[1 + i]
    value += tf.where(done, tf.constant(0, tf.int64),
                      tf.bitwise.left_shift(byte % 128, 7 * i))
    used += tf.where(done, tf.constant(0, tf.int64), tf.constant(1, tf.int64))
    done = tf.logical_or(done, byte < 128)
  framed = tf.logical_and(
      tf.logical_and(tf.equal(head[0], _EXAMPLE_FEATURES_TAG), done),
      tf.equal(1 + used + value, tf.cast(length, tf.int64)))
  return tf.logical_or(tf.equal(length, 0), framed)


# ------------------------------------------------------------ the module
class ServingModule(tf.Module):
  """The network plus label tables and the serving signatures.

  Signatures (all batch-major; `B` may be 0):
    serving_default(image_bytes: string [B]) -> top_k_classes int32 [B, k],
      top_k_names string [B, k], top_k_scores float32 [B, k] (sigmoid
      probabilities, descending), vertical_names string [B, k].
    serve_image(images: float32 [B, H, W, C] in [0, 1]) -> logits, probs
      float32 [B, N] with probs = sigmoid(logits).
    serve_image_uint8(images: uint8 [B, H, W, C]) -> as serve_image on
      images / 255.
    serve_examples(examples: string [B] serialized tf.Example with
      'image/encoded') -> as serving_default.
  Plus the function attribute `tflite_serve_image` (serve_image for B >= 1,
  no control flow, the network's integer-friendly form,
  `integer_forms.integer_call`), which
  `export_tflite_lib` converts, and for a self-paced network
  `tflite_floor_parts` (`floor.floor_parts`: the int8 files' floored logits).

  Args:
    network: a `HierarchicalClassifier` (images -> logits `[B, N]`).
    hierarchy: names of the N classes and M verticals.
    image_shape: `(H, W, C)` of the network's input.
    config: a validated `ServingConfig`.
    assets_dir: an existing directory where the label files are written
      (they are copied into the SavedModel's `assets/` on save).
    alpha_background: the run's `task.data.alpha_background`, behind the
      transparent pixels of images sent as bytes.
  """

  def __init__(self, network: keras.Model, hierarchy: hierarchy_lib.Hierarchy,
               image_shape: Sequence[int], config: ServingConfig,
               assets_dir: str,
               alpha_background: Sequence[float] = (
                   image_decoding.DEFAULT_ALPHA_BACKGROUND)):
    super().__init__(name="kc_serving")
    _check_names(hierarchy.class_names, "class names")
    _check_names(hierarchy.vertical_names, "vertical names")
    self.network = network
    self.image_shape = tuple(int(d) for d in image_shape)
    self.num_classes = hierarchy.num_classes
    self.top_k = min(int(config.top_k), hierarchy.num_classes)
    self.max_image_pixels = int(config.max_image_pixels)
    self.alpha_background = image_decoding.check_background(alpha_background)
    labels_path = os.path.join(assets_dir, LABELS_ASSET)
    verticals_path = os.path.join(assets_dir, VERTICALS_ASSET)
    with open(labels_path, "w", encoding="utf-8") as f:
      f.write("".join(n + "\n" for n in hierarchy.class_names))
    with open(verticals_path, "w", encoding="utf-8") as f:
      f.write("".join(n + "\n" for n in hierarchy.vertical_names))
    self.labels_asset = tf.saved_model.Asset(labels_path)
    self.verticals_asset = tf.saved_model.Asset(verticals_path)
    self.class_names_table = self._table(self.labels_asset)
    self.vertical_names_table = self._table(self.verticals_asset)
    self.class_to_vertical = tf.constant(hierarchy.class_to_vertical,
                                         tf.int64)
    spec = tf.TensorSpec([None, *self.image_shape], tf.float32, name="images")
    spec8 = tf.TensorSpec([None, *self.image_shape], tf.uint8, name="images")
    strings = tf.TensorSpec([None], tf.string)
    self.serve_image = tf.function(self._serve_image, input_signature=[spec])
    # Not a serving signature: `serve_image` without the empty-batch guard,
    # whose control flow (an IF op reading variables) TFLite cannot
    # calibrate for int8; `export_tflite_lib` converts this function.
    self.tflite_serve_image = tf.function(self._network_outputs,
                                          input_signature=[spec])
    if floor.has_floor_parts(network):
      # The pieces of the floored logits, which `export_tflite_lib` composes
      # for the int8 files with the floor chosen at conversion.
      self.tflite_floor_parts = tf.function(
          lambda images: floor.floor_parts(network, images),
          input_signature=[spec])
    self.serve_image_uint8 = tf.function(self._serve_image_uint8,
                                         input_signature=[spec8])
    self.serve_bytes = tf.function(self._serve_bytes,
                                   input_signature=[strings])
    self.serve_examples = tf.function(self._serve_examples,
                                      input_signature=[strings])

  @staticmethod
  def _table(asset: tf.saved_model.Asset) -> tf.lookup.StaticHashTable:
    """Line number (int64) -> the line's text."""
    return tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            asset, key_dtype=tf.int64,
            key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string,
            value_index=tf.lookup.TextFileIndex.WHOLE_LINE),
        default_value="")

  def signatures(self) -> dict:
    """Concrete functions keyed by signature name, for `tf.saved_model.save`."""
    return {
        SERVING_DEFAULT: self.serve_bytes.get_concrete_function(),
        SERVE_IMAGE: self.serve_image.get_concrete_function(),
        SERVE_IMAGE_UINT8: self.serve_image_uint8.get_concrete_function(),
        SERVE_EXAMPLES: self.serve_examples.get_concrete_function(),
    }

  def _logits(self, images):
    # Convolutions on an empty batch fail inside TF's CPU kernels; an empty
    # request gets an empty answer instead of an internal error.
    return tf.cond(
        tf.shape(images)[0] > 0,
        lambda: tf.cast(self.network(images, training=False), tf.float32),
        lambda: tf.zeros([0, self.num_classes], tf.float32))

  def _network_outputs(self, images):
    # The integer-friendly graph of the same function (see
    # quantization.integer_forms): what int8 files are made of.
    logits = tf.cast(integer_forms.integer_call(self.network, images),
                     tf.float32)
    return {"logits": logits, "probs": tf.sigmoid(logits)}

  def _check_image_shape(self, images):
    """Restored signatures do not enforce static shapes; a wrong one would
    run through global pooling and answer silently wrong."""
    expected = tf.constant(self.image_shape, tf.int32)
    ok = tf.reduce_all(tf.equal(tf.shape(images)[1:], expected))
    with tf.control_dependencies([tf.debugging.Assert(ok, [
        "Invalid images: expected shape [B, H, W, C] =", expected,
        "per image, got", tf.shape(images)])]):
      return tf.identity(images)

  def _serve_image(self, images):
    images = self._check_image_range(self._check_image_shape(images))
    logits = self._logits(images)
    return {"logits": logits, "probs": tf.sigmoid(logits)}

  def _check_image_range(self, images):
    """Values outside [0, 1] (NaN, 1e30, a 0..255 scale) give scores that
    look like an answer (or NaN) but mean nothing: refused, naming them."""
    per_image = tf.reshape(images, [tf.shape(images)[0], -1])
    # NaN fails both comparisons, so it is refused too.
    ok = tf.reduce_all(tf.logical_and(per_image >= 0.0, per_image <= 1.0),
                       axis=1)
    with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(ok), [
        "Invalid images: values must be float32 in [0, 1]; batch indices",
        tf.where(tf.logical_not(ok))[:, 0], "are not (min",
        tf.reduce_min(per_image), "max", tf.reduce_max(per_image), ")"])]):
      return tf.identity(images)

  def _serve_image_uint8(self, images):
    images = self._check_image_shape(images)
    return self._serve_image(tf.cast(images, tf.float32) / _UINT8_MAX)

  def _top_k(self, images):
    probs = tf.sigmoid(self._logits(images))
    scores, ids = tf.math.top_k(probs, k=self.top_k)
    ids64 = tf.cast(ids, tf.int64)
    verticals = tf.gather(self.class_to_vertical, ids64)
    return {
        "top_k_classes": ids,
        "top_k_names": self.class_names_table.lookup(ids64),
        "top_k_scores": scores,
        "vertical_names": self.vertical_names_table.lookup(verticals),
    }

  def _serve_bytes(self, image_bytes):
    return self._top_k(decode_images(image_bytes, self.image_shape,
                                     self.max_image_pixels,
                                     self.alpha_background))

  def _serve_examples(self, examples):
    framed = tf.map_fn(_example_is_framed, examples,
                       fn_output_signature=tf.bool)
    bad = tf.where(tf.logical_not(framed))[:, 0]
    with tf.control_dependencies([tf.debugging.Assert(
        tf.reduce_all(framed),
        ["Invalid examples: not serialized tf.Example protos at batch "
         "indices", bad])]):
      examples = tf.identity(examples)
    features = tf.io.parse_example(
        examples,
        {EXAMPLE_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string,
                                                  default_value="")})
    return self._serve_bytes(features[EXAMPLE_IMAGE_KEY])


# ------------------------------------------------------------ writing
def next_version(model_base_dir: str) -> int:
  """1 + the largest integer-named version under `model_base_dir` (1 if none)."""
  if not tf.io.gfile.isdir(model_base_dir):
    return 1
  versions = [int(n) for n in tf.io.gfile.listdir(model_base_dir)
              if _VERSION_DIR.match(n.rstrip("/"))]
  return max(versions, default=0) + 1


def warmup_images(image_shape: Sequence[int]) -> List[bytes]:
  """Two deterministic images of the network's size: one PNG, one JPEG."""
  height, width, channels = image_shape
  ramp = np.linspace(0, _UINT8_MAX, height * width * channels)
  image = ramp.reshape(height, width, channels).astype(np.uint8)
  return [tf.io.encode_png(image).numpy(), tf.io.encode_jpeg(image).numpy()]


def write_warmup_requests(path: str, model_name: str,
                          image_shape: Sequence[int], num_requests: int
                          ) -> None:
  """Writes PredictionLog records (TF Serving's warmup format) to `path`."""
  images = warmup_images(image_shape)
  with tf.io.TFRecordWriter(path) as writer:
    for _ in range(num_requests):
      request = predict_pb2.PredictRequest()
      request.model_spec.name = model_name
      request.model_spec.signature_name = SERVING_DEFAULT
      request.inputs[BYTES_INPUT].CopyFrom(
          tf.make_tensor_proto(images, dtype=tf.string))
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())


def models_config_text(model_name: str, base_path: str) -> str:
  """A TF Serving `--model_config_file` text proto serving the latest version."""
  return (
      "model_config_list {\n"
      "  config {\n"
      f"    name: \"{model_name}\"\n"
      f"    base_path: \"{base_path}\"\n"
      "    model_platform: \"tensorflow\"\n"
      "    model_version_policy { latest { num_versions: 1 } }\n"
      "  }\n"
      "}\n")


def check_only_network_variables(saved_model_dir: str,
                                 network: keras.Model) -> None:
  """Asserts the SavedModel's variables are exactly the network's weights.

  Raises:
    ExportError: when the saved variables hold more (or fewer) values than
      the network, e.g. a teacher or optimizer slot got attached.
  """
  prefix = os.path.join(saved_model_dir, "variables", "variables")
  saved = [(n, s) for n, s in tf.train.list_variables(prefix)
           if not n.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")]
  saved_size = sum(int(np.prod(s)) for _, s in saved)
  network_size = sum(int(np.prod(w.shape)) for w in network.weights)
  if len(saved) != len(network.weights) or saved_size != network_size:
    raise ExportError(
        f"The SavedModel holds {len(saved)} variables ({saved_size} values) "
        f"but the network has {len(network.weights)} ({network_size}); "
        f"something besides the network was exported: "
        f"{sorted(n for n, _ in saved)[:10]}")


def run_recipe(checkpoint: str, hierarchy: hierarchy_lib.Hierarchy
               ) -> Optional[recipe_lib.QuantizationRecipe]:
  """The quantization recipe of the run `checkpoint` belongs to (None without one).

  Quantization-aware fine-tuning writes one into its run directory
  (`recipe.RECIPE_FILE`); the export carries it to `export_tflite`.

  Raises:
    recipe.RecipeError: a malformed recipe, or one written for another
      checkpoint or hierarchy.
  """
  path = os.path.join(restore_lib.run_dir_of(checkpoint),
                      recipe_lib.RECIPE_FILE)
  if not tf.io.gfile.exists(path):
    return None
  return recipe_lib.check_bound(recipe_lib.read(path), path, checkpoint,
                                hierarchy.fingerprint)


def _write_assets_extra(staging: str, model_name: str, image_shape,
                        config: ServingConfig, params, hierarchy,
                        checkpoint: str,
                        recipe: Optional[recipe_lib.QuantizationRecipe]
                        ) -> None:
  """Writes `assets.extra/`: warmup requests, params.yaml, hierarchy, info, recipe.

  TF Serving reads only the warmup file; the rest makes the export
  self-describing (`export_tflite_lib` calibrates int8 from its params and
  follows the run's quantization recipe, when it has one).
  """
  extra = os.path.join(staging, ASSETS_EXTRA)
  os.makedirs(extra)
  if config.num_warmup_requests:
    write_warmup_requests(os.path.join(extra, WARMUP_FILE), model_name,
                          image_shape, config.num_warmup_requests)
  with open(os.path.join(extra, PARAMS_FILE), "w", encoding="utf-8") as f:
    yaml.safe_dump(params.as_dict(), f, default_flow_style=False)
  hierarchy.save(os.path.join(extra, restore_lib.HIERARCHY_FILE))
  info = dict(checkpoint=checkpoint, model_name=model_name,
              image_shape=list(image_shape), top_k=config.top_k,
              max_image_pixels=config.max_image_pixels,
              signatures=[SERVING_DEFAULT, SERVE_IMAGE, SERVE_IMAGE_UINT8,
                          SERVE_EXAMPLES])
  with open(os.path.join(extra, EXPORT_INFO_FILE), "w", encoding="utf-8") as f:
    json.dump(info, f, indent=2, sort_keys=True)
  if recipe is not None:
    recipe_lib.write(recipe, extra)


def export_saved_model(params: kc_config.ExperimentConfig,
                       checkpoint_path: str,
                       export_dir: str,
                       model_name: Optional[str] = None,
                       version: Optional[int] = None,
                       config: Optional[ServingConfig] = None,
                       experiment_name: str = "kc") -> ExportResult:
  """Writes `export_dir/<model_name>/<version>/` for TF Serving, atomically.

  The SavedModel is written into a hidden temporary sibling
  (`.tmp-<version>-*`, a name TF Serving never loads) and renamed to the
  version directory only when complete and checked, so a failed export
  leaves no version directory. `export_dir/models.config` is (re)written
  for this model. A run written by quantization-aware fine-tuning carries
  its quantization recipe into `assets.extra/` (`run_recipe`).

  Args:
    params: the experiment config the checkpoint was trained with.
    checkpoint_path: a `ckpt-N` prefix or a model_dir.
    export_dir: TF Serving's model root (holds `<model_name>/`).
    model_name: default `experiment_name`.
    version: default `next_version(...)`; an existing one is refused.
    config: serving options (default `ServingConfig()`).
    experiment_name: the fallback model name.

  Returns:
    An `ExportResult`.

  Raises:
    ExportError: bad model name, existing version, hierarchy mismatch, or a
      SavedModel holding more than the network.
    recipe.RecipeError: the run's quantization recipe is malformed or
      describes another checkpoint (`run_recipe`).
  """
  config = config or ServingConfig()
  config.validate()
  model_name = model_name or experiment_name
  if not _MODEL_NAME.match(model_name):
    raise ExportError(f"model_name {model_name!r} must be a plain directory "
                      "name ([A-Za-z0-9_.-]+)")
  base = os.path.join(export_dir, model_name)
  if version is None:
    version = next_version(base)
  if not isinstance(version, int) or version < 1:
    raise ExportError(f"version must be an int >= 1, got {version!r}")
  version_dir = os.path.join(base, str(version))
  if tf.io.gfile.exists(version_dir):
    raise ExportError(f"{version_dir} already exists; TF Serving versions "
                      "are immutable, pick another --version")
  network, hierarchy, restored, image_shape = restore_lib.load_network(
      params, checkpoint_path)
  recipe = run_recipe(restored, hierarchy)
  with files.staged_directory(version_dir) as staging:
    with tempfile.TemporaryDirectory() as assets_dir:
      module = ServingModule(network, hierarchy, image_shape, config,
                             assets_dir, params.task.data.alpha_background)
      signatures = module.signatures()
      os.rmdir(staging)  # tf.saved_model.save wants to create it.
      tf.saved_model.save(module, staging, signatures=signatures)
    check_only_network_variables(staging, network)
    _write_assets_extra(staging, model_name, image_shape, config, params,
                        hierarchy, restored, recipe)
  models_config = os.path.join(export_dir, MODELS_CONFIG_FILE)
  files.atomic_write_text(models_config, models_config_text(
      model_name, f"{config.serving_base_path.rstrip('/')}/{model_name}"))
  return ExportResult(version_dir=version_dir, model_name=model_name,
                      version=version, checkpoint=restored,
                      models_config=models_config)

