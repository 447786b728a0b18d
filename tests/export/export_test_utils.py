"""Helpers shared by the export tests (constants, the smoke config, PNG encoding)."""

import pathlib
import types

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE_CONFIG = str(REPO_ROOT / "official_configs" / "generalist_demo_smoke.yaml")
# A few more steps than the smoke file's 40: an almost untrained model has
# near-tied top logits, which makes int8 top-1 agreement a coin toss.
TRAIN_STEPS_OVERRIDE = "trainer.train_steps=120"
MODEL_NAME = "kc_test"
INT8_CALIBRATION_EXAMPLES = 400


def smoke_params(params_override=TRAIN_STEPS_OVERRIDE):
  from kc_keras.training import experiment_runner  # pylint: disable=g-import-not-at-top
  return experiment_runner.parse_configuration(types.SimpleNamespace(
      experiment="kc_generalist_demo", config_file=[SMOKE_CONFIG],
      params_override=params_override, tpu=None))


def encode_png(image: np.ndarray) -> bytes:
  """float [0, 1] [H, W, C] -> PNG bytes (uint8, rounded)."""
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
  if pixels.shape[-1] == 1:
    pixels = pixels[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()
