"""Benchmark: the structurally connected classifier against naive implementations.

Times one forward + backward pass of the SC classifier (logit_c = h[v(c)] . W[c])
at a given size, three ways, side by side in one process:
  chunked: `StructurallyConnectedClassifier` (one padded batched contraction);
  masked:  a dense [M*s2, N] matrix with W[c] in vertical v(c)'s rows, zeros
           elsewhere (the N x (M*s2) reference);
  loop:    a Python loop of M matmuls over each vertical's classes.
Prints medians after a warm-up and the ratios to the chunked version.

  .venv/bin/python bench/sc_head_bench.py --num_classes=100000 --num_verticals=20 \
      --units=512 --batch_size=32
"""

import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from kc_keras.modeling.layers import structurally_connected

flags.DEFINE_integer("num_classes", 100_000, "N.")
flags.DEFINE_integer("num_verticals", 20, "M (uneven, Zipf-like sizes).")
flags.DEFINE_integer("units", 512, "s2, units per vertical block.")
flags.DEFINE_integer("batch_size", 32, "B.")
flags.DEFINE_integer("repeats", 10, "Timed repetitions (median reported).")
flags.DEFINE_list("methods", ["chunked", "masked", "loop"], "What to time.")
FLAGS = flags.FLAGS


def uneven_class_to_vertical(num_classes: int, num_verticals: int,
                             seed: int = 0) -> np.ndarray:
  """Zipf-like vertical sizes (each >= 1), classes grouped by vertical."""
  weights = 1.0 / np.arange(1, num_verticals + 1)
  sizes = np.maximum(1, np.floor(weights / weights.sum() * num_classes))
  sizes = sizes.astype(np.int64)
  sizes[0] += num_classes - sizes.sum()
  c2v = np.repeat(np.arange(num_verticals), sizes)
  return np.random.RandomState(seed).permutation(c2v)


def _timed(fn, repeats: int) -> float:
  fn()  # warm-up (tracing)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main(argv):
  del argv
  n, m, s2, b = (FLAGS.num_classes, FLAGS.num_verticals, FLAGS.units,
                 FLAGS.batch_size)
  c2v = uneven_class_to_vertical(n, m)
  layer = structurally_connected.StructurallyConnectedClassifier(list(c2v))
  layer.build((b, m, s2))
  h = tf.random.normal((b, m, s2))
  kernel = layer.kernel.value  # the tf.Variable behind the Keras variable
  order = [np.flatnonzero(c2v == v) for v in range(m)]

  @tf.function
  def chunked():
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.square(layer(h)))
    return tape.gradient(loss, layer.trainable_variables)

  row_index = tf.constant((c2v[:, None] * s2 + np.arange(s2)[None, :]
                           ).reshape(-1), tf.int64)
  col_index = tf.constant(np.repeat(np.arange(n), s2), tf.int64)

  @tf.function
  def masked():
    with tf.GradientTape() as tape:
      tape.watch(kernel)
      dense = tf.scatter_nd(tf.stack([row_index, col_index], axis=1),
                            tf.reshape(kernel, [-1]), [m * s2, n])
      logits = tf.matmul(tf.reshape(h, [b, m * s2]), dense)
      loss = tf.reduce_sum(tf.square(logits))
    return tape.gradient(loss, kernel)

  @tf.function
  def loop():
    with tf.GradientTape() as tape:
      tape.watch(kernel)
      parts = [tf.matmul(h[:, v, :], tf.gather(kernel, order[v]),
                         transpose_b=True) for v in range(m)]
      loss = tf.add_n([tf.reduce_sum(tf.square(p)) for p in parts])
    return tape.gradient(loss, kernel)

  methods = {"chunked": chunked, "masked": masked, "loop": loop}
  results = {name: _timed(methods[name], FLAGS.repeats)
             for name in FLAGS.methods}
  flops = 3 * 2 * b * n * s2  # forward + two backward matmuls
  print(f"N={n} M={m} s2={s2} B={b} chunks={layer.num_chunks}")
  print("| method | median ms | vs chunked | GFLOP/s (useful) |")
  print("|---|---|---|---|")
  base = results.get("chunked")
  for name, seconds in results.items():
    ratio = f"{seconds / base:.2f}x" if base else "-"
    print(f"| {name} | {1000 * seconds:.1f} | {ratio} | "
          f"{flops / seconds / 1e9:.1f} |")


if __name__ == "__main__":
  app.run(main)
