"""Streaming evaluator: top-k, per-vertical top-1 and AP, mpvap."""

import numpy as np

from kc_keras.metrics import average_precision as ap_lib
from kc_keras.utils import class_maps


def best_label_rank(scores, label_ids):
  """The rank of each row's best-ranked label among all N classes (0 = first).

  rank(l) = #{j : s_j > s_l} + #{j < l : s_j == s_l}, so ties go to the lower
  class id, as with argmax; a label is in the top k exactly when its rank is
  below k. Counting against the label's own score takes a few passes over
  the row, where finding the k-th largest score takes a partition per k: the
  difference that matters at 100K classes.

  Args:
    scores: float [B, N], no NaN.
    label_ids: int [B, L], padded with -1; every row has a label.

  Returns:
    int [B]: min over the row's labels of rank(l).
  """
  batch, n = scores.shape
  columns = np.arange(n)
  best = np.full(batch, n, np.int64)
  for ids in label_ids.T:
    valid = ids >= 0
    own = scores[np.arange(batch), np.where(valid, ids, 0)][:, None]
    rank = (np.count_nonzero(scores > own, axis=1) +
            np.count_nonzero((scores == own) & (columns < ids[:, None]),
                             axis=1))
    best = np.where(valid, np.minimum(best, rank), best)
  return best


