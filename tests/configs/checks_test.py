"""Config checks: unknown keys, wrong types, impossible combinations, rerun diffs."""

import os
import types

from absl.testing import parameterized
import tensorflow as tf

from kc_keras.configs import checks
from kc_keras.configs import experiments
from kc_keras.training import experiment_runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse(params_override=None, config_file=(), experiment="kc_student_demo"):
  return experiment_runner.parse_configuration(types.SimpleNamespace(
      experiment=experiment, config_file=list(config_file),
      params_override=params_override, tpu=None))


class UnknownKeyTest(parameterized.TestCase):

  @parameterized.parameters(
      ("task.distillation.top_kk=3", "task.distillation.top_kk"),
      ("task.model.self_paced.mod=vertical", "task.model.self_paced.mod"),
      ("tusk.data.seed=1", "tusk"),
  )
  def test_override_names_the_full_path(self, override, path):
    with self.assertRaisesRegex(checks.UnknownConfigKeyError,
                                f"Unknown config key '{path}'"):
      _parse(override)

  def test_config_file_names_the_full_path(self):
    path = os.path.join(self.create_tempdir().full_path, "bad.yaml")
    with open(path, "w") as f:
      f.write("task:\n  data:\n    embedded:\n      num_clases: 3\n")
    with self.assertRaisesRegex(KeyError, "task.data.embedded.num_clases"):
      _parse(config_file=[path])


class DuplicateKeyTest(parameterized.TestCase):

  def test_config_file_with_a_key_twice_is_refused_naming_it(self):
    path = os.path.join(self.create_tempdir().full_path, "dup.yaml")
    with open(path, "w") as f:
      f.write("trainer:\n  train_steps: 5\ntask:\n  top_k: 3\n"
              "trainer:\n  steps_per_loop: 1\n")
    with self.assertRaisesRegex(
        checks.ConfigError,
        rf"^{path}: duplicate key\(s\) 'trainer' \(lines 1 and 5\); merge "
        r"them into one\.$"):
      _parse(config_file=[path])

  def test_nested_and_override_string_duplicates(self):
    with self.assertRaisesRegex(
        checks.ConfigError,
        r"the override string: duplicate key\(s\) 'train_steps'"):
      _parse("{trainer: {train_steps: 1, train_steps: 2}}")


class TypeTest(parameterized.TestCase):

  @parameterized.parameters(
      ("task.distillation.top_k=abc", r"task.distillation.top_k='abc'.*int"),
      ("task.distillation.top_k=1.5", r"task.distillation.top_k=1.5.*int"),
      ("trainer.train_steps=[1,2]", r"trainer.train_steps=\[1, 2\].*int"),
      ("task.data.deterministic=3", r"task.data.deterministic=3.*bool"),
      ("task.distillation.alpha=x", r"task.distillation.alpha='x'.*float"),
      ("task.specialists.verticals=[0,a]",
       r"task.specialists.verticals=\[0, 'a'\]"),
  )
  def test_wrong_type_names_path_and_expected_type(self, override, message):
    with self.assertRaisesRegex(checks.ConfigError, message):
      _parse(override)

  @parameterized.parameters(".nan", ".NaN", ".inf", "-.inf", "1e999")
  def test_non_finite_floats_are_refused(self, value):
    with self.assertRaisesRegex(
        checks.ConfigError,
        r"^trainer.optimizer.learning_rate=-?(nan|inf) is not a finite "
        r"number\.$"):
      _parse(f"trainer.optimizer.learning_rate={value}")
    # A bare `nan` is YAML text, refused by the type check.
    with self.assertRaisesRegex(checks.ConfigError, r"'nan' has type str"):
      _parse("trainer.optimizer.learning_rate=nan")

  def test_ints_are_valid_floats_and_every_experiment_type_checks(self):
    self.assertEqual(_parse("task.distillation.alpha=1").task.distillation.alpha,
                     1)
    for name in experiments.names():
      checks.check_types(experiments.get_experiment(name))


class CombinationTest(parameterized.TestCase):

  @parameterized.parameters(
      ("task.distillation.target_source=online,task.distillation.alpha=0.0",
       r"task.distillation.target_source='online'.*alpha=0.0"),
      ("task.distillation.target_source=labels,task.distillation.alpha=0.5",
       r"task.distillation.alpha=0.5 needs soft targets"),
      ("task.distillation.target_source=cache,task.distillation.cache_dir=''",
       r"task.distillation.target_source='cache' needs "
       r"task.distillation.cache_dir"),
      ("task.distillation.max_teachers_per_example=2",
       r"task.distillation.max_teachers_per_example=2 exceeds "
       r"task.data.max_labels_per_example=1"),
      ("task.specialists.freeze=backbone,task.specialists.init_checkpoint=''",
       r"task.specialists.freeze='backbone' needs"),
  )
  def test_impossible_combination_names_the_key(self, override, message):
    with self.assertRaisesRegex(ValueError, message):
      _parse(override)


class DifferingKeysTest(tf.test.TestCase):

  def test_lists_changed_keys_but_not_resume_safe_ones(self):
    old = {"trainer": {"train_steps": 10, "optimizer": {"learning_rate": 1.0}},
           "runtime": {"num_gpus": 0}, "task": {"data": {"seed": 0}}}
    new = {"trainer": {"train_steps": 20, "optimizer": {"learning_rate": 2.0}},
           "runtime": {"num_gpus": 2}, "task": {"data": {"seed": 0, "x": 1}}}
    self.assertEqual(checks.differing_keys(old, new), [
        ("task.data.x", "<absent>", 1),
        ("trainer.optimizer.learning_rate", 1.0, 2.0)])
    with self.assertRaisesRegex(
        checks.ConfigError,
        r"run with another config: task.data.x: was '<absent>', now 1; "
        r"trainer.optimizer.learning_rate: was 1.0, now 2.0.*"
        r"--allow_config_change"):
      checks.check_rerun(old, new, "/runs/x")

  def test_a_key_added_since_the_run_is_a_change_only_off_its_default(self):
    old = {"task": {"data": {"seed": 0}}}
    defaults = {"task": {"data": {"seed": 0, "holdout": 0.0, "epochs": None}}}
    self.assertEqual(checks.differing_keys(
        old, {"task": {"data": {"seed": 0, "holdout": 0.0, "epochs": None}}},
        defaults=defaults), [])
    self.assertEqual(checks.differing_keys(
        old, {"task": {"data": {"seed": 0, "holdout": 0.2, "epochs": None}}},
        defaults=defaults), [("task.data.holdout", "<absent>", 0.2)])

  def test_tuples_and_lists_compare_equal(self):
    self.assertEqual(
        checks.differing_keys({"a": (1, 2)}, {"a": [1, 2]}), [])


if __name__ == "__main__":
  tf.test.main()
