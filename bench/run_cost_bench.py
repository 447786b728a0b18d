"""The cost of a pipeline run's rows, measured on the run's own data, configs and cache.

For each stage directory given (the generalist, a student on cached soft targets, ...)
it builds the stage's model from the stage's `params.yaml` and its training input as
training does (`modes.train_dataset_fn`: the student's batches carry the cache's rows,
checked against the teachers), then times in interleaved rounds, in one process:

  step      the model's `train_step` on one fixed batch (no input pipeline);
  input     the training input alone (batches drawn, nothing computed);
  together  `train_step` on batches drawn from the input, as training runs.

Each call runs alone: the input and together calls open a fresh iterator (see
`stage_calls`), so no pipeline prefetches in the background of another call.

With `--online_too`, each student is timed a second time with online teachers
(`task.distillation.target_source=online`: the teachers run on every batch) in place
of the cache. It reports, per stage, images/s of each and input / step (goal: >= 3x), and each
stage's step and together time per image over the first stage's (the student's epoch
against the generalist's: both see the same images per epoch; goal: <= 1.3x), each as
the median [25th-75th percentile] of the per-round ratios: both times of a round met
the same machine load. The run's directories are only read: each model's session
records its params in a temporary directory.

  python bench/run_cost_bench.py --stage_dirs=RUN/generalist,RUN/student_fc_sc_d_s \
      [--online_too]
"""

import os
import tempfile
import time

from kc_keras.common import startup

startup.quiet_tensorflow()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import bench_utils  # noqa: E402  bench/ is on sys.path when run as a script
from kc_keras.configs import kc_config  # noqa: E402
from kc_keras.training import modes  # noqa: E402

flags.DEFINE_list("stage_dirs", None,
                  "Stage directories of one run; the first is the reference "
                  "(the generalist).")
flags.DEFINE_integer("batches", 20, "Batches per timed call.")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds timed.")
flags.DEFINE_bool("online_too", False,
                  "Also time each cache student with online teachers.")
flags.mark_flags_as_required(["stage_dirs"])
FLAGS = flags.FLAGS

KINDS = ("step", "input", "together")
# Untimed batches before each timed call: tracing, and the pipeline's start
# (tf.data's autotuner raises the parallelism over the first batches).
WARM_BATCHES = 20


def stage_calls(params, batches):
  """The three timed calls of one stage, and its batch size.

  The step call runs on one fixed batch, traced and warmed once here. The
  input and together calls each open a fresh iterator and pull
  `WARM_BATCHES` untimed batches before timing `batches`: between calls no
  pipeline runs in the background (its prefetching would take CPU from the
  other calls and hand the next call batches made beforehand). A fresh
  iterator costs a shuffle-buffer fill of raw records, untimed.

  Args:
    params: a stage's config (`modes.load_params_of`).
    batches: batches per call.

  Returns:
    `({kind: () -> seconds}, batch_size)`: each call times `batches` batches.
  """
  session = modes.Session(params, tempfile.mkdtemp(prefix="run_cost_"))
  model = modes.build_training_model(session)
  dataset = modes.train_dataset_fn(session)(None, 0)
  fixed = next(iter(dataset))

  @tf.function
  def steps_on_fixed(n):
    for _ in tf.range(n):
      model.train_step(fixed)

  @tf.function
  def steps_on(iterator, n):
    for _ in tf.range(n):
      model.train_step(next(iterator))

  def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start

  _block(model, steps_on_fixed(tf.constant(WARM_BATCHES)))

  def step():
    return timed(lambda: _block(model, steps_on_fixed(tf.constant(batches))))

  def draw():
    iterator = iter(dataset)
    for _ in range(WARM_BATCHES):
      next(iterator)

    def pull():
      for _ in range(batches):
        batch = next(iterator)
      return batch[0].numpy()
    return timed(pull)

  def together():
    iterator = iter(dataset)
    steps_on(iterator, tf.constant(WARM_BATCHES))
    return timed(lambda: _block(model, steps_on(iterator, tf.constant(batches))))

  return ({"step": step, "input": draw, "together": together},
          params.task.train_batch_size)


def _block(model, _):
  """Waits for the steps just run: reads a variable they update."""
  return model.optimizer.iterations.numpy()


def _spread(values):
  return (f"{np.median(values):.2f} [{np.percentile(values, 25):.2f}-"
          f"{np.percentile(values, 75):.2f}]")


def main(argv):
  del argv
  print(bench_utils.machine_line())
  print(bench_utils.load_line())
  fns, batch_sizes = {}, {}
  stages = []
  for stage_dir in FLAGS.stage_dirs:
    name = os.path.basename(os.path.normpath(stage_dir))
    params = modes.load_params_of(stage_dir)
    stages.append((name, params))
    if FLAGS.online_too and params.task.distillation.target_source == "cache":
      online = kc_config.ExperimentConfig(params.as_dict())
      online.task.distillation.target_source = "online"
      stages.append((f"{name} (online)", online))
  for name, params in stages:
    start = time.perf_counter()
    calls, batch_sizes[name] = stage_calls(params, FLAGS.batches)
    for kind, fn in calls.items():
      fns[(name, kind)] = fn
    print(f"{name}: built in {time.perf_counter() - start:.0f} s")
  seconds = {key: [] for key in fns}
  for _ in range(FLAGS.rounds):
    for key, fn in fns.items():
      seconds[key].append(fn())
  # Seconds per image, per round.
  per_image = {key: np.asarray(t) / (FLAGS.batches * batch_sizes[key[0]])
               for key, t in seconds.items()}
  names = list(batch_sizes)
  reference = names[0]
  print(f"\n{FLAGS.rounds} rounds of {FLAGS.batches} batches per call; "
        "median [25th-75th percentile] over rounds")
  print("| stage | batch | step img/s | input img/s | together img/s | "
        f"input / step | step / {reference}'s | together / {reference}'s |")
  print("|---|---|---|---|---|---|---|---|")
  for name in names:
    rates = {k: 1.0 / np.median(per_image[(name, k)]) for k in KINDS}
    input_over_step = per_image[(name, "step")] / per_image[(name, "input")]
    step_ratio = per_image[(name, "step")] / per_image[(reference, "step")]
    together_ratio = (per_image[(name, "together")] /
                      per_image[(reference, "together")])
    print(f"| {name} | {batch_sizes[name]} | {rates['step']:,.0f} | "
          f"{rates['input']:,.0f} | {rates['together']:,.0f} | "
          f"{_spread(input_over_step)}x | {_spread(step_ratio)}x | "
          f"{_spread(together_ratio)}x |")
  print(bench_utils.load_line())
  print(f"peak RSS {bench_utils.peak_rss_bytes() / 2**30:.1f} GiB")


if __name__ == "__main__":
  app.run(main)
