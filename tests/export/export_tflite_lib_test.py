"""Tests for export.export_tflite_lib: every quantization against the Keras network."""

import os
import shutil

from ai_edge_litert.interpreter import Interpreter
import numpy as np
import pytest
import tensorflow as tf

from export import export_tflite_lib as lib
from export import parity_lib
from export import tflite_demo_lib
from export_test_utils import INT8_CALIBRATION_EXAMPLES
from kc_keras.dataloaders import hierarchy as hierarchy_lib
from kc_keras.quantization import floor as floor_lib
from kc_keras.quantization import integer_forms
from kc_keras.utils import files

# Each variant against the Keras network: the largest logit error over the
# eval split. The bounds are at least 3x the error measured on the smoke model
# (none 3e-6, fp16 6e-3, dynamic 1.1e-2, int8 9.4e-2, int8_float_head 9.6e-2,
# int16x8 5.8e-2): an error is set by the quantization grid's step over the
# calibrated ranges, which a few more or fewer training steps barely move.
# Top-1 agreement is not asserted here: on a barely trained model the top two
# logits of some images are closer than one int8 step, so agreement flips with
# the last bit of the float kernels (thread count, CPU). It is a product goal,
# measured on trained models by `export.parity_benchmark` (docs/BENCHMARKS.md).
MAX_LOGIT_DIFF = {"none": 1e-4, "fp16": 2e-2, "dynamic": 5e-2, "int8": 0.5,
                  "int8_float_head": 0.5, "int16x8": 0.2}


def assert_logits_close(logits, reference_logits, quantization):
  """Every logit within the variant's bound; where the Keras top-1 leads by
  more than twice that bound, the file's top-1 is the same class (the bound
  implies it; this pins the class order of the outputs)."""
  bound = MAX_LOGIT_DIFF[quantization]
  error = np.abs(logits - reference_logits)
  assert error.max() <= bound, (quantization, error.max())
  top2 = np.sort(reference_logits, axis=1)[:, -2:]
  clear = top2[:, 1] - top2[:, 0] > 2 * bound
  np.testing.assert_array_equal(logits[clear].argmax(1),
                                reference_logits[clear].argmax(1))


@pytest.mark.parametrize("quantization", lib.QUANTIZATIONS)
def test_parity_with_keras(tflite_model, reference, quantization):
  classifier = tflite_demo_lib.TFLiteClassifier(tflite_model(quantization))
  assert_logits_close(classifier.logits(reference.images), reference.logits,
                      quantization)


def test_int8_is_full_integer(tflite_model):
  interpreter = Interpreter(model_path=tflite_model("int8"))
  runner = interpreter.get_signature_runner()
  assert runner.get_input_details()["images"]["dtype"] == np.int8
  for detail in runner.get_output_details().values():
    assert detail["dtype"] == np.int8
  scale, _ = runner.get_input_details()["images"]["quantization"]
  # Calibrated on [0, 1] training images: 256 steps over that range.
  assert scale == pytest.approx(1.0 / 255.0, rel=0.05)


def test_int8_images_reach_the_first_conv_unrounded(snapped_run, tflite_model,
                                                   tmp_path):
  """small_cnn's input scaling is folded when the first conv's kernel is on
  its int8 grid (input_folding.folded_features): the int8 images (k / 255)
  are padded and convolved; no int8 tensor holds 2x - 1, whose values fall
  between the points of any int8 grid. Off the grid (the plain smoke run)
  the scaling stays an op of its own."""
  _, _, export = snapped_run
  path = str(tmp_path / "snapped_int8.tflite")
  lib.export_tflite(export.version_dir, path, "int8",
                    representative_examples=INT8_CALIBRATION_EXAMPLES)
  ops = _ops(path)
  first_conv = [name for name, _, _ in ops].index("CONV_2D")
  # Zero padding, then the constant border of 0.5 added.
  assert [name for name, _, _ in ops[:first_conv]] == ["PAD", "ADD"]
  assert ops[0][1][0] == np.int8
  plain = _ops(tflite_model("int8"))
  first_conv = [name for name, _, _ in plain].index("CONV_2D")
  assert "PAD" not in [name for name, _, _ in plain[:first_conv]]
  assert any("input_scaling" in outputs[0]
             for _, _, outputs in plain[:first_conv])


