"""Padded label ids: dense multi-hot conversion and validation (numpy and in-graph)."""

import numpy as np
import tensorflow as tf

PAD_ID = -1
# Offending ids listed in one error message.
_MAX_NAMED = 10


def multi_hot(label_ids: tf.Tensor, num_classes: int) -> tf.Tensor:
  """Dense multi-hot targets from padded ids.

  `z[b, c] = 1` if `c` appears in `label_ids[b]`, else 0; `-1` pads are ignored and
  duplicates count once. Ids outside `0..num_classes-1` other than `-1` are ignored
  too (validate with `check_label_ids` / `assert_label_ids`).

  Args:
    label_ids: int `[B, L]` (or `[L]`), padded with `-1`.
    num_classes: `N`.

  Returns:
    float32 `[B, N]` (or `[N]`).
  """
  label_ids = tf.convert_to_tensor(label_ids)
  label_ids = tf.cast(label_ids, tf.int32)
  # one_hot maps -1 (and any out-of-range id) to an all-zero row; max dedups.
  hot = tf.one_hot(label_ids, depth=num_classes, dtype=tf.float32)
  return tf.reduce_max(hot, axis=-2)


def check_label_ids(label_ids, num_classes: int,
                    source: str = "label_ids") -> np.ndarray:
  """Checks padded label ids in numpy.

  Args:
    label_ids: int array-like, any shape; `-1` is padding.
    num_classes: `N`.
    source: what to call the array in the message.

  Returns:
    The ids as an int32 array.

  Raises:
    ValueError: naming the ids outside `0..N-1` (and not `-1`), or non-integers.
  """
  arr = np.asarray(label_ids)
  if arr.size and not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"{source} must be integers, got dtype {arr.dtype}")
  arr = arr.astype(np.int64)
  bad = np.unique(arr[(arr != PAD_ID) & ((arr < 0) | (arr >= num_classes))])
  if bad.size:
    shown = ", ".join(str(x) for x in bad[:_MAX_NAMED])
    more = f" ... ({bad.size - _MAX_NAMED} more)" if bad.size > _MAX_NAMED else ""
    raise ValueError(
        f"{source} has ids outside 0..{num_classes - 1} (and not the pad "
        f"{PAD_ID}): {shown}{more}"
    )
  return arr.astype(np.int32)


def assert_label_ids(label_ids: tf.Tensor, num_classes: int,
                     source: str = "label_ids") -> tf.Tensor:
  """Graph-side check for `tf.data` maps: ids in `0..N-1` or `-1`.

  Args:
    label_ids: int tensor of any shape.
    num_classes: `N`.
    source: what to call the tensor in the message.

  Returns:
    `label_ids`, with the check as a control dependency.

  Raises:
    tf.errors.InvalidArgumentError: at run time, message naming the bad ids.
  """
  label_ids = tf.convert_to_tensor(label_ids)
  ok = tf.logical_or(
      tf.equal(label_ids, PAD_ID),
      tf.logical_and(label_ids >= 0, label_ids < num_classes),
  )
  bad = tf.boolean_mask(label_ids, tf.logical_not(ok))
  check = tf.debugging.Assert(
      tf.reduce_all(ok),
      [
          f"{source} has ids outside 0..{num_classes - 1} (and not the pad {PAD_ID}):",
          bad,
      ],
      summarize=_MAX_NAMED,
  )
  with tf.control_dependencies([check]):
    return tf.identity(label_ids)


def pad_label_ids(label_ids: tf.Tensor, max_labels: int,
                  source: str = "label_ids") -> tf.Tensor:
  """Pads a variable-length 1-D id vector to `[max_labels]` with `-1` (graph side).

  Raises:
    tf.errors.InvalidArgumentError: at run time if there are more than `max_labels`.
  """
  label_ids = tf.cast(tf.reshape(label_ids, [-1]), tf.int32)
  n = tf.shape(label_ids)[0]
  check = tf.debugging.Assert(
      n <= max_labels,
      [f"{source}: an example has more labels than max_labels_per_example="
       f"{max_labels}; its labels:", label_ids],
      summarize=_MAX_NAMED,
  )
  with tf.control_dependencies([check]):
    padded = tf.pad(label_ids, [[0, max_labels - tf.minimum(n, max_labels)]],
                    constant_values=PAD_ID)
  return tf.ensure_shape(padded[:max_labels], [max_labels])
