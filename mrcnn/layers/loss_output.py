"""LossOutput: one of the five Mask R-CNN losses as a scalar graph output."""
import keras
import tensorflow as tf

from mrcnn import distribute, losses
from mrcnn.config import LOSS_NAMES

__all__ = ["LossOutput"]


@keras.saving.register_keras_serializable(package="mrcnn")
class LossOutput(keras.layers.Layer):
    """One of the five Mask R-CNN losses as a graph output (a scalar).

    Args:
        loss: which loss, one of LOSS_NAMES; the layer is named after it.

    Inputs, as Matterport's loss Lambdas (see ``mrcnn.losses``):
        rpn_class_loss: [input_rpn_match, rpn_class_logits]
        rpn_bbox_loss: [input_rpn_bbox, input_rpn_match, rpn_bbox]
        mrcnn_class_loss: [target_class_ids, mrcnn_class_logits, active_class_ids]
        mrcnn_bbox_loss: [target_bbox, target_class_ids, mrcnn_bbox]
        mrcnn_mask_loss: [target_mask, target_class_ids, mrcnn_mask]
    Output: [] float32, the loss averaged over the batch (0 when nothing
    contributes, never NaN).
    """

    def __init__(self, loss, **kwargs):
        if loss not in LOSS_NAMES:
            raise ValueError(f"LossOutput: unknown loss {loss!r}; use one of {LOSS_NAMES}.")
        kwargs.setdefault("name", loss)
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.loss = loss
        self.built = True

    def call(self, inputs):
        fn = getattr(losses, self.loss + "_graph")
        loss = tf.reshape(tf.cast(fn(*inputs), tf.float32), [])
        # With several tf.distribute replicas: normalized by the term count of
        # the global batch, not the replica's (distribute.globally_normalized).
        return distribute.globally_normalized(self.loss, loss, inputs)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config["loss"] = self.loss
        return config
