"""Specialist teachers: training one per vertical, saving them, and loading them as a bank."""

import contextlib
import glob
import os
from typing import Dict, Optional, Sequence

from absl import logging
import keras
import numpy as np

from kc_keras.configs import derived_defaults
from kc_keras.configs import kc_config
from kc_keras.configs import trainer as trainer_cfg
from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.dataloaders import pipeline
from kc_keras.distillation import shared_trunk
from kc_keras.distillation import stacked_teachers
from kc_keras.distillation import teacher_bank as teacher_bank_lib
from kc_keras.modeling.models import distiller
from kc_keras.training import controller as controller_lib
from kc_keras.training import frozen_features
from kc_keras.training import model_builder
from kc_keras.training import optimizers
from kc_keras.training import restore as restore_lib
from kc_keras.utils import files
from kc_keras.utils import records
from kc_keras.utils import run_lock

TEACHER_MODEL_FILE = "teacher.keras"
TEACHER_INFO_FILE = "teacher.json"
MANIFEST_FILE = "teachers_manifest.json"
# teacher.json fields that bind a teacher to its vertical and hierarchy.
_BOUND_FIELDS = ("vertical_id", "vertical_name", "class_ids", "class_names",
                 "hierarchy_fingerprint")
# teacher.json "trunk": how the layers below the classifier were made. The
# generalist's trunk kept bit for bit (only the classifier trained, on its
# frozen features), or weights of the teacher's own.
SHARED_FROZEN_TRUNK = "shared_frozen"
INDEPENDENT_TRUNK = "independent"


class TeacherError(ValueError):
  """A teacher artefact is missing, stale, or belongs to another vertical."""


def teachers_dir_of(params: kc_config.ExperimentConfig, model_dir: str) -> str:
  """`task.distillation.teachers_dir`, or `<model_dir>/teachers` when empty."""
  return params.task.distillation.teachers_dir or os.path.join(
      model_dir, "teachers")


def teacher_dir(teachers_dir: str, vertical: int) -> str:
  return os.path.join(teachers_dir, f"vertical_{vertical:05d}")


def _matching_weights(source: keras.Layer, target: keras.Layer) -> bool:
  return [tuple(w.shape) for w in source.weights] == [
      tuple(w.shape) for w in target.weights]


def init_from_generalist(network: keras.Model, generalist: keras.Model,
                         freeze: str, generalist_dir: str) -> None:
  """Initialises a teacher from a trained generalist (Hinton et al. 2015).

  The backbone is always copied; the head's hidden layers are copied too
  when their shapes match (the classifier, over other classes, never is).
  `freeze` then fixes 'backbone' or 'backbone_and_hidden' so that only the
  rest learns the vertical: with few images per class this keeps the
  teacher from overfitting what the generalist already learned well.

  Args:
    network: the teacher network (built).
    generalist: the generalist network with its weights restored.
    freeze: 'none', 'backbone' or 'backbone_and_hidden'.
    generalist_dir: for error messages.

  Raises:
    TeacherError: when the backbones (or, for 'backbone_and_hidden', the
      hidden layers) differ in structure.
  """
  if not _matching_weights(generalist.backbone, network.backbone):
    raise TeacherError(
        f"task.specialists.model.backbone does not match the backbone of the "
        f"generalist in {generalist_dir}; make them equal to initialise "
        f"from it.")
  network.backbone.set_weights(generalist.backbone.get_weights())
  hidden = [(getattr(generalist.head, n), getattr(network.head, n))
            for n in ("hidden1", "hidden2")]
  hidden_match = (generalist.head.head_type == network.head.head_type and
                  all(_matching_weights(a, b) for a, b in hidden))
  if hidden_match:
    for source, target in hidden:
      target.set_weights(source.get_weights())
  elif freeze == "backbone_and_hidden":
    raise TeacherError(
        f"task.specialists.freeze='backbone_and_hidden' needs the teacher's "
        f"head hidden layers to match the generalist's in {generalist_dir} "
        f"(same head_type, s1, s2).")
  if freeze in ("backbone", "backbone_and_hidden"):
    network.backbone.trainable = False
  if freeze == "backbone_and_hidden":
    for _, target in hidden:
      target.trainable = False


