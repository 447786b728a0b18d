"""Web demo: `python -m export.web_demo --run=DIR` builds the page for a run and serves it on 127.0.0.1."""

import sys

from absl import app
from absl import flags

from export import web_demo_lib

_RUN = flags.DEFINE_string(
    "run", None, "Run directory holding exported .tflite files with their "
    "label files (and samples/*.png), e.g. runs/demo.")
_MODEL = flags.DEFINE_multi_string(
    "model", [], "A .tflite file to include instead of the run's (repeatable).")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Where the site is written (default <run>/web).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address served on.")
_PORT = flags.DEFINE_integer("port", 8000, "Port served on (0: any free one).")
_BUILD_ONLY = flags.DEFINE_bool("build_only", False,
                                "Write the site and exit without serving.")

EXIT_USAGE = 2


def main(_):
  try:
    result = web_demo_lib.build(_RUN.value, _OUTPUT_DIR.value,
                                models=_MODEL.value)
  except web_demo_lib.WebDemoError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_USAGE
  for model in result.models:
    print(f"model: {model.path} ({model.bytes} bytes)")
  for skipped in result.skipped:
    print(f"skipped {skipped['name']}: {skipped['reason']}", file=sys.stderr)
  print(f"site: {result.output_dir} ({len(result.samples)} sample images)")
  if _BUILD_ONLY.value:
    return 0
  server = web_demo_lib.make_server(result.output_dir, _HOST.value, _PORT.value)
  host, port = server.server_address[:2]
  print(f"Open http://{host}:{port}/ in a browser (Ctrl-C stops the server).",
        flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
  return 0


if __name__ == "__main__":
  flags.register_validator(
      "run", lambda run: run is not None or bool(flags.FLAGS.model),
      message="pass --run=DIR (or --model=FILE.tflite with --output_dir)")
  app.run(main)
