"""Config checks beyond `validate()`: key paths of overrides, value types, run-dir changes."""

import dataclasses
import math
import typing
from typing import Any, Dict, List, Optional, Sequence, Tuple

from official.modeling import hyperparams
from official.modeling.hyperparams import params_dict
import yaml

# Keys a rerun of a model_dir may change without `--allow_config_change`:
# how long and how often (the run continues the same training), and the
# hardware/distribution (checkpoints restore under any strategy). A prefix
# ending in '.' covers a whole sub-config.
RESUME_SAFE_KEYS = (
    "trainer.train_epochs",
    "trainer.train_steps",
    "trainer.steps_per_loop",
    "trainer.checkpoint_interval",
    "trainer.max_to_keep",
    "trainer.validation_steps",
    "task.eval_batch_size",
    "task.data.num_parallel_calls",
    "task.specialists.verticals",
    "runtime.",
)
# Differences listed in one error message.
_MAX_LISTED = 20


class ConfigError(ValueError):
  """A config value of the wrong type, or a run dir holding another config."""


class UnknownConfigKeyError(KeyError, ValueError):
  """An override names a key the config does not have (full path named)."""

  def __str__(self):
    return str(self.args[0]) if self.args else ""


class _UniqueKeyLoader(params_dict._LOADER):  # pylint: disable=protected-access
  """The `params_dict` YAML loader, refusing a key given twice in one mapping.

  Plain YAML keeps the last of two equal keys: a second `trainer:` block
  would silently drop every key of the first.
  """

  def construct_mapping(self, node, deep=False):
    first_line = {}
    duplicates = []
    for key_node, _ in node.value:
      key = self.construct_object(key_node, deep=True)
      line = key_node.start_mark.line + 1
      if key in first_line:
        duplicates.append(f"{key!r} (lines {first_line[key]} and {line})")
      else:
        first_line[key] = line
    if duplicates:
      raise ConfigError(
          f"{node.start_mark.name}: duplicate key(s) "
          + ", ".join(duplicates) + "; merge them into one.")
    return super().construct_mapping(node, deep=deep)


def load_yaml(stream, source: str) -> Any:
  """Parses YAML (text or an open file) with unique keys, naming `source`.

  Raises:
    ConfigError: a duplicate key or invalid YAML, naming `source`.
  """
  loader = _UniqueKeyLoader(stream)
  loader.name = source
  try:
    return loader.get_single_data()
  except yaml.YAMLError as e:
    raise ConfigError(f"{source}: invalid YAML: {e}") from None
  finally:
    loader.dispose()


def override_dict(dict_or_string_or_yaml_file) -> Dict:
  """The dict an override stands for, parsed as `params_dict` parses it.

  Args:
    dict_or_string_or_yaml_file: a dict, a 'a.b=1,c=2' / YAML / JSON string,
      or a YAML file path.

  Returns:
    The nested override dict ({} for an empty input).

  Raises:
    ValueError: for another input type.
    ConfigError: a key given twice in one mapping, or invalid YAML.
  """
  value = dict_or_string_or_yaml_file
  if not value:
    return {}
  if isinstance(value, dict):
    return value
  if not isinstance(value, str):
    raise ValueError(f"Cannot read an override from {type(value).__name__}.")
  try:
    converted = params_dict.nested_csv_str_to_json_str(value)
  except ValueError:
    converted = value
  if converted != value:
    # 'a.b=1,a.b=2': a repeated key in the comma form overrides the earlier
    # one on purpose (later overrides win), as in `params_dict`.
    loaded = yaml.load(converted, Loader=params_dict._LOADER)  # pylint: disable=protected-access
  else:
    loaded = load_yaml(value, "the override string")
  if isinstance(loaded, dict):
    return loaded
  with open(value) as f:
    return load_yaml(f, value) or {}


def check_known_keys(config: hyperparams.Config, overrides: Dict,
                     prefix: str = "") -> None:
  """Raises if `overrides` names a key that `config` lacks.

  Raises:
    UnknownConfigKeyError: naming the full key path and the known keys.
  """
  for key, value in overrides.items():
    path = f"{prefix}{key}"
    if not hasattr(config, "as_dict") or key not in config.as_dict():
      known = sorted(config.as_dict()) if hasattr(config, "as_dict") else []
      raise UnknownConfigKeyError(
          f"Unknown config key {path!r} (known keys here: {known}).")
    child = getattr(config, key)
    if isinstance(value, dict) and isinstance(child, hyperparams.Config):
      check_known_keys(child, value, f"{path}.")


def apply_override(params: hyperparams.Config, override) -> hyperparams.Config:
  """`params.override(...)`, strict, with unknown keys named by full path.

  Args:
    params: the config to change in place.
    override: anything `override_dict` reads.

  Returns:
    `params`.

  Raises:
    UnknownConfigKeyError: an unknown key (full path).
  """
  overrides = override_dict(override)
  check_known_keys(params, overrides)
  params.override(overrides, is_strict=True)
  return params