def train_one_specialist(session, vertical: int, teachers_dir: str,
                         generalist: Optional[keras.Model] = None,
                         features=None, verbose: bool = False) -> Dict:
  """Trains, saves and describes the teacher of one vertical.

  The teacher is a network over the vertical's classes only (local ids),
  trained with sigmoid cross-entropy on hard labels on the vertical's images
  (plus `negatives_fraction` of other verticals' images with no positive).
  With `features` (everything below the classifier frozen), only the
  classifier is trained, on those precomputed features
  (`frozen_features`); otherwise the whole step loop runs, with checkpoints.

  Args:
    session: a `modes.Session`.
    vertical: vertical id.
    teachers_dir: root of all teachers.
    generalist: the restored generalist network to initialise from
      (`task.specialists.init_checkpoint`); None trains from scratch.
    features: `(phi [n, d], label_ids [n, L])` of the training split, for
      `freeze='backbone_and_hidden'`.
    verbose: progress bar.

  Returns:
    The teacher's info dict (also written to `teacher.json`).
  """
  params = session.params
  spec = params.task.specialists
  hierarchy = session.hierarchy
  sub_hierarchy = hierarchy.subset(vertical)
  out_dir = teacher_dir(teachers_dir, vertical)
  train_dir = os.path.join(out_dir, "train")
  batch_size = spec.train_batch_size
  rows = targets = None
  if features is not None:
    rows, targets = frozen_features.vertical_rows(
        features[1], np.asarray(hierarchy.class_to_vertical),
        hierarchy.local_index, vertical, sub_hierarchy.num_classes,
        spec.negatives_fraction, seed=params.task.data.seed + vertical)
    num_rows = rows.size
  elif spec.trainer.train_steps is not None:
    num_rows = None  # Not needed: every teacher trains the set steps.
  else:
    # Counting a vertical's images would take a pass over the split.
    num_rows = derived_defaults.vertical_images(
        session.source.num_examples("train"), sub_hierarchy.num_classes,
        hierarchy.num_classes, spec.negatives_fraction)
  trainer = teacher_trainer(spec.trainer, derived_defaults.teacher_steps(
      spec.trainer, num_rows, batch_size))
  with session.strategy.scope():
    network = model_builder.build_network(spec.model, sub_hierarchy,
                                          session.source.image_shape)
    model = distiller.KnowledgeConcentrationModel(
        student=network,
        class_to_vertical=list(sub_hierarchy.class_to_vertical),
        alpha=0.0,
        loss_type="sigmoid",
        top_k=1,
        target_source="labels",
        global_batch_size=batch_size,
    )
    model.compile(optimizer=optimizers.build_optimizer(
        trainer.optimizer, trainer.train_steps))
    model_builder.build_variables(model, session.source.image_shape)
    if generalist is not None:
      # A resumed teacher gets its own weights back from its checkpoint; the
      # copy only matters for a fresh one, and decides what is frozen.
      init_from_generalist(network, generalist, spec.freeze,
                           spec.init_checkpoint)
    model.optimizer.build(model.trainable_variables)

  if features is not None:
    logs = frozen_features.train_classifier(
        network, features[0][rows], targets, trainer, batch_size,
        seed=params.task.data.seed + vertical)
    steps = trainer.train_steps
  else:
    def dataset_fn(input_context, start_batch):
      return pipeline.build_dataset(
          session.source, "train", params.task.data, training=True,
          global_batch_size=batch_size, input_context=input_context,
          vertical=vertical, negatives_fraction=spec.negatives_fraction,
          start_batch=start_batch)

    os.makedirs(train_dir, exist_ok=True)
    controller = controller_lib.TrainController(
        model=model, strategy=session.strategy, dataset_fn=dataset_fn,
        config=trainer, model_dir=train_dir, global_batch_size=batch_size,
        jit_compile=params.runtime.jit_compile,
        sync_batch_norm=params.runtime.sync_batch_norm)
    result = controller.train(verbose=verbose)
    logs, steps = result.logs, result.step

  # Only the frozen-features path leaves the generalist's backbone and
  # hidden layers untouched; any step on images may move them.
  return save_teacher(
      network, teachers_dir, vertical, hierarchy, train_steps=steps,
      final_logs=logs,
      trained_on="frozen_features" if features is not None else "images",
      trunk=SHARED_FROZEN_TRUNK if features is not None else INDEPENDENT_TRUNK)


