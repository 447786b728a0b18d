"""absl flags shared by the kc_keras binaries (as Model Garden's official/common/flags.py).

Binaries call these `define_*` functions once at import time and import
TensorFlow only inside `main()`, so that `--help` answers at once.
"""

from absl import flags

from kc_keras.common import run_modes


def define_experiment_flags(purpose: str = "") -> None:
  """--experiment, --config_file, --params_override (config order of the
  Model Garden: registered defaults, each file, then the override).

  Args:
    purpose: prefix for the help texts, e.g. "int8/int16x8: ".
  """
  flags.DEFINE_string("experiment", None,
                      f"{purpose}Registered experiment name (kc_*).")
  flags.DEFINE_multi_string(
      "config_file", None,
      f"{purpose}YAML files overriding the registered experiment, applied "
      "in order.")
  flags.DEFINE_string(
      "params_override", None,
      f"{purpose}YAML/JSON string or file applied last; unknown keys are "
      "errors.")


def define_run_flags() -> None:
  """--mode, --model_dir, --tpu, --checkpoint_path of the trainer."""
  flags.DEFINE_enum(
      "mode", None, run_modes.MODES,
      "train | eval | train_and_eval (the experiment's network: a generalist "
      "or a student), train_specialists (one teacher per vertical), "
      "cache_targets (offline soft targets), eval_specialists (the teachers "
      "as a set).")
  flags.DEFINE_string("model_dir", None,
                      "Checkpoints, summaries and reports.")
  flags.DEFINE_string("tpu", None, "TPU address (sets runtime.tpu).")
  define_checkpoint_flag("Checkpoint to evaluate (default: latest).")


def define_checkpoint_flag(help_text: str = "A ckpt-N prefix or a model_dir "
                           "(its latest checkpoint).") -> None:
  """--checkpoint_path."""
  flags.DEFINE_string("checkpoint_path", None, help_text)
