"""Defaults derived from the data's statistics (N, N_v, images), resolved once at parse time.

A field listed in `DERIVED_KEYS` whose value is None is "unset": `resolve`
replaces it by the formula of its function below, evaluated on the data's
`DataStats`, logs the value with its reason, and the resolved value is what
`params.yaml` records. A value set by an experiment, a YAML file or
`--params_override` (even one equal to the derived value) is never changed.
"""

import dataclasses
import functools
import json
import math
from typing import Callable, List, Optional, Sequence, Tuple

from absl import logging

# Keras' Adam epsilon, the value that is right for a loss over one output.
KERAS_EPSILON = 1e-7
# The paper's K (soft-target classes kept per teacher).
PAPER_TOP_K = 100
# Measured: the paper's sqrt(N_v) init trained well at 200 classes and did not
# at 1,623 or 2,000 (the 'prior' init did); the switch point in between is a
# round number, not a measurement.
PRIOR_INIT_MIN_CLASSES = 1000
# Measured: frozen-trunk teachers at 15 and 100 images per class. With many
# more images per class a teacher can afford to adapt its hidden layers; the
# threshold is not a measurement.
FINE_TUNE_MIN_IMAGES_PER_CLASS = 500
# The budget of the Omniglot rows (15 images per class).
DEFAULT_EPOCHS = 24.0
# With few images, 24 epochs are too few optimizer steps for a network to
# leave its initialisation (a 400-image tree got 144 steps and stayed at
# chance): the default budget is at least this many steps.
MIN_DEFAULT_STEPS = 1000
# Logs and summaries at least this often (steps).
MAX_STEPS_PER_LOOP = 100
# A teacher's budget in epochs of its vertical never goes below this many
# steps: the fixed budget every small-data teacher (demo, Omniglot, the
# data-rich set) was measured with, so a tiny vertical's classifier still
# leaves its initialisation.
MIN_TEACHER_STEPS = 300

FROZEN_TRUNK = "backbone_and_hidden"
FINE_TUNED_HEAD = "backbone"

# Key paths that `unset` clears and `resolve` derives.
DERIVED_KEYS = (
    "trainer.optimizer.epsilon",
    "trainer.train_epochs",
    "trainer.train_steps",
    "trainer.steps_per_loop",
    "trainer.checkpoint_interval",
    "task.model.self_paced.init",
    "task.specialists.model.self_paced.init",
    "task.distillation.top_k",
    "task.specialists.freeze",
    "task.specialists.trainer.train_epochs",
)
# Derived keys that may stay None once resolved: an epoch budget is not
# needed where a step budget is set.
_OPTIONAL_KEYS = ("trainer.train_epochs",
                  "task.specialists.trainer.train_epochs")


@dataclasses.dataclass(frozen=True)
class DataStats:
  """What the derived defaults depend on.

  Attributes:
    vertical_sizes: N_v for v = 0..M-1.
    num_train_images: images of the training split.
  """

  vertical_sizes: Tuple[int, ...]
  num_train_images: int

  @property
  def num_classes(self) -> int:
    return int(sum(self.vertical_sizes))

  @property
  def num_verticals(self) -> int:
    return len(self.vertical_sizes)

  @property
  def images_per_class(self) -> float:
    return self.num_train_images / self.num_classes

  def describe(self) -> str:
    return (f"N={self.num_classes} classes, M={self.num_verticals} verticals "
            f"(largest {max(self.vertical_sizes)}), {self.num_train_images} "
            f"training images ({self.images_per_class:.1f} per class)")


def adam_epsilon(num_classes: int) -> float:
  """epsilon = 1e-7 * N.

  With a sigmoid loss summed over N classes, every class absent from a batch
  still gets a small gradient; Keras' 1e-7 lets Adam move those weights at the
  full rate and the hidden units feeding them die. 1e-7 * N gives the steps
  Keras' default gives a loss averaged over the N classes.
  """
  return KERAS_EPSILON * num_classes


def self_paced_init(num_classes: int, mode: str = "vertical") -> str:
  """'prior' when N >= PRIOR_INIT_MIN_CLASSES, else the paper's 'sqrt_nv'.

  With 'sqrt_nv' every scaled logit starts near -1, a sigmoid of 0.27 on all
  N classes: a starting loss of about 0.31 N that a short budget does not
  recover from at thousands of classes. 'prior' starts at y = x. A network
  without self-paced scaling (`mode` 'none') never reads it: 'sqrt_nv'.
  """
  if mode == "none":
    return "sqrt_nv"
  return "prior" if num_classes >= PRIOR_INIT_MIN_CLASSES else "sqrt_nv"


def top_k(num_classes: int) -> int:
  """K = min(100, N): the paper's K, never more than there are classes.

  A teacher keeps min(K, N_v) classes of its vertical v wherever K is used,
  so K only sets how many slots a soft-target cache reserves per example.
  """
  return min(PAPER_TOP_K, num_classes)


