"""Frozen per-vertical teachers: routed soft targets and specialist scores."""

import hashlib

import numpy as np
import tensorflow as tf

from kc_keras.distillation import soft_targets as soft_targets_lib
from kc_keras.utils import class_maps


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


def shared_trunk_classifier(teachers, class_ids_of, num_classes):
  """One trunk and one [d, N] classifier, when every teacher is the same trunk.

  Teachers made the frozen-trunk way (`freeze: backbone_and_hidden`) share
  their backbone and hidden layers with identical weights and differ only in
  their dense classifier. Then T_v(x) = phi(x) W_v + b_v with one phi for all
  teachers, and the classifiers concatenate into W [d, N] (column c = class c,
  from its vertical's teacher): every teacher's logits for a batch cost one
  trunk pass and one matmul, whatever the number of verticals.

  Args:
    teachers: dict vertical id -> teacher model.
    class_ids_of: dict vertical id -> int array of its global class ids.
    num_classes: N.

  Returns:
    (trunk model, kernel float32 [d, N], bias float32 [N]), or None when the
    teachers do not cover every vertical, are not FC-FC `HierarchicalClassifier`s
    without self-paced scaling, or their trunks' weights differ.
  """
  if set(teachers) != set(class_ids_of):
    return None
  for v, teacher in teachers.items():
    head = getattr(teacher, "head", None)
    scale = getattr(teacher, "self_paced", None)
    if (getattr(teacher, "backbone", None) is None or head is None or
        getattr(head, "head_type", None) != "fc_fc" or
        getattr(scale, "mode", None) != "none" or
        int(head.classifier.units) != class_ids_of[v].size):
      return None

  def trunk_weights(teacher):
    return (teacher.backbone.weights + teacher.head.hidden1.weights +
            teacher.head.hidden2.weights)

  first = teachers[min(teachers)]
  reference = [np.asarray(w) for w in trunk_weights(first)]
  for teacher in teachers.values():
    weights = trunk_weights(teacher)
    if len(weights) != len(reference) or any(
        tuple(w.shape) != r.shape or not np.array_equal(np.asarray(w), r)
        for w, r in zip(weights, reference)):
      return None
  width = int(first.head.classifier.kernel.shape[0])
  kernel = np.zeros((width, num_classes), np.float32)
  bias = np.zeros((num_classes,), np.float32)
  for v, teacher in teachers.items():
    classifier = teacher.head.classifier
    kernel[:, class_ids_of[v]] = np.asarray(classifier.kernel)
    if classifier.use_bias:
      bias[class_ids_of[v]] = np.asarray(classifier.bias)
  return first, kernel, bias


