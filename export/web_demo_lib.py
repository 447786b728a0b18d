"""Builds and serves the web demo: the exported student classifying images in a page with LiteRT.js.

`build` turns a run directory (its `.tflite` files with their label files,
and `samples/*.png`) into a self-contained static site:

    <out>/index.html, app.js, preprocess.js, style.css   the page
    <out>/vendor/@litertjs/...      the pinned npm packages (JS + WASM)
    <out>/models/<name>.tflite      each model LiteRT.js can run, batch 1
    <out>/models/<name>.labels.txt, .verticals.txt
    <out>/samples/*.png             eval images to click on
    <out>/config.json               what the page loads

Each model's entry in `config.json` carries the background its transparent
pixels are composited onto (`alpha_background`, the run's
`task.data.alpha_background`, see `kc_keras/dataloaders/image_decoding.py`)
and where that value was read (`alpha_background_source`): a `.tflite`
file records no data config, so it is taken from the `params.yaml` of the
SavedModel export it was converted from when the run holds one
(`export_params`), else it is image_decoding's default, white, and the
source says so.

Nothing is fetched from elsewhere at page load. `serve` serves it on
loopback with the cross-origin isolation headers (COOP `same-origin`, COEP
`require-corp`) that LiteRT.js's threaded WASM build needs; the page uses
that build when the browser reports `crossOriginIsolated`, else the
single-threaded one.
"""

import dataclasses
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from typing import List, Optional, Sequence, Tuple

import yaml

from export import web_compat_lib

# realpath: under Bazel this module is a runfiles symlink; the page and its
# vendored node_modules live beside the real file.
PAGE_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)),
                        "web_demo_page")
PAGE_FILES = ("index.html", "app.js", "preprocess.js", "style.css")
# Files of the npm packages the page loads (paths under node_modules/).
VENDOR_FILES = (
    "@litertjs/core/dist/index.js",
    "@litertjs/core/wasm/litert_wasm_internal.js",
    "@litertjs/core/wasm/litert_wasm_internal.wasm",
    "@litertjs/core/wasm/litert_wasm_compat_internal.js",
    "@litertjs/core/wasm/litert_wasm_compat_internal.wasm",
    "@litertjs/core/wasm/litert_wasm_threaded_internal.js",
    "@litertjs/core/wasm/litert_wasm_threaded_internal.wasm",
    "@litertjs/core/wasm/litert_wasm_jspi_internal.js",
    "@litertjs/core/wasm/litert_wasm_jspi_internal.wasm",
    "@litertjs/wasm-utils/dist/index.js",
)
LABELS_SUFFIX = ".labels.txt"
VERTICALS_SUFFIX = ".verticals.txt"
SAMPLES_DIR = "samples"
DEFAULT_OUTPUT = "web"
SERVE_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
# Headless Chromium for tests and benchmarks (as root, on a machine with no
# network: no sandbox, no background connections).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-quic", "--no-first-run",
                 "--disable-background-networking",
                 "--disable-component-update", "--disable-sync")
# Where a run keeps its SavedModel exports and where an export records its
# config (export_saved_model_lib.ASSETS_EXTRA / PARAMS_FILE; not imported:
# this module loads no TensorFlow): <dir>/serving/<name>/<version>/...
SERVING_DIR = "serving"
EXPORT_PARAMS = os.path.join("assets.extra", "params.yaml")
# kc_keras.dataloaders.image_decoding.DEFAULT_ALPHA_BACKGROUND (tested equal).
DEFAULT_ALPHA_BACKGROUND = (1.0, 1.0, 1.0)
DEFAULT_BACKGROUND_SOURCE = (
    "default (kc_keras.dataloaders.image_decoding.DEFAULT_ALPHA_BACKGROUND): "
    "no params.yaml of a SavedModel export found for this model")
MIME_TYPES = {".wasm": "application/wasm", ".js": "text/javascript",
              ".mjs": "text/javascript", ".tflite": "application/octet-stream",
              ".json": "application/json", ".txt": "text/plain; charset=utf-8"}


class WebDemoError(ValueError):
  """The demo cannot be built as asked; the message names the file."""


