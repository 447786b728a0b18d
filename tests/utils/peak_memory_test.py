"""Tests for the per-stage peak resident memory."""

import numpy as np
import pytest

from kc_keras.utils import peak_memory

MIB = 2**20


def test_a_reset_forgets_an_earlier_peak_and_sees_a_new_one():
  if not peak_memory.reset_peak():
    pytest.skip("This OS keeps only the process's lifetime peak "
                "(no /proc/self/clear_refs).")
  block = np.ones(300 * MIB // 8)  # 300 MiB, every page touched
  with_block = peak_memory.peak_bytes()
  del block
  assert peak_memory.reset_peak()
  after = peak_memory.peak_bytes()
  assert with_block - after >= 250 * MIB
  block = np.ones(100 * MIB // 8)
  assert peak_memory.peak_bytes() - after >= 90 * MIB
  del block
