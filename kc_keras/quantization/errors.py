"""The error every quantization module raises for a request it cannot honour."""


class QuantizationError(ValueError):
  """A quantization step cannot run as asked; the message names the offending input."""


def check_choice(name: str, value, choices):
  """Returns `value` if it is one of `choices`.

  Args:
    name: the setting's name, for the message (e.g. "activations").
    value: what was asked for.
    choices: the accepted values.

  Returns:
    `value`.

  Raises:
    QuantizationError: `value` is not in `choices`; the message names both.
  """
  if value not in choices:
    raise QuantizationError(f"{name}={value!r}; use one of {tuple(choices)}")
  return value
