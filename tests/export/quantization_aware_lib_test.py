"""Tests for export.quantization_aware_lib: the int8 grid, BN folding, STE training, the run dir."""

import os

from absl.testing import parameterized
from ai_edge_litert.interpreter import Interpreter
import keras
import numpy as np
import pytest
import tensorflow as tf

from export import export_saved_model_lib
from export import export_tflite_lib
from export import quantization_aware_lib as lib
from export import tflite_demo_lib
from kc_keras.training import restore
from export_test_utils import INT8_CALIBRATION_EXAMPLES
from export_test_utils import MODEL_NAME
from kc_keras.modeling import backbones

# float32 reordering of the same sums (TFLite's kernels against Keras's).
SNAPPED_FLOAT_DIFF = 1e-4


class GridTest(tf.test.TestCase, parameterized.TestCase):

  def test_fake_quantize_kernel_hand_values(self):
    # Channel 0: max 1.27 -> scale 0.01; 0.005 / 0.01 = 0.5 rounds away
    # from zero (TFLite's std::round), -0.014 -> -1. Channel 1: all zero.
    kernel = np.array([[1.27, 0.0], [0.005, 0.0], [-0.014, 0.0]], np.float32)
    got = lib.fake_quantize_kernel(kernel).numpy()
    self.assertAllClose(got, [[1.27, 0.0], [0.01, 0.0], [-0.01, 0.0]],
                        atol=1e-7)
    values, scales = lib.int8_kernel(kernel)
    self.assertAllEqual(values, [[127, 0], [1, 0], [-1, 0]])
    self.assertAllClose(scales, [0.01, 0.0])

  def test_grid_is_idempotent_and_scale_invariant(self):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
    snapped = lib.fake_quantize_kernel(kernel).numpy()
    values, _ = lib.int8_kernel(snapped)
    # A per-channel multiplier (BN folding) keeps the same int8 values.
    multiplier = rng.uniform(-2.0, 2.0, size=6).astype(np.float32)
    scaled_values, _ = lib.int8_kernel(snapped * multiplier)
    self.assertAllEqual(values, lib.int8_kernel(kernel)[0])
    self.assertAllEqual(scaled_values, values * np.sign(multiplier))
    self.assertAllClose(lib.fake_quantize_kernel(snapped), snapped,
                        rtol=1e-6, atol=0)

  def test_fold_batch_norm_equals_unfolded_network(self):
    rng = np.random.default_rng(1)
    inputs = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(5, 3, padding="same", use_bias=False,
                               name="conv")
    bn = keras.layers.BatchNormalization(epsilon=1e-3, name="bn")
    model = keras.Model(inputs, bn(conv(inputs)))
    bn.set_weights([rng.uniform(-2, 2, 5), rng.normal(size=5),
                    rng.normal(size=5), rng.uniform(0.1, 3, 5)])
    images = rng.uniform(size=(2, 6, 6, 3)).astype(np.float32)
    kernel, bias = lib.fold_batch_norm(
        conv.kernel.numpy(), *[w.numpy() for w in bn.weights], bn.epsilon)
    # Dense reference: every output pixel as an explicit sum.
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((2, 6, 6, 5), np.float64)
    for i in range(6):
      for j in range(6):
        patch = padded[:, i:i + 3, j:j + 3, :]
        expected[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, kernel)
    expected += bias
    self.assertAllClose(model(images, training=False), expected, atol=1e-5)
    self.assertEqual(
        [(c.name, b.name) for c, b in lib.conv_batch_norm_pairs(model)],
        [("conv", "bn")])

  def test_round_per_example_hand_values(self):
    x = tf.constant([[0.0, 0.301, 1.0], [-1.0, 0.61, 2.0]])
    got = lib._round_per_example(x).numpy()  # pylint: disable=protected-access
    # Row 0: step 1/255 over [0, 1], 0.301 * 255 = 76.755 -> 77; row 1:
    # step 3/255 over [-1, 2], (0.61 + 1) * 85 = 136.85 -> 137.
    self.assertAllClose(got[0], [0.0, 77 / 255, 1.0])
    self.assertAllClose(got[1], [-1.0, 137 / 85 - 1.0, 2.0], atol=1e-6)

  def test_straight_through_step(self):
    # One SGD step: w <- w - lr * dL/dq(w), the gradient taken at q(w).
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2, use_bias=False, name="dense")
    network = keras.Model(inputs, dense(inputs))
    kernel = np.array([[0.5, -1.0], [0.123, 0.3], [1.27, 0.77]], np.float32)
    dense.kernel.assign(kernel)
    images = np.array([[1.0, 2.0, -1.0]], np.float32)
    labels = np.array([[1]], np.int32)
    learning_rate = 0.5
    trainer = lib.QuantizationAwareTrainer(
        network, keras.optimizers.SGD(learning_rate))
    trainer.step(tf.constant(images), tf.constant(labels))
    quantized = lib.fake_quantize_kernel(kernel).numpy()
    logits = images @ quantized
    # d/dlogits of sum_j sigmoid CE = sigmoid(logits) - targets.
    grad = images.T @ (1 / (1 + np.exp(-logits)) - [[0.0, 1.0]])
    self.assertAllClose(trainer.shadows[0].numpy(),
                        kernel - learning_rate * grad, atol=1e-6)
    trainer.finish()
    self.assertAllClose(
        dense.kernel.numpy(),
        lib.fake_quantize_kernel(kernel - learning_rate * grad), atol=0)


