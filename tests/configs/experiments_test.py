"""Tests for the experiment registry, strict overrides and validation."""

import json
import os

from absl.testing import parameterized
import pytest
import tensorflow as tf
import yaml

from kc_keras.configs import experiments
from kc_keras.training import experiment_runner
from kc_keras.training import modes

from smoke_configs import CONFIG_DIR
from smoke_configs import flags_like as _flags


class ExperimentsTest(tf.test.TestCase, parameterized.TestCase):

  def test_registry_has_the_required_experiments(self):
    self.assertContainsSubset(
        ["kc_generalist_demo", "kc_generalist_omniglot"], experiments.names())

  @parameterized.parameters(experiments.names())
  def test_every_registered_experiment_validates(self, name):
    config = experiments.get_experiment(name)
    config.validate()

  @parameterized.parameters("omniglot", "embedded_rich")
  def test_student_has_the_generalists_network_teachers_the_trunks(self, data):
    generalist = experiments.get_experiment(f"kc_generalist_{data}").task.model
    trunk = experiments.get_experiment(f"kc_trunk_{data}").task.model
    student = experiments.get_experiment(f"kc_student_{data}").task
    self.assertEqual(student.model.backbone.as_dict(),
                     generalist.backbone.as_dict())
    self.assertEqual((student.model.head.s1, student.model.head.s2),
                     (generalist.head.s1, generalist.head.s2))
    self.assertEqual(student.specialists.model.as_dict(), trunk.as_dict())

  def test_unknown_experiment_lists_registered_ones(self):
    with self.assertRaisesRegex(ValueError, "kc_generalist_demo"):
      experiments.get_experiment("kc_nope")

  @parameterized.parameters(sorted(os.listdir(CONFIG_DIR)))
  def test_every_yaml_applies_strictly(self, filename):
    with open(os.path.join(CONFIG_DIR, filename)) as f:
      overrides = yaml.safe_load(f)
    # Any registered experiment with the file's keys must accept it.
    for name in experiments.names():
      config = experiments.get_experiment(name)
      config.override(overrides, is_strict=True)

  def test_order_defaults_then_files_then_override(self):
    params = experiment_runner.parse_configuration(_flags(
        "kc_generalist_demo",
        config_file=[os.path.join(CONFIG_DIR, "generalist_demo_smoke.yaml")],
        params_override="trainer.train_steps=60,task.model.head.s1=48"))
    self.assertEqual(params.trainer.train_steps, 60)  # override wins
    self.assertEqual(params.task.model.head.s1, 48)
    self.assertEqual(params.task.model.head.s2, 16)  # from the file
    self.assertEqual(params.task.model.head.head_type, "fc_fc")  # default
    with self.assertRaisesRegex(ValueError, "locked"):
      params.override({"trainer": {"train_steps": 1}})

  def test_unknown_key_in_override_is_an_error(self):
    with self.assertRaisesRegex(KeyError, "trian_steps"):
      experiment_runner.parse_configuration(_flags(
          "kc_generalist_demo", params_override="trainer.trian_steps=3"))

  def test_validation_names_the_full_key_path(self):
    with self.assertRaisesRegex(ValueError, "task.model.head.shared_units"):
      experiment_runner.parse_configuration(_flags(
          "kc_generalist_demo",
          params_override="task.model.head.shared_units=100000"))
    with self.assertRaisesRegex(ValueError, "trainer.checkpoint_interval"):
      experiment_runner.parse_configuration(_flags(
          "kc_generalist_demo",
          params_override="trainer.checkpoint_interval=33"))

  def test_params_yaml_round_trips(self):
    # The data-rich experiment derives its defaults from the generator's
    # settings alone (no data files needed).
    params = experiment_runner.parse_configuration(_flags(
        "kc_generalist_embedded_rich", params_override="trainer.train_steps=7"))
    model_dir = self.create_tempdir().full_path
    path = modes.save_params(params, model_dir)
    reloaded = experiments.get_experiment("kc_generalist_embedded_rich")
    reloaded.override(path and yaml.safe_load(open(path)), is_strict=True)
    as_lists = lambda d: json.loads(json.dumps(d))  # tuples -> lists
    self.assertEqual(as_lists(reloaded.as_dict()), as_lists(params.as_dict()))
    self.assertEqual(os.listdir(model_dir), ["params.yaml"])  # no temp left
