"""File writes a crash cannot leave half-done, and one-line storage errors."""

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import socket
import tempfile
from typing import Any, Dict, Iterator, Optional, Type

from kc_keras.utils import records
from kc_keras.utils import run_lock


FILE_MODE = 0o644
# errno -> what a user is told; OSErrors of these kinds are about the disk,
# not about the program, and are reported in one line (`storage_errors`).
_STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# The same conditions as TensorFlow's file system reports them (no errno).
_STORAGE_MESSAGES = ("No space left on device", "Disk quota exceeded",
                     "Read-only file system", "Permission denied")


class StorageError(OSError):
  """A write failed for lack of space or permission; the message is one line."""


def free_space(path: str) -> str:
  """`'<n> free on <dir>'` for the nearest existing directory of `path`."""
  directory = os.path.abspath(path)
  while not os.path.isdir(directory) and directory != os.path.dirname(
      directory):
    directory = os.path.dirname(directory)
  try:
    free = shutil.disk_usage(directory).free
  except OSError:
    return f"free space unknown on {directory}"
  for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
    if free >= size:
      return f"{free / size:.1f} {unit} free on {directory}"
  return f"{free} bytes free on {directory}"


def storage_error(error: BaseException,
                  default_path: str) -> Optional[StorageError]:
  """The one-line `StorageError` for a disk-full / read-only / denied error.

  Args:
    error: any exception.
    default_path: the path named when the error does not carry one (TF's
      file errors, e.g. a checkpoint write).

  Returns:
    The `StorageError`, or None when `error` is not about storage.
  """
  if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
    reason = _STORAGE_ERRNOS[error.errno]
    path = error.filename or default_path
  else:
    text = str(error)
    found = [m for m in _STORAGE_MESSAGES if m in text]
    if not found:
      return None
    reason, path = found[0].lower(), default_path
  return StorageError(f"Cannot write {path}: {reason} ({free_space(path)}).")


@contextlib.contextmanager
def storage_errors(default_path: str) -> Iterator[None]:
  """Re-raises storage failures inside the block as one-line `StorageError`s.

  A full disk deep inside a checkpoint write otherwise surfaces as a long
  traceback; what the user needs is the path and the free space.

  Args:
    default_path: named when the error carries no path (the run directory).

  Raises:
    StorageError: for `storage_error` kinds; anything else passes unchanged.
  """
  try:
    yield
  except StorageError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    converted = storage_error(e, default_path)
    if converted is None:
      raise
    raise converted from None


def _probe_write(directory: str) -> None:
  """Creates and deletes a file in `directory` (raises OSError if it cannot)."""
  with tempfile.TemporaryFile(dir=directory):
    pass


def check_writable(directory: str, why: str) -> None:
  """Creates `directory` if needed and checks that a file can be written in it.

  A real write, not `os.access`: permission bits do not stop root, and
  neither tells a read-only mount or a full disk from a usable directory.

  Args:
    directory: the directory.
    why: what needs it, appended to the message.

  Raises:
    StorageError: one line naming the directory, the reason and `why`.
  """
  try:
    os.makedirs(directory, exist_ok=True)
    _probe_write(directory)
  except OSError as e:
    reason = _STORAGE_ERRNOS.get(e.errno, e.strerror or str(e))
    raise StorageError(f"{directory} is not writable ({reason}; "
                       f"{free_space(directory)}): {why}") from None


