"""Parses the experiment config the model-garden way and dispatches a mode."""

from typing import Optional, Sequence

from official.modeling import hyperparams

from kc_keras.configs import experiments  # noqa: F401  (registers kc_*)
from kc_keras.configs import kc_config
from kc_keras.training import modes


def parse_configuration(
    flags_obj, extra_overrides: Sequence[dict] = ()
) -> kc_config.ExperimentConfig:
  """Registered defaults, then each --config_file, then --params_override.

  Every override is strict (an unknown key is an error); the result is
  validated and locked, as in `official.core.train_utils`.

  Args:
    flags_obj: an object with `experiment`, `config_file`, `params_override`
      and `tpu` attributes (absl FLAGS or a namespace).
    extra_overrides: dicts applied after the config files and before
      `params_override` (a pipeline's per-stage settings).

  Returns:
    The locked `ExperimentConfig`.

  Raises:
    ValueError: unknown experiment or key, wrong type, failed validation.
  """
  params = experiments.get_experiment(flags_obj.experiment)
  for config_file in flags_obj.config_file or []:
    params = hyperparams.override_params_dict(params, config_file,
                                              is_strict=True)
  for overrides in extra_overrides:
    params.override(overrides, is_strict=True)
  if getattr(flags_obj, "tpu", None):
    params.override({"runtime": {"tpu": flags_obj.tpu}}, is_strict=True)
  if flags_obj.params_override:
    params = hyperparams.override_params_dict(
        params, flags_obj.params_override, is_strict=True)
  params.validate()
  params.lock()
  return params


MODES = ("train", "eval", "train_and_eval", "train_specialists",
         "cache_targets", "eval_specialists")


def run(params: kc_config.ExperimentConfig, mode: str, model_dir: str,
        checkpoint_path: Optional[str] = None,
        verticals: Optional[Sequence[int]] = None):
  """Runs one of `MODES`.

  Args:
    params: the locked experiment config.
    mode: what to run.
    model_dir: the run directory.
    checkpoint_path: checkpoint to evaluate (`eval`), default the latest.
    verticals: teachers to train (`train_specialists`), default config/all.

  Returns:
    The mode's result (`TrainResult`, metrics or manifest dict, or a tuple
    for `train_and_eval`).
  """
  if mode == "train":
    return modes.train(params, model_dir)
  if mode == "eval":
    return modes.evaluate(params, model_dir, checkpoint_path)
  if mode == "train_and_eval":
    result = modes.train(params, model_dir)
    return result, modes.evaluate(params, model_dir, checkpoint_path)
  if mode == "train_specialists":
    return modes.train_specialists(params, model_dir, verticals=verticals)
  if mode == "cache_targets":
    return modes.cache_targets(params, model_dir)
  if mode == "eval_specialists":
    return modes.evaluate_specialists(params, model_dir)
  raise ValueError(f"Unknown mode {mode!r}.")
