"""Parity of an export with the Keras network: top-1 agreement, logit error, size, latency."""

import dataclasses
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from export import export_saved_model_lib
from export import tflite_demo_lib
from kc_keras.dataloaders import factory
from kc_keras.dataloaders import pipeline
from kc_keras.metrics import evaluation
from kc_keras.quantization import floor


# Batch size of the throughput column.
THROUGHPUT_BATCH = 32
# Timed calls per throughput figure and untimed calls before each series.
THROUGHPUT_REPEATS = 20
WARMUP_CALLS = 3
_MS_PER_S = 1000.0
# The row whose file size the others are compared with (fp32 TFLite).
FP32_VARIANT = "tflite none"


@dataclasses.dataclass(frozen=True)
class ParityRow:
  """One variant against the Keras network on the same images."""

  variant: str
  top1_agreement: float
  top1_in_top2: float
  max_logit_diff: float
  file_bytes: int
  latency_ms: float
  throughput: float = 0.0
  # Top-1 against the images' labels; None where no labels were given.
  top1_accuracy: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Timing:
  """Median per-image latency at batch 1 and images/s at a larger batch."""

  latency_ms: float
  throughput: float


def call_times_ms(fn: Callable[[np.ndarray], object],
                  inputs: Sequence[np.ndarray], warmup: int,
                  clock: Callable[[], float] = time.perf_counter
                  ) -> np.ndarray:
  """Wall time in ms of `fn(x)` for each `x` of `inputs`.

  Args:
    fn: the call to time.
    inputs: one argument per timed call.
    warmup: untimed calls of `fn(inputs[0])` made first (tracing, buffer
      allocation, caches).
    clock: seconds, monotonic (injectable for tests).

  Returns:
    float `[len(inputs)]` milliseconds.
  """
  for _ in range(warmup):
    fn(inputs[0])
  times = []
  for x in inputs:
    start = clock()
    fn(x)
    times.append((clock() - start) * _MS_PER_S)
  return np.asarray(times)


def time_variant(fn: Callable[[np.ndarray], object], images: np.ndarray,
                 latency_images: int, batch_size: int = THROUGHPUT_BATCH,
                 repeats: int = THROUGHPUT_REPEATS,
                 warmup: int = WARMUP_CALLS,
                 clock: Callable[[], float] = time.perf_counter) -> Timing:
  """Times `fn` on single images, then on batches of `batch_size`.

  latency_ms = median over the first `latency_images` images of the time
  of `fn(image[None])`; throughput = batch_size / median time of `repeats`
  calls `fn(images[:batch_size])`; both after `warmup` untimed calls of
  their own shape (so a batch-size change's reallocation is not timed).

  Args:
    fn: images `[B, H, W, C]` -> anything (the result is discarded).
    images: at least `batch_size` images.
    latency_images: single-image calls timed.
    batch_size: images per throughput call.
    repeats: throughput calls timed.
    warmup: see `call_times_ms`.
    clock: see `call_times_ms`.

  Returns:
    The `Timing`.

  Raises:
    ValueError: fewer than `batch_size` images, or a count below 1.
  """
  for name, value in (("latency_images", latency_images),
                      ("batch_size", batch_size), ("repeats", repeats)):
    if value < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  if len(images) < batch_size:
    raise ValueError(f"throughput at batch {batch_size} needs that many "
                     f"images, got {len(images)}")
  singles = [images[i:i + 1] for i in range(min(latency_images, len(images)))]
  latency = float(np.median(call_times_ms(fn, singles, warmup, clock)))
  batch = images[:batch_size]
  batch_ms = float(np.median(call_times_ms(fn, [batch] * repeats, warmup,
                                           clock)))
  return Timing(latency_ms=latency,
                throughput=batch_size * _MS_PER_S / batch_ms)