def test_quantized_files_are_smaller_and_labels_ship(tflite_model, reference):
  sizes = {q: os.path.getsize(tflite_model(q)) for q in lib.QUANTIZATIONS}
  assert sizes["fp16"] < sizes["none"]
  assert sizes["int8"] < sizes["none"]
  paths = lib.sidecar_paths(tflite_model("int8"))
  h = reference.hierarchy
  assert tflite_demo_lib.read_lines(paths["labels"]) == list(h.class_names)
  assert tflite_demo_lib.read_lines(paths["verticals"]) == [
      h.vertical_names[v] for v in h.class_to_vertical]
  # Written as one set: the manifest lists all three and matches them.
  manifest = files.check_file_set(lib.manifest_path(tflite_model("int8")))
  assert sorted(manifest["files"]) == sorted(
      os.path.basename(p) for p in [tflite_model("int8"), *paths.values()])


def test_bad_quantization_and_failed_write(exported, tmp_path):
  out = str(tmp_path / "m.tflite")
  with pytest.raises(lib.TFLiteExportError, match="int4"):
    lib.export_tflite(exported.version_dir, out, "int4")
  with pytest.raises(lib.TFLiteExportError, match="representative_examples"):
    lib.export_tflite(exported.version_dir, out, "int8",
                      representative_examples=0)
  with pytest.raises(lib.TFLiteExportError, match="no SavedModel"):
    lib.export_tflite(str(tmp_path), out, "none")
  assert os.listdir(tmp_path) == []  # nothing half-written
  other = str(tmp_path / "other")
  module = tf.Module()
  module.f = tf.function(lambda x: x + 1.0,
                         input_signature=[tf.TensorSpec([None], tf.float32)])
  tf.saved_model.save(module, other)
  with pytest.raises(lib.TFLiteExportError, match="tflite_serve_image"):
    lib.export_tflite(other, out, "none")
  assert not os.path.exists(out)


def _ops(path):
  """`[(op name, [input dtypes], [output tensor names])]` of a TFLite file."""
  interpreter = Interpreter(model_path=path)
  tensors = interpreter.get_tensor_details()
  return [(op["op_name"],
           [tensors[i]["dtype"] for i in op["inputs"] if i >= 0],
           [tensors[i]["name"] for i in op["outputs"]])
          for op in interpreter._get_ops_details()]  # pylint: disable=protected-access


def test_int8_float_head_keeps_only_the_logits_layer_float(tflite_model,
                                                           reference):
  path = tflite_model("int8_float_head")
  runner = Interpreter(model_path=path).get_signature_runner()
  assert runner.get_input_details()["images"]["dtype"] == np.float32
  for detail in runner.get_output_details().values():
    assert detail["dtype"] == np.float32
  dense = [inputs for name, inputs, _ in _ops(path)
           if name == "FULLY_CONNECTED"]
  # fc1 and fc2 of the fc_fc head stay int8; the classifier (last) is float
  # with float32 weights.
  assert [inputs[1] for inputs in dense] == [np.int8, np.int8, np.float32]
  assert all(d == np.float32 for d in dense[-1])
  convs = [inputs for name, inputs, _ in _ops(path) if name == "CONV_2D"]
  assert convs and all(inputs[:2] == [np.int8, np.int8] for inputs in convs)
  logits = tflite_demo_lib.TFLiteClassifier(path).logits(reference.images)
  # int8 rounds the logits to its output step; the float head does not.
  int8 = tflite_demo_lib.TFLiteClassifier(tflite_model("int8")).logits(
      reference.images)
  assert (np.abs(logits - reference.logits).mean()
          < np.abs(int8 - reference.logits).mean())


