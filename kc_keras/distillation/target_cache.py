"""Offline soft-target cache: sharded TFRecords plus a binding manifest."""

import contextlib
import hashlib
import json
import os
import uuid

from absl import logging
import numpy as np
import tensorflow as tf

from kc_keras.utils import records
from kc_keras.utils import run_lock

MANIFEST_NAME = "manifest.json"
# A write in progress: its finished shards, bound to the same fields as the
# manifest, so that an interrupted write resumes after its last whole shard.
PROGRESS_NAME = "progress.json"
# The staging directory beside the cache; one name, so a later write finds it.
STAGING_SUFFIX = ".tmp-staging"
# 2: the manifest is sealed (`records.seal`); 1 (unsealed) is still read.
FORMAT_VERSION = 2
# Manifest fields that bind a cache to what produced it.
BINDING_FIELDS = ("dataset_fingerprint", "hierarchy_fingerprint",
                  "teacher_fingerprints", "top_k", "max_teachers_per_example",
                  "temperature")
# What a manifest written before a field existed meant by it.
_MISSING_FIELD_MEANS = {"temperature": 1.0}
_HASH_CHUNK_BYTES = 1 << 20


class TargetCacheError(ValueError):
  """A target cache that cannot be used (incomplete, corrupt, malformed)."""


class TargetCacheMismatchError(TargetCacheError):
  """A complete cache written for other data, hierarchy, teachers, K or T."""


def _sha256(path):
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, "rb") as f:
    while True:
      chunk = f.read(_HASH_CHUNK_BYTES)
      if not chunk:
        break
      digest.update(chunk)
  return digest.hexdigest()


def _normalise_teachers(fingerprints):
  return {int(v): str(fp) for v, fp in dict(fingerprints).items()}


def _normalise(field, value):
  if field == "teacher_fingerprints":
    return _normalise_teachers(value)
  if field in ("top_k", "max_teachers_per_example", "num_examples"):
    return int(value)
  if field == "temperature":
    return float(value)
  return str(value)


def _example(example_id, ids, probs):
  feature = {
      "example_id": tf.train.Feature(
          int64_list=tf.train.Int64List(value=[int(example_id)])),
      "target_ids": tf.train.Feature(
          int64_list=tf.train.Int64List(value=ids.tolist())),
      "target_probs": tf.train.Feature(
          float_list=tf.train.FloatList(value=probs.tolist())),
  }
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString()


def write_target_cache(cache_dir, batches, *, manifest_fields,
                       shard_size=10000):
  """Writes an offline soft-target cache, atomically replacing `cache_dir`.

  Records are written in the order given (the dataset's raw order: the
  cache is read back by position) into `shard-NNNNN.tfrecord` files of `shard_size` examples
  inside the staging directory `<cache_dir>.tmp-staging`; `manifest.json` is
  written last, then the directory is renamed to `cache_dir`. An existing
  cache at `cache_dir` is moved aside only once the new one is complete and
  deleted after the rename. A directory with no manifest is never read as a
  cache (see `load_target_cache`). The cache is locked (`lock_path`) while
  written, and what an interrupted write left is restored or removed first
  (`recover_interrupted_write`).

  Resuming: with `batches` a function of the first example to write, each
  finished shard is recorded in the staging directory's `progress.json`
  (sealed, with the binding fields and `shard_size`). A later write with the
  same fields and shard size checks every recorded shard's sha256, drops
  anything else there (a shard cut short), and asks `batches(start)` only
  for the records from position `start = shards * shard_size` on: the
  result is the same bytes as one uninterrupted write. Different fields, a different shard size
  or a changed shard start over from example 0 (logged). With `batches` an
  iterable the write starts from example 0.

  Args:
    cache_dir: destination directory.
    batches: iterable of (example_id [b], target_ids [b, T*K],
      target_probs [b, T*K]) (numpy or tensors) in the raw order; or a
      function `start -> such an iterable` from the raw record at position
      `start` on (resumable).
    manifest_fields: dict with every key of BINDING_FIELDS:
      dataset_fingerprint (str), hierarchy_fingerprint (str),
      teacher_fingerprints ({vertical id: str}), top_k (K),
      max_teachers_per_example (T), temperature (tau).
    shard_size: examples per shard file (>= 1).

  Returns:
    The manifest dict that was written.

  Raises:
    ValueError: on missing/unknown manifest fields, a bad shard size, or a
      batch whose shapes do not match (b, T*K).
    run_lock.LockedError: another live process writes this cache.
  """
  missing = [f for f in BINDING_FIELDS if f not in manifest_fields]
  unknown = [f for f in manifest_fields if f not in BINDING_FIELDS]
  if missing or unknown:
    raise ValueError(
        f"manifest_fields: missing {missing}, unknown {unknown}; expected "
        f"exactly {list(BINDING_FIELDS)}.")
  if not isinstance(shard_size, int) or shard_size < 1:
    raise ValueError(f"shard_size must be an int >= 1, got {shard_size!r}.")
  fields = {f: _normalise(f, manifest_fields[f]) for f in BINDING_FIELDS}

  cache_dir = os.path.normpath(cache_dir)
  parent = os.path.dirname(cache_dir) or "."
  tf.io.gfile.makedirs(parent)
  with _lock(cache_dir, "writing the target cache"):
    recover_interrupted_write(cache_dir)
    return _write_locked(cache_dir, batches, fields, shard_size)


