"""Runs a scoring function over an evaluation split and reports the paper's metrics."""

from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.metrics import evaluation

ScoreFn = Callable[[tf.Tensor, Dict[str, tf.Tensor]], tf.Tensor]


def evaluate_scores(
    score_fn: ScoreFn,
    dataset: tf.data.Dataset,
    hierarchy: hierarchy_lib.Hierarchy,
    steps: int = -1,
) -> Dict:
  """Scores every batch of `dataset` and accumulates top-k, per-vertical top-1, mpvap.

  Args:
    score_fn: `(images, features) -> scores [B, N]` (logits or probabilities:
      every reported metric depends on the ranking only).
    dataset: finite dataset of `(images, features)` with `label_ids`.
    hierarchy: the class -> vertical map of the scores' columns.
    steps: number of batches (-1 = until the dataset ends).

  Returns:
    The evaluator's result dict plus `num_examples`.
  """
  evaluator = evaluation.Evaluator(
      np.asarray(hierarchy.class_to_vertical),
      vertical_names=list(hierarchy.vertical_names),
  )
  num_examples = 0
  for batch_index, (images, features) in enumerate(dataset):
    if 0 <= steps <= batch_index:
      break
    scores = score_fn(images, features)
    label_ids = features["label_ids"].numpy()
    evaluator.update(np.asarray(scores), label_ids)
    num_examples += label_ids.shape[0]
  if num_examples == 0:
    raise ValueError("The evaluation split produced no examples.")
  result = dict(evaluator.result())
  result["num_examples"] = num_examples
  return result