def _interpreter_weights(path):
  """int8 constant tensors of a .tflite file: shape -> (values, scales)."""
  interpreter = Interpreter(model_path=path)
  interpreter.allocate_tensors()
  weights = {}
  for detail in interpreter.get_tensor_details():
    scales = detail["quantization_parameters"]["scales"]
    if (detail["dtype"] == np.int8 and len(detail["shape"]) >= 2
        and scales.size > 1):
      try:
        values = interpreter.get_tensor(detail["index"])
      except ValueError:  # an activation, no data before invoke.
        continue
      weights[tuple(detail["shape"])] = (values, scales)
  return weights


def _converter_layout(kernel):
  """A Keras kernel [..., in, out] as TFLite stores it: out first."""
  if kernel.ndim == 4:
    return np.transpose(kernel, (3, 0, 1, 2))
  return kernel.T


@pytest.mark.slow
def test_snapped_kernels_are_the_converters_int8_weights(snapped_run, params_of,
                                                          tmp_path):
  network, _, export = snapped_run
  folded = lib.folded_kernels(network)
  # The export folds y = a x + b into the first conv: it stores a W.
  assert backbones.foldable_input_scaling(network.backbone)
  scaling = network.backbone.get_layer(backbones.INPUT_SCALING)
  folded["block0_conv0"] = folded["block0_conv0"] * float(scaling.scale)
  for quantization in ("dynamic", "int8"):
    path = str(tmp_path / f"{quantization}.tflite")
    export_tflite_lib.export_tflite(
        export.version_dir, path, quantization, params=params_of,
        representative_examples=INT8_CALIBRATION_EXAMPLES)
    stored = _interpreter_weights(path)
    for name, kernel in folded.items():
      layout = _converter_layout(kernel)
      if (quantization == "dynamic"
          and kernel.size < lib.DYNAMIC_MIN_WEIGHTS):
        continue  # the converter leaves small kernels float.
      assert layout.shape in stored, (quantization, name, sorted(stored))
      values, scales = stored[layout.shape]
      expected_values, expected_scales = lib.int8_kernel(kernel)
      np.testing.assert_array_equal(values,
                                    _converter_layout(expected_values))
      np.testing.assert_allclose(scales, expected_scales, rtol=1e-6)


@pytest.mark.slow
def test_snapping_makes_the_dynamic_weights_exact(snapped_run, exported,
                                                  reference, tmp_path):
  """A dynamic file computing every quantized layer in float on its int8
  weights (`float_layers`) differs from Keras by the weights' rounding
  alone: none once the kernels are snapped (float reordering only), the
  rounding step otherwise."""
  network, _, export = snapped_run
  # The layers the converter quantizes (it leaves small kernels float).
  float_layers = sorted(name for name, kernel in lib.folded_kernels(
      network).items() if kernel.size >= lib.DYNAMIC_MIN_WEIGHTS)
  diffs = {}
  for name, version_dir, keras_logits in (
      ("trained", exported.version_dir, reference.logits),
      ("snapped", export.version_dir,
       np.asarray(network(reference.images, training=False)))):
    path = str(tmp_path / f"{name}.tflite")
    export_tflite_lib.export_tflite(version_dir, path, "dynamic",
                                    float_layers=float_layers)
    logits = tflite_demo_lib.TFLiteClassifier(path).logits(reference.images)
    diffs[name] = np.abs(logits - keras_logits).max()
  assert diffs["snapped"] <= SNAPPED_FLOAT_DIFF, diffs
  assert diffs["trained"] > 10 * SNAPPED_FLOAT_DIFF, diffs


