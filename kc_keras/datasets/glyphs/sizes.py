"""The registered glyph datasets: which fonts, which characters, which held-out families."""

import dataclasses
import unicodedata

from kc_keras.datasets.glyphs import verticals as verticals_lib

# Fonts read by the small subset (about 10 MB of packages; tests and CI install them).
SMALL_PACKAGES = (
    "fonts-arphic-gbsn00lp",
    "fonts-arphic-gkai00mp",
    "fonts-droid-fallback",
)
# Chinese, Japanese and Korean fonts that install and render from Debian 12. The
# YOz packages are left out: about 120 faces of one kanji design that differ in kana
# and weight only.
CJK_PACKAGES = (
    "fonts-aoyagi-kouzan-t", "fonts-aoyagi-soseki", "fonts-arphic-bkai00mp",
    "fonts-arphic-bsmi00lp", "fonts-arphic-gbsn00lp", "fonts-arphic-gkai00mp",
    "fonts-arphic-ukai", "fonts-arphic-uming", "fonts-babelstone-han", "fonts-baekmuk",
    "fonts-cns11643-kai", "fonts-cns11643-sung", "fonts-cwtex-fs", "fonts-cwtex-heib",
    "fonts-cwtex-kai", "fonts-cwtex-ming", "fonts-cwtex-yen", "fonts-dejima-mincho",
    "fonts-droid-fallback", "fonts-hanazono", "fonts-horai-umefont",
    "fonts-ipaexfont-gothic", "fonts-ipaexfont-mincho", "fonts-ipafont-gothic",
    "fonts-ipafont-mincho", "fonts-ipamj-mincho", "fonts-kiloji", "fonts-klee",
    "fonts-konatu", "fonts-kouzan-mouhitsu", "fonts-lxgw-wenkai",
    "fonts-morisawa-bizud-gothic", "fonts-morisawa-bizud-mincho", "fonts-mplus",
    "fonts-nanum", "fonts-nanum-eco", "fonts-nanum-extra", "fonts-noto-cjk",
    "fonts-noto-cjk-extra", "fonts-oradano-mincho-gsrr", "fonts-sawarabi-gothic",
    "fonts-sawarabi-mincho", "fonts-seto", "fonts-smiley-sans", "fonts-takao-gothic",
    "fonts-takao-mincho", "fonts-umeplus", "fonts-unfonts-core", "fonts-unfonts-extra",
    "fonts-unifont", "fonts-vlgothic", "fonts-wqy-microhei", "fonts-wqy-zenhei",
)
# Other scripts (Latin, Greek, Cyrillic, Arabic, Indic, ...).
WORLD_PACKAGES = (
    "fonts-dejavu-core", "fonts-dejavu-extra", "fonts-freefont-ttf",
    "fonts-liberation", "fonts-noto-core", "fonts-noto-extra",
)

CJK_MAIN = (0x4E00, 0x9FFF)


def is_cjk_main(cp: int) -> bool:
  """CJK Unified Ideographs, the main block U+4E00..U+9FFF."""
  return CJK_MAIN[0] <= cp <= CJK_MAIN[1]


def is_letter_or_number(cp: int) -> bool:
  """A letter or number (general category L* or N*) equal to its NFKC form.

  NFKC leaves out compatibility duplicates of other classes (fullwidth Latin,
  CJK compatibility ideographs, Kangxi radical symbols, circled numbers). The
  Unicode version is that of Python's `unicodedata`.
  """
  ch = chr(cp)
  return (unicodedata.category(ch)[0] in "LN"
          and unicodedata.normalize("NFKC", ch) == ch)


@dataclasses.dataclass(frozen=True)
class GlyphSize:
  """One registered glyph dataset.

  Args:
    name: the `--size` name.
    packages: Debian packages whose font files are read (plus `unicode-data`).
    main_block_only: classes from CJK Unified Ideographs U+4E00..U+9FFF only;
      else every letter/number (`is_letter_or_number`).
    min_designs: a class needs at least this many distinct designs (train + eval).
    eval_families: family-name prefixes whose faces form the 'eval' split.
    cjk_verticals: number of CJK radical-range verticals.
    min_script_classes: a script with fewer classes joins `script_other`.
    codepoint_stride: keep every k-th candidate codepoint (the small subset).
  """

  name: str
  packages: tuple[str, ...]
  main_block_only: bool
  min_designs: int
  eval_families: tuple[str, ...]
  cjk_verticals: int
  min_script_classes: int = 200
  codepoint_stride: int = 1

  @property
  def required_packages(self) -> tuple[str, ...]:
    """`packages` plus `unicode-data` (radicals and scripts)."""
    return self.packages + (verticals_lib.UNICODE_DATA_PACKAGE,)

  def wants(self, cp: int) -> bool:
    """Whether `cp` is a candidate class (before counting designs)."""
    if self.main_block_only:
      return is_cjk_main(cp)
    return is_letter_or_number(cp)


SIZES = {
    size.name: size for size in (
        GlyphSize(
            name="glyphs_small", packages=SMALL_PACKAGES, main_block_only=True,
            min_designs=3, eval_families=("AR PL KaitiM GB",), cjk_verticals=4,
            codepoint_stride=32),
        GlyphSize(
            name="glyphs_21k", packages=CJK_PACKAGES, main_block_only=True,
            min_designs=6,
            eval_families=("HanaMinA", "LXGW WenKai", "Noto Sans CJK"),
            cjk_verticals=22),
        GlyphSize(
            name="glyphs_100k", packages=CJK_PACKAGES + WORLD_PACKAGES,
            main_block_only=False, min_designs=2,
            eval_families=("HanaMin", "LXGW WenKai", "Noto Sans", "UnBatang"),
            cjk_verticals=22),
    )
}


def get_size(name: str) -> GlyphSize:
  """The registered size `name`.

  Raises:
    KeyError: an unknown name, listing the registered ones.
  """
  if name not in SIZES:
    raise KeyError(f"unknown glyph dataset size {name!r}; registered: "
                   f"{', '.join(sorted(SIZES))}")
  return SIZES[name]
