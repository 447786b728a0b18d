"""SIGKILL the trainer mid-run, rerun the same command: same end, same weights."""

import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from kc_keras.training import modes
import smoke_configs

REPO = smoke_configs.REPO_ROOT
CONFIGS = [smoke_configs.GENERALIST_SMOKE, smoke_configs.STUDENT_SMOKE]
STEPS, INTERVAL = 100, 10
# Seconds a trainer subprocess may take (imports included) on a busy 2-core box.
TIMEOUT_S = 300
POLL_S = 0.02


def _override(root):
  """Student with online teachers, vertical-level self-paced scales, dropout
  and augmentation (so RNG state matters), teachers trained from scratch."""
  return ",".join([
      "task.distillation.target_source=online",
      "task.distillation.top_k=5",
      f"task.distillation.teachers_dir={root}/teachers",
      "task.specialists.init_checkpoint=''",
      "task.specialists.freeze=none",
      "task.specialists.trainer.train_steps=2",
      "task.specialists.trainer.steps_per_loop=2",
      "task.specialists.trainer.checkpoint_interval=2",
      "task.model.self_paced.mode=vertical",
      "task.model.head.dropout=0.3",
      "task.data.augmentation.translation=0.1",
      f"trainer.train_steps={STEPS}",
      "trainer.steps_per_loop=5",
      f"trainer.checkpoint_interval={INTERVAL}",
      "trainer.max_to_keep=50",
  ])


def _command(root, model_dir):
  return ([sys.executable, "-m", "kc_keras.train",
           "--experiment=kc_student_demo"] +
          [f"--config_file={c}" for c in CONFIGS] +
          [f"--params_override={_override(root)}", "--mode=train",
           f"--model_dir={model_dir}"])


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("kill_resume"))
  params = smoke_configs.smoke_params(_override(root), "kc_student_demo",
                                      CONFIGS)
  modes.train_specialists(params, f"{root}/specialists", verbose=False)
  return root


def _run(cmd):
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                        timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _variables(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()}


@pytest.mark.slow
def test_sigkill_then_rerun_matches_an_uninterrupted_run(teachers):
  root = teachers
  straight, killed = f"{root}/straight", f"{root}/killed"
  _run(_command(root, straight))

  proc = subprocess.Popen(_command(root, killed), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + TIMEOUT_S
  try:
    while tf.train.latest_checkpoint(killed) is None:
      assert proc.poll() is None, proc.stderr.read()[-3000:]
      assert time.time() < deadline, "no checkpoint in time"
      time.sleep(POLL_S)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait(timeout=TIMEOUT_S)
    proc.stderr.close()
  assert proc.returncode == -signal.SIGKILL
  last = tf.train.latest_checkpoint(killed)
  killed_at = int(last.rsplit("-", 1)[1])
  assert killed_at < STEPS, f"the run finished before the kill ({last})"

  rerun = _run(_command(root, killed))
  restored = re.search(r"Restored (\S+) at step (\d+)", rerun.stderr)
  assert restored, rerun.stderr[-3000:]
  assert (restored.group(1), int(restored.group(2))) == (last, killed_at)
  assert tf.train.latest_checkpoint(killed).endswith(f"ckpt-{STEPS}")

  # Model and optimizer state (Adam slots, step, self-paced gammas, dropout
  # and augmentation seeds) after the same STEPS steps. Equal to float32
  # rounding: the resumed run replays the exact batches (the input stream is
  # a pure function of the config and the step) and the same seeds, so only
  # a differently fused or threaded reduction could move the last bits.
  a = _variables(tf.train.latest_checkpoint(straight))
  b = _variables(tf.train.latest_checkpoint(killed))
  assert sorted(a) == sorted(b)
  for name in a:
    if name.endswith("_CHECKPOINTABLE_OBJECT_GRAPH"):
      continue
    np.testing.assert_allclose(b[name], a[name], rtol=1e-6, atol=1e-6,
                               err_msg=name)
