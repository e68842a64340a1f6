"""ActiveClassIds: the active_class_ids field of the image meta, as a layer."""
import keras
import tensorflow as tf

from mrcnn.ops.image_meta import IMAGE_META_FIXED_SIZE, parse_image_meta_graph

__all__ = ["ActiveClassIds"]


@keras.saving.register_keras_serializable(package="mrcnn")
class ActiveClassIds(keras.layers.Layer):
    """The ``active_class_ids`` field of the image meta.

    Input: [B, 12 + K] image meta. Output: [B, K] float32, 1 where the
    image's dataset has that class.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.built = True

    def call(self, meta):
        return tf.cast(parse_image_meta_graph(meta)["active_class_ids"], tf.float32)

    def compute_output_spec(self, meta):
        k = None if meta.shape[-1] is None else meta.shape[-1] - IMAGE_META_FIXED_SIZE
        return keras.KerasTensor((meta.shape[0], k), dtype="float32")
