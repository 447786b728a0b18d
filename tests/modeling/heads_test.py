"""Tests for ClassificationHead: parameter formulas, numbers, gradients."""

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

import kc_test_case
from kc_keras.modeling import heads

EVEN = [0, 0, 1, 1, 2, 2]
UNEVEN = [0, 3, 3, 1, 3, 0, 2, 3, 3, 3, 1]  # sizes 2, 2, 1, 6


class ExpectedParamsTest(tf.test.TestCase, parameterized.TestCase):

  def test_paper_sizes(self):
    # s_b = 1024, s1 = 4096, s2 = 512, N = 100K, M = 20 (METHOD.md section 2).
    args = dict(feature_dim=1024, s1=4096, s2=512, num_classes=100_000,
                num_verticals=20)
    fc_fc = 1024 * 4096 + 4096 * 512 + 512 * 100_000
    self.assertEqual(heads.expected_head_params("fc_fc", **args), fc_fc)
    self.assertEqual(
        heads.expected_head_params("fc_sc", **args),
        1024 * 4096 + 20 * 4096 * 512 + 512 * 100_000,
    )
    self.assertEqual(
        heads.expected_head_params("fc_sc", shared_units=128, **args),
        1024 * 4096 + 4096 * 128 + 20 * 4096 * 384 + 512 * 100_000,
    )
    # x = s2: every unit shared, the FC-FC count again.
    self.assertEqual(
        heads.expected_head_params("fc_sc", shared_units=512, **args), fc_fc
    )
    self.assertEqual(
        heads.expected_head_params("sc_sc", **dict(args, s1=512)),
        1024 * 512 * 20 + 20 * 512 * 512 + 512 * 100_000,
    )

  @parameterized.parameters(
      (dict(head_type="fc"), "head_type"),
      (dict(shared_units=9), "shared_units"),
      (dict(head_type="sc_sc", shared_units=2), "needs head_type 'fc_sc'"),
      (dict(s1=0), "s1 must be >= 1"),
  )
  def test_bad_args(self, kwargs, message):
    args = dict(head_type="fc_sc", feature_dim=4, s1=4, s2=8, num_classes=6,
                num_verticals=3)
    args.update(kwargs)
    with self.assertRaisesRegex(ValueError, message):
      heads.expected_head_params(**args)


class ClassificationHeadTest(kc_test_case.TestCase):

  @parameterized.named_parameters(
      ("fc_fc", "fc_fc", 0), ("fc_sc", "fc_sc", 0),
      ("fc_sc_shared", "fc_sc", 2), ("sc_sc", "sc_sc", 0))
  def test_layer_harness(self, head_type, shared_units):
    x = np.random.default_rng(7).normal(size=(4, 5)).astype(np.float32)
    self.run_layer_test(
        heads.ClassificationHead,
        dict(class_to_vertical=UNEVEN, head_type=head_type, s1=6, s2=4,
             shared_units=shared_units, activation="tanh", dropout=0.1,
             chunk_size=3),
        x, (4, len(UNEVEN)), call_kwargs=dict(training=False))

  @parameterized.named_parameters(
      ("fc_fc_even", "fc_fc", EVEN, 0),
      ("fc_sc_even", "fc_sc", EVEN, 0),
      ("sc_sc_even", "sc_sc", EVEN, 0),
      ("fc_sc_x_even", "fc_sc", EVEN, 3),
      ("fc_fc_uneven", "fc_fc", UNEVEN, 0),
      ("fc_sc_uneven", "fc_sc", UNEVEN, 0),
      ("sc_sc_uneven", "sc_sc", UNEVEN, 0),
      ("fc_sc_x_uneven", "fc_sc", UNEVEN, 5),
      ("fc_sc_all_shared", "fc_sc", UNEVEN, 8),
  )
  def test_param_count_equals_formula(self, head_type, c2v, shared_units):
    head = heads.ClassificationHead(
        c2v, head_type=head_type, s1=7, s2=8, shared_units=shared_units,
        chunk_size=2,
    )
    out = head(tf.zeros((2, 5)))
    self.assertEqual(out.shape, (2, len(c2v)))
    expected = heads.expected_head_params(
        head_type, 5, 7, 8, len(c2v), max(c2v) + 1, shared_units
    )
    self.assertEqual(head.kernel_param_count(), expected)
    self.assertEqual(head.expected_param_count(), expected)

  def test_fc_sc_matches_numpy(self):
    rng = np.random.default_rng(0)
    head = heads.ClassificationHead(
        UNEVEN, head_type="fc_sc", s1=6, s2=4, shared_units=1, chunk_size=4
    )
    x = rng.normal(size=(3, 5)).astype(np.float32)
    head.build(x.shape)
    for w in head.weights:  # non-zero biases so they are checked too.
      w.assign(rng.normal(size=w.shape).astype(np.float32))
    out = head(x).numpy()
    relu = lambda a: np.maximum(a, 0.0)
    h1 = relu(x @ head.hidden1.kernel.numpy() + head.hidden1.bias.numpy())
    sc2 = head.hidden2
    shared = h1 @ sc2.shared_kernel.numpy() + sc2.shared_bias.numpy()
    own = np.einsum("bd,mdu->bmu", h1, sc2.kernel.numpy()) + sc2.bias.numpy()
    h2 = relu(np.concatenate(
        [np.repeat(shared[:, None], 4, axis=1), own], axis=-1))
    w, b = head.classifier.kernel.numpy(), head.classifier.bias.numpy()
    expected = np.stack(
        [np.einsum("bs,s->b", h2[:, v], w[c]) + b[c]
         for c, v in enumerate(UNEVEN)], axis=1)
    self.assertAllClose(out, expected, atol=1e-4)

  def test_dropout_only_in_training(self):
    head = heads.ClassificationHead(EVEN, s1=16, s2=8, dropout=0.5)
    x = tf.random.normal((2, 5))
    self.assertAllClose(head(x, training=False), head(x, training=False))
    self.assertNotAllClose(head(x, training=True), head(x, training=False))

  def test_names_and_config(self):
    head = heads.ClassificationHead(
        UNEVEN, head_type="fc_sc", s1=6, s2=4, shared_units=2, dropout=0.1,
        chunk_size=3, activation="gelu",
    )
    self.assertEqual(head.name, "kc_head")
    head.build((None, 5))
    paths = sorted(w.path for w in head.weights)
    self.assertIn("kc_head/sc2/shared_kernel", paths)
    self.assertIn("kc_head/classifier/kernel", paths)

  def test_bad_dropout(self):
    with self.assertRaisesRegex(ValueError, "dropout must be in"):
      heads.ClassificationHead(EVEN, dropout=1.0)

  @pytest.mark.slow
  def test_100k_classes_fc_sc_forward_backward(self):
    # N = 100K, M = 20, FC(1024)-SC(512, x=128), batch 4: ~64M kernel weights.
    c2v = np.random.default_rng(0).integers(0, 20, size=100_000)
    head = heads.ClassificationHead(c2v, head_type="fc_sc", s1=1024, s2=512,
                                    shared_units=128)
    x = tf.random.normal((4, 64))
    with tf.GradientTape() as tape:
      logits = head(x)
      loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
          tf.zeros_like(logits), logits))
    grads = tape.gradient(loss, head.trainable_weights)
    self.assertEqual(logits.shape, (4, 100_000))
    self.assertTrue(all(g is not None for g in grads))
    self.assertEqual(
        head.kernel_param_count(),
        heads.expected_head_params("fc_sc", 64, 1024, 512, 100_000, 20, 128),
    )


if __name__ == "__main__":
  tf.test.main()
