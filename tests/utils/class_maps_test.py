"""Tests for kc_keras.utils.class_maps."""

import numpy as np
import pytest

from kc_keras.utils import class_maps


@pytest.mark.parametrize("c2v, message", [
    ([], "non-empty"), ([0, -1], r"class_to_vertical\[1\] = -1"),
    ([[0, 1]], "1-D"), ([0.5, 1], "integers"),
])
def test_bad_map_is_named(c2v, message):
  with pytest.raises(ValueError, match=message):
    class_maps.validate_class_to_vertical(c2v)


def test_integral_values_become_int64():
  out = class_maps.validate_class_to_vertical(np.array([0.0, 2.0, 1.0]))
  assert out.dtype == np.int64
  np.testing.assert_array_equal(out, [0, 2, 1])
