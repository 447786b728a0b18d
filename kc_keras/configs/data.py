"""Data config: which example source, its settings, and the tf.data pipeline knobs."""

import dataclasses
import os
from typing import Optional, Sequence

from official.modeling import hyperparams

from kc_keras.dataloaders.image_decoding import check_background

SOURCES = ("embedded", "omniglot", "folder", "tfrecord", "tfds")
VERTICAL_SIZE_DISTRIBUTIONS = ("uniform", "uneven")
FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")
# Kept equal to `kc_keras.dataloaders.data_errors.ON_DECODE_ERROR` (tested).
ON_DECODE_ERROR = ("error", "skip")


def _positive(prefix: str, **values) -> None:
  for name, value in values.items():
    if value is None or value < 1:
      raise ValueError(f"{prefix}.{name}={value!r} must be >= 1.")


def _drawers(prefix: str, name: str, drawers: Sequence[int], limit: int) -> None:
  if not drawers:
    raise ValueError(f"{prefix}.{name} must not be empty.")
  bad = [d for d in drawers if not 0 <= int(d) < limit]
  if bad:
    raise ValueError(f"{prefix}.{name} has drawer ids outside 0..{limit - 1}: {bad}.")
  if len(set(drawers)) != len(drawers):
    raise ValueError(f"{prefix}.{name}={list(drawers)} lists a drawer twice.")


@dataclasses.dataclass
class EmbeddedConfig(hyperparams.Config):
  """The built-in seeded generator of hierarchical images (no download).

  Attributes:
    num_verticals: `M`.
    num_classes: `N` (>= `M`), classes are split over verticals.
    vertical_sizes: 'uniform' (sizes differ by at most 1) or 'uneven' (seeded,
      Zipf-like sizes with exponent `zipf_exponent`, each at least 1).
    zipf_exponent: exponent `s` of the size weights `1 / rank**s` for 'uneven'.
    image_size: square side `H = W` in pixels.
    channels: `C` (3 = colour).
    train_examples_per_class: instances `0..T-1` of each class form 'train'.
    eval_examples_per_class: instances `T..T+E-1` form 'eval' (disjoint).
    seed: generator seed; same seed -> identical pixels.
    strokes_per_vertical: strokes in each vertical's template.
    class_jitter: how far (fraction of the image) a class moves its strokes away
      from the vertical template; larger = easier within-vertical discrimination.
    instance_jitter: per-instance stroke displacement (fraction of the image).
    instance_shift: per-instance global shift (fraction of the image).
    noise_stddev: per-pixel Gaussian noise.
  """

  num_verticals: int = 10
  num_classes: int = 1000
  vertical_sizes: str = "uniform"
  zipf_exponent: float = 1.0
  image_size: int = 32
  channels: int = 3
  train_examples_per_class: int = 20
  eval_examples_per_class: int = 5
  seed: int = 0
  strokes_per_vertical: int = 4
  class_jitter: float = 0.08
  instance_jitter: float = 0.03
  instance_shift: float = 0.06
  noise_stddev: float = 0.08

  def validate(self, prefix: str = "data.embedded"):
    _positive(prefix, num_verticals=self.num_verticals, num_classes=self.num_classes,
              image_size=self.image_size, channels=self.channels,
              train_examples_per_class=self.train_examples_per_class,
              eval_examples_per_class=self.eval_examples_per_class,
              strokes_per_vertical=self.strokes_per_vertical)
    if self.num_classes < self.num_verticals:
      raise ValueError(
          f"{prefix}.num_classes={self.num_classes} must be >= "
          f"{prefix}.num_verticals={self.num_verticals} (no empty vertical)."
      )
    if self.vertical_sizes not in VERTICAL_SIZE_DISTRIBUTIONS:
      raise ValueError(
          f"{prefix}.vertical_sizes={self.vertical_sizes!r} is not one of "
          f"{VERTICAL_SIZE_DISTRIBUTIONS}."
      )
    if self.channels not in (1, 3):
      raise ValueError(f"{prefix}.channels={self.channels} must be 1 or 3.")
    for name in ("zipf_exponent", "class_jitter", "instance_jitter",
                 "instance_shift", "noise_stddev"):
      if getattr(self, name) < 0:
        raise ValueError(f"{prefix}.{name}={getattr(self, name)} must be >= 0.")


