"""One function per `--mode` of the trainer: train, eval, specialists, target cache."""

import json
import os
import re
from typing import Dict, Optional, Sequence, Tuple

from absl import logging
import keras
import tensorflow as tf

from kc_keras.configs import checks
from kc_keras.configs import data as data_config_lib
from kc_keras.configs import kc_config
from kc_keras.dataloaders import data_errors
from kc_keras.dataloaders import factory
from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.dataloaders import pipeline
from kc_keras.dataloaders.sources import folder as folder_source
from kc_keras.distillation import target_cache
from kc_keras.distillation import teacher_bank as teacher_bank_lib
from kc_keras.training import controller as controller_lib
from kc_keras.training import eval_binding
from kc_keras.training import evaluate as evaluate_lib
from kc_keras.training import model_builder
from kc_keras.training import multi_worker
from kc_keras.training import optimizers
from kc_keras.training import restore as restore_lib
from kc_keras.training import specialists
from kc_keras.training import strategy as strategy_lib
from kc_keras.utils import files
from kc_keras.utils import run_lock

EVAL_METRICS_FILE = "eval_metrics.json"
# `--eval_data` metrics go to `eval_metrics_<name of the data folder>.json`.
OTHER_EVAL_METRICS_PATTERN = "eval_metrics_{name}.json"
EVAL_DATA_KINDS = ("folder",)
SPECIALISTS_METRICS_FILE = "eval_specialists_metrics.json"
TRAIN_SUMMARY_FILE = "train_summary.json"
PARAMS_FILE = "params.yaml"


def save_params(params: kc_config.ExperimentConfig, model_dir: str) -> str:
  """Writes the final config to `model_dir/params.yaml` atomically."""
  import yaml  # pylint: disable=g-import-not-at-top

  path = os.path.join(model_dir, PARAMS_FILE)
  files.atomic_write_text(
      path, yaml.safe_dump(params.as_dict(), default_flow_style=False))
  return path


def keys_a_network_never_reads(params: kc_config.ExperimentConfig
                               ) -> Tuple[str, ...]:
  """Key paths (prefixes end in '.') that training or evaluating `params`' network ignores.

  A network trained on labels alone (`task.distillation.target_source`
  'labels', the generalist) reads nothing of the teachers: their settings
  and the teachers' and cache's paths. The own-data generalist carries the
  teachers' settings so that one config file serves every stage; changing
  them must not invalidate its run.
  """
  if params.task.distillation.target_source != "labels":
    return ()
  return ("task.specialists.", "task.distillation.teachers_dir",
          "task.distillation.cache_dir")


