"""Tests for the offline soft-target cache: round trip, binding, atomicity."""

import json
import os
import shutil
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf

from kc_keras.distillation import target_cache as tc
from kc_keras.utils import records
from kc_keras.utils import run_lock

FIELDS = {
    "dataset_fingerprint": "data-1",
    "hierarchy_fingerprint": "hier-1",
    "teacher_fingerprints": {0: "t0", 1: "t1"},
    "top_k": 2,
    "max_teachers_per_example": 1,
    "temperature": 1.0,
}


def _batches(num_examples=7, batch=2, offset=0, first=0):
  for start in range(first, num_examples, batch):
    ids = np.arange(start, min(start + batch, num_examples))
    yield (ids.astype(np.int64),
           np.stack([ids, -np.ones_like(ids)], axis=1).astype(np.int32),
           np.stack([ids / 10.0 + offset, np.zeros(len(ids))],
                    axis=1).astype(np.float32))


def _read(dataset):
  return [{k: v.numpy() for k, v in ex.items()} for ex in dataset]


class TargetCacheTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root, ignore_errors=True)
    self.cache_dir = os.path.join(root, "cache")

  def test_round_trip_in_order_with_shards(self):
    manifest = tc.write_target_cache(self.cache_dir, _batches(),
                                     manifest_fields=FIELDS, shard_size=3)
    self.assertEqual(manifest["num_examples"], 7)
    self.assertEqual([s["num_examples"] for s in manifest["shards"]],
                     [3, 3, 1])
    rows = _read(tc.load_target_cache(self.cache_dir, expected=FIELDS))
    self.assertEqual([r["example_id"] for r in rows], list(range(7)))
    self.assertAllEqual(rows[4]["target_ids"], [4, -1])
    self.assertAllClose(rows[4]["target_probs"], [0.4, 0.0])
    self.assertEqual(rows[4]["target_ids"].dtype, np.int32)
    # Only the finished cache is left beside it.
    self.assertEqual(os.listdir(os.path.dirname(self.cache_dir)), ["cache"])

  def test_mismatch_lists_every_differing_field(self):
    tc.write_target_cache(self.cache_dir, _batches(), manifest_fields=FIELDS)
    expected = dict(FIELDS, dataset_fingerprint="data-2", top_k=3,
                    teacher_fingerprints={0: "t0", 1: "other"})
    with self.assertRaises(tc.TargetCacheMismatchError) as ctx:
      tc.load_target_cache(self.cache_dir, expected=expected)
    message = str(ctx.exception)
    self.assertIn("dataset_fingerprint: cached='data-1' expected='data-2'",
                  message)
    self.assertIn("top_k: cached=2 expected=3", message)
    self.assertIn("teacher_fingerprints: vertical 1 cached=t1 "
                  "expected=other", message)
    self.assertNotIn("hierarchy_fingerprint", message)
    self.assertIsInstance(ctx.exception, ValueError)

  def test_temperature_binds_and_old_manifests_mean_one(self):
    tc.write_target_cache(self.cache_dir, _batches(),
                          manifest_fields=dict(FIELDS, temperature=2.0))
    with self.assertRaisesRegex(tc.TargetCacheMismatchError,
                                "temperature: cached=2.0 expected=1.0"):
      tc.load_target_cache(self.cache_dir, expected=FIELDS)
    # A manifest written before the field existed holds tau = 1 targets.
    path = os.path.join(self.cache_dir, tc.MANIFEST_NAME)
    with open(path) as f:
      manifest = json.load(f)
    manifest.pop("temperature")
    manifest.pop(records.SEAL_KEY)
    manifest["format_version"] = 1
    with open(path, "w") as f:
      json.dump(manifest, f)
    self.assertLen(_read(tc.load_target_cache(self.cache_dir, expected=FIELDS)),
                   7)
    with self.assertRaisesRegex(tc.TargetCacheMismatchError,
                                "temperature: cached=1.0 expected=3.0"):
      tc.load_target_cache(self.cache_dir,
                           expected=dict(FIELDS, temperature=3.0))

  def _edit_manifest(self, **fields):
    path = os.path.join(self.cache_dir, tc.MANIFEST_NAME)
    with open(path) as f:
      manifest = json.load(f)
    manifest.update(fields)
    with open(path, "w") as f:
      json.dump(manifest, f)

  def test_edited_manifest_is_refused(self):
    tc.write_target_cache(self.cache_dir, _batches(), manifest_fields=FIELDS)
    # Edited to claim the teachers on disk now: the seal no longer matches.
    self._edit_manifest(teacher_fingerprints={"0": "t0", "1": "new"})
    with self.assertRaisesRegex(
        tc.TargetCacheError,
        r"manifest.json: its fields were changed after it was written"):
      tc.load_target_cache(self.cache_dir,
                           expected=dict(FIELDS,
                                         teacher_fingerprints={0: "t0",
                                                               1: "new"}))

  def test_shard_table_must_add_up(self):
    tc.write_target_cache(self.cache_dir, _batches(), manifest_fields=FIELDS,
                          shard_size=4)
    self._edit_manifest(format_version=1, num_examples=9,
                        **{records.SEAL_KEY: None})
    with self.assertRaisesRegex(
        tc.TargetCacheError,
        r"its shards hold 7 examples but it claims num_examples=9"):
      tc.load_target_cache(self.cache_dir, expected=FIELDS)
    self._edit_manifest(num_examples=7, shards=[{"file": "shard-00000"}])
    with self.assertRaisesRegex(tc.TargetCacheError,
                                r"'shards' must list file, num_examples and "
                                r"sha256"):
      tc.load_target_cache(self.cache_dir, expected=FIELDS)

  def test_incomplete_cache_is_refused(self):
    tf.io.gfile.makedirs(self.cache_dir)
    with self.assertRaisesRegex(tc.TargetCacheError, "Incomplete cache"):
      tc.load_target_cache(self.cache_dir, expected=FIELDS)

  def test_corrupt_shard_is_named(self):
    manifest = tc.write_target_cache(self.cache_dir, _batches(),
                                     manifest_fields=FIELDS, shard_size=4)
    shard = os.path.join(self.cache_dir, manifest["shards"][1]["file"])
    with open(shard, "ab") as f:
      f.write(b"x")
    with self.assertRaisesRegex(tc.TargetCacheError, "shard-00001.tfrecord"):
      tc.load_target_cache(self.cache_dir, expected=FIELDS)

  def test_replaces_only_after_new_cache_is_complete(self):
    tc.write_target_cache(self.cache_dir, _batches(), manifest_fields=FIELDS)

    def failing():
      yield next(_batches(offset=1.0))
      raise RuntimeError("teacher crashed")

    with self.assertRaisesRegex(RuntimeError, "teacher crashed"):
      tc.write_target_cache(self.cache_dir, failing(), manifest_fields=FIELDS)
    rows = _read(tc.load_target_cache(self.cache_dir, expected=FIELDS))
    self.assertLen(rows, 7)
    self.assertAllClose(rows[1]["target_probs"], [0.1, 0.0])
    self.assertEqual(os.listdir(os.path.dirname(self.cache_dir)), ["cache"])

    tc.write_target_cache(self.cache_dir, _batches(3, offset=0.5),
                          manifest_fields=FIELDS)
    rows = _read(tc.load_target_cache(self.cache_dir, expected=FIELDS))
    self.assertLen(rows, 3)
    self.assertAllClose(rows[1]["target_probs"], [0.6, 0.0])
    with open(os.path.join(self.cache_dir, tc.MANIFEST_NAME)) as f:
      self.assertEqual(json.load(f)["teacher_fingerprints"],
                       {"0": "t0", "1": "t1"})

  def test_failed_final_rename_keeps_the_previous_cache(self):
    tc.write_target_cache(self.cache_dir, _batches(), manifest_fields=FIELDS)
    real_rename = tf.io.gfile.rename

    def rename(src, dst, overwrite=False):
      if ".tmp-" in src:  # the new cache moving into place
        raise OSError("disk full")
      return real_rename(src, dst, overwrite)

    with mock.patch.object(tf.io.gfile, "rename", rename):
      with self.assertRaisesRegex(OSError, "disk full"):
        tc.write_target_cache(self.cache_dir, _batches(3, offset=0.5),
                              manifest_fields=FIELDS)
    rows = _read(tc.load_target_cache(self.cache_dir, expected=FIELDS))
    self.assertLen(rows, 7)
    self.assertAllClose(rows[1]["target_probs"], [0.1, 0.0])
    self.assertEqual(os.listdir(os.path.dirname(self.cache_dir)), ["cache"])

  def _killed_between_renames(self):
    """The state a kill between the writer's two renames leaves behind."""
    tc.write_target_cache(self.cache_dir, _batches(), manifest_fields=FIELDS)
    new = os.path.join(os.path.dirname(self.cache_dir), "new")
    tc.write_target_cache(new, _batches(3, offset=0.5),
                          manifest_fields=FIELDS)
    os.rename(self.cache_dir, self.cache_dir + ".old-aaaa")
    os.rename(new, self.cache_dir + ".tmp-bbbb")
    # An earlier write killed before its manifest: incomplete staging.
    os.makedirs(self.cache_dir + ".tmp-cccc")

  def test_kill_between_renames_loses_nothing(self):
    self._killed_between_renames()
    rows = _read(tc.load_target_cache(self.cache_dir, expected=FIELDS))
    # The new, complete cache is found and used; every leftover is removed.
    self.assertLen(rows, 3)
    self.assertAllClose(rows[1]["target_probs"], [0.6, 0.0])
    self.assertEqual(os.listdir(os.path.dirname(self.cache_dir)), ["cache"])

  def test_previous_copy_is_restored_when_no_new_one_is_complete(self):
    tc.write_target_cache(self.cache_dir, _batches(), manifest_fields=FIELDS)
    os.rename(self.cache_dir, self.cache_dir + ".old-aaaa")
    os.makedirs(self.cache_dir + ".tmp-cccc")
    rows = _read(tc.load_target_cache(self.cache_dir, expected=FIELDS))
    self.assertLen(rows, 7)
    self.assertEqual(os.listdir(os.path.dirname(self.cache_dir)), ["cache"])

  def test_next_write_cleans_leftovers_of_killed_writes(self):
    tc.write_target_cache(self.cache_dir, _batches(), manifest_fields=FIELDS)
    os.makedirs(self.cache_dir + ".tmp-cccc")
    tc.write_target_cache(self.cache_dir, _batches(3), manifest_fields=FIELDS)
    self.assertEqual(os.listdir(os.path.dirname(self.cache_dir)), ["cache"])

  def test_a_cache_being_written_is_not_touched(self):
    self._killed_between_renames()
    with run_lock.DirectoryLock(self.cache_dir, "writing the target cache",
                                path=tc.lock_path(self.cache_dir)):
      with self.assertRaisesRegex(run_lock.LockedError,
                                  r"in use by pid \d+ .*writing the target "
                                  r"cache"):
        tc.load_target_cache(self.cache_dir, expected=FIELDS)
      with self.assertRaises(run_lock.LockedError):
        tc.write_target_cache(self.cache_dir, _batches(),
                              manifest_fields=FIELDS)
    self.assertLen(os.listdir(os.path.dirname(self.cache_dir)), 3)

  def _interrupted(self, fields=FIELDS, after=2):
    """A resumable write of 7 examples in shards of 2, killed after `after` batches."""
    def batches_from(start):
      for i, batch in enumerate(_batches(first=start)):
        if i == after:
          raise KeyboardInterrupt
        yield batch

    with self.assertRaises(KeyboardInterrupt):
      tc.write_target_cache(self.cache_dir, batches_from,
                            manifest_fields=fields, shard_size=2)

  def _resume(self, fields=FIELDS):
    starts = []

    def batches_from(start):
      starts.append(start)
      return _batches(first=start)

    manifest = tc.write_target_cache(self.cache_dir, batches_from,
                                     manifest_fields=fields, shard_size=2)
    return starts, manifest

  def test_a_resumed_write_equals_an_uninterrupted_one(self):
    whole = tc.write_target_cache(self.cache_dir + "_whole", _batches(),
                                  manifest_fields=FIELDS, shard_size=2)
    self._interrupted(after=3)  # 6 examples: shards 0-1 recorded, 2 open
    starts, manifest = self._resume()
    self.assertEqual(starts, [4])
    self.assertEqual(manifest, whole)
    for shard in manifest["shards"]:
      with open(os.path.join(self.cache_dir, shard["file"]), "rb") as a, \
          open(os.path.join(self.cache_dir + "_whole", shard["file"]),
               "rb") as b:
        self.assertEqual(a.read(), b.read())
    self.assertLen(_read(tc.load_target_cache(self.cache_dir,
                                              expected=FIELDS)), 7)

  def test_a_staged_write_for_other_fields_starts_over(self):
    self._interrupted()
    with self.assertLogs(level="WARNING") as logs:
      starts, _ = self._resume({**FIELDS, "temperature": 2.0})
    self.assertEqual(starts, [0])
    self.assertIn("written for other temperature", "".join(logs.output))

  def test_a_changed_staged_shard_starts_over(self):
    self._interrupted()
    with open(self.cache_dir + tc.STAGING_SUFFIX + "/shard-00000.tfrecord",
              "ab") as f:
      f.write(b"x")
    with self.assertLogs(level="WARNING") as logs:
      starts, _ = self._resume()
    self.assertEqual(starts, [0])
    self.assertIn("shard-00000.tfrecord changed", "".join(logs.output))

  def test_a_staged_write_survives_a_load_and_an_iterable_write_drops_it(self):
    self._interrupted()
    staging = self.cache_dir + tc.STAGING_SUFFIX
    with self.assertRaisesRegex(tc.TargetCacheError, "Incomplete cache"):
      tc.load_target_cache(self.cache_dir, expected=FIELDS)
    self.assertTrue(os.path.isdir(staging))  # kept for the next write
    tc.write_target_cache(self.cache_dir, _batches(3), manifest_fields=FIELDS)
    self.assertFalse(os.path.exists(staging))
    self.assertLen(_read(tc.load_target_cache(self.cache_dir,
                                              expected=FIELDS)), 3)

  def test_fill_skipped_adds_empty_rows(self):
    batches = [(np.array([1, 2]), np.array([[5, 6], [7, 8]]),
                np.array([[.5, .6], [.7, .8]], np.float32)),
               (np.array([4]), np.array([[9, 9]]), np.array([[.9, .9]]))]
    out = list(tc.fill_skipped(batches, num_examples=6, width=2))
    ids = np.concatenate([o[0] for o in out])
    targets = np.concatenate([o[1] for o in out])
    probs = np.concatenate([o[2] for o in out])
    self.assertAllEqual(ids, [0, 1, 2, 3, 4, 5])
    self.assertAllEqual(targets, [[-1, -1], [5, 6], [7, 8], [-1, -1], [9, 9],
                                  [-1, -1]])
    self.assertAllClose(probs[:, 0], [0, .5, .7, 0, .9, 0])
    with self.assertRaisesRegex(tc.TargetCacheError, "not increasing"):
      list(tc.fill_skipped([(np.array([2, 1]), np.zeros((2, 2)),
                             np.zeros((2, 2)))], 3, 2))

  def test_bad_args(self):
    with self.assertRaisesRegex(ValueError, r"missing \['top_k'\]"):
      tc.write_target_cache(
          self.cache_dir, _batches(),
          manifest_fields={k: v for k, v in FIELDS.items() if k != "top_k"})
    with self.assertRaisesRegex(ValueError, r"\[b, 4\]"):
      tc.write_target_cache(self.cache_dir, _batches(),
                            manifest_fields=dict(FIELDS, top_k=4))
    self.assertFalse(tf.io.gfile.exists(self.cache_dir))
    with self.assertRaisesRegex(ValueError, "shard_size"):
      tc.write_target_cache(self.cache_dir, _batches(),
                            manifest_fields=FIELDS, shard_size=0)
    tc.write_target_cache(self.cache_dir, _batches(), manifest_fields=FIELDS)
    with self.assertRaisesRegex(ValueError, "unknown field"):
      tc.load_target_cache(self.cache_dir, expected={"topk": 2})


if __name__ == "__main__":
  tf.test.main()