def _fields_record(fields, shard_size):
  teachers = sorted(fields["teacher_fingerprints"].items())
  return {"format_version": FORMAT_VERSION, **fields,
          "teacher_fingerprints": {str(v): fp for v, fp in teachers},
          "shard_size": shard_size}


def _resumable_shards(staging, record):
  """The staged shards a write bound to `record` can keep (checked), else [].

  Whatever is not kept is deleted, so the staging directory then holds
  exactly the returned shards.
  """
  path = os.path.join(staging, PROGRESS_NAME)
  kept, reason = [], None
  if tf.io.gfile.exists(path):
    try:
      with tf.io.gfile.GFile(path, "r") as f:
        progress = json.loads(f.read())
      records.check_seal(progress, path, TargetCacheError)
    except (ValueError, TargetCacheError) as e:
      progress, reason = None, f"unreadable progress record ({e})"
    if progress is not None:
      shards = progress.pop("shards", [])
      progress.pop(records.SEAL_KEY, None)
      if progress != record:
        changed = sorted(k for k in set(progress) | set(record)
                         if progress.get(k) != record.get(k))
        reason = f"written for other {', '.join(changed)}"
      else:
        for shard in shards:
          shard_path = os.path.join(staging, shard["file"])
          if (not tf.io.gfile.exists(shard_path) or
              _sha256(shard_path) != shard["sha256"]):
            reason = f"{shard['file']} changed since it was written"
            break
          kept.append(shard)
  if reason:
    logging.warning("Target cache: not resuming the write staged in %s: %s; "
                    "starting from example 0.", staging, reason)
    kept = []
  names = {s["file"] for s in kept}
  for name in tf.io.gfile.listdir(staging):
    if name not in names:
      tf.io.gfile.remove(os.path.join(staging, name))
  return kept


def _write_locked(cache_dir, batches, fields, shard_size):
  """`write_target_cache` once the cache is locked and its leftovers gone."""
  width = fields["top_k"] * fields["max_teachers_per_example"]
  record = _fields_record(fields, shard_size)
  staging = cache_dir + STAGING_SUFFIX
  resumable = callable(batches)
  shards = []
  if resumable and tf.io.gfile.isdir(staging):
    shards = _resumable_shards(staging, record)
  elif tf.io.gfile.exists(staging):
    tf.io.gfile.rmtree(staging)
  tf.io.gfile.makedirs(staging)
  start = shard_size * len(shards)
  if shards:
    logging.info("Target cache: resuming at example %d (%d shards already "
                  "written and checked).", start, len(shards))
  try:
    _write_shards(staging, batches(start) if resumable else batches, shards,
                  width, shard_size,
                  record if resumable else None)
    manifest = records.seal({
        **{k: v for k, v in record.items() if k != "shard_size"},
        "num_examples": sum(s["num_examples"] for s in shards),
        "shards": shards})
    progress = os.path.join(staging, PROGRESS_NAME)
    if tf.io.gfile.exists(progress):
      tf.io.gfile.remove(progress)
    with tf.io.gfile.GFile(os.path.join(staging, MANIFEST_NAME), "w") as f:
      f.write(json.dumps(manifest, indent=2, sort_keys=True))

    old_dir = None
    if tf.io.gfile.exists(cache_dir):
      old_dir = f"{cache_dir}.old-{uuid.uuid4().hex}"
      tf.io.gfile.rename(cache_dir, old_dir)
    try:
      tf.io.gfile.rename(staging, cache_dir)
    except BaseException:
      # Put the previous cache back: a failed replace must not lose it.
      if old_dir is not None and not tf.io.gfile.exists(cache_dir):
        tf.io.gfile.rename(old_dir, cache_dir)
      raise
    if old_dir is not None:
      tf.io.gfile.rmtree(old_dir)
  except BaseException:
    # A resumable write keeps its finished shards for the next one.
    if not resumable and tf.io.gfile.exists(staging):
      tf.io.gfile.rmtree(staging)
    raise
  return manifest