@dataclasses.dataclass
class OmniglotConfig(hyperparams.Config):
  """Omniglot from `images_background.npz` / `images_evaluation.npz` (see docs/DATA.md).

  Attributes:
    data_dir: folder with the npz files and `alphabet_ranges.tsv`.
    image_size: 28 or 32 (resized once at load, antialiased).
    train_drawers: drawer indices (0..19) forming 'train'.
    eval_drawers: drawer indices forming 'eval' (may not overlap train).
    verify_checksums: check `*.sha256` files when present.
  """

  data_dir: str = "../shared/data/omniglot"
  image_size: int = 28
  train_drawers: tuple = tuple(range(15))
  eval_drawers: tuple = tuple(range(15, 20))
  verify_checksums: bool = True

  def validate(self, prefix: str = "data.omniglot"):
    if not self.data_dir:
      raise ValueError(f"{prefix}.data_dir must be set.")
    _positive(prefix, image_size=self.image_size)
    _drawers(prefix, "train_drawers", self.train_drawers, 20)
    _drawers(prefix, "eval_drawers", self.eval_drawers, 20)
    overlap = sorted(set(self.train_drawers) & set(self.eval_drawers))
    if overlap:
      raise ValueError(
          f"{prefix}.train_drawers and {prefix}.eval_drawers share drawers {overlap}."
      )


@dataclasses.dataclass
class FolderConfig(hyperparams.Config):
  """`root/<vertical>/<class>/<image>` trees (jpg/png), one per split.

  Attributes:
    train_dir: tree for 'train'.
    eval_dir: tree for 'eval' (optional).
    holdout_fraction: with no `eval_dir`, the fraction of each class's
      images of `train_dir` held out as 'eval' (deterministic, stratified;
      see `FolderSource`); 0 = no hold-out.
    hierarchy_file: `.json`/`.csv`; empty = derived from `train_dir`.
    image_size: square side after resizing.
    channels: 1 or 3.
  """

  train_dir: str = ""
  eval_dir: str = ""
  holdout_fraction: float = 0.0
  hierarchy_file: str = ""
  image_size: int = 32
  channels: int = 3

  def validate(self, prefix: str = "data.folder"):
    if not self.train_dir and not self.hierarchy_file:
      raise ValueError(f"{prefix}.train_dir (or {prefix}.hierarchy_file) must be set.")
    if not 0.0 <= self.holdout_fraction < 1.0:
      raise ValueError(
          f"{prefix}.holdout_fraction={self.holdout_fraction} must be in [0, 1).")
    _positive(prefix, image_size=self.image_size)
    if self.channels not in (1, 3):
      raise ValueError(f"{prefix}.channels={self.channels} must be 1 or 3.")


@dataclasses.dataclass
class TFRecordConfig(hyperparams.Config):
  """Model-garden classification TFRecords + a hierarchy file.

  Attributes:
    train_pattern: glob(s) for 'train', comma separated.
    eval_pattern: glob(s) for 'eval'.
    hierarchy_file: `.json`/`.csv` (required).
    image_size: square side after resizing.
    channels: 1 or 3.
    image_key: feature with the encoded image.
    label_key: int64 feature with the class id(s).
  """

  train_pattern: str = ""
  eval_pattern: str = ""
  hierarchy_file: str = ""
  image_size: int = 32
  channels: int = 3
  image_key: str = "image/encoded"
  label_key: str = "image/class/label"

  def validate(self, prefix: str = "data.tfrecord"):
    if not self.hierarchy_file:
      raise ValueError(f"{prefix}.hierarchy_file must be set.")
    if not self.train_pattern and not self.eval_pattern:
      raise ValueError(f"{prefix}.train_pattern or {prefix}.eval_pattern must be set.")
    _positive(prefix, image_size=self.image_size)
    if self.channels not in (1, 3):
      raise ValueError(f"{prefix}.channels={self.channels} must be 1 or 3.")


