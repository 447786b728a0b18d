"""Benchmark: the student's two sigmoid losses over N, as two losses or one shared part.

A student scores one logit row [B, N] against its hard labels and its soft
targets. Written as two `tf.nn.sigmoid_cross_entropy_with_logits` sums, every
transcendental op runs twice over the N classes; written as
l(z) = F(x) - x . z (`sigmoid_cross_entropy.per_example_cross_entropies`, what
the distiller's train step calls), F runs once. Both forms are timed forward
and backward (the gradient with respect to the logits) in one tf.function, in
interleaved rounds; the result is the per-round ratio shared / two with its
quartiles, per N. Both forms' gradients are checked equal first.

  .venv/bin/python bench/student_loss_bench.py --num_classes=20971,108554
"""

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import bench_utils  # bench/ is on sys.path when run as a script
from kc_keras.losses import sigmoid_cross_entropy

flags.DEFINE_list("num_classes", ["20971", "108554"], "N values.")
flags.DEFINE_integer("batch_size", 64, "B (the own-data default batch).")
flags.DEFINE_float("alpha", 0.5, "Weight of the soft loss.")
flags.DEFINE_integer("calls", 20, "Calls per timed measurement.")
flags.DEFINE_integer("rounds", 7, "Interleaved rounds.")
FLAGS = flags.FLAGS


def _inputs(batch, num_classes, seed=0):
  """Logits near the 1/N prior, one-hot labels and top-100 soft targets."""
  rng = np.random.default_rng(seed)
  logits = tf.Variable(rng.normal(-np.log(num_classes), 1.0,
                                  (batch, num_classes)).astype(np.float32))
  hard = tf.one_hot(rng.integers(0, num_classes, batch), num_classes)
  ids = rng.integers(0, num_classes, (batch, 100))
  soft = np.zeros((batch, num_classes), np.float32)
  np.put_along_axis(soft, ids, rng.uniform(size=(batch, 100)), axis=1)
  return logits, hard, tf.constant(soft)


def _steps(logits, hard, soft, alpha):
  """The two forms: (gradient, hard loss, soft loss) of one blended loss."""
  def blended(hard_loss, soft_loss):
    return tf.reduce_mean(alpha * soft_loss + (1.0 - alpha) * hard_loss)

  @tf.function
  def two_losses():
    with tf.GradientTape() as tape:
      hard_loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
          labels=hard, logits=logits), axis=-1)
      soft_loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
          labels=soft, logits=logits), axis=-1)
      loss = blended(hard_loss, soft_loss)
    return tape.gradient(loss, logits), hard_loss, soft_loss

  @tf.function
  def shared_part():
    with tf.GradientTape() as tape:
      hard_loss, soft_loss = sigmoid_cross_entropy.per_example_cross_entropies(
          [hard, soft], logits)
      loss = blended(hard_loss, soft_loss)
    return tape.gradient(loss, logits), hard_loss, soft_loss

  return two_losses, shared_part


def main(argv):
  del argv
  print(bench_utils.machine_line())
  print(bench_utils.load_line())
  print("| N | two losses (ms) | shared F (ms) | shared / two, median "
        "[25th-75th] |")
  print("|---|---|---|---|")
  for n in (int(v) for v in FLAGS.num_classes):
    two, shared = _steps(*_inputs(FLAGS.batch_size, n), FLAGS.alpha)
    for a, b in zip(two(), shared()):
      np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)

    def repeat(fn):
      def run():
        for _ in range(FLAGS.calls):
          out = fn()
        return out[0]
      return run

    times = bench_utils.interleaved_seconds(
        {"two": repeat(two), "shared": repeat(shared)}, FLAGS.rounds)
    median, low, high = bench_utils.round_ratio_spread(times["shared"],
                                                       times["two"])
    ms = {k: 1000 * float(np.median(v)) / FLAGS.calls
          for k, v in times.items()}
    print(f"| {n:,} | {ms['two']:.1f} | {ms['shared']:.1f} | "
          f"{median:.2f} [{low:.2f}-{high:.2f}] |")


if __name__ == "__main__":
  app.run(main)
