"""Adam whose update of each variable is one fused TensorFlow kernel.

Keras 3's `Adam.update_step` writes the update as backend ops (a subtract, multiplies,
a square, a square root, a divide and three assignments per variable). On the
TensorFlow backend each is a separate pass over the variable and its two slots, which
at 100K classes (a head of ~94M weights) is a large share of a training step's time
(docs/BENCHMARKS.md measures it). TensorFlow's own training kernel `ResourceApplyAdam`
does the same update in one pass, so this class calls it; everything else (slots and
their checkpoint names, schedules, clipping, weight decay, loss scaling, tf.distribute)
is Keras' `Adam`, unchanged.
"""

import keras
import tensorflow as tf


class FusedAdam(keras.optimizers.Adam):
  """`keras.optimizers.Adam` with its per-variable update in `ResourceApplyAdam`.

  The update is Keras' (and TensorFlow's kernel's), at step t = iterations + 1:

    m_t   = beta_1 m + (1 - beta_1) g
    v_t   = beta_2 v + (1 - beta_2) g^2
    lr_t  = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)
    theta = theta - lr_t m_t / (sqrt(v_t) + epsilon)

  The same variables and slots as `Adam` (a checkpoint of either restores into the
  other). With `amsgrad` (which the kernel does not compute) it runs
  `Adam.update_step`.
  """

  def update_step(self, gradient, variable, learning_rate):
    """Applies one Adam update to `variable` (a `tf.Variable` here).

    Args:
      gradient: its gradient (dense, or `tf.IndexedSlices` made dense).
      variable: the variable Keras' TensorFlow optimizer passes (its tf value).
      learning_rate: this step's learning rate.
    """
    if self.amsgrad:
      return super().update_step(gradient, variable, learning_rate)
    dtype = variable.dtype
    index = self._get_variable_index(variable)
    step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle,
        m=self._momentums[index].handle,
        v=self._velocities[index].handle,
        beta1_power=tf.pow(beta_1, step),
        beta2_power=tf.pow(beta_2, step),
        lr=tf.cast(learning_rate, dtype),
        beta1=beta_1,
        beta2=beta_2,
        epsilon=tf.cast(self.epsilon, dtype),
        grad=tf.convert_to_tensor(gradient, dtype))
    return None
