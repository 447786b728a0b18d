"""The quantization recipe: what a fine-tuned run was trained for, so its export repeats no flag by hand.

Quantization-aware fine-tuning writes `quantization_recipe.json` into its
run directory; `export.export_saved_model` copies it into the SavedModel's
`assets.extra/`; `export.export_tflite` takes from it every conversion flag
the user leaves unset and refuses a flag that contradicts it (unless told
to override). The record is sealed (`records.seal`) and bound to the
fine-tuned checkpoint and the hierarchy it was trained on, so a recipe
copied beside another network is refused instead of silently applied.
"""

import dataclasses
import os
from typing import Callable, Dict, Mapping, Optional, Tuple

from kc_keras.quantization import errors
from kc_keras.quantization import floor
from kc_keras.utils import files
from kc_keras.utils import records

RECIPE_FILE = "quantization_recipe.json"
RECIPE_VERSION = 1
# The TFLite variants a fine-tuning can target (`export_tflite_lib`'s names).
QUANTIZATIONS = ("dynamic", "int8", "int8_float_head")
# The variants that keep `float_layers` float.
FLOAT_LAYER_QUANTIZATIONS = ("dynamic", "int8_float_head")
# The conversion settings a recipe fixes, by their `export_tflite` flag name.
EXPORT_SETTINGS = ("quantization", "logit_floor", "float_layers",
                   "float_head")
OVERRIDE_FLAG = "override_recipe"


class RecipeError(errors.QuantizationError):
  """A recipe is malformed, of an unknown version, unbound or contradicted; names the file."""


@dataclasses.dataclass(frozen=True)
class QuantizationRecipe:
  """What a quantization-aware fine-tuning trained for, and which network that is.

  Attributes:
    quantization: the TFLite variant the weights and activations were
      trained for (`QUANTIZATIONS`).
    weight_target: the file whose int8 weight grid the kernels were
      snapped to (`kernels.WEIGHT_TARGETS`).
    activations: the activation rounding simulated in training
      (`activation_simulator.ACTIVATION_MODES`).
    logit_floor: the logit floor the file is converted with (None: none).
    float_layers: layers the file keeps float.
    float_head: `int8_float_head` only: whether the logits layers stay
      float.
    equalize_strength: the range equalization applied before fine-tuning
      (0: none).
    source_checkpoint: the checkpoint prefix fine-tuning started from.
    checkpoint: the fine-tuned checkpoint's name in its run directory
      (`ckpt-<step>`).
    hierarchy_fingerprint: `Hierarchy.fingerprint` of the run's classes.
    version: the record's layout (`RECIPE_VERSION`).
  """

  quantization: str
  weight_target: str
  activations: str
  logit_floor: Optional[float]
  float_layers: Tuple[str, ...]
  float_head: bool
  equalize_strength: float
  source_checkpoint: str
  checkpoint: str
  hierarchy_fingerprint: str
  version: int = RECIPE_VERSION

  def export_settings(self) -> Dict[str, object]:
    """The conversion settings as `export_tflite` takes them (floor: a number or 'none')."""
    return dict(quantization=self.quantization,
                logit_floor=(floor.NONE if self.logit_floor is None
                             else self.logit_floor),
                float_layers=list(self.float_layers),
                float_head=self.float_head)


_FIELD_TYPES = {
    "quantization": str, "weight_target": str, "activations": str,
    "logit_floor": (float, int, type(None)), "float_layers": list,
    "float_head": bool, "equalize_strength": (float, int),
    "source_checkpoint": str, "checkpoint": str,
    "hierarchy_fingerprint": str, "version": int,
}


def to_record(recipe: QuantizationRecipe) -> Dict:
  """The recipe as a JSON-ready dict (unsealed)."""
  record = dataclasses.asdict(recipe)
  record["float_layers"] = list(recipe.float_layers)
  return record


def from_record(record: Mapping, path: str) -> QuantizationRecipe:
  """Builds a recipe from a parsed record, checking every field.

  Args:
    record: the JSON object (its seal, if any, is ignored here).
    path: where it was read from, for the messages.

  Returns:
    The recipe.

  Raises:
    RecipeError: an unknown version, a missing, unknown or mistyped field,
      or a quantization outside `QUANTIZATIONS`.
  """
  if not isinstance(record, Mapping):
    raise RecipeError(f"{path}: expected a JSON object, got "
                      f"{type(record).__name__}")
  version = record.get("version")
  if version != RECIPE_VERSION:
    raise RecipeError(f"{path}: recipe version {version!r} is not "
                      f"{RECIPE_VERSION}, the one this code reads")
  body = {k: v for k, v in record.items() if k != records.SEAL_KEY}
  missing = sorted(set(_FIELD_TYPES) - set(body))
  unknown = sorted(set(body) - set(_FIELD_TYPES))
  if missing or unknown:
    raise RecipeError(f"{path}: missing fields {missing}, unknown fields "
                      f"{unknown}")
  for name, kind in _FIELD_TYPES.items():
    value = body[name]
    # bool is an int: a float field holding true is a mistake too.
    if not isinstance(value, kind) or (isinstance(value, bool)
                                       and kind is not bool):
      raise RecipeError(f"{path}: field {name!r} = {value!r} has the wrong "
                        "type")
  if body["quantization"] not in QUANTIZATIONS:
    raise RecipeError(f"{path}: quantization={body['quantization']!r} is "
                      f"not one of {QUANTIZATIONS}")
  body["float_layers"] = tuple(body["float_layers"])
  body["logit_floor"] = (None if body["logit_floor"] is None
                         else float(body["logit_floor"]))
  body["equalize_strength"] = float(body["equalize_strength"])
  return QuantizationRecipe(**body)


