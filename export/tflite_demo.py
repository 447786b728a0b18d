"""On-device demo: `python -m export.tflite_demo --model=M.tflite IMAGES...` (no TensorFlow)."""

import sys

from absl import app
from absl import flags

from export import tflite_demo_lib

_MODEL = flags.DEFINE_string("model", None, "The .tflite file (labels next to it).")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Classes printed per image.")
_NUM_THREADS = flags.DEFINE_integer("num_threads", 1, "Interpreter threads.")

# Exit codes: some images could not be classified / nothing could run.
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


def main(argv):
  images = argv[1:]
  try:
    predictions, errors = tflite_demo_lib.run(
        _MODEL.value, images, _TOP_K.value, num_threads=_NUM_THREADS.value)
  except tflite_demo_lib.DemoError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_USAGE
  for prediction in predictions:
    print(tflite_demo_lib.format_prediction(prediction))
  for error in errors:
    print(f"error: {error}", file=sys.stderr)
  return EXIT_SOME_FAILED if errors else 0


if __name__ == "__main__":
  flags.mark_flag_as_required("model")
  app.run(main)
