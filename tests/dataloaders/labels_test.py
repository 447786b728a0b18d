"""Tests for kc_keras.dataloaders.labels."""

import numpy as np
import tensorflow as tf

from kc_keras.dataloaders import labels


class LabelsTest(tf.test.TestCase):

  def test_multi_hot_dense_reference(self):
    ids = np.array([[2, -1, -1], [0, 3, 0], [-1, -1, -1]], np.int32)
    expected = np.array([[0, 0, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0]], np.float32)
    out = labels.multi_hot(ids, 4)
    self.assertEqual(out.dtype, tf.float32)
    self.assertAllEqual(out, expected)
    graph = tf.function(lambda x: labels.multi_hot(x, 4),
                        input_signature=[tf.TensorSpec([None, 3], tf.int32)])
    self.assertAllEqual(graph(ids), expected)

  def test_check_label_ids(self):
    self.assertAllEqual(labels.check_label_ids([[1, -1]], 3), [[1, -1]])
    with self.assertRaisesRegex(ValueError, r"outside 0..2.*: -2, 3, 7"):
      labels.check_label_ids([[3, -1], [-2, 7]], 3)
    with self.assertRaisesRegex(ValueError, "integers"):
      labels.check_label_ids([0.5], 3)

  def test_assert_label_ids_in_tf_data(self):
    ds = tf.data.Dataset.from_tensor_slices(np.array([[0, -1], [5, 1]], np.int32))
    ds = ds.map(lambda x: labels.assert_label_ids(x, 4, source="my_labels"))
    it = iter(ds)
    self.assertAllEqual(next(it), [0, -1])
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "my_labels.*outside 0..3"):
      next(it)

  def test_pad_label_ids(self):
    self.assertAllEqual(labels.pad_label_ids(tf.constant([4, 2]), 3), [4, 2, -1])
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "more labels than"):
      labels.pad_label_ids(tf.constant([1, 2, 3]), 2)


if __name__ == "__main__":
  tf.test.main()
