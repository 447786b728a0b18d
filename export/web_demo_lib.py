"""Builds and serves the web demo: the exported student classifying images in a page with LiteRT.js.

`build` turns a run directory (its `.tflite` files with their label files,
and `samples/*.png`) into a self-contained static site:

    <out>/index.html, app.js, preprocess.js, style.css   the page
    <out>/vendor/@litertjs/...      the pinned npm packages (JS + WASM)
    <out>/models/<name>.tflite      each model LiteRT.js can run, batch 1
    <out>/models/<name>.labels.txt, .verticals.txt
    <out>/samples/*.png             eval images to click on
    <out>/config.json               what the page loads

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
from typing import List, Optional, Sequence

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


def _copy(src: str, dst: str) -> None:
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  shutil.copyfile(src, dst)


def build(run_dir: Optional[str] = None, output_dir: Optional[str] = None,
          models: Sequence[str] = (), samples: Sequence[str] = (),
          node_modules: Optional[str] = None) -> BuildResult:
  """Writes the static site for `run_dir` (see the module docstring).

  Args:
    run_dir: a run directory holding exported `.tflite` files (and
      optionally `samples/*.png`); default output `<run_dir>/web`.
    output_dir: where the site is written (replaced).
    models: `.tflite` files to include instead of those of `run_dir`.
    samples: images to offer instead of `<run_dir>/samples/*`.
    node_modules: a vendored node_modules (default: `vendor_npm_packages()`).

  Returns:
    A `BuildResult`; models LiteRT.js cannot run are in `skipped` with
    the reason (`web_compat_lib.problems`), never in the page.

  Raises:
    WebDemoError: no model, no output directory, or no model the page can
      run.
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
    served = f"models/{name}.tflite"
    os.makedirs(os.path.join(staged, "models"), exist_ok=True)
    with open(os.path.join(staged, served), "wb") as f:
      f.write(content)
    for suffix in (LABELS_SUFFIX, VERTICALS_SUFFIX):
      _copy(path + suffix, os.path.join(staged, served + suffix))
    built.append(BuiltModel(name, os.path.join(output_dir, served),
                            len(content)))
    entries.append({"name": name, "file": served,
                    "labels": served + LABELS_SUFFIX,
                    "verticals": served + VERTICALS_SUFFIX,
                    "bytes": len(content)})
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
