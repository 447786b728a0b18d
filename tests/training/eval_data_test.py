"""--mode=eval on another test set (`eval_data=folder:DIR`): names matched, metrics by hand."""

import json
import os
import types

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.dataloaders import image_decoding
from kc_keras.training import experiment_runner
from kc_keras.training import modes
from kc_keras.training import restore as restore_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(REPO, "official_configs", "generalist_demo_smoke.yaml")
SIZE = 16
# Two verticals of four classes, names with spaces, punctuation and non-ASCII.
TREE = {
    "Wild animals": ["café noir", "lion de Zürich", "owl", "Ωmega moth"],
    "Pflanzen & Bäume": ["große Eiche", "ficus", "fern", "日本の松"],
}
# The eval set: a subset of the classes (one vertical only partly present).
EVAL = {"Wild animals": {"café noir": 2, "owl": 1, "Ωmega moth": 2},
        "Pflanzen & Bäume": {"日本の松": 2}}


def _write_tree(root, counts, seed):
  """PNG images of a class colour plus noise (one RGBA per class)."""
  rng = np.random.RandomState(seed)
  for v, (vertical, classes) in enumerate(sorted(counts.items())):
    for c, (name, count) in enumerate(sorted(classes.items())):
      folder = os.path.join(root, vertical, name)
      os.makedirs(folder)
      colour = np.array([60 + 120 * v, 40 * c, 255 - 40 * c])
      for i in range(count):
        pixels = np.clip(colour + rng.randint(-20, 21, (SIZE, SIZE, 3)), 0, 255)
        if i == 0:
          alpha = np.full((SIZE, SIZE, 1), 255)
          alpha[:4] = 0
          pixels = np.concatenate([pixels, alpha], -1)
        Image.fromarray(pixels.astype(np.uint8)).save(
            os.path.join(folder, f"image {i}.png"))


def _params(train_dir):
  return experiment_runner.parse_configuration(
      types.SimpleNamespace(experiment="kc_generalist_demo", config_file=[SMOKE],
                            params_override=None, tpu=None),
      extra_overrides=[{
          "task": {"data": {"source": "folder", "folder": {
              "train_dir": train_dir, "image_size": SIZE}},
                   "train_batch_size": 8},
          "trainer": {"train_steps": 4, "steps_per_loop": 2,
                      "checkpoint_interval": 4},
      }])


def _average_precision(scores, positive):
  """Mean over positives of the precision at their rank (no ties here)."""
  order = np.argsort(-scores)
  hits = positive[order]
  ranks = np.flatnonzero(hits) + 1
  return np.mean(np.arange(1, len(ranks) + 1) / ranks)


class MatchingTest(tf.test.TestCase):
  """Refusals come from the run's hierarchy alone, before any model is built."""

  def setUp(self):
    super().setUp()
    self.model_dir = self.create_tempdir().full_path
    train = os.path.join(self.create_tempdir().full_path, "train")
    _write_tree(train, {v: {c: 1 for c in cs} for v, cs in TREE.items()}, 0)
    hierarchy_lib.Hierarchy.from_folder_tree(train).save(
        os.path.join(self.model_dir, restore_lib.HIERARCHY_FILE))
    self.params = _params(train)

  def _eval_tree(self, counts):
    root = os.path.join(self.create_tempdir().full_path, "new photos")
    _write_tree(root, counts, 1)
    return "folder:" + root

  def test_classes_are_matched_by_name(self):
    source = modes.eval_data_source(self.params, self.model_dir,
                                    self._eval_tree(EVAL))
    names = source.hierarchy.class_names
    got = [(os.path.basename(os.path.dirname(p)), names[c])
           for p, c in source.files("eval")]
    self.assertEqual([n for n, _ in got], [n for _, n in got])
    self.assertEqual(len(got), 7)

  def test_unknown_class_is_refused_naming_it(self):
    data = self._eval_tree({"Wild animals": {"owl": 1, "unicorn": 1}})
    with self.assertRaisesRegex(hierarchy_lib.HierarchyError,
                                r"class 'unicorn'.* not in the hierarchy"):
      modes.evaluate(self.params, self.model_dir, eval_data=data)

  def test_class_under_another_vertical_is_refused_naming_both(self):
    data = self._eval_tree({"Pflanzen & Bäume": {"owl": 1}})
    with self.assertRaisesRegex(
        hierarchy_lib.HierarchyError,
        r"'owl' is under vertical 'Pflanzen & Bäume'.*puts it in 'Wild animals'"):
      modes.evaluate(self.params, self.model_dir, eval_data=data)

  def test_bad_eval_data_values_are_refused(self):
    for bad, message in (("zip:/x", "use folder:DIR"), ("folder:", "use folder:DIR"),
                         ("folder:/no/such/dir", "not found")):
      with self.assertRaisesRegex(ValueError, message):
        modes.evaluate(self.params, self.model_dir, eval_data=bad)
    with self.assertRaisesRegex(FileNotFoundError, "trained run"):
      modes.evaluate(self.params, self.create_tempdir().full_path,
                     eval_data=self._eval_tree(EVAL))

  def test_eval_data_only_with_mode_eval(self):
    with self.assertRaisesRegex(ValueError, "--mode=eval only"):
      experiment_runner.run(self.params, "train_and_eval", self.model_dir,
                            eval_data="folder:/x")

  def test_metrics_file_name(self):
    self.assertEqual(
        os.path.basename(modes.other_eval_metrics_path(
            self.model_dir, self._eval_tree({"Wild animals": {"owl": 1}}))),
        "eval_metrics_new_photos.json")


