"""`glyphs_small` from its three real font packages: exact counts and a stable fingerprint."""

import os
import pathlib
import re

from absl.testing import absltest
import pytest

from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.datasets.glyphs import builder
from kc_keras.datasets.glyphs import packages
from kc_keras.datasets.glyphs import sizes

SIZE = sizes.get_size("glyphs_small")
CI_RUN = pathlib.Path(os.path.realpath(__file__)).parents[3] / ".ci" / "run"


def _require_packages():
  missing = [p for p in SIZE.required_packages if not packages.dpkg_installed(p)]
  if missing:
    pytest.skip("glyphs_small needs Debian packages that are not installed: "
                f"apt-get install -y {' '.join(missing)} (.ci/run installs them)")


class SmallSubsetTest(absltest.TestCase):

  def test_ci_installs_exactly_the_required_packages(self):
    if not CI_RUN.exists():
      pytest.skip(f"{CI_RUN} is not in this checkout")
    match = re.search(r"^GLYPH_PACKAGES=\(([^)]*)\)", CI_RUN.read_text(), re.M)
    self.assertIsNotNone(match, "GLYPH_PACKAGES=(...) not found in .ci/run")
    self.assertEqual(sorted(match.group(1).split()), sorted(SIZE.required_packages))

  def test_build_twice(self):
    _require_packages()
    root = self.create_tempdir().full_path
    a = builder.build(SIZE, os.path.join(root, "a"), log=lambda line: None)
    b = builder.build(SIZE, os.path.join(root, "b"), log=lambda line: None)
    self.assertEqual(a["fingerprint"], b["fingerprint"])
    # Measured with the Debian 12 packages fonts-arphic-gbsn00lp 2.11-16,
    # fonts-arphic-gkai00mp 2.11-16, fonts-droid-fallback 1:6.0.1r16-1.1.
    counts = a["counts"]
    self.assertEqual(
        (counts["candidate_codepoints"], counts["classes"], counts["verticals"],
         counts["train_images"], counts["eval_images"]),
        (654, 202, 4, 404, 202))
    h = hierarchy_lib.Hierarchy.load(os.path.join(root, "a", "hierarchy.json"))
    self.assertEqual(h.class_names[0], "U+4E00")
    self.assertEqual(list(h.vertical_sizes), [51, 49, 51, 51])
    self.assertEqual(h.vertical_names, ("cjk_radicals_001-057", "cjk_radicals_060-085",
                                        "cjk_radicals_086-134", "cjk_radicals_140-214"))


if __name__ == "__main__":
  absltest.main()
