"""Fixtures shared by the export and quantization tests: one tiny trained run, its export, TFLite files."""

import os
import types

import numpy as np
import pytest

from export_test_utils import INT8_CALIBRATION_EXAMPLES
from export_test_utils import MODEL_NAME
from export_test_utils import smoke_params


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
  """`(params, model_dir)` of the smoke generalist trained once per session."""
  from kc_keras.training import modes  # pylint: disable=g-import-not-at-top
  params = smoke_params()
  model_dir = str(tmp_path_factory.mktemp("run"))
  modes.train(params, model_dir, verbose=False)
  return params, model_dir


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory):
  """The `ExportResult` of exporting `trained_run` (version 1)."""
  from export import export_saved_model_lib  # pylint: disable=g-import-not-at-top
  params, model_dir = trained_run
  export_dir = str(tmp_path_factory.mktemp("export"))
  return export_saved_model_lib.export_saved_model(
      params, model_dir, export_dir, model_name=MODEL_NAME)


@pytest.fixture(scope="session")
def reference(trained_run):
  """The Keras network, the eval images float32 [E, H, W, C] and its logits."""
  from kc_keras.dataloaders import factory  # pylint: disable=g-import-not-at-top
  from kc_keras.dataloaders import pipeline  # pylint: disable=g-import-not-at-top
  from kc_keras.training import restore  # pylint: disable=g-import-not-at-top
  params, model_dir = trained_run
  network, hierarchy, _, image_shape = restore.load_network(
      params, model_dir)
  source = factory.build_source(params.task.data)
  dataset = pipeline.build_dataset(source, "eval", params.task.data,
                                   training=False, global_batch_size=64)
  images = np.concatenate([b.numpy() for b, _ in dataset])
  logits = np.asarray(network(images, training=False))
  return types.SimpleNamespace(network=network, hierarchy=hierarchy,
                               image_shape=image_shape, images=images,
                               logits=logits)


@pytest.fixture(scope="session")
def tflite_model(exported, tmp_path_factory):
  """`tflite_model(quantization)` -> path, each variant converted once."""
  from export import export_tflite_lib  # pylint: disable=g-import-not-at-top
  out_dir = tmp_path_factory.mktemp("tflite")
  cache = {}

  def get(quantization):
    if quantization not in cache:
      path = os.path.join(str(out_dir), f"model_{quantization}.tflite")
      export_tflite_lib.export_tflite(
          exported.version_dir, path, quantization,
          representative_examples=INT8_CALIBRATION_EXAMPLES)
      cache[quantization] = path
    return cache[quantization]

  return get


def write_run_dir(network, params, hierarchy, output_dir: str, step: int
                  ) -> str:
  """Writes `network` as a training run directory; returns its checkpoint prefix.

  The checkpoint has training's layout, `model/student/...`, beside the
  run's hierarchy.json and params.yaml: what `restore.load_network` and
  `export_saved_model` read.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from kc_keras.training import modes  # pylint: disable=g-import-not-at-top
  from kc_keras.training import restore  # pylint: disable=g-import-not-at-top
  os.makedirs(output_dir)
  holder = tf.train.Checkpoint(model=tf.train.Checkpoint(student=network))
  manager = tf.train.CheckpointManager(holder, output_dir, max_to_keep=1)
  prefix = manager.save(checkpoint_number=step)
  hierarchy.save(os.path.join(output_dir, restore.HIERARCHY_FILE))
  modes.save_params(params, output_dir)
  return prefix


@pytest.fixture(scope="session")
def snapped_run(trained_run, tmp_path_factory):
  """`(network, checkpoint, export)`: the smoke run with its kernels snapped to the int8 grid (no training), exported."""
  from export import export_saved_model_lib  # pylint: disable=g-import-not-at-top
  from kc_keras.quantization import kernels  # pylint: disable=g-import-not-at-top
  from kc_keras.training import restore  # pylint: disable=g-import-not-at-top
  params, model_dir = trained_run
  network, hierarchy, _, _ = restore.load_network(params, model_dir)
  kernels.snap_to_int8_grid(network)
  out = str(tmp_path_factory.mktemp("qat") / "snapped")
  checkpoint = write_run_dir(network, params, hierarchy, out, 1)
  export = export_saved_model_lib.export_saved_model(
      params, out, str(tmp_path_factory.mktemp("qat_export")),
      model_name=MODEL_NAME)
  return network, checkpoint, export