def test_int8_float_head_extra_float_layers(exported, reference, tmp_path):
  path = str(tmp_path / "stem.tflite")
  lib.export_tflite(exported.version_dir, path, "int8_float_head",
                    representative_examples=INT8_CALIBRATION_EXAMPLES,
                    float_layers=["block0_conv0", "block0_bn0", "block0_relu0"])
  convs = [inputs for name, inputs, _ in _ops(path) if name == "CONV_2D"]
  assert convs[0][:2] == [np.float32, np.float32]
  assert all(inputs[:2] == [np.int8, np.int8] for inputs in convs[1:])
  logits = tflite_demo_lib.TFLiteClassifier(path).logits(reference.images)
  assert_logits_close(logits, reference.logits, "int8_float_head")


def test_float_node_names():
  names = ["m_1/backbone_1/block0_conv0_1/Conv2D;m_1/backbone_1/block0_bn0",
           "kc_classifier_1/kc_head_1/fc1_1/MatMul",
           "kc_classifier_1/kc_head_1/classifier_1/MatMul",
           "kc_classifier_1/self_paced_scale_1/Rsqrt",
           "kc_classifier_1/kc_head_1/classifier_bias/Add",
           "StatefulPartitionedCall:0"]
  assert lib.float_node_names(names, ["StatefulPartitionedCall:0"],
                              lib.FLOAT_HEAD_LAYERS) == [names[2], names[3],
                                                         names[5]]
  # A fused name matches through any of its parts.
  assert lib.float_node_names(names, [], ["block0_bn0"]) == [names[0]]
  # "kc_classifier_1" is not the layer "classifier".
  assert lib.float_node_names(names[:2], [], ["classifier"]) == []


def test_bad_float_layers(exported, tmp_path):
  with pytest.raises(lib.TFLiteExportError, match=r"\['block0_conv0'\].*'int8'"):
    lib.export_tflite(exported.version_dir, str(tmp_path / "m.tflite"), "int8",
                      float_layers=["block0_conv0"])
  with pytest.raises(lib.TFLiteExportError, match=r"\['no_such_layer'\]"):
    lib.export_tflite(exported.version_dir, str(tmp_path / "m.tflite"),
                      "int8_float_head", representative_examples=8,
                      float_layers=["block0_conv0", "no_such_layer"])
  assert not os.listdir(tmp_path)


def _floor_below_some_logits(reference):
  """A negative floor that clips about a quarter of the smoke logits."""
  floor = float(np.percentile(reference.logits, 25))
  assert floor < 0, floor
  return floor


def test_logit_floor_applies_and_keeps_top1(exported, reference, tmp_path):
  floor = _floor_below_some_logits(reference)
  path = str(tmp_path / "floor.tflite")
  lib.export_tflite(exported.version_dir, path, "none", logit_floor=floor)
  runner = Interpreter(model_path=path).get_signature_runner()
  outputs = runner(images=reference.images.astype(np.float32))
  expected = np.maximum(reference.logits, floor)
  np.testing.assert_allclose(outputs["logits"], expected, atol=1e-4)
  np.testing.assert_allclose(outputs["probs"], 1 / (1 + np.exp(-expected)),
                             atol=1e-5)
  assert np.all(outputs["logits"].argmax(1) == reference.logits.argmax(1))


def test_int8_logit_floor_narrows_the_logits_step(exported, reference,
                                                  tmp_path):
  floor = _floor_below_some_logits(reference)
  path = str(tmp_path / "int8_floor.tflite")
  lib.export_tflite(exported.version_dir, path, "int8",
                    representative_examples=INT8_CALIBRATION_EXAMPLES,
                    logit_floor=floor)
  unfloored = str(tmp_path / "int8_no_floor.tflite")
  lib.export_tflite(exported.version_dir, unfloored, "int8",
                    representative_examples=INT8_CALIBRATION_EXAMPLES,
                    logit_floor="none")
  # The floor must be folded into the classifier (bias + fused relu): a
  # separate MAXIMUM/SUB op would leave the classifier's coarse int8 output.
  ops = [name for name, _, _ in _ops(path)]
  assert "MAXIMUM" not in ops and "SUB" not in ops, ops

  def logits_scale(model_path):
    runner = Interpreter(model_path=model_path).get_signature_runner()
    return runner.get_output_details()["logits"]["quantization"][0]

  assert logits_scale(path) < logits_scale(unfloored)
  logits = tflite_demo_lib.TFLiteClassifier(path).logits(reference.images)
  assert logits.min() >= floor - logits_scale(path)
  assert_logits_close(logits, np.maximum(reference.logits, floor), "int8")


