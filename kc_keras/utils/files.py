"""Atomic file writes: a crash mid-write never leaves a partial file behind."""

import json
import os
import tempfile
from typing import Any


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary sibling and `os.replace`.

  Readers see either the previous file or the complete new one, never a
  truncated mix, because `os.replace` is atomic within one filesystem.

  Args:
    path: destination file; its directory is created if missing.
    text: the full content.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(
      prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
  )
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise


def atomic_write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented, key-sorted JSON, atomically (see above)."""
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
