"""Optimizers of Mask R-CNN training.

:class:`ClippedMomentumSGD` is Matterport's optimizer (SGD with momentum and
per-tensor gradient norm clipping), done by one fused TensorFlow kernel per
weight; :class:`KerasPathClippedSGD` is the same update through Keras' own
SGD ops, the fallback under a tf.distribute strategy the fused kernel was not
tested with (``distribute.make_optimizer``).
"""
import keras
import tensorflow as tf

from mrcnn import keras_compat

__all__ = ["ClippedMomentumSGD", "KerasPathClippedSGD"]


@keras.saving.register_keras_serializable(package="mrcnn")
class ClippedMomentumSGD(keras.optimizers.SGD):
    """Keras' SGD with momentum and per-tensor gradient norm clipping, the
    update of each weight done by one fused TensorFlow kernel.

    Same update as ``keras.optimizers.SGD(learning_rate, momentum,
    clipnorm=clip_norm)`` (Matterport's optimizer): for each weight ``w``
    with gradient ``g`` and momentum buffer ``m``::

        g <- g * clip_norm / max(||g||, clip_norm)
        m <- momentum * m - learning_rate * g
        w <- w + m

    Keras does this in about nine passes over every weight tensor (four for
    the clipping, five for the update). Here the clipping factor is a scalar
    folded into the learning rate, and ``ResourceApplyKerasMomentum`` reads
    ``w``, ``m`` and ``g`` once and writes ``w`` and ``m`` once: two passes
    instead of nine over the 64 M weights of ResNet-101 at every step. The
    results are Keras' up to float rounding. Other backends,
    ``momentum == 0``, and a Keras without the internals the kernel needs
    (``keras_compat.momentum_slot_handle``, logged once) take the Keras path.

    clip_norm: GRADIENT_CLIP_NORM, or None for no clipping.
    """

    def __init__(self, learning_rate=0.001, momentum=0.9, clip_norm=None, **kwargs):
        for key in ("clipnorm", "global_clipnorm", "clipvalue"):
            if kwargs.get(key) is not None:
                raise ValueError(f"ClippedMomentumSGD clips with clip_norm; got {key}.")
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.clip_norm = None if clip_norm is None else float(clip_norm)

    def update_step(self, gradient, variable, learning_rate):
        accum = None
        if keras.backend.backend() == "tensorflow" and self.momentum != 0:
            # Keras internals, guarded (keras_compat): None -> Keras' path
            accum = keras_compat.momentum_slot_handle(self, variable)
        if accum is None:
            if self.clip_norm is not None:
                gradient = tf.clip_by_norm(gradient, self.clip_norm)
            return super().update_step(gradient, variable, learning_rate)
        lr = tf.cast(learning_rate, variable.dtype)
        gradient = tf.cast(gradient, variable.dtype)
        if self.clip_norm is not None:
            # ||g|| from l2_loss (sum(g^2) / 2, one pass). A zero gradient
            # gives factor 1, as tf.clip_by_norm.
            clip = tf.constant(self.clip_norm, variable.dtype)
            norm = tf.sqrt(2.0 * tf.nn.l2_loss(gradient))
            lr = lr * (clip / tf.maximum(norm, clip))
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=accum, lr=lr, grad=gradient,
            momentum=tf.constant(self.momentum, variable.dtype),
            use_locking=False, use_nesterov=bool(self.nesterov))

    def get_config(self):
        config = super().get_config()
        config["clip_norm"] = self.clip_norm
        return config


@keras.saving.register_keras_serializable(package="mrcnn")
class KerasPathClippedSGD(ClippedMomentumSGD):
    """``ClippedMomentumSGD`` without the fused kernel: per-tensor
    ``tf.clip_by_norm`` then Keras' SGD ``update_step``. Clipping happens
    in ``update_step``, after the replicas' gradients are summed (unlike
    ``keras.optimizers.SGD(clipnorm=...)``, which clips each replica's
    partial gradient before the all-reduce)."""

    def update_step(self, gradient, variable, learning_rate):
        if self.clip_norm is not None:
            gradient = tf.clip_by_norm(gradient, self.clip_norm)
        return keras.optimizers.SGD.update_step(self, gradient, variable, learning_rate)
