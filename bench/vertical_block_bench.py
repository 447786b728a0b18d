"""Benchmark: VerticalBlockDense as batched matmul vs the einsum it replaced."""

# Forward + backward (dense gradients of the kernel and the input) of one
# per-vertical block layer, out[b, m] = x[b] @ K[m], K: [M, D, U], two ways
# side by side in one process:
#   layer:  `VerticalBlockDense` ([1, B, D] @ [M, D, U], one batched matmul);
#   einsum: tf.einsum('bd,mdu->bmu') (the implementation before profiling:
#           TF lowers it to one matmul against a transposed copy of K).
# Default sizes are the 100K heads' SC layers: FC4096 -> SC(20 x 512) (fc_sc)
# and features 1024 -> SC(20 x 4096) (sc_sc's first layer).
#
#   .venv/bin/python bench/vertical_block_bench.py

from absl import app
from absl import flags
import tensorflow as tf

import bench_utils  # bench/ is on sys.path when run as a script
from kc_keras.modeling.layers import structurally_connected

flags.DEFINE_integer("num_verticals", 20, "M.")
flags.DEFINE_list("shapes", ["4096x512", "1024x4096"], "D x U per block.")
flags.DEFINE_integer("batch_size", 32, "B.")
flags.DEFINE_integer("repeats", 5, "Timed repetitions (median reported).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  m, b = FLAGS.num_verticals, FLAGS.batch_size
  print(f"M={m} B={b}; {bench_utils.load_line()}")
  print("| D x U | layer ms | einsum ms | einsum / layer |")
  print("|---|---|---|---|")
  for shape in FLAGS.shapes:
    d, u = (int(s) for s in shape.split("x"))
    layer = structurally_connected.VerticalBlockDense(m, u, use_bias=False)
    layer.build((b, d))
    kernel = layer.kernel.value
    x = tf.random.normal((b, d))

    def fwd_bwd(fn):
      def run():
        with tf.GradientTape() as tape:
          tape.watch(x)
          loss = tf.reduce_sum(tf.square(fn()))
        return tape.gradient(loss, [x, kernel])
      return tf.function(run)

    new = bench_utils.median_seconds(fwd_bwd(lambda: layer(x)), FLAGS.repeats)
    old = bench_utils.median_seconds(
        fwd_bwd(lambda: tf.einsum("bd,mdu->bmu", x, kernel)), FLAGS.repeats)  # pylint: disable=cell-var-from-loop
    print(f"| {d} x {u} | {1000 * new:.0f} | {1000 * old:.0f} | "
          f"{old / new:.2f}x |")


if __name__ == "__main__":
  app.run(main)