@pytest.fixture(scope="module")
def params_of(trained_run):
  return trained_run[0]


@pytest.mark.slow
@pytest.mark.parametrize("activations", ["none", "dynamic", "int8"])
def test_fine_tune_writes_a_run_the_exporter_takes(trained_run, tmp_path,
                                                   activations):
  params, model_dir = trained_run
  out = str(tmp_path / "qat")
  equalize = 0.5 if activations == "dynamic" else 0.0
  result = lib.fine_tune(params, model_dir, out, steps=3, evaluate=False,
                         activations=activations, logit_floor=-16.0,
                         representative_examples=8,
                         equalize_strength=equalize, log=lambda _: None)
  assert sorted(os.listdir(tmp_path)) == ["qat"]  # no staging left.
  assert result.checkpoint.endswith("ckpt-123")
  for name in ("checkpoint", "hierarchy.json", "params.yaml",
               lib.SUMMARY_FILE):
    assert os.path.exists(os.path.join(out, name)), name
  network, _, restored, _ = restore.load_network(params, out)
  assert restored == result.checkpoint
  for kernel in lib.quantized_kernels(network):
    value = kernel.variable.numpy()
    np.testing.assert_allclose(lib.fake_quantize_kernel(value), value,
                               rtol=1e-6, atol=0)
  assert result.summary["float_kernels"] == []
  assert result.summary["activations"] == activations
  assert result.summary["weight_target"] == (
      "int8" if activations == "int8" else "dynamic")
  assert [e["consumer"] for e in result.summary["equalized"]][:1] == (
      ["block1_conv0"] if equalize else [])


def test_activation_simulator_walk_and_ranges(reference):
  network = reference.network
  images = reference.images[:16]
  for mode in ("dynamic", "int8"):
    simulator = lib.ActivationSimulator(network, mode, logit_floor=-1.0)
    assert simulator.check_walk(tf.constant(images)) == 0.0
  simulator.calibrate(images, batch_size=8)
  low, high = (float(v.numpy()) for v in simulator.ranges["images"])
  assert (low, high) == (0.0, float(images.max()))
  logits = np.asarray(network(images, training=False))
  low, high = (float(v.numpy()) for v in simulator.ranges["classifier"])
  assert low == max(-1.0, float(logits.min()))
  assert high == pytest.approx(max(0.0, float(logits.max())), rel=1e-6)
  assert simulator.points[0] == "images"
  # conv -> BN -> ReLU is one int8 op: its output is rounded once.
  assert "block0_conv0" not in simulator.points
  assert "block0_relu0" in simulator.points
  # The exported graph folds the input scaling into the first conv.
  assert "input_scaling" not in simulator.points
  # A file without the fold (bench/int8_rounding_probe.py) rounds it.
  unfolded = lib.ActivationSimulator(network, "int8", fold_input_scaling=False)
  assert unfolded.points[:2] == ["images", "input_scaling"]
  rounded = np.asarray(simulator(tf.constant(images)))
  assert np.abs(rounded - logits).max() > 0.0


