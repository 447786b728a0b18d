"""The class -> vertical map: one check for every module that takes one."""

import numpy as np


def validate_class_to_vertical(class_to_vertical) -> np.ndarray:
  """Checks a class -> vertical map and returns it as an int64 array.

  Args:
    class_to_vertical: sequence of N non-negative ints, `class_to_vertical[c]`
      is the vertical of class c. The number of verticals is `max + 1`.

  Returns:
    np.int64 array of shape [N].

  Raises:
    ValueError: if the map is empty, not 1-D, not integer or has a negative
      entry (the first offending class is named).
  """
  array = np.asarray(class_to_vertical)
  if array.ndim != 1 or array.size == 0:
    raise ValueError(
        "class_to_vertical must be a non-empty 1-D sequence of ints, got "
        f"shape {array.shape}."
    )
  if not np.issubdtype(array.dtype, np.integer):
    if not np.all(np.mod(array, 1) == 0):
      raise ValueError(
          f"class_to_vertical must hold integers, got dtype {array.dtype}."
      )
  array = array.astype(np.int64)
  negative = np.flatnonzero(array < 0)
  if negative.size:
    c = int(negative[0])
    raise ValueError(
        f"class_to_vertical[{c}] = {int(array[c])} is negative; vertical ids "
        "must be 0..M-1."
    )
  return array
