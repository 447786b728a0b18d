"""The modes `kc_keras.train --mode` runs (a constant, free of TensorFlow)."""

# train, eval, train_and_eval: the experiment's network (a generalist, or a
# student when soft targets are configured); train_specialists: one teacher
# per vertical; cache_targets: the offline soft targets; eval_specialists:
# the teachers as a set.
MODES = ("train", "eval", "train_and_eval", "train_specialists",
         "cache_targets", "eval_specialists")