def _temporary_sibling(path: str) -> str:
  """A new, fsync-able temporary file beside `path`, mode 0644, closed."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp_path = tempfile.mkstemp(
      prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
  os.close(fd)
  os.chmod(tmp_path, FILE_MODE)
  return tmp_path


def _write_synced(path: str, data: bytes) -> None:
  with open(path, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` through a temporary sibling and `os.replace`.

  Readers see either the previous file or the complete new one, never a
  truncated mix, because `os.replace` is atomic within one filesystem. The
  file gets mode 0644 (a temporary file starts at 0600, which would hide it
  from a serving process running as another user).

  Args:
    path: destination file; its directory is created if missing.
    data: the full content.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp_path = _temporary_sibling(path)
  try:
    _write_synced(tmp_path, data)
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise


def atomic_write_text(path: str, text: str) -> None:
  """`atomic_write_bytes` of `text` encoded as UTF-8."""
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented, key-sorted JSON, atomically (see above)."""
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_file_set(contents: Dict[str, bytes], manifest_path: str) -> Dict:
  """Writes files that only make sense together, with a manifest written last.

  Every file is first written in full to a temporary sibling; then each is
  renamed into place, and only then is `manifest_path` (the sha256 of every
  file) replaced. A process killed part-way leaves the previous manifest,
  which no longer matches the files replaced so far: `check_file_set` then
  refuses the mixed set instead of pairing a new model with old labels.
  Temporaries of earlier killed writes of these files are removed first.

  Args:
    contents: {path: bytes}; every path in the directory of `manifest_path`.
    manifest_path: the JSON manifest.

  Returns:
    The manifest dict: {"files": {file name: sha256}}.

  Raises:
    ValueError: a path outside the manifest's directory.
  """
  directory = os.path.dirname(os.path.abspath(manifest_path))
  outside = [p for p in contents
             if os.path.dirname(os.path.abspath(p)) != directory]
  if outside:
    raise ValueError(f"write_file_set: {outside} are not in {directory}, the "
                     f"directory of {manifest_path}")
  os.makedirs(directory, exist_ok=True)
  for path in list(contents) + [manifest_path]:
    for stale in glob.glob(os.path.join(
        directory, glob.escape(f".{os.path.basename(path)}.") + "*.tmp")):
      os.remove(stale)
  staged = {}
  try:
    for path, data in contents.items():
      staged[path] = _temporary_sibling(path)
      _write_synced(staged[path], data)
    manifest = {"files": {os.path.basename(p): records.file_sha256(t)
                          for p, t in staged.items()}}
    for path, tmp_path in staged.items():
      os.replace(tmp_path, path)
    atomic_write_json(manifest_path, manifest)
  except BaseException:
    for tmp_path in staged.values():
      if os.path.exists(tmp_path):
        os.remove(tmp_path)
    raise
  return manifest


def check_file_set(manifest_path: str,
                   error: Type[Exception] = ValueError) -> Optional[Dict]:
  """Checks that the files of a `write_file_set` manifest are that set.

  Args:
    manifest_path: the manifest; when absent the files make no claim and
      nothing is checked.
    error: the exception class raised.

  Returns:
    The manifest, or None when there is none.

  Raises:
    error: an unreadable manifest, or files missing or differing from it
      (a write interrupted part-way, or a file replaced by hand), named.
  """
  if not os.path.exists(manifest_path):
    return None
  manifest = records.read_json(manifest_path, error)
  listed = manifest.get("files") if isinstance(manifest, dict) else None
  if not isinstance(listed, dict):
    raise error(f"{manifest_path}: no 'files' table")
  directory = os.path.dirname(os.path.abspath(manifest_path))
  bad = []
  for name, digest in sorted(listed.items()):
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
      bad.append(f"{name} is missing")
    elif records.file_sha256(path) != digest:
      bad.append(f"{name} differs")
  if bad:
    raise error(f"{manifest_path}: the files are not the set it lists ("
                + ", ".join(bad) + "); a write was interrupted or a file "
                "was replaced: write the set again")
  return manifest


_STAGING_OWNER = re.compile(r"-(\d+)@(.+)-[^-]*$")


def _remove_abandoned_staging(parent: str, base: str) -> None:
  """Removes `.tmp-<base>-<pid>@<host>-*` left by dead processes of this host."""
  prefix = f".tmp-{base}-"
  for name in os.listdir(parent):
    if not name.startswith(prefix):
      continue
    owner = _STAGING_OWNER.search(name[len(prefix) - 1:])
    if owner and run_lock.holder_is_gone(
        {"pid": int(owner.group(1)), "host": owner.group(2)}):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


@contextlib.contextmanager
def staged_directory(path: str) -> Iterator[str]:
  """Yields an empty hidden sibling of `path` to fill, then renames it to `path`.

  Readers of `path` never see a half-written directory: it appears only once
  the `with` block has finished. On any exception the staging directory is
  removed and `path` is left as it was; staging directories of `path` that
  a killed process of this host left are removed when the next one starts.

  Args:
    path: the final directory; it must not exist, or be empty (replaced).

  Yields:
    The staging directory (same parent as `path`, so the rename is atomic).

  Raises:
    OSError: `path` exists and is not empty (nothing is written).
  """
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  base = os.path.basename(path)
  os.makedirs(parent, exist_ok=True)
  _remove_abandoned_staging(parent, base)
  # The owner in the name lets a later call tell an abandoned staging
  # directory (its process died) from one still being filled.
  staging = tempfile.mkdtemp(
      prefix=f".tmp-{base}-{os.getpid()}@{socket.gethostname()}-", dir=parent)
  try:
    yield staging
    if os.path.isdir(path):
      os.rmdir(path)
    os.rename(staging, path)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