def test_bad_input_is_named(trained_run, tmp_path):
  params, model_dir = trained_run
  out = str(tmp_path / "qat")
  with pytest.raises(lib.QuantizationAwareError, match="steps"):
    lib.fine_tune(params, model_dir, out, steps=0)
  with pytest.raises(lib.QuantizationAwareError, match="learning_rate"):
    lib.fine_tune(params, model_dir, out, steps=1, learning_rate=0.0)
  missing = os.path.join(model_dir, "ckpt-999999")
  with pytest.raises(lib.QuantizationAwareError, match="ckpt-999999"):
    lib.fine_tune(params, missing, out, steps=1)
  with pytest.raises(restore.RestoreError, match="without a checkpoint"):
    lib.fine_tune(params, str(tmp_path), out, steps=1)
  with pytest.raises(lib.QuantizationAwareError, match="activations='int4'"):
    lib.fine_tune(params, model_dir, out, steps=1, activations="int4")
  with pytest.raises(lib.QuantizationAwareError, match="weight_target='int4'"):
    lib.fine_tune(params, model_dir, out, steps=1, weight_target="int4")
  with pytest.raises(lib.QuantizationAwareError, match="equalize_strength"):
    lib.fine_tune(params, model_dir, out, steps=1, equalize_strength=2.0)
  with pytest.raises(lib.QuantizationAwareError, match="not empty"):
    lib.fine_tune(params, model_dir, model_dir, steps=1)
  assert not os.path.exists(out)


def test_failed_write_leaves_no_run_dir(reference, trained_run, tmp_path):
  params, _ = trained_run

  class BrokenHierarchy:

    def save(self, path):
      raise OSError(f"disk full writing {path}")

  out = str(tmp_path / "qat")
  with pytest.raises(OSError, match="disk full"):
    lib.write_run_dir(reference.network, params, BrokenHierarchy(), out, 1,
                      {})
  assert os.listdir(tmp_path) == []


def test_per_tensor_grids_hand_values():
  weights = np.array([[0.5, -1.27], [0.004, 0.0]], np.float32)
  # Symmetric: s = 1.27 / 127 = 0.01, 0.004 / 0.01 = 0.4 -> 0.
  values, scale, zero_point = lib.int8_tensor(weights,
                                              lib.PER_TENSOR_SYMMETRIC)
  np.testing.assert_array_equal(values, [[50, -127], [0, 0]])
  assert (scale, zero_point) == (pytest.approx(0.01), 0)
  # Asymmetric over [-1.27, 0.5]: s = 1.77 / 255, z = round(-128 + 1.27 / s)
  # = round(54.97) = 55.
  values, scale, zero_point = lib.int8_tensor(weights,
                                              lib.PER_TENSOR_ASYMMETRIC)
  assert (scale, zero_point) == (pytest.approx(1.77 / 255), 55)
  np.testing.assert_array_equal(values, [[127, -128], [56, 55]])
  for scheme in (lib.PER_TENSOR_SYMMETRIC, lib.PER_TENSOR_ASYMMETRIC):
    _, scale, _ = lib.int8_tensor(weights, scheme)
    snapped = lib.fake_quantize(weights, scheme).numpy()
    np.testing.assert_allclose(lib.fake_quantize(snapped, scheme), snapped,
                               rtol=1e-6, atol=1e-7)
    assert np.abs(snapped - weights).max() <= scale / 2 + 1e-7
  with pytest.raises(lib.QuantizationAwareError, match="per_channel"):
    lib.tensor_quantization(weights, lib.PER_CHANNEL)


def test_block_and_row_grids_are_their_forms_per_channel_grids():
  rng = np.random.default_rng(5)
  blocks = rng.normal(size=(3, 4, 2)).astype(np.float32)  # [M, D, U]
  dense = np.transpose(blocks, (1, 0, 2)).reshape(4, 6)
  snapped = lib.fake_quantize(blocks, lib.PER_BLOCK_CHANNEL).numpy()
  np.testing.assert_allclose(
      np.transpose(snapped, (1, 0, 2)).reshape(4, 6),
      lib.fake_quantize_kernel(dense), rtol=1e-6)
  rows = rng.normal(size=(5, 3)).astype(np.float32)  # [N, s2]
  np.testing.assert_allclose(lib.fake_quantize(rows, lib.PER_ROW),
                             lib.fake_quantize_kernel(rows.T).numpy().T,
                             rtol=1e-6)
  # One scale per (m, u) / per row: the largest entry of each is on +-127.
  levels = np.abs(snapped) / (np.abs(blocks).max(axis=1, keepdims=True) / 127)
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)


