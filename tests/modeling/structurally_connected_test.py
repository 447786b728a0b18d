"""Tests for the structurally connected layers against numpy loop references."""

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

import kc_test_case
from kc_keras.modeling.layers import structurally_connected as sc
from kc_keras.quantization import integer_forms

# Uneven verticals, classes interleaved across verticals: sizes 4, 1, 6.
UNEVEN = [2, 0, 2, 1, 0, 2, 2, 0, 2, 0, 2]


def loop_reference(h, kernel, bias, class_to_vertical):
  """logit[b, c] = h[b, v(c)] . W[c] + bias[c], one class at a time."""
  out = np.zeros((h.shape[0], len(class_to_vertical)))
  for b in range(h.shape[0]):
    for c, v in enumerate(class_to_vertical):
      out[b, c] = np.dot(h[b, v], kernel[c]) + bias[c]
  return out


class ChunkLayoutTest(tf.test.TestCase, parameterized.TestCase):

  def test_hand_computed_layout(self):
    gather_index, chunk_vertical, position = sc.chunk_layout(
        [0, 0, 1, 2, 2, 2, 1, 0, 2], chunk_size=2
    )
    # v0: classes 0,1,7 -> chunks [0,1],[7,pad]; v1: [2,6]; v2: [3,4],[5,8].
    self.assertAllEqual(gather_index, [0, 1, 7, 0, 2, 6, 3, 4, 5, 8])
    self.assertAllEqual(chunk_vertical, [0, 0, 1, 2, 2])
    self.assertAllEqual(position, [0, 1, 4, 6, 7, 8, 5, 2, 9])

  @parameterized.parameters(1, 2, 3, 4, 6, 7, 16)
  def test_layout_round_trip(self, chunk_size):
    gather_index, chunk_vertical, position = sc.chunk_layout(UNEVEN, chunk_size)
    self.assertAllEqual(gather_index[position], np.arange(len(UNEVEN)))
    slot_vertical = np.repeat(chunk_vertical, chunk_size)
    self.assertAllEqual(slot_vertical[position], UNEVEN)
    # Padding slots read a row of their own vertical.
    self.assertAllEqual(np.asarray(UNEVEN)[gather_index], slot_vertical)
    self.assertLen(set(position.tolist()), len(UNEVEN))

  def test_auto_chunk_size(self):
    c2v = np.repeat(np.arange(20), 5000)  # N = 100K, M = 20
    self.assertEqual(sc.auto_chunk_size(c2v), 512)  # 100K / 160 = 625
    self.assertEqual(sc.auto_chunk_size([0, 1, 1, 2]), 1)
    self.assertEqual(sc.auto_chunk_size(np.repeat([0, 1], [3, 200])), 16)

  def test_bad_chunk_size(self):
    with self.assertRaisesRegex(ValueError, "chunk_size must be a positive"):
      sc.chunk_layout([0, 1], 0)


# Each vertical's classes consecutive (the contiguous form): in vertical
# order, in another order, one vertical, a vertical without classes.
CONTIGUOUS = {
    "sorted": [0, 0, 1, 1, 1, 2],
    "runs_out_of_order": [2, 2, 0, 1, 1, 1, 1],
    "one_vertical": [0, 0, 0],
    "empty_vertical": [0, 0, 2, 2, 2],
}


class VerticalRunsTest(tf.test.TestCase):

  def test_hand_computed_runs(self):
    self.assertEqual(sc.vertical_runs([2, 2, 0, 1, 1, 1, 1]),
                     [(2, 2), (0, 1), (1, 4)])
    self.assertEqual(sc.vertical_runs([0]), [(0, 1)])
    self.assertEqual(sc.vertical_runs(UNEVEN)[:3], [(2, 1), (0, 1), (2, 1)])

  def test_contiguous_only_when_no_vertical_repeats(self):
    for c2v in CONTIGUOUS.values():
      self.assertTrue(sc.StructurallyConnectedClassifier(c2v).contiguous, c2v)
    for c2v in (UNEVEN, [0, 1, 0], [0, 3, 3, 0, 1]):
      self.assertFalse(sc.StructurallyConnectedClassifier(c2v).contiguous, c2v)


