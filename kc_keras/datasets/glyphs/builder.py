"""Builds a glyph dataset: faces -> renders -> filters -> classes, verticals, split -> files.

Output directory (read by the `tfrecord` source with `hierarchy_file=hierarchy.json`):
- `train-NNNNN-of-MMMMM.tfrecord`, `eval-...`: PNG glyphs (see `writer.serialize`),
  records in a fixed pseudo-random order (sha256 of seed, codepoint, design);
- `hierarchy.json`: classes `U+XXXX` (with the character as `display_name`) in
  vertical order, verticals from `verticals.assign`;
- `designs.tsv`: one row per face read (design id = row), its split and image counts;
- `manifest.json`: size, thresholds, counts, package versions and `fingerprint`
  (sha256 over every file above). The same installed fonts give the same bytes.
"""

import collections
import dataclasses
import hashlib
import logging
import os
import subprocess
import time
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from kc_keras.datasets.glyphs import dedup
from kc_keras.datasets.glyphs import faces as faces_lib
from kc_keras.datasets.glyphs import packages as packages_lib
from kc_keras.datasets.glyphs import render as render_lib
from kc_keras.datasets.glyphs import sizes as sizes_lib
from kc_keras.datasets.glyphs import verticals as verticals_lib
from kc_keras.datasets.glyphs import writer

FORMAT_VERSION = 1
DEFAULT_IMAGE_SIZE = 32
DEFAULT_EXAMPLES_PER_SHARD = 20000


def class_name(cp: int) -> str:
  """`U+XXXX`: uppercase hex, at least four digits."""
  return f"U+{cp:04X}"


def discover_faces(size: sizes_lib.GlyphSize,
                   is_installed: Callable[[str], bool] = packages_lib.dpkg_installed
                   ) -> list[faces_lib.Face]:
  """Faces of the font files installed by `size.packages` (cmaps not read yet).

  Args:
    size: a registered size.
    is_installed: package check (tests pass a fake).

  Returns:
    Faces in package, file, index order.

  Raises:
    packages.MissingPackagesError: naming every missing package of
      `size.required_packages`.
  """
  packages_lib.require(size.required_packages, size.name, is_installed)
  found = []
  for package in size.packages:
    for path in packages_lib.package_font_files(package):
      found.extend(faces_lib.read_faces(path, package))
  return found


def order_faces(faces: Sequence[faces_lib.Face], eval_families: Sequence[str]
                ) -> tuple[list[faces_lib.Face], list[bool]]:
  """One face per family (`faces.one_face_per_family`), eval families first.

  The order is the dedup priority: a held-out design always keeps its glyph and a
  training copy of it is dropped.

  Returns:
    `(faces, is_eval)`.
  """
  chosen = faces_lib.one_face_per_family(faces)
  is_eval = [faces_lib.family_matches(f.family, eval_families) for f in chosen]
  order = sorted(range(len(chosen)), key=lambda i: (not is_eval[i],))
  return [chosen[i] for i in order], [is_eval[i] for i in order]


@dataclasses.dataclass
class _Class:
  codepoint: int
  designs: list  # (design id, png bytes)


def _record_order_key(seed: int, cp: int, design: int) -> bytes:
  return hashlib.sha256(f"{seed}:{cp}:{design}".encode()).digest()


def _package_versions(names: Sequence[str]) -> dict:
  versions = {}
  for name in sorted(set(names)):
    try:
      out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name],
                           capture_output=True, text=True, check=False)
      versions[name] = out.stdout.strip() if out.returncode == 0 else ""
    except FileNotFoundError:
      versions[name] = ""
  return versions


