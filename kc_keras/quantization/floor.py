"""The logit floor of int8 files: its defaults, its checks, and the floored logits' parts."""

import math
from typing import Dict, Mapping, Optional, Union

import keras
from keras import ops

from kc_keras.quantization import errors
from kc_keras.quantization import input_folding
from kc_keras.quantization import integer_forms

# c of `floor_parts`: the shifted logits keep int8 precision over [-c, max]
# (a smaller c, a finer step). The per-vertical floor max(F, -c r_v) it
# implies equals the asked floor F wherever r_v >= |F| / c; a smaller c
# raises the floor of low-scale verticals towards their top logits. On the
# Omniglot student (r_v in [0.13, 2.1]) c = 32 gives a step of 0.19 where
# the logits' own was 0.64 (docs/BENCHMARKS.md, "The graph converted for int8").
FLOOR_SHIFT = 32.0
# The floor of the variants whose logits layer outputs int8: such a file
# rounds its logits over [floor, max] instead of [min, max] (demo: one step
# 0.23 -> 0.07; docs/BENCHMARKS.md, "Variants"). sigmoid(-16) ~ 1.1e-7:
# clipping lower logits changes no score a caller can tell apart from 0.
# Float-output variants do not round their logits to int8 and get no floor.
SUGGESTED_LOGIT_FLOOR = -16.0
# The variants floored by default (`int8_float_head` only with its head
# quantized too, see `resolve_logit_floor`).
DEFAULT_LOGIT_FLOORS = {"int8": SUGGESTED_LOGIT_FLOOR}
# A `logit_floor` value: the variant's default.
DEFAULT = "default"
# A `logit_floor` value: no floor.
NONE = "none"


def check_logit_floor(logit_floor) -> Optional[float]:
  """Validates a logit floor.

  Args:
    logit_floor: None (no floor) or the lowest logit the model outputs.

  Returns:
    `logit_floor` as a float, or None.

  Raises:
    QuantizationError: a floor that is not a finite negative number (a floor
      >= 0 would clip logits of classes the model scores >= 0.5).
  """
  if logit_floor is None:
    return None
  try:
    value = float(logit_floor)
  except (TypeError, ValueError):
    raise errors.QuantizationError(
        f"logit_floor={logit_floor!r} is not a number") from None
  if not math.isfinite(value) or value >= 0:
    raise errors.QuantizationError(
        f"logit_floor={logit_floor!r} must be a finite negative number "
        f"(e.g. {SUGGESTED_LOGIT_FLOOR}: sigmoid(-16) ~ 1e-7)")
  return value


def resolve_logit_floor(logit_floor: Union[float, str, None],
                        quantization: str,
                        float_head: bool = True) -> Optional[float]:
  """The floor a conversion applies.

  Args:
    logit_floor: `DEFAULT` (the floor of the variants whose logits layer
      outputs int8: `int8`, and `int8_float_head` with `float_head=False`;
      None for the others), None or `NONE` (no floor), or a negative number
      (or its string, as a flag passes it).
    quantization: the TFLite variant (`export_tflite_lib.QUANTIZATIONS`).
    float_head: `int8_float_head` only: whether the logits layer stays float.

  Returns:
    The floor, or None.

  Raises:
    QuantizationError: see `check_logit_floor`.
  """
  if isinstance(logit_floor, str):
    lowered = logit_floor.strip().lower()
    if lowered == DEFAULT:
      if quantization == "int8_float_head" and not float_head:
        return SUGGESTED_LOGIT_FLOOR
      return DEFAULT_LOGIT_FLOORS.get(quantization)
    if lowered == NONE:
      return None
  return check_logit_floor(logit_floor)


def has_floor_parts(network: keras.Model) -> bool:
  """Whether `floor_parts` applies: a per-image self-paced scale.

  A per-batch scale is a constant at inference, so its logits are the
  classifier's times a constant: like a network without scaling, its logits
  op takes the floor itself.
  """
  return (network.self_paced.mode != "none"
          and network.self_paced.normalization == "per_image")


def floor_parts(network: keras.Model, images, shift: float = FLOOR_SHIFT
                ) -> Dict[str, object]:
  """The pieces of a self-paced network's floored logits, as int8 can hold them.

  Logits y = k x r (x the classifier's output, r the self-paced scale,
  k the 'class' mode's factors) have a negative end (~-150 before the
  scale on the Omniglot student) that sets the int8 step of x and of y.
  A floor F on y keeps the top: y' = r max(k x, F / r). Here k x comes
  from its own copy of the classifier, shifted by c (`FLOOR_SHIFT`) and
  rectified (`integer_forms.shifted_logits`), so its int8 range is
  [-c, max]; x itself only feeds the norm. `floored_logits` composes
    y' = max(shifted, F norm) scale = max(y, max(F, -c r_v)).
  The export converts that composition for the int8 files of self-paced
  networks (the floor is chosen at conversion). The ops keep the layers'
  names (`kc_head/...`, `self_paced_scale/...`) as the network's integer
  form does.

  Args:
    network: a `HierarchicalClassifier`.
    images: [B, H, W, C] float images in [0, 1].
    shift: c > 0.

  Returns:
    dict of [B, N] float32: shifted = max(k x, -c), scale = r,
    norm = 1 / r.

  Raises:
    QuantizationError: a network without a per-image self-paced scale
      (`has_floor_parts`).
  """
  if not has_floor_parts(network):
    raise errors.QuantizationError(
        f"{network.name}: floor_parts needs a per-image self-paced scale; "
        "without it the logits op takes the floor itself")
  head = network.head
  features = input_folding.folded_features(network.backbone, images)
  with keras.name_scope(head.name):
    hidden = integer_forms.head_hidden(head, features)
    logits = integer_forms.head_logits_of(head, hidden)
    with keras.name_scope(head.classifier.name):
      shifted = integer_forms.shifted_logits(
          head.classifier, hidden, shift,
          integer_forms.class_factors(network.self_paced))
  with keras.name_scope(network.self_paced.name):
    scale, norm = integer_forms.self_paced_scales(network.self_paced, logits)
  return {"shifted": ops.cast(shifted, "float32"), "scale": scale,
          "norm": norm}


def floored_logits(parts: Mapping[str, object], floor: float):
  """max(shifted, floor * norm) * scale: the floored logits of `floor_parts`.

  With shifted = max(k x, -c), scale = r and norm = 1 / r this is
    max(y, max(floor, -c r_v)),   y = k x r the self-paced logits,
  so every logit above the floor is y itself.

  Args:
    parts: `floor_parts` outputs.
    floor: F < 0.

  Returns:
    [B, N] float32.
  """
  return (ops.maximum(parts["shifted"], floor * parts["norm"])
          * parts["scale"])
