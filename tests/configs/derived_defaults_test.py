"""Tests for the defaults derived from the data's statistics."""

import types

from absl.testing import parameterized
import tensorflow as tf

from kc_keras.configs import derived_defaults as dd
from kc_keras.configs import experiments
from kc_keras.configs import trainer as trainer_cfg
from kc_keras.training import experiment_runner

# Omniglot: 1,623 characters in 50 alphabets (the largest has 55), drawers
# 0-14 train. Only N, the largest N_v and the image count enter the formulas.
OMNIGLOT = dd.DataStats((55,) + (32,) * 49, 1623 * 15)
# The data-rich embedded set: 2,000 classes in 20 verticals (largest 551),
# 100 training images per class.
RICH = dd.DataStats((551,) + (76,) * 14 + (77,) * 5, 2000 * 100)


def dd_trainer(**fields):
  config = trainer_cfg.TrainerConfig()
  config.override(fields, is_strict=True)
  return config


def _flags(experiment, params_override=None):
  return types.SimpleNamespace(experiment=experiment, config_file=[],
                               params_override=params_override, tpu=None)


def _resolved(name, stats, **overrides):
  params = experiments.get_experiment(name)
  if overrides:
    params.override(overrides, is_strict=True)
  dd.resolve(params, stats=stats)
  return params


class FormulaTest(parameterized.TestCase):

  @parameterized.parameters(
      # N, vertical sizes, images, batch -> epsilon, init, K, steps/epoch
      (9, (3, 3, 3), 25, 64, 9e-7, "sqrt_nv", 9, 1),
      (200, (20,) * 10, 12000, 64, 2e-5, "sqrt_nv", 100, 187),
      (999, (500, 499), 999, 128, 9.99e-5, "sqrt_nv", 100, 7),
      (1000, (10,) * 100, 1000, 128, 1e-4, "prior", 100, 7),
      (1900, (300,) * 6 + (100,), 1900, 128, 1.9e-4, "prior", 100, 14),
      (100_000, (5000,) * 20, 400_000_000, 64, 1e-2, "prior", 100, 6_250_000),
  )
  def test_formulas(self, n, sizes, images, batch, epsilon, init, k, epoch):
    self.assertEqual(sum(sizes), n)
    self.assertAlmostEqual(dd.adam_epsilon(n), epsilon, places=15)
    self.assertEqual(dd.self_paced_init(n), init)
    self.assertEqual(dd.top_k(n), k)
    # Without self-paced scaling the init is never read: the paper's value.
    self.assertEqual(dd.self_paced_init(n, "none"), "sqrt_nv")
    self.assertEqual(dd.steps_per_epoch(images, batch), epoch)

  @parameterized.parameters(
      # epochs, images, batch -> steps, steps_per_loop, checkpoint_interval
      (24, 24345, 128, 4560, 95, 2280),
      (20, 24345, 128, 3800, 95, 1900),
      (0.64, 200000, 128, 1000, 100, 500),
      (1.92, 200000, 128, 3000, 100, 1500),
      (24, 1900, 128, 336, 7, 168),
      (3, 10, 64, 3, 1, 1),  # fewer images than a batch: one step per epoch
  )
  def test_schedule(self, epochs, images, batch, steps, loop, interval):
    self.assertEqual(dd.train_steps(epochs, images, batch), steps)
    epoch = dd.steps_per_epoch(images, batch)
    self.assertEqual(dd.steps_per_loop(epoch, steps), loop)
    self.assertEqual(dd.checkpoint_interval(steps, loop), interval)

  @parameterized.parameters((1.0, dd.FROZEN_TRUNK), (15.0, dd.FROZEN_TRUNK),
                            (100.0, dd.FROZEN_TRUNK), (499.9, dd.FROZEN_TRUNK),
                            (500.0, dd.FINE_TUNED_HEAD))
  def test_specialist_recipe_follows_images_per_class(self, per_class, freeze):
    self.assertEqual(dd.specialists_freeze(per_class), freeze)