class StructurallyConnectedClassifierTest(kc_test_case.TestCase):

  # The harness checks the integer-friendly form too: the depthwise one up
  # to its width limit, the chunked one beyond it (for a contiguous map
  # `call` splits the kernel per vertical instead: the harness compares
  # the two forms).
  @parameterized.named_parameters(
      ("batch_matmul", 5, True), ("depthwise_no_bias", 3, False),
      ("wide", integer_forms.DEPTHWISE_MAX_UNITS + 1, True),
      ("wide_contiguous", integer_forms.DEPTHWISE_MAX_UNITS + 1, True,
       CONTIGUOUS["runs_out_of_order"]),
      ("depthwise_contiguous", 4, True, CONTIGUOUS["sorted"]))
  def test_layer_harness(self, units, use_bias, c2v=UNEVEN):
    h = np.random.default_rng(5).normal(
        size=(2, max(c2v) + 1, units)).astype(np.float32)
    layer, _ = self.run_layer_test(
        sc.StructurallyConnectedClassifier,
        dict(class_to_vertical=c2v, chunk_size=3, use_bias=use_bias,
             bias_initializer="random_normal"),
        h, (2, len(c2v)))
    self.assertEqual(layer.count_params(), (units + use_bias) * len(c2v))

  @parameterized.named_parameters(
      ("auto", UNEVEN, None),
      ("divides", [0, 0, 1, 1, 1, 1, 2, 2], 2),
      ("does_not_divide", UNEVEN, 4),
      ("one", UNEVEN, 1),
      ("larger_than_verticals", UNEVEN, 8),
      ("empty_vertical", [0, 3, 3, 0, 1], 2),
  )
  def test_matches_references(self, c2v, chunk_size):
    rng = np.random.default_rng(0)
    num_verticals, units = max(c2v) + 1, 5
    layer = sc.StructurallyConnectedClassifier(
        c2v, chunk_size=chunk_size, bias_initializer="random_normal"
    )
    h = rng.normal(size=(3, num_verticals, units)).astype(np.float32)
    out = layer(h)
    self.assertEqual(layer.name, "kc_sc_classifier")
    self.assertEqual(out.shape, (3, len(c2v)))
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    self.assertEqual(kernel.shape, (len(c2v), units))
    expected = loop_reference(h, kernel, bias, c2v)
    self.assertAllClose(out, expected, atol=1e-5)

  def test_gradient_matches_dense(self):
    # d sum(logits * r) / dW[c] = sum_b r[b, c] h[b, v(c)]; padding adds none.
    rng = np.random.default_rng(1)
    layer = sc.StructurallyConnectedClassifier(UNEVEN, chunk_size=4)
    h = rng.normal(size=(2, 3, 4)).astype(np.float32)
    r = rng.normal(size=(2, len(UNEVEN))).astype(np.float32)
    layer.build(h.shape)
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(h) * r)
    grad = tf.convert_to_tensor(tape.gradient(loss, layer.kernel))
    expected = np.einsum("bc,bcs->cs", r, h[:, UNEVEN, :])
    self.assertAllClose(grad, expected, atol=1e-5)

  @parameterized.parameters(1, 3, 4, 16)
  def test_input_gradient_matches_loop(self, chunk_size):
    # d sum(logits * r) / dh[b, v] = sum_{c in v} r[b, c] W[c].
    rng = np.random.default_rng(2)
    layer = sc.StructurallyConnectedClassifier(UNEVEN, chunk_size=chunk_size)
    h = tf.constant(rng.normal(size=(2, 3, 4)).astype(np.float32))
    r = rng.normal(size=(2, len(UNEVEN))).astype(np.float32)
    with tf.GradientTape() as tape:
      tape.watch(h)
      loss = tf.reduce_sum(layer(h) * r)
    grad = tape.gradient(loss, h)
    kernel = layer.kernel.numpy()
    expected = np.zeros((2, 3, 4), np.float32)
    for c, v in enumerate(UNEVEN):
      expected[:, v] += r[:, c:c + 1] * kernel[c]
    self.assertAllClose(grad, expected, atol=1e-5)

  @parameterized.named_parameters(*CONTIGUOUS.items())
  def test_contiguous_form_matches_the_chunked_form_and_the_loop(self, c2v):
    """Logits, kernel, bias and input gradients of `call` (split per vertical)."""
    rng = np.random.default_rng(3)
    num_verticals, units, batch = max(c2v) + 1, 6, 3
    layer = sc.StructurallyConnectedClassifier(
        c2v, chunk_size=2, bias_initializer="random_normal")
    h = tf.constant(rng.normal(size=(batch, num_verticals, units)),
                    tf.float32)
    r = tf.constant(rng.normal(size=(batch, len(c2v))), tf.float32)
    layer.build(h.shape)
    self.assertTrue(layer.contiguous)
    results = {}
    for name, form in (("call", layer), ("chunked", layer.chunked_logits)):
      with tf.GradientTape() as tape:
        tape.watch(h)
        logits = form(h)
        loss = tf.reduce_sum(logits * r)
      grads = tape.gradient(loss, [h, layer.kernel, layer.bias])
      results[name] = [logits] + [tf.convert_to_tensor(g) for g in grads]
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    self.assertAllClose(results["call"][0],
                        loop_reference(h.numpy(), kernel, bias, c2v),
                        atol=1e-5)
    # dW[c] = sum_b r[b, c] h[b, v(c)]; dh[b, v] = sum_{c in v} r[b, c] W[c].
    self.assertAllClose(results["call"][2],
                        np.einsum("bc,bcs->cs", r, h.numpy()[:, c2v, :]),
                        atol=1e-5)
    expected_dh = np.zeros((batch, num_verticals, units), np.float32)
    for c, v in enumerate(c2v):
      expected_dh[:, v] += r.numpy()[:, c:c + 1] * kernel[c]
    self.assertAllClose(results["call"][1], expected_dh, atol=1e-5)
    for a, b in zip(results["call"], results["chunked"]):
      self.assertAllClose(a, b, atol=1e-5)

  def test_bad_input_rank(self):
    layer = sc.StructurallyConnectedClassifier([0, 1, 1])
    with self.assertRaisesRegex(ValueError, "M=2"):
      layer(tf.zeros((2, 3, 4)))

  @pytest.mark.slow
  def test_100k_classes_forward_backward(self):
    # N = 100K, M = 20, s2 = 512: never forms [N, M*s2] or [B, N, s2].
    rng = np.random.default_rng(0)
    c2v = rng.integers(0, 20, size=100_000)
    layer = sc.StructurallyConnectedClassifier(c2v)
    h = tf.random.normal((4, 20, 512))
    with tf.GradientTape() as tape:
      logits = layer(h)
      loss = tf.reduce_sum(logits ** 2)
    grad = tf.convert_to_tensor(tape.gradient(loss, layer.kernel))
    self.assertEqual(logits.shape, (4, 100_000))
    self.assertEqual(grad.shape, (100_000, 512))
    cols = rng.choice(100_000, size=50, replace=False)
    expected = np.einsum(
        "bcs,cs->bc", h.numpy()[:, c2v[cols]], layer.kernel.numpy()[cols]
    )
    self.assertAllClose(logits.numpy()[:, cols], expected, atol=1e-3)


