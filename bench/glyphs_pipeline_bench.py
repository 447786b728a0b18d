"""Input pipeline vs training step on a built glyph dataset: images/s of each, and their ratio.

The pipeline is the package's own (`tfrecord` source + `pipeline.build_dataset`, training
mode: shuffle, decode PNG, batch, prefetch); the step is one `train_on_batch` of the
default classifier (small_cnn, FC4096-SC512, vertical self-paced scaling) over all the
dataset's classes, on one fixed batch (no input pipeline). The goal: the pipeline
delivers >= 3x what a step consumes. The format alone (read, parse, decode the PNG,
batch; no shuffle, no per-record error isolation) is timed too.

  python bench/glyphs_pipeline_bench.py --data_dir=DIR [--batch_size=128]
"""

import os
import time

from kc_keras.common import startup

startup.quiet_tensorflow()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kc_keras.configs import data as data_config  # noqa: E402
from kc_keras.configs import model as model_config  # noqa: E402
from kc_keras.dataloaders import factory  # noqa: E402
from kc_keras.dataloaders import pipeline  # noqa: E402
from kc_keras.modeling.models import classifier  # noqa: E402

flags.DEFINE_string("data_dir", None, "A directory written by build_glyphs.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_integer("pipeline_batches", 200, "Batches timed for the pipeline.")
flags.DEFINE_integer("steps", 10, "Training steps timed.")
flags.DEFINE_integer("image_size", 32, "Image side (the dataset's).")
flags.mark_flags_as_required(["data_dir"])
FLAGS = flags.FLAGS


def pipeline_rate(config, batch_size, batches):
  """Images/s of `build_dataset` in training mode, after 10 warm-up batches."""
  source = factory.build_source(config)
  ds = pipeline.build_dataset(source, "train", config, training=True,
                              global_batch_size=batch_size)
  it = iter(ds)
  for _ in range(10):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    images, _ = next(it)
  seconds = time.perf_counter() - start
  return batches * batch_size / seconds, images.shape, source.hierarchy


def decode_rate(pattern, batch_size, batches, image_size):
  """Images/s of the format alone: read, parse, decode PNG, resize, batch."""
  files = sorted(tf.io.gfile.glob(pattern))

  def parse(record):
    feature = tf.io.parse_single_example(
        record, {"image/encoded": tf.io.FixedLenFeature([], tf.string),
                 "image/class/label": tf.io.FixedLenFeature([], tf.int64)})
    image = tf.io.decode_png(feature["image/encoded"], channels=1)
    image = tf.image.convert_image_dtype(image, tf.float32)
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
    return image, feature["image/class/label"]

  ds = (tf.data.TFRecordDataset(files).repeat()
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size).prefetch(tf.data.AUTOTUNE))
  it = iter(ds)
  for _ in range(10):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch_size / (time.perf_counter() - start)


def step_rate(hierarchy, batch_size, steps, image_size):
  """Images/s of the default classifier's training step, after 2 warm-up steps."""
  model = classifier.build_classifier(
      model_config.ModelConfig(), hierarchy.class_to_vertical,
      (image_size, image_size, 1))
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.BinaryCrossentropy(from_logits=True))
  rng = np.random.default_rng(0)
  x = rng.random((batch_size, image_size, image_size, 1), dtype=np.float32)
  y = np.zeros((batch_size, hierarchy.num_classes), np.float32)
  y[np.arange(batch_size), rng.integers(0, hierarchy.num_classes, batch_size)] = 1
  for _ in range(2):
    model.train_on_batch(x, y)
  start = time.perf_counter()
  for _ in range(steps):
    model.train_on_batch(x, y)
  return steps * batch_size / (time.perf_counter() - start)


def main(argv):
  del argv
  d = FLAGS.data_dir
  config = data_config.DataConfig(
      source="tfrecord",
      tfrecord=data_config.TFRecordConfig(
          train_pattern=os.path.join(d, "train-*.tfrecord"),
          eval_pattern=os.path.join(d, "eval-*.tfrecord"),
          hierarchy_file=os.path.join(d, "hierarchy.json"),
          image_size=FLAGS.image_size, channels=1))
  print(f"tensorflow {tf.__version__}, {os.cpu_count()} CPUs")
  images_per_s, shape, hierarchy = pipeline_rate(
      config, FLAGS.batch_size, FLAGS.pipeline_batches)
  print(f"pipeline: {images_per_s:,.0f} images/s (batches {tuple(shape)})")
  raw = decode_rate(config.tfrecord.train_pattern, FLAGS.batch_size,
                    FLAGS.pipeline_batches, FLAGS.image_size)
  print(f"format alone (read, parse, decode PNG, resize, batch): {raw:,.0f} images/s")
  step = step_rate(hierarchy, FLAGS.batch_size, FLAGS.steps, FLAGS.image_size)
  print(f"training step ({hierarchy.num_classes} classes, "
        f"{hierarchy.num_verticals} verticals): {step:,.0f} images/s")
  print(f"pipeline / step = {images_per_s / step:.1f}x (goal >= 3x)")


if __name__ == "__main__":
  app.run(main)