def test_quantized_kernels_follow_the_exported_forms():
  from kc_keras.modeling.models import classifier  # pylint: disable=g-import-not-at-top

  def sc_sc_network(units):
    network = classifier.HierarchicalClassifier(
        [0, 0, 1, 2, 2, 2], (8, 8, 1),
        backbone={"type": "small_cnn", "filters": [4]},
        head={"head_type": "sc_sc", "s1": 6, "s2": units},
        self_paced={"mode": "vertical"})
    network(np.zeros((1, 8, 8, 1), np.float32))
    return network

  network, wide = sc_sc_network(3), sc_sc_network(26)
  for target, per_tensor in (("dynamic", [lib.PER_TENSOR_SYMMETRIC]),
                             ("int8", [lib.PER_TENSOR_ASYMMETRIC] * 2)):
    for net, classifier_schemes in ((network, [lib.PER_ROW]),
                                    (wide, per_tensor)):
      schemes = {}
      for kernel in lib.quantized_kernels(net, target):
        schemes.setdefault(kernel.layer, []).append(kernel.scheme)
      assert schemes["sc1"] == [lib.PER_BLOCK_CHANNEL]
      assert schemes["sc2"] == per_tensor
      # s2 = 26: the classifier stays a BATCH_MATMUL (per tensor).
      assert schemes["classifier"] == classifier_schemes


# The smoke config with an SC-SC head: sc1 reads the features (dense form,
# a FULLY_CONNECTED), sc2 reads sc1's blocks (a per-tensor BATCH_MATMUL);
# the classifier converts to a DEPTHWISE_CONV_2D for s2 <= 25, else to a
# per-tensor BATCH_MATMUL (s2 = 32 also puts its 40 x 32 kernel over the
# dynamic converter's 1024-weight threshold).
SC_OVERRIDE = ("task.model.head.head_type=sc_sc,task.model.head.s1=8,"
               "task.model.self_paced.mode=vertical,task.model.head.s2=")


def _sc_layout_candidates(layer, values):
  """The int8 `values` of a per-tensor SC kernel in the layouts TFLite may hold."""
  if isinstance(layer, lib.structurally_connected.VerticalBlockDense):
    return [values, np.transpose(values, (0, 2, 1))]
  gathered = values[layer._gather_index].reshape(  # pylint: disable=protected-access
      layer.num_chunks, layer.resolved_chunk_size, -1)
  return [gathered, np.transpose(gathered, (0, 2, 1))]


def _interpreter_constants(path):
  """int8 constant tensors of a .tflite file: (values, scales, zero points)."""
  interpreter = Interpreter(model_path=path)
  interpreter.allocate_tensors()
  constants = []
  for detail in interpreter.get_tensor_details():
    if detail["dtype"] != np.int8:
      continue
    try:
      values = interpreter.get_tensor(detail["index"])
    except ValueError:  # an activation, no data before invoke.
      continue
    quantization = detail["quantization_parameters"]
    constants.append((values, quantization["scales"],
                      quantization["zero_points"]))
  return constants


def _stored_per_channel(stored, values, scales):
  """Whether `stored` holds int8 `values` [in, out] (any layout) with `scales`."""
  outputs = values.shape[-1]
  for stored_values, stored_scales, _ in stored:
    if stored_values.size != values.size:
      continue
    # FULLY_CONNECTED stores [out, in]; DEPTHWISE_CONV_2D [1, 1, in, out].
    out_last = (stored_values.shape[-1] == outputs and np.array_equal(
        stored_values.reshape(-1, outputs), values))
    out_first = (stored_values.shape[0] == outputs and np.array_equal(
        stored_values.reshape(outputs, -1), values.T))
    if out_last or out_first:
      np.testing.assert_allclose(stored_scales, scales, rtol=1e-6)
      return True
  return False


