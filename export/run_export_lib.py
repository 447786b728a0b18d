"""A pipeline's last steps: SavedModel and TFLite named after the run, one on-device prediction."""

import json
import os
import re
from typing import Dict, Optional

import numpy as np
from PIL import Image
import tensorflow as tf

from export import export_saved_model_lib
from export import export_tflite_lib
from export import parity_lib
from export import tflite_demo_lib
from kc_keras.utils import files

EXPORT_JSON = "export.json"
SAMPLES_DIR = "samples"
# As in the demo: fp16 needs no calibration images, while int8 needs the
# quantization-aware fine-tuning step first.
QUANTIZATION = "fp16"
_UINT8_MAX = 255.0


def run_name(workdir: str) -> str:
  """The model name of a run: its directory's name, as a plain file name."""
  base = os.path.basename(os.path.normpath(os.path.abspath(workdir)))
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("._") or "kc"


def write_pngs(images: np.ndarray, output_dir: str) -> list:
  """float [0, 1] `[E, H, W, C]` -> `output_dir/eval_<i>.png`; returns paths."""
  os.makedirs(output_dir, exist_ok=True)
  paths = []
  for i, image in enumerate(images):
    pixels = np.round(np.clip(image, 0.0, 1.0) * _UINT8_MAX).astype(np.uint8)
    path = os.path.join(output_dir, f"eval_{i}.png")
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(
        path)
    paths.append(path)
  return paths


def _exported_checkpoint(version_dir: str) -> Optional[str]:
  path = os.path.join(version_dir, export_saved_model_lib.ASSETS_EXTRA,
                      export_saved_model_lib.EXPORT_INFO_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f).get("checkpoint")


def export_and_predict(params, checkpoint_dir: str, workdir: str,
                       name: Optional[str] = None) -> Dict:
  """Exports the trained network of `checkpoint_dir` and classifies one eval image on device.

  Writes `workdir/serving/<name>/<version>` (TF Serving), `workdir/<name>.tflite`
  (with its label files) and `workdir/samples/eval_0.png`, then runs the
  TFLite file with the on-device demo. Resumes: when the latest version
  already holds the latest checkpoint, nothing is exported again.

  Args:
    params: the locked config the checkpoint was trained with.
    checkpoint_dir: the trained run's model_dir.
    workdir: the pipeline's root.
    name: the model name (default `run_name(workdir)`).

  Returns:
    What `workdir/export.json` records: saved_model, tflite, image and the
    prediction's top classes with their scores.
  """
  name = name or run_name(workdir)
  serving = os.path.join(workdir, "serving")
  latest = tf.train.latest_checkpoint(checkpoint_dir)
  base = os.path.join(serving, name)
  version = export_saved_model_lib.next_version(base)
  version_dir = os.path.join(base, str(version - 1))
  tflite = os.path.join(workdir, f"{name}.tflite")
  if version == 1 or _exported_checkpoint(version_dir) != latest:
    result = export_saved_model_lib.export_saved_model(
        params, checkpoint_dir, serving, model_name=name, version=version)
    version_dir = result.version_dir
    if os.path.exists(tflite):
      os.remove(tflite)
  if not os.path.exists(tflite):
    export_tflite_lib.export_tflite(version_dir, tflite, QUANTIZATION)
  image = write_pngs(parity_lib.eval_images(params, 1, 1),
                     os.path.join(workdir, SAMPLES_DIR))[0]
  predictions, errors = tflite_demo_lib.run(tflite, [image], top_k=5)
  if errors:
    raise tflite_demo_lib.DemoError("; ".join(errors))
  prediction = predictions[0]
  record = dict(saved_model=version_dir, tflite=tflite, image=image,
                top_classes=list(prediction.names),
                top_verticals=list(prediction.verticals),
                top_scores=[float(s) for s in prediction.scores],
                text=tflite_demo_lib.format_prediction(prediction))
  files.atomic_write_json(os.path.join(workdir, EXPORT_JSON), record)
  return record