def teacher_trainer(trainer: trainer_cfg.TrainerConfig,
                    steps: int) -> trainer_cfg.TrainerConfig:
  """The teachers' `trainer` for one teacher of `steps` steps.

  `train_steps` = `steps` (`derived_defaults.teacher_steps`); an unset
  `checkpoint_interval` becomes `steps` (one checkpoint at the end).
  """
  config = trainer_cfg.TrainerConfig(trainer.as_dict())
  config.train_steps = steps
  if config.checkpoint_interval is None:
    config.checkpoint_interval = steps
  config.validate("task.specialists.trainer")
  return config


def save_teacher(network: keras.Model, teachers_dir: str, vertical: int,
                 hierarchy: hierarchy_lib.Hierarchy, train_steps: int,
                 final_logs: Dict, trained_on: str, trunk: str) -> Dict:
  """Writes `teacher.keras`, then the `teacher.json` that binds it.

  The record names the vertical, its classes (ids and names) and the
  hierarchy's fingerprint, the weights' fingerprint and the file's sha256,
  how its trunk was made (with the trunk's fingerprint when it is the
  shared frozen one), and is sealed (`records.seal`), so that every later
  read can check the teacher against the hierarchy it is used with and
  against the file, and run the teachers in the layout they were made for
  (`teachers_layout`).

  Args:
    network: the trained teacher network.
    teachers_dir: root of all teachers.
    vertical: its vertical id.
    hierarchy: the full hierarchy it was trained under.
    train_steps: steps trained.
    final_logs: the last logged values.
    trained_on: 'images' or 'frozen_features'.
    trunk: SHARED_FROZEN_TRUNK (the generalist's backbone and hidden layers,
      unchanged) or INDEPENDENT_TRUNK.

  Returns:
    The info dict written to `teacher.json`.

  Raises:
    ValueError: an unknown `trunk`.
  """
  if trunk not in (SHARED_FROZEN_TRUNK, INDEPENDENT_TRUNK):
    raise ValueError(
        f"trunk must be {SHARED_FROZEN_TRUNK!r} or {INDEPENDENT_TRUNK!r}, got "
        f"{trunk!r}.")
  trunk_fields = {"trunk": trunk}
  if trunk == SHARED_FROZEN_TRUNK:
    trunk_fields["trunk_fingerprint"] = shared_trunk.trunk_fingerprint(network)
  out_dir = teacher_dir(teachers_dir, vertical)
  os.makedirs(out_dir, exist_ok=True)
  model_path = os.path.join(out_dir, TEACHER_MODEL_FILE)
  tmp_path = model_path + ".tmp.keras"
  network.save(tmp_path)
  os.replace(tmp_path, model_path)
  class_ids = [int(c) for c in hierarchy.classes_of(vertical)]
  info = records.seal({
      "vertical_id": int(vertical),
      "vertical_name": hierarchy.vertical_names[vertical],
      "class_ids": class_ids,
      "class_names": [hierarchy.class_names[c] for c in class_ids],
      "hierarchy_fingerprint": hierarchy.fingerprint,
      "fingerprint": teacher_bank_lib.model_fingerprint(network),
      "model_sha256": records.file_sha256(model_path),
      "train_steps": int(train_steps),
      "final_logs": final_logs,
      "trained_on": trained_on,
      **trunk_fields,
      "params": int(network.count_params()),
  })
  files.atomic_write_json(os.path.join(out_dir, TEACHER_INFO_FILE), info)
  return info