@pytest.mark.parametrize("floor", [float("nan"), float("inf"), float("-inf"),
                                   0.0, 2.0, "low"])
def test_bad_logit_floor(exported, tmp_path, floor):
  with pytest.raises(lib.TFLiteExportError, match="logit_floor"):
    lib.export_tflite(exported.version_dir, str(tmp_path / "m.tflite"),
                      "none", logit_floor=floor)
  assert not os.listdir(tmp_path)


def test_resolve_logit_floor_names_a_bad_floor():
  # The floor's rules are quantization's (tests/quantization/floor_test.py);
  # the export reports them as its own error.
  assert lib.resolve_logit_floor("default", "int8") == (
      floor_lib.SUGGESTED_LOGIT_FLOOR)
  with pytest.raises(lib.TFLiteExportError, match="finite negative"):
    lib.resolve_logit_floor(1e-9, "int8")
  with pytest.raises(lib.TFLiteExportError, match="not a number"):
    lib.resolve_logit_floor("lowest", "int8")


def test_int8_float_stem_only_with_floor(exported, reference, tmp_path):
  path = str(tmp_path / "stem_only.tflite")
  # An explicit floor: the smoke logits may not reach the default's -16.
  result = lib.export_tflite(
      exported.version_dir, path, "int8_float_head",
      representative_examples=INT8_CALIBRATION_EXAMPLES,
      float_layers=lib.SMALL_CNN_STEM, float_head=False,
      logit_floor=_floor_below_some_logits(reference))
  assert result["logit_floor"] == _floor_below_some_logits(reference)
  ops = _ops(path)
  convs = [inputs for name, inputs, _ in ops if name == "CONV_2D"]
  assert convs[0][:2] == [np.float32, np.float32]
  assert all(inputs[:2] == [np.int8, np.int8] for inputs in convs[1:])
  dense = [inputs for name, inputs, _ in ops if name == "FULLY_CONNECTED"]
  # The classifier is int8 too, with the floor folded in.
  assert all(inputs[1] == np.int8 for inputs in dense)
  assert "MAXIMUM" not in [name for name, _, _ in ops]
  runner = Interpreter(model_path=path).get_signature_runner()
  assert runner.get_input_details()["images"]["dtype"] == np.float32
  logits = tflite_demo_lib.TFLiteClassifier(path).logits(reference.images)
  assert_logits_close(logits, np.maximum(reference.logits,
                                         _floor_below_some_logits(reference)),
                      "int8")
  assert lib.resolve_logit_floor("default", "int8_float_head",
                                 float_head=False) == -16.0
  with pytest.raises(lib.TFLiteExportError, match="float_head"):
    lib.export_tflite(exported.version_dir, str(tmp_path / "m.tflite"),
                      "int8", float_head=False)


class _TinyHead(tf.Module):
  """`tflite_serve_image` over 4 features: a dense layer, optionally
  rescaled by a data-dependent norm like self-paced scaling."""

  def __init__(self, scaled):
    super().__init__()
    rng = np.random.default_rng(0)
    self.kernel = tf.Variable(rng.normal(size=(4, 6)).astype(np.float32) * 20)
    self.bias = tf.Variable(np.zeros(6, np.float32))
    self.scaled = scaled
    spec = tf.TensorSpec([None, 4], tf.float32, name="images")
    self.tflite_serve_image = tf.function(self._call, input_signature=[spec])

  def _call(self, images):
    logits = tf.matmul(images, self.kernel) + self.bias
    if self.scaled:
      logits *= 30.0 * tf.math.rsqrt(
          tf.reduce_sum(tf.square(logits), axis=1, keepdims=True))
    return {"logits": logits, "probs": tf.sigmoid(logits)}


