"""Benchmark: our train_step (KnowledgeConcentrationModel) vs plain Keras fit."""

# The same network (`model_builder.build_network`, FC-SC head) trained with
# `model.fit` two ways on the same in-memory batch, repeated:
#   ours:  `KnowledgeConcentrationModel` (generalist: alpha 0, hard labels):
#          custom train_step, multi-hot built in the graph, per-example
#          sigmoid CE, four trackers;
#   plain: the bare network compiled with keras.losses.BinaryCrossentropy
#          (from_logits) on multi-hot targets and no metrics;
#   dense: the same backbone with a plain Dense(N) head, compiled the same
#          way (fewer weights than the FC-SC head: not like for like, it shows
#          what the head itself costs).
# Runs alternate (--runs each); each run's median step time after a warm-up
# epoch; the table gives the median over runs, images/s and parameter counts.
# Goal: ours / plain <= 1.05.
#
#   .venv/bin/python bench/fit_overhead_bench.py

import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import bench_utils  # bench/ is on sys.path when run as a script
from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.distillation import soft_targets as soft_targets_lib
from kc_keras.training import model_builder

flags.DEFINE_integer("num_classes", 1000, "N.")
flags.DEFINE_integer("num_verticals", 10, "M.")
flags.DEFINE_integer("batch_size", 32, "B.")
flags.DEFINE_integer("image_size", 16, "H = W.")
flags.DEFINE_list("filters", ["16", "32"], "small_cnn filters.")
flags.DEFINE_integer("s1", 256, "Head s1.")
flags.DEFINE_integer("s2", 32, "Head s2.")
flags.DEFINE_integer("steps", 100, "Steps per run.")
flags.DEFINE_integer("runs", 3, "Runs of each (alternating).")
flags.DEFINE_float("learning_rate", 0.01, "SGD learning rate.")
FLAGS = flags.FLAGS

CHANNELS = 3


def timed_fit(model, dataset):
  """Median seconds per step of one fit epoch (after a warm-up epoch)."""
  model.fit(dataset, steps_per_epoch=FLAGS.steps, epochs=1, verbose=0)
  timer = bench_utils.StepTimes()
  model.fit(dataset, steps_per_epoch=FLAGS.steps, epochs=1, verbose=0,
            callbacks=[timer])
  return float(np.median(np.diff(timer.times)))


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  n, b = FLAGS.num_classes, FLAGS.batch_size
  c2v = np.sort(bench_utils.uneven_class_to_vertical(n, FLAGS.num_verticals))
  hierarchy = hierarchy_lib.Hierarchy(
      class_names=tuple(f"c{c}" for c in range(n)),
      vertical_names=tuple(f"v{v}" for v in range(FLAGS.num_verticals)),
      class_to_vertical=tuple(int(v) for v in c2v))
  image_shape = (FLAGS.image_size, FLAGS.image_size, CHANNELS)
  images = rng.uniform(size=(b, *image_shape)).astype(np.float32)
  labels = rng.integers(0, n, size=(b, 1)).astype(np.int32)
  multi_hot = soft_targets_lib.multi_hot(labels, n)

  task = bench_utils.student_task(FLAGS.filters, FLAGS.s1, FLAGS.s2,
                                  target_source="labels", alpha=0.0)

  ours = model_builder.build_kc_model(task, hierarchy, image_shape, b)
  ours.compile(optimizer=keras.optimizers.SGD(FLAGS.learning_rate))
  ours_data = tf.data.Dataset.from_tensors(
      (images, {"label_ids": labels})).repeat()

  plain = model_builder.build_network(task.model, hierarchy, image_shape)
  plain.compile(optimizer=keras.optimizers.SGD(FLAGS.learning_rate),
                loss=keras.losses.BinaryCrossentropy(from_logits=True))
  plain_data = tf.data.Dataset.from_tensors((images, multi_hot)).repeat()

  # Its own backbone (a second build), so that no weights are shared.
  dense_input = keras.Input(image_shape)
  dense_backbone = model_builder.build_network(task.model, hierarchy,
                                               image_shape).backbone
  dense = keras.Model(dense_input, keras.layers.Dense(n)(
      dense_backbone(dense_input)))
  dense.compile(optimizer=keras.optimizers.SGD(FLAGS.learning_rate),
                loss=keras.losses.BinaryCrossentropy(from_logits=True))

  # ours trains the same network as plain: the same parameters.
  models = {"ours": (ours, ours_data, plain.count_params()),
            "plain": (plain, plain_data, plain.count_params()),
            "dense": (dense, plain_data, dense.count_params())}
  times = {key: [] for key in models}
  for _ in range(FLAGS.runs):
    for key, (model, data, _) in models.items():
      times[key].append(timed_fit(model, data))
  ours_s, plain_s = np.median(times["ours"]), np.median(times["plain"])
  print(f"N={n} M={FLAGS.num_verticals} B={b} image={FLAGS.image_size}px "
        f"small_cnn {FLAGS.filters} + fc_sc s1={FLAGS.s1} s2={FLAGS.s2}; "
        f"{FLAGS.runs} alternating runs x {FLAGS.steps} steps; "
        f"{bench_utils.load_line()}")
  print("| model.fit of | parameters | median ms / step | images/s | runs (ms) |")
  print("|---|---|---|---|---|")
  for name in ("ours: KnowledgeConcentrationModel.train_step",
               "plain: network + BinaryCrossentropy",
               "dense: backbone + Dense(N) + BinaryCrossentropy"):
    key = name.split(":")[0]
    seconds = np.median(times[key])
    runs = ", ".join(f"{1000 * t:.1f}" for t in times[key])
    print(f"| {name} | {models[key][2]:,} | {1000 * seconds:.1f} | "
          f"{b / seconds:.1f} | {runs} |")
  print(f"\nours / plain = {ours_s / plain_s:.3f} (goal <= 1.05)")


if __name__ == "__main__":
  app.run(main)
