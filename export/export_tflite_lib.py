"""Converts an exported SavedModel's `serve_image` signature to TFLite (float, fp16, dynamic, integer)."""

import os
import re
from typing import (Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Tuple, Union)

from ai_edge_litert.interpreter import Interpreter
import numpy as np
import tensorflow as tf

from export import export_saved_model_lib as saved_model_lib
from export import tflite_float_kernels
from kc_keras.quantization import calibration
from kc_keras.quantization import errors
from kc_keras.quantization import floor
from kc_keras.quantization import integer_forms
from kc_keras.quantization import recipe as recipe_lib
from kc_keras.training import restore
from kc_keras.utils import files
from kc_keras.utils import records

QUANTIZATIONS = ("none", "fp16", "dynamic", "int8", "int8_float_head",
                 "int16x8")
# Variants calibrated on training images (activation ranges).
CALIBRATED = ("int8", "int8_float_head", "int16x8")
# Variants that take `float_layers`.
FLOAT_LAYER_VARIANTS = ("dynamic", "int8_float_head")
# Layers `int8_float_head` keeps in float: the logits producers
# (`integer_forms` names the ops of the exported graph after them).
FLOAT_HEAD_LAYERS = integer_forms.LOGITS_LAYERS
# Stem layers of the `small_cnn` backbone, for `float_layers`.
SMALL_CNN_STEM = integer_forms.SMALL_CNN_STEM
DEFAULT = floor.DEFAULT
LABELS_SUFFIX = ".labels.txt"
VERTICALS_SUFFIX = ".verticals.txt"
MANIFEST_SUFFIX = ".manifest.json"
# `serve_image` minus its empty-batch guard (see ServingModule).
TFLITE_FUNCTION = "tflite_serve_image"
# A self-paced network's `floor.floor_parts`, in the export.
FLOOR_PARTS_FUNCTION = "tflite_floor_parts"


class TFLiteExportError(ValueError):
  """A TFLite conversion cannot be made as asked; names the offending input."""


def sidecar_paths(output: str) -> dict:
  """The label files shipped next to `output`.

  `<output>.labels.txt`: class name of class id `i` on line `i`;
  `<output>.verticals.txt`: the vertical name of class id `i` on line `i`.
  """
  return {"labels": output + LABELS_SUFFIX,
          "verticals": output + VERTICALS_SUFFIX}


def manifest_path(output: str) -> str:
  """`<output>.manifest.json`: the sha256 of the model and its label files.

  Written after them (`files.write_file_set`); `files.check_file_set` then
  tells a complete set from one an interrupted export left mixed.
  """
  return output + MANIFEST_SUFFIX


def load_export_data_config(saved_model_dir: str):
  """The data config saved with the export (`task.data` of its params.yaml).

  Only the data section is read: int8 calibration needs nothing else, and
  the rest of the schema may have moved on since the export was made.

  Raises:
    TFLiteExportError: when the export has no params.yaml.
  """
  from kc_keras.configs import checks  # pylint: disable=g-import-not-at-top
  from kc_keras.configs import kc_config  # pylint: disable=g-import-not-at-top

  path = os.path.join(saved_model_dir, saved_model_lib.ASSETS_EXTRA,
                      saved_model_lib.PARAMS_FILE)
  if not tf.io.gfile.exists(path):
    raise TFLiteExportError(
        f"{path} not found: int8 needs the training data; pass "
        "--experiment/--config_file or export with export_saved_model.")
  data_config = kc_config.ExperimentConfig().task.data
  with tf.io.gfile.GFile(path) as f:
    saved = checks.load_yaml(f, path)
  data_config.override(saved["task"]["data"], is_strict=True)
  return data_config


