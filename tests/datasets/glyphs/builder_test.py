"""The glyph builder on synthetic fonts: filters, split, names, determinism, the tfrecord source."""

import collections
import os

from absl.testing import absltest
import tensorflow as tf

from kc_keras.configs import data as data_config
from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.dataloaders.sources import tfrecord
from kc_keras.datasets.glyphs import builder
from kc_keras.datasets.glyphs import faces as faces_lib
from kc_keras.datasets.glyphs import packages
from kc_keras.datasets.glyphs import sizes
from kc_keras.datasets.glyphs import writer
import synthetic_fonts as fonts

CPS = tuple(range(0x4E00, 0x4E08))
# U+4E00..U+4E03 under radical 1, U+4E04..U+4E07 (and U+4E08) under radical 2.
RADICALS = {cp: 1 if cp < 0x4E04 else 2 for cp in CPS + (0x4E08,)}
SIZE = sizes.GlyphSize(name="glyphs_test", packages=(), main_block_only=True,
                       min_designs=3, eval_families=("Eval",), cjk_verticals=2)


def _script_of(cp):
  del cp
  return "Han"


def _make_faces(root):
  """Four fonts: a held-out design, two training designs, and a copy of one of them.

  "Train B" has no ink for U+4E01 and draws U+4E02 as its .notdef box; "Train A"
  alone maps U+4E08; "Train A (copy)" is Train A's outlines under another name
  (it sorts after Train A, so it is the copy dropped).
  """
  design = lambda d: {cp: fonts.design_rects(cp, d) for cp in CPS}
  train_b = design(2) | {0x4E01: fonts.EMPTY, 0x4E02: fonts.NOTDEF}
  paths = [
      fonts.make_font(os.path.join(root, "eval.ttf"), "Eval Serif", design(0)),
      fonts.make_font(os.path.join(root, "a.ttf"), "Train A",
                      design(1) | {0x4E08: fonts.design_rects(0x4E08, 1)}),
      fonts.make_font(os.path.join(root, "b.ttf"), "Train B", train_b),
      fonts.make_font(os.path.join(root, "copy.ttf"), "Train A (copy)", design(1)),
  ]
  return [f for p in paths for f in faces_lib.read_faces(p, package="")]


def _designs(output_dir):
  with open(os.path.join(output_dir, "designs.tsv"), encoding="utf-8") as f:
    header, *rows = [line.rstrip("\n").split("\t") for line in f]
  return {row[2]: dict(zip(header, row)) for row in rows}