def _write_shards(staging, batches, shards, width, shard_size,
                  progress_record):
  """Appends the examples of `batches` to `shards`, `shard_size` per file.

  With `progress_record`, `progress.json` lists the shards after each one
  is closed.
  """
  writer, shard_count = None, 0

  def close_shard():
    writer.close()
    name = shards[-1]["file"]
    shards[-1]["num_examples"] = shard_count
    shards[-1]["sha256"] = _sha256(os.path.join(staging, name))
    if progress_record is not None:
      path = os.path.join(staging, PROGRESS_NAME)
      with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        f.write(json.dumps(records.seal({**progress_record, "shards": shards}),
                           indent=2, sort_keys=True))
      tf.io.gfile.rename(path + ".tmp", path, overwrite=True)

  for batch_index, batch in enumerate(batches):
    example_ids, ids, probs = (np.asarray(x) for x in batch)
    b = example_ids.shape[0] if example_ids.ndim else -1
    if (example_ids.ndim != 1 or ids.shape != (b, width) or
        probs.shape != (b, width)):
      raise ValueError(
          f"Batch {batch_index}: expected example_id [b], target_ids and "
          f"target_probs [b, {width}] (T*K), got {example_ids.shape}, "
          f"{ids.shape}, {probs.shape}.")
    for i in range(b):
      if writer is None or shard_count == shard_size:
        if writer is not None:
          close_shard()
        name = f"shard-{len(shards):05d}.tfrecord"
        shards.append({"file": name})
        writer = tf.io.TFRecordWriter(os.path.join(staging, name))
        shard_count = 0
      writer.write(_example(example_ids[i], ids[i], probs[i]))
      shard_count += 1
  if writer is not None:
    close_shard()


def fill_skipped(batches, num_examples, width, start=0):
  """Adds empty rows for the example ids a pipeline skipped (unreadable images).

  The cache is zipped with the raw records (before decoding) by position, so
  it needs a row for every example `0..num_examples-1`; a record dropped by
  `task.data.on_decode_error='skip'` gets ids -1 and probabilities 0. Its
  image is dropped again when training, so the row is never used.

  Args:
    batches: iterable of (example_id [b], target_ids [b, W], target_probs
      [b, W]) with strictly increasing example ids.
    num_examples: examples in the split.
    width: W = T * K.
    start: the first example id (a resumed write's `start`).

  Yields:
    The same triples, gaps filled, from `start` to `num_examples - 1`.

  Raises:
    TargetCacheError: example ids out of order or beyond `num_examples`.
  """
  expected = int(start)

  def empty(first, stop):
    n = stop - first
    return (np.arange(first, stop, dtype=np.int64),
            np.full((n, width), -1, np.int32), np.zeros((n, width), np.float32))

  for batch in batches:
    example_ids, ids, probs = (np.asarray(x) for x in batch)
    if not example_ids.size:
      continue
    if (np.any(np.diff(example_ids) <= 0) or example_ids[0] < expected or
        example_ids[-1] >= num_examples):
      raise TargetCacheError(
          f"example ids {example_ids[:5].tolist()}... are not increasing "
          f"from {expected} within 0..{num_examples - 1}.")
    stop = int(example_ids[-1]) + 1
    out_ids, out_targets, out_probs = empty(expected, stop)
    rows = example_ids - expected
    out_targets[rows], out_probs[rows] = ids, probs
    yield out_ids, out_targets, out_probs
    expected = stop
  if expected < num_examples:
    yield empty(expected, num_examples)