def read_teacher_info(teachers_dir: str, vertical: int,
                      hierarchy: hierarchy_lib.Hierarchy) -> Dict:
  """Reads `teacher.json` of `vertical` and checks it against the hierarchy.

  A teacher's output columns mean the classes it was trained on, in order;
  used under a hierarchy that names or orders them differently it would
  score the wrong classes without any error.

  Args:
    teachers_dir: root of all teachers.
    vertical: the vertical id it must be the teacher of.
    hierarchy: the data's hierarchy.

  Returns:
    The info dict.

  Raises:
    TeacherError: an unreadable or edited file, or a teacher of another
      vertical or hierarchy, listing every differing field.
  """
  path = os.path.join(teacher_dir(teachers_dir, vertical), TEACHER_INFO_FILE)
  info = records.check_seal(records.read_json(path, TeacherError), path,
                            TeacherError)
  records.missing_keys(info, _BOUND_FIELDS + ("fingerprint", "model_sha256"),
                       path, TeacherError)
  class_ids = [int(c) for c in hierarchy.classes_of(vertical)]
  expected = {
      "vertical_id": vertical,
      "vertical_name": hierarchy.vertical_names[vertical],
      "class_ids": class_ids,
      "class_names": [hierarchy.class_names[c] for c in class_ids],
      "hierarchy_fingerprint": hierarchy.fingerprint,
  }
  diffs = [_describe_difference(field, info[field], expected[field])
           for field in _BOUND_FIELDS if info[field] != expected[field]]
  if diffs:
    raise TeacherError(
        f"{path} does not belong to vertical {vertical} "
        f"({hierarchy.vertical_names[vertical]!r}) of this hierarchy: "
        + "; ".join(diffs) + ". Retrain it (--mode=train_specialists) or "
        "use the hierarchy it was trained with.")
  return info


def _describe_difference(field: str, recorded, expected) -> str:
  """`field: teacher X, hierarchy Y`, naming only the differing entries of lists."""
  if (isinstance(recorded, list) and isinstance(expected, list) and
      len(recorded) == len(expected)):
    at = [i for i, (a, b) in enumerate(zip(recorded, expected)) if a != b]
    shown = ", ".join(f"[{i}] {recorded[i]!r} vs {expected[i]!r}"
                      for i in at[:5])
    more = f" (+{len(at) - 5} more)" if len(at) > 5 else ""
    return f"{field} teacher vs hierarchy: {shown}{more}"
  if isinstance(recorded, list) and isinstance(expected, list):
    return (f"{field}: teacher has {len(recorded)} entries, hierarchy "
            f"{len(expected)}")
  if field == "hierarchy_fingerprint":
    return (f"{field}: teacher {str(recorded)[:12]}, hierarchy "
            f"{str(expected)[:12]}")
  return f"{field}: teacher {recorded!r}, hierarchy {expected!r}"


def check_teacher_file(info: Dict, model_path: str, info_path: str) -> None:
  """Checks that `teacher.keras` is the file `teacher.json` was written with.

  Raises:
    TeacherError: the file's sha256 differs (replaced after training).
  """
  digest = records.file_sha256(model_path)
  if digest != info["model_sha256"]:
    raise TeacherError(
        f"{model_path} does not match {info_path}: file sha256 "
        f"{digest[:12]} vs recorded {info['model_sha256'][:12]} (the file "
        f"was replaced after training); retrain this teacher.")