@dataclasses.dataclass
class TFDSConfig(hyperparams.Config):
  """A prepared TFDS dataset (never downloaded).

  Attributes:
    name: builder name, e.g. 'omniglot' or 'omniglot:3.0.0'.
    data_dir: TFDS data dir ('' = TFDS default).
    image_key / label_key / vertical_key: feature names.
    train_split / eval_split: TFDS split names (slicing allowed, e.g. 'train[:90%]').
    hierarchy_splits: splits read once to map labels to verticals.
    image_size: square side after resizing.
    channels: 1 or 3.
  """

  name: str = ""
  data_dir: str = ""
  image_key: str = "image"
  label_key: str = "label"
  vertical_key: str = "alphabet"
  train_split: str = "train"
  eval_split: str = "test"
  hierarchy_splits: tuple = ("train", "test")
  image_size: int = 28
  channels: int = 1

  def validate(self, prefix: str = "data.tfds"):
    if not self.name:
      raise ValueError(f"{prefix}.name must be set.")
    for key in ("image_key", "label_key", "vertical_key", "train_split", "eval_split"):
      if not getattr(self, key):
        raise ValueError(f"{prefix}.{key} must be set.")
    if not self.hierarchy_splits:
      raise ValueError(f"{prefix}.hierarchy_splits must not be empty.")
    _positive(prefix, image_size=self.image_size)
    if self.channels not in (1, 3):
      raise ValueError(f"{prefix}.channels={self.channels} must be 1 or 3.")


@dataclasses.dataclass
class AugmentationConfig(hyperparams.Config):
  """Training-time augmentation with Keras 3 preprocessing layers; 0 disables each.

  Attributes:
    translation: max shift as a fraction of height/width (RandomTranslation).
    rotation: max rotation as a fraction of a full turn (RandomRotation).
    zoom: max zoom in/out fraction (RandomZoom).
    flip: '' (off) or one of `FLIP_MODES` (RandomFlip).
    fill_mode: how pixels outside the input are filled ('constant', 'nearest', ...).
  """

  translation: float = 0.0
  rotation: float = 0.0
  zoom: float = 0.0
  flip: str = ""
  fill_mode: str = "constant"

  @property
  def enabled(self) -> bool:
    return bool(self.translation or self.rotation or self.zoom or self.flip)

  def validate(self, prefix: str = "data.augmentation"):
    for name in ("translation", "rotation", "zoom"):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ValueError(f"{prefix}.{name}={value} must be in [0, 1).")
    if self.flip and self.flip not in FLIP_MODES:
      raise ValueError(f"{prefix}.flip={self.flip!r} must be '' or one of {FLIP_MODES}.")
    if self.fill_mode not in ("constant", "nearest", "reflect", "wrap"):
      raise ValueError(f"{prefix}.fill_mode={self.fill_mode!r} is not supported.")


@dataclasses.dataclass
class DataConfig(hyperparams.Config):
  """Input data: the source (and its sub-config) plus tf.data knobs.

  `image_size` lives in each source's sub-config (Omniglot 28, embedded 32, ...).

  Attributes:
    source: one of `SOURCES`.
    embedded / omniglot / folder / tfrecord / tfds: per-source settings.
    shuffle_buffer_size: training shuffle buffer (elements).
    seed: seed of shuffling, negatives sampling and augmentation.
    deterministic: tf.data deterministic element order.
    max_labels_per_example: `L`, width of padded `label_ids`.
    augmentation: training-time augmentation.
    num_parallel_calls: decode/augment parallelism (-1 = AUTOTUNE).
    cache_decoded: cache decoded images in memory (after sharding).
    on_decode_error: what a corrupt or unreadable image (folder, TFRecord,
      TFDS) does: 'error' stops with a `DataError` naming the file or record;
      'skip' drops it, counts it, and reports the count (`skipped_examples`
      in the training logs, train_summary.json and eval_metrics.json).
    alpha_background: `(r, g, b)` in [0, 1] behind the transparent pixels of
      RGBA, grey + alpha and transparent-palette images (folder, TFRecord,
      TFDS); white by default (docs/DATA.md, `dataloaders.image_decoding`).
  """

  source: str = "embedded"
  embedded: EmbeddedConfig = dataclasses.field(default_factory=EmbeddedConfig)
  omniglot: OmniglotConfig = dataclasses.field(default_factory=OmniglotConfig)
  folder: FolderConfig = dataclasses.field(default_factory=FolderConfig)
  tfrecord: TFRecordConfig = dataclasses.field(default_factory=TFRecordConfig)
  tfds: TFDSConfig = dataclasses.field(default_factory=TFDSConfig)
  shuffle_buffer_size: int = 10000
  seed: int = 0
  deterministic: bool = True
  max_labels_per_example: int = 1
  augmentation: AugmentationConfig = dataclasses.field(
      default_factory=AugmentationConfig
  )
  num_parallel_calls: int = -1
  cache_decoded: bool = False
  on_decode_error: str = "error"
  # White: see docs/DATA.md "Images as users have them" for why.
  alpha_background: tuple = (1.0, 1.0, 1.0)

  def validate(self, prefix: str = "data"):
    """Raises ValueError naming the full key path of the bad value."""
    if self.source not in SOURCES:
      raise ValueError(f"{prefix}.source={self.source!r} is not one of {SOURCES}.")
    # Only the selected source must be complete; the others keep their defaults.
    getattr(self, self.source).validate(prefix=f"{prefix}.{self.source}")
    self.augmentation.validate(prefix=f"{prefix}.augmentation")
    _positive(prefix, shuffle_buffer_size=self.shuffle_buffer_size,
              max_labels_per_example=self.max_labels_per_example)
    if self.on_decode_error not in ON_DECODE_ERROR:
      raise ValueError(
          f"{prefix}.on_decode_error={self.on_decode_error!r} is not one of "
          f"{ON_DECODE_ERROR}."
      )
    check_background(self.alpha_background, where=f"{prefix}.alpha_background")
    if self.num_parallel_calls != -1 and self.num_parallel_calls < 1:
      raise ValueError(
          f"{prefix}.num_parallel_calls={self.num_parallel_calls} must be -1 "
          "(AUTOTUNE) or >= 1."
      )

  def image_shape(self) -> Optional[tuple]:
    """`(H, W, C)` of the selected source, from config alone."""
    sub = getattr(self, self.source)
    channels = 1 if self.source == "omniglot" else sub.channels
    return (sub.image_size, sub.image_size, channels)


