"""Tests for export.parity_lib: the parity numbers and timings against hand-computed values."""

import numpy as np
import pytest

import export_test_utils
from export import parity_lib
from kc_keras.dataloaders import factory


def test_compare_hand_computed():
  reference = np.array([[3.0, 1.0, 0.0],
                        [0.0, 2.0, 1.9],
                        [0.5, 0.0, 1.0],
                        [1.0, 0.0, -1.0]], np.float32)
  logits = np.array([[2.9, 1.0, 0.0],    # same top-1
                     [0.0, 1.9, 2.0],    # flipped: ref top-1 is 2nd
                     [0.5, 1.2, 1.0],    # ref top-1 (2) is 2nd
                     [-1.0, 0.0, 1.0]],  # ref top-1 (0) is 3rd
                    np.float32)
  row = parity_lib.compare("x", logits, reference, 2048, 1.5, 640.0)
  assert row.top1_agreement == 0.25
  assert row.top1_in_top2 == 0.75
  np.testing.assert_allclose(row.max_logit_diff, 2.0)
  fp32 = parity_lib.compare(parity_lib.FP32_VARIANT, reference, reference,
                            8192, 2.0, 100.0)
  table = parity_lib.markdown_table([fp32, row]).splitlines()
  assert table[0].endswith("| throughput (batch 32) |")
  assert table[3] == (
      "| x | 25.00% | 75.00% | 2.00e+00 | 2.0 KiB | 0.250x | 1.500 ms | "
      "640 img/s |")


def test_top1_accuracy_against_labels_hand_computed():
  reference = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
  logits = np.array([[2.0, 1.0, 0.0],    # top-1 0, label 0: right
                     [0.0, 1.0, 2.0],    # top-1 2, labels {1, 2}: right
                     [0.0, 2.0, 1.0],    # top-1 1, label 2: wrong
                     [0.0, 1.0, 2.0]],   # top-1 2, label 0: wrong
                    np.float32)
  label_ids = np.array([[0, -1], [1, 2], [2, -1], [0, -1]], np.int32)
  row = parity_lib.compare("x", logits, reference, 10, 1.0, 1.0,
                           label_ids=label_ids)
  assert row.top1_accuracy == 0.5
  assert parity_lib.compare("x", logits, reference, 10, 1.0,
                            1.0).top1_accuracy is None
  unlabeled = parity_lib.compare("y", reference, reference, 10, 1.0, 1.0)
  table = parity_lib.markdown_table([row, unlabeled]).splitlines()
  assert table[0].startswith("| variant | top-1 (labels) | top-1 agreement |")
  assert table[1] == "|---" * 9 + "|"
  assert table[2].startswith("| x | 50.00% | 25.00% |")
  assert table[3].startswith("| y | - | 100.00% |")
  # Without labels the table keeps its eight columns.
  assert "labels" not in parity_lib.markdown_table([unlabeled])


def test_eval_labels_follow_their_images_across_batches():
  params = export_test_utils.smoke_params()
  images, labels = parity_lib.eval_images_and_labels(params, 5, 2)
  whole, whole_labels = parity_lib.eval_images_and_labels(params, 5, 5)
  assert images.shape[0] == 5 and labels.shape[0] == 5
  np.testing.assert_array_equal(images, whole)
  np.testing.assert_array_equal(labels, whole_labels)
  np.testing.assert_array_equal(parity_lib.eval_images(params, 5, 2), images)
  num_classes = factory.build_source(params.task.data).hierarchy.num_classes
  assert ((labels >= 0) & (labels < num_classes) | (labels == -1)).all()
  assert (labels[:, 0] >= 0).all()


def test_size_ratio_without_fp32_row():
  row = parity_lib.compare("keras", np.eye(2), np.eye(2), 0, 1.0, 1.0)
  assert "| - | - | 1.000 ms |" in parity_lib.markdown_table([row])


class FakeClock:
  """A clock that advances by the duration of the batch the last call saw."""

  def __init__(self, ms_per_image):
    self.now = 0.0
    self.ms_per_image = ms_per_image
    self.calls = []

  def clock(self):
    return self.now

  def fn(self, x):
    self.calls.append(len(x))
    self.now += self.ms_per_image[len(x)] / 1000.0


def test_time_variant_medians_after_warmup():
  images = np.zeros((40, 2, 2, 1), np.float32)
  fake = FakeClock({1: 2.0, 32: 16.0})
  timing = parity_lib.time_variant(fake.fn, images, latency_images=5,
                                   batch_size=32, repeats=4, warmup=2,
                                   clock=fake.clock)
  assert timing.latency_ms == pytest.approx(2.0)
  assert timing.throughput == pytest.approx(32 / 0.016)  # 2000 img/s
  # Warm-up calls of each shape come before that shape's timed calls.
  assert fake.calls == [1] * (2 + 5) + [32] * (2 + 4)


def test_call_times_and_median_ignore_warmup_and_an_outlier():
  durations_ms = iter([900.0, 1.0, 50.0, 1.0, 1.0, 2.0])  # first: warm-up
  state = {"now": 0.0}

  def fn(_):
    state["now"] += next(durations_ms) / 1000.0

  times = parity_lib.call_times_ms(fn, [np.zeros(1)] * 5, warmup=1,
                                   clock=lambda: state["now"])
  np.testing.assert_allclose(times, [1.0, 50.0, 1.0, 1.0, 2.0])
  assert float(np.median(times)) == pytest.approx(1.0)


def test_time_variant_rejects_bad_counts():
  images = np.zeros((8, 2, 2, 1), np.float32)
  with pytest.raises(ValueError, match="needs that many images, got 8"):
    parity_lib.time_variant(lambda x: x, images, 4, batch_size=32)
  with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
    parity_lib.time_variant(lambda x: x, images, 4, batch_size=4, repeats=0)
