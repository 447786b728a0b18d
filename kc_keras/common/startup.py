"""The environment a kc_keras binary sets before TensorFlow is imported."""

import glob
import os

# Where one of these exists, a CUDA device is present and TensorFlow's C++
# errors about it are worth seeing.
NVIDIA_DEVICE_NODES = "/dev/nvidia[0-9]*"


def quiet_tensorflow(environ=None, device_nodes=NVIDIA_DEVICE_NODES) -> dict:
  """Selects Keras's TensorFlow backend and filters TensorFlow's C++ logs.

  A CPU-only machine with CUDA libraries installed (TensorFlow's default
  wheel brings them) gets a `failed call to cuInit` error line from
  TensorFlow's C++ core at every start. Binaries therefore set, unless the
  user already has:
    KERAS_BACKEND = tensorflow
    TF_CPP_MIN_LOG_LEVEL = 2 (info and warnings off) where an NVIDIA device
      node exists, else 3 (C++ error lines off too: on a machine without a
      GPU they are start-up noise, and every failure of ours is a Python
      exception that still reaches the user).

  Must run before the first `import tensorflow` or `import keras`.

  Args:
    environ: the environment to update (default `os.environ`).
    device_nodes: glob pattern of the NVIDIA device nodes.

  Returns:
    The values it set (an empty dict when the user had set both).
  """
  environ = os.environ if environ is None else environ
  wanted = {"KERAS_BACKEND": "tensorflow",
            "TF_CPP_MIN_LOG_LEVEL": "2" if glob.glob(device_nodes) else "3"}
  set_now = {key: value for key, value in wanted.items()
             if key not in environ}
  environ.update(set_now)
  return set_now
