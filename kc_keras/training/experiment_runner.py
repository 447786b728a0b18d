"""Parses the experiment config the model-garden way and dispatches a mode."""

from typing import Optional, Sequence

from kc_keras.common import run_modes
from kc_keras.configs import checks
from kc_keras.configs import derived_defaults
from kc_keras.configs import experiments  # noqa: F401  (registers kc_*)
from kc_keras.configs import kc_config
from kc_keras.training import modes


def parse_configuration(
    flags_obj, extra_overrides: Sequence[dict] = (),
    data_overrides: Sequence[dict] = ()
) -> kc_config.ExperimentConfig:
  """Registered defaults, then each --config_file, then --params_override.

  Every override is strict (an unknown key is an error naming its full path);
  fields still unset (None) are then derived from the data
  (`derived_defaults.resolve`); the result is type-checked against the dataclass annotations, validated
  and locked, as in `official.core.train_utils`.

  Args:
    flags_obj: an object with `experiment`, `config_file`, `params_override`
      and `tpu` attributes (absl FLAGS or a namespace).
    extra_overrides: dicts applied after the config files and before
      `params_override` (a pipeline's per-stage settings).
    data_overrides: dicts applied before the config files (the data of
      `run_pipeline --data`, which a config file may then refine).

  Returns:
    The locked `ExperimentConfig`.

  Raises:
    ValueError: unknown experiment, failed validation.
    checks.UnknownConfigKeyError: an unknown key (also a KeyError).
    checks.ConfigError: a value of the wrong type.
  """
  params = experiments.get_experiment(flags_obj.experiment)
  for overrides in data_overrides:
    checks.apply_override(params, overrides)
  for config_file in flags_obj.config_file or []:
    checks.apply_override(params, config_file)
  for overrides in extra_overrides:
    checks.apply_override(params, overrides)
  if getattr(flags_obj, "tpu", None):
    checks.apply_override(params, {"runtime": {"tpu": flags_obj.tpu}})
  if flags_obj.params_override:
    checks.apply_override(params, flags_obj.params_override)
  derived_defaults.resolve(params)
  checks.check_types(params)
  params.validate()
  params.lock()
  return params


MODES = run_modes.MODES


def run(params: kc_config.ExperimentConfig, mode: str, model_dir: str,
        checkpoint_path: Optional[str] = None,
        verticals: Optional[Sequence[int]] = None,
        allow_config_change: bool = False,
        eval_data: Optional[str] = None,
        eval_output: Optional[str] = None):
  """Runs one of `MODES`.

  Args:
    params: the locked experiment config.
    mode: what to run.
    model_dir: the run directory.
    checkpoint_path: checkpoint to evaluate (`eval`), default the latest.
    verticals: teachers to train (`train_specialists`), default config/all.
    allow_config_change: rerun a `model_dir` whose params.yaml differs in
      more than `checks.RESUME_SAFE_KEYS` (see `modes.Session`).
    eval_data: `eval` only: `folder:DIR` to evaluate instead of the eval
      split (see `modes.evaluate`).
    eval_output: `eval` only: where to write the metrics JSON.

  Returns:
    The mode's result (`TrainResult`, metrics or manifest dict, or a tuple
    for `train_and_eval`).

  Raises:
    ValueError: `eval_data` or `eval_output` with another mode than `eval`.
  """
  for flag, value in (("eval_data", eval_data), ("eval_output", eval_output)):
    if value and mode != "eval":
      raise ValueError(f"--{flag} applies to --mode=eval only, not --mode={mode}.")
  allow = dict(allow_config_change=allow_config_change)
  if mode == "train":
    return modes.train(params, model_dir, **allow)
  if mode == "eval":
    return modes.evaluate(params, model_dir, checkpoint_path,
                          eval_data=eval_data or None,
                          output_path=eval_output or None, **allow)
  if mode == "train_and_eval":
    result = modes.train(params, model_dir, **allow)
    # A rerun of a finished stage keeps metrics bound to the same weights.
    return result, modes.evaluate(params, model_dir, checkpoint_path,
                                  keep_bound=True, **allow)
  if mode == "train_specialists":
    return modes.train_specialists(params, model_dir, verticals=verticals,
                                   **allow)
  if mode == "cache_targets":
    return modes.cache_targets(params, model_dir, **allow)
  if mode == "eval_specialists":
    return modes.evaluate_specialists(params, model_dir, keep_bound=True,
                                      **allow)
  raise ValueError(f"Unknown mode {mode!r}.")
