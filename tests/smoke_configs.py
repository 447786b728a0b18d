"""The repository's paths and the smoke configs that tests train with."""

import pathlib
import types

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "official_configs"
# A tiny generalist on the embedded data (40 classes), and the student's
# additions on top of it (online teachers of the same size).
GENERALIST_SMOKE = str(CONFIG_DIR / "generalist_demo_smoke.yaml")
STUDENT_SMOKE = str(CONFIG_DIR / "student_demo_smoke.yaml")


def flags_like(experiment, config_file=None, params_override=None, tpu=None):
  """What the binaries' absl FLAGS give `parse_configuration`."""
  return types.SimpleNamespace(experiment=experiment, config_file=config_file,
                               params_override=params_override, tpu=tpu)


def smoke_params(params_override=None, experiment="kc_generalist_demo",
                 config_files=(GENERALIST_SMOKE,)):
  """The locked config of `experiment` with the smoke files and override."""
  from kc_keras.training import experiment_runner  # pylint: disable=g-import-not-at-top
  return experiment_runner.parse_configuration(flags_like(
      experiment, list(config_files), params_override or None))
