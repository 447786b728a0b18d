"""Probe: how each vertical's block of logits separates images, for a trained run.

Prints `kc_keras.metrics.vertical_logit_statistics` for the largest verticals
of a run's eval split: on the vertical's own images the block's mean, spread,
true-class logit, best other class, norm and the share of the norm in
the block's common offset; on the other verticals' images
its mean, max and norm. Used in docs/RESULTS.md to compare a student with and
without self-paced scaling (which fixes the norm at gamma_v on every image).

  .venv/bin/python bench/vertical_logits_probe.py --model_dir=runs/embedded_rich/student_fc_sc_d
"""

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from kc_keras.dataloaders import factory
from kc_keras.dataloaders import pipeline
from kc_keras.metrics import vertical_logit_statistics as stats_lib
from kc_keras.training import modes
from kc_keras.training import restore as restore_lib

flags.DEFINE_string("model_dir", None, "A trained run (params.yaml + checkpoints).")
flags.DEFINE_integer("batches", 10, "Eval batches to read (of the run's eval batch size).")
flags.DEFINE_integer("verticals", 6, "How many of the largest verticals to print.")
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS

COLUMNS = ("own_mean", "own_spread", "own_true", "own_best_other", "own_top1",
           "own_norm", "own_offset_share", "other_mean", "other_max", "other_norm")


def main(argv):
  del argv
  # Read-only: the run's params.yaml and checkpoints are read, nothing is
  # written to its directory (a training Session would record params.yaml).
  params = modes.load_params_of(FLAGS.model_dir)
  network, hierarchy, restored, _ = restore_lib.load_network(
      params, FLAGS.model_dir)
  score = tf.function(lambda images: network(images, training=False))
  dataset = pipeline.build_dataset(
      factory.build_source(params.task.data), "eval", params.task.data,
      training=False, global_batch_size=params.task.eval_batch_size)
  logits, labels = [], []
  for images, features in dataset.take(FLAGS.batches):
    logits.append(score(images).numpy())
    labels.append(features["label_ids"].numpy()[:, 0])
  c2v = hierarchy.class_to_vertical
  stats = stats_lib.vertical_logit_statistics(
      np.concatenate(logits), np.concatenate(labels), c2v)
  print(f"{restored}: {sum(len(l) for l in labels)} eval images")
  print("| vertical (classes, own images) | " + " | ".join(COLUMNS) + " |")
  print("|---" * (len(COLUMNS) + 1) + "|")
  for row in sorted(stats, key=lambda s: -s["num_classes"])[:FLAGS.verticals]:
    values = " | ".join(f"{row[c]:.2f}" for c in COLUMNS)
    print(f"| {row['vertical']} ({row['num_classes']}, {row['num_own_images']}) | {values} |")


if __name__ == "__main__":
  app.run(main)