class RegisteredExperimentsTest(tf.test.TestCase):
  """The derived values are the ones docs/RESULTS.md's tables were run with."""

  def test_omniglot(self):
    student = _resolved("kc_student_omniglot", OMNIGLOT)
    self.assertEqual(student.trainer.optimizer.epsilon, 1e-7 * 1623)
    self.assertEqual((student.trainer.train_steps, student.trainer.steps_per_loop,
                      student.trainer.checkpoint_interval), (4560, 95, 2280))
    self.assertEqual(student.task.model.self_paced.init, "prior")
    self.assertEqual(student.task.distillation.top_k, 100)
    self.assertEqual(student.task.specialists.freeze, "backbone_and_hidden")
    self.assertEqual(student.task.specialists.model.self_paced.init, "sqrt_nv")
    # The teachers' own optimizer keeps the value they were trained with.
    self.assertEqual(student.task.specialists.trainer.optimizer.epsilon, 1e-7)
    trunk = _resolved("kc_trunk_omniglot", OMNIGLOT)
    self.assertEqual((trunk.trainer.train_steps, trunk.trainer.steps_per_loop,
                      trunk.trainer.checkpoint_interval), (3800, 95, 1900))
    # The trunk has no self-paced scaling: the registered 'sqrt_nv' stays.
    self.assertEqual(trunk.task.model.self_paced.init, "sqrt_nv")

  def test_embedded_rich(self):
    student = _resolved("kc_student_embedded_rich", RICH)
    self.assertEqual(student.trainer.optimizer.epsilon, 1e-7 * 2000)
    self.assertEqual((student.trainer.train_steps, student.trainer.steps_per_loop,
                      student.trainer.checkpoint_interval), (1000, 100, 500))
    self.assertEqual(student.task.model.self_paced.init, "prior")
    self.assertEqual(student.task.distillation.top_k, 100)
    self.assertEqual(student.task.specialists.freeze, "backbone_and_hidden")
    trunk = _resolved("kc_trunk_embedded_rich", RICH)
    self.assertEqual((trunk.trainer.train_steps, trunk.trainer.steps_per_loop,
                      trunk.trainer.checkpoint_interval), (3000, 100, 1500))

  def test_demo_keeps_its_registered_values(self):
    demo = _resolved("kc_student_demo", dd.DataStats((20,) * 10, 12000))
    self.assertEqual(demo.trainer.optimizer.epsilon, 1e-7)
    self.assertEqual(demo.trainer.train_steps, 800)
    self.assertEqual(demo.task.model.self_paced.init, "sqrt_nv")
    self.assertEqual(demo.task.distillation.top_k, 100)


