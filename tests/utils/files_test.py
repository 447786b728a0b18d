"""File sets written as a unit, and staging directories of dead processes."""

import errno
import os
import re
import socket
import subprocess
import sys
from unittest import mock

import pytest

from kc_keras.utils import files


def _set(tmp_path, model, labels):
  model_path = str(tmp_path / "m.tflite")
  return files.write_file_set(
      {model_path + ".labels.txt": labels, model_path: model},
      model_path + ".manifest.json")


def test_file_set_checks_out_when_complete(tmp_path):
  manifest = _set(tmp_path, b"model-1", b"a\nb\n")
  assert sorted(manifest["files"]) == ["m.tflite", "m.tflite.labels.txt"]
  assert files.check_file_set(str(tmp_path / "m.tflite.manifest.json")) == (
      manifest)
  assert sorted(os.listdir(tmp_path)) == [
      "m.tflite", "m.tflite.labels.txt", "m.tflite.manifest.json"]


def test_a_write_stopped_between_renames_is_refused_naming_the_file(tmp_path):
  _set(tmp_path, b"model-1", b"a\nb\n")
  real_replace = os.replace
  calls = []

  def replace(src, dst):
    calls.append(dst)
    if len(calls) == 2:  # labels are in place, the model is not
      raise KeyboardInterrupt
    return real_replace(src, dst)

  with mock.patch.object(os, "replace", replace):
    with pytest.raises(KeyboardInterrupt):
      _set(tmp_path, b"model-2", b"c\nd\n")
  with open(tmp_path / "m.tflite", "rb") as f:
    assert f.read() == b"model-1"
  with pytest.raises(ValueError,
                     match=r"m.tflite.manifest.json: the files are not the "
                           r"set it lists \(m.tflite.labels.txt differs\)"):
    files.check_file_set(str(tmp_path / "m.tflite.manifest.json"))
  # Run again: the complete new set.
  _set(tmp_path, b"model-2", b"c\nd\n")
  files.check_file_set(str(tmp_path / "m.tflite.manifest.json"))
  assert sorted(os.listdir(tmp_path)) == [
      "m.tflite", "m.tflite.labels.txt", "m.tflite.manifest.json"]


def test_temporaries_of_a_killed_write_are_removed(tmp_path):
  _set(tmp_path, b"model-1", b"a\n")
  (tmp_path / ".m.tflite.x1y2.tmp").write_bytes(b"half a model")
  _set(tmp_path, b"model-2", b"a\n")
  assert sorted(os.listdir(tmp_path)) == [
      "m.tflite", "m.tflite.labels.txt", "m.tflite.manifest.json"]


def test_missing_member_and_no_manifest(tmp_path):
  _set(tmp_path, b"model-1", b"a\n")
  os.remove(tmp_path / "m.tflite")
  with pytest.raises(ValueError, match=r"\(m.tflite is missing\)"):
    files.check_file_set(str(tmp_path / "m.tflite.manifest.json"))
  assert files.check_file_set(str(tmp_path / "none.json")) is None


def test_file_set_must_share_the_manifest_directory(tmp_path):
  with pytest.raises(ValueError, match="are not in"):
    files.write_file_set({str(tmp_path / "sub" / "x"): b""},
                         str(tmp_path / "m.json"))


def test_staging_of_a_dead_process_is_removed_a_live_one_kept(tmp_path):
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  host = socket.gethostname()
  dead = tmp_path / f".tmp-1-{process.pid}@{host}-abc_12"
  live = tmp_path / f".tmp-1-{os.getpid()}@{host}-def_34"
  elsewhere = tmp_path / f".tmp-1-{process.pid}@other-host-ghi"
  other_version = tmp_path / f".tmp-12-{process.pid}@{host}-jkl"
  for d in (dead, live, elsewhere, other_version):
    d.mkdir()
  with files.staged_directory(str(tmp_path / "1")) as staging:
    with open(os.path.join(staging, "saved_model.pb"), "wb") as f:
      f.write(b"x")
  assert sorted(os.listdir(tmp_path)) == sorted(
      ["1", live.name, elsewhere.name, other_version.name])


def test_disk_full_becomes_one_line_naming_path_and_free_space(tmp_path):
  path = str(tmp_path / "ckpt-7.data")
  with pytest.raises(files.StorageError) as raised:
    with files.storage_errors(str(tmp_path)):
      raise OSError(errno.ENOSPC, "No space left on device", path)
  message = str(raised.value)
  assert re.fullmatch(
      rf"Cannot write {re.escape(path)}: no space left on device "
      rf"\(\d+\.\d (GiB|MiB|KiB) free on {re.escape(str(tmp_path))}\)\.",
      message), message
  assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_tensorflow_disk_errors_name_the_default_path(tmp_path):
  with pytest.raises(files.StorageError,
                     match=rf"^Cannot write {re.escape(str(tmp_path))}: no "
                           r"space left on device \("):
    with files.storage_errors(str(tmp_path)):
      raise RuntimeError("tensorflow/core/...: No space left on device")
  with pytest.raises(KeyError):  # anything else passes unchanged
    with files.storage_errors(str(tmp_path)):
      raise KeyError("x")


def test_check_writable_names_the_directory_and_reason(tmp_path):
  files.check_writable(str(tmp_path / "new"), "why")
  assert os.path.isdir(tmp_path / "new")
  # Root ignores permission bits: the failing write is simulated.
  with mock.patch.object(files, "_probe_write", side_effect=OSError(
      errno.EROFS, "Read-only file system")):
    with pytest.raises(files.StorageError,
                       match=rf"^{re.escape(str(tmp_path))} is not writable "
                             r"\(read-only file system; .* free on .*\): "
                             r"because$"):
      files.check_writable(str(tmp_path), "because")
