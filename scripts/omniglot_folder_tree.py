"""Writes Omniglot as a folder tree of PNGs, to try the own-data command on real images.

    python scripts/omniglot_folder_tree.py ../shared/data/omniglot runs/omniglot_tree

writes `train/<alphabet>/<alphabet>-<kk>/<drawer>.png` for drawers 0-14 and
`eval/...` for drawers 15-19 (the split of the registered Omniglot
experiments): 105 x 105 black-on-white PNGs, 24,345 + 8,115 files, about
140 MB. Then (docs/YOUR_DATA.md, "Omniglot as a folder tree"):

    .venv/bin/python -m kc_keras.run_pipeline --pipeline=kc \
      --data=folder:runs/omniglot_tree/train,runs/omniglot_tree/eval \
      --config_file=official_configs/omniglot_folder_tree.yaml \
      --workdir=runs/omniglot_folder
"""

import os
import sys

import numpy as np
from PIL import Image

FILES = ("images_background.npz", "images_evaluation.npz")
TRAIN_DRAWERS = 15


def write_tree(source_dir: str, output_dir: str) -> int:
  """Writes the tree; returns the number of images written.

  Args:
    source_dir: the folder with the two npz files and `alphabet_ranges.tsv`.
    output_dir: where `train/` and `eval/` are written.
  """
  images = np.concatenate(
      [np.load(os.path.join(source_dir, f))["images"] for f in FILES])
  written = 0
  with open(os.path.join(source_dir, "alphabet_ranges.tsv"),
            encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
  for start, end, alphabet in rows:
    for k, class_id in enumerate(range(int(start) - 1, int(end)), start=1):
      for drawer, image in enumerate(images[class_id]):
        split = "train" if drawer < TRAIN_DRAWERS else "eval"
        folder = os.path.join(output_dir, split, alphabet, f"{alphabet}-{k:02d}")
        os.makedirs(folder, exist_ok=True)
        # True = white paper.
        Image.fromarray(image.astype(np.uint8) * 255).save(
            os.path.join(folder, f"{drawer:02d}.png"))
        written += 1
  return written


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit(__doc__)
  print(f"{write_tree(sys.argv[1], sys.argv[2])} images written")
