"""The registered experiments (`kc_*`), in one explicit module.

Each factory returns a complete `ExperimentConfig`; YAML files in
`official_configs/` override only what differs.
"""

from typing import List, Optional

from official.core import exp_factory

from kc_keras.configs import derived_defaults
from kc_keras.configs import kc_config
from kc_keras.configs import run_layout

PREFIX = "kc_"
# With no eval folder, a fifth of each class's images (at least one of a class
# with two or more) is held out for evaluation.
_OWN_DATA_HOLDOUT = 0.2


def _demo_data(config: kc_config.ExperimentConfig) -> None:
  """The embedded demo: 10 verticals x 20 classes of 32 px images.

  Classes of a vertical share a stroke template and differ by finer details,
  so telling them apart is where specialists help.
  """
  data = config.task.data
  data.source = "embedded"
  data.embedded.num_verticals = 10
  data.embedded.num_classes = 200
  data.embedded.train_examples_per_class = 60
  data.embedded.eval_examples_per_class = 10
  data.embedded.class_jitter = 0.15


def _omniglot_data(config: kc_config.ExperimentConfig) -> None:
  """Omniglot at 28 px, drawers 0-14 train / 15-19 eval, light augmentation."""
  data = config.task.data
  data.source = "omniglot"
  data.omniglot.image_size = 28
  data.augmentation.translation = 0.1
  data.augmentation.rotation = 0.03


def _phone_size_network(model, s1: int, s2: int) -> None:
  """The network that ships: a small CNN with the paper's FC(s1)-FC(s2) head."""
  model.backbone.type = "small_cnn"
  model.backbone.filters = (32, 64, 128)
  model.head.head_type = "fc_fc"
  model.head.s1 = s1
  model.head.s2 = s2
  model.self_paced.mode = "none"


def _hard_labels_only(config: kc_config.ExperimentConfig) -> None:
  config.task.distillation.alpha = 0.0
  config.task.distillation.target_source = "labels"


def _trunk_teachers(config: kc_config.ExperimentConfig, trunk_model,
                    run_dir: str, trunk: str, steps: Optional[int],
                    steps_per_loop: int, schedule: str,
                    freeze: Optional[str]) -> None:
  """Teachers = the trunk, with `freeze` of it fixed, plus a classifier per vertical.

  With 'backbone_and_hidden' the classifier of each vertical is trained on
  the trunk's features (`training/frozen_features.py`); None derives the
  recipe from the images per class. `steps` None gives each teacher a
  budget in epochs of its own vertical, derived from the data
  (`derived_defaults.teacher_steps`). The trunk (`run_dir/<trunk>`), the
  teachers and the soft-target cache are where the pipeline puts them
  (`run_layout`).
  """
  config.override(run_layout.teacher_paths(run_dir, trunk), is_strict=True)
  specialists = config.task.specialists
  specialists.model.override(trunk_model)
  specialists.freeze = freeze
  specialists.train_batch_size = 64
  specialists.trainer.train_steps = steps
  specialists.trainer.steps_per_loop = steps_per_loop
  specialists.trainer.checkpoint_interval = steps
  specialists.trainer.optimizer.learning_rate = 1e-2
  specialists.trainer.optimizer.schedule = schedule


def _student(config: kc_config.ExperimentConfig, s1: int, s2: int) -> None:
  """The paper's best student: FC(s1)-SC(s2) + soft targets + vertical-level S."""
  config.task.model.head.head_type = "fc_sc"
  config.task.model.head.s1 = s1
  config.task.model.head.s2 = s2
  config.task.model.self_paced.mode = "vertical"
  config.task.model.self_paced.init = "sqrt_nv"
  # gamma must grow from sqrt(N_v) to ~5 sqrt(N_v) for the sigmoid loss to
  # say "no" to other verticals' classes; see SelfPacedScale.
  config.task.model.self_paced.learning_rate_multiplier = 30.0
  # Ours: one norm per vertical and batch, not per image ('per_image', the
  # paper), so a block keeps the size that tells "not my vertical"; see
  # SelfPacedScale and docs/RESULTS.md, "Self-paced scaling".
  config.task.model.self_paced.normalization = "per_batch"
  # Our choice (METHOD.md section 1): blend soft and hard targets half and
  # half; alpha = 1 (soft only) is the paper (docs/RESULTS.md, "Online soft
  # targets, and what did not help").
  config.task.distillation.alpha = 0.5
  config.task.distillation.target_source = "cache"