@dataclasses.dataclass(frozen=True)
class BuiltModel:
  """A model of the page: its name, served path and size."""

  name: str
  path: str
  bytes: int
  alpha_background: Tuple[float, float, float] = DEFAULT_ALPHA_BACKGROUND
  alpha_background_source: str = DEFAULT_BACKGROUND_SOURCE


@dataclasses.dataclass(frozen=True)
class BuildResult:
  """What `build` wrote: the site directory, its models and what it skipped."""

  output_dir: str
  models: List[BuiltModel]
  skipped: List[dict]
  samples: List[str]


def vendor_npm_packages(page_dir: str = PAGE_DIR, npm: str = "npm") -> str:
  """Installs the pinned packages of `package-lock.json` (once); returns node_modules.

  `npm ci` installs exactly the lock's versions (checked against its
  integrity hashes); it runs again only when a vendored file is missing or
  the lock is newer than the installed tree.

  Raises:
    WebDemoError: npm missing or failing.
  """
  modules = os.path.join(page_dir, "node_modules")
  marker = os.path.join(modules, ".package-lock.json")
  lock = os.path.join(page_dir, "package-lock.json")
  fresh = (os.path.exists(marker)
           and os.path.getmtime(marker) >= os.path.getmtime(lock)
           and all(os.path.exists(os.path.join(modules, f))
                   for f in VENDOR_FILES))
  if fresh:
    return modules
  if shutil.which(npm) is None:
    raise WebDemoError(
        f"{npm!r} not found: install Node.js and npm to vendor the pinned "
        f"LiteRT.js packages of {lock}")
  result = subprocess.run(
      [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
      cwd=page_dir, capture_output=True, text=True, check=False)
  if result.returncode != 0:
    raise WebDemoError(f"npm ci in {page_dir} failed:\n{result.stderr}")
  missing = [f for f in VENDOR_FILES
             if not os.path.exists(os.path.join(modules, f))]
  if missing:
    raise WebDemoError(f"npm ci did not install {missing}")
  return modules


def find_models(run_dir: str) -> List[str]:
  """The `.tflite` files directly in `run_dir` that have both label files, sorted.

  Raises:
    WebDemoError: no such file.
  """
  if not os.path.isdir(run_dir):
    raise WebDemoError(f"{run_dir} is not a directory")
  models = sorted(
      os.path.join(run_dir, f) for f in os.listdir(run_dir)
      if f.endswith(".tflite")
      and os.path.isfile(os.path.join(run_dir, f + LABELS_SUFFIX))
      and os.path.isfile(os.path.join(run_dir, f + VERTICALS_SUFFIX)))
  if not models:
    raise WebDemoError(
        f"{run_dir} has no .tflite file with its {LABELS_SUFFIX} and "
        f"{VERTICALS_SUFFIX} files: export one with export.export_tflite")
  return models


def export_params(model_path: str) -> Optional[str]:
  """The `params.yaml` of the SavedModel export a `.tflite` was converted from, if the run has it.

  A `.tflite` records no data config. The run layouts that write one
  (scripts/run_demo.sh, the pipelines' last step) keep its SavedModel in
  `serving/<name>/<version>/` beside it, and name the file `<name>.tflite`
  or `<name>_<variant>.tflite`: the longest such `<name>` is taken, and its
  highest version that has `assets.extra/params.yaml` (the one the file was
  converted from when the exports are made in order).

  Returns:
    The path, or None when no export matches.
  """
  directory = os.path.dirname(os.path.abspath(model_path))
  stem = os.path.basename(model_path)[:-len(".tflite")]
  serving = os.path.join(directory, SERVING_DIR)
  if not os.path.isdir(serving):
    return None
  found = []
  for name in os.listdir(serving):
    if stem != name and not stem.startswith(name + "_"):
      continue
    base = os.path.join(serving, name)
    versions = [int(v) for v in os.listdir(base) if v.isdigit()
                and os.path.isfile(os.path.join(base, v, EXPORT_PARAMS))]
    if versions:
      found.append((len(name), max(versions),
                    os.path.join(base, str(max(versions)), EXPORT_PARAMS)))
  return max(found)[2] if found else None


def check_background(values, where: str) -> Tuple[float, float, float]:
  """`values` as 3 floats in [0, 1] (as image_decoding.check_background).

  Raises:
    WebDemoError: anything else, naming `where`.
  """
  values = list(values) if isinstance(values, (list, tuple)) else [values]
  if len(values) != 3 or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool)
      and 0.0 <= float(v) <= 1.0 for v in values):
    raise WebDemoError(
        f"{where}: alpha_background={values!r} must be 3 values (r, g, b) in "
        "[0, 1]")
  return tuple(float(v) for v in values)