def build(size: sizes_lib.GlyphSize, output_dir: str, *,
          faces: Optional[Sequence[faces_lib.Face]] = None,
          image_size: int = DEFAULT_IMAGE_SIZE,
          examples_per_shard: int = DEFAULT_EXAMPLES_PER_SHARD,
          seed: int = 0,
          radicals: Optional[Mapping[int, int]] = None,
          script_of: Optional[Callable[[int], str]] = None,
          is_installed: Callable[[str], bool] = packages_lib.dpkg_installed,
          log: Callable[[str], None] = logging.info) -> dict:
  """Renders, filters, splits and writes one glyph dataset.

  Per codepoint, every face whose cmap maps it draws it (`render.GlyphRenderer`);
  glyphs FreeType cannot draw and empty glyphs, .notdef look-alikes and copies of a design kept earlier are dropped
  (`dedup`, thresholds in its docstring). A class is kept when it has at least
  `size.min_designs` distinct designs, at least one from an eval family and at
  least one from a training family; the eval split holds the eval families'
  designs, 'train' the others.

  Args:
    size: what to build (`sizes.SIZES`).
    output_dir: created if needed; existing shards of an earlier build are removed.
    faces: faces to read instead of the size's packages (tests); their cmaps are
      read here.
    image_size: side of the square images.
    examples_per_shard: records per TFRecord file.
    seed: record order seed.
    radicals: codepoint -> radical (default: read from unicode-data).
    script_of: codepoint -> script (default: read from unicode-data).
    is_installed: package check (tests pass a fake).
    log: receives one line per stage.

  Returns:
    The manifest (also written to `manifest.json`).

  Raises:
    packages.MissingPackagesError: the size's packages are not all installed.
    ValueError: no class survives the filters.
  """
  timings = {}
  start = time.perf_counter()
  if faces is None:
    faces = discover_faces(size, is_installed)
  elif radicals is None or script_of is None:
    packages_lib.require((verticals_lib.UNICODE_DATA_PACKAGE,), size.name,
                         is_installed)
  if radicals is None:
    radicals = verticals_lib.read_radicals()
  if script_of is None:
    script_of = verticals_lib.read_scripts()
  ordered, ordered_eval = order_faces(faces, size.eval_families)
  faces, is_eval, renderers, unusable = [], [], [], []
  for face, held_out in zip(ordered, ordered_eval):
    face = faces_lib.with_codepoints(face)
    face = dataclasses.replace(face, codepoints=frozenset(
        cp for cp in face.codepoints if size.wants(cp)))
    if not face.codepoints:
      continue
    try:
      renderer = render_lib.GlyphRenderer(face, image_size)
    except OSError as e:  # e.g. a bitmap-only face without scalable outlines
      unusable.append(f"{face.key} ({face.family}): {e}")
      continue
    faces.append(face)
    is_eval.append(held_out)
    renderers.append(renderer)
  timings["faces_s"] = time.perf_counter() - start
  log(f"{size.name}: {len(faces)} faces ({sum(is_eval)} eval) with candidate "
      f"characters after one face per family, {timings['faces_s']:.1f} s")
  for line in unusable:
    log(f"  face left out, FreeType cannot draw it: {line}")

  candidates = sorted({cp for f in faces for cp in f.codepoints})
  candidates = candidates[::size.codepoint_stride]
  notdefs = np.stack([r.notdef for r in renderers]).reshape(len(faces), -1)
  notdefs = notdefs.astype(np.float32)
  notdefs /= np.maximum(np.linalg.norm(notdefs, axis=1, keepdims=True), 1e-12)
  covering = collections.defaultdict(list)
  for i, f in enumerate(faces):
    for cp in f.codepoints:
      covering[cp].append(i)
  eval_mask = np.asarray(is_eval, bool)

  counts = collections.Counter()
  per_design = np.zeros((len(faces), 4), np.int64)  # rendered, empty, notdef, copy
  classes = []
  t0 = time.perf_counter()
  for n_done, cp in enumerate(candidates):
    idx = np.asarray(covering[cp], np.int64)
    bitmaps = np.zeros((len(idx), image_size, image_size), np.uint8)
    for j, i in enumerate(idx):
      try:
        bitmaps[j] = renderers[i].render(cp)
      except OSError:  # counted, then dropped as an empty glyph
        counts["render_errors"] += 1
    counts["rendered"] += len(idx)
    per_design[idx, 0] += 1
    flat = bitmaps.reshape(len(idx), -1).astype(np.float32)
    ink = np.count_nonzero(flat >= dedup.INK_LEVEL, axis=1)
    empty = ink < dedup.MIN_INK_PIXELS
    unit = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    notdef = ~empty & (np.sum(unit * notdefs[idx], axis=1) >= dedup.SAME_DESIGN_COSINE)
    per_design[idx[empty], 1] += 1
    per_design[idx[notdef], 2] += 1
    counts["empty"] += int(empty.sum())
    counts["notdef_lookalike"] += int(notdef.sum())
    ok = ~empty & ~notdef
    idx, bitmaps = idx[ok], bitmaps[ok]
    kept = dedup.distinct(bitmaps)
    kept_set = set(kept)
    dropped = [j for j in range(len(idx)) if j not in kept_set]
    per_design[idx[dropped], 3] += 1
    counts["copied_design"] += len(dropped)
    idx, bitmaps = idx[kept], bitmaps[kept]
    n_eval = int(eval_mask[idx].sum())
    if len(idx) < size.min_designs:
      counts["classes_too_few_designs"] += 1
    elif n_eval == 0:
      counts["classes_no_eval_design"] += 1
    elif n_eval == len(idx):
      counts["classes_no_train_design"] += 1
    else:
      classes.append(_Class(cp, [(int(i), writer.encode_png(b))
                                 for i, b in zip(idx, bitmaps)]))
    if (n_done + 1) % 5000 == 0:
      log(f"  {n_done + 1}/{len(candidates)} codepoints, {len(classes)} classes, "
          f"{time.perf_counter() - t0:.0f} s")
  timings["render_s"] = time.perf_counter() - t0
  counts["candidate_codepoints"] = len(candidates)
  counts["classes"] = len(classes)
  if not classes:
    raise ValueError(f"{size.name}: no class has {size.min_designs} distinct designs "
                     "with one held out; nothing to write")
  log(f"{size.name}: {len(candidates)} codepoints, {counts['rendered']} glyphs "
      f"rendered in {timings['render_s']:.1f} s; dropped {counts['empty']} empty, "
      f"{counts['notdef_lookalike']} .notdef look-alikes, {counts['copied_design']} "
      f"copies; {len(classes)} classes")

  # Verticals and class ids (each vertical's classes consecutive, by codepoint).
  t0 = time.perf_counter()
  verts = verticals_lib.assign([c.codepoint for c in classes], radicals, script_of,
                               size.cjk_verticals, size.min_script_classes)
  classes.sort(key=lambda c: (verts.of[c.codepoint], c.codepoint))
  train, evals = [], []
  images = np.zeros((len(faces), 2), np.int64)
  for class_id, c in enumerate(classes):
    for design, png in c.designs:
      split = 1 if is_eval[design] else 0
      images[design, split] += 1
      (evals if split else train).append(
          (_record_order_key(seed, c.codepoint, design),
           writer.serialize(png, class_id, c.codepoint, design)))
  os.makedirs(output_dir, exist_ok=True)
  for name in os.listdir(output_dir):
    if name.endswith(".tfrecord") and name.startswith(("train-", "eval-")):
      os.remove(os.path.join(output_dir, name))
  files = []
  for split, records in (("train", train), ("eval", evals)):
    records.sort(key=lambda r: r[0])
    files += writer.write_shards(output_dir, split, [r[1] for r in records],
                                 examples_per_shard)

  hierarchy = {
      "verticals": [{"id": v, "name": n} for v, n in enumerate(verts.names)],
      "classes": [{"id": i, "name": class_name(c.codepoint),
                   "display_name": chr(c.codepoint),
                   "vertical": verts.of[c.codepoint]}
                  for i, c in enumerate(classes)],
  }
  writer.write_json(os.path.join(output_dir, "hierarchy.json"), hierarchy)
  rows = ["design\tsplit\tfamily\tstyle\tpackage\tface\trendered\tempty\t"
          "notdef_lookalike\tcopied_design\ttrain_images\teval_images"]
  for d, f in enumerate(faces):
    rows.append("\t".join(str(x) for x in (
        d, "eval" if is_eval[d] else "train", f.family, f.style, f.package, f.key,
        *per_design[d], *images[d])))
  writer.write_text(os.path.join(output_dir, "designs.tsv"), "\n".join(rows) + "\n")
  files += ["hierarchy.json", "designs.tsv"]
  timings["write_s"] = time.perf_counter() - t0

  vertical_sizes = collections.Counter(verts.of[c.codepoint] for c in classes)
  manifest = {
      "format_version": FORMAT_VERSION,
      "size": size.name,
      "image_size": image_size,
      "channels": 1,
      "ink": "255 on 0",
      "seed": seed,
      "thresholds": {
          "same_design_cosine": dedup.SAME_DESIGN_COSINE,
          "min_ink_pixels": dedup.MIN_INK_PIXELS,
          "ink_level": dedup.INK_LEVEL,
          "placeholder_codepoints": dedup.PLACEHOLDER_CODEPOINTS,
          "em_fraction": render_lib.EM_FRACTION,
      },
      "min_designs": size.min_designs,
      "eval_families": list(size.eval_families),
      "counts": dict(sorted(counts.items())) | {
          "faces": len(faces), "eval_faces": int(sum(is_eval)),
          "faces_unusable": len(unusable),
          "placeholder_codepoints": int(sum(f.placeholders for f in faces)),
          "train_images": len(train), "eval_images": len(evals),
          "verticals": len(verts.names),
      },
      "vertical_sizes": {verts.names[v]: int(vertical_sizes[v])
                         for v in range(len(verts.names))},
      "packages": _package_versions([f.package for f in faces if f.package]),
      "files": sorted(files),
      "fingerprint": writer.fingerprint(output_dir, files),
  }
  writer.write_json(os.path.join(output_dir, "manifest.json"), manifest)
  timings["total_s"] = time.perf_counter() - start
  log(f"{size.name}: wrote {len(train)} train + {len(evals)} eval images, "
      f"{len(verts.names)} verticals to {output_dir} in {timings['total_s']:.1f} s "
      f"(faces {timings['faces_s']:.1f}, render+filter {timings['render_s']:.1f}, "
      f"write {timings['write_s']:.1f}); fingerprint {manifest['fingerprint']}")
  return manifest | {"timings": timings}


def display_name(class_name_: str) -> str:
  """The character of a `U+XXXX` class name, e.g. `display_name("U+4E00") == "一"`."""
  return chr(int(class_name_[2:], 16))