@exp_factory.register_config_factory("kc_generalist_demo")
def kc_generalist_demo() -> kc_config.ExperimentConfig:
  """The generalist on the embedded demo data: about a minute on 2 cores."""
  config = kc_config.ExperimentConfig()
  _demo_data(config)
  _phone_size_network(config.task.model, s1=512, s2=256)
  _hard_labels_only(config)
  config.task.train_batch_size = 64
  config.task.eval_batch_size = 256
  config.trainer.train_steps = 800
  config.trainer.steps_per_loop = 50
  config.trainer.checkpoint_interval = 400
  config.trainer.optimizer.learning_rate = 2e-3
  return config


@exp_factory.register_config_factory("kc_student_demo")
def kc_student_demo() -> kc_config.ExperimentConfig:
  """Specialists, soft targets and the FC-SC + D + S student on the demo data.

  Teachers start from the demo generalist (`task.specialists.init_checkpoint`)
  with its backbone and hidden layers frozen, and learn a classifier of their
  vertical; the student has the generalist's backbone and budget.
  """
  config = kc_generalist_demo()
  generalist_model = config.task.model.as_dict()
  _student(config, s1=512, s2=256)
  # Where README command 1 puts them (scripts/run_demo.sh, workdir runs/demo).
  _trunk_teachers(config, generalist_model, "runs/demo", "generalist",
                  steps=100, steps_per_loop=50,
                  schedule="cosine", freeze=derived_defaults.FROZEN_TRUNK)
  return config


@exp_factory.register_config_factory("kc_generalist")
def kc_generalist() -> kc_config.ExperimentConfig:
  """The generalist for your own data (`run_pipeline --pipeline=kc --data=...`).

  The demo's phone-size network and learning rate; the budget (24 epochs
  unless `trainer.train_epochs` or `trainer.train_steps` is set), Adam's
  epsilon, the intervals, the self-paced init, K and the teachers' recipe
  are derived from the data (`derived_defaults`). Without `--data` it
  trains on the embedded generator's defaults. It carries the teachers'
  settings of `kc_student` too, so that one config file serves every stage
  and changing the teachers never invalidates the generalist's run.
  """
  config = derived_defaults.unset(kc_config.ExperimentConfig())
  _phone_size_network(config.task.model, s1=512, s2=256)
  _hard_labels_only(config)
  config.task.data.folder.holdout_fraction = _OWN_DATA_HOLDOUT
  config.task.train_batch_size = 64
  config.task.eval_batch_size = 256
  config.trainer.optimizer.learning_rate = 2e-3
  _trunk_teachers(config, config.task.model.as_dict(), "runs/kc",
                  "generalist", steps=None, steps_per_loop=100,
                  schedule="constant", freeze=None)
  return config


@exp_factory.register_config_factory("kc_student")
def kc_student() -> kc_config.ExperimentConfig:
  """Specialists on the generalist, cached soft targets and the FC-SC + D + S student, your own data."""
  config = kc_generalist()
  _student(config, s1=512, s2=256)
  config.task.model.self_paced.init = None
  return config


def _flatten_cnn(model, filters, s1: int, s2: int) -> None:
  """small_cnn with `filters`, last map flattened, FC(s1)-FC(s2) head."""
  _phone_size_network(model, s1=s1, s2=s2)
  model.backbone.filters = filters
  model.backbone.pooling = "flatten"
  model.head.dropout = 0.0


