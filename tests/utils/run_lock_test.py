"""One writer per directory: the lock file, stale locks, and training refused."""

import json
import os
import socket
import subprocess
import sys
import types

import pytest

from kc_keras.training import experiment_runner
from kc_keras.training import modes
from kc_keras.utils import run_lock

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(REPO, "official_configs", "generalist_demo_smoke.yaml")


def _dead_pid():
  """The pid of a process of this host that has exited and been reaped."""
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def test_lock_file_records_pid_and_host_and_is_removed_on_release(tmp_path):
  lock = run_lock.DirectoryLock(str(tmp_path), "training")
  with lock:
    with open(os.path.join(str(tmp_path), run_lock.LOCK_FILE)) as f:
      holder = json.load(f)
    assert holder["pid"] == os.getpid()
    assert holder["host"] == socket.gethostname()
    assert holder["what"] == "training"
  assert not os.path.exists(lock.path)


def test_second_acquire_in_this_process_is_refused_naming_the_holder(tmp_path):
  with run_lock.DirectoryLock(str(tmp_path), "training"):
    with pytest.raises(
        run_lock.LockedError,
        match=rf"is in use by pid {os.getpid()} on host "
              rf"'{socket.gethostname()}' \(training since .*remove "
              rf".*{run_lock.LOCK_FILE}"):
      run_lock.DirectoryLock(str(tmp_path), "training").acquire()


def test_another_process_is_refused_while_the_lock_is_held(tmp_path):
  code = ("import sys; from kc_keras.utils import run_lock\n"
          "try:\n  run_lock.DirectoryLock(sys.argv[1]).acquire()\n"
          "except run_lock.LockedError as e:\n  print(e); sys.exit(3)\n")
  env = dict(os.environ, PYTHONPATH=REPO)
  with run_lock.DirectoryLock(str(tmp_path), "training"):
    held = subprocess.run([sys.executable, "-c", code, str(tmp_path)],
                          capture_output=True, text=True, env=env)
  assert held.returncode == 3, held.stderr
  assert f"in use by pid {os.getpid()}" in held.stdout
  free = subprocess.run([sys.executable, "-c", code, str(tmp_path)],
                        capture_output=True, text=True, env=env)
  assert free.returncode == 0, free.stdout + free.stderr


def test_lock_of_a_dead_process_is_stale_and_replaced(tmp_path):
  path = os.path.join(str(tmp_path), run_lock.LOCK_FILE)
  with open(path, "w") as f:
    json.dump({"pid": _dead_pid(), "host": socket.gethostname()}, f)
  with run_lock.DirectoryLock(str(tmp_path)):
    with open(path) as f:
      assert json.load(f)["pid"] == os.getpid()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
  path = os.path.join(str(tmp_path), run_lock.LOCK_FILE)
  with open(path, "w") as f:
    json.dump({"pid": _dead_pid(), "host": "elsewhere"}, f)
  with pytest.raises(run_lock.LockedError, match="host 'elsewhere'"):
    run_lock.DirectoryLock(str(tmp_path)).acquire()


def test_process_is_alive():
  assert run_lock.process_is_alive(os.getpid())
  assert not run_lock.process_is_alive(_dead_pid())


def test_second_training_on_a_locked_model_dir_changes_nothing(tmp_path):
  model_dir = str(tmp_path / "run")
  params = experiment_runner.parse_configuration(types.SimpleNamespace(
      experiment="kc_generalist_demo", config_file=[SMOKE],
      params_override="trainer.optimizer.learning_rate=0.05", tpu=None))
  os.makedirs(model_dir)
  with run_lock.DirectoryLock(model_dir, "training"):
    with pytest.raises(run_lock.LockedError,
                       match=rf"{model_dir} is in use by pid {os.getpid()}"):
      modes.train(params, model_dir, verbose=False)
  assert os.listdir(model_dir) == []
