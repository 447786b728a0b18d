"""Verticals of glyph classes: Unihan radical ranges for CJK, lead consonants for Hangul, scripts.

Data files come from the Debian package `unicode-data`:
- `UNIHAN_IRG_SOURCES`: `kRSUnicode` ("radical.strokes", e.g. `U+4E00 kRSUnicode 1.0`;
  a `'` after the radical marks a simplified form, which keeps the radical's number);
- `SCRIPTS`: the Script property (`0041..005A ; Latin # ...`).
"""

import bisect
import bz2
import dataclasses
import re
import unicodedata
from typing import Callable, Mapping, Sequence

UNIHAN_IRG_SOURCES = "/usr/share/unicode/Unihan_IRGSources.txt.bz2"
SCRIPTS = "/usr/share/unicode/Scripts.txt"
UNICODE_DATA_PACKAGE = "unicode-data"

HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3
# Hangul syllables = 19 leads x 21 vowels x 28 tails; a lead spans 588 codepoints.
HANGUL_PER_LEAD = 21 * 28
# Scripts drawn as one vertical.
MERGED_SCRIPTS = {"Hiragana": "Kana", "Katakana": "Kana"}
OTHER_SCRIPTS = "other"

_RS = re.compile(r"^(\d+)'*\.(-?\d+)$")


def read_radicals(path: str = UNIHAN_IRG_SOURCES) -> dict[int, int]:
  """Codepoint -> Kangxi radical number (1..214) from the first `kRSUnicode` value.

  Args:
    path: `Unihan_IRGSources.txt` (`.bz2` is read compressed).

  Returns:
    One entry per codepoint that has `kRSUnicode`.

  Raises:
    OSError: the file cannot be read.
    ValueError: a `kRSUnicode` value that is not `radical['].strokes`.
  """
  opener = bz2.open if path.endswith(".bz2") else open
  radicals = {}
  with opener(path, "rt", encoding="utf-8") as f:
    for line in f:
      if not line.startswith("U+"):
        continue
      cp, field, value = line.rstrip("\n").split("\t", 2)
      if field != "kRSUnicode":
        continue
      first = value.split()[0]
      match = _RS.match(first)
      if not match:
        raise ValueError(f"{path}: unexpected kRSUnicode {value!r} for {cp}")
      radicals[int(cp[2:], 16)] = int(match.group(1))
  return radicals


def read_scripts(path: str = SCRIPTS) -> Callable[[int], str]:
  """A function codepoint -> Script property value ("Unknown" outside the file).

  Args:
    path: `Scripts.txt`.

  Raises:
    OSError: the file cannot be read.
  """
  ranges = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.split("#", 1)[0].strip()
      if not line:
        continue
      span, script = (x.strip() for x in line.split(";"))
      first, _, last = span.partition("..")
      ranges.append((int(first, 16), int(last or first, 16), script))
  ranges.sort()
  starts = [r[0] for r in ranges]

  def script_of(cp: int) -> str:
    i = bisect.bisect_right(starts, cp) - 1
    if i >= 0 and ranges[i][0] <= cp <= ranges[i][1]:
      return ranges[i][2]
    return "Unknown"

  return script_of


def merge_consecutive(counts: Sequence[int], groups: int) -> list[tuple[int, int]]:
  """Cuts a sequence of counts into `groups` consecutive runs of similar totals.

  With cumulative sums C_k (k = 0..K-1) and total T, run j ends at the k nearest
  to C_k = (j + 1) T / groups (ties to the smaller k), each run holding at least one
  key. A key larger than T / groups forms a run of its own.

  Args:
    counts: counts per key, in key order (zero counts are allowed).
    groups: wanted number of runs; fewer when there are fewer non-empty keys.

  Returns:
    `(first, last)` key indices (inclusive) of each run, in order; every run has a
    non-zero total.

  Raises:
    ValueError: no positive count, or `groups` < 1.
  """
  if groups < 1:
    raise ValueError(f"groups must be >= 1, got {groups}")
  keys = [k for k, n in enumerate(counts) if n > 0]
  if not keys:
    raise ValueError("no key has a positive count")
  groups = min(groups, len(keys))
  sizes = [counts[k] for k in keys]
  cumulative, total = [], 0
  for n in sizes:
    total += n
    cumulative.append(total)
  cuts, previous = [], -1
  for j in range(1, groups):
    target = j * total / groups
    lo, hi = previous + 1, len(keys) - 1 - (groups - j)
    best = min(range(lo, hi + 1), key=lambda k: (abs(cumulative[k] - target), k))
    cuts.append(best)
    previous = best
  cuts.append(len(keys) - 1)
  runs, start = [], 0
  for end in cuts:
    runs.append((keys[start], keys[end]))
    start = end + 1
  return runs


