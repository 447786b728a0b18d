"""Font faces: one per (file, index) of a font file or collection, with family, weight and cmap."""

import dataclasses
import os
from typing import Iterable, Sequence

from fontTools import ttLib

from kc_keras.datasets.glyphs import dedup

# A family's face whose weight class is nearest this (OS/2 usWeightClass) stands for it.
REGULAR_WEIGHT = 400


@dataclasses.dataclass(frozen=True)
class Face:
  """One face of a font file.

  Args:
    path: font file.
    index: face index inside a collection (0 for a single font).
    family: typographic family name (name id 16, else 1), e.g. "Noto Serif CJK JP".
    style: subfamily name (name id 17, else 2), e.g. "Regular".
    weight: OS/2 usWeightClass (400 when the table is absent).
    italic: whether the face is italic/oblique (OS/2 fsSelection bit 0 or 9).
    package: the Debian package that installed the file ("" if not known).
    codepoints: the codepoints its cmap maps, less placeholders (a cmap is not
      coverage: the builder still checks every rendered glyph for ink).
    placeholders: codepoints left out because their glyph is a placeholder shared
      by >= `dedup.PLACEHOLDER_CODEPOINTS` codepoints.
  """

  path: str
  index: int
  family: str
  style: str
  weight: int
  italic: bool
  package: str
  codepoints: frozenset = dataclasses.field(repr=False, compare=False)
  placeholders: int = 0

  @property
  def key(self) -> str:
    """`<file name>#<index>`: names the face in logs and in designs.tsv."""
    return f"{os.path.basename(self.path)}#{self.index}"


def _name(font, *name_ids) -> str:
  table = font["name"] if "name" in font else None
  for name_id in name_ids:
    if table is None:
      break
    record = table.getDebugName(name_id)
    if record:
      return record.strip()
  return ""


def _open(path: str) -> list:
  if path.lower().endswith((".ttc", ".otc")):
    return list(ttLib.TTCollection(path, lazy=True).fonts)
  return [ttLib.TTFont(path, lazy=True)]


def read_faces(path: str, package: str = "") -> list[Face]:
  """Every face of one font file (a .ttc/.otc holds several), without its cmap.

  Only the `name` and `OS/2` tables are read; `with_codepoints` reads the cmap
  of the faces that are kept (reading every cmap of every installed font would
  take minutes).

  Args:
    path: .ttf/.otf/.ttc/.otc file.
    package: recorded on each face.

  Returns:
    Faces in index order, `codepoints` empty.

  Raises:
    fontTools.ttLib.TTLibError: the file is not a font.
  """
  faces = []
  for index, font in enumerate(_open(path)):
    weight, italic = REGULAR_WEIGHT, False
    if "OS/2" in font:
      os2 = font["OS/2"]
      weight = int(os2.usWeightClass)
      italic = bool(os2.fsSelection & 0b1000000001)
    faces.append(Face(
        path=path, index=index, family=_name(font, 16, 1) or os.path.basename(path),
        style=_name(font, 17, 2), weight=weight, italic=italic, package=package,
        codepoints=frozenset()))
  return faces


def with_codepoints(face: Face) -> Face:
  """`face` with `codepoints` (its cmap less placeholders) and `placeholders` filled.

  Raises:
    fontTools.ttLib.TTLibError: the file is not a font.
  """
  font = _open(face.path)[face.index]
  cmap = (font.getBestCmap() if "cmap" in font else None) or {}
  placeholders = dedup.placeholder_codepoints(cmap)
  return dataclasses.replace(face, codepoints=frozenset(set(cmap) - placeholders),
                             placeholders=len(placeholders))


def one_face_per_family(faces: Iterable[Face]) -> list[Face]:
  """Keeps, per family name, the upright face whose weight is nearest 400.

  Bold, light and italic faces of a family are the same design drawn thicker,
  thinner or slanted; they are not counted as separate designs. Ties go to the
  lower weight, then to the smaller (path, index).

  Args:
    faces: any faces.

  Returns:
    One face per family, sorted by (family, path, index).
  """
  best = {}
  for face in faces:
    rank = (face.italic, abs(face.weight - REGULAR_WEIGHT), face.weight,
            face.path, face.index)
    if face.family not in best or rank < best[face.family][0]:
      best[face.family] = (rank, face)
  return sorted((f for _, f in best.values()),
                key=lambda f: (f.family, f.path, f.index))


def family_matches(family: str, prefixes: Sequence[str]) -> bool:
  """Whether `family` starts with one of `prefixes` (case-insensitive).

  "Noto Serif CJK" matches "Noto Serif CJK JP", "Noto Serif CJK SC", ...
  """
  low = family.lower()
  return any(low.startswith(p.lower()) for p in prefixes)