def export_recipe(saved_model_dir: str
                  ) -> Optional[Tuple[recipe_lib.QuantizationRecipe, str]]:
  """The quantization recipe an export carries, and its path (None without one).

  Checked against the export itself: its checkpoint (`export_info.json`)
  and its hierarchy (`hierarchy.json`).

  Raises:
    recipe.RecipeError: a malformed recipe, an unknown version, or one
      bound to another checkpoint or hierarchy.
  """
  from kc_keras.dataloaders import hierarchy as hierarchy_lib  # pylint: disable=g-import-not-at-top

  extra = os.path.join(saved_model_dir, saved_model_lib.ASSETS_EXTRA)
  path = os.path.join(extra, recipe_lib.RECIPE_FILE)
  if not tf.io.gfile.exists(path):
    return None
  recipe = recipe_lib.read(path)
  info = records.read_json(os.path.join(extra, saved_model_lib.EXPORT_INFO_FILE),
                           recipe_lib.RecipeError)
  hierarchy = hierarchy_lib.Hierarchy.load(
      os.path.join(extra, restore.HIERARCHY_FILE))
  recipe_lib.check_bound(recipe, path, str(info.get("checkpoint", "")),
                         hierarchy.fingerprint)
  return recipe, path


def resolve_settings(saved_model_dir: str, defaults: Mapping[str, object],
                     given: Mapping[str, object], override: bool = False,
                     log: Callable[[str], None] = print) -> Dict[str, object]:
  """The conversion settings of an export: given ones, else its recipe's, else defaults.

  Args:
    saved_model_dir: a version directory written by `export_saved_model`.
    defaults: every `recipe.EXPORT_SETTINGS` name -> its value without a
      recipe (the flags' defaults).
    given: the settings the user set explicitly.
    override: given settings win over a recipe they contradict.
    log: receives one line naming the settings taken from the recipe.

  Returns:
    Every `recipe.EXPORT_SETTINGS` name -> its value.

  Raises:
    recipe.RecipeError: see `export_recipe`; a given setting that
      contradicts the recipe without `override`.
  """
  found = export_recipe(saved_model_dir)
  if found is None:
    return {**dict(defaults), **dict(given)}
  recipe, path = found
  return recipe_lib.resolve_export_settings(recipe, path, given, override, log)


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


def resolve_logit_floor(logit_floor: Union[float, str, None],
                        quantization: str,
                        float_head: bool = True) -> Optional[float]:
  """`floor.resolve_logit_floor`, its errors as `TFLiteExportError`s."""
  try:
    return floor.resolve_logit_floor(logit_floor, quantization, float_head)
  except errors.QuantizationError as e:
    raise TFLiteExportError(str(e)) from None


def _outputs_function(function, logits_of):
  """images -> {logits: logits_of(function(images)), probs: sigmoid(logits)}.

  A concrete function over `function`'s image spec (the converter's input).
  """
  concrete = function.get_concrete_function()
  spec = tf.TensorSpec(concrete.inputs[0].shape, tf.float32,
                       name=saved_model_lib.IMAGES_INPUT)

  @tf.function(input_signature=[spec])
  def outputs(images):
    logits = logits_of(function(images))
    return {"logits": logits, "probs": tf.sigmoid(logits)}

  return outputs.get_concrete_function()


def _floored_function(function, logit_floor: float):
  """`function` (images -> logits, probs) with logits = max(logits, floor).

  Written as relu(logits + (-floor)) + floor rather than tf.maximum: the
  converter folds a constant ADD (not a SUB) into the classifier's bias and
  fuses the relu into it, so in int8 the classifier's own output is
  calibrated over [0, max - floor] instead of the full logit range; a
  MAXIMUM (or SUB) op after it would leave that coarse rounding in place.
  """
  return _outputs_function(
      function, lambda outputs: tf.nn.relu(
          outputs["logits"] + (-logit_floor)) + logit_floor)


def _floored_parts_function(parts_function, logit_floor: float):
  """The floored logits of a self-paced network (`floor.floored_logits`).

  logits = max(shifted, floor * norm) * scale = max(y, max(floor, -c r_v))
  from the export's `tflite_floor_parts`: the shifted logits are rounded
  over [-c, max] in int8 and the output over about [floor, max], where the
  unfloored self-paced logits span their full negative range in both
  (docs/BENCHMARKS.md, "The graph converted for int8").
  """
  return _outputs_function(
      parts_function,
      lambda parts: floor.floored_logits(parts, logit_floor))


def _float_op_count(concrete, loaded) -> int:
  """Ops of `concrete` converted to a float TFLite model."""
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [concrete], loaded)
  interpreter = Interpreter(model_content=converter.convert())
  return len(interpreter._get_ops_details())  # pylint: disable=protected-access