def write_manifest(teachers_dir: str) -> Dict:
  """Rebuilds `teachers_manifest.json` from every complete `teacher.json`.

  Built from the per-teacher files rather than appended to, so that workers
  training disjoint vertical subsets in parallel never overwrite each other.
  """
  teachers = {}
  hierarchies = set()
  for path in sorted(glob.glob(os.path.join(teachers_dir, "vertical_*",
                                            TEACHER_INFO_FILE))):
    info = records.check_seal(records.read_json(path, TeacherError), path,
                              TeacherError)
    teachers[str(info["vertical_id"])] = {
        "dir": os.path.basename(os.path.dirname(path)),
        "vertical_name": info["vertical_name"],
        "fingerprint": info["fingerprint"],
        "num_classes": len(info["class_ids"]),
        "params": info["params"],
        "trunk": info.get("trunk", "unrecorded"),
    }
    if "trunk_fingerprint" in info:
      teachers[str(info["vertical_id"])]["trunk_fingerprint"] = (
          info["trunk_fingerprint"])
    hierarchies.add(info["hierarchy_fingerprint"])
  manifest = {"teachers": teachers,
              "hierarchy_fingerprints": sorted(hierarchies)}
  files.atomic_write_json(os.path.join(teachers_dir, MANIFEST_FILE), manifest)
  return manifest


def train_specialists(session, model_dir: str,
                      verticals: Optional[Sequence[int]] = None,
                      build_generalist=None, verbose: bool = True) -> Dict:
  """Trains the teachers of `verticals` (default: config, else all).

  A vertical whose `teacher.json` exists for the same hierarchy is skipped, so
  a restarted job continues where it stopped. The generalist of
  `task.specialists.init_checkpoint` is built and restored once, by
  `build_generalist` (`() -> KC model`; None trains from scratch). Each
  teacher directory is locked while its vertical is checked and trained.

  Returns:
    The teachers manifest.

  Raises:
    TeacherError: bad vertical ids, or an existing teacher that does not
      match the hierarchy or its file.
    run_lock.LockedError: another live process trains one of these teachers.
  """
  params = session.params
  hierarchy = session.hierarchy
  teachers_dir = teachers_dir_of(params, model_dir)
  wanted = list(verticals or params.task.specialists.verticals or
                range(hierarchy.num_verticals))
  bad = [v for v in wanted if not 0 <= v < hierarchy.num_verticals]
  if bad:
    raise TeacherError(
        f"Vertical ids {bad} are outside 0..{hierarchy.num_verticals - 1}.")
  generalist_state = {}
  for index, vertical in enumerate(wanted):
    directory = teacher_dir(teachers_dir, vertical)
    # One writer per teacher: workers may split the verticals between them,
    # but two on one vertical would interleave its checkpoints.
    lock = (run_lock.DirectoryLock(
        directory, f"training the teacher of vertical {vertical}")
            if session.is_chief else contextlib.nullcontext())
    with lock:
      _train_or_skip(session, vertical, teachers_dir, index, len(wanted),
                     generalist_state, build_generalist, verbose)
  return write_manifest(teachers_dir)


def _train_or_skip(session, vertical: int, teachers_dir: str, index: int,
                   total: int, generalist_state: Dict, build_generalist,
                   verbose: bool) -> None:
  """Trains the teacher of `vertical` unless a checked one exists.

  `generalist_state` caches the restored generalist (and its frozen
  features) across calls, so it is built once, and only when needed.
  """
  params = session.params
  hierarchy = session.hierarchy
  directory = teacher_dir(teachers_dir, vertical)
  info_path = os.path.join(directory, TEACHER_INFO_FILE)
  if os.path.exists(info_path):
    # Raises, naming what differs, for a teacher of another hierarchy.
    info = read_teacher_info(teachers_dir, vertical, hierarchy)
    try:
      check_teacher_file(info, os.path.join(directory, TEACHER_MODEL_FILE),
                         info_path)
      logging.info("Teacher of vertical %d exists; skipped.", vertical)
      return
    except (TeacherError, OSError) as e:
      # A kill between writing teacher.keras and its record: train again.
      logging.warning("Retraining the teacher of vertical %d: %s", vertical, e)
  if verbose:
    print(f"[{index + 1}/{total}] specialist for vertical {vertical} "
          f"({hierarchy.vertical_names[vertical]}, "
          f"{hierarchy.vertical_sizes[vertical]} classes)")
  if build_generalist is not None and "network" not in generalist_state:
    generalist = build_generalist()
    restore_lib.restore_model_weights(
        generalist, params.task.specialists.init_checkpoint)
    generalist_state["network"] = generalist.student
    if params.task.specialists.freeze == "backbone_and_hidden":
      generalist_state["features"] = frozen_features.compute_features(
          generalist.student, pipeline.build_dataset(
              session.source, "train", params.task.data, training=False,
              global_batch_size=params.task.eval_batch_size))
  train_one_specialist(
      session, vertical, teachers_dir, generalist_state.get("network"),
      features=generalist_state.get("features"), verbose=verbose)