def check_params_change(params: kc_config.ExperimentConfig, model_dir: str,
                        allow: bool = False,
                        unread: Sequence[str] = ()) -> None:
  """Compares the config with the `params.yaml` a previous run left in `model_dir`.

  Keys in `checks.RESUME_SAFE_KEYS` (steps, intervals, runtime) and `unread`
  may change; any other difference means the checkpoints belong to another
  experiment.

  Args:
    params: the current config.
    model_dir: the run directory.
    allow: log the differences instead of refusing (`--allow_config_change`).
    unread: key paths the run's mode never reads
      (`keys_a_network_never_reads`).

  Raises:
    checks.ConfigError: naming every differing key path with both values,
      or an unreadable params.yaml.
  """
  path = os.path.join(model_dir, PARAMS_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = checks.load_yaml(f, path) or {}
  if not isinstance(old, dict):
    raise checks.ConfigError(f"{path}: not a config (a YAML mapping).")
  # Keys added to the config after that run, at their defaults, change nothing.
  defaults = kc_config.ExperimentConfig().as_dict()
  ignore = tuple(checks.RESUME_SAFE_KEYS) + tuple(unread)
  if allow:
    diffs = checks.differing_keys(old, params.as_dict(), ignore=ignore,
                                  defaults=defaults)
    if diffs:
      logging.warning("--allow_config_change: %s differs from %s in %s",
                      model_dir, path, [k for k, _, _ in diffs])
    return
  checks.check_rerun(old, params.as_dict(), model_dir, defaults=defaults,
                     ignore=ignore)


class Session:
  """What every mode needs: strategy, data source, hierarchy (built once).

  Before any model is built it checks, in this order: the config against
  the data's hierarchy (`kc_config.check_against_hierarchy`), the hierarchy
  against the one recorded in `model_dir`, and the config against the
  recorded `params.yaml` (`check_params_change`); then it records both.

  A writing mode passes `lock`: the chief then owns `model_dir`
  (`run_lock.DirectoryLock`) before it reads or writes `params.yaml`, so two
  runs started on one directory cannot mix their configs and checkpoints;
  use the session as a context manager to release it.

  Args:
    params: the validated experiment config.
    model_dir: the run directory.
    allow_config_change: see `check_params_change`.
    source: the data to use instead of `params.task.data`'s (the eval data
      of `evaluate(eval_data=...)`, labelled with the run's hierarchy).
    lock: what the run does ("training"), to own `model_dir` while it runs;
      None takes no lock (readers, and callers that lock themselves).
    unread: see `check_params_change`.

  Raises:
    ValueError: from any of the checks above, naming what differs.
    files.StorageError: `model_dir` cannot be written (read-only, full).
    run_lock.LockedError: another live process owns `model_dir`.
  """

  def __init__(self, params: kc_config.ExperimentConfig, model_dir: str,
               allow_config_change: bool = False, source=None,
               lock: Optional[str] = None, unread: Sequence[str] = ()):
    self.params = params
    self.model_dir = model_dir
    self._lock = None
    strategy_lib.set_precision_policy(params.runtime)
    keras.utils.set_random_seed(params.runtime.seed)
    self.strategy = strategy_lib.build_strategy(params.runtime)
    self.source = (source if source is not None
                   else factory.build_source(params.task.data))
    self.hierarchy = self.source.hierarchy
    kc_config.check_against_hierarchy(params, self.hierarchy)
    files.check_writable(
        model_dir, "every mode records params.yaml and writes its results "
        "there (eval: eval_metrics.json and eval/ summaries); copy the run "
        "to a writable directory and pass that as --model_dir.")
    self.is_chief = multi_worker.is_chief(self.strategy)
    if lock and self.is_chief:
      self._lock = run_lock.DirectoryLock(model_dir, lock).acquire()
    try:
      # A fresh run records its hierarchy; a resumed one must match it.
      restore_lib.check_recorded_hierarchy(
          model_dir, self.hierarchy, record=self.is_chief, required=False)
      check_params_change(params, model_dir, allow_config_change, unread)
      if self.is_chief:
        save_params(params, model_dir)
    except BaseException:
      self.close()
      raise

  def close(self) -> None:
    """Releases the `model_dir` lock, if this session holds it."""
    if self._lock is not None:
      self._lock.release()
      self._lock = None

  def __enter__(self) -> "Session":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def skip_counter(self) -> Optional[data_errors.SkipCounter]:
    """A counter of skipped records when `task.data.on_decode_error='skip'`."""
    if self.params.task.data.on_decode_error == "skip":
      return data_errors.SkipCounter()
    return None

  def build_model(self, teacher_bank=None) -> keras.Model:
    """Builds and compiles the experiment's model under the strategy scope."""
    params = self.params
    with self.strategy.scope():
      model = model_builder.build_kc_model(
          params.task,
          self.hierarchy,
          self.source.image_shape,
          global_batch_size=params.task.train_batch_size,
          teacher_bank=teacher_bank,
      )
      optimizer = optimizers.build_optimizer(
          params.trainer.optimizer, params.trainer.train_steps
      )
      model.compile(optimizer=optimizer, jit_compile=False)
      model_builder.build_variables(model, self.source.image_shape)
      optimizer.build(model.trainable_variables)
    return model

  def eval_dataset(self, skip_counter=None) -> tf.data.Dataset:
    return pipeline.build_dataset(
        self.source,
        "eval",
        self.params.task.data,
        training=False,
        global_batch_size=self.params.task.eval_batch_size,
        skip_counter=skip_counter,
    )


def _log_alpha_found(session: Session) -> None:
  """Says once per run that images with transparency were composited."""
  notice = getattr(session.source, "alpha_notice", None)
  if notice is not None:
    notice.log_once()


def _skipped(counter: Optional[data_errors.SkipCounter], what: str) -> int:
  """The count of `counter` (0 without one), logged when records were skipped."""
  count = counter.value() if counter is not None else 0
  if count:
    logging.warning("%d unreadable %s records were skipped "
                    "(task.data.on_decode_error=skip).", count, what)
  return count


def train(params: kc_config.ExperimentConfig, model_dir: str,
          verbose: bool = True, allow_config_change: bool = False
          ) -> controller_lib.TrainResult:
  """Trains the experiment's model to `trainer.train_steps`, resuming if possible.

  Args:
    params: the validated experiment config.
    model_dir: checkpoints, summaries, hierarchy and reports.
    verbose: show a progress bar.
    allow_config_change: see `check_params_change`.

  Returns:
    The controller's `TrainResult`; with `on_decode_error='skip'` its logs
    (and train_summary.json) hold `skipped_examples`, counted by this process.
  """
  with Session(params, model_dir, allow_config_change, lock="training",
               unread=keys_a_network_never_reads(params)) as session:
    return _train(session, verbose)


def build_training_model(session: Session) -> keras.Model:
  """The session's compiled model, with its online teachers when it reads them.

  `task.distillation.target_source` 'online' loads the checked teachers
  (`specialists.load_teacher_bank`) into the model; other sources need none.
  """
  bank = None
  if session.params.task.distillation.target_source == "online":
    with session.strategy.scope():
      bank = specialists.load_teacher_bank(
          session.params, session.model_dir, session.hierarchy)
  return session.build_model(teacher_bank=bank)


def train_dataset_fn(session: Session, skip_counter=None):
  """The training input of the session's model, as `TrainController` takes it.

  Images and labels of the training split, with the soft-target cache's
  rows (checked against the teachers, data and K it must be bound to) when
  `task.distillation.target_source` is 'cache'.

  Returns:
    `dataset_fn(input_context, start_batch) -> tf.data.Dataset`.

  Raises:
    target_cache.TargetCacheMismatchError: a cache bound to something else.
  """
  params = session.params
  expected = (cache_binding(session, session.model_dir)
              if params.task.distillation.target_source == "cache" else None)

  def dataset_fn(input_context, start_batch):
    extra = None
    if expected is not None:
      extra = target_cache.load_target_cache(
          params.task.distillation.cache_dir, expected=expected,
          verify_checksums=params.task.distillation.verify_cache_checksums)
    return pipeline.build_dataset(
        session.source,
        "train",
        params.task.data,
        training=True,
        global_batch_size=params.task.train_batch_size,
        input_context=input_context,
        extra=extra,
        start_batch=start_batch,
        skip_counter=skip_counter,
    )

  return dataset_fn


def _train(session: Session, verbose: bool) -> controller_lib.TrainResult:
  """`train` in an open session."""
  params, model_dir = session.params, session.model_dir
  counter = session.skip_counter()
  model = build_training_model(session)
  dataset_fn = train_dataset_fn(session, counter)

  def extra_logs():
    # Each loop boundary: the alpha line appears soon after the first such image.
    _log_alpha_found(session)
    if counter is None:
      return {}
    return {"skipped_examples": float(counter.value())}

  controller = controller_lib.TrainController(
      model=model,
      strategy=session.strategy,
      dataset_fn=dataset_fn,
      config=params.trainer,
      model_dir=model_dir,
      global_batch_size=params.task.train_batch_size,
      jit_compile=params.runtime.jit_compile,
      run_eagerly=params.runtime.run_eagerly,
      sync_batch_norm=params.runtime.sync_batch_norm,
      extra_logs=extra_logs,
  )
  result = controller.train(verbose=verbose)
  _log_alpha_found(session)
  if counter is not None:
    # The final count: the last loop's logs can precede records read since.
    result.logs["skipped_examples"] = float(_skipped(counter, "training"))
  summary_path = os.path.join(model_dir, TRAIN_SUMMARY_FILE)
  if not session.is_chief or (not result.history and
                              os.path.exists(summary_path)):
    # A rerun of a finished run trains nothing: the summary of the sitting
    # that finished it (its logs and rates) stays.
    return result
  files.atomic_write_json(
      summary_path,
      dict(step=result.step, logs=result.logs,
           steps_per_second=result.steps_per_second,
           examples_per_second=result.examples_per_second),
  )
  logging.info("Training done at step %d: %s", result.step, result.logs)
  return result


def parse_eval_data(eval_data: str) -> str:
  """The folder of an `--eval_data=folder:DIR` value.

  Raises:
    ValueError: another form, or a folder that does not exist (one line).
  """
  kind, colon, path = str(eval_data).partition(":")
  if not colon or kind not in EVAL_DATA_KINDS or not path:
    raise ValueError(
        f"--eval_data={eval_data!r}: use folder:DIR, where DIR holds "
        "<vertical>/<class>/<image> (names as in the run)")
  if not os.path.isdir(path):
    raise ValueError(f"--eval_data: folder {path!r} not found")
  return path


def eval_data_source(params: kc_config.ExperimentConfig, model_dir: str,
                     eval_data: str) -> folder_source.FolderSource:
  """The eval source of `--eval_data=folder:DIR`, labelled with the run's classes.

  Class folders are matched to the run's class ids by name (the run's
  `hierarchy.json`); every class must be one of the run's and sit under the
  run's vertical for it. Images are decoded at the run's image size and
  channels with its `alpha_background`. All files are listed here, so a bad
  tree is refused before any model is built.

  Raises:
    FileNotFoundError: `model_dir` holds no trained run's hierarchy.
    ValueError: bad `eval_data`, a folder without images.
    hierarchy_lib.HierarchyError: a class the run does not have, or one under
      another vertical (naming the class and both verticals).
  """
  path = parse_eval_data(eval_data)
  hierarchy_file = os.path.join(model_dir, restore_lib.HIERARCHY_FILE)
  if not os.path.exists(hierarchy_file):
    raise FileNotFoundError(
        f"{hierarchy_file} not found: --eval_data needs the model_dir of a "
        "trained run (its classes name the eval folders)")
  size, _, channels = params.task.data.image_shape()
  config = data_config_lib.FolderConfig(
      eval_dir=path, hierarchy_file=hierarchy_file, image_size=size,
      channels=channels)
  try:
    # Lists (and checks) every file of the eval tree.
    source = folder_source.FolderSource(
        config, params.task.data.max_labels_per_example,
        alpha_background=tuple(params.task.data.alpha_background))
  except hierarchy_lib.HierarchyError as e:
    raise hierarchy_lib.HierarchyError(
        f"--eval_data {path} does not match the classes of the run in "
        f"{model_dir}: {e}") from None
  return source


def other_eval_metrics_path(model_dir: str, eval_data: str) -> str:
  """`model_dir/eval_metrics_<folder name>.json` for `--eval_data`."""
  name = os.path.basename(os.path.normpath(parse_eval_data(eval_data)))
  name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "data"
  return os.path.join(model_dir, OTHER_EVAL_METRICS_PATTERN.format(name=name))


def evaluate(params: kc_config.ExperimentConfig, model_dir: str,
             checkpoint_path: Optional[str] = None,
             allow_config_change: bool = False,
             eval_data: Optional[str] = None,
             output_path: Optional[str] = None,
             keep_bound: bool = False) -> Dict:
  """Evaluates the latest (or the given) checkpoint on the eval split or `eval_data`.

  On the run's own eval split: writes `eval_metrics.json` (atomically) and
  TensorBoard scalars under `model_dir/eval`. With `eval_data='folder:DIR'`
  (new photos, another domain): evaluates all of DIR, whose classes must be
  a subset of the run's, matched by name (`eval_data_source`), and writes
  `eval_metrics_<DIR name>.json`; the run's own files are left alone. Top-k
  ranks all N classes of the run; per-vertical top-1 and AP, and mpvap,
  cover the verticals and classes present in DIR (`metrics.evaluation`).

  Args:
    params: the validated experiment config (the run's).
    model_dir: the training directory.
    checkpoint_path: a checkpoint prefix or directory; default `model_dir`.
      The hierarchy recorded in its run directory must be the data's.
    allow_config_change: see `check_params_change`.
    eval_data: `folder:DIR`, data to evaluate instead of the eval split.
    output_path: where to write the metrics JSON instead of the default.
    keep_bound: on the run's own eval split and newest checkpoint, keep an
      `eval_metrics.json` bound to the same checkpoint, eval data, hierarchy
      and config instead of evaluating again (`eval_binding`).

  Returns:
    The metrics dict (top1, top5, mpvap, per-vertical results, parameters,
    `skipped_examples`: eval records dropped as unreadable; `binding`: what
    they were measured on, on the run's own eval split; with `eval_data`
    also `eval_data` and `classes_present`).
  """
  source = (eval_data_source(params, model_dir, eval_data)
            if eval_data is not None else None)
  unread = keys_a_network_never_reads(params)
  session = Session(params, model_dir, allow_config_change, source=source,
                    unread=unread)
  own_split = source is None
  if keep_bound and own_split and not checkpoint_path and not output_path:
    newest = eval_binding.newest_checkpoint(model_dir)
    kept = newest and eval_binding.kept_metrics(
        os.path.join(model_dir, EVAL_METRICS_FILE),
        eval_binding.binding(params, session.source, newest, unread))
    if kept:
      return kept
  if checkpoint_path:
    restore_lib.check_recorded_hierarchy(
        restore_lib.run_dir_of(checkpoint_path), session.hierarchy)
  counter = session.skip_counter()
  model = session.build_model()
  restored = restore_lib.restore_model_weights(
      model, checkpoint_path or model_dir
  )

  @tf.function
  def score_fn(images, features):
    del features
    return model(images, training=False)

  with data_errors.named_data_errors("the eval data"):
    metrics = evaluate_lib.evaluate_scores(
        score_fn,
        session.eval_dataset(counter),
        session.hierarchy,
        # Another dataset is evaluated whole: it is the user's test set.
        steps=params.trainer.validation_steps if source is None else -1,
    )
  metrics["skipped_examples"] = _skipped(counter, "eval")
  _log_alpha_found(session)
  metrics["checkpoint"] = restored
  metrics["step"] = restore_lib.checkpoint_step(restored)
  metrics["params"] = model_builder.parameter_report(model)
  if own_split:
    metrics[eval_binding.BINDING_KEY] = eval_binding.binding(
        params, session.source, eval_binding.checkpoint_identity(restored),
        unread)
  if source is not None:
    metrics["eval_data"] = eval_data
    metrics["classes_present"] = len({c for _, c in source.files("eval")})
    path = output_path or other_eval_metrics_path(model_dir, eval_data)
  else:
    path = output_path or os.path.join(model_dir, EVAL_METRICS_FILE)
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  files.atomic_write_json(path, metrics)
  if source is None:
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "eval"))
    with writer.as_default(step=metrics["step"]):
      for name in ("top1", "top5", "mpvap"):
        tf.summary.scalar(name, metrics[name])
    writer.flush()
  logging.info("Eval metrics (%s): %s", path, json.dumps(
      {k: metrics[k] for k in ("top1", "top5", "mpvap", "num_examples")}))
  return metrics


