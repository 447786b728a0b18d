"""Parity of an export with the Keras network: top-1 agreement, logit error, size, latency."""

import dataclasses
import os
import time
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from export import export_saved_model_lib
from export import tflite_demo_lib
from kc_keras.dataloaders import factory
from kc_keras.dataloaders import pipeline


@dataclasses.dataclass(frozen=True)
class ParityRow:
  """One variant against the Keras network on the same images."""

  variant: str
  top1_agreement: float
  top1_in_top2: float
  max_logit_diff: float
  file_bytes: int
  latency_ms: float


def eval_images(params, max_examples: int, batch_size: int) -> np.ndarray:
  """The first `max_examples` eval-split images, float32 `[E, H, W, C]`."""
  source = factory.build_source(params.task.data)
  dataset = pipeline.build_dataset(source, "eval", params.task.data,
                                   training=False,
                                   global_batch_size=batch_size)
  batches, count = [], 0
  for images, _ in dataset:
    batches.append(images.numpy())
    count += len(batches[-1])
    if count >= max_examples:
      break
  return np.concatenate(batches)[:max_examples]


def _dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def compare(variant: str, logits: np.ndarray, reference: np.ndarray,
            file_bytes: int, latency_ms: float) -> ParityRow:
  """One row: `logits` `[E, N]` of a variant against the Keras `reference`.

  top1_agreement = mean_i [argmax logits_i == argmax reference_i];
  top1_in_top2 = mean_i [argmax reference_i in the 2 largest logits_i];
  max_logit_diff = max_ij |logits_ij - reference_ij|.
  """
  top2 = np.argsort(-logits, axis=1, kind="stable")[:, :2]
  target = reference.argmax(1)
  return ParityRow(
      variant=variant,
      top1_agreement=float(np.mean(logits.argmax(1) == target)),
      top1_in_top2=float(np.mean(np.any(top2 == target[:, None], axis=1))),
      max_logit_diff=float(np.abs(logits - reference).max()),
      file_bytes=int(file_bytes), latency_ms=float(latency_ms))


def measure(network, images: np.ndarray, saved_model_dir: str,
            tflite_paths: Dict[str, str], latency_images: int) -> List[ParityRow]:
  """Keras vs `serve_image` vs each TFLite file, on `images`.

  Latency is per image at batch 1 (mean over the first `latency_images`
  images after one warm-up call), for the SavedModel signature and each
  TFLite interpreter (1 thread); the Keras row's is the eager network call.

  Returns:
    One `ParityRow` per variant, Keras first (agreement 1, diff 0).
  """
  reference = np.asarray(network(images, training=False))
  timed = images[:latency_images]

  def latency(fn):
    fn(timed[:1])
    start = time.perf_counter()
    for image in timed:
      fn(image[None])
    return (time.perf_counter() - start) * 1000.0 / len(timed)

  rows = [compare("keras", reference, reference, 0,
               latency(lambda x: network(x, training=False)))]
  serve = tf.saved_model.load(saved_model_dir).signatures[
      export_saved_model_lib.SERVE_IMAGE]
  logits = serve(images=tf.constant(images))["logits"].numpy()
  rows.append(compare("savedmodel serve_image", logits, reference,
                   _dir_bytes(saved_model_dir),
                   latency(lambda x: serve(images=tf.constant(x)))))
  for variant, path in tflite_paths.items():
    classifier = tflite_demo_lib.TFLiteClassifier(path)
    logits = classifier.logits(images)
    rows.append(compare(f"tflite {variant}", logits, reference,
                     os.path.getsize(path), latency(classifier.logits)))
  return rows


def markdown_table(rows: Sequence[ParityRow]) -> str:
  """The rows as a GitHub markdown table."""
  lines = ["| variant | top-1 agreement | Keras top-1 in top-2 | "
           "max logit diff | file size | latency / image (batch 1) |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    size = f"{r.file_bytes / 1024:.1f} KiB" if r.file_bytes else "-"
    lines.append(f"| {r.variant} | {100 * r.top1_agreement:.2f}% | "
                 f"{100 * r.top1_in_top2:.2f}% | {r.max_logit_diff:.2e} | {size} | {r.latency_ms:.3f} ms |")
  return "\n".join(lines)
