"""Shared helpers of the benchmarks: timing, FLOP counts, machine facts."""

import glob
import json
import os
import platform
import resource
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from kc_keras.configs import kc_config

# Forward + the two backward matmuls (d input, d weight) of a dense layer.
FWD_BWD_FACTOR = 3


def uneven_class_to_vertical(num_classes, num_verticals, seed=0):
  """Zipf-like vertical sizes (each >= 1), classes shuffled over ids.

  Size of vertical v ~ N * (1 / (v + 1)) / sum_u 1 / (u + 1).

  Args:
    num_classes: N.
    num_verticals: M.
    seed: permutation seed.

  Returns:
    int64 array [N], class -> vertical.
  """
  weights = 1.0 / np.arange(1, num_verticals + 1)
  sizes = np.maximum(1, np.floor(weights / weights.sum() * num_classes))
  sizes = sizes.astype(np.int64)
  sizes[0] += num_classes - sizes.sum()
  c2v = np.repeat(np.arange(num_verticals), sizes)
  return np.random.RandomState(seed).permutation(c2v)


def dense_flops(batch, fan_in, fan_out):
  """Forward FLOPs of one dense matmul: 2 * B * in * out."""
  return 2 * batch * fan_in * fan_out


def head_forward_flops(head_type, batch, feature_dim, s1, s2, num_classes,
                       num_verticals, shared_units=0):
  """Forward matmul FLOPs of a head, 2 * B * (kernel weights).

  Every kernel weight of the heads of METHOD.md section 2 is used once per
  example (SC blocks see only their own input), so the forward FLOPs are
  2 * B * expected_head_params.

  Args:
    head_type: 'fc_fc', 'fc_sc' or 'sc_sc'.
    batch: B.
    feature_dim: s_b.
    s1: first hidden units.
    s2: second hidden units.
    num_classes: N.
    num_verticals: M.
    shared_units: x.

  Returns:
    int FLOPs.
  """
  # Imported here so the timing helpers load without the package.
  from kc_keras.modeling import heads  # pylint: disable=g-import-not-at-top
  return 2 * batch * heads.expected_head_params(
      head_type, feature_dim, s1, s2, num_classes, num_verticals,
      shared_units)