class TeacherBank:
  """Frozen specialist teachers, one per vertical, routed by label vertical.

  A plain Python object on purpose: a Keras model holding a bank does not
  track it, so the student's `weights`, checkpoints and exports never contain
  teacher variables.

  Teacher v maps images to logits over its own N_v classes, column j being
  global class `classes_of(v)[j]` (ascending global ids); a teacher emitting all
  N logits is also accepted (its vertical's columns are taken). Every sample
  goes only through the teacher(s) of the vertical(s) of its labels: the slots
  (sample, vertical) are split with `tf.dynamic_partition`, each teacher sees
  only its rows, and the results are put back with `tf.dynamic_stitch`.
  When all teachers are one frozen trunk with their own classifiers
  (`shared_trunk_classifier`), the batch instead goes once through the trunk
  and one [d, N] matmul, and each sample keeps its own vertical's columns: the
  same targets, at a cost that does not grow with the number of verticals.

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
    share_trunk: use the shared-trunk path when the teachers allow it (False
      forces per-teacher routing, e.g. to compare the two).
    temperature: tau > 0 of the soft targets, sigmoid(logits / tau); 1 is
      the paper. `specialist_scores` (evaluation) always uses tau = 1.

  Raises:
    ValueError: on bad arguments or a missing teacher (names the vertical).

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
               share_trunk=True,
               temperature=1.0):
    class_to_vertical = class_maps.validate_class_to_vertical(
        class_to_vertical)
    if not isinstance(top_k, int) or top_k < 1:
      raise ValueError(f"top_k must be an int >= 1, got {top_k!r}.")
    if (not isinstance(max_teachers_per_example, int) or
        max_teachers_per_example < 1):
      raise ValueError("max_teachers_per_example must be an int >= 1, got "
                       f"{max_teachers_per_example!r}.")
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
    for teacher in teachers.values():
      teacher.trainable = False
    self._teachers = {int(v): teachers[v] for v in sorted(teachers)}
    self._class_ids = {
        v: np.flatnonzero(self.class_to_vertical == v).astype(np.int32)
        for v in range(self.num_verticals)
    }
    self._shared = None
    shared = (shared_trunk_classifier(self._teachers, self._class_ids,
                                      self.num_classes)
              if share_trunk else None)
    if shared is not None:
      trunk, kernel, bias = shared
      # Variables, not graph constants: at N = 100K the kernel is 200 MB.
      self._shared = (trunk,
                      tf.Variable(kernel, trainable=False,
                                  name="shared_trunk_kernel"),
                      tf.Variable(bias, trainable=False,
                                  name="shared_trunk_bias"))

  @property
  def shares_trunk(self):
    """True when targets come from one trunk pass plus one [d, N] matmul."""
    return self._shared is not None

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

  def _routed(self, images, label_ids, per_teacher, empty):
    """Runs each teacher on its own rows only and stitches results by slot.

    Args:
      images: [B, ...].
      label_ids: int [B, L].
      per_teacher: fn(v, rows int32 [r], logits [r, N_v]) -> list of tensors
        with leading dim r.
      empty: fn(r) -> list of tensors for r padding slots.

    Returns:
      (slot verticals [B, T], list of stitched tensors with leading dim B*T).
    """
    slots = self._slots(label_ids)
    t = self.max_teachers_per_example
    flat = tf.reshape(slots, [-1])
    positions = tf.range(tf.size(flat))
    parts = tf.dynamic_partition(positions, flat + 1, self.num_verticals + 1)
    checks = []
    for v in range(self.num_verticals):
      if v not in self._teachers:
        checks.append(tf.debugging.assert_equal(
            tf.size(parts[v + 1]), 0,
            message=f"No teacher for vertical {self._describe(v)}, which "
                    "this batch's labels need."))
    indices, values = [parts[0]], [empty(tf.size(parts[0]))]
    with tf.control_dependencies(checks):
      for v in range(self.num_verticals):
        slot_positions = parts[v + 1]
        indices.append(slot_positions)
        if v not in self._teachers:
          values.append(empty(tf.size(slot_positions)))
          continue
        rows = slot_positions // t
        values.append(per_teacher(v, rows, self._run_teacher(v, images, rows)))
    stitched = [
        tf.dynamic_stitch(indices, [vals[i] for vals in values])
        for i in range(len(values[0]))
    ]
    return slots, stitched

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
    k = self.top_k
    if self._shared is not None:
      ids, probs = self._shared_soft_targets(images, label_ids)
      return tf.stop_gradient(ids), tf.stop_gradient(probs)

    def per_teacher(v, rows, logits):
      del rows
      return list(soft_targets_lib.top_k_soft_targets(
          logits, self._class_ids[v], k, self.temperature))

    def empty(r):
      return [tf.fill([r, k], soft_targets_lib.PAD_ID),
              tf.zeros([r, k], tf.float32)]

    batch = tf.shape(label_ids)[0]
    _, (ids, probs) = self._routed(images, label_ids, per_teacher, empty)
    width = self.target_width
    ids = tf.ensure_shape(tf.reshape(ids, [batch, width]), [None, width])
    probs = tf.ensure_shape(tf.reshape(probs, [batch, width]), [None, width])
    return tf.stop_gradient(ids), tf.stop_gradient(probs)

  def _shared_logits(self, images):
    """All teachers' logits at once, float32 [B, N]: phi(x) W + b."""
    trunk, kernel, bias = self._shared
    features = tf.cast(trunk.classifier_inputs(images, training=False),
                       tf.float32)
    return tf.matmul(features, kernel) + bias

  def _slot_class_mask(self, label_ids):
    """[B, T, N] bool: class c belongs to the vertical of slot (i, s)."""
    slots = self._slots(label_ids)
    c2v = tf.constant(self.class_to_vertical)
    return tf.equal(c2v[None, None, :], slots[:, :, None])

  def _shared_soft_targets(self, images, label_ids):
    """`soft_targets` on the shared-trunk path (same values and order).

    Classes outside a slot's vertical get probability -1, below any sigmoid,
    so top_k over all N classes keeps the vertical's top K' = min(K, N_v)
    first (ties: lower class id first, as per teacher); the rest are padding.
    """
    k = self.top_k
    probs = tf.sigmoid(self._shared_logits(images) / self.temperature)
    masked = tf.where(self._slot_class_mask(label_ids), probs[:, None, :], -1.0)
    kept = min(k, self.num_classes)
    top, idx = tf.math.top_k(masked, k=kept, sorted=True)
    valid = top >= 0.0
    ids = tf.where(valid, idx, soft_targets_lib.PAD_ID)
    top = tf.where(valid, top, 0.0)
    pad = [[0, 0], [0, 0], [0, k - kept]]
    ids = tf.pad(ids, pad, constant_values=soft_targets_lib.PAD_ID)
    top = tf.pad(top, pad, constant_values=0.0)
    width = self.target_width
    batch = tf.shape(label_ids)[0]
    ids = tf.ensure_shape(tf.reshape(ids, [batch, width]), [None, width])
    top = tf.ensure_shape(tf.reshape(top, [batch, width]), [None, width])
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
    if self._shared is not None:
      in_slots = tf.reduce_any(self._slot_class_mask(label_ids), axis=1)
      return tf.where(in_slots, tf.sigmoid(self._shared_logits(images)),
                      tf.cast(floor, tf.float32))
    batch = tf.shape(label_ids)[0]
    rows_and_probs = []

    def per_teacher(v, rows, logits):
      probs = tf.sigmoid(logits)
      rows_and_probs.append((v, rows, probs))
      return [tf.zeros([tf.shape(rows)[0]], tf.int32)]

    def empty(r):
      return [tf.zeros([r], tf.int32)]

    self._routed(images, label_ids, per_teacher, empty)
    scores = tf.fill([batch, self.num_classes], tf.cast(floor, tf.float32))
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
