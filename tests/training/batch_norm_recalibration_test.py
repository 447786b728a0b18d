"""Tests for BatchNorm recalibration: the averaged statistics, and in the controller."""

import keras
import numpy as np
import tensorflow as tf

from kc_keras.configs import trainer as trainer_cfg
from kc_keras.modeling.layers import self_paced
from kc_keras.training import batch_norm_recalibration as recal
from kc_keras.training import controller as controller_lib
from kc_keras.training import restore as restore_lib

FEATURES = 3


def _model(momentum=0.99):
  inputs = keras.Input((FEATURES,), name="x")
  normed = keras.layers.BatchNormalization(momentum=momentum, name="bn")(inputs)
  outputs = keras.layers.Dense(1, name="out")(normed)
  model = keras.Model(inputs, outputs)
  model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
  return model


def _batches(num, size=8, seed=0):
  rng = np.random.default_rng(seed)
  return [(rng.normal(i, 1.0 + i, (size, FEATURES)).astype(np.float32),
           np.zeros((size, 1), np.float32)) for i in range(num)]


def _iterator(batches):
  strategy = tf.distribute.get_strategy()
  dataset = tf.data.Dataset.from_generator(
      lambda: iter(batches),
      output_signature=(tf.TensorSpec([None, FEATURES], tf.float32),
                        tf.TensorSpec([None, 1], tf.float32)))
  return iter(strategy.experimental_distribute_dataset(dataset))


class RecalibrateTest(tf.test.TestCase):

  def test_statistics_are_the_average_of_the_batch_statistics(self):
    model = _model(momentum=0.9)
    batches = _batches(4)
    count = recal.recalibrate_batch_norm(
        model, tf.distribute.get_strategy(), _iterator(batches), 4)
    self.assertEqual(count, 1)
    bn = model.get_layer("bn")
    # mean_i and the biased variance_i of each batch, averaged over batches.
    expected_mean = np.mean([x.mean(0) for x, _ in batches], axis=0)
    expected_var = np.mean([x.var(0) for x, _ in batches], axis=0)
    self.assertAllClose(bn.moving_mean, expected_mean, rtol=1e-5)
    self.assertAllClose(bn.moving_variance, expected_var, rtol=1e-5)
    self.assertEqual(bn.momentum, 0.9)

  def test_per_batch_self_paced_scale_gets_the_mean_squared_norm(self):
    # Verticals {0, 2} and {1}: moving_squared_norm_v = mean over batches of
    # the batch mean of ||x_v||^2; a per-image scale has nothing to recompute.
    inputs = keras.Input((FEATURES,), name="x")
    scale = self_paced.SelfPacedScale([0, 1, 0], mode="vertical",
                                      normalization="per_batch", momentum=0.9,
                                      name="scale")
    per_image = self_paced.SelfPacedScale([0, 1, 0], mode="vertical",
                                          name="per_image")
    model = keras.Model(inputs, per_image(scale(inputs)))
    batches = _batches(3)
    count = recal.recalibrate_batch_norm(
        model, tf.distribute.get_strategy(), _iterator(batches), 3)
    self.assertEqual(count, 1)
    expected = np.mean([[np.mean(x[:, 0]**2 + x[:, 2]**2),
                         np.mean(x[:, 1]**2)] for x, _ in batches], axis=0)
    self.assertAllClose(scale.moving_squared_norm, expected, rtol=1e-5)
    self.assertEqual(scale.momentum, 0.9)

  def test_reads_only_the_batches_asked_for(self):
    model = _model()
    iterator = _iterator(_batches(3))
    recal.recalibrate_batch_norm(model, tf.distribute.get_strategy(),
                                 iterator, 2)
    x, _ = next(iterator)  # The third batch is still there.
    self.assertAllClose(x, _batches(3)[2][0])

  def test_no_batch_norm_and_bad_count(self):
    inputs = keras.Input((FEATURES,))
    plain = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    self.assertEqual(
        recal.recalibrate_batch_norm(plain, tf.distribute.get_strategy(),
                                     _iterator(_batches(1)), 1), 0)
    with self.assertRaisesRegex(ValueError, "num_batches must be >= 1"):
      recal.recalibrate_batch_norm(_model(), tf.distribute.get_strategy(),
                                   _iterator(_batches(1)), 0)


class ControllerRecalibrationTest(tf.test.TestCase):

  def _train(self, model_dir, recalibration_batches):
    model = _model()
    # Every batch identical: the recalibrated statistics are known exactly.
    x = np.arange(8 * FEATURES, dtype=np.float32).reshape(8, FEATURES)
    y = np.zeros((8, 1), np.float32)

    def dataset_fn(input_context, start_batch):
      del input_context, start_batch
      return tf.data.Dataset.from_tensors((x, y)).repeat()

    config = trainer_cfg.TrainerConfig(
        train_steps=4, steps_per_loop=2, checkpoint_interval=2,
        batch_norm_recalibration_batches=recalibration_batches)
    controller = controller_lib.TrainController(
        model=model, strategy=tf.distribute.get_strategy(),
        dataset_fn=dataset_fn, config=config, model_dir=model_dir,
        global_batch_size=8)
    controller.train(verbose=False)
    return model, x

  def test_final_checkpoint_holds_the_recalibrated_statistics(self):
    model_dir = self.create_tempdir().full_path
    model, x = self._train(model_dir, recalibration_batches=3)
    bn = model.get_layer("bn")
    self.assertAllClose(bn.moving_mean, x.mean(0), rtol=1e-6)
    self.assertAllClose(bn.moving_variance, x.var(0), rtol=1e-5)
    restored = _model()
    restore_lib.restore_model_weights(restored, model_dir)
    self.assertAllClose(restored.get_layer("bn").moving_mean, x.mean(0),
                        rtol=1e-6)

  def test_off_by_default_keeps_the_moving_averages(self):
    model, x = self._train(self.create_tempdir().full_path,
                           recalibration_batches=0)
    # Four steps of momentum 0.99 from 0 are far from the batch mean.
    self.assertAllClose(model.get_layer("bn").moving_mean,
                        (1 - 0.99 ** 4) * x.mean(0), rtol=1e-5)

  def test_negative_count_is_a_config_error(self):
    config = trainer_cfg.TrainerConfig(batch_norm_recalibration_batches=-1)
    with self.assertRaisesRegex(ValueError,
                                "trainer.batch_norm_recalibration_batches"):
      config.validate()


if __name__ == "__main__":
  tf.test.main()
