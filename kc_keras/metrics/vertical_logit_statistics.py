"""Per-vertical statistics of a model's logits: how a vertical's block separates images.

A diagnostic for the head and the self-paced scaling (METHOD.md sections 2-3):
for vertical v with classes C_v, the block of logits y[:, C_v] should rank the
true class first on v's images and say "no" to every class of C_v on the other
verticals' images. Self-paced scaling fixes ||y_v|| = gamma_v on every image,
so the two cases can differ only in the block's direction, not its size; these
numbers show which one a trained model uses.
"""

from typing import Dict, List, Sequence

import numpy as np


def _mean_or_nan(values) -> float:
  return float(np.mean(values)) if np.size(values) else float("nan")


def vertical_logit_statistics(
    logits: np.ndarray,
    labels: np.ndarray,
    class_to_vertical: Sequence[int],
) -> List[Dict[str, float]]:
  """Statistics of each vertical's logit block, on its own and on other images.

  For vertical v, with own images I_v = {i : vertical(label_i) = v}, the other
  images O_v, block b_i = y[i, C_v] and t_i the position of label_i in C_v:
    own_mean        = mean over i in I_v, c in C_v of y[i, c]
    own_spread      = mean over i in I_v of std_c(b_i)
    own_true        = mean over i in I_v of b_i[t_i]
    own_best_other  = mean over i in I_v of max_{c != t_i} b_i[c]
    own_top1        = fraction of i in I_v with argmax b_i = t_i
    own_norm        = mean over i in I_v of ||b_i||
    own_offset_share = mean over i in I_v of |C_v| mean_c(b_i)^2 / ||b_i||^2,
                      the share of ||b_i||^2 in the block's common offset
                      (the rest, ||b_i - mean_c(b_i)||^2, is the contrast
                      between v's classes)
    other_mean      = mean over i in O_v, c in C_v of y[i, c]
    other_max       = mean over i in O_v of max_c b_i[c]
    other_norm      = mean over i in O_v of ||b_i||
  Statistics over an empty set (no own or no other image) are NaN.

  Args:
    logits: float [B, N], the model's output logits.
    labels: int [B], one class id per image.
    class_to_vertical: N ints, the vertical of each class.

  Returns:
    One dict per vertical, ordered by vertical id, with `vertical`,
    `num_classes`, `num_own_images` and the statistics above.

  Raises:
    ValueError: when shapes disagree or a label is outside [0, N).
  """
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels).reshape(-1)
  c2v = np.asarray(class_to_vertical).reshape(-1)
  if logits.ndim != 2 or logits.shape[1] != c2v.size:
    raise ValueError(
        f"logits must be [B, N={c2v.size}] (one column per class of "
        f"class_to_vertical), got {logits.shape}.")
  if labels.size != logits.shape[0]:
    raise ValueError(
        f"{labels.size} labels for {logits.shape[0]} rows of logits.")
  if labels.size and (labels.min() < 0 or labels.max() >= c2v.size):
    raise ValueError(
        f"labels must be class ids in [0, {c2v.size}), got values in "
        f"[{labels.min()}, {labels.max()}].")
  image_vertical = c2v[labels]
  stats = []
  for v in range(int(c2v.max()) + 1 if c2v.size else 0):
    classes = np.flatnonzero(c2v == v)
    own = image_vertical == v
    own_block = logits[own][:, classes]
    other_block = logits[~own][:, classes]
    position = np.searchsorted(classes, labels[own])
    rows = np.arange(position.size)
    true = own_block[rows, position]
    others = own_block.copy()
    others[rows, position] = -np.inf
    stats.append({
        "vertical": v,
        "num_classes": int(classes.size),
        "num_own_images": int(own.sum()),
        "own_mean": _mean_or_nan(own_block),
        "own_spread": _mean_or_nan(own_block.std(axis=1)),
        "own_true": _mean_or_nan(true),
        # A one-class vertical has no other class to compare with.
        "own_best_other": (_mean_or_nan(others.max(axis=1))
                           if classes.size > 1 else float("nan")),
        "own_top1": _mean_or_nan(own_block.argmax(axis=1) == position),
        "own_norm": _mean_or_nan(np.linalg.norm(own_block, axis=1)),
        "own_offset_share": _mean_or_nan(
            classes.size * own_block.mean(axis=1)**2
            / np.maximum(np.sum(own_block**2, axis=1), np.finfo(float).tiny)),
        "other_mean": _mean_or_nan(other_block),
        "other_max": _mean_or_nan(other_block.max(axis=1)),
        "other_norm": _mean_or_nan(np.linalg.norm(other_block, axis=1)),
    })
  return stats
