"""Which rendered glyphs are kept: no empty glyphs, no .notdef look-alikes, one copy per design.

Thresholds (measured on real fonts at 32 px, docs/DATA.md "Glyphs of real fonts"):
- empty: fewer than `MIN_INK_PIXELS` pixels reach `INK_LEVEL` (of 255);
- .notdef look-alike: cosine(glyph, the face's .notdef) >= `SAME_DESIGN_COSINE`;
- placeholder: one glyph of a face mapped by >= `PLACEHOLDER_CODEPOINTS` codepoints;
- copied design: cosine(glyph, a glyph kept earlier for the same codepoint)
  >= `SAME_DESIGN_COSINE`, where cosine(a, b) = <a, b> / (|a| |b|) over raw pixel
  values. Independent designs agree on 0-1.7% of characters at this threshold, copies
  (IPA / IPAex / Takao, Droid / WQY MicroHei) on nearly all.
"""

import collections
from typing import Mapping

import numpy as np

SAME_DESIGN_COSINE = 0.95
MIN_INK_PIXELS = 2
INK_LEVEL = 128
PLACEHOLDER_CODEPOINTS = 16


def is_empty(bitmap: np.ndarray, min_ink_pixels: int = MIN_INK_PIXELS,
             ink_level: int = INK_LEVEL) -> bool:
  """Whether fewer than `min_ink_pixels` pixels are >= `ink_level`."""
  return int(np.count_nonzero(bitmap >= ink_level)) < min_ink_pixels


def cosine(a: np.ndarray, b: np.ndarray) -> float:
  """<a, b> / (|a| |b|) over the flattened pixels; 0.0 when either has no ink."""
  a = a.astype(np.float64).ravel()
  b = b.astype(np.float64).ravel()
  norm = np.linalg.norm(a) * np.linalg.norm(b)
  return float(a @ b / norm) if norm > 0 else 0.0


def distinct(bitmaps: np.ndarray, threshold: float = SAME_DESIGN_COSINE) -> list[int]:
  """Indices of the bitmaps kept when later copies of an earlier design are dropped.

  Greedy in the given order: bitmap i is kept when its cosine with every bitmap
  kept before it is < `threshold`. The order is the priority (the builder puts the
  held-out eval families first, so a training font that copies an eval design
  loses that glyph, and no eval design leaks into training).

  Args:
    bitmaps: `uint8 [d, H, W]` renders of one codepoint by d faces, none empty.
    threshold: cosine at or above which two renders are one design.

  Returns:
    Ascending indices into `bitmaps`.
  """
  d = len(bitmaps)
  if d == 0:
    return []
  x = bitmaps.reshape(d, -1).astype(np.float32)
  x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  gram = x @ x.T
  kept = []
  for i in range(d):
    if not kept or gram[i, kept].max() < threshold:
      kept.append(i)
  return kept


def placeholder_codepoints(cmap: Mapping[int, str],
                           min_codepoints: int = PLACEHOLDER_CODEPOINTS) -> set:
  """Codepoints whose glyph is shared by >= `min_codepoints` codepoints of the cmap.

  A font that draws thousands of characters with one placeholder glyph maps them
  all to that glyph; genuine sharing (a compatibility ideograph and its unified
  form, Latin and Greek capital A) involves a few codepoints.

  Args:
    cmap: codepoint -> glyph name of one face.
    min_codepoints: how many codepoints on one glyph make it a placeholder.

  Returns:
    The codepoints mapped to such glyphs.
  """
  by_glyph = collections.defaultdict(list)
  for cp, glyph in cmap.items():
    by_glyph[glyph].append(cp)
  return {cp for cps in by_glyph.values() if len(cps) >= min_codepoints
          for cp in cps}
