"""Shared pytest fixtures: quiet TensorFlow, the Omniglot path, the tiny trained run the export and quantization tests share."""

import os
import pathlib

from kc_keras.common import startup  # noqa: E402

startup.quiet_tensorflow()
# oneDNN convolutions mis-shape empty batches.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import flags  # noqa: E402
import pytest  # noqa: E402

# Session fixtures, defined once here so that every test directory shares
# one trained run (a definition per directory would train it again).
from export_fixtures import exported  # noqa: E402,F401  pylint: disable=unused-import
from export_fixtures import reference  # noqa: E402,F401  pylint: disable=unused-import
from export_fixtures import snapped_run  # noqa: E402,F401  pylint: disable=unused-import
from export_fixtures import tflite_model  # noqa: E402,F401  pylint: disable=unused-import
from export_fixtures import trained_run  # noqa: E402,F401  pylint: disable=unused-import

# absltest-style helpers (create_tempdir, get_temp_dir) read absl flags, which
# pytest never parses.
flags.FLAGS.mark_as_parsed()

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def omniglot_dir() -> pathlib.Path:
  """Where the shared Omniglot copy lives (env KC_OMNIGLOT_DIR overrides)."""
  return pathlib.Path(
      os.environ.get(
          "KC_OMNIGLOT_DIR", REPO_ROOT.parent / "shared" / "data" / "omniglot"
      )
  )


@pytest.fixture
def omniglot_path() -> pathlib.Path:
  path = omniglot_dir()
  if not (path / "images_background.npz").exists():
    pytest.skip(
        f"Omniglot not found at {path}: it lives in ../shared/data/omniglot "
        "beside the repository (set KC_OMNIGLOT_DIR to point elsewhere)."
    )
  return path


def pytest_collection_modifyitems(config, items):
  """Drops tf.test.TestCase's `test_session` helper, which is not a test."""
  del config
  items[:] = [item for item in items if item.name != "test_session"]
