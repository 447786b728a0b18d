"""Tests for quantization.kernels: which weights are int8 on which grid, and that snapped ones are the converter's."""

from ai_edge_litert.interpreter import Interpreter
import numpy as np
import pytest
import tensorflow as tf

from export import export_saved_model_lib
from export import export_tflite_lib
from export import tflite_demo_lib
import export_fixtures
from export_test_utils import INT8_CALIBRATION_EXAMPLES
from export_test_utils import MODEL_NAME
from kc_keras.modeling import backbones
from kc_keras.modeling.layers import structurally_connected
from kc_keras.quantization import activation_simulator
from kc_keras.quantization import batch_norm_folding
from kc_keras.quantization import grids
from kc_keras.quantization import input_folding
from kc_keras.quantization import integer_forms
from kc_keras.quantization import kernels
from kc_keras.quantization import layer_walk

# float32 reordering of the same sums (TFLite's kernels against Keras's).
SNAPPED_FLOAT_DIFF = 1e-4


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
  folded = batch_norm_folding.folded_kernels(network)
  # The export folds y = a x + b into the first conv: it stores a W.
  assert input_folding.foldable_input_scaling(network.backbone)
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
          and kernel.size < activation_simulator.DYNAMIC_MIN_WEIGHTS):
        continue  # the converter leaves small kernels float.
      assert layout.shape in stored, (quantization, name, sorted(stored))
      values, scales = stored[layout.shape]
      expected_values, expected_scales = grids.int8_kernel(kernel)
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
  float_layers = sorted(name for name, kernel in batch_norm_folding.folded_kernels(
      network).items() if kernel.size >= activation_simulator.DYNAMIC_MIN_WEIGHTS)
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
  for target, per_tensor in (("dynamic", [grids.PER_TENSOR_SYMMETRIC]),
                             ("int8", [grids.PER_TENSOR_ASYMMETRIC] * 2)):
    for net, classifier_schemes in ((network, [grids.PER_ROW]),
                                    (wide, per_tensor)):
      schemes = {}
      for kernel in kernels.quantized_kernels(net, target):
        schemes.setdefault(kernel.layer, []).append(kernel.scheme)
      assert schemes["sc1"] == [grids.PER_BLOCK_CHANNEL]
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
  if isinstance(layer, structurally_connected.VerticalBlockDense):
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
@pytest.mark.parametrize("weight_target", kernels.WEIGHT_TARGETS)
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
  kernels.snap_to_int8_grid(network, weight_target)
  run = export_fixtures.write_run_dir(network, params, source.hierarchy,
                                      str(tmp_path / "run"), 1)
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
             for k in kernels.quantized_kernels(network, weight_target)
             if k.variable is getattr(
                 next(l for l in layer_walk.all_layers(network)
                      if l.name == k.layer), "kernel")}
  depthwise = integer_forms.has_depthwise_form(head.classifier)
  assert depthwise == (units <= 25)
  assert schemes["sc1"] == grids.PER_BLOCK_CHANNEL
  assert (schemes["classifier"] == grids.PER_ROW) == depthwise
  # sc1's dense form: one FULLY_CONNECTED kernel [M * U, D], a scale per
  # output unit; the classifier's depthwise filter: a scale per class.
  per_channel = [integer_forms.dense_kernel(head.hidden1)]
  if depthwise:
    per_channel.append(np.transpose(head.classifier.kernel.numpy()))
  for kernel in per_channel:
    values, scales = grids.int8_kernel(kernel)
    if (weight_target == "dynamic"
        and values.size < activation_simulator.DYNAMIC_MIN_WEIGHTS):
      continue  # the converter leaves small kernels float.
    assert _stored_per_channel(stored, values, scales), weight_target
  per_tensor = [k for k in kernels.quantized_kernels(network, weight_target)
                if k.scheme not in (grids.PER_CHANNEL, grids.PER_BLOCK_CHANNEL,
                                    grids.PER_ROW)]
  # The BATCH_MATMULs (sc2; the classifier when s2 > 25): their kernels
  # (dynamic), kernels and biases (int8).
  batch_matmuls = ["sc2"] if depthwise else ["sc2", "classifier"]
  assert sorted(k.layer for k in per_tensor) == sorted(
      batch_matmuls if weight_target == "dynamic"
      else [name for name in batch_matmuls for _ in range(2)])
  for kernel in per_tensor:
    if (weight_target == "dynamic"
        and kernel.variable.numpy().size < activation_simulator.DYNAMIC_MIN_WEIGHTS):
      continue  # the converter leaves small kernels float.
    values, scale, zero_point = grids.int8_tensor(kernel.variable.numpy(),
                                                kernel.scheme)
    layer = next(l for l in layer_walk.all_layers(network)
                 if l.name == kernel.layer)
    candidates = (_sc_layout_candidates(layer, values)
                  if kernel.variable is layer.kernel else [values])
    matches = [(v, s, z) for v, s, z in stored for c in candidates
               if v.shape == c.shape and np.array_equal(v, c)]
    assert matches, (weight_target, kernel.variable.path)
    _, scales, zero_points = matches[0]
    np.testing.assert_allclose(scales, [scale], rtol=1e-6)
    np.testing.assert_array_equal(zero_points, [zero_point])
