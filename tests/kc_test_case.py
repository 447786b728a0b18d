"""The shared test harness for kc_keras layers and models (after keras-hub's TestCase).

Every layer test calls `run_layer_test`, every model test `run_model_saving_test`,
so a new layer gets the same checks for free:
  - the output shape;
  - serialization: `get_config` -> `from_config` gives the same config, and
    the clone with the layer's weights gives the same outputs; the same
    through `keras.saving.serialize_keras_object` (the registered name);
  - gradients: every trainable weight and the input receive a non-zero
    gradient of the weight's (input's) shape;
  - the exported form: where `kc_keras.quantization.integer_forms` has an
    integer-friendly form for the layer's type, it computes the same
    function as `call` (`run_quantization_test`).
"""

import os
import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from kc_keras.quantization import integer_forms

# The exported (integer-friendly) forms reorder float sums (one matmul
# instead of a gather and a batched matmul): a few float32 ulps of the
# logits' magnitude on the small inputs these tests use.
EXPORTED_FORM_ATOL = 1e-5


class TestCase(tf.test.TestCase, parameterized.TestCase):
  """`tf.test.TestCase` with the layer and model checks every test shares."""

  def run_layer_test(self, layer_cls, init_kwargs, input_data,
                     expected_output_shape, call_kwargs=None,
                     expect_trainable_weights=True):
    """Builds, calls and checks one layer; returns `(layer, output)`.

    Args:
      layer_cls: the Keras layer class.
      init_kwargs: its constructor arguments.
      input_data: a float32 array the layer is called on.
      expected_output_shape: the output's full shape.
      call_kwargs: extra `call` arguments (e.g. `training=False`).
      expect_trainable_weights: False for layers without trainable weights
        (e.g. a fixed scaling); their absence is then asserted.

    Returns:
      The built layer and its output (numpy).
    """
    call_kwargs = dict(call_kwargs or {})
    layer = layer_cls(**init_kwargs)
    output = np.asarray(layer(input_data, **call_kwargs))
    self.assertEqual(output.shape, tuple(expected_output_shape))

    config = layer.get_config()
    clone = layer_cls.from_config(config)
    self.assertEqual(clone.get_config(), config)
    clone(input_data, **call_kwargs)
    clone.set_weights(layer.get_weights())
    self.assertAllClose(clone(input_data, **call_kwargs), output, atol=1e-6)
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    self.assertIsInstance(revived, layer_cls)
    self.assertEqual(revived.get_config(), config)

    self._check_gradients(layer, input_data, call_kwargs,
                          expect_trainable_weights)
    if integer_forms.has_form(layer):
      self.run_quantization_test(layer, input_data)
    return layer, output

  def run_quantization_test(self, layer, input_data,
                            atol=EXPORTED_FORM_ATOL, rtol=0.0):
    """The layer's integer-friendly form equals its inference call within a bound.

    Args:
      layer: a built layer whose type has a registered form.
      input_data: what both are computed on.
      atol: absolute bound (float reordering of the same sums).
      rtol: relative bound.

    Returns:
      The form's output (numpy).
    """
    exported = np.asarray(integer_forms.integer_call(layer, input_data))
    self.assertAllClose(exported, np.asarray(layer(input_data,
                                                   training=False)),
                        atol=atol, rtol=rtol)
    return exported

  def _check_gradients(self, layer, input_data, call_kwargs,
                       expect_trainable_weights):
    inputs = tf.constant(input_data)
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      # A random projection: the sum of squares could vanish under ReLU.
      outputs = layer(inputs, **call_kwargs)
      weights = tf.constant(np.random.default_rng(0).normal(
          size=outputs.shape).astype(np.float32))
      loss = tf.reduce_sum(tf.cast(outputs, tf.float32) * weights)
    trainable = layer.trainable_weights
    if not expect_trainable_weights:
      self.assertEmpty(trainable)
    else:
      self.assertNotEmpty(trainable)
    grads = tape.gradient(loss, [inputs] + list(trainable))
    for variable, grad in zip([inputs] + list(trainable), grads):
      name = getattr(variable, "path", "the input")
      self.assertIsNotNone(grad, name)
      grad = tf.convert_to_tensor(grad)
      self.assertEqual(grad.shape, variable.shape, name)
      self.assertGreater(float(tf.reduce_sum(tf.abs(grad))), 0.0, name)

  def run_model_saving_test(self, model, input_data):
    """A `.keras` save/load round trip gives the same class, config and outputs.

    Args:
      model: a built Keras model (ideally trained a step, so that weights
        and batch-norm statistics are not their initial values).
      input_data: what the outputs are compared on.

    Returns:
      The loaded model.
    """
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "model.keras")
      model.save(path)
      loaded = keras.saving.load_model(path)
    self.assertIsInstance(loaded, type(model))
    self.assertEqual(loaded.get_config(), model.get_config())
    self.assertAllEqual(loaded(input_data, training=False),
                        model(input_data, training=False))
    return loaded
