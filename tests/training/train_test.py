"""End-to-end tests of the trainer: loss falls, resume, eval report, guards."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.training import modes

from smoke_configs import GENERALIST_SMOKE as SMOKE
from smoke_configs import REPO_ROOT as REPO
from smoke_configs import smoke_params as _params


class TrainTest(tf.test.TestCase):

  def test_generalist_loss_falls_and_eval_reports(self):
    model_dir = self.create_tempdir().full_path
    params = _params("trainer.train_steps=60,trainer.checkpoint_interval=30")
    result = modes.train(params, model_dir, verbose=False)
    self.assertEqual(result.step, 60)
    first = result.history[0][1]["loss"]
    last = result.history[-1][1]["loss"]
    self.assertLess(last, 0.95 * first)
    self.assertEqual(
        os.path.basename(tf.train.latest_checkpoint(model_dir)), "ckpt-60")

    metrics = modes.evaluate(params, model_dir)
    with open(os.path.join(model_dir, modes.EVAL_METRICS_FILE)) as f:
      on_disk = json.load(f)
    self.assertEqual(on_disk["step"], 60)
    self.assertEqual(on_disk["num_examples"], 40 * 3)
    for key in ("top1", "top5", "mpvap"):
      self.assertBetween(on_disk[key], 0.0, 1.0)
      self.assertAlmostEqual(on_disk[key], metrics[key])
    self.assertGreaterEqual(on_disk["top5"], on_disk["top1"])
    self.assertGreater(on_disk["params"]["total"], 0)

  def test_resume_continues_from_the_latest_checkpoint(self):
    model_dir = self.create_tempdir().full_path
    first = modes.train(_params("trainer.train_steps=20"), model_dir,
                        verbose=False)
    self.assertEqual(first.step, 20)
    resumed = modes.train(_params("trainer.train_steps=40"), model_dir,
                          verbose=False)
    self.assertEqual(resumed.step, 40)
    # Only the remaining 20 steps ran: two loops of 10.
    self.assertEqual([s for s, _ in resumed.history], [30, 40])
    # Nothing to do once the target is reached.
    again = modes.train(_params("trainer.train_steps=40"), model_dir,
                        verbose=False)
    self.assertEqual(again.history, [])

  def test_model_dir_of_another_hierarchy_is_refused(self):
    model_dir = self.create_tempdir().full_path
    modes.train(_params("trainer.train_steps=10,trainer.checkpoint_interval=10"),
                model_dir, verbose=False)
    with self.assertRaisesRegex(hierarchy_lib.HierarchyError,
                                "another hierarchy"):
      modes.train(_params("task.data.embedded.num_classes=44"), model_dir,
                  verbose=False)

  def test_run_eagerly_trains_the_same_weights(self):
    """runtime.run_eagerly runs the same step op by op: same weights."""
    weights = {}
    for eager in (False, True):
      model_dir = self.create_tempdir().full_path
      modes.train(_params("trainer.train_steps=4,trainer.steps_per_loop=2,"
                          f"runtime.run_eagerly={eager}"),
                  model_dir, verbose=False)
      reader = tf.train.load_checkpoint(model_dir)
      weights[eager] = {
          name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()
          if name.startswith("model/") and "OPTIMIZER" not in name}
    self.assertNotEmpty(weights[False])
    self.assertEqual(sorted(weights[True]), sorted(weights[False]))
    for name, value in weights[False].items():
      self.assertAllClose(weights[True][name], value, atol=1e-6, msg=name)


@pytest.mark.slow
def test_binary_train_and_eval_writes_params_and_metrics(tmp_path):
  model_dir = tmp_path / "run"
  cmd = [sys.executable, "-m", "kc_keras.train",
         "--experiment=kc_generalist_demo", f"--config_file={SMOKE}",
         "--params_override=trainer.train_steps=20",
         "--mode=train_and_eval", f"--model_dir={model_dir}"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (model_dir / "params.yaml").exists()
  metrics = json.loads((model_dir / "eval_metrics.json").read_text())
  assert metrics["step"] == 20
  assert "mpvap" in metrics