def load_teachers(teachers_dir: str, hierarchy: hierarchy_lib.Hierarchy,
                  verticals: Optional[Sequence[int]] = None
                  ) -> Dict[int, keras.Model]:
  """Loads the saved teachers and checks each against its record.

  Raises:
    TeacherError: a missing teacher, a teacher of another vertical or
      hierarchy, or weights whose fingerprint differs from `teacher.json`
      (a stale or overwritten file).
  """
  return _load_checked_teachers(teachers_dir, hierarchy, verticals)[0]


def _load_checked_teachers(teachers_dir: str,
                           hierarchy: hierarchy_lib.Hierarchy,
                           verticals: Optional[Sequence[int]] = None):
  """`load_teachers`, also returning the checked records: (models, infos)."""
  wanted = list(range(hierarchy.num_verticals) if verticals is None
                else verticals)
  teachers = {}
  infos = checked_teacher_infos(teachers_dir, hierarchy, wanted)
  for vertical, info in infos.items():
    model_path = os.path.join(teacher_dir(teachers_dir, vertical),
                              TEACHER_MODEL_FILE)
    model = keras.saving.load_model(model_path, compile=False)
    fingerprint = teacher_bank_lib.model_fingerprint(model)
    if fingerprint != info["fingerprint"]:
      raise TeacherError(
          f"{model_path} does not match its {TEACHER_INFO_FILE}: weights "
          f"fingerprint {fingerprint[:12]} vs recorded "
          f"{info['fingerprint'][:12]} (the file was replaced after "
          f"training); retrain this teacher.")
    teachers[vertical] = model
  return teachers, infos


def teachers_layout(infos: Dict[int, Dict],
                    hierarchy: hierarchy_lib.Hierarchy):
  """The `TeacherBank` layout the teachers' records call for.

  Every record says how its trunk was made (`save_teacher`):
  - all SHARED_FROZEN_TRUNK with one trunk fingerprint: 'shared_trunk',
    with that fingerprint (the bank checks every teacher against it);
  - otherwise (independent or mixed): 'stacked';
  - records written before the field existed: 'stacked', with a warning
    (the same targets, without the shared-trunk fast path).

  Args:
    infos: {vertical id: checked `teacher.json`} (`checked_teacher_infos`).
    hierarchy: names the verticals in messages.

  Returns:
    (layout, trunk fingerprint or None).

  Raises:
    TeacherError: frozen-trunk teachers recorded on different trunks (from
      different generalists), naming a vertical of each.
  """
  unrecorded = sorted(v for v, info in infos.items() if "trunk" not in info)
  if unrecorded:
    logging.warning(
        "The teacher.json of vertical(s) %s does not say how its trunk was "
        "made (written by an older version): the teachers run as independent "
        "ones (layout 'stacked'); retrain them into a fresh "
        "task.distillation.teachers_dir to record it.", unrecorded)
    return stacked_teachers.LAYOUT, None
  if not infos or any(info["trunk"] != SHARED_FROZEN_TRUNK
                      for info in infos.values()):
    return stacked_teachers.LAYOUT, None
  first = min(infos)
  expected = infos[first]["trunk_fingerprint"]
  for vertical, info in sorted(infos.items()):
    if info["trunk_fingerprint"] != expected:
      raise TeacherError(
          f"The teacher of vertical {vertical} "
          f"({hierarchy.vertical_names[vertical]}) was trained on trunk "
          f"{info['trunk_fingerprint'][:12]}, that of vertical {first} "
          f"({hierarchy.vertical_names[first]}) on {expected[:12]}: the "
          "teachers come from different generalists; retrain one side "
          "(remove its vertical_* folders, then --mode=train_specialists).")
  return shared_trunk.LAYOUT, expected


