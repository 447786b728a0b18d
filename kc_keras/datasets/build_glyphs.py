"""Builds a registered glyph dataset from installed Debian font packages."""

from kc_keras.common import startup

startup.quiet_tensorflow()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from kc_keras.datasets.glyphs import builder  # noqa: E402
from kc_keras.datasets.glyphs import packages  # noqa: E402
from kc_keras.datasets.glyphs import sizes  # noqa: E402

flags.DEFINE_enum("size", "glyphs_small", sorted(sizes.SIZES),
                  "Which registered glyph dataset to build.")
flags.DEFINE_string("output_dir", None, "Where the shards and tables go.")
flags.DEFINE_integer("image_size", builder.DEFAULT_IMAGE_SIZE,
                     "Side of the square images in pixels.")
flags.DEFINE_integer("examples_per_shard", builder.DEFAULT_EXAMPLES_PER_SHARD,
                     "Records per TFRecord file.")
flags.DEFINE_integer("seed", 0, "Seed of the record order.")
flags.DEFINE_bool("list_packages", False,
                  "Print the `apt-get install` line of --size and exit.")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  size = sizes.get_size(FLAGS.size)
  if FLAGS.list_packages:
    print("apt-get install -y " + " ".join(size.required_packages))
    return 0
  if not FLAGS.output_dir:
    raise app.UsageError("--output_dir is required")
  try:
    manifest = builder.build(
        size, FLAGS.output_dir, image_size=FLAGS.image_size,
        examples_per_shard=FLAGS.examples_per_shard, seed=FLAGS.seed,
        log=lambda line: logging.info("%s", line))
  except packages.MissingPackagesError as e:
    raise SystemExit(str(e)) from None
  counts = manifest["counts"]
  print(f"{size.name}: {counts['classes']} classes, {counts['verticals']} verticals, "
        f"{counts['train_images']} train + {counts['eval_images']} eval images; "
        f"fingerprint {manifest['fingerprint']}")
  return 0


if __name__ == "__main__":
  app.run(main)
