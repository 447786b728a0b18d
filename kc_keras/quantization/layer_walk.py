"""A network's layers as the quantization steps visit them: all of them, or in inference order."""

from typing import List

import keras

from kc_keras.modeling import backbones
from kc_keras.quantization import errors


def all_layers(network: keras.Model) -> List[keras.layers.Layer]:
  """Every layer of `network`, nested models and custom layers' sub-layers included.

  The head's hidden and classifier layers sit inside a custom layer; Keras
  tracks them all in `_flatten_layers`.
  """
  return list(network._flatten_layers(include_self=False, recursive=True))  # pylint: disable=protected-access


def inference_layers(network: keras.Model) -> List[keras.layers.Layer]:
  """The network's layers in inference order, for a layer-by-layer forward.

  Backbone layers (a chain: each consumes the previous one's output), then
  the head's hidden1, hidden2 and classifier (its dropouts are the identity
  in inference), then the self-paced scale: `ClassificationHead.call` and
  `HierarchicalClassifier` at inference. `ActivationSimulator` checks the
  walk against `network(x)` once (`check_walk`).

  Args:
    network: a `HierarchicalClassifier`.

  Returns:
    The layers in call order.

  Raises:
    QuantizationError: the backbone is not a chain of single layers
      (keras.applications backbones): name of the first layer that is not.
  """
  try:
    chain = backbones.chain_layers(network.backbone)
  except ValueError as e:
    raise errors.QuantizationError(
        f"activation simulation needs a chain backbone (small_cnn); {e}; use "
        "activations='none'") from None
  head = network.head
  return chain + [head.hidden1, head.hidden2, head.classifier,
                  network.self_paced]
