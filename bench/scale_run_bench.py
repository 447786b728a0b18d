"""Benchmark: the FC-SC student trained on 100K classes of the embedded data."""

# The real path: `EmbeddedSource` (N classes, M uneven verticals) ->
# `pipeline.build_dataset` with a soft-target stream zipped in as `extra`
# (K ids of the label's own vertical per example, in raw order, like the
# offline cache) -> `model_builder.build_kc_model` (target_source 'cache',
# alpha 1) -> `model.fit`. Reports examples/s of the training steps (after
# --warmup_steps), the input pipeline alone (examples/s), the process's peak
# resident memory, and a breakdown of the step's 100K-wide pieces.
#
#   .venv/bin/python bench/scale_run_bench.py --steps=200

import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import bench_utils  # bench/ is on sys.path when run as a script
from kc_keras.configs import data as data_cfg
from kc_keras.configs import trainer as trainer_cfg
from kc_keras.dataloaders import factory
from kc_keras.dataloaders import pipeline
from kc_keras.distillation import soft_targets as soft_targets_lib
from kc_keras.losses import sigmoid_cross_entropy
from kc_keras.training import model_builder
from kc_keras.training import optimizers

flags.DEFINE_integer("num_classes", 100_000, "N.")
flags.DEFINE_integer("num_verticals", 20, "M.")
flags.DEFINE_integer("image_size", 32, "H = W of the embedded images.")
flags.DEFINE_integer("batch_size", 32, "B.")
flags.DEFINE_integer("top_k", 100, "K soft targets per example.")
flags.DEFINE_list("filters", ["32", "64", "128"], "small_cnn filters.")
flags.DEFINE_integer("s1", 4096, "Head s1 (FC).")
flags.DEFINE_integer("s2", 512, "Head s2 (SC).")
flags.DEFINE_integer("steps", 200, "Training steps.")
flags.DEFINE_integer("warmup_steps", 20, "Steps left out of the rate.")
flags.DEFINE_integer("pipeline_batches", 200, "Batches of the pipeline run.")
flags.DEFINE_integer("repeats", 10, "Repeats of the breakdown timings.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("epochs", 3, "fit epochs the steps are split into (one "
                     "mean loss each, to show it falls).")
flags.DEFINE_integer("profile_steps", 0,
                     "Steps traced by TensorFlow's profiler after the timed "
                     "run (0: none); prints the self time per op type and "
                     "the largest ops.")
FLAGS = flags.FLAGS


def target_stream(source, split):
  """Cache-like soft targets: K ids of the label's vertical, in raw order.

  Example i (class c = label) gets ids start_v + (c - start_v + j) mod N_v,
  j = 0..K-1, with probabilities 1 / (j + 1): shaped like a teacher top-K.
  """
  hierarchy = source.hierarchy
  c2v = np.asarray(hierarchy.class_to_vertical)
  sizes = np.bincount(c2v)
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  k = FLAGS.top_k
  start_of = tf.constant(starts[c2v], tf.int32)
  size_of = tf.constant(sizes[c2v], tf.int32)
  probs = tf.constant(1.0 / np.arange(1, k + 1), tf.float32)

  def make(element):
    label = element["label_ids"][0]
    start, size = start_of[label], size_of[label]
    offsets = tf.range(k, dtype=tf.int32)
    ids = start + (label - start + offsets) % size
    valid = offsets < size
    return {"example_id": element["example_id"],
            "target_ids": tf.where(valid, ids, -1),
            "target_probs": tf.where(valid, probs, 0.0)}

  return source.raw_dataset(split).map(make)


def make_data_config():
  config = data_cfg.DataConfig()
  config.source = "embedded"
  config.embedded.num_classes = FLAGS.num_classes
  config.embedded.num_verticals = FLAGS.num_verticals
  config.embedded.vertical_sizes = "uneven"
  config.embedded.image_size = FLAGS.image_size
  config.embedded.train_examples_per_class = 1
  config.shuffle_buffer_size = 1000
  return config


def breakdown(num_classes, batch, logits_shape, repeats):
  """Median ms of the step's N-wide pieces on random data."""
  rng = np.random.default_rng(0)
  k = FLAGS.top_k
  ids = tf.constant(rng.integers(0, num_classes, size=(batch, k)), tf.int32)
  probs = tf.constant(rng.uniform(size=(batch, k)), tf.float32)
  labels = tf.constant(rng.integers(0, num_classes, size=(batch, 1)),
                       tf.int32)
  logits = tf.random.normal(logits_shape)
  loss = sigmoid_cross_entropy.SigmoidCrossEntropy()

  @tf.function
  def loss_fwd_bwd():
    with tf.GradientTape() as tape:
      tape.watch(logits)
      value = tf.reduce_sum(loss(soft_targets_lib.multi_hot(labels,
                                                            num_classes),
                                 logits))
    return tape.gradient(value, logits)

  pieces = {
      "dense_soft_targets (scatter of B*K)": tf.function(
          lambda: soft_targets_lib.dense_soft_targets(ids, probs,
                                                      num_classes)),
      "multi_hot (labels)": tf.function(
          lambda: soft_targets_lib.multi_hot(labels, num_classes)),
      "sigmoid CE fwd+bwd": loss_fwd_bwd,
      "top-5 of B x N logits": tf.function(
          lambda: tf.math.top_k(logits, k=5)),
  }
  return {name: bench_utils.median_seconds(fn, repeats)
          for name, fn in pieces.items()}


def main(argv):
  del argv
  b = FLAGS.batch_size
  data_config = make_data_config()
  source = factory.build_source(data_config)
  hierarchy = source.hierarchy
  sizes = np.bincount(np.asarray(hierarchy.class_to_vertical))

  def dataset():
    return pipeline.build_dataset(
        source, "train", data_config, training=True, global_batch_size=b,
        extra=target_stream(source, "train"))

  # Input pipeline alone.
  iterator = iter(dataset())
  for _ in range(5):
    next(iterator)
  start = time.perf_counter()
  for _ in range(FLAGS.pipeline_batches):
    next(iterator)
  pipeline_rate = FLAGS.pipeline_batches * b / (time.perf_counter() - start)
  del iterator

  task = bench_utils.student_task(FLAGS.filters, FLAGS.s1, FLAGS.s2,
                                  target_source="cache", alpha=1.0,
                                  top_k=FLAGS.top_k)
  # The student recipe of the shipped experiments (configs/experiments.py):
  # vertical-level self-paced scales starting at the prior, Adam with its
  # epsilon scaled by N.
  task.model.self_paced.mode = "vertical"
  task.model.self_paced.init = "prior"
  task.model.self_paced.learning_rate_multiplier = 30.0
  model = model_builder.build_kc_model(
      task, hierarchy, source.image_shape, global_batch_size=b)
  model_builder.build_variables(model, source.image_shape)
  optimizer_config = trainer_cfg.OptimizerConfig(
      type="adam", learning_rate=FLAGS.learning_rate, schedule="constant",
      epsilon=1e-7 * hierarchy.num_classes)
  model.compile(optimizer=optimizers.build_optimizer(optimizer_config,
                                                     FLAGS.steps))
  # Python in train_step runs only while tracing: this counts (re)traces.
  traces = [0]
  train_step = model.train_step

  def counted_train_step(data):
    traces[0] += 1
    return train_step(data)

  model.train_step = counted_train_step
  timer = bench_utils.StepTimes()
  history = model.fit(dataset(), steps_per_epoch=FLAGS.steps // FLAGS.epochs,
                      epochs=FLAGS.epochs, callbacks=[timer], verbose=0)
  times = np.asarray(timer.times)
  timed = np.diff(times[FLAGS.warmup_steps - 1:])
  step_seconds = float(np.median(timed))
  train_rate = b * len(timed) / float(times[-1] - times[FLAGS.warmup_steps - 1])
  peak_rss = bench_utils.peak_rss_bytes()
  pieces = breakdown(hierarchy.num_classes, b, (b, hierarchy.num_classes),
                     FLAGS.repeats)

  print(f"embedded: N={hierarchy.num_classes} M={hierarchy.num_verticals} "
        f"(uneven, sizes {sizes.min()}..{sizes.max()}) image "
        f"{FLAGS.image_size}px; student small_cnn {FLAGS.filters} + fc_sc "
        f"s1={FLAGS.s1} s2={FLAGS.s2}, {model.student.count_params():,} "
        f"params; B={b} K={FLAGS.top_k}; Adam; "
        f"{bench_utils.machine_line()}; {bench_utils.load_line()}")
  print("| measure | value | goal |")
  print("|---|---|---|")
  print(f"| steps (timed after {FLAGS.warmup_steps}) | {FLAGS.steps} | "
        "a few hundred |")
  print(f"| train step, median | {1000 * step_seconds:.0f} ms | |")
  print(f"| training examples/s | {train_rate:.1f} | |")
  print(f"| input pipeline alone, examples/s | {pipeline_rate:.1f} | "
        f">= 3x training = {3 * train_rate:.1f} |")
  print(f"| pipeline / training | {pipeline_rate / train_rate:.1f}x | >= 3x |")
  print(f"| peak RSS | {peak_rss / 2**30:.2f} GiB | < 8 GB |")
  print(f"| train_step traces | {traces[0]} | 1 |")
  losses = ", ".join(f"{x:.1f}" for x in history.history["loss"])
  print(f"| mean loss per fit epoch of {FLAGS.steps // FLAGS.epochs} steps | "
        f"{losses} | finite, falling |")
  print()
  print("| piece of the step (B x N) | median ms | share of step |")
  print("|---|---|---|")
  for name, seconds in pieces.items():
    print(f"| {name} | {1000 * seconds:.2f} | "
          f"{100 * seconds / step_seconds:.1f}% |")
  if FLAGS.profile_steps:
    print_profile(model, dataset())


def print_profile(model, data):
  """The profiler's per-op self time of `--profile_steps` fit steps."""
  iterator = iter(data)
  step = model.make_train_function()
  step(iterator)  # traced before the profile
  # The input pipeline's threads (Dataset) and idle time are not the step's ops.
  rows = [r for r in bench_utils.op_self_times(lambda: step(iterator),
                                               FLAGS.profile_steps)
          if r["type"] not in ("IDLE", "Dataset")]
  total = sum(r["self_us"] for r in rows)
  print(f"\nProfile of {FLAGS.profile_steps} steps "
        f"({total / 1000 / FLAGS.profile_steps:.0f} ms of op self time per step, "
        "input pipeline and idle time left out):")
  print("| op type | self ms / step | share |")
  print("|---|---|---|")
  for op_type, us, share in bench_utils.op_type_shares(rows)[:12]:
    print(f"| {op_type} | {us / 1000 / FLAGS.profile_steps:.1f} | "
          f"{100 * share:.1f}% |")
  print("\n| largest ops | type | self ms / step | share |")
  print("|---|---|---|---|")
  for row in rows[:12]:
    name = "/".join(row["name"].split("/")[-3:])  # the layer and op
    print(f"| {name} | {row['type']} | "
          f"{row['self_us'] / 1000 / FLAGS.profile_steps:.1f} | "
          f"{100 * row['self_us'] / total:.1f}% |")


if __name__ == "__main__":
  app.run(main)