@pytest.mark.slow  # trains a tiny run: about 30 s on 2 cores
class EvalDataTest(tf.test.TestCase):

  def test_metrics_equal_hand_computed_from_logits(self):
    model_dir = self.create_tempdir().full_path
    base = self.create_tempdir().full_path
    train = os.path.join(base, "train")
    _write_tree(train, {v: {c: 3 for c in cs} for v, cs in TREE.items()}, 0)
    params = _params(train)
    modes.train(params, model_dir, verbose=False)
    eval_root = os.path.join(base, "zweite Domäne")
    _write_tree(eval_root, EVAL, 1)
    data = "folder:" + eval_root

    with self.assertLogs("absl", level="INFO") as logs:
      metrics = modes.evaluate(params, model_dir, eval_data=data)
    # The eval folder has transparent images: said once, not once per image.
    alpha_lines = [r for r in logs.output if "transparency" in r]
    self.assertLen(alpha_lines, 1)
    self.assertIn("alpha_background=[1.0, 1.0, 1.0]", alpha_lines[0])
    path = os.path.join(model_dir, "eval_metrics_zweite_Dom_ne.json")
    with open(path) as f:
      self.assertEqual(json.load(f)["num_examples"], 7)
    # The run's own eval report is not written by an eval on other data.
    self.assertFalse(os.path.exists(os.path.join(model_dir, modes.EVAL_METRICS_FILE)))
    self.assertEqual(metrics["classes_present"], 4)
    self.assertEqual(metrics["eval_data"], data)

    # By hand: the checkpoint's logits on the decoded eval images.
    source = modes.eval_data_source(params, model_dir, data)
    session = modes.Session(params, model_dir, source=source)
    model = session.build_model()
    restore_lib.restore_model_weights(model, model_dir)
    files = source.files("eval")
    images = tf.stack([
        image_decoding.decode_and_resize(tf.io.read_file(p), SIZE, 3)
        for p, _ in files])
    logits = model(images, training=False).numpy().astype(np.float64)
    labels = np.array([c for _, c in files])
    h = source.hierarchy
    c2v = np.asarray(h.class_to_vertical)
    ranked = np.argsort(-logits, axis=1)
    self.assertEqual(metrics["top1"], np.mean(ranked[:, 0] == labels))
    self.assertEqual(metrics["top5"],
                     np.mean([y in r[:5] for y, r in zip(labels, ranked)]))
    expected_top1, expected_ap = {}, {}
    for v in sorted(set(c2v[labels])):
      rows = c2v[labels] == v
      expected_top1[h.vertical_names[v]] = np.mean(ranked[rows, 0] == labels[rows])
      present = sorted(set(labels[rows]))
      expected_ap[h.vertical_names[v]] = np.mean([
          _average_precision(logits[rows, c], labels[rows] == c) for c in present])
    self.assertEqual(metrics["per_vertical_top1"], expected_top1)
    self.assertEqual(set(metrics["per_vertical_ap"]), set(expected_ap))
    for name, ap in expected_ap.items():
      self.assertAlmostEqual(metrics["per_vertical_ap"][name], ap, places=12)
    self.assertAlmostEqual(metrics["mpvap"], np.mean(list(expected_ap.values())),
                           places=12)

    # An explicit output path.
    out = os.path.join(base, "reports", "new.json")
    again = modes.evaluate(params, model_dir, eval_data=data, output_path=out)
    with open(out) as f:
      self.assertEqual(json.load(f)["top1"], again["top1"])


if __name__ == "__main__":
  tf.test.main()