def cache_binding(session: Session, model_dir: str) -> Dict:
  """What a target cache must match: data, hierarchy, teachers, K, T and tau.

  The teachers are those on disk now (each checked `teacher.json`), so a
  teacher folder replaced since the cache was written is a mismatch.
  """
  params = session.params
  teachers_dir = specialists.teachers_dir_of(params, model_dir)
  return dict(
      dataset_fingerprint=session.source.fingerprint("train"),
      hierarchy_fingerprint=session.hierarchy.fingerprint,
      teacher_fingerprints=specialists.teacher_fingerprints(
          teachers_dir, session.hierarchy),
      top_k=params.task.distillation.top_k,
      max_teachers_per_example=params.task.distillation.max_teachers_per_example,
      temperature=params.task.distillation.temperature,
  )


def train_specialists(params: kc_config.ExperimentConfig, model_dir: str,
                      verticals=None, verbose: bool = True,
                      allow_config_change: bool = False) -> Dict:
  """Trains one teacher per vertical (or the given subset); returns the manifest."""
  session = Session(params, model_dir, allow_config_change)
  build_generalist = None
  init_dir = params.task.specialists.init_checkpoint
  if init_dir:
    # The teachers inherit the generalist's features of these classes.
    restore_lib.check_recorded_hierarchy(init_dir, session.hierarchy)
    generalist_params = load_params_of(init_dir)

    def build_generalist():
      return model_builder.build_kc_model(
          generalist_params.task, session.hierarchy, session.source.image_shape,
          global_batch_size=generalist_params.task.train_batch_size)

  return specialists.train_specialists(
      session, model_dir, verticals=verticals,
      build_generalist=build_generalist, verbose=verbose)