def eval_images_and_labels(params, max_examples: int, batch_size: int
                           ) -> Tuple[np.ndarray, np.ndarray]:
  """The first `max_examples` eval-split images and their labels.

  Returns:
    images float32 `[E, H, W, C]` and label_ids int32 `[E, L]` (an image's
    classes, padded with -1; L = `max_labels_per_example`, as every source
    gives them).
  """
  source = factory.build_source(params.task.data)
  dataset = pipeline.build_dataset(source, "eval", params.task.data,
                                   training=False,
                                   global_batch_size=batch_size)
  images, labels, count = [], [], 0
  for batch_images, features in dataset:
    images.append(batch_images.numpy())
    labels.append(features["label_ids"].numpy())
    count += len(images[-1])
    if count >= max_examples:
      break
  return (np.concatenate(images)[:max_examples],
          np.concatenate(labels)[:max_examples])


def eval_images(params, max_examples: int, batch_size: int) -> np.ndarray:
  """The first `max_examples` eval-split images, float32 `[E, H, W, C]`."""
  return eval_images_and_labels(params, max_examples, batch_size)[0]


def _dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def floored_reference(network, images: np.ndarray, reference: np.ndarray,
                      logit_floor: float,
                      batch_size: int = THROUGHPUT_BATCH) -> np.ndarray:
  """The logits a file converted with `logit_floor` is meant to output.

  max(reference, floor) for a network without a per-image self-paced scale
  (`floor.has_floor_parts`); for the others `floor.floored_logits` of its `floor.floor_parts` in float,
  max(y, max(floor, -c r_v)) (`export_tflite_lib` converts that).
  """
  if not floor.has_floor_parts(network):
    return np.maximum(reference, logit_floor)
  return np.concatenate([
      np.asarray(floor.floored_logits(
          floor.floor_parts(network, images[start:start + batch_size]),
          logit_floor))
      for start in range(0, len(images), batch_size)])


def compare(variant: str, logits: np.ndarray, reference: np.ndarray,
            file_bytes: int, latency_ms: float,
            throughput: float = 0.0,
            meant: Optional[np.ndarray] = None,
            label_ids: Optional[np.ndarray] = None) -> ParityRow:
  """One row: `logits` `[E, N]` of a variant against the Keras `reference`.

  top1_agreement = mean_i [argmax logits_i == argmax reference_i];
  top1_in_top2 = mean_i [argmax reference_i in the 2 largest logits_i];
  max_logit_diff = max_ij |logits_ij - meant_ij|, `meant` the logits the
  variant is meant to output (default `reference`; a floored file's:
  `floored_reference`); with `label_ids` `[E, L]` (padded with -1),
  top1_accuracy = mean_i [argmax logits_i in label_ids_i] (the evaluator's
  top-1, `evaluation.best_label_rank` = 0), what the file itself scores, so
  that a quantization's cost reads in accuracy too.
  """
  top2 = np.argsort(-logits, axis=1, kind="stable")[:, :2]
  target = reference.argmax(1)
  accuracy = None
  if label_ids is not None:
    accuracy = float(np.mean(
        evaluation.best_label_rank(logits, np.asarray(label_ids)) == 0))
  return ParityRow(
      variant=variant,
      top1_agreement=float(np.mean(logits.argmax(1) == target)),
      top1_in_top2=float(np.mean(np.any(top2 == target[:, None], axis=1))),
      max_logit_diff=float(np.abs(logits - (
          reference if meant is None else meant)).max()),
      file_bytes=int(file_bytes), latency_ms=float(latency_ms),
      throughput=float(throughput), top1_accuracy=accuracy)


