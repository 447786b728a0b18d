"""Wall time of a pipeline stage that may take several sittings.

A long stage (a 21K-class student) is stopped and resumed; the time its
interrupted sittings took is part of what it cost. `StageClock` keeps
`seconds = earlier sittings + this sitting` in a JSON file of unfinished
stages, rewritten every `interval` seconds from a daemon thread, so a
sitting that is killed loses at most `interval` seconds of its count.
"""

import os
import threading
import time
from typing import Callable, Dict, Optional

from kc_keras.utils import files
from kc_keras.utils import records

# The file of unfinished stages' seconds, beside `stage_times.json`.
PARTIAL_TIMES_JSON = "stage_partial_times.json"
DEFAULT_INTERVAL = 30.0


def _read(path: str) -> Dict[str, float]:
  if not os.path.exists(path):
    return {}
  return {str(k): float(v) for k, v in records.read_json(path).items()}


def earlier_seconds(workdir: str, name: str) -> float:
  """Seconds that earlier, unfinished sittings of stage `name` took."""
  return _read(os.path.join(workdir, PARTIAL_TIMES_JSON)).get(name, 0.0)


def forget(workdir: str, name: str) -> None:
  """Drops stage `name` from the unfinished stages (finished, or restarted)."""
  path = os.path.join(workdir, PARTIAL_TIMES_JSON)
  partial = _read(path)
  if partial.pop(name, None) is not None:
    files.atomic_write_json(path, partial)


class StageClock:
  """Counts a stage's seconds over sittings: earlier ones + this one.

  seconds() = earlier + (now() - start), `earlier` read from
  `workdir/stage_partial_times.json` when the clock starts. While it runs,
  `tick()` (every `interval` seconds on a daemon thread) writes seconds()
  there under the stage's name; `stop()` ends the thread and returns the
  total, and the caller `forget`s the stage once it has recorded it.

  Args:
    workdir: the pipeline's root.
    name: the stage's name.
    interval: seconds between writes; None starts no thread (tests call
      `tick` themselves).
    now: the clock (`time.time`).
  """

  def __init__(self, workdir: str, name: str,
               interval: Optional[float] = DEFAULT_INTERVAL,
               now: Callable[[], float] = time.time):
    self._path = os.path.join(workdir, PARTIAL_TIMES_JSON)
    self._name = name
    self._now = now
    self._earlier = earlier_seconds(workdir, name)
    self._start = now()
    self._lock = threading.Lock()
    self._stopped = threading.Event()
    self._thread = None
    if interval is not None:
      self._thread = threading.Thread(target=self._loop, args=(interval,),
                                      daemon=True, name=f"clock {name}")
      self._thread.start()

  def seconds(self) -> float:
    return self._earlier + (self._now() - self._start)

  def tick(self) -> None:
    """Writes seconds() for this stage, keeping the other stages' entries."""
    with self._lock:
      if self._stopped.is_set():
        return
      partial = _read(self._path)
      partial[self._name] = self.seconds()
      files.atomic_write_json(self._path, partial)

  def _loop(self, interval: float) -> None:
    while not self._stopped.wait(interval):
      self.tick()

  def stop(self) -> float:
    """Stops the writes; returns seconds()."""
    with self._lock:
      self._stopped.set()
    if self._thread is not None:
      self._thread.join()
    return self.seconds()
