"""The representative images of int8 calibration: evenly spaced training examples."""

from typing import Iterator

import numpy as np

from kc_keras.dataloaders import factory


def training_images(data_config, num_examples: int) -> Iterator[np.ndarray]:
  """`num_examples` un-augmented TRAINING images, float32 `[1, H, W, C]` each.

  The representative dataset of int8 calibration: activation ranges must be
  those of the data the model was trained on. Sources list examples in a
  fixed (often class-major) order, so the images are taken evenly spaced
  over the whole split (every `total // num_examples`-th), not the first
  few classes.

  Args:
    data_config: the run's `task.data`.
    num_examples: how many images.

  Yields:
    One float32 `[1, H, W, C]` batch per image.
  """
  source = factory.build_source(data_config)
  raw = source.raw_dataset("train")
  total = source.num_examples("train")
  if total and total > num_examples:
    raw = raw.shard(num_shards=total // num_examples, index=0)
  dataset = raw.take(num_examples).map(source.decode).batch(1)
  for element in dataset:
    yield element["image"].numpy().astype(np.float32)
