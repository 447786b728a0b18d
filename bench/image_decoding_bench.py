"""Cost of `image_decoding.decode_and_resize` against a bare `tf.io.decode_image`.

Run by hand: `python bench/image_decoding_bench.py`. Decodes 16 random-noise
500 x 375 images per format and resizes them to 64 px, inside one
`tf.function` (`tf.map_fn`), and prints the median and minimum ms per image
over 15 interleaved repeats. Results go to docs/DATA.md.
"""

import io
import time

import numpy as np
from PIL import Image
import tensorflow as tf

from kc_keras.dataloaders import image_decoding

SIZE = 64
IMAGES = 16
REPEATS = 15
CASES = (("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "RGBA"))


def _files(fmt, mode, rng):
  out = []
  for _ in range(IMAGES):
    pixels = (rng.rand(375, 500, 4) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").convert(mode).save(buffer, fmt)
    out.append(buffer.getvalue())
  return tf.constant(out)


def _bare(encoded):
  """The decode before `image_decoding`: alpha dropped, no EXIF, 8 bits."""
  image = tf.image.convert_image_dtype(
      tf.io.decode_image(encoded, channels=3, expand_animations=False),
      tf.float32)
  return tf.clip_by_value(
      tf.image.resize(image, [SIZE, SIZE], antialias=True), 0.0, 1.0)


def _ours(encoded):
  return image_decoding.decode_and_resize(encoded, SIZE, 3)


def main():
  rng = np.random.RandomState(0)
  runs = {}
  for fmt, mode in CASES:
    data = _files(fmt, mode, rng)
    for name, fn in (("tf.io.decode_image", _bare), ("decode_and_resize", _ours)):
      run = tf.function(lambda x, fn=fn: tf.map_fn(
          lambda e: tf.reduce_sum(fn(e)), x, fn_output_signature=tf.float32))
      run(data)
      runs[(fmt, mode, name)] = (run, data, [])
  for _ in range(REPEATS):
    for run, data, times in runs.values():
      start = time.perf_counter()
      run(data).numpy()
      times.append((time.perf_counter() - start) / IMAGES * 1000)
  print("| file | decode | median ms/image | min ms/image |")
  print("|---|---|---|---|")
  for (fmt, mode, name), (_, _, times) in runs.items():
    print(f"| {fmt} {mode} | {name} | {np.median(times):.2f} | {min(times):.2f} |")


if __name__ == "__main__":
  main()
