"""Tests for kc_keras.dataloaders.hierarchy."""

import json
import os

import numpy as np
import tensorflow as tf

from kc_keras.dataloaders.hierarchy import Hierarchy, HierarchyError


def _h():
  return Hierarchy(("a", "b", "c", "d", "e"), ("birds", "cars"), (1, 0, 1, 1, 0))


class HierarchyTest(tf.test.TestCase):

  def test_derived_tables(self):
    h = _h()
    self.assertEqual(h.num_classes, 5)
    self.assertEqual(h.num_verticals, 2)
    self.assertAllEqual(h.vertical_sizes, [2, 3])
    self.assertEqual(h.vertical_sizes.dtype, np.int32)
    self.assertAllEqual(h.classes_of(0), [1, 4])
    self.assertAllEqual(h.classes_of(1), [0, 2, 3])
    self.assertAllEqual(h.local_index, [0, 0, 1, 2, 1])
    self.assertEqual(h.classes_of(1).dtype, np.int32)
    with self.assertRaisesRegex(HierarchyError, "vertical 2"):
      h.classes_of(2)

  def test_subset_uses_local_ids(self):
    sub = _h().subset(1)
    self.assertEqual(sub.class_names, ("a", "c", "d"))
    self.assertEqual(sub.vertical_names, ("cars",))
    self.assertEqual(sub.class_to_vertical, (0, 0, 0))

  def test_fingerprint_is_content_hash(self):
    self.assertEqual(_h().fingerprint, _h().fingerprint)
    self.assertLen(_h().fingerprint, 64)
    other = Hierarchy(("a", "b", "c", "d", "e"), ("birds", "cars"), (1, 0, 1, 0, 0))
    self.assertNotEqual(_h().fingerprint, other.fingerprint)

  def test_validation_names_entries(self):
    with self.assertRaisesRegex(HierarchyError, "duplicate class names: 'a'"):
      Hierarchy(("a", "a"), ("v",), (0, 0))
    with self.assertRaisesRegex(HierarchyError, "duplicate vertical names: 'v'"):
      Hierarchy(("a", "b"), ("v", "v"), (0, 1))
    with self.assertRaisesRegex(HierarchyError, r"'b \(id 1\) -> 5'"):
      Hierarchy(("a", "b"), ("v",), (0, 5))
    with self.assertRaisesRegex(HierarchyError, r"without classes: 'empty \(id 1\)'"):
      Hierarchy(("a", "b"), ("v", "empty"), (0, 0))
    with self.assertRaisesRegex(HierarchyError, "2 entries but there are 3"):
      Hierarchy(("a", "b", "c"), ("v",), (0, 0))

  def test_json_round_trip_and_format(self):
    path = os.path.join(self.get_temp_dir(), "h.json")
    _h().save(path)
    with open(path) as f:
      data = json.load(f)
    self.assertEqual(data["verticals"][1], {"id": 1, "name": "cars"})
    self.assertEqual(data["classes"][0], {"id": 0, "name": "a", "vertical": 1})
    self.assertEqual(Hierarchy.load(path), _h())
    self.assertEqual([f for f in os.listdir(self.get_temp_dir()) if f.endswith(".tmp")], [])

  def test_json_ids_not_dense(self):
    path = os.path.join(self.get_temp_dir(), "bad.json")
    with open(path, "w") as f:
      json.dump({"verticals": [{"id": 0, "name": "v"}],
                 "classes": [{"id": 0, "name": "a", "vertical": 0},
                             {"id": 2, "name": "b", "vertical": 0}]}, f)
    with self.assertRaisesRegex(HierarchyError, "missing 1; unexpected 2"):
      Hierarchy.load(path)

  def test_csv_round_trip(self):
    path = os.path.join(self.get_temp_dir(), "h.csv")
    _h().save(path)
    with open(path) as f:
      lines = f.read().splitlines()
    self.assertEqual(lines[0], "class_id,class_name,vertical_id,vertical_name")
    self.assertEqual(lines[1], "0,a,1,cars")
    self.assertEqual(Hierarchy.load(path), _h())

  def test_csv_errors_name_class(self):
    path = os.path.join(self.get_temp_dir(), "bad.csv")
    head = "class_id,class_name,vertical_id,vertical_name\n"
    cases = [
        (head + "0,a,0,v\n0,a,0,v\n", "class 'a' \\(id 0\\) is listed twice"),
        (head + "0,a,0,v\n0,a,1,w\n", "class 'a' \\(id 0\\) is listed with two verticals"),
        (head + "0,a,0,v\n1,a,1,w\n", "class 'a' is listed with two verticals"),
        (head + "0,a,0,v\n1,b,0,w\n", "vertical id 0 has two names"),
        ("id,name\n0,a\n", "CSV header"),
    ]
    for text, pattern in cases:
      with open(path, "w") as f:
        f.write(text)
      with self.assertRaisesRegex(HierarchyError, pattern):
        Hierarchy.load(path)

  def test_non_utf8_file_is_named(self):
    path = os.path.join(self.get_temp_dir(), "latin1.csv")
    with open(path, "wb") as f:
      f.write("class_id,class_name,vertical_id,vertical_name\n"
              "0,caf\xe9,0,v\n".encode("latin-1"))
    with self.assertRaisesRegex(HierarchyError,
                                rf"^{path}: not UTF-8 text \(byte 51\)"):
      Hierarchy.load(path)

  def test_bad_extension_and_missing(self):
    with self.assertRaisesRegex(HierarchyError, ".json or .csv"):
      _h().save(os.path.join(self.get_temp_dir(), "h.txt"))
    with self.assertRaisesRegex(HierarchyError, "not found"):
      Hierarchy.load(os.path.join(self.get_temp_dir(), "nope.json"))

  def test_from_folder_tree(self):
    root = self.get_temp_dir() + "/tree"
    for v, c in [("zoo", "zebra"), ("zoo", "ant"), ("cars", "vw"), ("cars", "audi")]:
      os.makedirs(os.path.join(root, v, c), exist_ok=True)
    h = Hierarchy.from_folder_tree(root)
    self.assertEqual(h.vertical_names, ("cars", "zoo"))
    self.assertEqual(h.class_names, ("audi", "vw", "ant", "zebra"))
    self.assertEqual(h.class_to_vertical, (0, 0, 1, 1))
    os.makedirs(os.path.join(root, "cars", "ant"))
    with self.assertRaisesRegex(HierarchyError, "class 'ant' appears under two"):
      Hierarchy.from_folder_tree(root)


if __name__ == "__main__":
  tf.test.main()