def write(recipe: QuantizationRecipe, directory: str) -> str:
  """Writes `directory/quantization_recipe.json`, sealed, atomically; returns the path."""
  path = os.path.join(directory, RECIPE_FILE)
  files.atomic_write_json(path, records.seal(to_record(recipe)))
  return path


def read(path: str) -> QuantizationRecipe:
  """Reads and checks a recipe file.

  Raises:
    RecipeError: unreadable or non-JSON, edited after it was written (its
      seal), or malformed (`from_record`).
  """
  record = records.read_json(path, RecipeError)
  records.check_seal(record, path, RecipeError)
  return from_record(record, path)


def check_bound(recipe: QuantizationRecipe, path: str, checkpoint: str,
                hierarchy_fingerprint: str) -> QuantizationRecipe:
  """Checks that the recipe describes the network of `checkpoint` and its hierarchy.

  Args:
    recipe: the recipe read from `path`.
    path: its file, for the message.
    checkpoint: the checkpoint prefix the network was restored from.
    hierarchy_fingerprint: the fingerprint of the network's hierarchy.

  Returns:
    `recipe`.

  Raises:
    RecipeError: another checkpoint or another hierarchy, naming both.
  """
  name = os.path.basename(os.path.normpath(checkpoint))
  if name != recipe.checkpoint:
    raise RecipeError(
        f"{path} describes {recipe.checkpoint}, not {name}; export the "
        "checkpoint the fine-tuning wrote, or remove the recipe")
  if hierarchy_fingerprint != recipe.hierarchy_fingerprint:
    raise RecipeError(
        f"{path} was written for hierarchy {recipe.hierarchy_fingerprint[:12]}"
        f", not {hierarchy_fingerprint[:12]}; it belongs to another run")
  return recipe


def _comparable(name: str, value, quantization: str, float_head: bool):
  """A setting in one form for comparison (a floor resolved to a number or None)."""
  if name == "logit_floor":
    return floor.resolve_logit_floor(value, quantization, float_head)
  if name == "float_layers":
    return sorted(str(v) for v in value)
  return value


def resolve_export_settings(recipe: QuantizationRecipe, path: str,
                            given: Mapping[str, object], override: bool,
                            log: Callable[[str], None]) -> Dict[str, object]:
  """The conversion settings: the user's where given, else the recipe's.

  A given setting that differs from the recipe's is an error unless
  `override`; the settings taken from the recipe are logged in one line.

  Args:
    recipe: the export's recipe.
    path: its file, for the messages.
    given: the settings the user set (`EXPORT_SETTINGS` names; unset ones
      absent).
    override: let given settings win over a contradicting recipe.
    log: receives the line naming what came from the recipe.

  Returns:
    Every `EXPORT_SETTINGS` name -> its value.

  Raises:
    RecipeError: a given setting contradicts the recipe (naming both
      values and the override flag) and `override` is False.
    QuantizationError: a given logit floor that is not a valid floor.
  """
  unknown = sorted(set(given) - set(EXPORT_SETTINGS))
  if unknown:
    raise RecipeError(f"settings {unknown} are not recipe settings "
                      f"{EXPORT_SETTINGS}")
  settings = recipe.export_settings()
  quantization = str(given.get("quantization", settings["quantization"]))
  float_head = bool(given.get("float_head", settings["float_head"]))
  for name, value in given.items():
    ours = _comparable(name, value, quantization, float_head)
    theirs = _comparable(name, settings[name], recipe.quantization,
                         recipe.float_head)
    if ours != theirs and not override:
      raise RecipeError(
          f"--{name}={value!r} contradicts {path} ({name}="
          f"{settings[name]!r}, the setting the run was fine-tuned for); "
          f"drop the flag, or pass --{OVERRIDE_FLAG} to convert anyway")
  taken = {name: settings[name] for name in EXPORT_SETTINGS
           if name not in given}
  if taken:
    log(f"from the quantization recipe {path}: "
        + ", ".join(f"{k}={v!r}" for k, v in taken.items()))
  return {**settings, **dict(given)}