class GatherWithDenseGradientTest(tf.test.TestCase):

  def test_forward_and_gradient(self):
    # y = x[[2, 0, 2]] with only y[0] and y[1] carrying gradient: dx[2] is
    # y[0]'s gradient, dx[0] is y[1]'s, dx[1] (never read) is 0.
    x = tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    upstream = tf.constant([[1.0, 10.0], [100.0, 1000.0], [0.0, 0.0]])
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = sc.gather_with_dense_gradient(x, [2, 0, 2], [1, 3, 0])
      loss = tf.reduce_sum(y * upstream)
    self.assertAllEqual(y, [[5.0, 6.0], [1.0, 2.0], [5.0, 6.0]])
    grad = tape.gradient(loss, x)
    self.assertIsInstance(grad, tf.Tensor)  # dense, not IndexedSlices
    self.assertAllEqual(grad, [[100.0, 1000.0], [0.0, 0.0], [1.0, 10.0]])

  def test_axis_one(self):
    x = tf.constant([[1.0, 2.0, 3.0]])
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = sc.gather_with_dense_gradient(x, [2, 1], [2, 1, 0], axis=1)
      loss = tf.reduce_sum(y * [[10.0, 1.0]])
    self.assertAllEqual(y, [[3.0, 2.0]])
    self.assertAllEqual(tape.gradient(loss, x), [[0.0, 1.0, 10.0]])


