"""Exports a trained checkpoint as a TF Serving SavedModel (absl binary)."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from export import export_saved_model_lib  # noqa: E402
from kc_keras.training import experiment_runner  # noqa: E402

flags.DEFINE_string("experiment", None, "Registered experiment name (kc_*).")
flags.DEFINE_multi_string("config_file", None,
                          "YAML overrides, applied in order.")
flags.DEFINE_string("params_override", None,
                    "Last override: YAML/JSON string or 'a.b=1,c=2'.")
flags.DEFINE_string("checkpoint_path", None,
                    "A ckpt-N prefix or a model_dir (its latest checkpoint).")
flags.DEFINE_string("export_dir", None,
                    "TF Serving model root: writes <it>/<model_name>/<version>/.")
flags.DEFINE_integer("version", None,
                     "Version number (default: next after existing ones).")
flags.DEFINE_string("model_name", None, "Served name (default: --experiment).")
flags.DEFINE_integer("top_k", 5, "Classes returned per image.")
flags.DEFINE_integer("max_image_pixels", 64_000_000,
                     "Encoded images claiming more pixels are refused.")
flags.DEFINE_string("serving_base_path", "/models",
                    "Where TF Serving sees --export_dir (for models.config).")
flags.mark_flags_as_required(["experiment", "checkpoint_path", "export_dir"])

FLAGS = flags.FLAGS


def main(_):
  params = experiment_runner.parse_configuration(FLAGS)
  config = export_saved_model_lib.ServingConfig(
      top_k=FLAGS.top_k, max_image_pixels=FLAGS.max_image_pixels,
      serving_base_path=FLAGS.serving_base_path)
  result = export_saved_model_lib.export_saved_model(
      params, FLAGS.checkpoint_path, FLAGS.export_dir,
      model_name=FLAGS.model_name, version=FLAGS.version, config=config,
      experiment_name=FLAGS.experiment)
  logging.info("Exported %s (from %s); TF Serving config: %s",
               result.version_dir, result.checkpoint, result.models_config)
  print(result.version_dir)


if __name__ == "__main__":
  app.run(main)