@pytest.mark.parametrize("scaled,floor,helps", [
    (False, -16.0, True),
    # Every logit is above the floor: it would only widen the int8 range.
    (False, -1e4, False),
    # A data-dependent multiply: the floor cannot be folded into it.
    (True, -16.0, False),
])
def test_default_floor_helps(scaled, floor, helps):
  module = _TinyHead(scaled)
  images = lambda: [np.random.default_rng(i).uniform(-1, 1, (8, 4)).astype(  # noqa: E731
      np.float32) for i in range(3)]
  assert lib.default_floor_helps(module.tflite_serve_image, module, floor,
                                 images) == helps


class _SelfPacedServing(tf.Module):
  """A small FC-SC student with trained-like self-paced logits.

  Head logits near -20 (squared norms per vertical ~1e3-1e4) and gammas of
  50-120, as on the Omniglot student; `quantizable` picks the graph that
  `tflite_serve_image` holds: the network's integer-friendly form
  (`integer_forms.integer_call`, what the exporter writes) or its plain
  `call`.
  """

  def __init__(self, quantizable, floor_parts=False):
    super().__init__()
    from kc_keras.modeling.models import classifier  # pylint: disable=g-import-not-at-top
    c2v = np.repeat(np.arange(6), [4, 8, 12, 16, 6, 10])
    self.network = classifier.HierarchicalClassifier(
        c2v, (8, 8, 1), backbone={"type": "small_cnn", "filters": [4]},
        head={"head_type": "fc_sc", "s1": 16, "s2": 4},
        self_paced={"mode": "vertical", "seed": 0})
    self.network(np.zeros((1, 8, 8, 1), np.float32))
    rng = np.random.default_rng(0)
    classifier_layer = self.network.head.classifier
    classifier_layer.bias.assign(
        -20.0 + 3.0 * rng.normal(size=classifier_layer.bias.shape))
    classifier_layer.kernel.assign(
        4.0 * np.asarray(classifier_layer.kernel))
    self.network.self_paced.gamma.assign(np.linspace(50.0, 120.0, 6))
    spec = tf.TensorSpec([None, 8, 8, 1], tf.float32, name="images")
    network = self.network
    forward = ((lambda images: integer_forms.integer_call(network, images))
               if quantizable
               else lambda images: network(images, training=False))

    def outputs(images):
      logits = forward(images)
      return {"logits": logits, "probs": tf.sigmoid(logits)}

    self.tflite_serve_image = tf.function(outputs, input_signature=[spec])
    if floor_parts:  # As `export_saved_model_lib.ServingModule` adds it.
      self.tflite_floor_parts = tf.function(
          lambda images: floor_lib.floor_parts(network, images),
          input_signature=[spec])