def alpha_background(model_path: str
                     ) -> Tuple[Tuple[float, float, float], str]:
  """`(background, source)` of a model: its export's `task.data.alpha_background`, or the default.

  `source` is the `params.yaml` read (relative to the model's directory),
  or the reason the default was used.

  Raises:
    WebDemoError: an unreadable params.yaml or a bad value in it.
  """
  path = export_params(model_path)
  if path is None:
    return DEFAULT_ALPHA_BACKGROUND, DEFAULT_BACKGROUND_SOURCE
  shown = os.path.relpath(path, os.path.dirname(os.path.abspath(model_path)))
  try:
    with open(path, encoding="utf-8") as f:
      saved = yaml.safe_load(f)
  except (OSError, yaml.YAMLError) as e:
    raise WebDemoError(f"{path} could not be read: {e}") from e
  data = ((saved or {}).get("task") or {}).get("data") or {}
  if data.get("alpha_background") is None:
    # An export made before the field existed: its training dropped alpha.
    return DEFAULT_ALPHA_BACKGROUND, (
        f"default (kc_keras.dataloaders.image_decoding.DEFAULT_ALPHA_"
        f"BACKGROUND): {shown} has no task.data.alpha_background")
  return check_background(data["alpha_background"], path), shown


def _copy(src: str, dst: str) -> None:
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  shutil.copyfile(src, dst)


