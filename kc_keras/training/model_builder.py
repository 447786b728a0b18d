"""Builds the trainable model of an experiment: the network wrapped in the distillation model."""

from typing import Dict, Optional, Sequence

import keras
import numpy as np

from kc_keras.configs import kc_config
from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.modeling.models import classifier
from kc_keras.modeling.models import distiller


def build_network(model_config, hierarchy: hierarchy_lib.Hierarchy,
                  image_shape: Sequence[int]) -> keras.Model:
  """The bare network (images -> logits over `hierarchy`'s classes)."""
  return classifier.build_classifier(
      model_config,
      class_to_vertical=list(hierarchy.class_to_vertical),
      input_shape=tuple(image_shape),
  )


def build_kc_model(
    task: kc_config.TaskConfig,
    hierarchy: hierarchy_lib.Hierarchy,
    image_shape: Sequence[int],
    global_batch_size: int,
    teacher_bank=None,
    model_config=None,
) -> distiller.KnowledgeConcentrationModel:
  """Wraps the network in `KnowledgeConcentrationModel` with the task's targets.

  A generalist is `alpha = 0` with `target_source = 'labels'`; a student reads
  soft targets from the cache or from `teacher_bank` (online).

  Args:
    task: the task config.
    hierarchy: classes and verticals of the model's outputs.
    image_shape: `(H, W, C)`.
    global_batch_size: examples per step over all replicas.
    teacher_bank: frozen teachers for online targets.
    model_config: the network config (default `task.model`).
  """
  network = build_network(model_config or task.model, hierarchy, image_shape)
  distillation = task.distillation
  return distiller.KnowledgeConcentrationModel(
      student=network,
      class_to_vertical=list(hierarchy.class_to_vertical),
      alpha=distillation.alpha,
      loss_type=distillation.loss_type,
      top_k=distillation.top_k,
      target_source=distillation.target_source,
      teacher_bank=teacher_bank,
      global_batch_size=global_batch_size,
  )


def build_variables(model: keras.Model, image_shape: Sequence[int]) -> None:
  """Creates every variable by one forward pass on a zero batch."""
  model(np.zeros((1, *image_shape), np.float32), training=False)


def parameter_report(model: keras.Model) -> Dict[str, int]:
  """Parameter counts of the network that ships (teachers never included)."""
  network = model.student if hasattr(model, "student") else model
  return {
      "total": int(network.count_params()),
      "trainable": int(sum(np.prod(v.shape) for v in network.trainable_weights)),
  }
