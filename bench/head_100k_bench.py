"""Benchmark: the four 100K-class heads, and the machine's matmul peak."""

# For N = 100,000 classes in M = 20 uneven verticals, s1 = 4096, s2 = 512 and
# backbone features of size s_b = --feature_dim, each head of METHOD.md
# section 2, built by `kc_keras.modeling.heads.ClassificationHead`:
#   (a) fc_fc, (b) fc_sc, (c) sc_sc, (d) fc_sc with x = 256 shared units.
# Reports kernel parameters (checked against `expected_head_params`), the
# median forward + backward time (dense gradients of every weight and of the
# features), the peak resident memory of a fresh subprocess per head, and the
# useful FLOP rate as a fraction of this machine's float32 GEMM peak.
#
# FLOPs: every kernel weight is used once per example forward (2 B params)
# and twice backward (d input, d weight): 3 * 2 * B * params.
# Peak: the best median rate over `bench_utils.GEMM_SWEEP` (squares and the
# head's own shapes), each GEMM timed once per round, interleaved with the
# head's step in the same process, so both see the same machine load; the
# head's rate and the peak are medians over the rounds, with (min, max).
#
#   .venv/bin/python bench/head_100k_bench.py --batch_sizes=32,256

import json
import subprocess
import sys

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import bench_utils  # bench/ is on sys.path when run as a script
from kc_keras.modeling import heads

HEADS = {
    "(a) fc_fc": ("fc_fc", 0),
    "(b) fc_sc": ("fc_sc", 0),
    "(c) sc_sc": ("sc_sc", 0),
    "(d) fc_sc x=256": ("fc_sc", 256),
}

flags.DEFINE_integer("num_classes", 100_000, "N.")
flags.DEFINE_integer("num_verticals", 20, "M (uneven, Zipf-like sizes).")
flags.DEFINE_integer("feature_dim", 1024, "s_b, the backbone feature size.")
flags.DEFINE_integer("s1", 4096, "s1.")
flags.DEFINE_integer("s2", 512, "s2.")
flags.DEFINE_list("batch_sizes", ["32", "256"], "B values.")
flags.DEFINE_integer("repeats", 5, "Timed rounds (medians reported).")
flags.DEFINE_list("heads", list(HEADS), "Heads to run.")
flags.DEFINE_string("child", None, "Internal: run one head, print JSON.")
FLAGS = flags.FLAGS


def run_head(label, batch_size):
  """Builds one head and times forward + backward; returns a result dict."""
  head_type, shared = HEADS[label]
  c2v = bench_utils.uneven_class_to_vertical(FLAGS.num_classes,
                                             FLAGS.num_verticals)
  head = heads.ClassificationHead(
      list(c2v), head_type=head_type, s1=FLAGS.s1, s2=FLAGS.s2,
      shared_units=shared)
  head.build((batch_size, FLAGS.feature_dim))
  features = tf.random.normal((batch_size, FLAGS.feature_dim))
  weights = [w.value for w in head.trainable_weights]

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      tape.watch(features)
      loss = tf.reduce_sum(tf.square(head(features, training=True)))
    grads = tape.gradient(loss, [features] + weights)
    return [tf.convert_to_tensor(g) for g in grads]

  flops = bench_utils.FWD_BWD_FACTOR * bench_utils.head_forward_flops(
      head_type, batch_size, FLAGS.feature_dim, FLAGS.s1, FLAGS.s2,
      FLAGS.num_classes, FLAGS.num_verticals, shared)
  steps = dict(bench_utils.gemm_steps(), head=(step, flops))
  rates = bench_utils.interleaved_rates(steps, FLAGS.repeats)
  peak, peak_spread, peak_shape = bench_utils.roofline_peak(rates)
  return {
      "params": head.kernel_param_count(),
      "expected": head.expected_param_count(),
      "flops": flops,
      "rate": float(np.median(rates["head"])),
      "rate_spread": [float(min(rates["head"])), float(max(rates["head"]))],
      "peak_rss": bench_utils.peak_rss_bytes(),
      "peak": peak,
      "peak_spread": list(peak_spread),
      "peak_shape": peak_shape,
  }


def main(argv):
  if FLAGS.child:
    label, batch = FLAGS.child.rsplit("@", 1)
    print("RESULT " + json.dumps(run_head(label, int(batch))))
    return
  rows = []
  for batch in [int(b) for b in FLAGS.batch_sizes]:
    for label in FLAGS.heads:
      args = [sys.executable, argv[0], f"--child={label}@{batch}"] + [
          f"--{name}={FLAGS[name].serialize().split('=', 1)[1]}"
          for name in ("num_classes", "num_verticals", "feature_dim", "s1",
                       "s2", "repeats")]
      out = subprocess.run(args, check=True, capture_output=True, text=True)
      line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
      rows.append((label, batch, json.loads(line[-1][len("RESULT "):])))
  print(f"N={FLAGS.num_classes} M={FLAGS.num_verticals} (uneven) "
        f"s_b={FLAGS.feature_dim} s1={FLAGS.s1} s2={FLAGS.s2}; "
        f"{bench_utils.machine_line()}; {bench_utils.load_line()}")
  print("| head | B | kernel params | = formula | fwd+bwd ms | GFLOP/s "
        "(min-max) | GEMM peak GFLOP/s (min-max, shape) | % of peak "
        "| peak RSS MiB |")
  print("|---|---|---|---|---|---|---|---|---|")
  for label, batch, r in rows:
    ok = "yes" if r["params"] == r["expected"] else f"NO ({r['expected']:,})"
    low, high = (x / 1e9 for x in r["rate_spread"])
    peak_low, peak_high = (x / 1e9 for x in r["peak_spread"])
    print(f"| {label} | {batch} | {r['params']:,} | {ok} | "
          f"{1000 * r['flops'] / r['rate']:.0f} | {r['rate'] / 1e9:.1f} "
          f"({low:.1f}-{high:.1f}) | {r['peak'] / 1e9:.1f} ({peak_low:.1f}-"
          f"{peak_high:.1f}, {r['peak_shape'][5:]}) | "
          f"{100 * r['rate'] / r['peak']:.0f}% | "
          f"{r['peak_rss'] / 2**20:.0f} |")


if __name__ == "__main__":
  app.run(main)