def default_floor_helps(function, loaded, logit_floor: float,
                        representative_images) -> bool:
  """Whether the default floor narrows the int8 logits of this model.

  It does when (1) some calibration logits lie below it (else relu(x -
  floor) spans [0, max - floor], wider than [min, max]) and (2) the
  floor has an integer-friendly form: a self-paced network's
  `tflite_floor_parts` (its logits come from a data-dependent MUL that a
  constant floor cannot be folded into; appended after it, the floor would
  add two coarse int8 ops: the smoke model's logits step grew 10x), or
  else the converter folds the floor into the op producing the logits (its
  float graph then has exactly one more op, the final ADD).

  Args:
    function: the export's `tflite_serve_image` function.
    loaded: the loaded SavedModel holding it.
    logit_floor: the floor.
    representative_images: the calibration images (a callable).

  Returns:
    True when the floor should be applied.
  """
  lowest = min(float(np.min(function(tf.constant(batch))["logits"]))
               for batch in representative_images())
  if lowest >= logit_floor:
    return False
  if hasattr(loaded, FLOOR_PARTS_FUNCTION):
    return True
  return (_float_op_count(_floored_function(function, logit_floor), loaded)
          == _float_op_count(function.get_concrete_function(), loaded) + 1)


def _unmatched_layers_error(unmatched, op_names) -> TFLiteExportError:
  return TFLiteExportError(
      f"float_layers {unmatched} match no op of the model; op names look "
      f"like {list(op_names)[:3]}")


def _dynamic_float_layers(model: bytes, float_layers: Sequence[str]) -> bytes:
  """A `dynamic` model whose `float_layers` ops compute in float (see tflite_float_kernels).

  Raises:
    TFLiteExportError: a layer names no op, or shares a kernel with an op
      that stays quantized.
  """
  matched, seen = set(), []

  def op_is_float(name: str) -> bool:
    seen.append(name)
    hits = [layer for layer in float_layers
            if float_node_names([name], (), [layer])]
    matched.update(hits)
    return bool(hits)

  try:
    model, _ = tflite_float_kernels.restore_float_kernels(model, op_is_float)
  except ValueError as e:
    raise TFLiteExportError(f"float_layers {list(float_layers)}: {e}") from e
  unmatched = [layer for layer in float_layers if layer not in matched]
  if unmatched:
    raise _unmatched_layers_error(unmatched, seen)
  return model


