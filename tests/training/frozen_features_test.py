"""Tests for training teachers' classifiers on frozen features."""

import numpy as np
import tensorflow as tf

from kc_keras.training import frozen_features


class VerticalRowsTest(tf.test.TestCase):

  def test_rows_targets_and_negatives_by_hand(self):
    # 4 classes: 0, 2 in vertical 0 (local 0, 1); 1, 3 in vertical 1.
    c2v = np.array([0, 1, 0, 1])
    local = np.array([0, 0, 1, 1])
    labels = np.array([[0, -1],    # v0, local 0
                       [3, -1],    # v1
                       [2, 1],     # v0 local 1 and v1
                       [-1, -1],   # no label
                       [1, -1]])   # v1
    rows, targets = frozen_features.vertical_rows(
        labels, c2v, local, vertical=0, num_local=2, negatives_fraction=0.0,
        seed=0)
    self.assertAllEqual(rows, [0, 2])
    self.assertAllEqual(targets, [[1, 0], [0, 1]])
    rows, targets = frozen_features.vertical_rows(
        labels, c2v, local, vertical=1, num_local=2, negatives_fraction=0.5,
        seed=0)
    # Positives 1, 2, 4 (local ids of 3, 1, 1); half of the 2 others as negatives.
    self.assertAllEqual(rows[:3], [1, 2, 4])
    self.assertAllEqual(targets[:3], [[0, 1], [1, 0], [1, 0]])
    self.assertLen(rows, 4)
    self.assertIn(rows[3], (0, 3))
    self.assertAllEqual(targets[3], [0, 0])

  def test_train_classifier_fits_separable_features(self):
    import keras  # pylint: disable=g-import-not-at-top
    from kc_keras.configs import trainer as trainer_cfg  # pylint: disable=g-import-not-at-top
    from kc_keras.modeling.models import classifier  # pylint: disable=g-import-not-at-top
    from kc_keras.configs import model as model_cfg  # pylint: disable=g-import-not-at-top
    config = model_cfg.ModelConfig()
    config.backbone.filters = (4,)
    config.head.head_type = "fc_fc"
    config.head.s1, config.head.s2 = 8, 6
    config.self_paced.mode = "none"
    network = classifier.build_classifier(config, [0, 0, 0], (8, 8, 1))
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 3, 300)
    features = np.eye(6, dtype=np.float32)[labels] * 3 + rng.normal(
        0, 0.1, (300, 6)).astype(np.float32)
    targets = np.eye(3, dtype=np.float32)[labels]
    trainer = trainer_cfg.TrainerConfig(train_steps=200, steps_per_loop=50,
                                        checkpoint_interval=50)
    trainer.optimizer.learning_rate = 0.05
    before = [w.numpy().copy() for w in network.backbone.weights]
    logs = frozen_features.train_classifier(network, features, targets,
                                            trainer, batch_size=32, seed=0)
    logits = network.head.classifier(features).numpy()
    self.assertGreater((logits.argmax(1) == labels).mean(), 0.95)
    self.assertLess(logs["loss"], 0.5)
    for a, b in zip(before, network.backbone.weights):  # untouched
      self.assertAllEqual(a, b.numpy())
    del keras