def checked_teacher_infos(teachers_dir: str,
                          hierarchy: hierarchy_lib.Hierarchy,
                          verticals: Optional[Sequence[int]] = None
                          ) -> Dict[int, Dict]:
  """Every wanted teacher's checked `teacher.json`, without loading models.

  Each record is checked against the hierarchy (`read_teacher_info`) and its
  `teacher.keras` against the recorded file digest, so what is returned
  describes the teachers on disk now.

  Args:
    teachers_dir: root of all teachers.
    hierarchy: the data's hierarchy.
    verticals: the teachers needed (default: every vertical).

  Returns:
    {vertical id: info dict}.

  Raises:
    TeacherError: missing teachers (all named), or the first bad one.
  """
  wanted = list(range(hierarchy.num_verticals) if verticals is None
                else verticals)
  missing = [v for v in wanted if not all(
      os.path.exists(os.path.join(teacher_dir(teachers_dir, v), name))
      for name in (TEACHER_INFO_FILE, TEACHER_MODEL_FILE))]
  if missing:
    raise TeacherError(
        f"No teacher for vertical(s) {missing} in {teachers_dir} "
        f"(task.distillation.teachers_dir; e.g. "
        f"{[hierarchy.vertical_names[v] for v in missing[:5]]}); run "
        f"--mode=train_specialists for them first.")
  infos = {}
  for vertical in wanted:
    directory = teacher_dir(teachers_dir, vertical)
    info = read_teacher_info(teachers_dir, vertical, hierarchy)
    check_teacher_file(info, os.path.join(directory, TEACHER_MODEL_FILE),
                       os.path.join(directory, TEACHER_INFO_FILE))
    infos[vertical] = info
  return infos


def teacher_fingerprints(teachers_dir: str,
                         hierarchy: hierarchy_lib.Hierarchy) -> Dict[int, str]:
  """{vertical id: weights fingerprint} of the teachers on disk, checked.

  What a target cache is bound to: read from each checked `teacher.json`
  (not from `teachers_manifest.json`, which a replaced teacher folder would
  leave stale).

  Raises:
    TeacherError: see `checked_teacher_infos`.
  """
  return {v: info["fingerprint"]
          for v, info in checked_teacher_infos(teachers_dir,
                                               hierarchy).items()}


def load_teacher_bank(params: kc_config.ExperimentConfig, model_dir: str,
                      hierarchy: hierarchy_lib.Hierarchy
                      ) -> teacher_bank_lib.TeacherBank:
  """The frozen teachers of every vertical, ready for online or cached targets.

  They run in the layout their records call for (`teachers_layout`).
  """
  teachers, infos = _load_checked_teachers(teachers_dir_of(params, model_dir),
                                           hierarchy)
  layout, trunk_fingerprint = teachers_layout(infos, hierarchy)
  return teacher_bank_lib.TeacherBank(
      teachers,
      class_to_vertical=list(hierarchy.class_to_vertical),
      top_k=params.task.distillation.top_k,
      max_teachers_per_example=params.task.distillation.max_teachers_per_example,
      vertical_names=list(hierarchy.vertical_names),
      layout=layout,
      trunk_fingerprint=trunk_fingerprint,
      temperature=params.task.distillation.temperature,
  )
