"""Converts an exported SavedModel's `serve_image` signature to TFLite (float, fp16, dynamic, int8)."""

import os
from typing import Callable, Iterable, Iterator, List, Optional

import numpy as np
import tensorflow as tf
import yaml

from export import export_saved_model_lib as saved_model_lib
from kc_keras.utils import files

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8", "int16x8")
# Variants calibrated on training images (activation ranges).
CALIBRATED = ("int8", "int16x8")
LABELS_SUFFIX = ".labels.txt"
VERTICALS_SUFFIX = ".verticals.txt"
# `serve_image` minus its empty-batch guard (see ServingModule).
TFLITE_FUNCTION = "tflite_serve_image"


class TFLiteExportError(ValueError):
  """A TFLite conversion cannot be made as asked; names the offending input."""


def sidecar_paths(output: str) -> dict:
  """The label files shipped next to `output`.

  `<output>.labels.txt`: class name of class id `i` on line `i`;
  `<output>.verticals.txt`: the vertical name of class id `i` on line `i`.
  """
  return {"labels": output + LABELS_SUFFIX,
          "verticals": output + VERTICALS_SUFFIX}


def load_export_data_config(saved_model_dir: str):
  """The data config saved with the export (`task.data` of its params.yaml).

  Only the data section is read: int8 calibration needs nothing else, and
  the rest of the schema may have moved on since the export was made.

  Raises:
    TFLiteExportError: when the export has no params.yaml.
  """
  from kc_keras.configs import kc_config  # pylint: disable=g-import-not-at-top

  path = os.path.join(saved_model_dir, saved_model_lib.ASSETS_EXTRA,
                      saved_model_lib.PARAMS_FILE)
  if not tf.io.gfile.exists(path):
    raise TFLiteExportError(
        f"{path} not found: int8 needs the training data; pass "
        "--experiment/--config_file or export with export_saved_model.")
  data_config = kc_config.ExperimentConfig().task.data
  with tf.io.gfile.GFile(path) as f:
    saved = yaml.safe_load(f)
  data_config.override(saved["task"]["data"], is_strict=True)
  return data_config


def training_images(data_config, num_examples: int) -> Iterator[np.ndarray]:
  """`num_examples` un-augmented TRAINING images, float32 `[1, H, W, C]` each.

  The representative dataset of int8 calibration: activation ranges must be
  those of the data the model was trained on. Sources list examples in a
  fixed (often class-major) order, so the images are taken evenly spaced
  over the whole split (every `total // num_examples`-th), not the first
  few classes.
  """
  from kc_keras.dataloaders import factory  # pylint: disable=g-import-not-at-top

  source = factory.build_source(data_config)
  raw = source.raw_dataset("train")
  total = source.num_examples("train")
  if total and total > num_examples:
    raw = raw.shard(num_shards=total // num_examples, index=0)
  dataset = raw.take(num_examples).map(source.decode).batch(1)
  for element in dataset:
    yield element["image"].numpy().astype(np.float32)


def convert(saved_model_dir: str, quantization: str,
            representative_images: Optional[Callable[[], Iterable[np.ndarray]]]
            = None) -> bytes:
  """The `serve_image` computation as a TFLite flatbuffer.

  Converts the export's `tflite_serve_image` function: the `serve_image`
  signature (float32 `[B, H, W, C]` in [0, 1] -> `logits`, `probs`) without
  the empty-batch guard, whose IF op int8 calibration cannot run. The
  image-bytes signatures are not convertible (DecodeImage is not a TFLite
  builtin): the demo decodes.

  Quantization:
    none: float32 weights and activations.
    fp16: float16 weights, float32 compute.
    dynamic: int8 weights, activations quantized on the fly.
    int8: full integer (weights and activations int8, int8 input and
      outputs), calibrated on `representative_images`; the demo reads the
      input/output scale and zero point from the model.
    int16x8: integer only with int16 activations and int8 weights (float32
      input/output), calibrated likewise: for models whose top logits are
      closer than int8 activations resolve (see docs/BENCHMARKS.md).

  Args:
    saved_model_dir: a version directory written by `export_saved_model`.
    quantization: one of `QUANTIZATIONS`.
    representative_images: for int8, a callable returning an iterable of
      float32 `[1, H, W, C]` batches.

  Returns:
    The model bytes.

  Raises:
    TFLiteExportError: unknown quantization, int8 without images, or a
      SavedModel without the `serve_image` signature.
  """
  if quantization not in QUANTIZATIONS:
    raise TFLiteExportError(
        f"quantization={quantization!r}; use one of {QUANTIZATIONS}")
  calibrated = quantization in CALIBRATED
  if calibrated and representative_images is None:
    raise TFLiteExportError(
        f"quantization={quantization!r} needs representative images")
  if not tf.saved_model.contains_saved_model(saved_model_dir):
    raise TFLiteExportError(f"{saved_model_dir} holds no SavedModel")
  loaded = tf.saved_model.load(saved_model_dir)
  function = getattr(loaded, TFLITE_FUNCTION, None)
  if function is None:
    raise TFLiteExportError(
        f"{saved_model_dir} has no {TFLITE_FUNCTION!r} function; export it "
        "with export.export_saved_model")
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [function.get_concrete_function()], loaded)
  if quantization != "none":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantization == "fp16":
    converter.target_spec.supported_types = [tf.float16]
  if calibrated:

    def dataset():
      for batch in representative_images():
        yield {saved_model_lib.IMAGES_INPUT: np.asarray(batch, np.float32)}

    converter.representative_dataset = dataset
  if quantization == "int8":
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  if quantization == "int16x8":
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
  return converter.convert()


