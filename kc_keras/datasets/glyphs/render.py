"""Renders one codepoint of one face into a centred grayscale bitmap (ink = 255)."""

import numpy as np
from PIL import Image
from PIL import ImageFont

from kc_keras.datasets.glyphs import faces as faces_lib

# The font size is this fraction of the image side: CJK glyphs fill about 0.9 em,
# so a 32 px image gets a 28 px em with a little margin.
EM_FRACTION = 0.875
# Codepoints tried, in order, to draw a face's .notdef glyph (glyph 0): FreeType
# draws glyph 0 for a codepoint the cmap does not map.
NOTDEF_PROBES = (0x10FFFD, 0x10FFFC, 0xFFFFD, 0xE000)


class GlyphRenderer:
  """Draws codepoints of one face at a fixed size, centred on their ink box.

  The glyph is drawn at `round(image_size * em_fraction)` px (FreeType, antialiased,
  no shaping), its bounding box is centred in an `image_size` square (a box larger
  than the square is cropped about its centre). Size differences between glyphs are
  kept (nothing is rescaled to fill the square).

  Args:
    face: the `faces.Face` to draw.
    image_size: side of the square image in pixels.
    em_fraction: font size / image side.

  Raises:
    OSError: FreeType cannot open the face.
  """

  def __init__(self, face: faces_lib.Face, image_size: int,
               em_fraction: float = EM_FRACTION):
    self.face = face
    self.image_size = int(image_size)
    self.em_fraction = float(em_fraction)
    self._font = ImageFont.truetype(
        face.path, size=max(1, round(self.image_size * self.em_fraction)),
        index=face.index, layout_engine=ImageFont.Layout.BASIC)
    self._notdef = None

  def render(self, codepoint: int) -> np.ndarray:
    """`uint8 [S, S]` bitmap of `codepoint`, ink 255 on 0 (all zero when no ink).

    Args:
      codepoint: a Unicode scalar value.

    Raises:
      OSError: FreeType cannot draw the glyph (e.g. "invalid opcode" in its
        hinting program).
    """
    size = self.image_size
    out = np.zeros((size, size), np.uint8)
    mask, _ = self._font.getmask2(chr(codepoint), mode="L")
    w, h = mask.size
    if w == 0 or h == 0:
      return out
    # getmask2 returns Pillow's core image; `_new` wraps it without a copy.
    ink = np.asarray(Image.Image()._new(mask))  # pylint: disable=protected-access
    # The mask spans the line box; keep the ink box only.
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
      return out
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = ink.shape
    # Crop about the centre where the glyph is larger than the square.
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    ink = ink[top:top + size, left:left + size]
    h, w = ink.shape
    y, x = (size - h) // 2, (size - w) // 2
    out[y:y + h, x:x + w] = ink
    return out

  @property
  def notdef(self) -> np.ndarray:
    """The face's `.notdef` glyph, drawn like `render` (all zero if it has no ink)."""
    if self._notdef is None:
      probe = next((c for c in NOTDEF_PROBES if c not in self.face.codepoints),
                   None)
      self._notdef = np.zeros((self.image_size,) * 2, np.uint8)
      if probe is not None:
        try:
          self._notdef = self.render(probe)
        except OSError:  # a broken .notdef program: nothing to compare with
          pass
    return self._notdef
