"""Helpers shared by the export tests (constants, the smoke config, PNG encoding)."""

import numpy as np

import smoke_configs

REPO_ROOT = smoke_configs.REPO_ROOT
# A few more steps than the smoke file's 40: an almost untrained model has
# near-tied top logits, which makes int8 top-1 agreement a coin toss.
TRAIN_STEPS_OVERRIDE = "trainer.train_steps=120"
MODEL_NAME = "kc_test"
INT8_CALIBRATION_EXAMPLES = 400


def smoke_params(params_override=TRAIN_STEPS_OVERRIDE):
  return smoke_configs.smoke_params(params_override)


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
