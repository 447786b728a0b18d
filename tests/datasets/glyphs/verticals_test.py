"""Radical ranges, Hangul leads and scripts as verticals; Unihan parsing."""

import bz2
import os

from absl.testing import absltest
import pytest

from kc_keras.datasets.glyphs import verticals


class MergeConsecutiveTest(absltest.TestCase):

  def test_cuts_at_nearest_cumulative_target(self):
    # Non-empty keys 0,1,2,3,4,6 with cumulative 5,6,7,8,12,15; targets 5 and 10:
    # cut after key 0 (5), then after key 3 (8 and 12 tie at distance 2: smaller k).
    self.assertEqual(verticals.merge_consecutive([5, 1, 1, 1, 4, 0, 3], 3),
                     [(0, 0), (1, 3), (4, 6)])

  def test_large_key_alone_and_fewer_keys_than_groups(self):
    self.assertEqual(verticals.merge_consecutive([1, 10, 1, 1], 3),
                     [(0, 0), (1, 1), (2, 3)])
    self.assertEqual(verticals.merge_consecutive([0, 2, 0, 3], 5), [(1, 1), (3, 3)])

  def test_rejects_nothing_to_merge(self):
    with self.assertRaisesRegex(ValueError, "positive count"):
      verticals.merge_consecutive([0, 0], 2)
    with self.assertRaisesRegex(ValueError, "groups must be >= 1"):
      verticals.merge_consecutive([1], 0)


class AssignTest(absltest.TestCase):

  def test_cjk_hangul_and_scripts(self):
    radicals = {0x4E00: 1, 0x4E59: 5, 0x6C34: 85, 0x6C38: 85}
    scripts = {0x41: "Latin", 0x42: "Latin", 0x3B1: "Greek", 0x3042: "Hiragana",
               0x30A2: "Katakana", 0x30: "Common"}
    hangul = [0xAC00, 0xB098, 0xD7A3]  # 가 (kiyeok), 나 (nieun), 힣 (hieuh)
    cps = sorted(list(radicals) + list(scripts) + hangul)
    v = verticals.assign(cps, radicals, scripts.get, cjk_verticals=2,
                         min_script_classes=2)
    # 4 CJK classes in 2 verticals (mean 2): 3 Hangul classes -> round(1.5) = 2
    # runs; leads 0, 2, 18 have cumulative 1, 2, 3, target 1.5: 1 and 2 tie, the
    # cut goes after lead 0.
    self.assertEqual(v.names, (
        "cjk_radicals_001-005", "cjk_radicals_085-085",
        "hangul_kiyeok-kiyeok", "hangul_nieun-hieuh",
        "script_kana", "script_latin", "script_other"))
    self.assertEqual([v.of[cp] for cp in (0x4E00, 0x4E59, 0x6C34, 0xAC00, 0xB098,
                                          0xD7A3, 0x3042, 0x30A2, 0x41, 0x3B1, 0x30)],
                     [0, 0, 1, 2, 3, 3, 4, 4, 5, 6, 6])


class UnihanTest(absltest.TestCase):

  def test_reads_first_kRSUnicode_value(self):
    path = os.path.join(self.create_tempdir().full_path, "Unihan.txt.bz2")
    with bz2.open(path, "wt", encoding="utf-8") as f:
      f.write("# comment\nU+4E00\tkIRG_GSource\tG0-523B\nU+4E00\tkRSUnicode\t1.0\n"
              "U+8BA0\tkRSUnicode\t149'.2\nU+4E28\tkRSUnicode\t2.0 2.1\n")
    self.assertEqual(verticals.read_radicals(path),
                     {0x4E00: 1, 0x8BA0: 149, 0x4E28: 2})

  def test_installed_unihan(self):
    if not os.path.exists(verticals.UNIHAN_IRG_SOURCES):
      pytest.skip(f"{verticals.UNIHAN_IRG_SOURCES} not found: apt-get install -y "
                  "unicode-data")
    radicals = verticals.read_radicals()
    self.assertEqual((radicals[0x4E00], radicals[0x6C34], radicals[0x9F9C]),
                     (1, 85, 213))
    main = {radicals[cp] for cp in range(0x4E00, 0xA000) if cp in radicals}
    self.assertEqual(main, set(range(1, 215)))
    script_of = verticals.read_scripts()
    self.assertEqual([script_of(cp) for cp in (0x41, 0x3B1, 0x4E00, 0xAC00, 0x10FFFF)],
                     ["Latin", "Greek", "Han", "Hangul", "Unknown"])


if __name__ == "__main__":
  absltest.main()
