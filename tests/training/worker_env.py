"""The start of a test file that also runs as its own worker process.

Such a process starts without tests/conftest.py, so it sets here what conftest sets
for pytest, before TensorFlow loads; and it knows the repository's paths.
"""

import os

from kc_keras.common import startup

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
GENERALIST_SMOKE_YAML = os.path.join(REPO_ROOT, "official_configs",
                                     "generalist_demo_smoke.yaml")


def prepare_process() -> None:
  """Quiet TensorFlow, and conftest's oneDNN setting (its convolutions mis-shape
  empty batches, which a distributed batch split can produce)."""
  startup.quiet_tensorflow()
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
