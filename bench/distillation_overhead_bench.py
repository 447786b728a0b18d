"""Benchmark: the cost of distillation in one training step."""

# (a) The student with cached soft targets vs the generalist (hard labels),
#     same backbone + head, both built by `model_builder.build_kc_model`.
#     Goal: step(student, cache) / step(generalist) <= 1.10.
# (b) Online teachers (`TeacherBank`): step(M=50) / step(M=5) at the same
#     batch and N (each sample meets only its own teacher; goal <= 1.2), for
#     independent teachers (the shipped FC-FC network, each with its own
#     weights) run per teacher ('routed') and stacked by architecture
#     ('stacked'), frozen-trunk teachers ('shared_trunk': one trunk pass + one
#     [d, N] matmul), and the naive step that runs every teacher on every
#     sample.
# Each step is the model's own `train_step` in one tf.function on a fixed
# batch; medians after a warm-up, the steps of (a) and of (b) timed in
# interleaved rounds (the CPU is shared); all rows measured in one process.
# In (b) "/ generalist" is against the generalist timed in (b)'s rounds; each
# M=50 / M=5 ratio is also given per round (both steps of a round met the
# same load) as median [25th-75th percentile].
#
#   .venv/bin/python bench/distillation_overhead_bench.py

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

import bench_utils  # bench/ is on sys.path when run as a script
from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.distillation import soft_targets as soft_targets_lib
from kc_keras.distillation import teacher_bank as teacher_bank_lib
from kc_keras.modeling.models import classifier
from kc_keras.training import model_builder

flags.DEFINE_integer("num_classes", 1000, "N of the student.")
flags.DEFINE_list("num_verticals", ["5", "50"], "M values of part (b).")
flags.DEFINE_integer("batch_size", 32, "B.")
flags.DEFINE_integer("image_size", 16, "H = W.")
flags.DEFINE_integer("top_k", 100, "K.")
flags.DEFINE_list("filters", ["16", "32"], "small_cnn filters (student).")
flags.DEFINE_list("teacher_filters", ["8", "16"], "small_cnn filters (teachers).")
flags.DEFINE_integer("s1", 256, "Head s1.")
flags.DEFINE_integer("s2", 32, "Head s2.")
flags.DEFINE_integer("repeats", 20, "Timed steps (median reported).")
flags.DEFINE_list("banks", ["routed", "stacked", "shared_trunk",
                            "all_teachers"],
                  "Online teacher rows of part (b), names of BANKS.")
flags.DEFINE_float("learning_rate", 0.01, "SGD learning rate.")
FLAGS = flags.FLAGS

CHANNELS = 3


def make_hierarchy(num_classes, num_verticals):
  """An uneven hierarchy (bench_utils sizes), classes contiguous per vertical."""
  c2v = np.sort(bench_utils.uneven_class_to_vertical(num_classes,
                                                     num_verticals))
  return hierarchy_lib.Hierarchy(
      class_names=tuple(f"c{c}" for c in range(num_classes)),
      vertical_names=tuple(f"v{v}" for v in range(num_verticals)),
      class_to_vertical=tuple(int(v) for v in c2v))


def make_task(target_source, alpha, filters, head_type="fc_sc"):
  return bench_utils.student_task(filters, FLAGS.s1, FLAGS.s2, target_source,
                                  alpha, top_k=FLAGS.top_k, head_type=head_type)


def make_batch(hierarchy, rng):
  """(images, features) with one label per sample and random cached targets."""
  b, k = FLAGS.batch_size, FLAGS.top_k
  images = rng.uniform(size=(b, FLAGS.image_size, FLAGS.image_size,
                             CHANNELS)).astype(np.float32)
  labels = rng.integers(0, hierarchy.num_classes, size=(b, 1)).astype(np.int32)
  c2v = np.asarray(hierarchy.class_to_vertical)
  target_ids = np.full((b, k), -1, np.int32)
  for i, label in enumerate(labels[:, 0]):
    own = np.flatnonzero(c2v == c2v[label])
    kept = min(k, own.size)
    target_ids[i, :kept] = rng.choice(own, size=kept, replace=False)
  target_probs = np.where(target_ids >= 0,
                          rng.uniform(size=(b, k)), 0.0).astype(np.float32)
  features = {"label_ids": tf.constant(labels),
              "target_ids": tf.constant(target_ids),
              "target_probs": tf.constant(target_probs)}
  return tf.constant(images), features