def load_params_of(run_dir: str) -> kc_config.ExperimentConfig:
  """The `params.yaml` of another run, read into a config of the same schema.

  Raises:
    FileNotFoundError: when `run_dir` has no `params.yaml` (not a run directory).
  """
  path = os.path.join(run_dir, PARAMS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} not found: {run_dir!r} is not the model_dir of a trained run "
        f"(e.g. task.specialists.init_checkpoint must name a trained generalist's).")
  other = kc_config.ExperimentConfig()
  with open(path) as f:
    other.override(checks.load_yaml(f, path), is_strict=True)
  return other


def cache_targets(params: kc_config.ExperimentConfig, model_dir: str,
                  allow_config_change: bool = False) -> Dict:
  """Writes the offline soft-target cache of the training split.

  Every training example, un-augmented and in the source's raw order, passes
  through its own vertical's teacher; the top-K (ids, probabilities) are
  written with a manifest that binds them to the data, hierarchy, teachers
  and K (see `distillation.target_cache`). Records skipped as unreadable
  get empty rows (`target_cache.fill_skipped`), so that the cache stays
  aligned with the raw records. An interrupted write resumes after its last
  whole shard (`target_cache.write_target_cache`), the same bytes as one
  uninterrupted write; a complete cache that matches all of this (every
  shard's checksum included) is kept, not written again.

  Returns:
    The cache manifest.
  """
  session = Session(params, model_dir, allow_config_change)
  counter = session.skip_counter()
  distillation = params.task.distillation
  if not distillation.cache_dir:
    raise ValueError("task.distillation.cache_dir must be set to cache targets.")
  binding = cache_binding(session, model_dir)
  current = _current_cache(distillation.cache_dir, {
      **binding, "num_examples": session.source.num_examples("train")})
  if current is not None:
    return current
  bank = specialists.load_teacher_bank(params, model_dir, session.hierarchy)
  width = distillation.top_k * distillation.max_teachers_per_example

  def batches_from(start_record):
    dataset = pipeline.build_dataset(
        session.source, "train", params.task.data, training=False,
        global_batch_size=params.task.eval_batch_size,
        start_record=start_record, skip_counter=counter)
    batches = teacher_bank_lib.soft_target_batches(bank, dataset)
    if counter is None:
      return batches
    return target_cache.fill_skipped(
        batches, session.source.num_examples("train"), width,
        start=start_record)

  with data_errors.named_data_errors("the training data (cache_targets)"):
    manifest = target_cache.write_target_cache(
        distillation.cache_dir, batches_from,
        manifest_fields=binding,
        shard_size=distillation.cache_shard_size,
    )
  _skipped(counter, "training (cache_targets)")
  _log_alpha_found(session)
  return manifest


