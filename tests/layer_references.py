"""NumPy loop references of the layers' maths, shared by the layer tests and the
tests of their integer-friendly forms (one reference per formula)."""

import numpy as np

SELF_PACED_EPS = 1e-12


def self_paced_reference(x, gamma_per_class, c2v, eps=SELF_PACED_EPS):
  """Self-paced scaling, looped over examples and verticals, in float64.

  out[b, c] = gamma_c * x[b, c] / sqrt(sum_{c' in v(c)} x[b, c']^2 + eps)

  Args:
    x: [B, N] logits.
    gamma_per_class: [N] scale of each class (a vertical's scale repeated over its
      classes for the vertical mode).
    c2v: [N] vertical of each class.
    eps: added under the square root.

  Returns:
    [B, N] float64.
  """
  c2v = np.asarray(c2v)
  out = np.zeros_like(x, dtype=np.float64)
  for b in range(x.shape[0]):
    for v in range(c2v.max() + 1):
      idx = np.flatnonzero(c2v == v)
      norm = np.sqrt(np.sum(x[b, idx].astype(np.float64) ** 2) + eps)
      out[b, idx] = gamma_per_class[idx] * x[b, idx] / norm
  return out