def _omniglot_network(model) -> None:
  """The Omniglot student: 8/16/32 CNN, flattened 4x4 map, FC(256)-FC(24).

  About 180K parameters, a phone-size network. The narrow penultimate
  layer is the paper's bottleneck in miniature (FC4096-FC512 for 100K
  classes): 24 units for 1,623 classes, where the SC head gives each
  alphabet its own 24. A wider head brings the generalist close to the best
  specialists we could train, leaving little gap for a student to close;
  FC(256)-FC(24) keeps the gap (docs/RESULTS.md, "The student's head shape
  decides the gap").
  """
  _flatten_cnn(model, (8, 16, 32), s1=256, s2=24)


def _omniglot_trunk_network(model) -> None:
  """The Omniglot teachers' trunk: 32/64/128 CNN, FC(256)-FC(256), 15x the student's conv MACs."""
  _flatten_cnn(model, (32, 64, 128), s1=256, s2=256)


# BatchNorm recalibration after training: 100 batches of 128 (half an
# Omniglot epoch, 6% of the data-rich rows' 1,000 steps).
_RECALIBRATION_BATCHES = 100


def _omniglot_schedule(config: kc_config.ExperimentConfig, epochs: int) -> None:
  # Steps, logging and checkpoint intervals, Adam's epsilon and the self-paced
  # init are derived from the data at parse time (derived_defaults).
  config.task.train_batch_size = 128
  config.task.eval_batch_size = 512
  config.trainer.train_epochs = float(epochs)
  config.trainer.optimizer.learning_rate = 2e-3
  config.trainer.optimizer.schedule = "constant"
  # With a constant learning rate the BatchNorm moving averages lag the
  # final weights (docs/RESULTS.md, "BatchNorm recalibration").
  config.trainer.batch_norm_recalibration_batches = _RECALIBRATION_BATCHES


def _student_on_trunk(config: kc_config.ExperimentConfig, run_dir: str,
                      trunk_model) -> None:
  """A generalist config -> the FC(s1)-SC(s2) + D + S student of frozen-trunk teachers.

  The student keeps the generalist's backbone and widths (s2 per vertical
  block). The teachers are `run_dir/trunk` (a network of `trunk_model`,
  trained by the pipeline's trunk stage) with a classifier of their vertical
  trained 300 steps on its frozen features. The self-paced init, K and the
  teachers' freezing are derived from the data (derived_defaults).
  """
  head = config.task.model.head
  _student(config, s1=head.s1, s2=head.s2)
  config.task.model.self_paced.init = None
  _trunk_teachers(config, trunk_model, run_dir, "trunk", steps=300,
                  steps_per_loop=100, schedule="constant", freeze=None)


@exp_factory.register_config_factory("kc_generalist_omniglot")
def kc_generalist_omniglot() -> kc_config.ExperimentConfig:
  """The generalist on Omniglot (50 alphabets = verticals, 1,623 classes), 24 epochs."""
  config = derived_defaults.unset(kc_config.ExperimentConfig())
  _omniglot_data(config)
  _omniglot_network(config.task.model)
  _hard_labels_only(config)
  # 8 epochs left every row short of convergence (the generalist's training
  # top-1 still rising) and no student row separated from it.
  _omniglot_schedule(config, epochs=24)
  return config


@exp_factory.register_config_factory("kc_trunk_omniglot")
def kc_trunk_omniglot() -> kc_config.ExperimentConfig:
  """The teachers' trunk: a larger network trained 20 epochs (teachers may cost more)."""
  config = kc_generalist_omniglot()
  _omniglot_trunk_network(config.task.model)
  _omniglot_schedule(config, epochs=20)
  return config


@exp_factory.register_config_factory("kc_student_omniglot")
def kc_student_omniglot() -> kc_config.ExperimentConfig:
  """Specialists on the trunk, online soft targets, the FC-SC + D + S student, 24 epochs.

  Each teacher is the 32/64/128 trunk with its backbone and hidden layers
  frozen and a classifier of its alphabet trained on them (300 steps); the
  student has the generalist's backbone, widths and schedule.
  """
  config = kc_generalist_omniglot()
  _student_on_trunk(config, "runs/omniglot",
                    kc_trunk_omniglot().task.model.as_dict())
  # The teachers score the very shifted and rotated image the student sees.
  # The cache holds their targets for the un-augmented images, and with 15
  # images per character those were no better than the labels
  # (docs/RESULTS.md, "Probes on the full student").
  config.task.distillation.target_source = "online"
  return config