class ResolveTest(parameterized.TestCase):

  def test_a_set_value_wins_even_when_equal_to_a_default(self):
    params = _resolved(
        "kc_student_omniglot", OMNIGLOT,
        trainer={"optimizer": {"epsilon": 1e-7}, "train_steps": 7,
                 "checkpoint_interval": 6},
        task={"model": {"self_paced": {"init": "sqrt_nv"}},
              "distillation": {"top_k": 100},
              "specialists": {"freeze": "none"}})
    self.assertEqual(params.trainer.optimizer.epsilon, 1e-7)
    self.assertEqual(params.trainer.train_steps, 7)
    # steps_per_loop is derived as a divisor of the set interval.
    self.assertEqual((params.trainer.steps_per_loop,
                      params.trainer.checkpoint_interval), (6, 6))
    self.assertEqual(params.task.model.self_paced.init, "sqrt_nv")
    self.assertEqual(params.task.distillation.top_k, 100)
    self.assertEqual(params.task.specialists.freeze, "none")

  def test_reports_what_it_derived_and_why(self):
    params = experiments.get_experiment("kc_generalist_embedded_rich")
    derived = {d.key: d for d in dd.resolve(params, stats=RICH)}
    self.assertEqual(derived["trainer.train_steps"].value, 1000)
    self.assertIn("0.64 epochs of 1562 steps",
                  derived["trainer.train_steps"].reason)
    self.assertNotIn("trainer.train_epochs", derived)  # set by the experiment
    self.assertEqual(dd.resolve(params, stats=RICH), [])  # nothing left unset

  def test_unset_epochs_default(self):
    params = dd.unset(experiments.get_experiment("kc_generalist_demo"))
    # 3,200 // 64 = 50 steps per epoch: 24 epochs are 1,200 steps.
    dd.resolve(params, stats=dd.DataStats((3, 3), 3200))
    self.assertEqual(params.trainer.train_epochs, dd.DEFAULT_EPOCHS)
    self.assertEqual(params.trainer.train_steps, 1200)

  def test_few_images_get_the_minimum_budget_unless_epochs_are_set(self):
    params = dd.unset(experiments.get_experiment("kc_generalist_demo"))
    # 404 // 64 = 6 steps per epoch: 24 epochs would be 144 steps.
    derived = {d.key: d for d in dd.resolve(
        params, stats=dd.DataStats((101, 101), 404))}
    self.assertEqual(params.trainer.train_steps, dd.MIN_DEFAULT_STEPS)
    self.assertAlmostEqual(params.trainer.train_epochs, 1000 / 6)
    self.assertIn("only 144 steps here; raised to 1000 steps",
                  derived["trainer.train_epochs"].reason)
    # A budget the user sets is kept, however small.
    params = dd.unset(experiments.get_experiment("kc_generalist_demo"))
    params.trainer.train_epochs = 2.0
    dd.resolve(params, stats=dd.DataStats((101, 101), 404))
    self.assertEqual(params.trainer.train_steps, 12)

  def test_own_data_teachers_get_epochs_of_their_vertical(self):
    params = experiments.get_experiment("kc_student")
    derived = {d.key: d for d in dd.resolve(params, stats=RICH)}
    teachers = params.task.specialists.trainer
    self.assertIsNone(teachers.train_steps)
    self.assertEqual(teachers.train_epochs, dd.DEFAULT_EPOCHS)
    self.assertIn("passes over its vertical's images",
                  derived["task.specialists.trainer.train_epochs"].reason)
    # A set epoch budget is kept, and a set step budget needs no epochs.
    params = experiments.get_experiment("kc_student")
    params.task.specialists.trainer.train_epochs = 2.0
    dd.resolve(params, stats=RICH)
    self.assertEqual(params.task.specialists.trainer.train_epochs, 2.0)
    params = experiments.get_experiment("kc_student_omniglot")
    self.assertNotIn("task.specialists.trainer.train_epochs",
                     [d.key for d in dd.resolve(params, stats=OMNIGLOT)])
    self.assertEqual(params.task.specialists.trainer.train_steps, 300)
    self.assertIsNone(params.task.specialists.trainer.train_epochs)

  @parameterized.parameters(
      # epochs, rows, batch, steps_per_loop -> steps
      # 24 passes over 37,113 rows of 64: 579 steps each, 13,896, up to a loop.
      (24.0, 37113, 64, 100, 13900),
      (24.0, 37113, 64, 1, 13896),
      # Twice the rows, twice the steps.
      (24.0, 74226, 64, 1, 27816),
      # A small vertical gets the floor: 24 x 3 = 72 steps < 300.
      (24.0, 210, 64, 100, dd.MIN_TEACHER_STEPS),
      (0.5, 128000, 64, 100, 1000),
  )
  def test_teacher_steps_from_epochs(self, epochs, rows, batch, loop, steps):
    trainer = dd_trainer(train_epochs=epochs, train_steps=None,
                         steps_per_loop=loop)
    self.assertEqual(dd.teacher_steps(trainer, rows, batch), steps)

  def test_teacher_steps_set_win_and_none_is_refused(self):
    trainer = dd_trainer(train_epochs=24.0, train_steps=7, steps_per_loop=1)
    self.assertEqual(dd.teacher_steps(trainer, 10**6, 64), 7)
    self.assertEqual(dd.teacher_steps(trainer, None, 64), 7)
    trainer = dd_trainer(train_epochs=None, train_steps=None, steps_per_loop=1)
    with self.assertRaisesRegex(ValueError, "teachers have no budget"):
      dd.teacher_steps(trainer, 100, 64)

  @parameterized.parameters(
      # images, N_v, N, negatives_fraction -> rows
      (560_000, 1390, 20971, 0.0, 37118),
      (1000, 10, 100, 0.0, 100),
      # 10 of the vertical's 100 images + half of the other 900.
      (1000, 10, 100, 0.5, 550),
  )
  def test_vertical_images(self, images, size, n, fraction, rows):
    self.assertEqual(dd.vertical_images(images, size, n, fraction), rows)

  def test_parse_configuration_resolves_from_the_data(self):
    params = experiment_runner.parse_configuration(
        _flags("kc_generalist_embedded_rich"))
    self.assertEqual(params.trainer.train_steps, 1000)
    self.assertEqual(params.trainer.optimizer.epsilon, 1e-7 * 2000)
    self.assertEqual(params.task.distillation.top_k, 100)


def test_omniglot_stats_are_those_of_the_data(omniglot_path):
  data = experiments.get_experiment("kc_student_omniglot").task.data
  data.omniglot.data_dir = str(omniglot_path)
  stats = dd.stats_of(data)
  assert (stats.num_classes, stats.num_verticals, max(stats.vertical_sizes),
          stats.num_train_images) == (OMNIGLOT.num_classes,
                                      OMNIGLOT.num_verticals,
                                      max(OMNIGLOT.vertical_sizes),
                                      OMNIGLOT.num_train_images)


def test_rich_stats_are_those_of_the_generator():
  stats = dd.stats_of(
      experiments.get_experiment("kc_student_embedded_rich").task.data)
  assert (stats.num_classes, stats.num_verticals, max(stats.vertical_sizes),
          stats.num_train_images) == (RICH.num_classes, RICH.num_verticals,
                                      max(RICH.vertical_sizes),
                                      RICH.num_train_images)


if __name__ == "__main__":
  tf.test.main()
