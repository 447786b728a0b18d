"""Tests for the per-vertical logit statistics against hand-computed values."""

import numpy as np
import tensorflow as tf

from kc_keras.metrics import vertical_logit_statistics as stats_lib

# Classes 0, 1 in vertical 0; classes 2, 3, 4 in vertical 1.
CLASS_TO_VERTICAL = [0, 0, 1, 1, 1]
LOGITS = np.array([
    [3.0, -1.0, -4.0, -6.0, -8.0],   # label 0 (vertical 0)
    [1.0, 2.0, -5.0, -5.0, -2.0],    # label 0 (vertical 0), wrong within v0
    [-7.0, -9.0, 0.0, 4.0, -4.0],    # label 3 (vertical 1)
])
LABELS = np.array([0, 0, 3])


class VerticalLogitStatisticsTest(tf.test.TestCase):

  def test_hand_computed(self):
    v0, v1 = stats_lib.vertical_logit_statistics(LOGITS, LABELS, CLASS_TO_VERTICAL)
    self.assertEqual((v0["num_classes"], v0["num_own_images"]), (2, 2))
    self.assertAllClose(v0["own_mean"], (3 - 1 + 1 + 2) / 4)
    self.assertAllClose(v0["own_spread"], (2.0 + 0.5) / 2)  # std of [3,-1], [1,2]
    self.assertAllClose(v0["own_true"], (3.0 + 1.0) / 2)
    self.assertAllClose(v0["own_best_other"], (-1.0 + 2.0) / 2)
    self.assertAllClose(v0["own_top1"], 0.5)
    self.assertAllClose(v0["own_norm"], (np.sqrt(10) + np.sqrt(5)) / 2)
    # 2 * mean^2 / ||b||^2: [3, -1] -> 2 * 1 / 10, [1, 2] -> 2 * 2.25 / 5.
    self.assertAllClose(v0["own_offset_share"], (0.2 + 0.9) / 2)
    self.assertAllClose(v0["other_mean"], -8.0)
    self.assertAllClose(v0["other_max"], -7.0)
    self.assertAllClose(v0["other_norm"], np.sqrt(130))
    self.assertEqual((v1["num_classes"], v1["num_own_images"]), (3, 1))
    self.assertAllClose(v1["own_true"], 4.0)
    self.assertAllClose(v1["own_best_other"], 0.0)
    self.assertAllClose(v1["own_top1"], 1.0)
    self.assertAllClose(v1["other_mean"], (-4 - 6 - 8 - 5 - 5 - 2) / 6)
    self.assertAllClose(v1["other_max"], (-4.0 + -2.0) / 2)

  def test_vertical_without_own_images_is_nan(self):
    (v0, v1) = stats_lib.vertical_logit_statistics(
        LOGITS[:2], LABELS[:2], CLASS_TO_VERTICAL)
    self.assertEqual(v1["num_own_images"], 0)
    self.assertTrue(np.isnan(v1["own_true"]) and np.isnan(v1["own_top1"]))
    self.assertAllClose(v1["other_max"], (-4.0 + -2.0) / 2)
    self.assertTrue(np.isnan(v0["other_mean"]))

  def test_bad_input_is_named(self):
    with self.assertRaisesRegex(ValueError, r"\[B, N=5\]"):
      stats_lib.vertical_logit_statistics(LOGITS[:, :4], LABELS, CLASS_TO_VERTICAL)
    with self.assertRaisesRegex(ValueError, "2 labels for 3 rows"):
      stats_lib.vertical_logit_statistics(LOGITS, LABELS[:2], CLASS_TO_VERTICAL)
    with self.assertRaisesRegex(ValueError, r"class ids in \[0, 5\)"):
      stats_lib.vertical_logit_statistics(LOGITS, [0, 0, 7], CLASS_TO_VERTICAL)


if __name__ == "__main__":
  tf.test.main()
