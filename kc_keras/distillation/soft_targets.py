"""Soft targets: teacher top-K as padded global ids/probs; dense and blend."""

import numbers

import tensorflow as tf

PAD_ID = -1


def top_k_soft_targets(teacher_logits, vertical_class_ids, k, temperature=1.0):
  """A teacher's top-K sigmoid probabilities, mapped to global class ids.

  For the teacher of vertical v with N_v classes (column j of its logits is
  global class `vertical_class_ids[j]`) and a temperature tau:

    p = sigmoid(teacher_logits / tau);  (idx, probs) = top_K(p),  K' = min(k, N_v)
    ids = vertical_class_ids[idx]

  padded from K' to k entries with id -1 and probability 0 so shapes are
  static. Ties keep the lower column first (tf.math.top_k order).

  Args:
    teacher_logits: [b, N_v] logits of one teacher.
    vertical_class_ids: int [N_v] global ids of the teacher's classes.
    k: the number of targets kept per example (>= 1).
    temperature: tau > 0; 1 is the paper, tau > 1 softens the teacher's
      probabilities (Hinton et al. 2015) without changing their order.

  Returns:
    (ids int32 [b, k], probs float32 [b, k]).

  Raises:
    ValueError: if k < 1, temperature <= 0, or the static widths of the
      logits and the ids differ.
  """
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"k must be an int >= 1, got {k!r}.")
  check_temperature(temperature)
  logits = tf.cast(teacher_logits, tf.float32) / temperature
  class_ids = tf.cast(tf.convert_to_tensor(vertical_class_ids), tf.int32)
  width = logits.shape[-1]
  num_ids = class_ids.shape[0]
  if width is not None and num_ids is not None and width != num_ids:
    raise ValueError(
        f"teacher_logits has {width} columns but vertical_class_ids has "
        f"{num_ids} entries.")
  n_v = width if width is not None else num_ids
  probs = tf.sigmoid(logits)
  if n_v is not None:
    kept = min(k, n_v)
    top_probs, top_idx = tf.math.top_k(probs, k=kept, sorted=True)
    pad = k - kept
  else:
    kept = tf.minimum(k, tf.shape(logits)[-1])
    top_probs, top_idx = tf.math.top_k(probs, k=kept, sorted=True)
    pad = k - kept
  ids = tf.gather(class_ids, top_idx)
  ids = tf.pad(ids, [[0, 0], [0, pad]], constant_values=PAD_ID)
  top_probs = tf.pad(top_probs, [[0, 0], [0, pad]], constant_values=0.0)
  ids = tf.ensure_shape(ids, [None, k])
  top_probs = tf.ensure_shape(top_probs, [None, k])
  return ids, top_probs


def check_temperature(temperature):
  """Raises ValueError unless `temperature` is a finite number > 0."""
  is_number = (isinstance(temperature, numbers.Real) and
               not isinstance(temperature, bool))
  if not (is_number and 0.0 < float(temperature) < float("inf")):
    raise ValueError(
        f"temperature must be a finite number > 0, got {temperature!r}.")


def dense_soft_targets(target_ids, target_probs, num_classes):
  """Scatters padded sparse targets into a dense [B, N] matrix.

    z*_ij = target_probs[i, t] if target_ids[i, t] == j, else 0

  Padding entries (id < 0) are ignored. If one id appears twice in a row the
  larger probability is kept (cannot happen with disjoint verticals).

  Args:
    target_ids: int [B, T*K], padded with -1.
    target_probs: float [B, T*K], padded with 0.
    num_classes: N.

  Returns:
    float32 [B, N].

  Raises:
    ValueError: if num_classes < 1 or the static shapes of ids and probs differ.
  """
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
  ids = tf.cast(target_ids, tf.int32)
  probs = tf.cast(target_probs, tf.float32)
  if not ids.shape.is_compatible_with(probs.shape):
    raise ValueError(
        f"target_ids shape {ids.shape} does not match target_probs shape "
        f"{probs.shape}.")
  batch = tf.shape(ids)[0]
  rows = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(ids))
  valid = tf.logical_and(ids >= 0, ids < num_classes)
  # Padding goes to an extra column N that is sliced off: static shapes, so
  # this also compiles under XLA (a boolean_mask would not).
  cols = tf.where(valid, ids, num_classes)
  indices = tf.reshape(tf.stack([rows, cols], axis=-1), [-1, 2])
  updates = tf.reshape(tf.where(valid, probs, 0.0), [-1])
  # Max against a zero matrix: probabilities are >= 0, so this both scatters
  # and resolves duplicates deterministically (scatter_nd would sum them).
  dense = tf.tensor_scatter_nd_max(
      tf.zeros([batch, num_classes + 1], tf.float32), indices, updates)
  return dense[:, :num_classes]


def multi_hot(label_ids, num_classes):
  """Hard multi-hot targets from padded label ids.

    z_ij = 1 if j is one of label_ids[i], else 0   (ids < 0 are padding)

  Kept here (not imported from dataloaders.labels) so the loss maths has no
  dependency on the input pipeline.

  Args:
    label_ids: int [B, L], padded with -1.
    num_classes: N.

  Returns:
    float32 [B, N].
  """
  label_ids = tf.cast(label_ids, tf.int32)
  return tf.reduce_max(
      tf.one_hot(label_ids, num_classes, dtype=tf.float32), axis=-2)
