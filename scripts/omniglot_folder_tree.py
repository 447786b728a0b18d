"""Writes Omniglot as a folder tree of PNGs, to try the own-data command on real images.

    .venv/bin/python scripts/omniglot_folder_tree.py ../shared/data/omniglot runs/omniglot_tree

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

from kc_keras.configs import data as data_cfg
from kc_keras.dataloaders.sources import omniglot


def write_tree(source_dir: str, output_dir: str) -> int:
  """Writes the tree; returns the number of images written.

  The files are read as the Omniglot source reads them (checksums where a
  `.sha256` is beside a file, alphabet ranges validated) and split by drawer as
  the registered experiments split them (`OmniglotConfig`'s drawers).

  Args:
    source_dir: the folder with the two npz files and `alphabet_ranges.tsv`.
    output_dir: where `train/` and `eval/` are written.

  Raises:
    omniglot.OmniglotError: a missing or corrupt file, or malformed ranges.
  """
  omniglot.verify_checksums(source_dir)
  rows = omniglot.read_alphabet_ranges(
      os.path.join(source_dir, omniglot.RANGES_FILE))
  images = np.concatenate(
      [np.load(os.path.join(source_dir, f))["images"] for f in omniglot.FILES])
  train_drawers = set(data_cfg.OmniglotConfig().train_drawers)
  written = 0
  for start, end, alphabet in rows:
    for k, class_id in enumerate(range(start - 1, end), start=1):
      for drawer, image in enumerate(images[class_id]):
        split = "train" if drawer in train_drawers else "eval"
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
