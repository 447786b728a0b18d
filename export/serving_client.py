"""TF Serving clients for the exported model: REST (`:predict`) and gRPC (`PredictionService`)."""

import base64
import json
import sys
from typing import Dict, List, Optional, Sequence
import urllib.error
import urllib.request

from absl import app
from absl import flags
import numpy as np

BYTES_INPUT = "image_bytes"
SERVING_DEFAULT = "serving_default"
DEFAULT_TIMEOUT_S = 10.0
# Largest gRPC message accepted from the server (a 100K-class logits batch).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ServingError(RuntimeError):
  """The server refused a request; carries its status and message."""

  def __init__(self, status: str, message: str):
    super().__init__(f"{status}: {message}")
    self.status = status
    self.message = message


def _model_path(model_name: str, version: Optional[int]) -> str:
  path = f"/v1/models/{model_name}"
  return path + (f"/versions/{int(version)}" if version is not None else "")


class RestClient:
  """TF Serving's REST predict API for the image-bytes signature.

  POST `http://host:port/v1/models/<name>[/versions/<v>]:predict` with
  `{"signature_name": ..., "instances": [{"b64": ...}, ...]}` (TF Serving
  decodes `{"b64": ...}` into a DT_STRING element); the row-format answer
  `{"predictions": [{output: value}, ...]}` is returned column-wise.

  Args:
    host: server host.
    port: REST port (TF Serving default 8501).
    model_name: the served model name.
    version: a specific version (default: the server's choice, the latest).
    timeout_s: per-request timeout.
  """

  def __init__(self, host: str, port: int, model_name: str,
               version: Optional[int] = None,
               timeout_s: float = DEFAULT_TIMEOUT_S):
    self.host = host
    self.port = int(port)
    self.model_name = model_name
    self.version = version
    self.timeout_s = timeout_s

  @property
  def url(self) -> str:
    return (f"http://{self.host}:{self.port}"
            f"{_model_path(self.model_name, self.version)}:predict")

  def predict(self, images: Sequence[bytes],
              signature_name: str = SERVING_DEFAULT) -> Dict[str, np.ndarray]:
    """Encoded images -> `{output name: array [B, ...]}`.

    Raises:
      ServingError: the server answered with an error (its message kept).
    """
    body = json.dumps({
        "signature_name": signature_name,
        "instances": [{"b64": base64.b64encode(bytes(b)).decode("ascii")}
                      for b in images],
    }).encode("utf-8")
    request = urllib.request.Request(
        self.url, data=body, headers={"Content-Type": "application/json"},
        method="POST")
    try:
      with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
        answer = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
      text = e.read().decode("utf-8", errors="replace")
      try:
        text = json.loads(text).get("error", text)
      except ValueError:
        pass
      raise ServingError(f"HTTP {e.code}", text) from e
    return rows_to_columns(answer["predictions"])


def rows_to_columns(predictions: List) -> Dict[str, np.ndarray]:
  """TF Serving's row format (one dict per instance) -> arrays per output."""
  if not predictions:
    return {}
  if not isinstance(predictions[0], dict):
    raise ValueError("expected named outputs per instance, got "
                     f"{type(predictions[0]).__name__}")
  return {key: np.asarray([row[key] for row in predictions])
          for key in predictions[0]}


class GrpcClient:
  """TF Serving's gRPC `PredictionService.Predict` for any signature.

  Args:
    target: `host:port` (TF Serving default port 8500).
    model_name: the served model name.
    version: a specific version (default: the latest).
    timeout_s: per-call deadline.
  """

  def __init__(self, target: str, model_name: str,
               version: Optional[int] = None,
               timeout_s: float = DEFAULT_TIMEOUT_S):
    import grpc  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top

    self.target = target
    self.model_name = model_name
    self.version = version
    self.timeout_s = timeout_s
    self._channel = grpc.insecure_channel(target, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(
        self._channel)

  def close(self) -> None:
    self._channel.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def predict(self, inputs: Dict[str, np.ndarray],
              signature_name: str = SERVING_DEFAULT) -> Dict[str, np.ndarray]:
    """`{input name: array}` -> `{output name: array}` via `Predict`.

    Raises:
      ServingError: the server's status code name and details.
    """
    import grpc  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top

    request = predict_pb2.PredictRequest()
    request.model_spec.name = self.model_name
    request.model_spec.signature_name = signature_name
    if self.version is not None:
      request.model_spec.version.value = int(self.version)
    for name, value in inputs.items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    try:
      response = self._stub.Predict(request, timeout=self.timeout_s)
    except grpc.RpcError as e:
      raise ServingError(e.code().name, e.details()) from e
    return {name: tf.make_ndarray(proto)
            for name, proto in response.outputs.items()}

  def predict_images(self, images: Sequence[bytes]) -> Dict[str, np.ndarray]:
    """Encoded images through `serving_default`."""
    return self.predict({BYTES_INPUT: np.asarray(list(images), dtype=object)})


def format_top_k(outputs: Dict[str, np.ndarray], paths: Sequence[str]) -> str:
  """One block per image: rank, class name, vertical, score."""
  lines = []
  for i, path in enumerate(paths):
    lines.append(path)
    for rank, (name, vertical, score) in enumerate(zip(
        outputs["top_k_names"][i], outputs["vertical_names"][i],
        outputs["top_k_scores"][i]), start=1):
      name = name.decode() if isinstance(name, bytes) else name
      vertical = (vertical.decode() if isinstance(vertical, bytes)
                  else vertical)
      lines.append(f"  {rank}. {name}  [{vertical}]  {float(score):.4f}")
  return "\n".join(lines)


_PROTOCOL = flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"],
                              "TF Serving API to use.")
_HOST = flags.DEFINE_string("host", "localhost", "Server host.")
_PORT = flags.DEFINE_integer("port", None,
                             "Server port (default 8501 REST, 8500 gRPC).")
_MODEL_NAME = flags.DEFINE_string("model_name", "kc_generalist_demo",
                                  "Served model name.")
_VERSION = flags.DEFINE_integer("version", None, "Model version (latest).")

_DEFAULT_PORTS = {"rest": 8501, "grpc": 8500}


def main(argv):
  paths = argv[1:]
  if not paths:
    print("error: pass one or more image files", file=sys.stderr)
    return 2
  images = []
  for path in paths:
    with open(path, "rb") as f:
      images.append(f.read())
  port = _PORT.value or _DEFAULT_PORTS[_PROTOCOL.value]
  try:
    if _PROTOCOL.value == "rest":
      outputs = RestClient(_HOST.value, port, _MODEL_NAME.value,
                           _VERSION.value).predict(images)
    else:
      with GrpcClient(f"{_HOST.value}:{port}", _MODEL_NAME.value,
                      _VERSION.value) as client:
        outputs = client.predict_images(images)
  except ServingError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(format_top_k(outputs, paths))
  return 0


if __name__ == "__main__":
  app.run(main)