def _rich_embedded_data(config: kc_config.ExperimentConfig) -> None:
  """The paper's data-rich regime in miniature, on the embedded generator.

  20 verticals of uneven (Zipf) sizes over 2,000 classes, 32 px; 100 training
  images per class (200,000), more than any row's budget reads, so no image is
  seen twice: the generator stands in for "unlimited images per class".
  """
  data = config.task.data
  data.source = "embedded"
  data.embedded.num_verticals = 20
  data.embedded.num_classes = 2000
  data.embedded.vertical_sizes = "uneven"
  data.embedded.train_examples_per_class = 100
  data.embedded.eval_examples_per_class = 5
  # The generator's default (finer than the demo's 0.15): at 0.15 the
  # 1,000-step generalist already reached 95.5 mpvap, leaving no gap to close.
  data.embedded.class_jitter = 0.08


def _rich_embedded_schedule(config: kc_config.ExperimentConfig,
                            epochs: float) -> None:
  config.task.train_batch_size = 128
  config.task.eval_batch_size = 500
  config.trainer.train_epochs = epochs
  config.trainer.optimizer.learning_rate = 2e-3
  config.trainer.optimizer.schedule = "constant"
  # The moving averages lag here too (docs/RESULTS.md, "BatchNorm
  # recalibration").
  config.trainer.batch_norm_recalibration_batches = _RECALIBRATION_BATCHES


# Budget of every network row (1,000 steps at batch 128: each image read at
# most once) and of the teachers' trunk (3,000 steps).
_RICH_EPOCHS, _RICH_TRUNK_EPOCHS = 0.64, 1.92


@exp_factory.register_config_factory("kc_generalist_embedded_rich")
def kc_generalist_embedded_rich() -> kc_config.ExperimentConfig:
  """The generalist on 2,000 embedded classes in 20 verticals, images never repeated."""
  config = derived_defaults.unset(kc_config.ExperimentConfig())
  _rich_embedded_data(config)
  _flatten_cnn(config.task.model, (16, 32, 64), s1=256, s2=256)
  # With ReLU, self-paced scaling killed most of the student's first hidden
  # layer within a few hundred steps here and the S rows never trained;
  # GELU has no dead units (docs/RESULTS.md, "GELU in the data-rich head").
  config.task.model.head.activation = "gelu"
  _hard_labels_only(config)
  _rich_embedded_schedule(config, _RICH_EPOCHS)
  return config


@exp_factory.register_config_factory("kc_trunk_embedded_rich")
def kc_trunk_embedded_rich() -> kc_config.ExperimentConfig:
  """The teachers' trunk on the data-rich embedded set: the same network, 3x the steps."""
  config = kc_generalist_embedded_rich()
  _rich_embedded_schedule(config, _RICH_TRUNK_EPOCHS)
  return config


@exp_factory.register_config_factory("kc_student_embedded_rich")
def kc_student_embedded_rich() -> kc_config.ExperimentConfig:
  """Specialists on the trunk and the FC-SC + D + S student, data-rich embedded set."""
  config = kc_generalist_embedded_rich()
  _student_on_trunk(config, "runs/embedded_rich",
                    kc_trunk_embedded_rich().task.model.as_dict())
  return config


def names() -> List[str]:
  """Names of the registered kc_* experiments."""
  # pylint: disable=protected-access
  return sorted(n for n in exp_factory._REGISTERED_CONFIGS if n.startswith(PREFIX))


def get_experiment(name: str) -> kc_config.ExperimentConfig:
  """Returns a fresh config of the registered experiment `name`.

  Raises:
    ValueError: for an unknown name, listing the registered ones.
  """
  if not name:
    raise ValueError("The flag --experiment must be specified.")
  try:
    return exp_factory.get_exp_config(name)
  except (KeyError, LookupError, ValueError) as e:
    raise ValueError(
        f"Unknown experiment {name!r}; registered: {', '.join(names())}."
    ) from e