def _current_cache(cache_dir: str, expected: Dict) -> Optional[Dict]:
  """The manifest of a complete cache at `cache_dir` bound to `expected`, else None."""
  if not tf.io.gfile.exists(os.path.join(cache_dir,
                                         target_cache.MANIFEST_NAME)):
    return None
  try:
    target_cache.load_target_cache(cache_dir, expected=expected)
  except target_cache.TargetCacheError as e:
    logging.info("Writing the target cache again: %s", e)
    return None
  logging.info("Target cache %s is complete and matches the data, hierarchy, "
               "teachers, K, T and tau: kept.", cache_dir)
  return target_cache.read_manifest(cache_dir)


def evaluate_specialists(params: kc_config.ExperimentConfig,
                         model_dir: str,
                         allow_config_change: bool = False,
                         keep_bound: bool = False) -> Dict:
  """Evaluates the specialists as a set (the paper's upper bound).

  Each eval image is scored only by the teacher of its own vertical (scores
  over that vertical's classes, nothing elsewhere): top-1 is therefore
  top-1 given the true vertical, and mpvap is directly comparable with the
  student's, since AP_v only ranks the classes of vertical v.

  Args:
    params: the run's config.
    model_dir: the specialists' run directory.
    allow_config_change: see `check_params_change`.
    keep_bound: keep an `eval_specialists_metrics.json` bound to the same
      teachers (their checked fingerprints), eval data, hierarchy and config
      instead of evaluating again (`eval_binding`).

  Returns:
    The metrics dict (with its `binding`), also written to
    `eval_specialists_metrics.json`.
  """
  session = Session(params, model_dir, allow_config_change)
  path = os.path.join(model_dir, SPECIALISTS_METRICS_FILE)
  expected = eval_binding.binding(
      params, session.source,
      specialists.teacher_fingerprints(
          specialists.teachers_dir_of(params, model_dir), session.hierarchy))
  if keep_bound:
    kept = eval_binding.kept_metrics(path, expected)
    if kept:
      return kept
  counter = session.skip_counter()
  bank = specialists.load_teacher_bank(params, model_dir, session.hierarchy)
  score_fn = tf.function(
      lambda images, features: bank.specialist_scores(
          images, features["label_ids"]))
  with data_errors.named_data_errors("the eval data"):
    metrics = evaluate_lib.evaluate_scores(
        score_fn, session.eval_dataset(counter), session.hierarchy,
        steps=params.trainer.validation_steps)
  metrics["skipped_examples"] = _skipped(counter, "eval")
  _log_alpha_found(session)
  metrics["params"] = {
      "total": int(sum(t.count_params() for t in bank.teachers.values())),
      "num_teachers": len(bank.teachers),
  }
  metrics[eval_binding.BINDING_KEY] = expected
  files.atomic_write_json(path, metrics)
  return metrics