def step_fn(model):
  model.compile(optimizer=keras.optimizers.SGD(FLAGS.learning_rate))
  return tf.function(model.train_step)


def build(task, hierarchy, bank=None):
  image_shape = (FLAGS.image_size, FLAGS.image_size, CHANNELS)
  model = model_builder.build_kc_model(
      task, hierarchy, image_shape, FLAGS.batch_size, teacher_bank=bank)
  model_builder.build_variables(model, image_shape)
  return model


class AllTeachersBank(teacher_bank_lib.TeacherBank):
  """The naive bank: every teacher runs on every sample, then one is kept."""

  def soft_targets(self, images, label_ids):
    slot = self._slots(label_ids)[:, 0]  # one label per sample here
    ids, probs = [], []
    for v, teacher in self._teachers.items():
      logits = self._vertical_logits(v, teacher(images, training=False))
      v_ids, v_probs = soft_targets_lib.top_k_soft_targets(
          logits, self._class_ids[v], self.top_k)
      ids.append(v_ids)
      probs.append(v_probs)
    pick = tf.stack([tf.range(tf.shape(slot)[0]), slot], axis=1)
    ids = tf.gather_nd(tf.stack(ids, axis=1), pick)
    probs = tf.gather_nd(tf.stack(probs, axis=1), pick)
    return tf.stop_gradient(ids), tf.stop_gradient(probs)


# Row name -> (bank class, layout, teachers share one frozen trunk).
BANKS = {
    "routed": (teacher_bank_lib.TeacherBank, "routed", False),
    "stacked": (teacher_bank_lib.TeacherBank, "stacked", False),
    "shared_trunk": (teacher_bank_lib.TeacherBank, "shared_trunk", True),
    "all_teachers": (AllTeachersBank, "routed", False),
}


flags.register_validator(
    "banks", lambda names: set(names) <= set(BANKS),
    message=f"--banks takes names of {sorted(BANKS)}.")


