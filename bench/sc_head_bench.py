"""Benchmark: the structurally connected classifier against naive implementations."""

# Times one forward + backward pass (dense gradients of the kernel and of h,
# as an optimizer needs them) of the SC classifier, logit_c = h[v(c)] . W[c],
# several ways, side by side in one process (interleaved rounds):
#   contiguous:     `StructurallyConnectedClassifier` as it trains when each
#                   vertical's classes are consecutive ids (the kernel split
#                   into the verticals' row blocks, one matmul per vertical);
#   chunked:        its `chunked_logits`, the form for any class order (one
#                   padded batched contraction, dense-gather gradients);
#   chunked_sparse: the same contraction with TF's own gather gradients (the
#                   implementation before the profiling fix: IndexedSlices
#                   densified by UnsortedSegmentSum);
#   masked:         a dense [M*s2, N] matrix with W[c] in vertical v(c)'s
#                   rows, zeros elsewhere (the N x (M*s2) reference);
#   loop:           a Python loop of M matmuls over each vertical's classes.
#
#   .venv/bin/python bench/sc_head_bench.py --num_classes=100000 \
#       --num_verticals=20 --units=512 --batch_size=32

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import bench_utils  # bench/ is on sys.path when run as a script
from kc_keras.modeling.layers import structurally_connected

flags.DEFINE_integer("num_classes", 100_000, "N.")
flags.DEFINE_integer("num_verticals", 20, "M (uneven, Zipf-like sizes).")
flags.DEFINE_integer("units", 512, "s2, units per vertical block.")
flags.DEFINE_integer("batch_size", 32, "B.")
flags.DEFINE_integer("chunk_size", None, "SC chunk size C (None: automatic).")
flags.DEFINE_integer("repeats", 10, "Timed repetitions (median reported).")
flags.DEFINE_integer("masked_repeats", 2,
                     "Timed repetitions of 'masked' (~12 GB, slow at 100K).")
flags.DEFINE_list("methods",
                  ["contiguous", "chunked", "chunked_sparse", "masked", "loop"],
                  "What to time.")
FLAGS = flags.FLAGS


def build_methods(c2v, units, batch_size, chunk_size=None):
  """The SC classifier forward+backward functions, keyed by method name.

  Every method computes the same logits for the classes numbered vertical
  by vertical (c2v sorted), so that `contiguous` applies.

  Args:
    c2v: int array [N], class -> vertical.
    units: s2.
    batch_size: B.
    chunk_size: C of the chunked layer (None: automatic).

  Returns:
    (dict name -> tf.function returning the gradients, the layer).
  """
  c2v = np.sort(c2v)
  n = c2v.size
  m = int(c2v.max()) + 1
  layer = structurally_connected.StructurallyConnectedClassifier(
      list(c2v), chunk_size=chunk_size, use_bias=False)
  layer.build((batch_size, m, units))
  h = tf.random.normal((batch_size, m, units))
  kernel = layer.kernel.value  # the tf.Variable behind the Keras variable
  order = [np.flatnonzero(c2v == v) for v in range(m)]

  def grads(loss_fn):
    with tf.GradientTape() as tape:
      tape.watch(h)
      loss = loss_fn()
    dh, dw = tape.gradient(loss, [h, kernel])
    return dh, tf.convert_to_tensor(dw)

  @tf.function
  def contiguous():
    return grads(lambda: tf.reduce_sum(tf.square(layer(h))))

  @tf.function
  def chunked():
    return grads(lambda: tf.reduce_sum(tf.square(layer.chunked_logits(h))))

  @tf.function
  def chunked_sparse():
    def loss_fn():
      w_chunks = tf.reshape(
          tf.gather(kernel, layer._gather_index),  # pylint: disable=protected-access
          (layer.num_chunks, layer.resolved_chunk_size, units))
      h_chunks = tf.gather(h, layer._chunk_vertical, axis=1)  # pylint: disable=protected-access
      flat = tf.reshape(tf.einsum("bks,kcs->bkc", h_chunks, w_chunks),
                        (-1, layer.num_chunks * layer.resolved_chunk_size))
      logits = tf.gather(flat, layer._class_position, axis=1)  # pylint: disable=protected-access
      return tf.reduce_sum(tf.square(logits))
    return grads(loss_fn)

  row_index = tf.constant((c2v[:, None] * units + np.arange(units)[None, :]
                           ).reshape(-1), tf.int64)
  col_index = tf.constant(np.repeat(np.arange(n), units), tf.int64)

  @tf.function
  def masked():
    def loss_fn():
      dense = tf.scatter_nd(tf.stack([row_index, col_index], axis=1),
                            tf.reshape(kernel, [-1]), [m * units, n])
      logits = tf.matmul(tf.reshape(h, [batch_size, m * units]), dense)
      return tf.reduce_sum(tf.square(logits))
    return grads(loss_fn)

  @tf.function
  def loop():
    def loss_fn():
      parts = [tf.matmul(h[:, v, :], tf.gather(kernel, order[v]),
                         transpose_b=True) for v in range(m)]
      return tf.add_n([tf.reduce_sum(tf.square(p)) for p in parts])
    return grads(loss_fn)

  methods = {"contiguous": contiguous, "chunked": chunked,
             "chunked_sparse": chunked_sparse,
             "masked": masked, "loop": loop}
  return methods, layer


def main(argv):
  del argv
  n, m, s2, b = (FLAGS.num_classes, FLAGS.num_verticals, FLAGS.units,
                 FLAGS.batch_size)
  c2v = bench_utils.uneven_class_to_vertical(n, m)
  methods, layer = build_methods(c2v, s2, b, FLAGS.chunk_size)
  # Interleaved rounds (the CPU is shared); 'masked' alone, it is ~100x
  # slower and holds ~12 GB.
  results = bench_utils.interleaved_median_seconds(
      {name: methods[name] for name in FLAGS.methods if name != "masked"},
      FLAGS.repeats)
  if "masked" in FLAGS.methods:
    results["masked"] = bench_utils.median_seconds(methods["masked"],
                                                   FLAGS.masked_repeats)
  flops = bench_utils.FWD_BWD_FACTOR * bench_utils.dense_flops(b, s2, n)
  padded = layer.num_chunks * layer.resolved_chunk_size
  print(f"N={n} M={m} s2={s2} B={b} C={layer.resolved_chunk_size} "
        f"chunks={layer.num_chunks} padded slots={padded} "
        f"({padded / n - 1:.1%} padding); {bench_utils.load_line()}")
  print("| method | median ms | time / chunked | GFLOP/s (useful) |")
  print("|---|---|---|---|")
  base = results.get("chunked")
  for name, seconds in results.items():
    ratio = f"{seconds / base:.2f}x" if base else "-"
    print(f"| {name} | {1000 * seconds:.1f} | {ratio} | "
          f"{flops / seconds / 1e9:.1f} |")


if __name__ == "__main__":
  app.run(main)
