"""Tests for kc_keras.common: start-up environment and TensorFlow-free --help."""

import os
import pathlib
import subprocess
import sys

import pytest

from kc_keras.common import startup

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SUBPROCESS_TIMEOUT_S = 120


def test_cpu_only_machine_filters_cpp_errors(tmp_path):
  environ = {}
  set_now = startup.quiet_tensorflow(
      environ, device_nodes=str(tmp_path / "nvidia[0-9]*"))
  assert environ == set_now == {"KERAS_BACKEND": "tensorflow",
                                "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_gpu_machine_keeps_cpp_errors(tmp_path):
  (tmp_path / "nvidia0").touch()
  environ = {}
  startup.quiet_tensorflow(environ,
                           device_nodes=str(tmp_path / "nvidia[0-9]*"))
  assert environ["TF_CPP_MIN_LOG_LEVEL"] == "2"


def test_user_settings_win(tmp_path):
  environ = {"TF_CPP_MIN_LOG_LEVEL": "0", "KERAS_BACKEND": "jax"}
  assert startup.quiet_tensorflow(
      environ, device_nodes=str(tmp_path / "none*")) == {}
  assert environ == {"TF_CPP_MIN_LOG_LEVEL": "0", "KERAS_BACKEND": "jax"}


@pytest.mark.parametrize("binary, own_flag", [
    ("kc_keras.train", "--model_dir"),
    ("kc_keras.run_pipeline", "--workdir"),
    ("export.export_saved_model", "--export_dir"),
    ("export.sample_images", "--output_dir"),
])
def test_help_does_not_load_tensorflow(binary, own_flag):
  """`--helpfull` answers from the flag definitions alone: neither
  TensorFlow nor Keras is imported (they take seconds to load)."""
  code = (
      "import sys, runpy\n"
      f"sys.argv = ['{binary}', '--helpfull']\n"
      "try:\n"
      f"  runpy.run_module('{binary}', run_name='__main__')\n"
      "except SystemExit:\n"
      "  pass\n"
      "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
      "print('LOADED', heavy)\n")
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, cwd=str(REPO_ROOT), env=env,
                          timeout=SUBPROCESS_TIMEOUT_S)
  assert "LOADED []" in result.stdout, result.stdout + result.stderr
  assert own_flag in result.stdout, result.stdout
