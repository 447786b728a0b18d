"""Tests for export.export_saved_model_lib: signatures, parity, assets, atomicity, bad input."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

import export_test_utils as test_utils
from export import export_saved_model_lib as lib
from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.training import restore


@pytest.fixture(scope="module")
def loaded(exported):
  return tf.saved_model.load(exported.version_dir)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


class TestLayout:

  def test_version_dir_and_signatures(self, exported, loaded):
    assert exported.version == 1
    assert exported.version_dir.endswith(os.path.join(test_utils.MODEL_NAME, "1"))
    assert set(loaded.signatures) == {
        "serving_default", "serve_image", "serve_image_uint8",
        "serve_examples"}
    default = loaded.signatures["serving_default"]
    assert set(default.structured_outputs) == {
        "top_k_classes", "top_k_names", "top_k_scores", "vertical_names"}
    assert list(default.structured_input_signature[1]) == ["image_bytes"]
    # Nothing but the export's own files: no leftover staging directory.
    base = os.path.dirname(exported.version_dir)
    assert sorted(os.listdir(base)) == ["1"]

  def test_assets_hold_the_names(self, exported, reference):
    assets = os.path.join(exported.version_dir, "assets")
    with open(os.path.join(assets, "labels.txt")) as f:
      assert f.read().splitlines() == list(reference.hierarchy.class_names)
    with open(os.path.join(assets, "verticals.txt")) as f:
      assert f.read().splitlines() == list(reference.hierarchy.vertical_names)

  def test_only_network_variables(self, exported, reference):
    prefix = os.path.join(exported.version_dir, "variables", "variables")
    saved = [s for n, s in tf.train.list_variables(prefix)
             if not n.startswith("_CHECKPOINTABLE")]
    assert len(saved) == len(reference.network.weights)
    assert sum(int(np.prod(s)) for s in saved) == sum(
        int(np.prod(w.shape)) for w in reference.network.weights)

  def test_warmup_records_replay(self, exported, loaded):
    path = os.path.join(exported.version_dir, "assets.extra",
                        "tf_serving_warmup_requests")
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    assert len(records) == lib.ServingConfig().num_warmup_requests
    log = prediction_log_pb2.PredictionLog.FromString(records[0])
    request = log.predict_log.request
    assert request.model_spec.name == test_utils.MODEL_NAME
    assert request.model_spec.signature_name == "serving_default"
    images = tf.make_ndarray(request.inputs["image_bytes"])
    assert images.shape == (2,)
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
    assert out["top_k_classes"].shape == (2, 5)

  def test_models_config(self, exported):
    with open(exported.models_config) as f:
      text = f.read()
    assert f'name: "{test_utils.MODEL_NAME}"' in text
    assert f'base_path: "/models/{test_utils.MODEL_NAME}"' in text
    assert 'model_platform: "tensorflow"' in text


class TestParity:

  def test_serve_image_matches_keras(self, loaded, reference):
    out = loaded.signatures["serve_image"](
        images=tf.constant(reference.images))
    logits = out["logits"].numpy()
    np.testing.assert_allclose(logits, reference.logits, atol=1e-5)
    np.testing.assert_array_equal(logits.argmax(1),
                                  reference.logits.argmax(1))
    np.testing.assert_allclose(out["probs"].numpy(),
                               _sigmoid(reference.logits), atol=1e-6)

  def test_uint8_is_float_over_255(self, loaded, reference):
    pixels = np.round(reference.images[:8] * 255).astype(np.uint8)
    out8 = loaded.signatures["serve_image_uint8"](images=tf.constant(pixels))
    outf = loaded.signatures["serve_image"](
        images=tf.constant(pixels.astype(np.float32) / 255.0))
    np.testing.assert_allclose(out8["logits"], outf["logits"], atol=1e-5)

  def test_bytes_and_examples_give_top_k_with_names(self, loaded, reference):
    images = reference.images[:6]
    encoded = [test_utils.encode_png(x) for x in images]
    # The PNG round trip quantises to uint8: the reference sees the same.
    decoded = np.stack([tf.io.decode_png(e, channels=3).numpy()
                        for e in encoded]).astype(np.float32) / 255.0
    probs = _sigmoid(np.asarray(reference.network(decoded, training=False)))
    expected_ids = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    out = loaded.signatures["serving_default"](
        image_bytes=tf.constant(encoded))
    ids = out["top_k_classes"].numpy()
    np.testing.assert_array_equal(ids[:, 0], expected_ids[:, 0])
    np.testing.assert_allclose(out["top_k_scores"].numpy(),
                               np.take_along_axis(probs, ids, 1), atol=1e-5)
    h = reference.hierarchy
    names = out["top_k_names"].numpy().astype(str)
    verticals = out["vertical_names"].numpy().astype(str)
    for i in range(ids.shape[0]):
      assert list(names[i]) == [h.class_names[c] for c in ids[i]]
      assert list(verticals[i]) == [
          h.vertical_names[h.class_to_vertical[c]] for c in ids[i]]
    examples = [tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[e]))})).SerializeToString()
                for e in encoded]
    out_ex = loaded.signatures["serve_examples"](examples=tf.constant(examples))
    np.testing.assert_array_equal(out_ex["top_k_classes"], ids)
    np.testing.assert_allclose(out_ex["top_k_scores"], out["top_k_scores"])

  def test_empty_batches(self, loaded, reference):
    n = reference.hierarchy.num_classes
    out = loaded.signatures["serve_image"](
        images=tf.zeros([0, *reference.image_shape]))
    assert out["logits"].shape == (0, n)
    out = loaded.signatures["serving_default"](
        image_bytes=tf.constant([], tf.string))
    assert out["top_k_names"].shape == (0, 5)


class TestBadInput:

  @pytest.mark.parametrize("bad, message", [
      (b"", "the encoded bytes are empty"),
      (b"GIF89a not supported", "neither JPEG nor PNG"),
      (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated PNG header"),
      (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"),
  ])
  def test_clear_invalid_argument(self, loaded, reference, bad, message):
    good = test_utils.encode_png(reference.images[0])
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      loaded.signatures["serving_default"](
          image_bytes=tf.constant([good, bad]))

  def test_huge_header_refused_before_decoding(self, loaded):
    # A PNG signature + IHDR claiming 100000 x 100000 pixels, no data.
    header = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" +
              (100000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00")
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="max_image_pixels.*batch index.*0"):
      loaded.signatures["serving_default"](image_bytes=tf.constant([header]))

  def test_wrong_dtype_and_shape(self, loaded):
    serve = loaded.signatures["serve_image"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="expected shape"):
      serve(images=tf.zeros([1, 5, 5, 3]))
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
      serve(images=tf.zeros([1, 16, 16, 3], tf.int32))

  def test_missing_example_key(self, loaded):
    empty = tf.train.Example().SerializeToString()
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty"):
      loaded.signatures["serve_examples"](examples=tf.constant([empty]))


class TestExportRun:

  def test_next_version_and_existing_refused(self, trained_run, exported):
    params, model_dir = trained_run
    export_dir = os.path.dirname(os.path.dirname(exported.version_dir))
    assert lib.next_version(os.path.dirname(exported.version_dir)) == 2
    with pytest.raises(lib.ExportError, match="already exists"):
      lib.export_saved_model(params, model_dir, export_dir,
                             model_name=test_utils.MODEL_NAME, version=1)

  def test_failed_export_leaves_no_version_dir(self, trained_run, tmp_path,
                                               monkeypatch):
    params, model_dir = trained_run

    def fail(*args, **kwargs):
      raise RuntimeError("injected failure while writing assets.extra")

    monkeypatch.setattr(lib, "_write_assets_extra", fail)
    with pytest.raises(RuntimeError, match="injected"):
      lib.export_saved_model(params, model_dir, str(tmp_path),
                             model_name="m", version=3)
    assert os.listdir(tmp_path / "m") == []

  def test_checkpoint_prefix_and_hierarchy_mismatch(self, trained_run,
                                                    tmp_path):
    params, model_dir = trained_run
    prefix = tf.train.latest_checkpoint(model_dir)
    network, _, restored, _ = restore.load_network(params, prefix)
    assert restored == prefix
    other = test_utils.smoke_params(
        test_utils.TRAIN_STEPS_OVERRIDE + ",task.data.embedded.num_classes=36")
    with pytest.raises(hierarchy_lib.HierarchyError,
                       match="40 classes.*36 classes"):
      lib.export_saved_model(other, model_dir, str(tmp_path))
    assert not os.path.exists(tmp_path / "kc")

  @pytest.mark.parametrize("kwargs, message", [
      (dict(model_name="a/b"), "model_name"),
      (dict(version=0), "version"),
      (dict(config=lib.ServingConfig(top_k=0)), "top_k"),
  ])
  def test_bad_arguments(self, trained_run, tmp_path, kwargs, message):
    params, model_dir = trained_run
    with pytest.raises(ValueError, match=message):
      lib.export_saved_model(params, model_dir, str(tmp_path), **kwargs)