def test_int8_self_paced_floor_keeps_the_top_logits(tmp_path):
  """With the floor parts, int8's default floor applies, and a floored file
  (the shifted logits and the output rounded over ranges ending near the
  floor) outputs its floored logits more precisely than the unfloored file
  outputs the logits."""
  rng = np.random.default_rng(1)
  images = rng.uniform(0, 1, (200, 8, 8, 1)).astype(np.float32)
  calibration = lambda: [images[i:i + 1] for i in range(50)]  # noqa: E731
  module = _SelfPacedServing(quantizable=True, floor_parts=True)
  # As on the Omniglot student: head logits from ~-150 ("no" classes) to
  # near 0, so the top needs a fraction of the full range.
  classifier_layer = module.network.head.classifier
  classifier_layer.bias.assign(np.random.default_rng(3).uniform(
      -150.0, 0.0, classifier_layer.bias.shape))
  reference = np.asarray(module.network(images, training=False))
  saved = str(tmp_path / "sm")
  tf.saved_model.save(module, saved)
  assert reference.min() < floor_lib.SUGGESTED_LOGIT_FLOOR
  assert lib.convert_with_floor(saved, "int8", calibration)[1] == (
      floor_lib.SUGGESTED_LOGIT_FLOOR)
  floor = float(np.percentile(reference, 50))
  errors, convs = {}, {}
  for asked in (floor, None):
    model, applied = lib.convert_with_floor(saved, "int8", calibration,
                                            logit_floor=asked)
    assert applied == asked
    path = str(tmp_path / f"m_{asked}.tflite")
    with open(path, "wb") as f:
      f.write(model)
    for suffix in (lib.LABELS_SUFFIX, lib.VERTICALS_SUFFIX):
      with open(path + suffix, "w") as f:
        f.write("".join(f"{c}\n" for c in range(reference.shape[1])))
    ops = [op["op_name"] for op in Interpreter(
        model_content=model)._get_ops_details()]  # pylint: disable=protected-access
    logits = tflite_demo_lib.TFLiteClassifier(path).logits(images)
    convs[asked] = ops.count("DEPTHWISE_CONV_2D")
    assert ("MAXIMUM" in ops) == (asked is not None)
    meant = reference
    if asked is not None:
      meant = parity_lib.floored_reference(module.network, images, reference,
                                           floor)
    errors[asked] = np.abs(logits - meant).mean()
  # A second classifier copy (the shifted logits) beside the one the norms read.
  assert convs[floor] == convs[None] + 1, convs
  assert errors[floor] < 0.5 * errors[None], errors


def test_int8_self_paced_tail_keeps_its_precision(tmp_path):
  """The exported (quantizable) form of the self-paced tail survives full
  int8; `call`'s form (squared norms ~1e4, inverse norms ~1e-2) does not."""
  rng = np.random.default_rng(1)
  images = rng.uniform(0, 1, (200, 8, 8, 1)).astype(np.float32)
  calibration = lambda: [images[i:i + 1] for i in range(50)]  # noqa: E731
  errors = {}
  for quantizable in (True, False):
    module = _SelfPacedServing(quantizable)
    reference = np.asarray(module.network(images, training=False))
    saved = str(tmp_path / f"sm_{quantizable}")
    tf.saved_model.save(module, saved)
    path = str(tmp_path / f"m_{quantizable}.tflite")
    with open(path, "wb") as f:
      f.write(lib.convert(saved, "int8", calibration))
    for suffix in (lib.LABELS_SUFFIX, lib.VERTICALS_SUFFIX):
      with open(path + suffix, "w") as f:
        f.write("".join(f"{c}\n" for c in range(reference.shape[1])))
    logits = tflite_demo_lib.TFLiteClassifier(path).logits(images)
    errors[quantizable] = np.abs(logits - reference).mean()
    step = np.ptp(reference) / 255
  # One int8 step of the logits' range bounds the mean error of a good file.
  assert errors[True] < step, errors
  assert errors[False] > 3 * errors[True], errors


def test_hierarchy_beside_the_saved_model_must_name_its_classes(exported,
                                                                 tmp_path):
  copy = str(tmp_path / "export")
  shutil.copytree(exported.version_dir, copy)
  path = os.path.join(copy, "assets.extra", "hierarchy.json")
  recorded = hierarchy_lib.Hierarchy.load(path)
  names = list(recorded.class_names)
  names[0], names[1] = names[1], names[0]
  hierarchy_lib.Hierarchy(names, recorded.vertical_names,
                          recorded.class_to_vertical).save(path)
  out = str(tmp_path / "m.tflite")
  with pytest.raises(lib.TFLiteExportError,
                     match=rf"hierarchy.json does not name the classes the "
                           rf"SavedModel serves .*first difference at class 0: "
                           rf"'{names[1]}' vs '{names[0]}'"):
    lib.export_tflite(copy, out, "none")
  assert not os.path.exists(out)
