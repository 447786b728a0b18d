"""Exports a trained checkpoint as a TF Serving SavedModel (absl binary)."""

from kc_keras.common import startup

startup.quiet_tensorflow()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from kc_keras.common import flags as kc_flags  # noqa: E402

kc_flags.define_experiment_flags()
kc_flags.define_checkpoint_flag()
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
  # TensorFlow loads here, not at import, so that --help answers at once.
  from export import export_saved_model_lib  # pylint: disable=g-import-not-at-top
  from kc_keras.training import experiment_runner  # pylint: disable=g-import-not-at-top
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