def median_seconds(fn, repeats, warmup=1):
  """Median wall time of `fn()` over `repeats` calls after `warmup` calls.

  The result of each call is pulled to the host (`.numpy()` on its first
  tensor) so asynchronous execution is inside the timing.
  """
  for _ in range(warmup):
    _block(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    _block(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _block(result):
  flat = tf.nest.flatten(result)
  if flat and hasattr(flat[0], "numpy"):
    flat[0].numpy()


def peak_rss_bytes():
  """Peak resident set size of this process (Linux ru_maxrss is KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_line():
  """'load avg a/b/c, cores n' for the report."""
  one, five, fifteen = os.getloadavg()
  return (f"load avg {one:.2f}/{five:.2f}/{fifteen:.2f}, "
          f"cores {os.cpu_count()}")


def machine_line():
  """CPU model, cores, TF and Keras versions."""
  import keras  # pylint: disable=g-import-not-at-top
  model = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  return (f"{model}, {os.cpu_count()} cores, TF {tf.__version__}, "
          f"Keras {keras.__version__}")


def interleaved_seconds(fns, repeats, warmup=1):
  """Wall time of every call of each `fns[name]()`, the calls interleaved.

  Round r calls every function once, in order, so a change of machine load
  during the measurement reaches every function alike (the CPU is shared);
  the r-th times of two functions come from the same round.

  Args:
    fns: dict name -> zero-argument callable.
    repeats: timed rounds.
    warmup: untimed rounds first (tracing).

  Returns:
    dict name -> list of `repeats` seconds, in round order.
  """
  for _ in range(warmup):
    for fn in fns.values():
      _block(fn())
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      _block(fn())
      times[name].append(time.perf_counter() - start)
  return times


def interleaved_median_seconds(fns, repeats, warmup=1):
  """Median wall time of each `fns[name]()`, the calls interleaved.

  Args:
    fns: dict name -> zero-argument callable.
    repeats: timed rounds (`interleaved_seconds`).
    warmup: untimed rounds first (tracing).

  Returns:
    dict name -> median seconds.
  """
  times = interleaved_seconds(fns, repeats, warmup)
  return {name: float(np.median(t)) for name, t in times.items()}


def round_ratio_spread(numerator, denominator):
  """Median and quartiles of the per-round ratio of two interleaved timings.

  ratio_r = numerator[r] / denominator[r]: both times of a round met the
  same machine load, so the spread of ratio_r is the measurement's own.

  Args:
    numerator: seconds per round (`interleaved_seconds`).
    denominator: seconds per round, same rounds.

  Returns:
    (median, 25th percentile, 75th percentile) of ratio_r.
  """
  ratios = np.asarray(numerator) / np.asarray(denominator)
  return (float(np.median(ratios)), float(np.percentile(ratios, 25)),
          float(np.percentile(ratios, 75)))


class StepTimes(keras.callbacks.Callback):
  """Wall time (`time.perf_counter`) at the end of every training batch."""

  def __init__(self):
    super().__init__()
    self.times = []

  def on_train_batch_end(self, batch, logs=None):
    self.times.append(time.perf_counter())


# The GEMM shapes (m, k, n) whose best rate is the machine's float32 peak:
# squares of several sizes (a single large square ranged 2x within one run on
# these CPUs) and the paper head's own shapes at batch 256 (s_b = 1024,
# s1 = 4096, s2 = 512, a vertical of 5,000 classes).
GEMM_SWEEP = ((512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
              (4096, 4096, 4096), (256, 1024, 4096), (256, 4096, 512),
              (256, 512, 5000))


def gemm_step(m, k, n, seed=0):
  """A float32 [m, k] @ [k, n] tf.function and its FLOPs (2 m k n)."""
  rng = np.random.default_rng(seed)
  a = tf.constant(rng.normal(size=(m, k)).astype(np.float32))
  b = tf.constant(rng.normal(size=(k, n)).astype(np.float32))
  return tf.function(lambda: tf.matmul(a, b)), dense_flops(m, k, n)


def interleaved_rates(steps, rounds, warmup=1):
  """FLOP/s of each step per round, the steps interleaved in every round.

  Args:
    steps: dict name -> (zero-argument callable, FLOPs per call).
    rounds: timed rounds; round r calls every step once, in order, so a
      change of machine load reaches every step alike.
    warmup: untimed rounds first (tracing).

  Returns:
    dict name -> list of FLOP/s, one per round.
  """
  for _ in range(warmup):
    for fn, _ in steps.values():
      _block(fn())
  rates = {name: [] for name in steps}
  for _ in range(rounds):
    for name, (fn, flops) in steps.items():
      start = time.perf_counter()
      _block(fn())
      rates[name].append(flops / (time.perf_counter() - start))
  return rates


def roofline_peak(rates, shapes=GEMM_SWEEP):
  """The machine's float32 GEMM peak from interleaved rates.

  peak = max over the sweep's shapes of the median rate of that shape; the
  spread is that shape's (min, max) over the rounds.

  Args:
    rates: `interleaved_rates` output holding a `gemm <m>x<k>x<n>` entry per
      shape.
    shapes: the sweep.

  Returns:
    (peak FLOP/s, (min, max) FLOP/s of the best shape, the best shape's name).
  """
  names = [gemm_name(shape) for shape in shapes]
  best = max(names, key=lambda name: np.median(rates[name]))
  return (float(np.median(rates[best])),
          (float(np.min(rates[best])), float(np.max(rates[best]))), best)


def gemm_name(shape):
  return "gemm " + "x".join(str(d) for d in shape)


def gemm_steps(shapes=GEMM_SWEEP):
  """`interleaved_rates` steps for every shape of the sweep."""
  return {gemm_name(shape): gemm_step(*shape) for shape in shapes}


def student_task(filters, s1, s2, target_source, alpha, top_k=None,
                 head_type="fc_sc"):
  """The task config of a `small_cnn` student with a two-layer head, as the benches build it.

  Args:
    filters: the backbone's filters per block.
    s1, s2: the head's sizes.
    target_source: `task.distillation.target_source` ("labels", "cache", ...).
    alpha: the distillation weight (0: hard labels only).
    top_k: the cached targets' K, or None for the default.
    head_type: `task.model.head.head_type`.

  Returns:
    A `kc_config.TaskConfig`, self-paced scaling left at its default (the caller
    sets the shipped recipe where it measures it).
  """
  task = kc_config.TaskConfig()
  task.model.backbone.filters = tuple(int(f) for f in filters)
  task.model.head.head_type = head_type
  task.model.head.s1 = s1
  task.model.head.s2 = s2
  task.distillation.target_source = target_source
  task.distillation.alpha = alpha
  if top_k is not None:
    task.distillation.top_k = top_k
  return task


def op_self_times(fn, calls, logdir=None):
  """Per-op self time of `calls` calls of `fn`, from TensorFlow's profiler.

  The calls run under `tf.profiler.experimental` and the trace is read back
  with the profiler's own "framework_op_stats" tool (the per-op table that
  TensorBoard's profile plugin shows), so no extra package is needed.

  Args:
    fn: zero-argument callable (already traced: call it once first).
    calls: how many calls are profiled.
    logdir: where the trace is written (default: a temporary directory).

  Returns:
    List of dicts {type, name, occurrences, self_us}, largest self time first.
  """
  # Imported here: only the profiling benches need the profiler's bindings.
  from tensorflow.python.profiler.internal import _pywrap_profiler_plugin  # pylint: disable=g-import-not-at-top
  logdir = logdir or tempfile.mkdtemp(prefix="op_profile_")
  tf.profiler.experimental.start(logdir)
  try:
    for _ in range(calls):
      _block(fn())
  finally:
    tf.profiler.experimental.stop()
  traces = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
  data, ok = _pywrap_profiler_plugin.xspace_to_tools_data(
      traces, "framework_op_stats", {})
  if not ok:
    raise RuntimeError(f"the profiler could not read its trace in {logdir}")
  tables = json.loads(data)
  table = tables[0] if isinstance(tables, list) else tables
  columns = [col["id"] for col in table["cols"]]
  rows = []
  for row in table["rows"]:
    values = dict(zip(columns, (cell.get("v") if cell else None
                                for cell in row["c"])))
    rows.append({"type": values["type"], "name": values["operation"],
                 "occurrences": int(values["occurrences"]),
                 "self_us": float(values["total_self_time"])})
  return sorted(rows, key=lambda r: -r["self_us"])


def op_type_shares(rows):
  """[(op type, total self-time us, share of all)] from `op_self_times` rows."""
  by_type = {}
  for row in rows:
    by_type[row["type"]] = by_type.get(row["type"], 0.0) + row["self_us"]
  total = sum(by_type.values()) or 1.0
  return sorted(((t, us, us / total) for t, us in by_type.items()),
                key=lambda x: -x[1])
