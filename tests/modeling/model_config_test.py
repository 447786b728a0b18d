"""Tests for the model configs: defaults, overrides, validation key paths."""

from absl.testing import parameterized
import tensorflow as tf

from kc_keras.configs import model as model_config


class ModelConfigTest(tf.test.TestCase, parameterized.TestCase):

  def test_defaults_are_the_papers_best(self):
    config = model_config.ModelConfig()
    config.validate()
    self.assertEqual(config.head.head_type, "fc_sc")
    self.assertEqual((config.head.s1, config.head.s2), (4096, 512))
    self.assertEqual(config.self_paced.mode, "vertical")
    self.assertEqual(config.self_paced.init, "sqrt_nv")
    self.assertEqual(config.self_paced.init_stddev, 1e-3)
    self.assertIsNone(config.head.chunk_size)
    self.assertEqual(list(config.backbone.filters), [64, 128, 256])

  def test_override_and_round_trip(self):
    config = model_config.ModelConfig()
    config.override({"head": {"shared_units": 128, "chunk_size": 256},
                     "backbone": {"type": "resnet50"}})
    config.validate()
    clone = model_config.ModelConfig(config.as_dict())
    self.assertEqual(clone.as_dict(), config.as_dict())

  def test_unknown_key_is_an_error(self):
    with self.assertRaises(KeyError):
      model_config.ModelConfig().override({"head": {"shared_unit": 1}})

  @parameterized.parameters(
      ({"head": {"shared_units": 600}}, "model.head.shared_units"),
      ({"head": {"shared_units": -1}}, "model.head.shared_units"),
      ({"head": {"head_type": "sc_sc", "shared_units": 8}},
       "model.head.shared_units"),
      ({"head": {"head_type": "fc"}}, "model.head.head_type"),
      ({"head": {"s1": 0}}, "model.head.s1"),
      ({"head": {"dropout": 1.5}}, "model.head.dropout"),
      ({"head": {"chunk_size": 0}}, "model.head.chunk_size"),
      ({"head": {"activation": "nope"}}, "model.head.activation"),
      ({"self_paced": {"mode": "node"}}, "model.self_paced.mode"),
      ({"self_paced": {"init": "ones"}}, "model.self_paced.init"),
      ({"self_paced": {"init_stddev": -1.0}}, "model.self_paced.init_stddev"),
      ({"self_paced": {"epsilon": 0.0}}, "model.self_paced.epsilon"),
      ({"backbone": {"type": "vgg"}}, "model.backbone.type"),
      ({"backbone": {"filters": [8, 0]}}, "model.backbone.filters"),
      ({"backbone": {"dropout": 1.0}}, "model.backbone.dropout"),
  )
  def test_validate_names_key_path(self, override, key):
    config = model_config.ModelConfig()
    config.override(override)
    with self.assertRaisesRegex(ValueError, key.replace(".", r"\.")):
      config.validate()

  def test_custom_prefix(self):
    config = model_config.ModelConfig()
    config.override({"head": {"head_type": "x"}})
    with self.assertRaisesRegex(ValueError, r"task\.model\.head\.head_type"):
      config.validate("task.model")


if __name__ == "__main__":
  tf.test.main()