def _matches(value: Any, annotation: Any) -> bool:
  """Whether `value` is acceptable for a field annotated `annotation`."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if annotation is Any:
    return True
  if origin is typing.Union:
    return any(_matches(value, a) for a in args)
  if annotation is type(None):
    return value is None
  if annotation is bool:
    return isinstance(value, bool)
  if annotation is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if annotation is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if annotation is str:
    return isinstance(value, str)
  if annotation in (list, tuple) or origin in (list, tuple, Sequence,
                                               typing.List, typing.Tuple):
    if not isinstance(value, (list, tuple)):
      return False
    item = None
    if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis):
      item = args[0]
    return item is None or all(_matches(v, item) for v in value)
  if isinstance(annotation, type) and issubclass(annotation, hyperparams.Config):
    return isinstance(value, annotation)
  return True


def _type_name(annotation: Any) -> str:
  args = [a for a in typing.get_args(annotation) if a is not type(None)]
  if typing.get_origin(annotation) is typing.Union and len(args) == 1:
    return f"{_type_name(args[0])} (or None: derived from the data)"
  return getattr(annotation, "__name__", None) or str(annotation).replace(
      "typing.", "")


def check_types(config: hyperparams.Config, prefix: str = "") -> None:
  """Checks every field of `config` (recursively) against its annotation.

  `hyperparams.Config.override` keeps whatever type an override gives
  ('abc' for an int, a dict for a float); this finds it before it fails
  deep inside training.

  Raises:
    ConfigError: naming the full key path, the value and the expected type,
      or a NaN / infinite float (no setting means one).
  """
  hints = typing.get_type_hints(type(config))
  for field in dataclasses.fields(config):
    if field.name not in hints:
      continue
    value = getattr(config, field.name)
    path = f"{prefix}{field.name}"
    annotation = hints[field.name]
    if isinstance(value, hyperparams.Config) and isinstance(
        annotation, type) and issubclass(annotation, hyperparams.Config):
      check_types(value, f"{path}.")
      continue
    if not _matches(value, annotation):
      shown = value.as_dict() if isinstance(value, hyperparams.Config) else value
      raise ConfigError(
          f"{path}={shown!r} has type {type(value).__name__}; expected "
          f"{_type_name(annotation)}.")
    if _is_non_finite(value):
      raise ConfigError(f"{path}={value!r} is not a finite number.")


def _is_non_finite(value: Any) -> bool:
  """A float (or a list holding one) that is NaN or infinite."""
  if isinstance(value, float):
    return not math.isfinite(value)
  if isinstance(value, (list, tuple)):
    return any(_is_non_finite(v) for v in value)
  return False


def flatten(tree: Any, prefix: str = "") -> Dict[str, Any]:
  """{"a.b.c": leaf} of a nested config dict (tuples as lists)."""
  if not isinstance(tree, dict):
    return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}
  out = {}
  for key, value in tree.items():
    out.update(flatten(value, f"{prefix}{key}."))
  return out


def is_ignored(key: str, ignore: Sequence[str]) -> bool:
  """Whether key path `key` is one of `ignore` or under a prefix ending in '.'."""
  return any(key == i or (i.endswith(".") and key.startswith(i)) for i in ignore)


def differing_keys(old: Dict, new: Dict,
                   ignore: Sequence[str] = RESUME_SAFE_KEYS,
                   defaults: Optional[Dict] = None
                   ) -> List[Tuple[str, Any, Any]]:
  """`(key path, old, new)` for every leaf that differs, minus `ignore`d keys.

  Args:
    old: a config as a nested dict (e.g. a saved params.yaml).
    new: the current config as a nested dict.
    ignore: key paths, or prefixes ending in '.', allowed to differ.
    defaults: the config class's defaults as a nested dict; a key that
      `old` lacks (added to the config after that run) does not differ when
      its new value is its default.

  Returns:
    Sorted by key path.
  """
  a, b = flatten(old), flatten(new)
  d = flatten(defaults) if defaults else {}
  out = []
  for key in sorted(set(a) | set(b)):
    if is_ignored(key, ignore):
      continue
    if key not in a and key in d and b.get(key) == d[key]:
      continue
    if a.get(key, "<absent>") != b.get(key, "<absent>"):
      out.append((key, a.get(key, "<absent>"), b.get(key, "<absent>")))
  return out


def check_rerun(old: Dict, new: Dict, model_dir: str,
                defaults: Optional[Dict] = None,
                ignore: Sequence[str] = RESUME_SAFE_KEYS) -> None:
  """Refuses to rerun `model_dir` with a config that changes what is trained.

  Args:
    old: the recorded config as a nested dict.
    new: the current config as a nested dict.
    model_dir: named in the error.
    defaults: see `differing_keys`.
    ignore: key paths allowed to differ (see `differing_keys`).

  Raises:
    ConfigError: listing each differing key path with both values.
  """
  diffs = differing_keys(old, new, ignore=ignore, defaults=defaults)
  if not diffs:
    return
  listed = "; ".join(f"{k}: was {a!r}, now {b!r}"
                     for k, a, b in diffs[:_MAX_LISTED])
  more = f" (and {len(diffs) - _MAX_LISTED} more)" if len(
      diffs) > _MAX_LISTED else ""
  raise ConfigError(
      f"{model_dir} was run with another config: {listed}{more}. Use a new "
      f"--model_dir, restore the old values, or pass --allow_config_change "
      f"to continue with the new config.")