@pytest.mark.slow
@pytest.mark.parametrize("units", [16, 32])
@pytest.mark.parametrize("weight_target", lib.WEIGHT_TARGETS)
def test_snapped_sc_weights_are_the_converters_int8_weights(tmp_path,
                                                             weight_target,
                                                             units):
  from export_test_utils import smoke_params  # pylint: disable=g-import-not-at-top
  from kc_keras.dataloaders import factory  # pylint: disable=g-import-not-at-top
  from kc_keras.training import model_builder  # pylint: disable=g-import-not-at-top
  params = smoke_params(SC_OVERRIDE + str(units))
  source = factory.build_source(params.task.data)
  network = model_builder.build_network(params.task.model, source.hierarchy,
                                        source.image_shape)
  network(np.zeros((1, *source.image_shape), np.float32), training=False)
  # Trained biases are not zero (an all-zero tensor has no range).
  rng = np.random.default_rng(2)
  head = network.head
  for layer in (head.hidden1, head.hidden2, head.classifier):
    layer.bias.assign(rng.normal(scale=0.1, size=layer.bias.shape))
  lib.snap_to_int8_grid(network, weight_target)
  run = lib.write_run_dir(network, params, source.hierarchy,
                          str(tmp_path / "run"), 1, {})
  export = export_saved_model_lib.export_saved_model(
      params, run, str(tmp_path / "export"), model_name=MODEL_NAME)
  path = str(tmp_path / f"{weight_target}.tflite")
  export_tflite_lib.export_tflite(
      export.version_dir, path, weight_target, params=params,
      representative_examples=INT8_CALIBRATION_EXAMPLES)
  stored = _interpreter_constants(path)
  assert hasattr(tf.saved_model.load(export.version_dir),
                 export_tflite_lib.FLOOR_PARTS_FUNCTION)
  schemes = {k.layer: k.scheme
             for k in lib.quantized_kernels(network, weight_target)
             if k.variable is getattr(
                 next(l for l in lib._all_layers(network)  # pylint: disable=protected-access
                      if l.name == k.layer), "kernel")}
  depthwise = head.classifier.has_depthwise_form
  assert depthwise == (units <= 25)
  assert schemes["sc1"] == lib.PER_BLOCK_CHANNEL
  assert (schemes["classifier"] == lib.PER_ROW) == depthwise
  # sc1's dense form: one FULLY_CONNECTED kernel [M * U, D], a scale per
  # output unit; the classifier's depthwise filter: a scale per class.
  per_channel = [head.hidden1.dense_kernel()]
  if depthwise:
    per_channel.append(np.transpose(head.classifier.kernel.numpy()))
  for kernel in per_channel:
    values, scales = lib.int8_kernel(kernel)
    if (weight_target == "dynamic"
        and values.size < lib.DYNAMIC_MIN_WEIGHTS):
      continue  # the converter leaves small kernels float.
    assert _stored_per_channel(stored, values, scales), weight_target
  per_tensor = [k for k in lib.quantized_kernels(network, weight_target)
                if k.scheme not in (lib.PER_CHANNEL, lib.PER_BLOCK_CHANNEL,
                                    lib.PER_ROW)]
  # The BATCH_MATMULs (sc2; the classifier when s2 > 25): their kernels
  # (dynamic), kernels and biases (int8).
  batch_matmuls = ["sc2"] if depthwise else ["sc2", "classifier"]
  assert sorted(k.layer for k in per_tensor) == sorted(
      batch_matmuls if weight_target == "dynamic"
      else [name for name in batch_matmuls for _ in range(2)])
  for kernel in per_tensor:
    if (weight_target == "dynamic"
        and kernel.variable.numpy().size < lib.DYNAMIC_MIN_WEIGHTS):
      continue  # the converter leaves small kernels float.
    values, scale, zero_point = lib.int8_tensor(kernel.variable.numpy(),
                                                kernel.scheme)
    layer = next(l for l in lib._all_layers(network)  # pylint: disable=protected-access
                 if l.name == kernel.layer)
    candidates = (_sc_layout_candidates(layer, values)
                  if kernel.variable is layer.kernel else [values])
    matches = [(v, s, z) for v, s, z in stored for c in candidates
               if v.shape == c.shape and np.array_equal(v, c)]
    assert matches, (weight_target, kernel.variable.path)
    _, scales, zero_points = matches[0]
    np.testing.assert_allclose(scales, [scale], rtol=1e-6)
    np.testing.assert_array_equal(zero_points, [zero_point])


