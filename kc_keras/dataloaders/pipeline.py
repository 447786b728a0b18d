"""tf.data input pipeline: source -> (images, features) batches, reproducible."""

from typing import Optional

import tensorflow as tf

from kc_keras.dataloaders import augment as augment_lib
from kc_keras.dataloaders import data_errors
from kc_keras.dataloaders import labels as labels_lib

# Salts separating the random streams derived from `data_config.seed`.
_SHUFFLE_SALT, _NEGATIVES_SALT, _AUGMENT_SALT = 11, 12, 13
_EPOCH_KEY = "_epoch"


def _stream(seed: int, salt: int) -> tf.Tensor:
  return tf.constant([seed, salt], tf.int64)


def _shuffle_seed(seed: int) -> int:
  # tf.data takes a Python int64 seed; mix in the salt so it differs from `seed`.
  return (seed * 1_000_003 + _SHUFFLE_SALT) % (2**63 - 1)


def zip_extra(dataset: tf.data.Dataset, extra: tf.data.Dataset) -> tf.data.Dataset:
  """Zips `extra` (same order, dicts with `example_id`) into the raw elements.

  Raises:
    ValueError: `extra` is not a dict dataset with `example_id`, repeats a key of
      the source, or has a known length different from the source's.
    tf.errors.InvalidArgumentError: at run time, when the `example_id`s differ.
  """
  spec = extra.element_spec
  if not isinstance(spec, dict) or "example_id" not in spec:
    raise ValueError(
        f"extra must be a dataset of dicts with an 'example_id' key, got {spec}")
  clash = sorted(set(spec) & set(dataset.element_spec) - {"example_id"})
  if clash:
    raise ValueError(f"extra repeats keys of the source: {clash}")
  n_src, n_extra = int(dataset.cardinality()), int(extra.cardinality())
  if n_src >= 0 and n_extra >= 0 and n_src != n_extra:
    raise ValueError(
        f"extra has {n_extra} elements but the source split has {n_src}")

  def merge(element, more):
    source_id = tf.cast(element["example_id"], tf.int64)
    extra_id = tf.cast(more["example_id"], tf.int64)
    check = tf.debugging.Assert(
        tf.equal(source_id, extra_id),
        ["extra is out of order with the source: example_id differs; source id:",
         source_id, "extra id:", extra_id],
    )
    with tf.control_dependencies([check]):
      out = {k: tf.identity(v) for k, v in element.items()}
    out.update({k: v for k, v in more.items() if k != "example_id"})
    return out

  return tf.data.Dataset.zip((dataset, extra)).map(merge)


def filter_vertical(dataset: tf.data.Dataset, hierarchy, vertical: int,
                    negatives_fraction: float = 0.0, seed: int = 0) -> tf.data.Dataset:
  """Keeps examples with a label in `vertical`, with labels as that vertical's local ids.

  `label_ids` become `local_index[c]` for labels `c` of `vertical` (packed to the
  front, padded with -1); other labels are dropped. With `negatives_fraction = f >
  0`, an example without a label in `vertical` is kept with all-(-1) labels when
  `u < f`, `u` uniform from the stateless seed `(seed, example_id)`.

  Raises:
    ValueError: `vertical` outside `0..M-1` or `f` outside [0, 1].
  """
  if not 0 <= int(vertical) < hierarchy.num_verticals:
    raise ValueError(
        f"vertical={vertical} is not in 0..{hierarchy.num_verticals - 1}")
  if not 0.0 <= negatives_fraction <= 1.0:
    raise ValueError(f"negatives_fraction={negatives_fraction} must be in [0, 1]")
  c2v = tf.constant(hierarchy.class_to_vertical, tf.int32)
  local = tf.constant(hierarchy.local_index, tf.int32)
  vertical = int(vertical)

  def remap(element):
    ids = tf.cast(element["label_ids"], tf.int32)
    width = ids.shape[-1]
    safe = tf.maximum(ids, 0)
    mine = tf.logical_and(ids >= 0, tf.gather(c2v, safe) == vertical)
    kept = tf.boolean_mask(tf.gather(local, safe), mine)
    out = dict(element)
    out["label_ids"] = tf.ensure_shape(
        tf.pad(kept, [[0, width - tf.size(kept)]], constant_values=labels_lib.PAD_ID),
        [width])
    return out

  def keep(element):
    positive = tf.reduce_any(element["label_ids"] >= 0)
    if negatives_fraction <= 0.0:
      return positive
    u = tf.random.stateless_uniform(
        [], seed=tf.random.experimental.stateless_fold_in(
            _stream(seed, _NEGATIVES_SALT),
            tf.cast(element["example_id"], tf.int64), alg="philox"),
        alg="philox")
    return tf.logical_or(positive, u < negatives_fraction)

  return dataset.map(remap).filter(keep)


