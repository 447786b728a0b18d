"""Tests for DistillationConfig.validate()."""

from absl.testing import parameterized
import tensorflow as tf

from kc_keras.configs import distillation


class DistillationConfigTest(tf.test.TestCase, parameterized.TestCase):

  def test_defaults_are_the_paper(self):
    config = distillation.DistillationConfig(teachers_dir="/teachers")
    config.validate()
    self.assertEqual(config.alpha, 1.0)
    self.assertEqual(config.top_k, 100)
    self.assertEqual(config.loss_type, "sigmoid")
    self.assertEqual(config.temperature, 1.0)

  def test_default_online_reads_teachers_from_model_dir(self):
    # An empty teachers_dir means <model_dir>/teachers (the training code).
    distillation.DistillationConfig().validate()

  def test_generalist_and_cache_are_valid(self):
    distillation.DistillationConfig(alpha=0.0, target_source="labels").validate()
    distillation.DistillationConfig(target_source="cache",
                                    cache_dir="/c").validate()

  @parameterized.named_parameters(
      ("top_k", {"top_k": 0}, "distillation.top_k must be >= 1"),
      ("alpha", {"alpha": 1.5}, r"distillation.alpha must be in \[0, 1\]"),
      ("source", {"target_source": "x"}, "distillation.target_source"),
      ("loss", {"loss_type": "l2"}, "distillation.loss_type"),
      ("slots", {"max_teachers_per_example": 0},
       "distillation.max_teachers_per_example"),
      ("temperature", {"temperature": 0.0},
       "distillation.temperature must be a finite number > 0"),
      ("shard", {"cache_shard_size": 0}, "distillation.cache_shard_size"),
      ("labels_alpha", {"target_source": "labels"},
       "distillation.alpha=1.0 needs soft targets"),
      ("cache", {"target_source": "cache"}, "needs distillation.cache_dir"),
  )
  def test_bad_values_name_the_key(self, override, message):
    config = distillation.DistillationConfig(teachers_dir="/teachers")
    config.override(override)
    with self.assertRaisesRegex(ValueError, message):
      config.validate()

  def test_custom_path_in_message(self):
    config = distillation.DistillationConfig(top_k=0, teachers_dir="/t")
    with self.assertRaisesRegex(ValueError, "task.distillation.top_k"):
      config.validate(path="task.distillation")


if __name__ == "__main__":
  tf.test.main()