def test_equalize_ranges_preserves_the_function():
  from export_test_utils import smoke_params  # pylint: disable=g-import-not-at-top
  from kc_keras.dataloaders import factory  # pylint: disable=g-import-not-at-top
  from kc_keras.training import model_builder  # pylint: disable=g-import-not-at-top
  params = smoke_params()
  source = factory.build_source(params.task.data)
  network = model_builder.build_network(params.task.model, source.hierarchy,
                                        source.image_shape)
  rng = np.random.default_rng(3)
  images = rng.uniform(size=(16, *source.image_shape)).astype(np.float32)
  network(images[:1], training=False)
  # Unequal channel ranges: random BN weights and moving statistics.
  for layer in lib._all_layers(network):  # pylint: disable=protected-access
    if isinstance(layer, keras.layers.BatchNormalization):
      channels = layer.gamma.shape[0]
      layer.set_weights([rng.uniform(0.1, 3.0, channels),
                         rng.normal(size=channels),
                         rng.normal(size=channels),
                         rng.uniform(0.1, 3.0, channels)])
  before = np.asarray(network(images, training=False))
  pairs = lib.equalizable_pairs(network)
  assert [(b.name, [l.name for l in between], c.name)
          for b, between, c in pairs] == [
              ("block0_bn0", ["block0_relu0", "block0_pool"], "block1_conv0")]
  probe = keras.Model(network.backbone.inputs,
                      network.backbone.get_layer("block0_pool").output)
  equalized = lib.equalize_ranges(network, images, strength=1.0,
                                  batch_size=8)
  after = np.asarray(network(images, training=False))
  np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
  assert [(e.producer, e.consumer) for e in equalized][:1] == [
      ("block0_bn0", "block1_conv0")]
  assert equalized[0].scales.min() >= 1.0
  # strength 1: every live channel now reaches the largest range.
  ranges = np.asarray(probe(images, training=False)).max(axis=(0, 1, 2))
  live = ranges > lib.EQUALIZE_MIN_RANGE_FRACTION * ranges.max()
  np.testing.assert_allclose(ranges[live], ranges.max(), rtol=1e-4)
  # The FC-FC head's pairs follow; fc2's output channels now share a range.
  assert [(e.producer, e.consumer) for e in equalized][1:] == [
      ("fc1", "fc2"), ("fc2", "classifier")]
  features = network.backbone(images, training=False)
  fc2 = np.asarray(network.head.hidden2(network.head.hidden1(features)))
  ranges = fc2.max(axis=0)
  live = ranges > lib.EQUALIZE_MIN_RANGE_FRACTION * ranges.max()
  np.testing.assert_allclose(ranges[live], ranges.max(), rtol=1e-4)
  with pytest.raises(lib.QuantizationAwareError, match="strength"):
    lib.equalize_ranges(network, images, strength=1.5, batch_size=8)


def test_activation_simulation_needs_a_chain_backbone():
  from kc_keras.modeling.models import classifier  # pylint: disable=g-import-not-at-top
  network = classifier.HierarchicalClassifier(
      [0, 1], (32, 32, 1), backbone={"type": "mobilenet_v3_small"},
      head={"head_type": "fc_fc", "s1": 4, "s2": 4})
  with pytest.raises(lib.QuantizationAwareError,
                     match="chain backbone.*does not take the previous"):
    lib.ActivationSimulator(network, "int8")


@pytest.mark.parametrize("head_type", ["fc_sc", "sc_sc"])
def test_structurally_connected_heads_are_not_equalized(head_type):
  from kc_keras.modeling.models import classifier  # pylint: disable=g-import-not-at-top
  network = classifier.HierarchicalClassifier(
      [0, 0, 1, 2, 2, 2], (8, 8, 1),
      backbone={"type": "small_cnn", "filters": [4]},
      head={"head_type": head_type, "s1": 6, "s2": 3},
      self_paced={"mode": "vertical"})
  images = np.random.default_rng(4).uniform(size=(12, 8, 8, 1)).astype(
      np.float32)
  network(images[:1], training=False)
  weights = [w.copy() for w in network.head.get_weights()]
  # Not equalized (see the docstring: no gain measured).
  assert lib.equalizable_head_pairs(network) == []
  assert lib.equalize_ranges(network, images, strength=1.0,
                             batch_size=4) == []
  for before, after in zip(weights, network.head.get_weights()):
    np.testing.assert_array_equal(before, after)