def make_bank(hierarchy, bank_cls, layout, shared_trunk=False):
  """One teacher per vertical, independent or one frozen trunk + classifiers.

  Teachers are the shipped network (small CNN, FC-FC head, no self-paced
  scaling). `shared_trunk` builds the shipped recipe (`freeze:
  backbone_and_hidden`): their backbone and hidden layers hold one trunk's
  weights, which the 'shared_trunk' layout runs as one trunk pass and one
  [d, N] matmul (after checking every teacher's trunk fingerprint).
  Otherwise each teacher keeps its own random weights.
  """
  image_shape = (FLAGS.image_size, FLAGS.image_size, CHANNELS)
  teachers = {}
  task = make_task("labels", 0.0, FLAGS.teacher_filters, "fc_fc")
  task.model.self_paced.mode = "none"
  trunk = None
  for v in range(hierarchy.num_verticals):
    sub = hierarchy.subset(v)
    teacher = model_builder.build_network(task.model, sub, image_shape)
    if shared_trunk:
      trunk = trunk or teacher
      for layer, source in ((teacher.backbone, trunk.backbone),
                            (teacher.head.hidden1, trunk.head.hidden1),
                            (teacher.head.hidden2, trunk.head.hidden2)):
        layer.set_weights(source.get_weights())
    teachers[v] = teacher
  bank = bank_cls(teachers, list(hierarchy.class_to_vertical), FLAGS.top_k,
                  layout=layout)
  if layout == "stacked" and bank.routed_verticals:
    raise RuntimeError(
        f"Teachers of verticals {bank.routed_verticals} were not stacked.")
  return bank


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  n, repeats = FLAGS.num_classes, FLAGS.repeats
  rows = []

  # (a) cached student vs generalist.
  verticals = [int(m) for m in FLAGS.num_verticals]
  hierarchy = make_hierarchy(n, verticals[0])
  batch = make_batch(hierarchy, rng)
  generalist = step_fn(build(make_task("labels", 0.0, FLAGS.filters),
                             hierarchy))
  student = step_fn(build(make_task("cache", 1.0, FLAGS.filters), hierarchy))
  timed = bench_utils.interleaved_median_seconds(
      {"generalist": lambda: generalist(batch),
       "cache": lambda: student(batch)}, repeats)
  t_gen, t_cache = timed["generalist"], timed["cache"]
  rows.append(("generalist (hard labels)", verticals[0], t_gen, 1.0))
  rows.append(("student, cached targets", verticals[0], t_cache,
               t_cache / t_gen))

  # (b) online teachers at each M, in every layout and naive.
  steps = {}
  for m in verticals:
    hierarchy = make_hierarchy(n, m)
    batch_m = make_batch(hierarchy, rng)
    # An FC-FC student here: an FC-SC head has M blocks, so its own step
    # would grow with M whatever the teachers cost; this part measures the
    # teachers. The cached row is that student without teachers.
    cached = step_fn(build(make_task("cache", 1.0, FLAGS.filters, "fc_fc"),
                           hierarchy))
    steps[("cached", m)] = (lambda s=cached, d=batch_m: s(d))
    for name in FLAGS.banks:
      bank = make_bank(hierarchy, *BANKS[name])
      step = step_fn(build(make_task("online", 1.0, FLAGS.filters, "fc_fc"),
                           hierarchy, bank))
      steps[(name, m)] = (lambda s=step, d=batch_m: s(d))
  # The generalist again in the same interleaved rounds, as the reference.
  steps[("generalist", 0)] = lambda: generalist(batch)
  rounds = bench_utils.interleaved_seconds(steps, repeats)
  online = {key: float(np.median(t)) for key, t in rounds.items()}
  t_ref = online.pop(("generalist", 0))
  for (name, m), seconds in online.items():
    label = ("(b) FC-FC student, cached targets" if name == "cached" else
             f"(b) FC-FC student, online teachers ({name})")
    rows.append((label, m, seconds, seconds / t_ref))

  print(f"N={n} B={FLAGS.batch_size} image={FLAGS.image_size}px "
        f"K={FLAGS.top_k} student filters={FLAGS.filters} head fc_sc in (a), "
        f"fc_fc in (b) "
        f"s1={FLAGS.s1} s2={FLAGS.s2}; teachers filters="
        f"{FLAGS.teacher_filters}, FC-FC; {repeats} rounds; "
        f"{bench_utils.load_line()}")
  print("| step | M | median ms | / generalist |")
  print("|---|---|---|---|")
  for name, m, seconds, ratio in rows:
    print(f"| {name} | {m} | {1000 * seconds:.1f} | {ratio:.2f} |")
  lo, hi = verticals[0], verticals[-1]
  print()
  print("| ratio | median of medians | per round: median [25th-75th] | goal |")
  print("|---|---|---|---|")
  print(f"| student cached / generalist | {t_cache / t_gen:.2f} | | "
        "<= 1.10 |")
  for name in ["cached"] + list(FLAGS.banks):
    ratio = online[(name, hi)] / online[(name, lo)]
    mid, low, high = bench_utils.round_ratio_spread(rounds[(name, hi)],
                                                    rounds[(name, lo)])
    goal = {"all_teachers": "(naive, for comparison)", "routed": "",
            "cached": ""}.get(name, "<= 1.2")
    label = ("student cached (FC-FC)" if name == "cached" else
             f"online {name}")
    print(f"| {label}: step(M={hi}) / step(M={lo}) | {ratio:.2f} | "
          f"{mid:.2f} [{low:.2f}-{high:.2f}] | {goal} |")
    if name == "cached":
      continue
    teacher_cost = [online[(name, m)] - online[("cached", m)] for m in (lo, hi)]
    print(f"| online {name}: teachers' share (online - cached) M={hi} / "
          f"M={lo} | {teacher_cost[1] / teacher_cost[0]:.2f} | | |")


if __name__ == "__main__":
  app.run(main)
