"""Benchmark: one Adam update of the 100K student's variables, Keras' ops vs the fused kernel."""

# The variables of the FC4096-SC512 head at N = 100,000, M = 20 uneven verticals,
# s_b = 1024 (the shapes `heads.ClassificationHead` builds, as head_100k_bench): Keras 3's
# `keras.optimizers.Adam` (the update as separate backend ops) against
# `kc_keras.training.fused_adam.FusedAdam` (TensorFlow's `ResourceApplyAdam`, one
# kernel per variable), the same gradients, each in a `tf.function`, interleaved
# round by round; after the rounds the two sets of variables are compared.
#
#   .venv/bin/python bench/optimizer_update_bench.py --repeats=15

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import bench_utils  # bench/ is on sys.path when run as a script
from kc_keras.modeling import heads
from kc_keras.training import fused_adam

flags.DEFINE_integer("num_classes", 100_000, "N.")
flags.DEFINE_integer("num_verticals", 20, "M (uneven, Zipf-like sizes).")
flags.DEFINE_integer("feature_dim", 1024, "s_b, the backbone feature size.")
flags.DEFINE_integer("s1", 4096, "s1.")
flags.DEFINE_integer("s2", 512, "s2.")
flags.DEFINE_integer("repeats", 15, "Timed rounds.")
FLAGS = flags.FLAGS


def head_shapes():
  """The kernel and bias shapes of the FC-SC head."""
  c2v = bench_utils.uneven_class_to_vertical(FLAGS.num_classes,
                                             FLAGS.num_verticals)
  head = heads.ClassificationHead(list(c2v), head_type="fc_sc", s1=FLAGS.s1,
                                  s2=FLAGS.s2)
  head.build((1, FLAGS.feature_dim))
  return [tuple(w.shape) for w in head.trainable_weights]


def update_step(optimizer_cls, shapes, grads):
  variables = [keras.Variable(np.zeros(s, np.float32)) for s in shapes]
  optimizer = optimizer_cls(learning_rate=1e-3, epsilon=1e-2)
  optimizer.build(variables)

  @tf.function
  def step():
    optimizer.apply_gradients(zip(grads, variables))
    return variables[0].value

  return step, variables


def main(argv):
  del argv
  shapes = head_shapes()
  rng = np.random.default_rng(0)
  grads = [tf.constant(rng.normal(size=s).astype(np.float32)) for s in shapes]
  params = sum(int(np.prod(s)) for s in shapes)
  keras_step, keras_vars = update_step(keras.optimizers.Adam, shapes, grads)
  fused_step, fused_vars = update_step(fused_adam.FusedAdam, shapes, grads)
  times = bench_utils.interleaved_seconds(
      {"keras": keras_step, "fused": fused_step}, FLAGS.repeats)
  diff = max(float(np.max(np.abs(a.numpy() - b.numpy())))
             for a, b in zip(keras_vars, fused_vars))
  ratio, low, high = bench_utils.round_ratio_spread(times["keras"],
                                                    times["fused"])
  print(f"Adam update of {params:,} weights (FC-SC head, N={FLAGS.num_classes}, "
        f"M={FLAGS.num_verticals}, s_b={FLAGS.feature_dim}); {FLAGS.repeats} "
        f"interleaved rounds; {bench_utils.machine_line()}; "
        f"{bench_utils.load_line()}")
  print("| update | median ms |")
  print("|---|---|")
  for name in ("keras", "fused"):
    print(f"| {name} | {1000 * np.median(times[name]):.1f} |")
  print(f"\nkeras / fused per round: {ratio:.2f} [{low:.2f}-{high:.2f}]; "
        f"largest difference of the variables after "
        f"{FLAGS.repeats + 1} updates: {diff:.2e}")


if __name__ == "__main__":
  app.run(main)
