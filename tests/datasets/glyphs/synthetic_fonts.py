"""Tiny TrueType fonts drawn from rectangles, for glyph-builder tests without packages."""

import os
from typing import Mapping, Optional, Sequence

from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen

EM = 1000
# A hollow box, the usual shape of .notdef.
NOTDEF = ((100, 0, 900, 80), (100, 720, 900, 800), (100, 0, 180, 800),
          (820, 0, 900, 800))
EMPTY = ()


def design_rects(cp: int, design: int) -> tuple:
  """Three bars whose places depend on the character and the design.

  Renders of two designs of one character have cosine well below 0.95; a design
  is the same rectangles whatever font file it is written to.
  """
  j = cp % 97
  y = 150 + (j * 53) % 500
  x = 150 + (j * 31 + design * 211) % 600
  sx, sy = 150 + (design * 157 + j * 13) % 550, 150 + (j * 71 + design * 89) % 550
  return ((100, y, 900, y + 80), (x, 100, x + 80, 900), (sx, sy, sx + 150, sy + 150))


def _glyph(rects: Sequence[tuple]):
  pen = TTGlyphPen(None)
  for x0, y0, x1, y1 in rects:
    pen.moveTo((x0, y0))
    pen.lineTo((x0, y1))
    pen.lineTo((x1, y1))
    pen.lineTo((x1, y0))
    pen.closePath()
  return pen.glyph()


def make_font(path: str, family: str, glyphs: Mapping[int, Sequence[tuple]],
              shared: Optional[Mapping[str, Sequence[int]]] = None) -> str:
  """Writes a TrueType font and returns its path.

  Args:
    path: output .ttf.
    family: name table family (ids 1 and 16 read by `faces.read_faces`).
    glyphs: codepoint -> rectangles `(x0, y0, x1, y1)` in units of a 1000 em;
      `EMPTY` draws nothing, `NOTDEF` copies the .notdef box.
    shared: extra glyph name -> codepoints all mapped to that one glyph (drawn as
      `NOTDEF` shifted: a placeholder that is not the .notdef itself).
  """
  names = {cp: f"g{cp:X}" for cp in glyphs}
  outlines = {".notdef": _glyph(NOTDEF)}
  outlines.update({names[cp]: _glyph(r) for cp, r in glyphs.items()})
  cmap = {cp: names[cp] for cp in glyphs}
  for name, cps in (shared or {}).items():
    outlines[name] = _glyph(((300, 300, 700, 700),))
    cmap.update({cp: name for cp in cps})
  fb = FontBuilder(EM, isTTF=True)
  fb.setupGlyphOrder(list(outlines))
  fb.setupCharacterMap(cmap)
  fb.setupGlyf(outlines)
  fb.setupHorizontalMetrics({name: (EM, 0) for name in outlines})
  fb.setupHorizontalHeader(ascent=880, descent=-120)
  fb.setupNameTable({"familyName": family, "styleName": "Regular"})
  fb.setupOS2(sTypoAscender=880, sTypoDescender=-120, usWinAscent=880,
              usWinDescent=120)
  fb.setupPost()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fb.save(path)
  return path
