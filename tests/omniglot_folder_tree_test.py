"""Tests for scripts/omniglot_folder_tree.py: the registered split, as a folder tree."""

import importlib.util
import os

import numpy as np
from PIL import Image

from kc_keras.dataloaders import hierarchy as hierarchy_lib

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "scripts", "omniglot_folder_tree.py")


def _script():
  spec = importlib.util.spec_from_file_location("omniglot_folder_tree", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_drawers_split_and_alphabets_become_verticals(tmp_path):
  src = tmp_path / "src"
  os.makedirs(src)
  rng = np.random.default_rng(0)
  # 2 + 1 characters, 20 drawers, as the npz files hold them (True = paper).
  for name, n in (("images_background.npz", 2), ("images_evaluation.npz", 1)):
    np.savez(src / name, images=rng.random((n, 20, 5, 5)) > 0.1)
  (src / "alphabet_ranges.tsv").write_text("1\t2\tA b\n3\t3\tC\n")
  assert _script().write_tree(str(src), str(tmp_path / "out")) == 60
  train = hierarchy_lib.Hierarchy.from_folder_tree(str(tmp_path / "out/train"))
  assert train.vertical_names == ("A b", "C")
  assert train.class_names == ("A b-01", "A b-02", "C-01")
  assert sorted(os.listdir(tmp_path / "out/train/C/C-01")) == [
      f"{d:02d}.png" for d in range(15)]
  assert sorted(os.listdir(tmp_path / "out/eval/C/C-01")) == [
      f"{d:02d}.png" for d in range(15, 20)]
  # Character 3 is row 0 of the second file; white paper is 255.
  expected = np.load(src / "images_evaluation.npz")["images"][0, 17]
  pixels = np.asarray(Image.open(tmp_path / "out/eval/C/C-01/17.png"))
  np.testing.assert_array_equal(pixels, expected.astype(np.uint8) * 255)
