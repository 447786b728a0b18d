"""Tests for quantization-aware fine-tuning: the straight-through step, the run it writes, resume."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kc_keras.quantization import errors
from kc_keras.quantization import fine_tuning
from kc_keras.quantization import grids
from kc_keras.quantization import kernels
from kc_keras.quantization import qat_model
from kc_keras.quantization import recipe as recipe_lib
from kc_keras.training import controller as controller_lib
from kc_keras.training import restore


def test_straight_through_step():
  # One SGD step: w <- w - lr * dL/dq(w), the gradient taken at q(w); then
  # the network holds q(w) of the new float copy.
  inputs = keras.Input((3,))
  dense = keras.layers.Dense(2, use_bias=False, name="dense")
  network = keras.Model(inputs, dense(inputs))
  kernel = np.array([[0.5, -1.0], [0.123, 0.3], [1.27, 0.77]], np.float32)
  dense.kernel.assign(kernel)
  images = np.array([[1.0, 2.0, -1.0]], np.float32)
  labels = np.array([[1]], np.int32)
  learning_rate = 0.5
  model = qat_model.QuantizationAwareModel(network)
  model.compile(optimizer=keras.optimizers.SGD(learning_rate))
  model.optimizer.build(model.optimizer_variables)
  quantized = grids.fake_quantize_kernel(kernel).numpy()
  np.testing.assert_array_equal(dense.kernel.numpy(), quantized)
  logs = model.train_step((tf.constant(images),
                           {"label_ids": tf.constant(labels)}))
  logits = images @ quantized
  # d/dlogits of sum_j sigmoid CE = sigmoid(logits) - targets.
  probs = 1 / (1 + np.exp(-logits))
  grad = images.T @ (probs - [[0.0, 1.0]])
  np.testing.assert_allclose(model.shadows[0].numpy(),
                             kernel - learning_rate * grad, atol=1e-6)
  np.testing.assert_allclose(
      dense.kernel.numpy(),
      grids.fake_quantize_kernel(kernel - learning_rate * grad), atol=0)
  loss = -(np.log(1 - probs[0, 0]) + np.log(probs[0, 1]))
  assert float(logs["loss"]) == pytest.approx(loss, rel=1e-5)


def test_targets_resolve_and_conflicts_are_named():
  assert fine_tuning.resolve_targets(None, None, "none") == ("dynamic",
                                                              "dynamic")
  assert fine_tuning.resolve_targets(None, None, "int8") == ("int8", "int8")
  assert fine_tuning.resolve_targets(None, "int8", "none") == ("int8", "int8")
  assert fine_tuning.resolve_targets("int8_float_head", None, "int8") == (
      "int8_float_head", "int8")
  with pytest.raises(errors.QuantizationError, match="not the grid of"):
    fine_tuning.resolve_targets("dynamic", "int8", "none")


def _checkpoint_values(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()
          if "OBJECT_GRAPH" not in name}


def test_an_interrupted_run_resumes_exactly(trained_run, tmp_path,
                                            monkeypatch):
  params, model_dir = trained_run
  common = dict(steps=4, log_every=2, evaluate=False, activations="int8",
                logit_floor=-16.0, representative_examples=8,
                calibration_interval=3, log=lambda _: None)
  straight = str(tmp_path / "straight")
  result = fine_tuning.fine_tune(params, model_dir, straight, **common)
  assert os.path.basename(result.checkpoint) == "ckpt-4"

  resumed = str(tmp_path / "resumed")
  save = controller_lib.TrainController._save  # pylint: disable=protected-access

  def save_then_stop(controller, step):
    save(controller, step)
    if step == 2:
      raise KeyboardInterrupt("stopped after step 2")

  monkeypatch.setattr(controller_lib.TrainController, "_save", save_then_stop)
  with pytest.raises(KeyboardInterrupt):
    fine_tuning.fine_tune(params, model_dir, resumed, **common)
  monkeypatch.undo()
  assert tf.train.latest_checkpoint(resumed).endswith("ckpt-2")
  assert not os.path.exists(os.path.join(resumed, fine_tuning.SUMMARY_FILE))
  with pytest.raises(errors.QuantizationError,
                     match="other settings .steps: 4 there, 5 now"):
    fine_tuning.fine_tune(params, model_dir, resumed,
                          **dict(common, steps=5))
  fine_tuning.fine_tune(params, model_dir, resumed, **common)

  a = _checkpoint_values(os.path.join(straight, "ckpt-4"))
  b = _checkpoint_values(os.path.join(resumed, "ckpt-4"))
  assert sorted(a) == sorted(b)
  # The network, the optimizer (with the float copies it trains) and the
  # calibrated ranges.
  for part in ("model/student/", "optimizer/", "quantization/"):
    assert any(name.startswith(part) for name in a), part
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  with pytest.raises(errors.QuantizationError, match="finished fine-tuning"):
    fine_tuning.fine_tune(params, model_dir, resumed, **common)


@pytest.mark.slow
@pytest.mark.parametrize("activations", ["none", "dynamic", "int8"])
def test_fine_tune_writes_a_run_the_exporter_takes(trained_run, tmp_path,
                                                   activations):
  params, model_dir = trained_run
  out = str(tmp_path / "qat")
  equalize = 0.5 if activations == "dynamic" else 0.0
  result = fine_tuning.fine_tune(params, model_dir, out, steps=3,
                                 evaluate=False, activations=activations,
                                 logit_floor=-16.0, representative_examples=8,
                                 equalize_strength=equalize,
                                 log=lambda _: None)
  assert sorted(os.listdir(tmp_path)) == ["qat"]
  assert result.checkpoint.endswith("ckpt-3")
  for name in ("checkpoint", "hierarchy.json", "params.yaml",
               fine_tuning.SUMMARY_FILE, fine_tuning.SETTINGS_FILE,
               recipe_lib.RECIPE_FILE):
    assert os.path.exists(os.path.join(out, name)), name
  network, hierarchy, restored, _ = restore.load_network(params, out)
  assert restored == result.checkpoint
  for kernel in kernels.quantized_kernels(network):
    value = kernel.variable.numpy()
    np.testing.assert_allclose(grids.fake_quantize_kernel(value), value,
                               rtol=1e-6, atol=0)
  assert result.summary["float_kernels"] == []
  assert result.summary["activations"] == activations
  weight_target = "int8" if activations == "int8" else "dynamic"
  assert result.summary["weight_target"] == weight_target
  assert [e["consumer"] for e in result.summary["equalized"]][:1] == (
      ["block1_conv0"] if equalize else [])
  recipe = recipe_lib.read(os.path.join(out, recipe_lib.RECIPE_FILE))
  assert recipe == result.recipe
  assert (recipe.quantization, recipe.weight_target, recipe.logit_floor,
          recipe.checkpoint) == (weight_target, weight_target, -16.0,
                                 "ckpt-3")
  recipe_lib.check_bound(recipe, out, restored, hierarchy.fingerprint)


def test_bad_input_is_named(trained_run, tmp_path):
  params, model_dir = trained_run
  out = str(tmp_path / "qat")
  with pytest.raises(errors.QuantizationError, match="steps"):
    fine_tuning.fine_tune(params, model_dir, out, steps=0)
  with pytest.raises(errors.QuantizationError, match="learning_rate"):
    fine_tuning.fine_tune(params, model_dir, out, steps=1, learning_rate=0.0)
  missing = os.path.join(model_dir, "ckpt-999999")
  with pytest.raises(restore.RestoreError, match="ckpt-999999"):
    fine_tuning.fine_tune(params, missing, out, steps=1)
  with pytest.raises(restore.RestoreError, match="without a checkpoint"):
    fine_tuning.fine_tune(params, str(tmp_path), out, steps=1)
  with pytest.raises(errors.QuantizationError, match="activations='int4'"):
    fine_tuning.fine_tune(params, model_dir, out, steps=1,
                          activations="int4")
  with pytest.raises(errors.QuantizationError,
                     match="weight_target='int4'"):
    fine_tuning.fine_tune(params, model_dir, out, steps=1,
                          weight_target="int4")
  with pytest.raises(errors.QuantizationError, match="equalize_strength"):
    fine_tuning.fine_tune(params, model_dir, out, steps=1,
                          equalize_strength=2.0)
  with pytest.raises(errors.QuantizationError, match="logit_floor"):
    fine_tuning.fine_tune(params, model_dir, out, steps=1, logit_floor=3.0)
  with pytest.raises(errors.QuantizationError, match="float_layers"):
    fine_tuning.fine_tune(params, model_dir, out, steps=1,
                          quantization="int8", float_layers=["fc1"])
  with pytest.raises(errors.QuantizationError, match="not empty"):
    fine_tuning.fine_tune(params, model_dir, model_dir, steps=1)
  assert not os.path.exists(out)