def steps_per_epoch(num_images: int, batch_size: int) -> int:
  """floor(images / batch), at least 1 (training drops the last partial batch)."""
  return max(1, num_images // batch_size)


def train_steps(epochs: float, num_images: int, batch_size: int) -> int:
  """ceil(epochs * steps_per_epoch), at least 1."""
  # The small margin keeps float noise (24 * 190 = 4560.000001) from adding a step.
  return max(1, math.ceil(epochs * steps_per_epoch(num_images, batch_size)
                          - 1e-6))


def vertical_images(num_train_images: int, vertical_size: int,
                    num_classes: int, negatives_fraction: float) -> int:
  """A teacher's training rows when only the split's size is known.

  n_v = round(images * (N_v + f * (N - N_v)) / N): the vertical's share of
  the images at the data's mean images per class, plus the fraction f of
  the other verticals' images kept as negatives.
  """
  share = (vertical_size + negatives_fraction * (num_classes - vertical_size))
  return int(round(num_train_images * share / num_classes))


def teacher_steps(trainer, num_rows: Optional[int], batch_size: int) -> int:
  """The steps of one teacher: a set step budget, else epochs of its own vertical.

  `trainer.train_steps` when set (every teacher the same); otherwise
  S_v = max(ceil(E * (n_v // batch)), MIN_TEACHER_STEPS) with E =
  `trainer.train_epochs`, rounded up to a whole `trainer.steps_per_loop`.
  A vertical with twice the images gets twice the steps, so every teacher
  sees each of its images about E times.

  Args:
    trainer: the teachers' `TrainerConfig`.
    num_rows: n_v, the teacher's training rows (its vertical's images plus
      sampled negatives); only read when `train_epochs` decides.
    batch_size: the teachers' batch size.

  Returns:
    S_v.

  Raises:
    ValueError: neither `train_steps` nor `train_epochs` is set.
  """
  if trainer.train_steps is not None:
    return int(trainer.train_steps)
  if trainer.train_epochs is None:
    raise ValueError(
        "The teachers have no budget: set task.specialists.trainer."
        "train_steps or task.specialists.trainer.train_epochs.")
  steps = max(train_steps(trainer.train_epochs, num_rows, batch_size),
              MIN_TEACHER_STEPS)
  loop = trainer.steps_per_loop or 1
  return -(-steps // loop) * loop


def default_epochs(epoch_steps: int) -> Tuple[float, str]:
  """The budget when neither `train_steps` nor `train_epochs` is set, and why.

  epochs = max(DEFAULT_EPOCHS, MIN_DEFAULT_STEPS / steps_per_epoch): 24
  epochs, or as many as make `MIN_DEFAULT_STEPS` steps when 24 epochs are
  fewer (a small dataset).

  Args:
    epoch_steps: steps per epoch (`steps_per_epoch`).

  Returns:
    `(epochs, reason)`.
  """
  if DEFAULT_EPOCHS * epoch_steps >= MIN_DEFAULT_STEPS:
    return DEFAULT_EPOCHS, "the default budget"
  return (MIN_DEFAULT_STEPS / epoch_steps,
          f"the default budget of {DEFAULT_EPOCHS:g} epochs is only "
          f"{int(DEFAULT_EPOCHS * epoch_steps)} steps here; raised to "
          f"{MIN_DEFAULT_STEPS} steps")


def steps_per_loop(epoch_steps: int, total_steps: int) -> int:
  """min(half an epoch, 100, train_steps) steps, at least 1."""
  return max(1, min(epoch_steps // 2, MAX_STEPS_PER_LOOP, total_steps))


def checkpoint_interval(total_steps: int, loop_steps: int) -> int:
  """Half the run, rounded down to a multiple of steps_per_loop (at least one loop)."""
  return max(loop_steps, (total_steps // 2) // loop_steps * loop_steps)


def specialists_freeze(images_per_class: float) -> str:
  """Frozen trunk below FINE_TUNE_MIN_IMAGES_PER_CLASS images per class, else a fine-tuned head.

  With few images per class, adapting the trunk's layers to one vertical
  risks memorising its images; a classifier on the frozen features has
  only its own weights to fit.
  """
  if images_per_class < FINE_TUNE_MIN_IMAGES_PER_CLASS:
    return FROZEN_TRUNK
  return FINE_TUNED_HEAD


def _get(params, path: str):
  node = params
  for part in path.split("."):
    node = getattr(node, part)
  return node


def _set(params, path: str, value) -> None:
  *parents, leaf = path.split(".")
  node = params
  for part in parents:
    node = getattr(node, part)
  setattr(node, leaf, value)


def unset(params):
  """Clears every `DERIVED_KEYS` field (None = derive from the data); returns `params`."""
  for path in DERIVED_KEYS:
    _set(params, path, None)
  return params


@functools.lru_cache(maxsize=8)
def _stats_of_json(data_json: str) -> DataStats:
  # Imported here: the config modules do not otherwise need the data loaders.
  from kc_keras.configs import data as data_cfg  # pylint: disable=g-import-not-at-top
  from kc_keras.dataloaders import factory  # pylint: disable=g-import-not-at-top

  data_config = data_cfg.DataConfig()
  data_config.override(json.loads(data_json), is_strict=True)
  source = factory.build_source(data_config)
  c2v = list(source.hierarchy.class_to_vertical)
  sizes = tuple(c2v.count(v) for v in range(max(c2v) + 1))
  return DataStats(sizes, int(source.num_examples("train")))


def stats_of(data_config) -> DataStats:
  """The `DataStats` of a `DataConfig`'s training split (cached per config)."""
  return _stats_of_json(json.dumps(data_config.as_dict(), sort_keys=True,
                                   default=list))


@dataclasses.dataclass(frozen=True)
class Derived:
  key: str
  value: object
  reason: str


_LOGGED = set()


def resolve(params, stats: Optional[DataStats] = None,
            stats_fn: Callable = stats_of) -> List[Derived]:
  """Fills every unset (None) `DERIVED_KEYS` field of `params` in place.

  Args:
    params: an unlocked `ExperimentConfig`.
    stats: the data's statistics; default `stats_fn(params.task.data)`, only
      computed when a field is unset.
    stats_fn: how to compute them.

  Returns:
    The values derived, with their reasons (each logged once per process).
  """
  teachers = params.task.specialists.trainer
  teachers_budget_set = (teachers.train_steps is not None or
                         teachers.train_epochs is not None)
  if teachers_budget_set and all(_get(params, k) is not None
                                 for k in DERIVED_KEYS
                                 if k not in _OPTIONAL_KEYS):
    return []
  stats = stats or stats_fn(params.task.data)
  out: List[Derived] = []

  def derive(key, value, reason):
    if _get(params, key) is None:
      _set(params, key, value)
      out.append(Derived(key, value, reason))

  n, sizes = stats.num_classes, stats.vertical_sizes
  trainer = params.trainer
  batch = params.task.train_batch_size
  derive("trainer.optimizer.epsilon", adam_epsilon(n),
         f"1e-7 x N for a sigmoid summed over N={n} classes")
  epoch_steps = steps_per_epoch(stats.num_train_images, batch)
  if trainer.train_steps is None:
    derive("trainer.train_epochs", *default_epochs(epoch_steps))
    derive("trainer.train_steps",
           train_steps(trainer.train_epochs, stats.num_train_images, batch),
           f"{trainer.train_epochs:g} epochs of {epoch_steps} steps "
           f"({stats.num_train_images} images // batch {batch})")
  derive("trainer.steps_per_loop",
         _loop_dividing(trainer.checkpoint_interval,
                        steps_per_loop(epoch_steps, trainer.train_steps)),
         f"min(half an epoch = {epoch_steps // 2}, {MAX_STEPS_PER_LOOP}, "
         "train_steps)")
  derive("trainer.checkpoint_interval",
         checkpoint_interval(trainer.train_steps, trainer.steps_per_loop),
         "half the run, a multiple of steps_per_loop")
  for prefix, classes in (("task.model", n),
                          ("task.specialists.model", max(sizes))):
    mode = _get(params, f"{prefix}.self_paced.mode")
    derive(f"{prefix}.self_paced.init", self_paced_init(classes, mode),
           f"{classes} classes, self_paced.mode {mode!r} ('prior' from "
           f"{PRIOR_INIT_MIN_CLASSES} classes with scaling)")
  derive("task.distillation.top_k", top_k(n), f"min({PAPER_TOP_K}, N={n})")
  if params.task.specialists.init_checkpoint:
    derive("task.specialists.freeze",
           specialists_freeze(stats.images_per_class),
           f"{stats.images_per_class:.1f} training images per class "
           f"(fine-tuning from {FINE_TUNE_MIN_IMAGES_PER_CLASS})")
  else:
    derive("task.specialists.freeze", "none",
           "no task.specialists.init_checkpoint to start from")
  if params.task.specialists.trainer.train_steps is None:
    derive("task.specialists.trainer.train_epochs", DEFAULT_EPOCHS,
           f"each teacher {DEFAULT_EPOCHS:g} passes over its vertical's "
           f"images, at least {MIN_TEACHER_STEPS} steps (teacher_steps)")
  for d in out:
    entry = (d.key, repr(d.value), stats)
    if entry not in _LOGGED:
      _LOGGED.add(entry)
      logging.info("Derived %s = %r: %s [%s].", d.key, d.value, d.reason,
                   stats.describe())
  return out


def _loop_dividing(interval: Optional[int], loop: int) -> int:
  """`loop`, or the largest divisor of a user-set checkpoint `interval` below it."""
  if interval is None:
    return loop
  return max(d for d in range(1, min(loop, interval) + 1) if interval % d == 0)
