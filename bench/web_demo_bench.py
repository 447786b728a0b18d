"""Measures the TFLite variants in the web demo (headless Chromium, LiteRT.js) and prints a markdown table.

For each variant: file size, LiteRT.js WASM load and model load time,
median inference latency per image in the page, and top-1 agreement of the
page with the Python LiteRT interpreter (same file) and with the Keras
model, on eval images written as PNG files and classified through the
page's own decode and resize. Variants LiteRT.js cannot run are listed
with the reason the build gives.

  python bench/web_demo_bench.py --experiment=kc_student_demo \
    --checkpoint_path=runs/demo/student_fc_sc_d_s_vertical \
    --saved_model_dir=runs/demo/serving/kc_student_demo/1 \
    --work_dir=runs/demo/web_bench
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from export import export_tflite_lib  # noqa: E402
from export import parity_lib  # noqa: E402
from export import tflite_demo_lib  # noqa: E402
from export import web_demo_lib  # noqa: E402
from kc_keras.training import experiment_runner  # noqa: E402
from kc_keras.training import restore  # noqa: E402

flags.DEFINE_string("experiment", None, "Registered experiment name (kc_*).")
flags.DEFINE_multi_string("config_file", None, "YAML overrides.")
flags.DEFINE_string("params_override", None, "Last override.")
flags.DEFINE_string("checkpoint_path", None, "ckpt-N prefix or model_dir.")
flags.DEFINE_string("saved_model_dir", None, "Its export (version dir).")
flags.DEFINE_string("work_dir", None, "Where variants, PNGs and the site go.")
flags.DEFINE_list("quantizations",
                  ["none", "fp16", "dynamic", "int8_float_head", "int16x8",
                   "int8"], "TFLite variants to convert and measure.")
flags.DEFINE_integer("max_examples", 200, "Eval images classified per variant.")
flags.DEFINE_integer("representative_examples", 200,
                     "Training images calibrating int8/int16x8.")
flags.DEFINE_bool("single_threaded_row", True,
                  "Also measure the first variant with ?threads=0.")
flags.mark_flags_as_required(["experiment", "checkpoint_path",
                              "saved_model_dir", "work_dir"])

FLAGS = flags.FLAGS
_EVAL_BATCH = 256
_PAGE_TIMEOUT_MS = 120_000
_CLASSIFY_ALL = """async (files) => {
  const out = [];
  for (const file of files) {
    const blob = await (await fetch(file)).blob();
    const result = await window.kcDemo.classifyBlob(blob, file);
    if (!result) throw new Error(document.getElementById('status').textContent);
    out.push({id: result.top[0].id, latencyMs: result.latencyMs,
              logits: result.logits});
  }
  return out;
}"""


def _write_pngs(images: np.ndarray, output_dir: str) -> list:
  """float [0, 1] `[E, H, W, C]` -> PNG files (as export.sample_images writes)."""
  os.makedirs(output_dir, exist_ok=True)
  paths = []
  for i, image in enumerate(images):
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    paths.append(os.path.join(output_dir, f"eval_{i}.png"))
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(
        paths[-1])
  return paths


def _page_rows(browser, url, model, query, samples, served, python_top1,
               python_logits, keras_top1):
  page = browser.new_page()
  page.set_default_timeout(_PAGE_TIMEOUT_MS)
  page.goto(f"{url}?model={model.name}{query}")
  page.wait_for_function(
      "['ready', 'error'].includes(document.body.dataset.state)")
  if page.evaluate("document.body.dataset.state") != "ready":
    raise RuntimeError(page.locator("#status").inner_text())
  wasm_ms = float(page.evaluate("document.body.dataset.wasmMs"))
  load_ms = float(page.evaluate("document.body.dataset.loadMs"))
  info = page.locator("#model-info").inner_text()
  shown = page.evaluate(_CLASSIFY_ALL, served)
  page.close()
  top1 = np.asarray([s["id"] for s in shown])
  logits = np.asarray([s["logits"] for s in shown], np.float32)
  latencies = [s["latencyMs"] for s in shown][1:]  # the first call warms up
  return dict(
      wasm_ms=wasm_ms, load_ms=load_ms, threaded="threaded" in info,
      median_ms=float(np.median(latencies)),
      p90_ms=float(np.percentile(latencies, 90)),
      python_agree=float(np.mean(top1 == python_top1)),
      max_logit_diff=float(np.abs(logits - python_logits).max()),
      keras_agree=float(np.mean(top1 == keras_top1)), count=len(samples))


def main(_):
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  params = experiment_runner.parse_configuration(FLAGS)
  network, _, _, _ = restore.load_network(
      params, FLAGS.checkpoint_path)
  os.makedirs(FLAGS.work_dir, exist_ok=True)
  models, not_converted = [], []
  for quantization in FLAGS.quantizations:
    path = os.path.join(FLAGS.work_dir, f"model_{quantization}.tflite")
    try:
      export_tflite_lib.export_tflite(
          FLAGS.saved_model_dir, path, quantization, params=params,
          representative_examples=FLAGS.representative_examples)
    except (export_tflite_lib.TFLiteExportError, RuntimeError) as e:
      # The converter's own refusal (e.g. an op without an int16x8 kernel).
      not_converted.append((quantization, str(e).splitlines()[-1]))
      continue
    models.append(path)
  images = parity_lib.eval_images(params, FLAGS.max_examples, _EVAL_BATCH)
  keras_top1 = np.argmax(np.asarray(network(images, training=False)), -1)
  samples = _write_pngs(images, os.path.join(FLAGS.work_dir, "samples"))
  result = web_demo_lib.build(output_dir=os.path.join(FLAGS.work_dir, "web"),
                              models=models, samples=samples)
  served = [os.path.relpath(p, result.output_dir) for p in result.samples]
  server, url = web_demo_lib.serve_in_thread(result.output_dir)
  rows = []
  try:
    with sync_playwright() as playwright:
      browser = playwright.chromium.launch(
          executable_path=web_demo_lib.CHROMIUM,
          args=list(web_demo_lib.CHROMIUM_ARGS))
      runs = [(m, "") for m in result.models]
      if FLAGS.single_threaded_row:
        runs.append((result.models[0], "&threads=0"))
      for model, query in runs:
        classifier = tflite_demo_lib.TFLiteClassifier(model.path)
        python_logits = np.concatenate([
            classifier.logits(tflite_demo_lib.load_image(
                p, *classifier.image_shape[1:])[None]) for p in samples])
        row = _page_rows(browser, url, model, query, samples, served,
                         np.argmax(python_logits, -1), python_logits,
                         keras_top1)
        rows.append((model, row))
      browser.close()
  finally:
    server.shutdown()
  print(f"{len(samples)} eval images ({FLAGS.experiment}); load average "
        f"{os.getloadavg()}")
  print("| variant | bytes | threads | WASM load ms | model load ms | "
        "median (p90) ms/image | top-1 = Python interpreter | max logit diff "
        "| top-1 = Keras |")
  print("|---|---|---|---|---|---|---|---|---|")
  for model, row in rows:
    print(f"| {model.name} | {model.bytes} | "
          f"{'yes' if row['threaded'] else 'no'} | {row['wasm_ms']:.0f} | "
          f"{row['load_ms']:.0f} | {row['median_ms']:.2f} ({row['p90_ms']:.2f})"
          f" | {row['python_agree']:.1%} | {row['max_logit_diff']:.1e} | "
          f"{row['keras_agree']:.1%} |")
  for quantization, reason in not_converted:
    print(f"| model_{quantization} | not converted: {reason} |")
  for skipped in result.skipped:
    print(f"| {skipped['name']} | not run: {skipped['reason']} |")


if __name__ == "__main__":
  app.run(main)