def build_dataset(source, split: str, data_config, *, training: bool,
                  global_batch_size: int,
                  input_context: Optional[tf.distribute.InputContext] = None,
                  extra: Optional[tf.data.Dataset] = None,
                  vertical: Optional[int] = None,
                  negatives_fraction: float = 0.0,
                  start_batch: int = 0,
                  start_record: int = 0,
                  skip_counter: Optional[data_errors.SkipCounter] = None
                  ) -> tf.data.Dataset:
  """Builds `(images float32 [b, H, W, C], features)` batches for one input pipeline.

  Decoding follows `data_config.on_decode_error` (`data_errors.decode`): a
  corrupt image stops iteration with an error naming its file or record
  (turned into `data_errors.DataError` by `data_errors.named_data_errors`
  where batches are pulled), or is dropped and counted in `skip_counter`.
  With 'skip', resuming skips raw records, so a resumed run may see the
  records around the restored position shifted by the number of bad ones.

  Order: raw -> zip `extra` -> vertical filter -> shard -> skip
  `start_record` -> (decode + cache when
  `cache_decoded`) -> when training: repeat (elements tagged with their epoch) then
  seeded shuffle -> decode -> augment when training -> batch (per replica;
  drop_remainder when training) -> prefetch. `features` holds
  `label_ids int32 [b, L]`, `example_id int64 [b]` and the keys of `extra`.

  Reproducibility: the shuffle is seeded from `seed`; an example's
  augmentation seed is `fold_in(fold_in((seed, salt), example_id), e)`. So the same
  config gives the same batches, and a restored iterator checkpoint continues
  the same stream.

  Args:
    source: an `ExampleSource`.
    split: 'train' or 'eval'.
    data_config: a `DataConfig`.
    training: shuffle, repeat, augment and drop the last partial batch.
    global_batch_size: batch over all replicas.
    input_context: a `tf.distribute.InputContext` (sharding, per-replica batch).
    extra: a dataset of dicts in `raw_dataset(split)` order with `example_id`.
    vertical: keep only this vertical, labels remapped to local ids.
    negatives_fraction: fraction of other verticals' examples kept as negatives.
    start_batch: training only: batches (of this pipeline) already consumed,
      e.g. the restored global step when resuming from a checkpoint.
    start_record: not training: raw records (of this pipeline, before
      decoding) to pass over, e.g. those a resumed target cache has written.
    skip_counter: counts records dropped by `on_decode_error='skip'`.

  Returns:
    A `tf.data.Dataset`.

  Raises:
    ValueError: bad batch size, vertical or `extra`; or, when training, a split
      (or vertical) without examples, which would make the repeat spin forever.
  """
  data_config.validate()
  if global_batch_size < 1:
    raise ValueError(f"global_batch_size={global_batch_size} must be >= 1")
  seed = int(data_config.seed)
  parallel = (tf.data.AUTOTUNE if data_config.num_parallel_calls == -1
              else data_config.num_parallel_calls)
  batch_size = global_batch_size
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(global_batch_size)

  ds = source.raw_dataset(split)
  if extra is not None:
    ds = zip_extra(ds, extra)
  if vertical is not None:
    ds = filter_vertical(ds, source.hierarchy, vertical, negatives_fraction, seed)
  elif negatives_fraction:
    raise ValueError("negatives_fraction needs a vertical")
  if input_context is not None and input_context.num_input_pipelines > 1:
    ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  if start_record:
    if training:
      raise ValueError("start_record is for a single pass; a training "
                       "pipeline resumes with start_batch")
    ds = ds.skip(int(start_record))

  if training:
    count = int(ds.cardinality())
    if count == 0 or (count == tf.data.UNKNOWN_CARDINALITY
                      and not list(ds.take(1).as_numpy_iterator())):
      where = f" in vertical {vertical}" if vertical is not None else ""
      raise ValueError(f"split {split!r} has no examples{where} to train on")

  def decode(dataset):
    return data_errors.decode(dataset, source, data_config.on_decode_error,
                              skip_counter, parallel)

  decoded = bool(data_config.cache_decoded)
  if decoded:
    ds = decode(ds).cache()

  if training:
    base = ds
    # Repeat first, tagging each element with its epoch, then shuffle with one
    # seed: the whole infinite stream is a pure function of the config, so a
    # resumed run skips to its position instead of checkpointing the iterator
    # (epochs only blend within one shuffle buffer at their boundaries).
    ds = tf.data.Dataset.counter(dtype=tf.int64).flat_map(
        lambda epoch: base.map(lambda el: {**el, _EPOCH_KEY: epoch}))
    ds = ds.shuffle(int(data_config.shuffle_buffer_size),
                    seed=_shuffle_seed(seed))
    if start_batch:
      ds = ds.skip(int(start_batch) * batch_size)
  elif start_batch:
    raise ValueError("start_batch is only meaningful when training")

  if not decoded:
    ds = decode(ds)

  augmenter = augment_lib.Augmenter(data_config.augmentation)
  if training and augmenter.enabled:
    def augment(element):
      element = dict(element)
      example_seed = tf.random.experimental.stateless_fold_in(
          _stream(seed, _AUGMENT_SALT), tf.cast(element["example_id"], tf.int64),
          alg="philox")
      example_seed = tf.random.experimental.stateless_fold_in(
          example_seed, element[_EPOCH_KEY], alg="philox")
      element["image"] = augmenter(element["image"], example_seed)
      return element

    ds = ds.map(augment, num_parallel_calls=parallel)

  def split_features(element):
    features = {k: v for k, v in element.items() if k not in ("image", _EPOCH_KEY)}
    return element["image"], features

  ds = ds.map(split_features)
  ds = ds.batch(batch_size, drop_remainder=training)
  options = tf.data.Options()
  options.deterministic = bool(data_config.deterministic)
  ds = ds.with_options(options)
  return ds.prefetch(tf.data.AUTOTUNE)