def build(run_dir: Optional[str] = None, output_dir: Optional[str] = None,
          models: Sequence[str] = (), samples: Sequence[str] = (),
          node_modules: Optional[str] = None,
          background: Optional[Sequence[float]] = None) -> BuildResult:
  """Writes the static site for `run_dir` (see the module docstring).

  Args:
    run_dir: a run directory holding exported `.tflite` files (and
      optionally `samples/*.png`); default output `<run_dir>/web`.
    output_dir: where the site is written (replaced).
    models: `.tflite` files to include instead of those of `run_dir`.
    samples: images to offer instead of `<run_dir>/samples/*`.
    node_modules: a vendored node_modules (default: `vendor_npm_packages()`).
    background: `(r, g, b)` in [0, 1] behind transparent pixels for every
      model, instead of each model's `alpha_background()`.

  Returns:
    A `BuildResult`; models LiteRT.js cannot run are in `skipped` with
    the reason (`web_compat_lib.problems`), never in the page.

  Raises:
    WebDemoError: no model, no output directory, no model the page can
      run, or a bad background (given or in an export's params.yaml).
  """
  if not models:
    if run_dir is None:
      raise WebDemoError("pass a run directory or the .tflite files")
    models = find_models(run_dir)
  if output_dir is None:
    if run_dir is None:
      raise WebDemoError("pass output_dir when no run directory is given")
    output_dir = os.path.join(run_dir, DEFAULT_OUTPUT)
  if not samples and run_dir is not None:
    sample_dir = os.path.join(run_dir, SAMPLES_DIR)
    if os.path.isdir(sample_dir):
      samples = sorted(os.path.join(sample_dir, f)
                       for f in os.listdir(sample_dir)
                       if f.lower().endswith((".png", ".jpg", ".jpeg")))
  if background is not None:
    background = check_background(background, "build(background=...)")
  node_modules = node_modules or vendor_npm_packages()

  built, skipped = [], []
  entries = []
  staged = output_dir.rstrip("/") + ".partial"
  shutil.rmtree(staged, ignore_errors=True)
  for path in models:
    name = os.path.basename(path)[:-len(".tflite")]
    for suffix in ("", LABELS_SUFFIX, VERTICALS_SUFFIX):
      if not os.path.isfile(path + suffix):
        raise WebDemoError(f"{path + suffix} not found")
    with open(path, "rb") as f:
      content = f.read()
    found = web_compat_lib.problems(content)
    if found:
      skipped.append({"name": name, "reason": "; ".join(found)})
      continue
    content = web_compat_lib.fix_batch_dimension(content)
    if background is None:
      rgb, rgb_source = alpha_background(path)
    else:
      rgb, rgb_source = background, "given to the build"
    served = f"models/{name}.tflite"
    os.makedirs(os.path.join(staged, "models"), exist_ok=True)
    with open(os.path.join(staged, served), "wb") as f:
      f.write(content)
    for suffix in (LABELS_SUFFIX, VERTICALS_SUFFIX):
      _copy(path + suffix, os.path.join(staged, served + suffix))
    built.append(BuiltModel(name, os.path.join(output_dir, served),
                            len(content), rgb, rgb_source))
    entries.append({"name": name, "file": served,
                    "labels": served + LABELS_SUFFIX,
                    "verticals": served + VERTICALS_SUFFIX,
                    "bytes": len(content),
                    "alpha_background": list(rgb),
                    "alpha_background_source": rgb_source})
  if not built:
    raise WebDemoError(
        "no model LiteRT.js can run: " + "; ".join(
            f"{s['name']}: {s['reason']}" for s in skipped))
  sample_entries = []
  for i, path in enumerate(samples):
    served = f"{SAMPLES_DIR}/{i:03d}_{os.path.basename(path)}"
    _copy(path, os.path.join(staged, served))
    sample_entries.append({"name": os.path.basename(path), "file": served})
  for name in PAGE_FILES:
    _copy(os.path.join(PAGE_DIR, name), os.path.join(staged, name))
  for name in VENDOR_FILES:
    _copy(os.path.join(node_modules, name),
          os.path.join(staged, "vendor", name))
  with open(os.path.join(staged, "config.json"), "w", encoding="utf-8") as f:
    json.dump({"models": entries, "samples": sample_entries,
               "skipped": skipped}, f, indent=1)
  shutil.rmtree(output_dir, ignore_errors=True)
  os.replace(staged, output_dir)
  return BuildResult(output_dir, built, skipped,
                     [os.path.join(output_dir, e["file"])
                      for e in sample_entries])


class _Handler(http.server.SimpleHTTPRequestHandler):
  """Static files with the isolation headers; quiet unless asked."""

  extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                    **MIME_TYPES}

  def __init__(self, *args, verbose: bool = False, **kwargs):
    self.verbose = verbose
    super().__init__(*args, **kwargs)

  def end_headers(self):
    for key, value in SERVE_HEADERS.items():
      self.send_header(key, value)
    super().end_headers()

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    if self.verbose:
      super().log_message(format, *args)


class _Server(http.server.ThreadingHTTPServer):
  """Drops the traceback of a browser that closed its connection mid-file."""

  daemon_threads = True

  def handle_error(self, request, client_address):
    if not isinstance(sys.exc_info()[1], ConnectionError):
      super().handle_error(request, client_address)


def make_server(site_dir: str, host: str = "127.0.0.1", port: int = 8000,
                verbose: bool = False) -> http.server.ThreadingHTTPServer:
  """An HTTP server for `site_dir` (port 0: any free port); not started."""
  if not os.path.isfile(os.path.join(site_dir, "index.html")):
    raise WebDemoError(f"{site_dir} has no index.html: build it first")
  handler = functools.partial(_Handler, directory=site_dir, verbose=verbose)
  return _Server((host, port), handler)


def serve_in_thread(site_dir: str, host: str = "127.0.0.1", port: int = 0):
  """Starts `make_server` in a daemon thread; returns `(server, url)`."""
  server = make_server(site_dir, host, port)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  bound_host, bound_port = server.server_address[:2]
  return server, f"http://{bound_host}:{bound_port}/"
