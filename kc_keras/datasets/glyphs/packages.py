"""The Debian font packages a glyph dataset reads, and the refusal when they are missing."""

import os
import subprocess
from typing import Callable, Iterable, Sequence

FONT_EXTENSIONS = (".ttf", ".otf", ".ttc", ".otc")
# Where Debian font packages put their files (dpkg -L lists more: docs, configs).
FONT_ROOTS = ("/usr/share/fonts/",)


class MissingPackagesError(RuntimeError):
  """Debian packages the dataset needs are not installed; the message names them."""

  def __init__(self, missing: Sequence[str], what: str):
    self.missing = tuple(missing)
    super().__init__(
        f"{what} needs Debian packages that are not installed: "
        f"{' '.join(self.missing)}. Install them (as root) with:\n"
        f"  apt-get update && apt-get install -y {' '.join(self.missing)}\n"
        "The builder installs nothing itself.")


def dpkg_installed(package: str) -> bool:
  """Whether `dpkg -s package` reports the package installed.

  Args:
    package: a Debian package name.

  Returns:
    False also where dpkg itself is missing (not a Debian system).
  """
  try:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                         capture_output=True, text=True, check=False)
  except FileNotFoundError:
    return False
  return out.returncode == 0 and out.stdout.strip().endswith(" installed")


def require(packages: Iterable[str], what: str,
            is_installed: Callable[[str], bool] = dpkg_installed) -> None:
  """Raises naming every package of `packages` that is not installed.

  Args:
    packages: Debian package names.
    what: what needs them (for the message), e.g. "glyphs_21k".
    is_installed: the check (tests pass a fake).

  Raises:
    MissingPackagesError: with `.missing` in the given order.
  """
  missing = [p for p in packages if not is_installed(p)]
  if missing:
    raise MissingPackagesError(missing, what)


def package_font_files(package: str) -> list[str]:
  """Font files (`FONT_EXTENSIONS` under `FONT_ROOTS`) a package installed, sorted.

  Args:
    package: an installed Debian package.

  Returns:
    Absolute paths that exist (a path listed by dpkg but removed is left out).

  Raises:
    MissingPackagesError: dpkg does not know the package.
  """
  try:
    out = subprocess.run(["dpkg-query", "-L", package], capture_output=True,
                         text=True, check=False)
  except FileNotFoundError as e:
    raise MissingPackagesError([package], "listing font files") from e
  if out.returncode != 0:
    raise MissingPackagesError([package], "listing font files")
  files = set()
  for line in out.stdout.splitlines():
    path = line.strip()
    if (path.lower().endswith(FONT_EXTENSIONS)
        and path.startswith(FONT_ROOTS) and os.path.isfile(path)):
      files.add(os.path.realpath(path))
  return sorted(files)
