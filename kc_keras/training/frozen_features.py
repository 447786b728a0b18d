"""Teachers on frozen features: the classifier of a vertical trained on features computed once.

When a teacher's backbone and hidden layers are frozen copies of a trunk
(`task.specialists.freeze='backbone_and_hidden'`), everything below its
classifier is one fixed function phi(x) (frozen layers run in inference mode),
so the teacher is a logistic regression on phi(x). Computing phi once for the
training split and training each vertical's classifier on its rows gives the
same model as stepping the whole network, without M full forward passes per
step (the trunk runs once instead of once per teacher and step).
"""

from typing import Dict, Tuple

import keras
import numpy as np
import tensorflow as tf

from kc_keras.configs import trainer as trainer_cfg
from kc_keras.losses import sigmoid_cross_entropy
from kc_keras.training import optimizers


def features_of(network: keras.Model, images: tf.Tensor) -> tf.Tensor:
  """phi(x): the input of `network.head.classifier`, in inference mode."""
  return network.classifier_inputs(images, training=False)


def compute_features(network: keras.Model, dataset: tf.data.Dataset
                     ) -> Tuple[np.ndarray, np.ndarray]:
  """phi(x) and `label_ids` of every example of a batched dataset.

  Returns:
    `(features float32 [n, d], label_ids int32 [n, L])`.
  """
  phi = tf.function(lambda images: features_of(network, images))
  features, labels = [], []
  for images, batch in dataset:
    features.append(phi(images).numpy())
    labels.append(batch["label_ids"].numpy())
  return np.concatenate(features), np.concatenate(labels)


def vertical_rows(label_ids: np.ndarray, class_to_vertical: np.ndarray,
                  local_index: np.ndarray, vertical: int, num_local: int,
                  negatives_fraction: float, seed: int
                  ) -> Tuple[np.ndarray, np.ndarray]:
  """Rows of one vertical with local multi-hot targets, plus sampled negatives.

  Args:
    label_ids: `[n, L]` global ids padded with -1.
    class_to_vertical: `[N]`.
    local_index: `[N]`, a class's position inside its vertical.
    vertical: the teacher's vertical.
    num_local: N_v.
    negatives_fraction: fraction of the other verticals' rows kept with an
      all-zero target.
    seed: negatives sampling seed.

  Returns:
    `(row indices [r], targets float32 [r, N_v])`.
  """
  valid = label_ids >= 0
  safe = np.where(valid, label_ids, 0)
  in_vertical = valid & (class_to_vertical[safe] == vertical)
  positive_rows = np.flatnonzero(in_vertical.any(axis=1))
  targets = np.zeros((positive_rows.size, num_local), np.float32)
  for slot in range(label_ids.shape[1]):
    rows = in_vertical[positive_rows, slot]
    targets[np.flatnonzero(rows),
            local_index[safe[positive_rows[rows], slot]]] = 1.0
  others = np.setdiff1d(np.arange(label_ids.shape[0]), positive_rows)
  count = int(round(negatives_fraction * others.size))
  negatives = np.random.RandomState(seed).choice(others, count, replace=False)
  rows = np.concatenate([positive_rows, np.sort(negatives)])
  targets = np.concatenate(
      [targets, np.zeros((count, num_local), np.float32)])
  return rows, targets


def train_classifier(network: keras.Model, features: np.ndarray,
                     targets: np.ndarray, config: trainer_cfg.TrainerConfig,
                     batch_size: int, seed: int) -> Dict[str, float]:
  """Trains `network.head.classifier` (and self-paced scales) on fixed features.

  Minimises the same per-example sigmoid cross-entropy as the full step,
  sum over the vertical's classes, mean over a batch, for
  `config.train_steps` steps of `batch_size` rows drawn without replacement
  within each pass over the rows (seeded).

  Returns:
    `{'loss': mean loss of the last `config.steps_per_loop` steps}`.
  """
  variables = (network.head.classifier.trainable_variables +
               network.self_paced.trainable_variables)
  optimizer = optimizers.build_optimizer(config.optimizer, config.train_steps)
  optimizer.build(variables)

  @tf.function
  def step(x, z):
    with tf.GradientTape() as tape:
      logits = network.self_paced(network.head.classifier(x))
      loss = tf.reduce_mean(
          sigmoid_cross_entropy.per_example_cross_entropy(z, logits))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  rng = np.random.RandomState(seed)
  order = np.empty(0, np.int64)
  losses = []
  for _ in range(config.train_steps):
    if order.size < batch_size:
      order = np.concatenate([order, rng.permutation(features.shape[0])])
    batch, order = order[:batch_size], order[batch_size:]
    losses.append(float(step(tf.constant(features[batch]),
                             tf.constant(targets[batch]))))
  return {"loss": float(np.mean(losses[-config.steps_per_loop:]))}
