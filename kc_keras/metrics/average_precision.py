"""Non-interpolated average precision of scores against binary labels."""

import numpy as np


def average_precision(scores, labels):
  """Average precision: mean over positives of the precision at their rank.

    AP = (1 / P) * sum_{i positive} precision(s_i),
    precision(s) = #{positives with score >= s} / #{items with score >= s}

  Ties: items with equal scores form one group that is ranked together, so
  each positive in a tie group gets the precision at the END of the group
  (the same convention as sklearn's `average_precision_score`). The result
  does not depend on the input order.

  Args:
    scores: float [n].
    labels: bool/0-1 [n].

  Returns:
    float AP in [0, 1], or NaN when there is no positive.

  Raises:
    ValueError: if the shapes differ or are not 1-D, or scores are not finite.
  """
  scores = np.asarray(scores, dtype=np.float64)
  labels = np.asarray(labels).astype(bool)
  if scores.ndim != 1 or scores.shape != labels.shape:
    raise ValueError(
        f"scores {scores.shape} and labels {labels.shape} must be equal 1-D "
        "shapes.")
  if not np.all(np.isfinite(scores)):
    raise ValueError(
        f"scores must be finite; index {int(np.argmin(np.isfinite(scores)))} "
        "is not.")
  num_positive = int(labels.sum())
  if num_positive == 0:
    return float("nan")
  order = np.argsort(-scores, kind="stable")
  neg_sorted = -scores[order]
  hits = labels[order]
  true_positives = np.cumsum(hits)
  # Last position of each item's tie group (neg_sorted is ascending).
  group_end = np.searchsorted(neg_sorted, neg_sorted, side="right") - 1
  precision = true_positives[group_end] / (group_end + 1.0)
  return float(np.sum(precision[hits]) / num_positive)