DATA_SPEC_SCHEMES = ("folder", "tfrecord", "tfds")


def data_spec_override(spec: str, hierarchy_file: str = "") -> dict:
  """The `task.data` override of `run_pipeline --data=SPEC`.

  SPEC is one of:
    folder:TRAIN_DIR[,EVAL_DIR]   `TRAIN_DIR/<vertical>/<class>/<image>`;
                                  no EVAL_DIR: a hold-out of TRAIN_DIR.
    tfrecord:TRAIN_GLOB[,EVAL_GLOB]  model-garden TFRecords; needs
                                  `hierarchy_file`.
    tfds:NAME                     a prepared TFDS dataset (splits, keys:
                                  `task.data.tfds.*`).

  Args:
    spec: the flag's value.
    hierarchy_file: the class -> vertical file (`--hierarchy_file`).

  Returns:
    `{"task": {"data": {...}}}`.

  Raises:
    ValueError: one line naming what is wrong with `spec`.
  """
  scheme, sep, rest = spec.partition(":")
  if not sep or scheme not in DATA_SPEC_SCHEMES or not rest:
    raise ValueError(
        f"--data={spec!r} must be folder:TRAIN_DIR[,EVAL_DIR], "
        "tfrecord:TRAIN_GLOB[,EVAL_GLOB] or tfds:NAME.")
  if scheme == "tfds":
    if hierarchy_file:
      raise ValueError(
          "--hierarchy_file is not used with --data=tfds: the verticals come "
          "from the feature task.data.tfds.vertical_key.")
    return {"task": {"data": {"source": "tfds", "tfds": {"name": rest}}}}
  parts = rest.split(",")
  if len(parts) > 2 or not all(parts):
    raise ValueError(f"--data={spec!r}: give a training {scheme} and at most "
                     "one evaluation one, separated by a comma.")
  train, evaluation = parts[0], (parts[1] if len(parts) == 2 else "")
  if scheme == "folder":
    for what, path in (("training", train), ("evaluation", evaluation)):
      if path and not os.path.isdir(path):
        raise ValueError(f"--data: the {what} folder {path!r} does not exist.")
    if hierarchy_file and not os.path.isfile(hierarchy_file):
      raise ValueError(f"--hierarchy_file {hierarchy_file!r} does not exist.")
    return {"task": {"data": {"source": "folder", "folder": {
        "train_dir": train, "eval_dir": evaluation,
        "hierarchy_file": hierarchy_file}}}}
  if not hierarchy_file:
    raise ValueError(
        "--data=tfrecord needs --hierarchy_file (the class -> vertical map).")
  if not evaluation:
    raise ValueError(
        "--data=tfrecord needs an evaluation glob: tfrecord:TRAIN_GLOB,EVAL_GLOB.")
  return {"task": {"data": {"source": "tfrecord", "tfrecord": {
      "train_pattern": train, "eval_pattern": evaluation,
      "hierarchy_file": hierarchy_file}}}}