def _selective_int8(converter, dataset, extra_layers: Sequence[str],
                    float_head: bool = True) -> bytes:
  """int8 everywhere except the head, `extra_layers` and the output ops.

  `float_head=False`: the head (`FLOAT_HEAD_LAYERS`) is int8 too.

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
    raise _unmatched_layers_error(unmatched, tensor_names)
  output_names = [d["name"] for d in interpreter.get_output_details()]
  debugger.options = tf.lite.experimental.QuantizationDebugOptions(
      denylisted_nodes=float_node_names(
          tensor_names, output_names,
          (FLOAT_HEAD_LAYERS if float_head else ()) + tuple(extra_layers)),
      fully_quantize=False)
  return debugger.get_nondebug_quantized_model()


def convert(saved_model_dir: str, quantization: str,
            representative_images: Optional[Callable[[], Iterable[np.ndarray]]]
            = None, float_layers: Sequence[str] = (),
            logit_floor: Union[float, str, None] = DEFAULT,
            float_head: bool = True) -> bytes:
  """The `serve_image` computation as a TFLite flatbuffer (see `convert_with_floor`).

  Returns:
    The model bytes.

  Raises:
    TFLiteExportError: see `convert_with_floor`.
  """
  return convert_with_floor(saved_model_dir, quantization,
                            representative_images, float_layers,
                            logit_floor, float_head)[0]


def convert_with_floor(saved_model_dir: str, quantization: str,
            representative_images: Optional[Callable[[], Iterable[np.ndarray]]]
            = None, float_layers: Sequence[str] = (),
            logit_floor: Union[float, str, None] = DEFAULT,
            float_head: bool = True) -> Tuple[bytes, Optional[float]]:
  """The `serve_image` computation as a TFLite flatbuffer, and its floor.

  Converts the export's `tflite_serve_image` function: the `serve_image`
  signature (float32 `[B, H, W, C]` in [0, 1] -> `logits`, `probs`) without
  the empty-batch guard, whose IF op int8 calibration cannot run. The
  image-bytes signatures are not convertible (DecodeImage is not a TFLite
  builtin): the demo decodes.

  Quantization:
    none: float32 weights and activations.
    fp16: float16 weights, float32 compute.
    dynamic: int8 weights, activations quantized on the fly; the ops of
      `float_layers` compute in float on their int8-grid weights
      (`tflite_float_kernels`): no on-the-fly rounding of their inputs.
    int8: full integer (weights and activations int8, int8 input and
      outputs), calibrated on `representative_images`; the demo reads the
      input/output scale and zero point from the model.
    int8_float_head: int8 like `int8` except the layers of
      `FLOAT_HEAD_LAYERS + float_layers` and the output ops, which run in
      float with float32 weights; float32 input and outputs. Trades file
      size for top-1 agreement on models with close logits.
    int16x8: integer only with int16 activations and int8 weights (float32
      input/output), calibrated likewise: for models whose top logits are
      closer than int8 activations resolve (see
      docs/history/BENCHMARKS_LOG.md, "Why int8 and dynamic miss their goals").

  Args:
    saved_model_dir: a version directory written by `export_saved_model`.
    quantization: one of `QUANTIZATIONS`.
    representative_images: for int8, a callable returning an iterable of
      float32 `[1, H, W, C]` batches.
    float_layers: `int8_float_head` and `dynamic` only: Keras layer names
      kept float (e.g. "block0_conv0"; matched as path segments of the ops'
      output names, fused names included).
    logit_floor: a negative number: the model outputs
      logits = max(logits, logit_floor) (probs follow). The scores and the
      top-k are unchanged unless fewer than k logits exceed the floor;
      in int8 the logits' quantization step shrinks from
      (max - min) / 255 to (max - floor) / 255. "default": -16 where the
      logits layer outputs int8 (`int8`; `int8_float_head` with
      `float_head=False`) and `default_floor_helps`, else no floor; None
      or "none": no floor. A number is always applied.
    float_head: `int8_float_head` only: False quantizes the logits layer
      too, keeping only `float_layers` and the output ops float (with a
      logit floor: int8 size, and the stem float closes most of the gap;
      see docs/history/BENCHMARKS_LOG.md).

  Returns:
    `(model bytes, the logit floor applied or None)`.

  Raises:
    TFLiteExportError: unknown quantization, int8 without images, a
      `logit_floor` that is not a finite negative number,
      `float_layers` with another quantization than `FLOAT_LAYER_VARIANTS`,
      `float_head=False` with another than int8_float_head, `float_layers`
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
  if not float_head and quantization != "int8_float_head":
    raise TFLiteExportError(
        f"float_head=False only applies to int8_float_head, not "
        f"quantization={quantization!r}")
  if float_layers and quantization not in FLOAT_LAYER_VARIANTS:
    raise TFLiteExportError(
        f"float_layers={list(float_layers)} only apply to "
        f"{' and '.join(FLOAT_LAYER_VARIANTS)}, not "
        f"quantization={quantization!r}")
  is_default = (isinstance(logit_floor, str)
                and logit_floor.strip().lower() == DEFAULT)
  logit_floor = resolve_logit_floor(logit_floor, quantization, float_head)
  if not tf.saved_model.contains_saved_model(saved_model_dir):
    raise TFLiteExportError(f"{saved_model_dir} holds no SavedModel")
  loaded = tf.saved_model.load(saved_model_dir)
  function = getattr(loaded, TFLITE_FUNCTION, None)
  if function is None:
    raise TFLiteExportError(
        f"{saved_model_dir} has no {TFLITE_FUNCTION!r} function; export it "
        "with export.export_saved_model")
  if (is_default and logit_floor is not None
      and not default_floor_helps(function, loaded, logit_floor,
                                  representative_images)):
    logit_floor = None
  parts = getattr(loaded, FLOOR_PARTS_FUNCTION, None)
  if logit_floor is None:
    concrete = function.get_concrete_function()
  elif parts is not None:
    concrete = _floored_parts_function(parts, logit_floor)
  else:
    concrete = _floored_function(function, logit_floor)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [concrete], loaded)
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
    return (_selective_int8(converter, dataset, float_layers, float_head),
            logit_floor)
  if quantization == "int8":
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  if quantization == "int16x8":
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
  model = converter.convert()
  if quantization == "dynamic" and float_layers:
    model = _dynamic_float_layers(model, float_layers)
  return model, logit_floor