class Evaluator:
  """Accumulates scores batch by batch; `result()` gives the METHOD.md metrics.

  - top{k}: fraction of examples whose k best classes (over all N) contain
    any of their labels (ties to the lower class id, see `best_label_rank`).
  - per_vertical_top1[v]: top-1 over all N classes restricted to the examples
    of vertical v (an example whose labels span several verticals counts in
    each of them).
  - per_vertical_ap[v] = AP_v = mean over classes c of v that have >= 1
    positive among the test examples of v of AP(scores[:, c], labels[:, c])
    over the examples of v (METHOD.md section 4, `average_precision`).
  - mpvap = mean of AP_v over verticals that have any example.
  - vertical_confusion[v][u]: examples of vertical v whose top-1 class is in
    vertical u (where the errors of v fall; the diagonal holds v's correct
    answers and its within-vertical confusions).

  Memory: per example only the scores of its own vertical(s)' classes are
  kept, so it scales to 100K classes. Rows without any label (e.g. padding of
  a final batch) are skipped and counted in `num_skipped`.

  Args:
    class_to_vertical: int array [N].
    vertical_names: optional names [M]; result dicts are keyed by name when
      given, else by vertical id.
    top_ks: the k of the top-k accuracies (keys 'top{k}').

  Raises:
    ValueError: on bad arguments, or in `update` on mismatched shapes or a
      label id outside [0, N).
  """

  def __init__(self, class_to_vertical, vertical_names=None, top_ks=(1, 5)):
    c2v = class_maps.validate_class_to_vertical(class_to_vertical)
    if not top_ks or any(int(k) < 1 for k in top_ks):
      raise ValueError(f"top_ks must be non-empty ints >= 1, got {top_ks}.")
    self.class_to_vertical = c2v.astype(np.int64)
    self.num_classes = c2v.size
    self.num_verticals = int(c2v.max()) + 1
    if vertical_names is not None and len(vertical_names) != self.num_verticals:
      raise ValueError(
          f"vertical_names has {len(vertical_names)} entries for "
          f"{self.num_verticals} verticals.")
    self.vertical_names = (None if vertical_names is None
                           else tuple(vertical_names))
    self.top_ks = tuple(int(k) for k in top_ks)
    self._class_ids = [np.flatnonzero(c2v == v)
                       for v in range(self.num_verticals)]
    self.reset()

  def reset(self):
    """Forgets everything accumulated."""
    self._count = 0
    self._skipped = 0
    self._hits = {k: 0 for k in self.top_ks}
    self._vertical_count = np.zeros(self.num_verticals, np.int64)
    self._vertical_hits = np.zeros(self.num_verticals, np.int64)
    self._confusion = np.zeros((self.num_verticals, self.num_verticals),
                               np.int64)
    self._vertical_scores = [[] for _ in range(self.num_verticals)]
    self._vertical_labels = [[] for _ in range(self.num_verticals)]

  def update(self, scores, label_ids):
    """Adds a batch.

    Args:
      scores: float [B, N] (logits or probabilities; AP and top-k only use
        the order).
      label_ids: int [B, L], padded with -1.

    Raises:
      ValueError: on shape mismatches or label ids >= N.
    """
    scores = np.asarray(scores, dtype=np.float32)
    label_ids = np.asarray(label_ids)
    if label_ids.ndim == 1:
      label_ids = label_ids[:, None]
    if (scores.ndim != 2 or scores.shape[1] != self.num_classes or
        label_ids.ndim != 2 or label_ids.shape[0] != scores.shape[0]):
      raise ValueError(
          f"Expected scores [B, {self.num_classes}] and label_ids [B, L], got "
          f"{scores.shape} and {label_ids.shape}.")
    if np.isnan(scores).any():
      raise ValueError("The scores contain NaN (a diverged model?); they "
                       "cannot be ranked.")
    if np.any(label_ids >= self.num_classes):
      raise ValueError(
          f"label id {int(label_ids.max())} is outside "
          f"[0, {self.num_classes}).")
    valid = label_ids >= 0
    keep = valid.any(axis=1)
    self._skipped += int((~keep).sum())
    scores, label_ids, valid = scores[keep], label_ids[keep], valid[keep]
    batch = scores.shape[0]
    if batch == 0:
      return
    labels = np.zeros(scores.shape, bool)
    rows = np.broadcast_to(np.arange(batch)[:, None], label_ids.shape)
    labels[rows[valid], label_ids[valid]] = True

    self._count += batch
    rank = best_label_rank(scores, label_ids)
    for k in self.top_ks:
      self._hits[k] += int(np.count_nonzero(rank < k))
    top1 = rank < 1
    verticals = np.zeros((batch, self.num_verticals), bool)
    verticals[rows[valid], self.class_to_vertical[label_ids[valid]]] = True
    # np.argmax keeps the lower class id on ties, as best_label_rank does.
    predicted_vertical = self.class_to_vertical[np.argmax(scores, axis=1)]
    for v in np.flatnonzero(verticals.any(axis=0)):
      members = verticals[:, v]
      np.add.at(self._confusion[v], predicted_vertical[members], 1)
      self._vertical_count[v] += int(members.sum())
      self._vertical_hits[v] += int(top1[members].sum())
      cols = self._class_ids[v]
      self._vertical_scores[v].append(scores[members][:, cols])
      self._vertical_labels[v].append(labels[members][:, cols])

  def _key(self, v):
    return int(v) if self.vertical_names is None else self.vertical_names[v]

  def vertical_ap(self, v):
    """AP_v (see the class docstring), or NaN if vertical v has no example."""
    if not self._vertical_scores[v]:
      return float("nan")
    scores = np.concatenate(self._vertical_scores[v])
    labels = np.concatenate(self._vertical_labels[v])
    aps = [ap_lib.average_precision(scores[:, c], labels[:, c])
           for c in np.flatnonzero(labels.any(axis=0))]
    return float(np.mean(aps)) if aps else float("nan")

  def result(self):
    """Returns the metrics dict.

    Returns:
      {'top{k}': float, ..., 'per_vertical_top1': {vertical: float},
       'per_vertical_ap': {vertical: float}, 'mpvap': float,
       'vertical_confusion': {vertical: {predicted vertical: count}} (non-zero
       counts only), 'num_examples': int, 'num_skipped': int}; verticals
       without examples are left out of the per-vertical dicts; empty -> NaN.
    """
    out = {}
    for k in self.top_ks:
      out[f"top{k}"] = (self._hits[k] / self._count if self._count
                        else float("nan"))
    seen = np.flatnonzero(self._vertical_count > 0)
    out["per_vertical_top1"] = {
        self._key(v): float(self._vertical_hits[v] / self._vertical_count[v])
        for v in seen
    }
    aps = {v: self.vertical_ap(v) for v in seen}
    out["per_vertical_ap"] = {self._key(v): ap for v, ap in aps.items()}
    finite = [ap for ap in aps.values() if not np.isnan(ap)]
    out["mpvap"] = float(np.mean(finite)) if finite else float("nan")
    out["vertical_confusion"] = {
        self._key(v): {self._key(u): int(self._confusion[v, u])
                       for u in np.flatnonzero(self._confusion[v])}
        for v in seen
    }
    out["num_examples"] = self._count
    out["num_skipped"] = self._skipped
    return out