class GlyphBuilderTest(tf.test.TestCase):

  def _build(self, name="out", **kwargs):
    root = self.create_tempdir().full_path
    out = os.path.join(root, name)
    manifest = builder.build(SIZE, out, faces=_make_faces(os.path.join(root, "fonts")),
                             radicals=RADICALS, script_of=_script_of,
                             log=lambda line: None, **kwargs)
    return out, manifest

  def test_filters_and_counts(self):
    out, manifest = self._build()
    counts = manifest["counts"]
    # U+4E01 and U+4E02 keep 2 designs (< 3), U+4E08 has one: 6 classes remain.
    self.assertEqual(counts["candidate_codepoints"], 9)
    self.assertEqual(counts["classes"], 6)
    self.assertEqual(counts["classes_too_few_designs"], 3)
    self.assertEqual(counts["empty"], 1)
    self.assertEqual(counts["notdef_lookalike"], 1)
    self.assertEqual(counts["copied_design"], 8)
    self.assertEqual((counts["train_images"], counts["eval_images"]), (12, 6))
    designs = _designs(out)
    self.assertEqual(designs["Eval Serif"]["split"], "eval")
    self.assertEqual(designs["Eval Serif"]["design"], "0")  # eval families first
    # The copy is dropped for every character it draws, and has no image.
    self.assertEqual(designs["Train A (copy)"]["rendered"], "8")
    self.assertEqual(designs["Train A (copy)"]["copied_design"], "8")
    self.assertEqual(designs["Train A (copy)"]["train_images"], "0")
    self.assertEqual(designs["Train B"]["empty"], "1")
    self.assertEqual(designs["Train B"]["notdef_lookalike"], "1")
    self.assertEqual(designs["Train A"]["train_images"], "6")

  def test_names_hierarchy_and_split(self):
    out, manifest = self._build()
    h = hierarchy_lib.Hierarchy.load(os.path.join(out, "hierarchy.json"))
    self.assertEqual(h.class_names, ("U+4E00", "U+4E03", "U+4E04", "U+4E05",
                                     "U+4E06", "U+4E07"))
    self.assertEqual(h.vertical_names, ("cjk_radicals_001-001",
                                        "cjk_radicals_002-002"))
    self.assertEqual(h.class_to_vertical, (0, 0, 1, 1, 1, 1))
    self.assertEqual(manifest["vertical_sizes"],
                     {"cjk_radicals_001-001": 2, "cjk_radicals_002-002": 4})
    self.assertEqual(builder.class_name(0x20000), "U+20000")
    self.assertEqual(builder.display_name("U+4E00"), "\u4e00")
    # Every class has eval images; eval images come from the eval family only.
    per_split = {}
    for split in ("train", "eval"):
      labels = collections.Counter()
      for record in tf.data.TFRecordDataset(
          sorted(tf.io.gfile.glob(os.path.join(out, f"{split}-*.tfrecord")))):
        ex = tf.train.Example.FromString(record.numpy())
        feature = ex.features.feature
        labels[feature["image/class/label"].int64_list.value[0]] += 1
        design = feature[writer.DESIGN_KEY].int64_list.value[0]
        self.assertEqual(design == 0, split == "eval")
      per_split[split] = labels
    self.assertEqual(per_split["eval"], {c: 1 for c in range(6)})
    self.assertEqual(per_split["train"], {c: 2 for c in range(6)})

  def test_same_fonts_same_bytes_and_fingerprint(self):
    out_a, manifest_a = self._build("a")
    out_b, manifest_b = self._build("b")
    self.assertEqual(manifest_a["fingerprint"], manifest_b["fingerprint"])
    self.assertEqual(sorted(os.listdir(out_a)), sorted(os.listdir(out_b)))
    for name in os.listdir(out_a):
      with open(os.path.join(out_a, name), "rb") as fa, \
           open(os.path.join(out_b, name), "rb") as fb:
        self.assertEqual(fa.read(), fb.read(), name)
    _, manifest_c = self._build("c", seed=1)  # another record order
    self.assertNotEqual(manifest_a["fingerprint"], manifest_c["fingerprint"])

  def test_tfrecord_source_reads_it(self):
    out, _ = self._build(examples_per_shard=5)
    self.assertEqual(sorted(n for n in os.listdir(out) if n.startswith("train")),
                     [f"train-0000{i}-of-00003.tfrecord" for i in range(3)])
    config = data_config.TFRecordConfig(
        train_pattern=os.path.join(out, "train-*.tfrecord"),
        eval_pattern=os.path.join(out, "eval-*.tfrecord"),
        hierarchy_file=os.path.join(out, "hierarchy.json"), image_size=32,
        channels=1)
    source = tfrecord.TFRecordSource(config)
    self.assertEqual(source.num_examples("train"), 12)
    self.assertEqual(source.num_examples("eval"), 6)
    element = next(iter(source.raw_dataset("eval").map(source.decode)))
    self.assertEqual(element["image"].shape, (32, 32, 1))
    self.assertAllInRange(element["image"], 0.0, 1.0)
    self.assertGreater(float(tf.reduce_max(element["image"])), 0.99)

  def test_missing_packages_are_named(self):
    size = sizes.get_size("glyphs_small")
    with self.assertRaises(packages.MissingPackagesError) as caught:
      builder.discover_faces(
          size, is_installed=lambda p: p not in ("fonts-droid-fallback",
                                                 "unicode-data"))
    self.assertEqual(caught.exception.missing,
                     ("fonts-droid-fallback", "unicode-data"))
    self.assertIn("apt-get install -y fonts-droid-fallback unicode-data",
                  str(caught.exception))
    with self.assertRaisesRegex(KeyError, "glyphs_100k, glyphs_21k, glyphs_small"):
      sizes.get_size("glyphs_1k")


if __name__ == "__main__":
  absltest.main()
