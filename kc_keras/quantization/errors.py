"""The error every quantization module raises for a request it cannot honour."""


class QuantizationError(ValueError):
  """A quantization step cannot run as asked; the message names the offending input."""
