"""Tests for average precision against hand-computed values."""

import numpy as np
import tensorflow as tf

from kc_keras.metrics import average_precision as ap_lib


class AveragePrecisionTest(tf.test.TestCase):

  def test_tie_free(self):
    # Ranks 1..5, positives at ranks 1, 3, 5: precisions 1/1, 2/3, 3/5.
    ap = ap_lib.average_precision([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 1])
    self.assertAllClose(ap, (1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 3.0)

  def test_input_order_does_not_matter(self):
    ap = ap_lib.average_precision([0.6, 0.9, 0.5, 0.8, 0.7], [0, 1, 1, 0, 1])
    self.assertAllClose(ap, (1.0 + 2.0 / 3.0 + 3.0 / 5.0) / 3.0)

  def test_ties_take_precision_at_end_of_group(self):
    # The positive ties with two negatives at the top: precision 1/3 whatever
    # the positive's input position.
    self.assertAllClose(ap_lib.average_precision([0.5, 0.5, 0.5], [1, 0, 0]),
                        1.0 / 3.0)
    self.assertAllClose(ap_lib.average_precision([0.5, 0.5, 0.5], [0, 0, 1]),
                        1.0 / 3.0)
    # Group {a+, b-} at the top, then c+: precisions 1/2 and 2/3.
    self.assertAllClose(
        ap_lib.average_precision([0.9, 0.9, 0.1], [0, 1, 1]),
        (0.5 + 2.0 / 3.0) / 2.0)

  def test_no_positive_is_nan(self):
    self.assertTrue(np.isnan(ap_lib.average_precision([0.3, 0.1], [0, 0])))

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, "equal 1-D"):
      ap_lib.average_precision([0.1, 0.2], [1])
    with self.assertRaisesRegex(ValueError, "index 1"):
      ap_lib.average_precision([0.1, np.nan], [1, 0])


if __name__ == "__main__":
  tf.test.main()
