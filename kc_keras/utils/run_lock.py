"""One writer per directory: a lock file holding the writer's pid and host."""

import errno
import json
import os
import socket
import time
from typing import Dict, Optional

from absl import logging

LOCK_FILE = ".kc_lock"


class LockedError(RuntimeError):
  """Another live process holds the lock; the message names it."""


def process_is_alive(pid: int) -> bool:
  """Whether process `pid` of this host is running (a zombie is not).

  Args:
    pid: a process id.

  Returns:
    False when no such process exists or it has exited and awaits reaping.
  """
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Exists, owned by another user.
  try:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
      # "pid (comm) state ...": comm may hold spaces, the state follows ")".
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (OSError, IndexError):
    return True


def holder_is_gone(holder: Dict) -> bool:
  """True only when `holder` ran on this host and its process has exited.

  A holder on another host (a shared filesystem) cannot be probed and is
  taken as alive.
  """
  if holder.get("host") != socket.gethostname():
    return False
  pid = holder.get("pid")
  return isinstance(pid, int) and not process_is_alive(pid)


class DirectoryLock:
  """An exclusive lock on a directory, held by one process at a time.

  `acquire` creates `<directory>/.kc_lock` with `O_CREAT | O_EXCL` (atomic on
  local and NFSv3+ filesystems) holding `{"pid", "host", "since", "what"}`.
  A lock left by a process of this host that has died (a kill, a crash) is
  stale: it is logged and replaced. A live holder, or one on another host,
  makes `acquire` raise `LockedError` naming its pid, host and the lock file.

  Args:
    directory: the directory to own (created if missing).
    what: what the holder does, for the message ("training").
    path: the lock file (default `<directory>/.kc_lock`).

  Example:
    >>> with DirectoryLock(model_dir, "training"):
    ...   train(...)
  """

  def __init__(self, directory: str, what: str = "writing",
               path: Optional[str] = None):
    self.directory = directory
    self.what = what
    self.path = path or os.path.join(directory, LOCK_FILE)
    self._held = False

  def read_holder(self) -> Optional[Dict]:
    """The recorded holder, or None when unlocked (or unreadable)."""
    try:
      with open(self.path, encoding="utf-8") as f:
        holder = json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      # Being written right now, or a partial file of a crashed writer.
      return {}
    return holder if isinstance(holder, dict) else {}

  def acquire(self) -> "DirectoryLock":
    """Takes the lock, replacing a stale one.

    Returns:
      self.

    Raises:
      LockedError: a live (or unprobeable) holder has it.
    """
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                         "what": self.what}).encode("utf-8")
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self.read_holder()
        if holder is None:
          continue  # Released between our open and our read: try again.
        if holder and holder_is_gone(holder):
          logging.warning(
              "Removing the stale lock %s of pid %s on %s (no such process).",
              self.path, holder.get("pid"), holder.get("host"))
          try:
            os.remove(self.path)
          except FileNotFoundError:
            pass
          continue
        raise LockedError(self._held_message(holder)) from None
      with os.fdopen(fd, "wb") as f:
        f.write(record)
        f.flush()
        os.fsync(f.fileno())
      self._held = True
      return self
    raise LockedError(self._held_message(self.read_holder() or {}))

  def _held_message(self, holder: Dict) -> str:
    who = (f"pid {holder.get('pid')} on host {holder.get('host')!r} "
           f"({holder.get('what', 'writing')} since {holder.get('since')})"
           if holder else "a process that is writing the lock right now")
    return (f"{self.directory} is in use by {who}: only one process may "
            f"write it at a time. Wait for it, or, if that process is gone "
            f"(e.g. on another host), remove {self.path}.")

  def release(self) -> None:
    """Removes the lock file if this object holds it."""
    if not self._held:
      return
    self._held = False
    holder = self.read_holder()
    if holder and holder.get("pid") == os.getpid() and (
        holder.get("host") == socket.gethostname()):
      try:
        os.remove(self.path)
      except OSError as e:
        if e.errno != errno.ENOENT:
          raise

  def __enter__(self) -> "DirectoryLock":
    return self.acquire()

  def __exit__(self, *exc_info) -> None:
    self.release()
