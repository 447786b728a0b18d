"""Tests for the streaming Evaluator (top-k, per-vertical top-1, mpvap)."""

import numpy as np
import tensorflow as tf

from kc_keras.metrics import evaluation

# 4 classes, 2 verticals: classes 0, 1 -> "bird"; 2, 3 -> "fish".
C2V = [0, 0, 1, 1]
SCORES = np.array([
    [0.9, 0.1, 0.3, 0.2],   # img0, label 0 (bird)
    [0.6, 0.05, 0.8, 0.1],  # img1, label 1 (bird)
    [0.1, 0.2, 0.7, 0.5],   # img2, label 2 (fish)
    [0.3, 0.1, 0.6, 0.4],   # img3, label 3 (fish)
    [0.0, 0.0, 0.1, 0.9],   # img4, label 3 (fish)
])
LABELS = np.array([[0], [1], [2], [3], [3]])
# top-1 (argmax): img0 0 ok, img1 2 no, img2 2 ok, img3 2 no, img4 3 ok -> 3/5.
# top-2: img0 {0,2} ok, img1 {2,0} no, img2 {2,3} ok, img3 {2,3} ok,
#   img4 {3,2} ok -> 4/5.
# per-vertical top-1: bird 1/2, fish 2/3.
# AP_bird over img0, img1: class 0 scores [.9, .6] labels [1, 0] -> 1;
#   class 1 scores [.1, .05] labels [0, 1] -> positive at rank 2 -> 1/2;
#   AP_bird = 0.75.
# AP_fish over img2..4: class 2 [.7, .6, .1] labels [1, 0, 0] -> 1;
#   class 3 [.5, .4, .9] labels [0, 1, 1] -> ranks: img4 (+) 1/1, img2 (-),
#   img3 (+) 2/3 -> 5/6; AP_fish = (1 + 5/6) / 2 = 11/12.
# mpvap = (0.75 + 11/12) / 2 = 5/6.
# vertical of the top-1 class: bird -> {bird (img0), fish (img1)};
#   fish -> fish for img2..4 (img3's error stays inside its vertical).
EXPECTED = {
    "top1": 0.6, "top2": 0.8,
    "per_vertical_top1": {"bird": 0.5, "fish": 2.0 / 3.0},
    "per_vertical_ap": {"bird": 0.75, "fish": 11.0 / 12.0},
    "mpvap": 5.0 / 6.0,
    "vertical_confusion": {"bird": {"bird": 1, "fish": 1},
                           "fish": {"fish": 3}},
}


class EvaluatorTest(tf.test.TestCase):

  def _check(self, result):
    for key in ("top1", "top2", "mpvap"):
      self.assertAllClose(result[key], EXPECTED[key], msg=key)
    self.assertEqual(result["vertical_confusion"],
                     EXPECTED["vertical_confusion"])
    for key in ("per_vertical_top1", "per_vertical_ap"):
      self.assertEqual(sorted(result[key]), ["bird", "fish"])
      for name, value in EXPECTED[key].items():
        self.assertAllClose(result[key][name], value, msg=f"{key}[{name}]")

  def test_hand_computed_one_batch(self):
    ev = evaluation.Evaluator(C2V, ["bird", "fish"], top_ks=(1, 2))
    ev.update(SCORES, LABELS)
    result = ev.result()
    self._check(result)
    self.assertEqual(result["num_examples"], 5)

  def test_streaming_batches_and_padding_rows(self):
    ev = evaluation.Evaluator(C2V, ["bird", "fish"], top_ks=(1, 2))
    ev.update(SCORES[:2], LABELS[:2])
    # A padded final batch: the all -1 row is skipped.
    ev.update(np.concatenate([SCORES[2:], np.zeros([1, 4])]),
              np.concatenate([LABELS[2:], [[-1]]]))
    result = ev.result()
    self._check(result)
    self.assertEqual(result["num_skipped"], 1)
    ev.reset()
    self.assertEqual(ev.result()["num_examples"], 0)

  def test_only_own_vertical_scores_are_kept(self):
    ev = evaluation.Evaluator(C2V, top_ks=(1,))
    ev.update(SCORES, LABELS)
    self.assertEqual(ev._vertical_scores[0][0].shape, (2, 2))
    self.assertEqual(ev._vertical_scores[1][0].shape, (3, 2))
    self.assertEqual(sorted(ev.result()["per_vertical_ap"]), [0, 1])

  def test_multi_vertical_example_counts_in_both(self):
    ev = evaluation.Evaluator(C2V, top_ks=(1,))
    # Labels 0 (bird) and 3 (fish); argmax 3 is a label -> top-1 hit in both.
    ev.update([[0.2, 0.1, 0.3, 0.9]], [[0, 3]])
    result = ev.result()
    self.assertEqual(result["top1"], 1.0)
    self.assertEqual(result["per_vertical_top1"], {0: 1.0, 1: 1.0})
    self.assertEqual(result["per_vertical_ap"], {0: 1.0, 1: 1.0})

  def test_top_k_ties_go_to_lower_class(self):
    rank = evaluation.best_label_rank(np.ones([1, 3]), np.array([[1]]))
    self.assertAllEqual(rank, [1])  # class 0 takes the tied first place
    ev = evaluation.Evaluator([0, 0, 1])
    ev.update(np.ones([1, 3]), [[1]])
    self.assertEqual(ev.result()["top1"], 0.0)
    ev = evaluation.Evaluator([0, 0, 1], top_ks=(2,))
    ev.update(np.ones([1, 3]), [[1]])
    self.assertEqual(ev.result()["top2"], 1.0)

  def test_rank_matches_a_stable_sort(self):
    # Position in the order (score descending, class id ascending), the
    # argmax order, computed by sorting: the definition, not the fast count.
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=[50, 30]).astype(np.float32)
    label_ids = rng.integers(0, 30, size=[50, 3])
    label_ids[rng.random([50, 3]) < 0.4] = -1
    label_ids[:, 0] = np.abs(label_ids[:, 0])
    expected = []
    for row, ids in zip(scores, label_ids):
      order = np.lexsort((np.arange(30), -row))
      position = np.argsort(order)
      expected.append(min(position[i] for i in ids if i >= 0))
    self.assertAllEqual(evaluation.best_label_rank(scores, label_ids),
                        expected)

  def test_bad_input(self):
    ev = evaluation.Evaluator(C2V)
    with self.assertRaisesRegex(ValueError, "label id 7"):
      ev.update(SCORES, [[7]] * 5)
    with self.assertRaisesRegex(ValueError, r"\[B, 4\]"):
      ev.update(np.zeros([5, 3]), LABELS)
    with self.assertRaisesRegex(ValueError, "NaN"):
      ev.update(np.full([5, 4], np.nan), LABELS)
    with self.assertRaisesRegex(ValueError, "vertical_names has 1"):
      evaluation.Evaluator(C2V, ["bird"])


if __name__ == "__main__":
  tf.test.main()