def _label_lines(saved_model_dir: str) -> List[str]:
  """Per-class name and vertical-name files from the export's hierarchy."""
  from kc_keras.dataloaders import hierarchy as hierarchy_lib  # pylint: disable=g-import-not-at-top

  hierarchy = hierarchy_lib.Hierarchy.load(os.path.join(
      saved_model_dir, saved_model_lib.ASSETS_EXTRA,
      saved_model_lib.HIERARCHY_FILE))
  labels = "".join(n + "\n" for n in hierarchy.class_names)
  verticals = "".join(hierarchy.vertical_names[v] + "\n"
                      for v in hierarchy.class_to_vertical)
  return [labels, verticals]


def export_tflite(saved_model_dir: str, output: str, quantization: str,
                  params=None, representative_examples: int = 100) -> dict:
  """Converts and writes `output` plus its label files, each atomically.

  Args:
    saved_model_dir: a version directory written by `export_saved_model`.
    output: the `.tflite` path.
    quantization: one of `QUANTIZATIONS`.
    params: the experiment config whose TRAINING split calibrates int8 /
      int16x8 (default: `task.data` of the params.yaml saved with the export).
    representative_examples: training images used for calibration.

  Returns:
    `{"model": output, "labels": ..., "verticals": ..., "bytes": size}`.

  Raises:
    TFLiteExportError: see `convert`; `representative_examples < 1` for int8.
  """
  images = None
  if quantization in CALIBRATED:
    if representative_examples < 1:
      raise TFLiteExportError(
          f"representative_examples must be >= 1 for {quantization}, got "
          f"{representative_examples}")
    data_config = (params.task.data if params is not None
                   else load_export_data_config(saved_model_dir))
    images = lambda: training_images(data_config, representative_examples)  # noqa: E731
  model = convert(saved_model_dir, quantization, images)
  labels, verticals = _label_lines(saved_model_dir)
  paths = sidecar_paths(output)
  # Labels first: a model file never appears without its names.
  files.atomic_write_text(paths["labels"], labels)
  files.atomic_write_text(paths["verticals"], verticals)
  files.atomic_write_bytes(output, model)
  return dict(model=output, bytes=len(model), **paths)
