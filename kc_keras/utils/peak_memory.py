"""Peak resident memory of this process, per pipeline stage where the OS allows.

A pipeline runs every stage in one process, so the process's lifetime peak
(`getrusage`'s ru_maxrss) only ever grows: after a 100K-class evaluation
every later stage would report that evaluation's peak. On Linux the peak
(VmHWM in /proc/self/status) can be reset by writing "5" to
/proc/self/clear_refs, so each stage gets its own. Elsewhere the lifetime peak
is what there is: an upper bound, and `reset_peak` says so by returning
False.
"""

import resource
import sys
from typing import Optional

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
# clear_refs value that resets the peak resident set size (Linux >= 4.0).
_RESET_PEAK_RSS = "5"


def reset_peak() -> bool:
  """Starts a new peak from the current resident size.

  Returns:
    True when the next `peak_bytes` covers only what follows this call;
    False when the OS cannot reset it (it is then the process's lifetime
    peak).
  """
  try:
    with open(_CLEAR_REFS, "w") as f:
      f.write(_RESET_PEAK_RSS)
  except OSError:
    return False
  return _vm_hwm_bytes() is not None


def _vm_hwm_bytes() -> Optional[int]:
  try:
    with open(_STATUS) as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024  # the file says kB
  except OSError:
    return None
  return None


def peak_bytes() -> int:
  """The peak resident set size since `reset_peak` (or since the start).

  Returns:
    Bytes: VmHWM where /proc has it, else ru_maxrss (KiB on Linux, bytes on
    macOS).
  """
  hwm = _vm_hwm_bytes()
  if hwm is not None:
    return hwm
  maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return maxrss if sys.platform == "darwin" else maxrss * 1024
