"""Padded label ids: dense multi-hot conversion and validation (numpy and in-graph)."""

from typing import Optional

import numpy as np
import tensorflow as tf

from kc_keras.dataloaders import data_errors

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


def _where(where: Optional[tf.Tensor]) -> list:
  return [] if where is None else [" in ", where]


def assert_label_ids(label_ids: tf.Tensor, num_classes: int,
                     source: str = "label_ids",
                     where: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Graph-side check for `tf.data` maps: ids in `0..N-1` or `-1`.

  Args:
    label_ids: int tensor of any shape.
    num_classes: `N`.
    source: what to call the tensor in the message.
    where: optional scalar string naming the record (file and index).

  Returns:
    `label_ids`, with the check as a control dependency.

  Raises:
    tf.errors.InvalidArgumentError: at run time, message naming the bad ids
      and the record, marked for `data_errors.named_data_errors`.
  """
  label_ids = tf.convert_to_tensor(label_ids)
  ok = tf.logical_or(
      tf.equal(label_ids, PAD_ID),
      tf.logical_and(label_ids >= 0, label_ids < num_classes),
  )
  bad = tf.boolean_mask(label_ids, tf.logical_not(ok))[:_MAX_NAMED]
  message = tf.strings.join(
      [f"{source}"] + _where(where) +
      [f" has ids outside 0..{num_classes - 1} (and not the pad {PAD_ID}): ",
       tf.strings.reduce_join(tf.strings.as_string(bad), separator=", ")])
  with tf.control_dependencies(
      [data_errors.assertion(tf.reduce_all(ok), message)]):
    return tf.identity(label_ids)


def pad_label_ids(label_ids: tf.Tensor, max_labels: int,
                  source: str = "label_ids",
                  where: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Pads a variable-length 1-D id vector to `[max_labels]` with `-1` (graph side).

  Args:
    label_ids: int ids of one example.
    max_labels: `L`.
    source: what to call the tensor in the message.
    where: optional scalar string naming the record.

  Raises:
    tf.errors.InvalidArgumentError: at run time if there are more than
      `max_labels` (marked for `data_errors.named_data_errors`).
  """
  label_ids = tf.cast(tf.reshape(label_ids, [-1]), tf.int32)
  n = tf.shape(label_ids)[0]
  message = tf.strings.join(
      [f"{source}"] + _where(where) +
      [f": an example has more labels than max_labels_per_example="
       f"{max_labels}; its labels: ",
       tf.strings.reduce_join(tf.strings.as_string(label_ids[:_MAX_NAMED]),
                              separator=", ")])
  with tf.control_dependencies(
      [data_errors.assertion(n <= max_labels, message)]):
    padded = tf.pad(label_ids, [[0, max_labels - tf.minimum(n, max_labels)]],
                    constant_values=PAD_ID)
  return tf.ensure_shape(padded[:max_labels], [max_labels])
