"""Faces, rendering and the glyph filters (empty, .notdef look-alike, placeholder, copy)."""

import os

from absl.testing import absltest
import numpy as np

from kc_keras.datasets.glyphs import dedup
from kc_keras.datasets.glyphs import faces as faces_lib
from kc_keras.datasets.glyphs import render
import synthetic_fonts as fonts


class FiltersTest(absltest.TestCase):

  def test_is_empty_counts_pixels_at_ink_level(self):
    bitmap = np.zeros((32, 32), np.uint8)
    self.assertTrue(dedup.is_empty(bitmap))
    bitmap[0, 0] = 255
    bitmap[0, 1] = 127  # below INK_LEVEL
    self.assertTrue(dedup.is_empty(bitmap))
    bitmap[0, 1] = 128
    self.assertFalse(dedup.is_empty(bitmap))

  def test_distinct_keeps_first_of_each_design(self):
    a = np.zeros((4, 4), np.uint8)
    a[0] = 200
    b = np.zeros((4, 4), np.uint8)
    b[:, 0] = 200
    near_a = a.copy()
    near_a[1, 0] = 40  # cosine with a = 800 / (400 * sqrt(640000 + 1600) / 200) > 0.95
    self.assertGreater(dedup.cosine(a, near_a), 0.95)
    self.assertAlmostEqual(dedup.cosine(a, b), 0.25)  # one shared pixel of four
    self.assertEqual(dedup.distinct(np.stack([a, near_a, b, a])), [0, 2])
    self.assertEqual(dedup.distinct(np.stack([b, a]), threshold=0.25), [0])
    self.assertEqual(dedup.distinct(np.zeros((0, 4, 4), np.uint8)), [])

  def test_placeholder_codepoints(self):
    cmap = {cp: "box" for cp in range(0x5000, 0x5010)}
    cmap.update({0x41: "A", 0x391: "A", 0x42: "B"})
    self.assertEqual(dedup.placeholder_codepoints(cmap), set(range(0x5000, 0x5010)))
    del cmap[0x500F]  # 15 codepoints on one glyph is not a placeholder
    self.assertEqual(dedup.placeholder_codepoints(cmap), set())


class FacesAndRenderTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    root = self.create_tempdir().full_path
    self.path = fonts.make_font(
        os.path.join(root, "f.ttf"), "Test Family",
        {0x4E00: fonts.design_rects(0x4E00, 0), 0x4E01: fonts.EMPTY,
         0x4E02: fonts.NOTDEF},
        shared={"box": range(0x5000, 0x5010)})

  def test_read_face_and_cmap_without_placeholders(self):
    [face] = faces_lib.read_faces(self.path, package="fonts-test")
    self.assertEqual((face.family, face.style, face.weight, face.italic, face.key),
                     ("Test Family", "Regular", 400, False, "f.ttf#0"))
    self.assertEqual(face.codepoints, frozenset())
    face = faces_lib.with_codepoints(face)
    self.assertEqual(face.codepoints, {0x4E00, 0x4E01, 0x4E02})
    self.assertEqual(face.placeholders, 16)

  def test_one_face_per_family_prefers_upright_regular(self):
    [face] = faces_lib.read_faces(self.path)
    make = lambda **kw: faces_lib.Face(**{**face.__dict__, **kw})
    bold, italic, light = make(weight=700), make(italic=True), make(weight=300)
    other = make(family="Other", weight=900)
    self.assertEqual(faces_lib.one_face_per_family([bold, italic, light, other]),
                     [other, light])  # sorted by family
    self.assertTrue(faces_lib.family_matches("Noto Serif CJK JP", ["noto serif cjk"]))
    self.assertFalse(faces_lib.family_matches("Noto Sans CJK JP", ["Noto Serif"]))

  def test_render_centres_and_finds_empty_and_notdef(self):
    face = faces_lib.with_codepoints(faces_lib.read_faces(self.path)[0])
    renderer = render.GlyphRenderer(face, 32)
    glyph = renderer.render(0x4E00)
    self.assertEqual((glyph.shape, glyph.dtype), ((32, 32), np.uint8))
    rows, cols = np.nonzero(glyph)
    # The ink box is centred: margins differ by at most one pixel.
    self.assertLessEqual(abs(rows.min() - (31 - rows.max())), 1)
    self.assertLessEqual(abs(cols.min() - (31 - cols.max())), 1)
    self.assertTrue(dedup.is_empty(renderer.render(0x4E01)))
    self.assertFalse(dedup.is_empty(renderer.notdef))
    self.assertGreaterEqual(dedup.cosine(renderer.render(0x4E02), renderer.notdef),
                            dedup.SAME_DESIGN_COSINE)
    self.assertLess(dedup.cosine(glyph, renderer.notdef), 0.5)
    np.testing.assert_array_equal(glyph, render.GlyphRenderer(face, 32).render(0x4E00))


if __name__ == "__main__":
  absltest.main()
