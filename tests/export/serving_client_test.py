"""Tests for export.serving_client against in-process TF Serving TEST DOUBLES."""

import numpy as np
import pytest
import tensorflow as tf

import export_test_utils as test_utils
from export import serving_client
import serving_doubles

CLIENT_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def loaded(exported):
  return tf.saved_model.load(exported.version_dir)


@pytest.fixture(scope="module")
def encoded(reference):
  return [test_utils.encode_png(x) for x in reference.images[:3]]


@pytest.fixture
def grpc_double(loaded):
  server = serving_doubles.GrpcServerTestDouble(loaded, test_utils.MODEL_NAME)
  try:
    yield server
  finally:
    server.stop()


@pytest.fixture
def rest_double(loaded):
  server = serving_doubles.RestServerTestDouble(loaded, test_utils.MODEL_NAME)
  try:
    yield server
  finally:
    server.stop()


def _direct(loaded, encoded):
  out = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
  return {k: v.numpy() for k, v in out.items()}


def test_grpc_predict_matches_saved_model(grpc_double, loaded, encoded):
  expected = _direct(loaded, encoded)
  with serving_client.GrpcClient(grpc_double.target, test_utils.MODEL_NAME,
                                 version=1,
                                 timeout_s=CLIENT_TIMEOUT_S) as client:
    got = client.predict_images(encoded)
    np.testing.assert_array_equal(got["top_k_classes"],
                                  expected["top_k_classes"])
    np.testing.assert_array_equal(got["top_k_names"], expected["top_k_names"])
    np.testing.assert_array_equal(got["vertical_names"],
                                  expected["vertical_names"])
    np.testing.assert_allclose(got["top_k_scores"], expected["top_k_scores"])
    images = np.zeros((2, 16, 16, 3), np.float32)
    logits = client.predict({"images": images}, signature_name="serve_image")
    np.testing.assert_allclose(
        logits["logits"],
        loaded.signatures["serve_image"](images=tf.constant(images))[
            "logits"].numpy())
    text = serving_client.format_top_k(got, ["a.png", "b.png", "c.png"])
    assert text.splitlines()[1].startswith(
        "  1. " + expected["top_k_names"][0, 0].decode())


def test_grpc_errors_are_invalid_argument(grpc_double, encoded):
  with serving_client.GrpcClient(grpc_double.target, test_utils.MODEL_NAME,
                                 timeout_s=CLIENT_TIMEOUT_S) as client:
    with pytest.raises(serving_client.ServingError,
                       match="(?s)INVALID_ARGUMENT.*neither JPEG nor PNG") as e:
      client.predict_images([encoded[0], b"random bytes"])
    assert e.value.status == "INVALID_ARGUMENT"
    # The server survives a bad request.
    assert client.predict_images(encoded[:1])["top_k_classes"].shape == (1, 5)
  with serving_client.GrpcClient(grpc_double.target, "other",
                                 timeout_s=CLIENT_TIMEOUT_S) as client:
    with pytest.raises(serving_client.ServingError, match="NOT_FOUND"):
      client.predict_images(encoded[:1])


def test_rest_predict_matches_saved_model(rest_double, loaded, encoded):
  expected = _direct(loaded, encoded)
  client = serving_client.RestClient("127.0.0.1", rest_double.port,
                                     test_utils.MODEL_NAME, version=1,
                                     timeout_s=CLIENT_TIMEOUT_S)
  got = client.predict(encoded)
  assert rest_double.requests == [f"/v1/models/{test_utils.MODEL_NAME}"
                                  "/versions/1:predict"]
  np.testing.assert_array_equal(got["top_k_classes"],
                                expected["top_k_classes"])
  np.testing.assert_array_equal(got["top_k_names"],
                                expected["top_k_names"].astype(str))
  np.testing.assert_allclose(got["top_k_scores"], expected["top_k_scores"],
                             rtol=1e-6)


def test_rest_errors(rest_double, encoded):
  client = serving_client.RestClient("127.0.0.1", rest_double.port,
                                     test_utils.MODEL_NAME,
                                     timeout_s=CLIENT_TIMEOUT_S)
  with pytest.raises(serving_client.ServingError,
                     match="(?s)HTTP 400.*encoded bytes are empty"):
    client.predict([encoded[0], b""])
  assert client.predict(encoded[:1])["top_k_classes"].shape == (1, 5)
