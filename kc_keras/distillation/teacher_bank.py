"""Frozen per-vertical teachers: soft targets and specialist scores, in a chosen layout."""

import hashlib

from absl import logging
import numpy as np
import tensorflow as tf

from kc_keras.distillation import shared_trunk
from kc_keras.distillation import soft_targets as soft_targets_lib
from kc_keras.distillation import stacked_teachers
from kc_keras.utils import class_maps

# Every sample's slots split by vertical, each teacher run on its own rows.
ROUTED = "routed"
LAYOUTS = (stacked_teachers.LAYOUT, shared_trunk.LAYOUT, ROUTED)


def model_fingerprint(model):
  """A sha256 hex digest of a model's weights (paths, shapes, dtypes, values).

  Used to bind an offline target cache to the exact teachers that wrote it.

  Args:
    model: a built keras.Model.

  Returns:
    64-character hex string.

  Raises:
    ValueError: if the model has no weights (not built).
  """
  if not model.weights:
    raise ValueError(
        f"Model {model.name!r} has no weights; build it before fingerprinting.")
  digest = hashlib.sha256()
  for weight in model.weights:
    value = np.ascontiguousarray(np.asarray(weight.numpy()))
    digest.update(str(weight.path).encode())
    digest.update(str(value.shape).encode())
    digest.update(str(value.dtype).encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


class TeacherBank:
  """Frozen specialist teachers, one per vertical, routed by label vertical.

  A plain Python object on purpose: a Keras model holding a bank does not
  track it, so the student's `weights`, checkpoints and exports never contain
  teacher variables.

  Teacher v maps images to logits over its own N_v classes, column j being
  global class `classes_of(v)[j]` (ascending global ids); a teacher emitting all
  N logits is also accepted (its vertical's columns are taken). Every sample
  gets targets only from the teacher(s) of the vertical(s) of its labels
  (its slots). How the teachers run is the `layout`, chosen by the caller
  (`specialists.load_teacher_bank` takes it from the teachers' records), never
  guessed from the weights:
  - 'shared_trunk': the teachers are one frozen trunk plus their own
    classifiers (`freeze: backbone_and_hidden`). The batch goes once through
    the trunk and one [d, N] matmul (`shared_trunk.shared_trunk_classifier`,
    which checks every teacher's trunk fingerprint against the recorded one).
  - 'stacked': independent teachers. Teachers of one architecture are stacked
    (`stacked_teachers.StackedGroup`) and every slot runs through its own
    teacher's weights in one batched pass per architecture. Teachers that do
    not split into stackable trunk layers and a linear classifier (an SC head,
    self-paced scaling, a keras.applications backbone, a subclassed model)
    are routed one by one, as in 'routed'.
  - 'routed': the slots are split with `tf.dynamic_partition`, each teacher
    sees only its rows (skipped when absent), results are put back with
    `tf.dynamic_stitch`; a cost that grows with the number of teachers.
  All three give the same targets (up to float rounding).

  Args:
    teachers: dict vertical id -> keras.Model (images -> logits). Frozen here
      (`trainable = False`) and always called with `training=False`.
    class_to_vertical: int array [N], the vertical of every class.
    top_k: K, targets kept per teacher and sample.
    max_teachers_per_example: T, slots per sample (a sample spanning more
      verticals is an error).
    expected_verticals: verticals that must have a teacher, checked here;
      None means every vertical of `class_to_vertical`. Verticals outside
      this set may lack a teacher; a batch that needs one fails in-graph with
      an error naming it.
    vertical_names: optional names, used in error messages.
    layout: 'stacked', 'shared_trunk' or 'routed' (see above).
    trunk_fingerprint: with 'shared_trunk', the recorded fingerprint every
      teacher's trunk must have (`shared_trunk.trunk_fingerprint`); None
      checks that all teachers' trunks equal the lowest vertical's.
    temperature: tau > 0 of the soft targets, sigmoid(logits / tau); 1 is
      the paper. `specialist_scores` (evaluation) always uses tau = 1.

  Raises:
    ValueError: on bad arguments, a missing teacher, or teachers that do not
      fit 'shared_trunk' (each names the vertical).

  Example:
    >>> bank = TeacherBank({0: t0, 1: t1}, class_to_vertical, top_k=100)
    >>> ids, probs = bank.soft_targets(images, label_ids)  # [B, T*K] each
  """

  def __init__(self,
               teachers,
               class_to_vertical,
               top_k,
               max_teachers_per_example=1,
               expected_verticals=None,
               vertical_names=None,
               layout=stacked_teachers.LAYOUT,
               trunk_fingerprint=None,
               temperature=1.0):
    class_to_vertical = class_maps.validate_class_to_vertical(
        class_to_vertical)
    if not isinstance(top_k, int) or top_k < 1:
      raise ValueError(f"top_k must be an int >= 1, got {top_k!r}.")
    if (not isinstance(max_teachers_per_example, int) or
        max_teachers_per_example < 1):
      raise ValueError("max_teachers_per_example must be an int >= 1, got "
                       f"{max_teachers_per_example!r}.")
    if layout not in LAYOUTS:
      raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    if trunk_fingerprint is not None and layout != shared_trunk.LAYOUT:
      raise ValueError(
          f"trunk_fingerprint is for layout='{shared_trunk.LAYOUT}', got "
          f"layout={layout!r}.")
    self.class_to_vertical = class_to_vertical.astype(np.int32)
    self.num_classes = int(class_to_vertical.size)
    self.num_verticals = int(class_to_vertical.max()) + 1
    soft_targets_lib.check_temperature(temperature)
    self.top_k = top_k
    self.temperature = float(temperature)
    self.max_teachers_per_example = max_teachers_per_example
    self.vertical_names = (
        None if vertical_names is None else tuple(vertical_names))
    if (self.vertical_names is not None and
        len(self.vertical_names) != self.num_verticals):
      raise ValueError(
          f"vertical_names has {len(self.vertical_names)} entries but "
          f"class_to_vertical has {self.num_verticals} verticals.")

    teachers = dict(teachers)
    for v in teachers:
      if (not isinstance(v, (int, np.integer)) or
          not 0 <= v < self.num_verticals):
        raise ValueError(
            f"Teacher key {v!r} is not a vertical id in [0, "
            f"{self.num_verticals}).")
    if expected_verticals is None:
      expected_verticals = np.unique(self.class_to_vertical).tolist()
    missing = sorted(int(v) for v in expected_verticals if v not in teachers)
    if missing:
      raise ValueError(
          "No teacher for vertical(s) "
          + ", ".join(self._describe(v) for v in missing) + ".")
    if not teachers:
      raise ValueError("TeacherBank needs at least one teacher.")
    for teacher in teachers.values():
      teacher.trainable = False
    self._teachers = {int(v): teachers[v] for v in sorted(teachers)}
    self._class_ids = {
        v: np.flatnonzero(self.class_to_vertical == v).astype(np.int32)
        for v in range(self.num_verticals)
    }
    self._layout = layout
    self._shared = None
    self._groups = []
    self._routed_verticals = (tuple(self._teachers)
                              if layout == ROUTED else ())
    if layout == shared_trunk.LAYOUT:
      trunk, kernel, bias = shared_trunk.shared_trunk_classifier(
          self._teachers, self._class_ids, self.num_classes, self._describe,
          expected_fingerprint=trunk_fingerprint)
      # Variables, not graph constants: at N = 100K the kernel is 200 MB.
      self._shared = (trunk,
                      tf.Variable(kernel, trainable=False,
                                  name="shared_trunk_kernel"),
                      tf.Variable(bias, trainable=False,
                                  name="shared_trunk_bias"))
    elif layout == stacked_teachers.LAYOUT:
      self._groups, unstackable = stacked_teachers.group_teachers(
          self._teachers, self._class_ids, self.num_classes, self._describe)
      self._routed_verticals = tuple(sorted(unstackable))
      for v, reason in sorted(unstackable.items()):
        logging.info("Teacher of vertical %s is routed, not stacked: %s.",
                     self._describe(v), reason)

  @property
  def layout(self):
    """'stacked', 'shared_trunk' or 'routed': how the teachers run."""
    return self._layout

  @property
  def stacked_groups(self):
    """The verticals of each stacked group (one per architecture), sorted."""
    return tuple(group.verticals for group in self._groups)

  @property
  def stacked_variables(self):
    """Every stacked group's variables (`StackedGroup.variables`)."""
    return [w for group in self._groups for w in group.variables]

  @property
  def routed_verticals(self):
    """The verticals whose teacher runs on its own rows, one by one."""
    return self._routed_verticals

  @property
  def teachers(self):
    """A copy of the dict vertical id -> teacher model."""
    return dict(self._teachers)

  @property
  def target_width(self):
    """T * K, the width of `target_ids` / `target_probs`."""
    return self.max_teachers_per_example * self.top_k

  def fingerprints(self):
    """Returns {vertical id: model_fingerprint(teacher)} for the manifest."""
    return {v: model_fingerprint(t) for v, t in self._teachers.items()}

  def _describe(self, v):
    if self.vertical_names is None:
      return str(v)
    return f"{v} ({self.vertical_names[v]})"

  def _slots(self, label_ids):
    """Vertical of each (sample, slot): int32 [B, T], -1 for an empty slot.

    A sample's distinct label verticals fill its T slots in ascending order.
    """
    label_ids = tf.cast(label_ids, tf.int32)
    t = self.max_teachers_per_example
    m = self.num_verticals
    c2v = tf.constant(self.class_to_vertical)
    valid = tf.logical_and(label_ids >= 0, label_ids < self.num_classes)
    verticals = tf.where(
        valid, tf.gather(c2v, tf.where(valid, label_ids, 0)), -1)
    presence = tf.reduce_max(tf.one_hot(verticals, m, dtype=tf.int32), axis=1)
    spanned = tf.reduce_sum(presence, axis=1)
    check = tf.debugging.assert_less_equal(
        spanned, t,
        message=(f"A sample's labels span more verticals than "
                 f"max_teachers_per_example={t}."))
    with tf.control_dependencies([check]):
      # Higher score for a lower vertical id, so top_k lists them ascending.
      score = presence * tf.range(m, 0, -1, dtype=tf.int32)
      if m < t:
        score = tf.pad(score, [[0, 0], [0, t - m]])
      values, verts = tf.math.top_k(score, k=t, sorted=True)
    return tf.where(values > 0, verts, -1)

  def _teacher_checks(self, slot_verticals):
    """In-graph asserts that no slot needs a vertical without a teacher."""
    checks = []
    for v in range(self.num_verticals):
      if v not in self._teachers:
        checks.append(tf.debugging.assert_equal(
            tf.reduce_sum(tf.cast(tf.equal(slot_verticals, v), tf.int32)), 0,
            message=f"No teacher for vertical {self._describe(v)}, which "
                    "this batch's labels need."))
    return checks

  def _routed(self, images, slots, per_teacher, empty):
    """Runs each teacher on its own rows only and stitches results by slot.

    Args:
      images: [B, ...].
      slots: int32 [B, T] slot verticals (`_slots`).
      per_teacher: fn(v, rows int32 [r], logits [r, N_v]) -> list of tensors
        with leading dim r.
      empty: fn(r) -> list of tensors for r padding slots.

    Returns:
      list of stitched tensors with leading dim B*T.
    """
    t = self.max_teachers_per_example
    flat = tf.reshape(slots, [-1])
    positions = tf.range(tf.size(flat))
    parts = tf.dynamic_partition(positions, flat + 1, self.num_verticals + 1)
    indices, values = [parts[0]], [empty(tf.size(parts[0]))]
    with tf.control_dependencies(self._teacher_checks(flat)):
      for v in range(self.num_verticals):
        slot_positions = parts[v + 1]
        indices.append(slot_positions)
        if v not in self._teachers:
          values.append(empty(tf.size(slot_positions)))
          continue
        rows = slot_positions // t
        values.append(per_teacher(v, rows, self._run_teacher(v, images, rows)))
    return [
        tf.dynamic_stitch(indices, [vals[i] for vals in values])
        for i in range(len(values[0]))
    ]

  def _run_teacher(self, v, images, rows):
    """Teacher v's logits over its classes for `images[rows]`, float32 [r, N_v].

    A vertical absent from the batch skips its teacher altogether: most
    verticals are absent from any one batch when M is large, and TF's CPU
    convolution and batch-norm kernels reject an empty batch.
    """
    n_v = self._class_ids[v].size

    def run():
      logits = self._teachers[v](tf.gather(images, rows), training=False)
      return self._vertical_logits(v, logits)

    return tf.cond(tf.size(rows) > 0, run,
                   lambda: tf.zeros([0, n_v], tf.float32))

  def _vertical_logits(self, v, logits):
    """Teacher logits restricted to vertical v's classes, float32 [r, N_v]."""
    logits = tf.cast(logits, tf.float32)
    width = logits.shape[-1]
    n_v = self._class_ids[v].size
    if width == n_v:
      return logits
    if width == self.num_classes:
      return tf.gather(logits, self._class_ids[v], axis=-1)
    raise ValueError(
        f"Teacher of vertical {self._describe(v)} emits {width} logits; "
        f"expected {n_v} (its classes) or {self.num_classes} (all classes).")

  def _slot_logits(self, images, slots):
    """Each slot's teacher logits over all N classes, float32 [B, T', N].

    Exact on the columns of the slot's own vertical; other columns are
    arbitrary (masked by the callers). T' = 1 on the shared trunk (one pass
    per sample serves all its slots), T otherwise.
    """
    if self._shared is not None:
      trunk, kernel, bias = self._shared
      with tf.control_dependencies(self._teacher_checks(slots)):
        features = tf.cast(trunk.classifier_inputs(images, training=False),
                           tf.float32)
      return (tf.matmul(features, kernel) + bias)[:, None, :]
    t = self.max_teachers_per_example
    flat = tf.reshape(slots, [-1])
    num_slots = tf.size(flat)
    with tf.control_dependencies(self._teacher_checks(flat)):
      logits = tf.zeros(tf.stack([num_slots, self.num_classes]), tf.float32)
    for group in self._groups:
      logits += group.slot_logits(images, slots)
    for v in self._routed_verticals:
      positions = tf.cast(tf.where(tf.equal(flat, v))[:, 0], tf.int32)
      teacher_logits = self._run_teacher(v, images, positions // t)
      columns = tf.constant(self._class_ids[v])
      width = columns.shape[0]
      where = tf.stack([tf.repeat(positions, width),
                        tf.tile(columns, [tf.size(positions)])], axis=1)
      logits += tf.scatter_nd(where, tf.reshape(teacher_logits, [-1]),
                              tf.shape(logits))
    return tf.reshape(logits, [-1, t, self.num_classes])

  def _slot_class_mask(self, slots):
    """[B, T, N] bool: class c belongs to the vertical of slot (i, s)."""
    c2v = tf.constant(self.class_to_vertical)
    return tf.equal(c2v[None, None, :], slots[:, :, None])

  def soft_targets(self, images, label_ids):
    """Online top-K soft targets from the teacher(s) of each sample's labels.

    For sample i and each distinct vertical v of its labels (slot s):
    targets[i, s*K:(s+1)*K] =
        top_k_soft_targets(T_v(image_i), classes_of(v), K, tau);
    empty slots are padding (id -1, prob 0).

    Args:
      images: [B, H, W, C] (the same, already augmented, images as the student).
      label_ids: int [B, L], padded with -1.

    Returns:
      (target_ids int32 [B, T*K], target_probs float32 [B, T*K]).
    """
    slots = self._slots(label_ids)
    if self._layout == ROUTED:
      ids, probs = self._routed_soft_targets(images, slots)
    else:
      ids, probs = self._masked_soft_targets(
          tf.sigmoid(self._slot_logits(images, slots) / self.temperature),
          slots)
    batch = tf.shape(label_ids)[0]
    width = self.target_width
    ids = tf.ensure_shape(tf.reshape(ids, [batch, width]), [None, width])
    probs = tf.ensure_shape(tf.reshape(probs, [batch, width]), [None, width])
    return tf.stop_gradient(ids), tf.stop_gradient(probs)

  def _routed_soft_targets(self, images, slots):
    """`soft_targets` per teacher: (ids, probs) [B*T, K] in slot order."""
    k = self.top_k

    def per_teacher(v, rows, logits):
      del rows
      return list(soft_targets_lib.top_k_soft_targets(
          logits, self._class_ids[v], k, self.temperature))

    def empty(r):
      return [tf.fill([r, k], soft_targets_lib.PAD_ID),
              tf.zeros([r, k], tf.float32)]

    ids, probs = self._routed(images, slots, per_teacher, empty)
    return ids, probs

  def _masked_soft_targets(self, probs, slots):
    """Top-K of each slot's vertical from probabilities over all N classes.

    Classes outside a slot's vertical get probability -1, below any sigmoid,
    so top_k over all N classes keeps the vertical's top K' = min(K, N_v)
    first (ties: lower class id first, as per teacher); the rest are padding.

    Args:
      probs: float32 [B, T or 1, N] teacher probabilities.
      slots: int32 [B, T] slot verticals.

    Returns:
      (ids int32 [B, T, K], probs float32 [B, T, K]).
    """
    k = self.top_k
    masked = tf.where(self._slot_class_mask(slots), probs, -1.0)
    kept = min(k, self.num_classes)
    top, idx = tf.math.top_k(masked, k=kept, sorted=True)
    valid = top >= 0.0
    ids = tf.where(valid, idx, soft_targets_lib.PAD_ID)
    top = tf.where(valid, top, 0.0)
    pad = [[0, 0], [0, 0], [0, k - kept]]
    ids = tf.pad(ids, pad, constant_values=soft_targets_lib.PAD_ID)
    top = tf.pad(top, pad, constant_values=0.0)
    return tf.cast(ids, tf.int32), top

  def specialist_scores(self, images, label_ids, floor=0.0):
    """Scores of "the specialists as a set" (METHOD.md section 4).

    scores[i, c] = sigmoid(T_v(image_i))_c for c in the vertical(s) v of
    sample i's labels, and `floor` for every other class.

    Args:
      images: [B, H, W, C].
      label_ids: int [B, L], padded with -1.
      floor: the score of classes outside the sample's vertical(s).

    Returns:
      float32 [B, N].
    """
    slots = self._slots(label_ids)
    floor = tf.cast(floor, tf.float32)
    if self._layout != ROUTED:
      mask = self._slot_class_mask(slots)
      # A sample's slots hold distinct verticals: each class is in at most
      # one of them, so the sum over slots picks it.
      own = tf.reduce_sum(tf.where(
          mask, tf.sigmoid(self._slot_logits(images, slots)), 0.0), axis=1)
      return tf.where(tf.reduce_any(mask, axis=1), own, floor)
    batch = tf.shape(label_ids)[0]
    rows_and_probs = []

    def per_teacher(v, rows, logits):
      probs = tf.sigmoid(logits)
      rows_and_probs.append((v, rows, probs))
      return [tf.zeros([tf.shape(rows)[0]], tf.int32)]

    def empty(r):
      return [tf.zeros([r], tf.int32)]

    self._routed(images, slots, per_teacher, empty)
    scores = tf.fill([batch, self.num_classes], floor)
    for v, rows, probs in rows_and_probs:
      class_ids = tf.constant(self._class_ids[v])
      grid_rows = tf.broadcast_to(rows[:, None], tf.shape(probs))
      grid_cols = tf.broadcast_to(class_ids[None, :], tf.shape(probs))
      indices = tf.reshape(tf.stack([grid_rows, grid_cols], axis=-1), [-1, 2])
      scores = tf.tensor_scatter_nd_update(
          scores, indices, tf.reshape(probs, [-1]))
    return scores


def soft_target_batches(bank, dataset):
  """Yields numpy (example_id, target_ids, target_probs) for a target cache.

  Args:
    bank: a TeacherBank.
    dataset: batched tf.data of (images, features) with features
      'example_id' and 'label_ids', in the raw (unshuffled) order.

  Yields:
    (example_id int64 [b], target_ids int32 [b, T*K], target_probs
    float32 [b, T*K]).
  """
  compute = tf.function(bank.soft_targets)
  for images, features in dataset:
    ids, probs = compute(images, features["label_ids"])
    yield (features["example_id"].numpy(), ids.numpy(), probs.numpy())
