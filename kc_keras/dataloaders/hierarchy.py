"""The class -> vertical hierarchy: validation, derived tables, JSON/CSV/folder I/O."""

import csv
import dataclasses
import functools
import hashlib
import io
import json
import os
import tempfile
from typing import Sequence

import numpy as np

CSV_HEADER = ("class_id", "class_name", "vertical_id", "vertical_name")
# Offending entries listed in one error message; the rest is counted.
_MAX_NAMED = 10


class HierarchyError(ValueError):
  """A hierarchy (or a hierarchy file) is inconsistent; the message names the entries."""


def named(items) -> str:
  """Up to 10 items as `repr`s, then how many more."""
  items = list(items)
  shown = ", ".join(repr(x) for x in items[:_MAX_NAMED])
  if len(items) > _MAX_NAMED:
    shown += f", ... ({len(items) - _MAX_NAMED} more)"
  return shown


@dataclasses.dataclass(frozen=True)
class Hierarchy:
  """Every class belongs to exactly one vertical.

  Args:
    class_names: `N` unique class names; position = global class id.
    vertical_names: `M` unique vertical names; position = vertical id.
    class_to_vertical: `N` vertical ids, `class_to_vertical[c]` = vertical of class `c`.

  Raises:
    HierarchyError: from `validate()`, which runs at construction.

  Example:
    >>> h = Hierarchy(("a", "b", "c"), ("v0", "v1"), (1, 0, 1))
    >>> h.classes_of(1), h.local_index
    (array([0, 2], dtype=int32), array([0, 0, 1], dtype=int32))
  """

  class_names: tuple[str, ...]
  vertical_names: tuple[str, ...]
  class_to_vertical: tuple[int, ...]

  def __post_init__(self):
    object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
    object.__setattr__(
        self, "vertical_names", tuple(str(n) for n in self.vertical_names)
    )
    try:
      c2v = tuple(int(v) for v in self.class_to_vertical)
    except (TypeError, ValueError) as e:
      raise HierarchyError(f"class_to_vertical must hold integers: {e}") from e
    object.__setattr__(self, "class_to_vertical", c2v)
    self.validate()

  # ---------------------------------------------------------------- checks
  def validate(self) -> None:
    """Checks names unique, ids dense (0..N-1, 0..M-1) and no empty vertical.

    Raises:
      HierarchyError: naming the offending class/vertical ids or names.
    """
    n, m = len(self.class_names), len(self.vertical_names)
    if n == 0:
      raise HierarchyError("hierarchy has no classes")
    if m == 0:
      raise HierarchyError("hierarchy has no verticals")
    if len(self.class_to_vertical) != n:
      raise HierarchyError(
          f"class_to_vertical has {len(self.class_to_vertical)} entries but there "
          f"are {n} class names"
      )
    for kind, names in (("class", self.class_names), ("vertical", self.vertical_names)):
      seen, dup = set(), []
      for name in names:
        if name in seen:
          dup.append(name)
        seen.add(name)
      if dup:
        raise HierarchyError(f"duplicate {kind} names: {named(sorted(set(dup)))}")
      empty = [i for i, name in enumerate(names) if not name]
      if empty:
        raise HierarchyError(f"empty {kind} names at ids {named(empty)}")
    c2v = np.asarray(self.class_to_vertical, np.int64)
    bad = np.flatnonzero((c2v < 0) | (c2v >= m))
    if bad.size:
      raise HierarchyError(
          "classes map to vertical ids outside 0.."
          f"{m - 1}: "
          + named(f"{self.class_names[i]} (id {i}) -> {c2v[i]}" for i in bad)
      )
    sizes = np.bincount(c2v, minlength=m)
    empty = np.flatnonzero(sizes == 0)
    if empty.size:
      raise HierarchyError(
          "verticals without classes: "
          + named(f"{self.vertical_names[v]} (id {v})" for v in empty)
      )

  # ---------------------------------------------------------------- tables
  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def num_verticals(self) -> int:
    return len(self.vertical_names)

  @functools.cached_property
  def _c2v(self) -> np.ndarray:
    return np.asarray(self.class_to_vertical, np.int32)

  @functools.cached_property
  def vertical_sizes(self) -> np.ndarray:
    """`int32 [M]`: `N_v`, the number of classes of each vertical."""
    return np.bincount(self._c2v, minlength=self.num_verticals).astype(np.int32)

  @functools.cached_property
  def _members(self) -> tuple[np.ndarray, ...]:
    order = np.argsort(self._c2v, kind="stable").astype(np.int32)
    bounds = np.concatenate([[0], np.cumsum(self.vertical_sizes)])
    return tuple(order[bounds[v]:bounds[v + 1]] for v in range(self.num_verticals))

  def classes_of(self, vertical: int) -> np.ndarray:
    """Global class ids of `vertical`, ascending, `int32 [N_v]`.

    Raises:
      HierarchyError: if `vertical` is not in `0..M-1`.
    """
    if not 0 <= int(vertical) < self.num_verticals:
      raise HierarchyError(
          f"vertical {vertical!r} is not in 0..{self.num_verticals - 1}"
      )
    return self._members[int(vertical)].copy()

  @functools.cached_property
  def local_index(self) -> np.ndarray:
    """`int32 [N]`: position of each class inside `classes_of(its vertical)`."""
    local = np.empty(self.num_classes, np.int32)
    for members in self._members:
      local[members] = np.arange(members.size, dtype=np.int32)
    return local

  def to_dict(self) -> dict:
    """The canonical JSON form (see docs/DATA.md)."""
    return {
        "verticals": [
            {"id": v, "name": name} for v, name in enumerate(self.vertical_names)
        ],
        "classes": [
            {"id": c, "name": name, "vertical": int(v)}
            for c, (name, v) in enumerate(zip(self.class_names, self.class_to_vertical))
        ],
    }

  @functools.cached_property
  def fingerprint(self) -> str:
    """sha256 hex of the canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

  def subset(self, vertical: int) -> "Hierarchy":
    """A one-vertical hierarchy over `classes_of(vertical)` with local ids `0..N_v-1`.

    Used by specialist teachers, whose outputs are indexed by local id.
    """
    members = self.classes_of(vertical)
    return Hierarchy(
        class_names=tuple(self.class_names[c] for c in members),
        vertical_names=(self.vertical_names[int(vertical)],),
        class_to_vertical=(0,) * members.size,
    )

  # ---------------------------------------------------------------- I/O
  @classmethod
  def from_dict(cls, data: dict, source: str = "<dict>") -> "Hierarchy":
    """Builds from the JSON form `{"verticals": [...], "classes": [...]}`.

    Raises:
      HierarchyError: on missing keys or ids that are not dense, naming them.
    """
    try:
      verticals, classes = data["verticals"], data["classes"]
      vids = [int(v["id"]) for v in verticals]
      vnames = [str(v["name"]) for v in verticals]
      cids = [int(c["id"]) for c in classes]
      cnames = [str(c["name"]) for c in classes]
      cverts = [int(c["vertical"]) for c in classes]
    except (KeyError, TypeError, ValueError) as e:
      raise HierarchyError(f"{source}: malformed hierarchy JSON ({e!r})") from e
    _check_dense(vids, "vertical", source)
    _check_dense(cids, "class", source)
    vert_by_id = dict(zip(vids, vnames))
    cls_by_id = dict(zip(cids, zip(cnames, cverts)))
    return cls(
        class_names=tuple(cls_by_id[i][0] for i in range(len(cids))),
        vertical_names=tuple(vert_by_id[i] for i in range(len(vids))),
        class_to_vertical=tuple(cls_by_id[i][1] for i in range(len(cids))),
    )

  @classmethod
  def from_csv_text(cls, text: str, source: str = "<csv>") -> "Hierarchy":
    """Builds from CSV rows `class_id,class_name,vertical_id,vertical_name`.

    Raises:
      HierarchyError: wrong header, a class listed twice, a vertical id with two
        names, or ids that are not dense; the message names them.
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
      raise HierarchyError(
          f"{source}: CSV header must be {','.join(CSV_HEADER)}, got {header!r}"
      )
    classes, verticals = {}, {}
    for line_no, row in enumerate(reader, start=2):
      if not row or all(not x.strip() for x in row):
        continue
      if len(row) != len(CSV_HEADER):
        raise HierarchyError(f"{source}:{line_no}: expected 4 fields, got {row!r}")
      try:
        cid, vid = int(row[0]), int(row[2])
      except ValueError as e:
        raise HierarchyError(f"{source}:{line_no}: non-integer id in {row!r}") from e
      cname, vname = row[1], row[3]
      if cid in classes:
        prev = classes[cid]
        what = (
            f"with two verticals ({prev[1]} and {vid})" if prev[1] != vid
            else "twice"
        )
        raise HierarchyError(
            f"{source}:{line_no}: class {cname!r} (id {cid}) is listed {what}"
        )
      if vid in verticals and verticals[vid] != vname:
        raise HierarchyError(
            f"{source}:{line_no}: vertical id {vid} has two names "
            f"{verticals[vid]!r} and {vname!r}"
        )
      classes[cid] = (cname, vid)
      verticals[vid] = vname
    names_seen = {}
    for cid, (cname, vid) in sorted(classes.items()):
      if cname in names_seen and names_seen[cname] != vid:
        raise HierarchyError(
            f"{source}: class {cname!r} is listed with two verticals "
            f"({names_seen[cname]} and {vid})"
        )
      names_seen[cname] = vid
    _check_dense(list(classes), "class", source)
    _check_dense(list(verticals), "vertical", source)
    return cls(
        class_names=tuple(classes[i][0] for i in range(len(classes))),
        vertical_names=tuple(verticals[i] for i in range(len(verticals))),
        class_to_vertical=tuple(classes[i][1] for i in range(len(classes))),
    )

  def to_csv_text(self) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for c, (name, v) in enumerate(zip(self.class_names, self.class_to_vertical)):
      writer.writerow([c, name, v, self.vertical_names[v]])
    return out.getvalue()

  def save(self, path: str) -> None:
    """Writes JSON (`.json`) or CSV (`.csv`) atomically (temp file + os.replace).

    Raises:
      HierarchyError: for any other extension.
    """
    path = os.fspath(path)
    fmt = _format_of(path)
    text = (
        json.dumps(self.to_dict(), indent=1) if fmt == "json" else self.to_csv_text()
    )
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".hierarchy-", suffix=".tmp")
    try:
      with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(text)
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise

  @classmethod
  def load(cls, path: str) -> "Hierarchy":
    """Reads a `.json` or `.csv` hierarchy file.

    Raises:
      HierarchyError: unknown extension, missing file, text that is not
        UTF-8, or inconsistent content.
    """
    path = os.fspath(path)
    fmt = _format_of(path)
    if not os.path.isfile(path):
      raise HierarchyError(f"hierarchy file not found: {path}")
    try:
      with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    except UnicodeDecodeError as e:
      raise HierarchyError(
          f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    if fmt == "json":
      try:
        data = json.loads(text)
      except json.JSONDecodeError as e:
        raise HierarchyError(f"{path}: invalid JSON ({e})") from e
      return cls.from_dict(data, source=path)
    return cls.from_csv_text(text, source=path)

  @classmethod
  def from_folder_tree(cls, root: str) -> "Hierarchy":
    """Derives `root/<vertical>/<class>/...`: sorted vertical names, then sorted
    class names within each vertical, get consecutive ids. Hidden folders
    (`.ipynb_checkpoints`, `.git`, ...) are not verticals or classes.

    Raises:
      HierarchyError: missing root, a vertical without class folders, or a class
        name that appears under two verticals.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
      raise HierarchyError(f"hierarchy folder not found: {root}")
    vertical_names = visible_subdirectories(root)
    class_names, class_to_vertical, where = [], [], {}
    for v, vname in enumerate(vertical_names):
      vdir = os.path.join(root, vname)
      cnames = visible_subdirectories(vdir)
      if not cnames:
        raise HierarchyError(f"vertical folder has no class folders: {vdir}")
      for cname in cnames:
        if cname in where:
          raise HierarchyError(
              f"class {cname!r} appears under two verticals: "
              f"{where[cname]!r} and {vname!r}"
          )
        where[cname] = vname
        class_names.append(cname)
        class_to_vertical.append(v)
    return cls(tuple(class_names), tuple(vertical_names), tuple(class_to_vertical))


def is_hidden(name: str) -> bool:
  """A dot-name: tool metadata (`.ipynb_checkpoints`, `.DS_Store`, `._x.jpg`)."""
  return name.startswith(".")


def visible_subdirectories(directory: str) -> list[str]:
  """Sorted names of the subdirectories of `directory` that are not hidden."""
  return sorted(d for d in os.listdir(directory)
                if not is_hidden(d) and os.path.isdir(os.path.join(directory, d)))


def _format_of(path: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  if ext not in (".json", ".csv"):
    raise HierarchyError(f"hierarchy file must end in .json or .csv: {path}")
  return ext[1:]


def _check_dense(ids: Sequence[int], kind: str, source: str) -> None:
  counts = {}
  for i in ids:
    counts[i] = counts.get(i, 0) + 1
  dup = sorted(i for i, n in counts.items() if n > 1)
  if dup:
    raise HierarchyError(f"{source}: {kind} ids listed twice: {named(dup)}")
  expected = set(range(len(ids)))
  extra = sorted(set(ids) - expected)
  missing = sorted(expected - set(ids))
  if extra or missing:
    raise HierarchyError(
        f"{source}: {kind} ids must be dense 0..{len(ids) - 1}; "
        f"missing {named(missing)}; unexpected {named(extra)}"
    )
