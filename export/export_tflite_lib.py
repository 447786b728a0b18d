"""Converts an exported SavedModel's `serve_image` signature to TFLite (float, fp16, dynamic, integer)."""

import os
import re
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

from ai_edge_litert.interpreter import Interpreter
import numpy as np
import tensorflow as tf
import yaml

from export import export_saved_model_lib as saved_model_lib
from kc_keras.utils import files

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8", "int8_float_head",
                 "int16x8")
# Variants calibrated on training images (activation ranges).
CALIBRATED = ("int8", "int8_float_head", "int16x8")
# Layers `int8_float_head` keeps in float (matched as a path segment of the
# TFLite op output names, Keras call suffixes `_1` allowed): the logits
# producer. A trained model's logits span a wide range (demo: -59 to +3.3)
# so one int8 step (0.24) exceeds many top-2 margins; see docs/BENCHMARKS.md.
FLOAT_HEAD_LAYERS = ("classifier", "self_paced_scale")
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


def float_node_names(tensor_names: Sequence[str], output_names: Sequence[str],
                     float_layers: Sequence[str]) -> List[str]:
  """The op outputs of a calibrated model that must stay float.

  An op stays float when it produces a model output or when one of its
  (';'-joined, fused) location names has a path segment equal to a layer of
  `float_layers`, optionally followed by Keras's call suffix `_<n>`.

  Args:
    tensor_names: output tensor names of every op of the calibrated model.
    output_names: tensor names of the model outputs.
    float_layers: Keras layer names (e.g. "classifier", "block0_conv0").

  Returns:
    The names to deny-list, in `tensor_names` order.
  """
  patterns = [re.compile(r"(^|/)" + re.escape(layer) + r"(_[0-9]+)?(/|$)")
              for layer in float_layers]
  outputs = set(output_names)
  return [name for name in tensor_names
          if name in outputs or any(p.search(part) for part in name.split(";")
                                    for p in patterns)]


def _selective_int8(converter, dataset, extra_layers: Sequence[str]) -> bytes:
  """int8 everywhere except the head, `extra_layers` and the output ops.

  Uses the converter's quantization debugger: calibrate once, then quantize
  with the chosen ops deny-listed (they run in float between (de)quantize
  ops). The model's input and outputs are float32.

  Raises:
    TFLiteExportError: a layer of `extra_layers` names no op of the model.
  """
  debugger = tf.lite.experimental.QuantizationDebugger(
      converter=converter, debug_dataset=dataset)
  interpreter = Interpreter(model_content=debugger.calibrated_model)
  details = interpreter.get_tensor_details()
  tensor_names = [details[i]["name"] for op in interpreter._get_ops_details()  # pylint: disable=protected-access
                  for i in op["outputs"]]
  unmatched = [layer for layer in extra_layers
               if not float_node_names(tensor_names, (), [layer])]
  if unmatched:
    raise TFLiteExportError(
        f"float_layers {unmatched} match no op of the model; op names look "
        f"like {tensor_names[:3]}")
  output_names = [d["name"] for d in interpreter.get_output_details()]
  debugger.options = tf.lite.experimental.QuantizationDebugOptions(
      denylisted_nodes=float_node_names(
          tensor_names, output_names, FLOAT_HEAD_LAYERS + tuple(extra_layers)),
      fully_quantize=False)
  return debugger.get_nondebug_quantized_model()


def convert(saved_model_dir: str, quantization: str,
            representative_images: Optional[Callable[[], Iterable[np.ndarray]]]
            = None, float_layers: Sequence[str] = ()) -> bytes:
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
    int8_float_head: int8 like `int8` except the layers of
      `FLOAT_HEAD_LAYERS + float_layers` and the output ops, which run in
      float with float32 weights; float32 input and outputs. Trades file
      size for top-1 agreement on models with close logits.
    int16x8: integer only with int16 activations and int8 weights (float32
      input/output), calibrated likewise: for models whose top logits are
      closer than int8 activations resolve (see docs/BENCHMARKS.md).

  Args:
    saved_model_dir: a version directory written by `export_saved_model`.
    quantization: one of `QUANTIZATIONS`.
    representative_images: for int8, a callable returning an iterable of
      float32 `[1, H, W, C]` batches.
    float_layers: `int8_float_head` only: more Keras layer names kept float
      (e.g. the first convolution, "block0_conv0").

  Returns:
    The model bytes.

  Raises:
    TFLiteExportError: unknown quantization, int8 without images,
      `float_layers` with another quantization than int8_float_head or
      naming no layer of the model, or a SavedModel without the
      `serve_image` signature.
  """
  if quantization not in QUANTIZATIONS:
    raise TFLiteExportError(
        f"quantization={quantization!r}; use one of {QUANTIZATIONS}")
  calibrated = quantization in CALIBRATED
  if calibrated and representative_images is None:
    raise TFLiteExportError(
        f"quantization={quantization!r} needs representative images")
  if float_layers and quantization != "int8_float_head":
    raise TFLiteExportError(
        f"float_layers={list(float_layers)} only apply to int8_float_head, "
        f"not quantization={quantization!r}")
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
  if quantization == "int8_float_head":
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    return _selective_int8(converter, dataset, float_layers)
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
                  params=None, representative_examples: int = 100,
                  float_layers: Sequence[str] = ()) -> dict:
  """Converts and writes `output` plus its label files, each atomically.

  Args:
    saved_model_dir: a version directory written by `export_saved_model`.
    output: the `.tflite` path.
    quantization: one of `QUANTIZATIONS`.
    params: the experiment config whose TRAINING split calibrates int8 /
      int16x8 (default: `task.data` of the params.yaml saved with the export).
    representative_examples: training images used for calibration.
    float_layers: see `convert`.

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
  model = convert(saved_model_dir, quantization, images, float_layers)
  labels, verticals = _label_lines(saved_model_dir)
  paths = sidecar_paths(output)
  # Labels first: a model file never appears without its names.
  files.atomic_write_text(paths["labels"], labels)
  files.atomic_write_text(paths["verticals"], verticals)
  files.atomic_write_bytes(output, model)
  return dict(model=output, bytes=len(model), **paths)
