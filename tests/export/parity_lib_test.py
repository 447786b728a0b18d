"""Tests for export.parity_lib: the parity numbers against hand-computed values."""

import numpy as np

from export import parity_lib


def test_compare_hand_computed():
  reference = np.array([[3.0, 1.0, 0.0],
                        [0.0, 2.0, 1.9],
                        [0.5, 0.0, 1.0],
                        [1.0, 0.0, -1.0]], np.float32)
  logits = np.array([[2.9, 1.0, 0.0],    # same top-1
                     [0.0, 1.9, 2.0],    # flipped: ref top-1 is 2nd
                     [0.5, 1.2, 1.0],    # ref top-1 (2) is 2nd
                     [-1.0, 0.0, 1.0]],  # ref top-1 (0) is 3rd
                    np.float32)
  row = parity_lib.compare("x", logits, reference, 2048, 1.5)
  assert row.top1_agreement == 0.25
  assert row.top1_in_top2 == 0.75
  np.testing.assert_allclose(row.max_logit_diff, 2.0)
  table = parity_lib.markdown_table([row])
  assert table.splitlines()[2] == (
      "| x | 25.00% | 75.00% | 2.00e+00 | 2.0 KiB | 1.500 ms |")
