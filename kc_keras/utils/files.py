"""Atomic file writes: a crash mid-write never leaves a partial file behind."""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator


FILE_MODE = 0o644


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
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(
      prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
  )
  try:
    os.chmod(tmp_path, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
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


@contextlib.contextmanager
def staged_directory(path: str) -> Iterator[str]:
  """Yields an empty hidden sibling of `path` to fill, then renames it to `path`.

  Readers of `path` never see a half-written directory: it appears only once
  the `with` block has finished. On any exception the staging directory is
  removed and `path` is left as it was.

  Args:
    path: the final directory; it must not exist, or be empty (replaced).

  Yields:
    The staging directory (same parent as `path`, so the rename is atomic).

  Raises:
    OSError: `path` exists and is not empty (nothing is written).
  """
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(path)}-",
                             dir=parent)
  try:
    yield staging
    if os.path.isdir(path):
      os.rmdir(path)
    os.rename(staging, path)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
