"""Frozen-trunk teachers: one trunk pass and one [d, N] classifier, by fingerprint."""

import hashlib

import numpy as np

# `TeacherBank` layout of teachers that are one frozen trunk plus their own
# classifiers (`task.specialists.freeze: backbone_and_hidden`).
LAYOUT = "shared_trunk"


def trunk_weights(teacher):
  """The weights below the classifier of an FC-FC `HierarchicalClassifier`.

  Args:
    teacher: a `HierarchicalClassifier`.

  Returns:
    The backbone's, then the head's hidden layers' weights, in layer order.
  """
  return (teacher.backbone.weights + teacher.head.hidden1.weights +
          teacher.head.hidden2.weights)


def trunk_fingerprint(teacher):
  """A sha256 hex digest of the trunk's weights (shapes, dtypes, values).

  Weight paths are left out on purpose: two teachers hold the same trunk
  when their values agree, whatever their layers are named.

  Args:
    teacher: a built `HierarchicalClassifier`.

  Returns:
    64-character hex string.

  Raises:
    ValueError: the teacher has no trunk weights (not built).
  """
  weights = trunk_weights(teacher)
  if not weights:
    raise ValueError(f"Teacher {teacher.name!r} has no trunk weights; build "
                     "it before fingerprinting.")
  digest = hashlib.sha256()
  for weight in weights:
    value = np.ascontiguousarray(np.asarray(weight.numpy()))
    digest.update(str(value.shape).encode())
    digest.update(str(value.dtype).encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def check_shared_trunk_teacher(teacher, num_vertical_classes, describe):
  """Raises unless the shared-trunk path can run `teacher` (FC-FC, no scaling).

  Args:
    teacher: the teacher model.
    num_vertical_classes: N_v, the width its classifier must have.
    describe: the vertical, as error messages name it.

  Raises:
    ValueError: not a `HierarchicalClassifier` with an FC-FC head, no
      self-paced scaling and an N_v-wide classifier, naming the vertical.
  """
  head = getattr(teacher, "head", None)
  scale = getattr(teacher, "self_paced", None)
  if getattr(teacher, "backbone", None) is None or head is None:
    raise ValueError(
        f"layout='{LAYOUT}': the teacher of vertical {describe} is not a "
        "HierarchicalClassifier (no backbone and head).")
  if getattr(head, "head_type", None) != "fc_fc":
    raise ValueError(
        f"layout='{LAYOUT}': the teacher of vertical {describe} has head_type "
        f"{getattr(head, 'head_type', None)!r}; the shared trunk needs "
        "'fc_fc'.")
  if getattr(scale, "mode", None) != "none":
    raise ValueError(
        f"layout='{LAYOUT}': the teacher of vertical {describe} has self-paced "
        f"mode {getattr(scale, 'mode', None)!r}; the shared trunk needs "
        "'none'.")
  if int(head.classifier.units) != num_vertical_classes:
    raise ValueError(
        f"layout='{LAYOUT}': the teacher of vertical {describe} has "
        f"{int(head.classifier.units)} outputs; its vertical has "
        f"{num_vertical_classes} classes.")


def shared_trunk_classifier(teachers, class_ids_of, num_classes, describe,
                            expected_fingerprint=None):
  """One trunk and one [d, N] classifier for teachers said to share a trunk.

  Teachers made the frozen-trunk way (`freeze: backbone_and_hidden`) share
  their backbone and hidden layers and differ only in their dense
  classifier: T_v(x) = phi(x) W_v + b_v with one phi for all teachers. The
  classifiers concatenate into W [d, N] (column c = class c, from its
  vertical's teacher; zero for a vertical without a teacher), so every
  teacher's logits for a batch cost one trunk pass and one matmul.

  The claim is checked, not detected: each teacher's `trunk_fingerprint`
  must equal `expected_fingerprint` (the one recorded when the teachers were
  trained), or, without one, the lowest vertical's.

  Args:
    teachers: dict vertical id -> teacher model (at least one).
    class_ids_of: dict vertical id -> int array of its global class ids.
    num_classes: N.
    describe: fn(vertical id) -> the vertical as messages name it.
    expected_fingerprint: the recorded trunk fingerprint, or None.

  Returns:
    (trunk teacher, kernel float32 [d, N], bias float32 [N]).

  Raises:
    ValueError: a teacher the path cannot run, or whose trunk differs,
      naming its vertical.
  """
  for v, teacher in teachers.items():
    check_shared_trunk_teacher(teacher, class_ids_of[v].size, describe(v))
  first_v = min(teachers)
  expected = expected_fingerprint or trunk_fingerprint(teachers[first_v])
  source = ("the recorded shared trunk" if expected_fingerprint else
            f"the trunk of vertical {describe(first_v)}")
  for v, teacher in teachers.items():
    found = trunk_fingerprint(teacher)
    if found != expected:
      raise ValueError(
          f"layout='{LAYOUT}': the trunk of the teacher of vertical "
          f"{describe(v)} (fingerprint {found[:12]}) is not {source} "
          f"({expected[:12]}); retrain it on that trunk or use "
          "layout='stacked'.")
  first = teachers[first_v]
  width = int(first.head.classifier.kernel.shape[0])
  kernel = np.zeros((width, num_classes), np.float32)
  bias = np.zeros((num_classes,), np.float32)
  for v, teacher in teachers.items():
    classifier = teacher.head.classifier
    kernel[:, class_ids_of[v]] = np.asarray(classifier.kernel)
    if classifier.use_bias:
      bias[class_ids_of[v]] = np.asarray(classifier.bias)
  return first, kernel, bias
