"""Tests for HierarchicalClassifier: outputs, save/load, mixed precision."""


from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from kc_keras.configs import model as model_config
import kc_test_case
from kc_keras.modeling.models import classifier

C2V = [0, 2, 1, 0, 2, 2, 0, 2, 2]  # sizes 3, 1, 5
SHAPE = (12, 12, 1)


def tiny_config(head_type="fc_sc", shared_units=0, mode="vertical"):
  config = model_config.ModelConfig()
  config.override({
      "backbone": {"filters": [4, 8]},
      "head": {"head_type": head_type, "s1": 6, "s2": 4,
               "shared_units": shared_units, "chunk_size": 2},
      "self_paced": {"mode": mode},
  })
  return config


def images(batch=2, seed=0):
  return np.random.default_rng(seed).random((batch,) + SHAPE).astype("float32")


class HierarchicalClassifierTest(kc_test_case.TestCase):

  @parameterized.named_parameters(
      ("fc_fc", "fc_fc", 0, "vertical"),
      ("fc_sc", "fc_sc", 0, "vertical"),
      ("fc_sc_shared", "fc_sc", 2, "vertical"),
      ("sc_sc", "sc_sc", 0, "vertical"),
      ("class_level", "fc_sc", 0, "class"),
      ("fixed", "sc_sc", 0, "fixed"),
      ("no_self_paced", "fc_fc", 0, "none"),
  )
  def test_keras_round_trip(self, head_type, shared_units, mode):
    model = classifier.build_classifier(
        tiny_config(head_type, shared_units, mode), C2V, SHAPE
    )
    x = images()
    # A training step first so BN statistics and weights are non-trivial.
    model.compile(optimizer="sgd",
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(x, np.eye(9, dtype="float32")[[0, 4]], epochs=1, verbose=0)
    loaded = self.run_model_saving_test(model, x)
    self.assertEqual(loaded.head.head_type, head_type)

  def test_output_and_names(self):
    model = classifier.build_classifier(tiny_config(), C2V, SHAPE)
    out = model(images(3))
    self.assertEqual(out.shape, (3, 9))
    self.assertEqual(out.dtype, tf.float32)
    self.assertEqual(model.name, "kc_classifier")
    self.assertEqual(
        [l.name for l in model.layers],
        ["images", "kc_backbone", "kc_head", "self_paced_scale"],
    )
    self.assertEqual((model.num_classes, model.num_verticals), (9, 3))
    self.assertEqual(model.feature_dim, 8)

  def test_self_paced_applied(self):
    # With vertical-level gammas, each vertical's logit norm equals gamma_v.
    model = classifier.build_classifier(tiny_config(), C2V, SHAPE)
    out = model(images(2)).numpy()
    gamma = model.self_paced.gamma.numpy()
    for v in range(3):
      idx = np.flatnonzero(np.asarray(C2V) == v)
      self.assertAllClose(np.linalg.norm(out[:, idx], axis=1), [gamma[v]] * 2,
                          rtol=1e-4)

  @parameterized.parameters(("fc_fc", 0), ("fc_sc", 0), ("fc_sc", 3),
                            ("sc_sc", 0))
  def test_head_param_count(self, head_type, shared_units):
    model = classifier.build_classifier(
        tiny_config(head_type, shared_units), C2V, SHAPE
    )
    self.assertEqual(model.head_param_count(),
                     model.expected_head_param_count())

  def test_gradients_reach_every_trainable_weight(self):
    model = classifier.build_classifier(tiny_config("fc_sc", 2), C2V, SHAPE)
    with tf.GradientTape() as tape:
      logits = model(images(4), training=True)
      loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
          tf.one_hot([0, 1, 2, 3], 9), logits))
    grads = tape.gradient(loss, model.trainable_weights)
    for w, g in zip(model.trainable_weights, grads):
      self.assertIsNotNone(g, w.path)
      g = tf.convert_to_tensor(g)
      self.assertGreater(float(tf.reduce_sum(tf.abs(g))), 0.0, w.path)

  def test_mixed_precision_logits_are_float32(self):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
      model = classifier.build_classifier(tiny_config(), C2V, SHAPE)
      self.assertEqual(model.head.compute_dtype, "float16")
      self.assertEqual(model.self_paced.compute_dtype, "float32")
      out = model(images())
      self.assertEqual(out.dtype, tf.float32)
      self.assertTrue(np.all(np.isfinite(out.numpy())))
    finally:
      keras.mixed_precision.set_global_policy("float32")

  def test_direct_constructor(self):
    model = classifier.HierarchicalClassifier(
        C2V, SHAPE, backbone={"filters": [4]},
        head={"head_type": "sc_sc", "s1": 3, "s2": 2},
        self_paced={"mode": "none"}, name="teacher",
    )
    self.assertEqual(model.name, "teacher")
    self.assertEqual(model(images()).shape, (2, 9))

  @parameterized.parameters(
      ({"head": {"shared_units": 5}}, "model.head.shared_units"),
      ({"head": {"head_type": "fc"}}, "model.head.head_type"),
      ({"self_paced": {"mode": "node"}}, "model.self_paced.mode"),
  )
  def test_invalid_config(self, override, key):
    config = tiny_config()
    config.override(override)
    with self.assertRaisesRegex(ValueError, key):
      classifier.build_classifier(config, C2V, SHAPE)

  @pytest.mark.slow
  def test_100k_classes_forward_backward(self):
    # N = 100K, M = 20, FC(1024)-SC(512), batch 4: one forward + backward.
    c2v = np.random.default_rng(0).integers(0, 20, size=100_000)
    config = model_config.ModelConfig()
    config.override({"backbone": {"filters": [8, 16]},
                     "head": {"s1": 1024, "s2": 512}})
    model = classifier.build_classifier(config, c2v, (16, 16, 1))
    with tf.GradientTape() as tape:
      logits = model(np.random.rand(4, 16, 16, 1).astype("float32"),
                     training=True)
      loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
          tf.zeros_like(logits), logits))
    grads = tape.gradient(loss, model.trainable_weights)
    self.assertEqual(logits.shape, (4, 100_000))
    self.assertTrue(all(g is not None for g in grads))
    self.assertEqual(model.head_param_count(),
                     16 * 1024 + 20 * 1024 * 512 + 512 * 100_000)


if __name__ == "__main__":
  tf.test.main()