class VerticalBlockDenseTest(kc_test_case.TestCase):

  @parameterized.named_parameters(
      ("2d_shared", (2, 5), 1), ("3d", (2, 3, 5), 0),
      ("2d_all_shared", (2, 5), 4), ("3d_shared_no_bias", (2, 3, 5), 2, False))
  def test_layer_harness(self, shape, shared_units, use_bias=True):
    x = np.random.default_rng(6).normal(size=shape).astype(np.float32)
    self.run_layer_test(
        sc.VerticalBlockDense,
        dict(num_verticals=3, units=4, shared_units=shared_units,
             activation="tanh", use_bias=use_bias,
             bias_initializer="random_normal", name="blk"),
        x, (2, 3, 4))

  def _reference(self, x, layer):
    """Per-vertical loop: concat(x_m K_s + b_s, x_m K[m] + b[m])."""
    m_count = layer.num_verticals
    xs = x if x.ndim == 3 else np.repeat(x[:, None], m_count, axis=1)
    out = []
    for m in range(m_count):
      parts = []
      if layer.shared_units:
        parts.append(xs[:, m] @ layer.shared_kernel.numpy()
                     + layer.shared_bias.numpy())
      if layer.units - layer.shared_units:
        parts.append(xs[:, m] @ layer.kernel.numpy()[m]
                     + layer.bias.numpy()[m])
      out.append(np.concatenate(parts, axis=-1))
    return np.maximum(np.stack(out, axis=1), 0.0)

  @parameterized.named_parameters(
      ("2d_no_shared", 2, 0), ("2d_shared", 2, 2), ("3d_no_shared", 3, 0),
      ("3d_shared", 3, 3), ("2d_all_shared", 2, 5), ("3d_all_shared", 3, 5),
  )
  def test_matches_reference(self, rank, shared_units):
    rng = np.random.default_rng(0)
    shape = (2, 6) if rank == 2 else (2, 3, 6)
    x = rng.normal(size=shape).astype(np.float32)
    layer = sc.VerticalBlockDense(
        3, 5, shared_units=shared_units, activation="relu",
        bias_initializer="random_normal",
    )
    out = layer(x)
    self.assertEqual(layer.name, "kc_sc_block")
    self.assertEqual(out.shape, (2, 3, 5))
    self.assertAllClose(out, self._reference(x, layer), atol=1e-5)
    # Kernel weights: D*x + M*D*(U - x).
    kernels = sum(int(np.prod(w.shape)) for w in layer.weights
                  if "kernel" in w.name)
    self.assertEqual(kernels, 6 * shared_units + 3 * 6 * (5 - shared_units))

  @parameterized.parameters(
      (dict(num_verticals=0, units=4), "num_verticals"),
      (dict(num_verticals=2, units=0), "units"),
      (dict(num_verticals=2, units=4, shared_units=5), "shared_units"),
  )
  def test_bad_args(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      sc.VerticalBlockDense(**kwargs)

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, "M=3"):
      sc.VerticalBlockDense(3, 4)(tf.zeros((2, 2, 5)))
    with self.assertRaisesRegex(ValueError, r"\[B, D\] or \[B, M, D\]"):
      sc.VerticalBlockDense(3, 4)(tf.zeros((2, 2, 2, 5)))


if __name__ == "__main__":
  tf.test.main()
