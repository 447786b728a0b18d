"""Eval metrics record what they measured; a rerun keeps them only when it is unchanged."""

import json
import os
from unittest import mock

import pytest

from kc_keras.training import eval_binding
from kc_keras.training import evaluate as evaluate_lib
from kc_keras.training import experiment_runner
from kc_keras.training import modes

from smoke_configs import smoke_params as _params

BINDING = dict(eval_data="e", hierarchy="h", config="c",
               weights={"name": "ckpt-10", "index_sha256": "x"})


def _write(path, obj):
  with open(path, "w") as f:
    f.write(obj if isinstance(obj, str) else json.dumps(obj))


def test_config_digest_ignores_the_schedule_and_unread_keys_only():
  base = eval_binding.config_digest(_params())
  schedule = _params("trainer.train_steps=70,trainer.checkpoint_interval=70")
  assert eval_binding.config_digest(schedule) == base
  other = _params("task.eval_batch_size=5")
  assert eval_binding.config_digest(other) != base
  assert eval_binding.config_digest(
      other, ignore=("task.eval_batch_size",)) == eval_binding.config_digest(
          _params(), ignore=("task.eval_batch_size",))
  assert eval_binding.config_digest(other, ignore=("task.",)) == (
      eval_binding.config_digest(_params(), ignore=("task.",)))


def test_kept_only_when_every_field_matches(tmp_path):
  path = str(tmp_path / "m.json")
  assert eval_binding.kept_metrics(path, BINDING) is None  # missing
  _write(path, {"top1": 0.5})  # written before bindings existed
  assert eval_binding.kept_metrics(path, BINDING) is None
  _write(path, {"top1": 0.5, "binding": BINDING})
  assert eval_binding.kept_metrics(path, BINDING)["top1"] == 0.5
  for field, value in (("weights", {"name": "ckpt-20", "index_sha256": "y"}),
                       ("eval_data", "e2"), ("config", "c2"),
                       ("hierarchy", "h2")):
    # Patched rather than read through caplog: whether absl's records reach
    # caplog depends on what earlier tests did to absl's handler.
    with mock.patch.object(eval_binding.logging, "info") as info:
      assert eval_binding.kept_metrics(path, dict(BINDING, **{field: value})) is None
    said = " ".join(call.args[0] % call.args[1:] for call in info.call_args_list)
    assert f"another {field}" in said
  _write(path, '{"top1": 0.5, "bind')  # cut short
  assert eval_binding.kept_metrics(path, BINDING) is None
  _write(path, "[1, 2]")
  assert eval_binding.kept_metrics(path, BINDING) is None


def test_differing_fields_of_a_record_without_binding_are_all():
  assert eval_binding.differing_fields(None, BINDING) == sorted(BINDING)
  assert eval_binding.differing_fields(
      dict(BINDING, config="z"), BINDING) == ["config"]


def test_checkpoint_identity_needs_the_index(tmp_path):
  with pytest.raises(FileNotFoundError, match="ckpt-3.index is missing"):
    eval_binding.checkpoint_identity(str(tmp_path / "ckpt-3"))
  _write(str(tmp_path / "ckpt-3.index"), "abc")
  identity = eval_binding.checkpoint_identity(str(tmp_path / "ckpt-3"))
  assert identity["name"] == "ckpt-3"
  assert identity["index_sha256"] == (
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  assert eval_binding.newest_checkpoint(str(tmp_path)) is None  # no state file


def _no_evaluation(*args, **kwargs):
  raise AssertionError("evaluated again")


def test_train_and_eval_rerun_keeps_bound_metrics_and_measures_new_weights(
    tmp_path):
  model_dir = str(tmp_path / "run")
  params = _params("trainer.train_steps=10,trainer.checkpoint_interval=10")
  _, first = experiment_runner.run(params, "train_and_eval", model_dir)
  assert first["binding"]["weights"]["name"] == "ckpt-10"
  assert first["binding"] == eval_binding.binding(
      params, modes.Session(params, model_dir).source,
      eval_binding.newest_checkpoint(model_dir),
      modes.keys_a_network_never_reads(params))

  # The next sitting passes through the finished stage: nothing is evaluated.
  with mock.patch.object(evaluate_lib, "evaluate_scores", _no_evaluation):
    _, kept = experiment_runner.run(params, "train_and_eval", model_dir)
  assert kept == json.loads(json.dumps(first))

  # An explicit --mode=eval always measures.
  with mock.patch.object(evaluate_lib, "evaluate_scores", _no_evaluation):
    with pytest.raises(AssertionError, match="evaluated again"):
      experiment_runner.run(params, "eval", model_dir)

  # Another eval setting, then more training: evaluated again each time.
  for override in ("task.eval_batch_size=4,trainer.train_steps=10",
                   "trainer.train_steps=20"):
    again = _params(override + ",trainer.checkpoint_interval=10")
    _, metrics = experiment_runner.run(again, "train_and_eval", model_dir)
    assert metrics["binding"] != first["binding"]
  assert metrics["step"] == 20
  assert metrics["binding"]["weights"]["name"] == "ckpt-20"
  with open(os.path.join(model_dir, modes.EVAL_METRICS_FILE)) as f:
    assert json.load(f)["binding"] == metrics["binding"]


def test_a_replaced_checkpoint_is_measured_again(tmp_path):
  model_dir = str(tmp_path / "run")
  params = _params("trainer.train_steps=10,trainer.checkpoint_interval=10")
  _, first = experiment_runner.run(params, "train_and_eval", model_dir)
  # Same name, other weights: the index (every tensor's checksum) differs.
  index = os.path.join(model_dir, "ckpt-10.index")
  other_dir = str(tmp_path / "other")
  experiment_runner.run(_params(
      "trainer.train_steps=10,trainer.checkpoint_interval=10,runtime.seed=3"),
      "train", other_dir)
  for suffix in (".index", ".data-00000-of-00001"):
    with open(os.path.join(other_dir, "ckpt-10" + suffix), "rb") as f:
      data = f.read()
    with open(os.path.join(model_dir, "ckpt-10" + suffix), "wb") as f:
      f.write(data)
  assert eval_binding.checkpoint_identity(index[:-len(".index")]) != (
      first["binding"]["weights"])
  _, again = experiment_runner.run(params, "train_and_eval", model_dir)
  assert again["binding"]["weights"]["index_sha256"] != (
      first["binding"]["weights"]["index_sha256"])
