"""The registered experiments (`kc_*`), in one explicit module.

Each factory returns a complete `ExperimentConfig`; YAML files in
`official_configs/` override only what differs.
"""

from typing import List

from official.core import exp_factory

from kc_keras.configs import kc_config

PREFIX = "kc_"


def _small_generalist_model(config: kc_config.ExperimentConfig) -> None:
  """The phone-size network: small CNN + FC(s1)-FC(s2) head (paper's baseline)."""
  model = config.task.model
  model.backbone.type = "small_cnn"
  model.head.head_type = "fc_fc"
  model.self_paced.mode = "none"
  distillation = config.task.distillation
  distillation.alpha = 0.0
  distillation.target_source = "labels"


@exp_factory.register_config_factory("kc_generalist_demo")
def kc_generalist_demo() -> kc_config.ExperimentConfig:
  """The generalist on the embedded default dataset: trains in minutes on 2 cores."""
  config = kc_config.ExperimentConfig()
  config.task.data.source = "embedded"
  _small_generalist_model(config)
  config.task.model.backbone.filters = (32, 64, 128)
  config.task.model.head.s1 = 512
  config.task.model.head.s2 = 256
  config.task.train_batch_size = 64
  config.task.eval_batch_size = 256
  config.trainer.train_steps = 1500
  config.trainer.steps_per_loop = 50
  config.trainer.checkpoint_interval = 500
  config.trainer.optimizer.learning_rate = 2e-3
  return config


@exp_factory.register_config_factory("kc_generalist_omniglot")
def kc_generalist_omniglot() -> kc_config.ExperimentConfig:
  """The generalist on Omniglot (50 alphabets = verticals, 1,623 classes), 28 px."""
  config = kc_config.ExperimentConfig()
  config.task.data.source = "omniglot"
  config.task.data.omniglot.image_size = 28
  config.task.data.augmentation.translation = 0.1
  config.task.data.augmentation.rotation = 0.03
  _small_generalist_model(config)
  config.task.model.backbone.filters = (32, 64, 128)
  config.task.model.head.s1 = 1024
  config.task.model.head.s2 = 256
  config.task.train_batch_size = 128
  config.task.eval_batch_size = 512
  # 24,345 training images: 190 steps per epoch at batch 128.
  config.trainer.train_steps = 3800
  config.trainer.steps_per_loop = 95
  config.trainer.checkpoint_interval = 950
  config.trainer.optimizer.learning_rate = 2e-3
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
