"""TEST DOUBLES of TF Serving (gRPC PredictionService and REST :predict) running a SavedModel.

Not TF Serving: just enough of its two APIs, on 127.0.0.1 with a port chosen
at run time, to test `export.serving_client` against the exported model.
Errors map as TF Serving maps them: InvalidArgumentError -> INVALID_ARGUMENT
(gRPC) / HTTP 400 with {"error": message} (REST).
"""

import base64
from concurrent import futures
import http.server
import json
import re
import threading

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

MAX_WORKERS = 2
SHUTDOWN_GRACE_S = 1.0


def _run_signature(loaded, signature_name, inputs):
  if signature_name not in loaded.signatures:
    raise KeyError(f"Serving signature name: \"{signature_name}\" not found")
  function = loaded.signatures[signature_name]
  outputs = function(**{k: tf.constant(v) for k, v in inputs.items()})
  return {k: v.numpy() for k, v in outputs.items()}


class PredictionServiceTestDouble(
    prediction_service_pb2_grpc.PredictionServiceServicer):
  """A TEST DOUBLE of TF Serving's gRPC PredictionService.Predict.

  Args:
    loaded: a `tf.saved_model.load`ed export.
    model_name: the only name it answers to.
  """

  def __init__(self, loaded, model_name: str):
    self.loaded = loaded
    self.model_name = model_name

  def Predict(self, request, context):  # noqa: N802 (gRPC method name)
    if request.model_spec.name != self.model_name:
      context.abort(grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: {request.model_spec.name}")
    signature = request.model_spec.signature_name or "serving_default"
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    try:
      outputs = _run_signature(self.loaded, signature, inputs)
    except KeyError as e:
      context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
    except (tf.errors.InvalidArgumentError, TypeError, ValueError) as e:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    getattr(e, "message", str(e)))
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for name, value in outputs.items():
      response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    return response


class GrpcServerTestDouble:
  """Starts the gRPC test double on 127.0.0.1:<free port>; `stop()` always."""

  def __init__(self, loaded, model_name: str):
    self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=MAX_WORKERS))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServiceTestDouble(loaded, model_name), self.server)
    self.port = self.server.add_insecure_port("127.0.0.1:0")
    self.server.start()

  @property
  def target(self) -> str:
    return f"127.0.0.1:{self.port}"

  def stop(self):
    self.server.stop(SHUTDOWN_GRACE_S).wait()


_PREDICT_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")


def _to_json(value):
  if value.dtype == object:
    return [x.decode("utf-8") if isinstance(x, bytes) else _to_json(np.asarray(x))
            for x in value] if value.ndim else value.item().decode("utf-8")
  return value.tolist()


class RestServerTestDouble:
  """A TEST DOUBLE of TF Serving's REST `:predict` (row format, b64 strings)."""

  def __init__(self, loaded, model_name: str):
    double = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def log_message(self, *args):  # keep test output quiet
        del args

      def _reply(self, code, obj):
        body = json.dumps(obj).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

      def do_POST(self):  # noqa: N802 (http.server method name)
        match = _PREDICT_PATH.match(self.path)
        if not match or match.group(1) != model_name:
          self._reply(404, {"error": f"Servable not found: {self.path}"})
          return
        double.requests.append(self.path)
        request = json.loads(self.rfile.read(
            int(self.headers["Content-Length"])))
        signature = request.get("signature_name", "serving_default")
        instances = [base64.b64decode(x["b64"]) for x in request["instances"]]
        try:
          outputs = _run_signature(
              loaded, signature,
              {"image_bytes": np.asarray(instances, dtype=object)})
        except (tf.errors.InvalidArgumentError, KeyError) as e:
          self._reply(400, {"error": getattr(e, "message", str(e))})
          return
        rows = [{k: _to_json(v[i]) for k, v in outputs.items()}
                for i in range(len(instances))]
        self._reply(200, {"predictions": rows})

    self.requests = []
    self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.port = self.server.server_address[1]
    self.thread = threading.Thread(target=self.server.serve_forever,
                                   daemon=True)
    self.thread.start()

  def stop(self):
    self.server.shutdown()
    self.server.server_close()
    self.thread.join(timeout=SHUTDOWN_GRACE_S)