def measure(network, images: np.ndarray, saved_model_dir: str,
            tflite_paths: Dict[str, str], latency_images: int,
            batch_size: int = THROUGHPUT_BATCH,
            repeats: int = THROUGHPUT_REPEATS,
            warmup: int = WARMUP_CALLS,
            logit_floors: Optional[Dict[str, Optional[float]]] = None,
            label_ids: Optional[np.ndarray] = None
            ) -> List[ParityRow]:
  """Keras vs `serve_image` vs each TFLite file, on `images`.

  Timing (see `time_variant`): the eager Keras call, the loaded
  `serve_image` signature, and one LiteRT interpreter per file (1 thread,
  the whole batch in one invoke, int8 (de)quantization included).

  Args:
    network: the Keras network.
    images: float32 `[E, H, W, C]`.
    saved_model_dir: the export's version directory.
    tflite_paths: variant name -> `.tflite` file.
    latency_images: images timed at batch 1.
    batch_size: batch of the throughput figure.
    repeats: timed batches per throughput figure.
    warmup: untimed calls before each timing.
    logit_floors: variant name -> the logit floor its file was converted
      with (missing or None: none). A floored row compares top-1 with the
      Keras logits as they are and the logit difference with
      max(Keras logits, floor), the function the file is meant to compute.
    label_ids: int `[E, L]` labels of `images` (padded with -1): each row
      then also has its top-1 accuracy.

  Returns:
    One `ParityRow` per variant, Keras first (agreement 1, diff 0).
  """
  reference = np.asarray(network(images, training=False))

  def timed(fn):
    return time_variant(fn, images, latency_images, batch_size, repeats,
                        warmup)

  t = timed(lambda x: network(x, training=False))
  rows = [compare("keras", reference, reference, 0, t.latency_ms,
                  t.throughput, label_ids=label_ids)]
  serve = tf.saved_model.load(saved_model_dir).signatures[
      export_saved_model_lib.SERVE_IMAGE]
  logits = serve(images=tf.constant(images))["logits"].numpy()
  t = timed(lambda x: serve(images=tf.constant(x)))
  rows.append(compare("savedmodel serve_image", logits, reference,
                      _dir_bytes(saved_model_dir), t.latency_ms,
                      t.throughput, label_ids=label_ids))
  for variant, path in tflite_paths.items():
    classifier = tflite_demo_lib.TFLiteClassifier(path)
    logits = classifier.logits(images)
    t = timed(classifier.batch_logits)
    name = f"tflite {variant}"
    logit_floor = (logit_floors or {}).get(variant)
    if logit_floor is not None:
      name += f" (logit floor {logit_floor:g})"
    rows.append(compare(
        name, logits, reference, os.path.getsize(path), t.latency_ms,
        t.throughput,
        None if logit_floor is None else floored_reference(
            network, images, reference, logit_floor), label_ids))
  return rows


def markdown_table(rows: Sequence[ParityRow],
                   batch_size: int = THROUGHPUT_BATCH) -> str:
  """The rows as a GitHub markdown table.

  The size ratio column divides by the `tflite none` (fp32) row's file
  (with or without a logit floor), "-" when there is none. A "top-1 (labels)"
  column follows the variant when any row has its accuracy.
  """
  with_accuracy = any(r.top1_accuracy is not None for r in rows)
  fp32 = next((r.file_bytes for r in rows
               if r.variant == FP32_VARIANT
               or r.variant.startswith(FP32_VARIANT + " (")), 0)
  accuracy_head = "top-1 (labels) | " if with_accuracy else ""
  lines = [f"| variant | {accuracy_head}top-1 agreement | "
           "Keras top-1 in top-2 | "
           "max logit diff | file size | size / fp32 tflite | "
           "latency / image (batch 1) | throughput (batch "
           f"{batch_size}) |",
           "|---" * (8 + with_accuracy) + "|"]
  for r in rows:
    size = f"{r.file_bytes / 1024:.1f} KiB" if r.file_bytes else "-"
    ratio = f"{r.file_bytes / fp32:.3f}x" if r.file_bytes and fp32 else "-"
    accuracy = ""
    if with_accuracy:
      accuracy = ("-" if r.top1_accuracy is None
                  else f"{100 * r.top1_accuracy:.2f}%") + " | "
    lines.append(f"| {r.variant} | {accuracy}{100 * r.top1_agreement:.2f}% | "
                 f"{100 * r.top1_in_top2:.2f}% | {r.max_logit_diff:.2e} | "
                 f"{size} | {ratio} | {r.latency_ms:.3f} ms | "
                 f"{r.throughput:.0f} img/s |")
  return "\n".join(lines)