def lock_path(cache_dir):
  """The lock file of a cache: a sibling, since the directory is renamed."""
  return os.path.normpath(cache_dir) + ".lock"


def _lock(cache_dir, what):
  """The cache's `run_lock.DirectoryLock`; none on an object store (gs://),
  which has no atomic exclusive create for it."""
  if "://" in cache_dir:
    return contextlib.nullcontext()
  return run_lock.DirectoryLock(cache_dir, what, path=lock_path(cache_dir))


def _leftovers(cache_dir):
  """Staging (`.tmp-*`) and previous (`.old-*`) copies beside `cache_dir`."""
  return sorted(p for pattern in (".tmp-*", ".old-*")
                for p in tf.io.gfile.glob(cache_dir + pattern)
                if tf.io.gfile.isdir(p))


def _is_complete(directory):
  return tf.io.gfile.exists(os.path.join(directory, MANIFEST_NAME))


def recover_interrupted_write(cache_dir):
  """Restores a cache that a killed writer left beside `cache_dir`; cleans up.

  The writer renames the previous cache to `<cache_dir>.old-*` and then the
  complete new one from `<cache_dir>.tmp-staging` to `cache_dir`; a kill between
  the two renames leaves no `cache_dir` but two complete copies. The newest
  complete copy (the new one first: its manifest is written last, so a
  `.tmp-*` with a manifest is complete) is renamed to `cache_dir`. Every
  other leftover (the previous copy, staging of older versions) is then
  removed, except an incomplete `.tmp-staging`: the next write resumes it or
  removes it.
  Call it holding the cache's lock (`lock_path`).

  Args:
    cache_dir: the cache directory.

  Returns:
    The leftover directory that became `cache_dir`, or None.
  """
  cache_dir = os.path.normpath(cache_dir)
  leftovers = _leftovers(cache_dir)
  restored = None
  if not tf.io.gfile.exists(cache_dir):
    complete = [p for p in leftovers if _is_complete(p)]
    # New (.tmp-) before previous (.old-), then the latest manifest.
    complete.sort(key=lambda p: (".tmp-" in p[len(cache_dir):],
                                 tf.io.gfile.stat(os.path.join(
                                     p, MANIFEST_NAME)).mtime_nsec))
    if complete:
      restored = complete[-1]
      tf.io.gfile.rename(restored, cache_dir)
      logging.warning("Target cache %s restored from %s, left complete by an "
                      "interrupted write.", cache_dir, restored)
  for path in leftovers:
    # An unfinished staging directory is a resumable write: the next write
    # checks it (`_resumable_shards`) and keeps or removes it.
    resumable = path == cache_dir + STAGING_SUFFIX and not _is_complete(path)
    if path != restored and not resumable:
      tf.io.gfile.rmtree(path)
  return restored


def read_manifest(cache_dir):
  """Reads `cache_dir/manifest.json`.

  Args:
    cache_dir: a cache directory.

  Returns:
    The manifest dict.

  Raises:
    TargetCacheError: if the manifest is missing ("incomplete cache"),
      unreadable, edited after it was written (its seal), or its shard
      table is malformed or disagrees with its example count.
  """
  path = os.path.join(cache_dir, MANIFEST_NAME)
  if not tf.io.gfile.exists(path):
    raise TargetCacheError(
        f"Incomplete cache at {cache_dir!r}: no {MANIFEST_NAME} (the writer "
        "did not finish); rebuild the cache.")
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      manifest = json.loads(f.read())
  except ValueError as e:
    raise TargetCacheError(f"Unreadable manifest {path!r}: {e}") from e
  return _checked_structure(manifest, path)


def _checked_structure(manifest, path):
  """The manifest, once its seal and its shard table are consistent."""
  if not isinstance(manifest, dict):
    raise TargetCacheError(f"Manifest {path!r} is not a JSON object.")
  if int(manifest.get("format_version", 1)) >= 2:
    records.check_seal(manifest, path, TargetCacheError)
  records.missing_keys(manifest, BINDING_FIELDS[:1] + (
      "top_k", "max_teachers_per_example", "num_examples", "shards"), path,
                       TargetCacheError)
  shards = manifest["shards"]
  if not isinstance(shards, list) or not all(
      isinstance(s, dict) and {"file", "num_examples", "sha256"} <= set(s)
      for s in shards):
    raise TargetCacheError(
        f"Manifest {path!r}: 'shards' must list file, num_examples and "
        "sha256 of every shard.")
  listed = sum(int(s["num_examples"]) for s in shards)
  if listed != int(manifest["num_examples"]):
    raise TargetCacheError(
        f"Manifest {path!r}: its shards hold {listed} examples but it "
        f"claims num_examples={manifest['num_examples']}.")
  return manifest


