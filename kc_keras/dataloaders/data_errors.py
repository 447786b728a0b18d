"""Bad records in the input stream: decode-or-skip, skip counts, and named errors."""

import contextlib
from typing import Optional

import tensorflow as tf

ON_DECODE_ERROR = ("error", "skip")
# Prefix of every in-graph data assertion; `named_data_errors` finds it in the
# InvalidArgumentError that tf.data raises at the iteration boundary.
MARKER = "KC_DATA_ERROR: "
_OK_KEY = "_decoded_ok"
# Records decoded together in one isolated attempt: a group of good records
# costs one nested dataset instead of one per record (which more than halved
# the throughput of a PNG pipeline); a group holding a bad record is decoded
# again record by record.
_GROUP_SIZE = 64


class DataError(ValueError):
  """A record of the dataset cannot be used; the message names the record."""


class SkipCounter:
  """Counts the records dropped by `on_decode_error='skip'`.

  A host-side int64 variable incremented inside the tf.data pipeline. Create
  it outside any strategy scope (a plain variable, not a mirrored one). During
  training the pipeline reads ahead (prefetch), so a mid-run value may include
  a few records of the next batches; an exhausted (eval) pipeline's is exact.
  """

  def __init__(self):
    with tf.device("/cpu:0"):
      self.variable = tf.Variable(0, dtype=tf.int64, trainable=False,
                                  name="skipped_records")

  def value(self) -> int:
    return int(self.variable.numpy())


def assertion(ok: tf.Tensor, message: tf.Tensor) -> tf.Operation:
  """`tf.debugging.Assert(ok, [MARKER + message])` (graph side).

  Args:
    ok: scalar bool.
    message: scalar string naming the record and what is wrong.

  Returns:
    The assert op, to use as a control dependency.
  """
  return tf.debugging.Assert(ok, [tf.strings.join([MARKER, message])])


def _fallback(element: dict, spec: dict) -> dict:
  """An element of `spec` built from `element` (pass-through keys) or zeros."""
  out = {}
  for key, s in spec.items():
    if key in element and element[key].dtype == s.dtype:
      out[key] = element[key]
    elif s.dtype == tf.string:
      out[key] = tf.fill(s.shape, "")
    else:
      out[key] = tf.zeros(s.shape, s.dtype)
  out[_OK_KEY] = tf.constant(False)
  return out


def decode(dataset: tf.data.Dataset, source, on_decode_error: str,
           counter: Optional[SkipCounter] = None,
           num_parallel_calls=tf.data.AUTOTUNE) -> tf.data.Dataset:
  """`dataset.map(source.decode)` where an undecodable record is named or skipped.

  For sources whose `decode` reads stored bytes (`source.may_fail_decode`),
  records are decoded in groups of `_GROUP_SIZE`: a group is decoded whole
  inside a one-element dataset with `ignore_errors`; when that fails, each
  of its records is decoded inside its own one-element dataset with
  `ignore_errors`, followed by a placeholder marked as failed, of which the
  first element is kept: a good record yields its decoded element, a bad one
  the placeholder. Groups are mapped in parallel, in order, and unbatched,
  so the input order is kept. Then 'error' asserts with
  `source.describe(record)` (see `named_data_errors`) and 'skip' drops the
  record and adds 1 to `counter`.

  Args:
    dataset: raw elements of `source`.
    source: an `ExampleSource`.
    on_decode_error: 'error' or 'skip'.
    counter: where 'skip' counts dropped records (None: not counted).
    num_parallel_calls: decode parallelism.

  Returns:
    The decoded dataset (same elements as `dataset.map(source.decode)` for
    good records).

  Raises:
    ValueError: an unknown `on_decode_error`.
  """
  if on_decode_error not in ON_DECODE_ERROR:
    raise ValueError(
        f"on_decode_error={on_decode_error!r} is not one of {ON_DECODE_ERROR}")
  if not getattr(source, "may_fail_decode", False):
    return dataset.map(source.decode, num_parallel_calls=num_parallel_calls)

  def mark_ok(element):
    out = source.decode(element)
    out[_OK_KEY] = tf.constant(True)
    return out

  decoded_spec = dataset.map(source.decode).element_spec

  signature = dict(decoded_spec)
  signature[_OK_KEY] = tf.TensorSpec([], tf.bool)

  def decode_one(element):
    one = tf.data.Dataset.from_tensors(element)
    good = one.map(mark_ok).ignore_errors()
    bad = one.map(lambda el: _fallback(el, decoded_spec))
    return good.concatenate(bad).take(1).get_single_element()

  def decode_all(group):
    return tf.map_fn(mark_ok, group, fn_output_signature=signature)

  def decode_each(group):
    return tf.map_fn(decode_one, group, fn_output_signature=signature)

  def decode_group(group):
    one = tf.data.Dataset.from_tensors(group)
    # `take(1)` stops before the record-by-record pass is built when the
    # whole group decodes.
    decoded = one.map(decode_all).ignore_errors().concatenate(
        one.map(decode_each)).take(1).get_single_element()
    return decoded, tf.map_fn(source.describe, group,
                              fn_output_signature=tf.string)

  ds = dataset.batch(_GROUP_SIZE).map(
      decode_group, num_parallel_calls=num_parallel_calls,
      deterministic=True).unbatch()

  if on_decode_error == "error":
    def check(element, where):
      message = tf.strings.join(
          ["could not decode the image of ", where,
           " (set task.data.on_decode_error=skip to drop such records)"])
      with tf.control_dependencies([assertion(element[_OK_KEY], message)]):
        return {k: tf.identity(v) for k, v in element.items() if k != _OK_KEY}
    return ds.map(check)

  def keep(element, where):
    del where
    ok = element[_OK_KEY]
    if counter is None:
      return ok
    bad = tf.cast(tf.logical_not(ok), tf.int64)
    with tf.control_dependencies([counter.variable.assign_add(bad)]):
      return tf.identity(ok)

  return ds.filter(keep).map(
      lambda element, where: {k: v for k, v in element.items() if k != _OK_KEY})


def message_of(error: tf.errors.OpError) -> Optional[str]:
  """The project's message inside a tf.data error, or None if it has none."""
  text = error.message
  start = text.find(MARKER)
  if start < 0:
    return None
  line = text[start + len(MARKER):].split("\n", 1)[0].rstrip()
  # Assert prints each data tensor in brackets: drop the closing one.
  return line[:-1] if line.endswith("]") else line


@contextlib.contextmanager
def named_data_errors(what: str = "the input pipeline"):
  """Turns a tf.data error raised by one of our assertions into a `DataError`.

  Wrap the place where batches are pulled (the training loop, an eval or
  cache loop): the user sees the record and the reason, not a traceback from
  inside tf.data. Other errors pass through unchanged.

  Args:
    what: which pipeline, for the message.

  Raises:
    DataError: from an `InvalidArgumentError` carrying `MARKER`.
  """
  try:
    yield
  except tf.errors.InvalidArgumentError as e:
    message = message_of(e)
    if message is None:
      raise
    raise DataError(f"Bad record in {what}: {message}") from None
