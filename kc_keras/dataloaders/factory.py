"""Builds the `ExampleSource` named by `DataConfig.source`."""

from kc_keras.dataloaders.sources import ExampleSource


def build_source(data_config) -> ExampleSource:
  """Returns the source for `data_config.source` with its sub-config.

  Args:
    data_config: a `DataConfig`.

  Returns:
    An `ExampleSource` whose `label_ids` have width `max_labels_per_example`.

  Raises:
    ValueError: unknown source or invalid config (naming the key path).
  """
  data_config.validate()
  name = data_config.source
  max_labels = data_config.max_labels_per_example
  decoding = dict(alpha_background=tuple(data_config.alpha_background))
  # Imported here so that, e.g., TFDS is only imported when used.
  if name == "embedded":
    from kc_keras.dataloaders.sources import embedded
    return embedded.EmbeddedSource(data_config.embedded, max_labels)
  if name == "omniglot":
    from kc_keras.dataloaders.sources import omniglot
    return omniglot.OmniglotSource(data_config.omniglot, max_labels)
  if name == "folder":
    from kc_keras.dataloaders.sources import folder
    return folder.FolderSource(data_config.folder, max_labels, **decoding)
  if name == "tfrecord":
    from kc_keras.dataloaders.sources import tfrecord
    return tfrecord.TFRecordSource(data_config.tfrecord, max_labels, **decoding)
  if name == "tfds":
    from kc_keras.dataloaders.sources import tfds
    return tfds.TFDSSource(data_config.tfds, max_labels, **decoding)
  raise ValueError(f"data.source={name!r} is not a known source")