def _label_lines(saved_model_dir: str) -> List[str]:
  """Per-class name and vertical-name files from the export's hierarchy.

  Raises:
    TFLiteExportError: the hierarchy beside the SavedModel names other
      classes than the SavedModel's own label asset.
  """
  from kc_keras.dataloaders import hierarchy as hierarchy_lib  # pylint: disable=g-import-not-at-top

  hierarchy_path = os.path.join(saved_model_dir, saved_model_lib.ASSETS_EXTRA,
                                restore.HIERARCHY_FILE)
  hierarchy = hierarchy_lib.Hierarchy.load(hierarchy_path)
  # The names the SavedModel itself serves: the hierarchy file beside it must
  # be the one it was exported with, or the TFLite labels would be wrong.
  served_path = os.path.join(saved_model_dir, "assets",
                             saved_model_lib.LABELS_ASSET)
  if tf.io.gfile.exists(served_path):
    with tf.io.gfile.GFile(served_path) as f:
      served = f.read().splitlines()
    if served != list(hierarchy.class_names):
      differ = [i for i, (a, b) in enumerate(zip(served,
                                                 hierarchy.class_names))
                if a != b]
      where = (f"class {differ[0]}: {served[differ[0]]!r} vs "
               f"{hierarchy.class_names[differ[0]]!r}" if differ else
               f"{len(served)} vs {hierarchy.num_classes} classes")
      raise TFLiteExportError(
          f"{hierarchy_path} does not name the classes the SavedModel serves "
          f"({served_path}; first difference at {where}); export the "
          "SavedModel again.")
  labels = "".join(n + "\n" for n in hierarchy.class_names)
  verticals = "".join(hierarchy.vertical_names[v] + "\n"
                      for v in hierarchy.class_to_vertical)
  return [labels, verticals]


def export_tflite(saved_model_dir: str, output: str, quantization: str,
                  params=None, representative_examples: int = 100,
                  float_layers: Sequence[str] = (),
                  logit_floor: Union[float, str, None] = DEFAULT,
                  float_head: bool = True) -> dict:
  """Converts and writes `output` plus its label files as one set.

  Args:
    saved_model_dir: a version directory written by `export_saved_model`.
    output: the `.tflite` path.
    quantization: one of `QUANTIZATIONS`.
    params: the experiment config whose TRAINING split calibrates int8 /
      int16x8 (default: `task.data` of the params.yaml saved with the export).
    representative_examples: training images used for calibration.
    float_layers: see `convert`.
    logit_floor: see `convert`.
    float_head: see `convert`.

  Returns:
    `{"model": output, "labels": ..., "verticals": ..., "manifest": ...,
    "bytes": size, "quantization": quantization, "logit_floor": the floor
    applied or None}`.

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
    images = lambda: calibration.training_images(  # noqa: E731
        data_config, representative_examples)  # noqa: E731
  model, applied_floor = convert_with_floor(
      saved_model_dir, quantization, images, float_layers, logit_floor,
      float_head)
  labels, verticals = _label_lines(saved_model_dir)
  paths = sidecar_paths(output)
  # One set: a reader that checks the manifest (the demo) never pairs a new
  # model with old labels, even when this process is killed part-way.
  files.write_file_set({paths["labels"]: labels.encode("utf-8"),
                        paths["verticals"]: verticals.encode("utf-8"),
                        output: model}, manifest_path(output))
  return dict(model=output, bytes=len(model), quantization=quantization,
              logit_floor=applied_floor, manifest=manifest_path(output),
              **paths)