def _difference(field, got, want):
  """One field's difference; for teachers, only the verticals that differ."""
  if field != "teacher_fingerprints" or got is None:
    return f"{field}: cached={got!r} expected={want!r}"
  verticals = sorted(set(got) | set(want))
  shown = [f"vertical {v} cached={got.get(v, 'none')[:12]} "
           f"expected={want.get(v, 'none')[:12]}"
           for v in verticals if got.get(v) != want.get(v)]
  return f"{field}: " + ", ".join(shown)


def check_manifest(manifest, expected, cache_dir="<cache>"):
  """Compares a manifest with the expected binding fields.

  Args:
    manifest: dict from `read_manifest`.
    expected: dict with any subset of BINDING_FIELDS (and num_examples).
    cache_dir: for error messages.

  Raises:
    ValueError: if `expected` names an unknown field.
    TargetCacheMismatchError: listing every differing field as
      "field: cached=... expected=...".
  """
  allowed = BINDING_FIELDS + ("num_examples",)
  unknown = [f for f in expected if f not in allowed]
  if unknown:
    raise ValueError(
        f"expected has unknown field(s) {unknown}; allowed: {list(allowed)}.")
  diffs = []
  for field in allowed:
    if field not in expected:
      continue
    want = _normalise(field, expected[field])
    got = manifest.get(field, _MISSING_FIELD_MEANS.get(field))
    got = None if got is None else _normalise(field, got)
    if got != want:
      diffs.append(_difference(field, got, want))
  if diffs:
    raise TargetCacheMismatchError(
        f"Target cache {cache_dir!r} does not match: " + "; ".join(diffs))


def load_target_cache(cache_dir, *, expected, verify_checksums=True):
  """Opens a checked target cache as a dataset in the written order.

  When `cache_dir` is missing but an interrupted write left a complete copy
  beside it, that copy is restored first (`recover_interrupted_write`).

  Args:
    cache_dir: a directory written by `write_target_cache`.
    expected: dict of binding fields to check (see `check_manifest`).
    verify_checksums: recompute every shard's sha256 (reads the cache once).

  Returns:
    tf.data.Dataset of {'example_id': int64 [], 'target_ids': int32 [T*K],
    'target_probs': float32 [T*K]}.

  Raises:
    TargetCacheError: incomplete cache, a missing shard or a shard whose
      checksum differs (named).
    TargetCacheMismatchError: the cache was written for something else.
  """
  if not tf.io.gfile.exists(cache_dir) and _leftovers(cache_dir):
    with _lock(cache_dir, "restoring the target cache"):
      recover_interrupted_write(cache_dir)
  manifest = read_manifest(cache_dir)
  check_manifest(manifest, expected, cache_dir)
  width = int(manifest["top_k"]) * int(manifest["max_teachers_per_example"])
  files = []
  for shard in manifest["shards"]:
    path = os.path.join(cache_dir, shard["file"])
    if not tf.io.gfile.exists(path):
      raise TargetCacheError(f"Cache shard {path!r} is missing.")
    if verify_checksums:
      digest = _sha256(path)
      if digest != shard["sha256"]:
        raise TargetCacheError(
            f"Cache shard {path!r} is corrupt: sha256 {digest} != manifest "
            f"{shard['sha256']}.")
    files.append(path)

  spec = {
      "example_id": tf.io.FixedLenFeature([], tf.int64),
      "target_ids": tf.io.FixedLenFeature([width], tf.int64),
      "target_probs": tf.io.FixedLenFeature([width], tf.float32),
  }

  def parse(record):
    parsed = tf.io.parse_single_example(record, spec)
    parsed["target_ids"] = tf.cast(parsed["target_ids"], tf.int32)
    return parsed

  return tf.data.TFRecordDataset(tf.constant(files, tf.string)).map(
      parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
