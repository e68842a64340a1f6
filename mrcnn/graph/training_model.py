"""The Keras model of Mask R-CNN training: the train step with the five losses.

``graph.training_graph.build_training_model`` builds it functionally; its
five outputs named after ``LOSS_NAMES`` are scalar losses, which
``train_step`` adds up (Keras 3 refuses ``add_loss`` on symbolic tensors,
which is how Matterport did it).
"""
import keras
import tensorflow as tf

from mrcnn import distribute, keras_compat
from mrcnn.config import LOSS_NAMES

__all__ = ["MaskRCNNTrainingModel", "LOSS_NAMES"]


class MaskRCNNTrainingModel(keras.Model):
    """The training graph as a ``keras.Model`` with Mask R-CNN's train step.

    Built functionally (``MaskRCNNTrainingModel(inputs, outputs, ...)``, see
    ``mrcnn.graph.training_graph.build_training_model``); the five outputs
    named after LOSS_NAMES are scalar losses.

    Args (besides Keras' ``inputs``, ``outputs``, ``name``):
        loss_weights: {loss name: weight}, ``Config.LOSS_WEIGHTS`` (missing
            names weigh 1, as Matterport's ``.get(name, 1.)``).
        weight_decay: ``Config.WEIGHT_DECAY``.

    Each step minimizes::

        sum_l  w_l * loss_l
        + weight_decay * sum_{trainable w, no gamma/beta}  sum(w**2) / size(w)

    which is Matterport's compile(): Keras' ``l2(WEIGHT_DECAY)(w)`` divided by
    the number of elements, BatchNorm gammas and betas excluded. Metrics, per
    batch averaged over the epoch: ``loss`` (the total, decay included) and
    each weighted loss by name; validation adds the ``val_`` prefix.
    """

    def __init__(self, *args, loss_weights=None, weight_decay=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        loss_weights = dict(loss_weights or {})
        unknown = set(loss_weights) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(f"LOSS_WEIGHTS has unknown names {sorted(unknown)}; the losses "
                             f"are {', '.join(LOSS_NAMES)}.")
        self.loss_weights = {n: float(loss_weights.get(n, 1.0)) for n in LOSS_NAMES}
        self.weight_decay = float(weight_decay)
        # issue 14 (keras_compat: guarded Keras internals), was
        # [t._keras_history.operation.name for t in self.outputs]
        names = keras_compat.output_layer_names(self)
        missing = [n for n in LOSS_NAMES if n not in names]
        if missing:
            raise ValueError(f"MaskRCNNTrainingModel: no output named {missing}; the outputs "
                             f"are {names}.")
        # Position of each loss among the outputs.
        self._loss_index = {n: names.index(n) for n in LOSS_NAMES}
        self._trackers = {n: keras.metrics.Mean(name=n) for n in ("loss",) + LOSS_NAMES}

    @property
    def metrics(self):
        # Keras resets these at the start of each epoch and of evaluate().
        return list(self._trackers.values())

    def regularization_loss(self):
        """Matterport's L2 weight decay on the current trainable weights ([] float32)."""
        terms = [tf.reduce_sum(tf.square(w)) / tf.cast(tf.size(w), tf.float32)
                 for w in self.trainable_variables
                 if "gamma" not in w.path and "beta" not in w.path]
        if not terms or self.weight_decay == 0.0:
            return tf.constant(0.0)
        return self.weight_decay * tf.add_n(terms)

    def compute_losses(self, outputs):
        """{name: weighted loss} for the five losses, and "loss", the total
        including weight decay. ``outputs``: the model's output list."""
        losses = {n: tf.reduce_mean(outputs[self._loss_index[n]]) * self.loss_weights[n]
                  for n in LOSS_NAMES}
        losses["loss"] = tf.add_n(list(losses.values())) + self.regularization_loss()
        return losses

    def _update_trackers(self, losses):
        for name, value in losses.items():
            self._trackers[name].update_state(value)
        # shapes fit can reduce under MultiWorkerMirroredStrategy
        return distribute.step_logs({name: t.result() for name, t in self._trackers.items()})

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            outputs = self(x, training=True)
            losses = self.compute_losses(outputs)
            # 1/num_replicas of the total per tf.distribute replica (the
            # optimizer sums the replicas' gradients) and the float16 loss
            # scale (identity otherwise): mrcnn.distribute, mrcnn.precision.
            loss = self.optimizer.scale_loss(distribute.replica_loss(losses["loss"]))
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        # every replica skips a step whose gradients overflowed, or none does
        grads = distribute.agree_on_nonfinite(self.optimizer, grads)
        # Weights that do not reach any loss (none in Mask R-CNN, but a
        # custom backbone may have some) get no gradient.
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self._update_trackers(losses)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a strategy Keras would reduce the first batch across replicas
        # (fails on the bool masks) to build what is built already
        # (mrcnn.distribute.skip_symbolic_build).
        if distribute.skip_symbolic_build(self):
            return None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        outputs = self(x, training=False)
        return self._update_trackers(self.compute_losses(outputs))
