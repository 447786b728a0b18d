"""DistillationConfig: target source, blend, top-K, loss, teachers, cache."""

import dataclasses
from typing import Optional

from official.modeling import hyperparams

TARGET_SOURCES = ("labels", "online", "cache")
LOSS_TYPES = ("sigmoid", "softmax")


@dataclasses.dataclass
class DistillationConfig(hyperparams.Config):
  """How the student (or a generalist/specialist) gets its targets.

  Attributes:
    alpha: soft-target weight, target = alpha * z* + (1 - alpha) * z; 1.0 is
      the paper, 0.0 is hard labels only (generalist/specialist training).
    top_k: K, teacher classes kept per sample (paper: 100); None: derived
      at parse time, min(100, largest vertical).
    temperature: tau > 0, soft targets are sigmoid(teacher logits / tau);
      1.0 is the paper; tau > 1 softens teachers that are near-certain on
      the training images (e.g. teachers that memorised them).
    target_source: 'labels' (no teachers, needs alpha == 0), 'online'
      (teachers in the training step) or 'cache' (offline target cache).
    loss_type: 'sigmoid' (paper) or 'softmax'.
    max_teachers_per_example: T, teacher slots per sample.
    cache_dir: the offline target cache (needed for 'cache').
    cache_shard_size: examples per cache shard file.
    verify_cache_checksums: recompute shard sha256 when opening the cache.
    teachers_dir: where the per-vertical teachers are saved (read for
      'online' and to write a cache); '' means `<model_dir>/teachers`
      (resolved by `training.specialists.teachers_dir_of`).
  """
  alpha: float = 1.0
  top_k: Optional[int] = 100
  temperature: float = 1.0
  target_source: str = "online"
  loss_type: str = "sigmoid"
  max_teachers_per_example: int = 1
  cache_dir: str = ""
  cache_shard_size: int = 10000
  verify_cache_checksums: bool = True
  teachers_dir: str = ""

  def validate(self, path="distillation"):
    """Raises ValueError naming the full key path of the first bad field.

    Args:
      path: this config's key path in the experiment (for messages).

    Raises:
      ValueError: e.g. 'distillation.top_k must be >= 1, got 0'.
    """
    super().validate()
    if not 0.0 <= self.alpha <= 1.0:
      raise ValueError(f"{path}.alpha must be in [0, 1], got {self.alpha}.")
    if self.top_k is not None and self.top_k < 1:
      raise ValueError(f"{path}.top_k must be >= 1, got {self.top_k}.")
    if not 0.0 < self.temperature < float("inf"):
      raise ValueError(
          f"{path}.temperature must be a finite number > 0, got "
          f"{self.temperature}.")
    if self.target_source not in TARGET_SOURCES:
      raise ValueError(
          f"{path}.target_source must be one of {TARGET_SOURCES}, got "
          f"{self.target_source!r}.")
    if self.loss_type not in LOSS_TYPES:
      raise ValueError(
          f"{path}.loss_type must be one of {LOSS_TYPES}, got "
          f"{self.loss_type!r}.")
    if self.max_teachers_per_example < 1:
      raise ValueError(
          f"{path}.max_teachers_per_example must be >= 1, got "
          f"{self.max_teachers_per_example}.")
    if self.cache_shard_size < 1:
      raise ValueError(
          f"{path}.cache_shard_size must be >= 1, got {self.cache_shard_size}.")
    if self.target_source == "labels" and self.alpha != 0.0:
      raise ValueError(
          f"{path}.alpha={self.alpha} needs soft targets but "
          f"{path}.target_source='labels' has none; set {path}.alpha=0.0.")
    if self.target_source == "cache" and not self.cache_dir:
      raise ValueError(
          f"{path}.target_source='cache' needs {path}.cache_dir.")
