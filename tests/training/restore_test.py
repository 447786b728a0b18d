"""Tests for kc_keras.training.restore: one way to read a trained network back."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.training import restore

HIERARCHY = hierarchy_lib.Hierarchy(("a", "b", "c"), ("v0", "v1"), (0, 1, 1))
OTHER = hierarchy_lib.Hierarchy(("a", "b", "d"), ("v0", "v1"), (0, 1, 1))


def _dense(seed):
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
      2, kernel_initializer=keras.initializers.RandomNormal(seed=seed))])
  return model


def _save(model_dir, model, steps):
  """A training-style run: `Checkpoint(model=...)` saved at each step."""
  manager = tf.train.CheckpointManager(
      tf.train.Checkpoint(model=model), model_dir, max_to_keep=5,
      checkpoint_name="ckpt")
  for step in steps:
    model.layers[0].kernel.assign(np.full((3, 2), float(step), np.float32))
    manager.save(checkpoint_number=step)


class TestResolveCheckpoint:

  def test_directory_gives_its_latest_and_prefix_is_kept(self, tmp_path):
    _save(str(tmp_path), _dense(0), [3, 7])
    assert restore.resolve_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-7")
    prefix = str(tmp_path / "ckpt-3")
    assert restore.resolve_checkpoint(prefix) == prefix
    assert restore.checkpoint_step(prefix) == 3
    assert restore.run_dir_of(prefix) == str(tmp_path)
    assert restore.run_dir_of(str(tmp_path)) == str(tmp_path)

  def test_missing_checkpoints_are_named(self, tmp_path):
    with pytest.raises(restore.RestoreError,
                       match=r"is a directory without a checkpoint$"):
      restore.resolve_checkpoint(str(tmp_path))
    with pytest.raises(restore.RestoreError,
                       match=r"ckpt-9.index not found"):
      restore.resolve_checkpoint(str(tmp_path / "ckpt-9"))
    with pytest.raises(ValueError, match="does not end with -<step>"):
      restore.checkpoint_step(str(tmp_path / "final"))


class TestCheckRecordedHierarchy:

  def test_records_then_accepts_the_same(self, tmp_path):
    assert restore.check_recorded_hierarchy(
        str(tmp_path), HIERARCHY, record=True, required=False) == HIERARCHY
    path = tmp_path / restore.HIERARCHY_FILE
    assert path.exists()
    recorded = restore.check_recorded_hierarchy(str(tmp_path), HIERARCHY)
    assert recorded.fingerprint == HIERARCHY.fingerprint

  def test_another_hierarchy_names_both(self, tmp_path):
    HIERARCHY.save(str(tmp_path / restore.HIERARCHY_FILE))
    with pytest.raises(
        hierarchy_lib.HierarchyError,
        match=(rf"^{tmp_path} was trained with another hierarchy \(3 classes, "
               rf"2 verticals, fingerprint {HIERARCHY.fingerprint[:12]}\) "
               rf"than the data's \(3 classes, 2 verticals, fingerprint "
               rf"{OTHER.fingerprint[:12]}\)")):
      restore.check_recorded_hierarchy(str(tmp_path), OTHER, record=True)
    # Nothing was overwritten by the refused call.
    assert hierarchy_lib.Hierarchy.load(
        str(tmp_path / restore.HIERARCHY_FILE)) == HIERARCHY

  def test_missing_file(self, tmp_path):
    with pytest.raises(hierarchy_lib.HierarchyError,
                       match="hierarchy.json not found"):
      restore.check_recorded_hierarchy(str(tmp_path), HIERARCHY)
    # A run being started (or a worker before the chief) may have none yet.
    assert restore.check_recorded_hierarchy(
        str(tmp_path), HIERARCHY, required=False) is None
    assert not os.listdir(tmp_path)


class TestRestoreWeights:

  def test_prefix_and_directory(self, tmp_path):
    _save(str(tmp_path), _dense(0), [1, 2])
    fresh = _dense(1)
    assert restore.restore_model_weights(
        fresh, str(tmp_path)) == str(tmp_path / "ckpt-2")
    np.testing.assert_array_equal(fresh.layers[0].kernel.numpy(), 2.0)
    restore.restore_model_weights(fresh, str(tmp_path / "ckpt-1"))
    np.testing.assert_array_equal(fresh.layers[0].kernel.numpy(), 1.0)

  def test_a_cut_short_newest_falls_back(self, tmp_path):
    _save(str(tmp_path), _dense(0), [1, 2])
    os.remove(tmp_path / "ckpt-2.index")
    fresh = _dense(1)
    assert restore.restore_model_weights(
        fresh, str(tmp_path)) == str(tmp_path / "ckpt-1")
    np.testing.assert_array_equal(fresh.layers[0].kernel.numpy(), 1.0)

  def test_all_unusable_is_an_error_and_empty_is_not_found(self, tmp_path):
    _save(str(tmp_path / "run"), _dense(0), [1])
    os.remove(tmp_path / "run" / "ckpt-1.index")
    with pytest.raises(restore.CheckpointError, match="No usable checkpoint"):
      restore.restore_model_weights(_dense(1), str(tmp_path / "run"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="No checkpoint found"):
      restore.restore_model_weights(_dense(1), str(tmp_path / "empty"))