@dataclasses.dataclass(frozen=True)
class Verticals:
  """The vertical of every class.

  Args:
    names: vertical names, in vertical id order.
    of: codepoint -> vertical id.
  """

  names: tuple[str, ...]
  of: Mapping[int, int]


def _hangul_lead(cp: int) -> int:
  return (cp - HANGUL_FIRST) // HANGUL_PER_LEAD


def _lead_name(lead: int) -> str:
  return unicodedata.name(chr(0x1100 + lead)).split()[-1].lower()


def assign(codepoints: Sequence[int], radicals: Mapping[int, int],
           script_of: Callable[[int], str], cjk_verticals: int,
           min_script_classes: int) -> Verticals:
  """Groups codepoints into verticals.

  - CJK ideographs (codepoints with a radical): radicals 1..214 in order, cut by
    `merge_consecutive` into `cjk_verticals` runs, named `cjk_radicals_AAA-BBB`.
  - Hangul syllables: by lead consonant (19 in order), cut into
    max(1, round(n_hangul / mean CJK vertical size)) runs, named
    `hangul_<lead>-<lead>` (e.g. `hangul_kiyeok-rieul`).
  - Any other codepoint: its script (Hiragana and Katakana together as `Kana`),
    named `script_<script>`; a script with fewer than `min_script_classes`
    classes joins `script_other`.
  Vertical ids follow that order: CJK runs, Hangul runs, scripts by name, other last.
  Names depend only on the radical/lead/script ranges, never on counts alone.

  Args:
    codepoints: the classes.
    radicals: codepoint -> radical (`read_radicals`).
    script_of: codepoint -> script (`read_scripts`).
    cjk_verticals: number of CJK verticals wanted.
    min_script_classes: smallest script with a vertical of its own.

  Returns:
    `Verticals`.
  """
  cjk = [cp for cp in codepoints if cp in radicals]
  hangul = [cp for cp in codepoints
            if cp not in radicals and HANGUL_FIRST <= cp <= HANGUL_LAST]
  rest = [cp for cp in codepoints
          if cp not in radicals and not HANGUL_FIRST <= cp <= HANGUL_LAST]
  names, of = [], {}
  mean_cjk = None
  if cjk:
    counts = [0] * 215
    for cp in cjk:
      counts[radicals[cp]] += 1
    runs = merge_consecutive(counts, cjk_verticals)
    mean_cjk = len(cjk) / len(runs)
    by_radical = {}
    for first, last in runs:
      for r in range(first, last + 1):
        by_radical[r] = len(names)
      names.append(f"cjk_radicals_{first:03d}-{last:03d}")
    for cp in cjk:
      of[cp] = by_radical[radicals[cp]]
  if hangul:
    counts = [0] * 19
    for cp in hangul:
      counts[_hangul_lead(cp)] += 1
    groups = max(1, round(len(hangul) / mean_cjk)) if mean_cjk else 1
    by_lead = {}
    for first, last in merge_consecutive(counts, groups):
      for lead in range(first, last + 1):
        by_lead[lead] = len(names)
      names.append(f"hangul_{_lead_name(first)}-{_lead_name(last)}")
    for cp in hangul:
      of[cp] = by_lead[_hangul_lead(cp)]
  scripts = {}
  for cp in rest:
    script = script_of(cp)
    scripts.setdefault(MERGED_SCRIPTS.get(script, script), []).append(cp)
  other = []
  for script in sorted(scripts):
    if len(scripts[script]) < min_script_classes or script in ("Common", "Inherited",
                                                                 "Unknown"):
      other.extend(scripts[script])
      continue
    for cp in scripts[script]:
      of[cp] = len(names)
    names.append(f"script_{script.lower()}")
  if other:
    for cp in other:
      of[cp] = len(names)
    names.append(f"script_{OTHER_SCRIPTS}")
  return Verticals(names=tuple(names), of=of)
